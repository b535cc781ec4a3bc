"""A new model joins the pool with one call; see how traffic and cost move.

Nine real LLMs (replayed offline from their recorded MMLU-Pro answers) form the pool. Then gemini-1.5-flash-002 — cheap
(8.13 B active-parameter equivalent) and strong — is added with ONE call: it answers the 500 probe prompts, its
answers are graded against the gold letters, and its per-cluster quality Ψ is computed. Nothing is retrained. The
held-out questions are routed before and after, at the same λ and at the same budget, and the share of calls per
member, the mean cost and the accuracy are printed.

    python examples/add_a_new_model.py [--data DIR] [--new MODEL] [--budget 20]
"""

from __future__ import annotations

import time
from dataclasses import replace

from _mmlu_pro import POOL, build, data_folder, parse_args

from uniroute_core.delegation import add_profiled_model
from uniroute_core.evaluation.preview import format_comparison, preview_router


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        [("--new", {"default": "gemini-1.5-flash-002", "help": "the model that joins"}),
         ("--budget", {"type": float, "default": 20.0, "help": "mean cost per call for the same-budget comparison"})],
    )
    setup = build(data_folder(args.data), seed=args.seed)
    router, book = setup.router, setup.book
    for name in [m for m in POOL if m != args.new]:
        add_profiled_model(router, name, setup.answer_fn(name), cost=book.cost(name), show_progress=False)
    held = setup.held_out
    logged, emb = setup.data.subset(held), setup.embeddings[held]

    lam = router.calibrate(args.budget)
    before = preview_router(router, logged, lam=lam, embeddings=emb)
    print(f"\n== before: {len(router.models)} members, λ={lam:.4f} (calibrated for a budget of {args.budget:g}) ==")
    print(format_comparison([before.router], unit=setup.data.cost_unit))

    t0 = time.perf_counter()
    profile = add_profiled_model(router, args.new, setup.answer_fn(args.new), cost=book.cost(args.new),
                                 show_progress=False)
    took = time.perf_counter() - t0
    print(f"\n== add_profiled_model({args.new!r}, cost={profile.cost:g}): {took:.2f}s for {profile.n_probes} probes, "
          f"probe accuracy {profile.overall_quality:.4f}; no retraining ==")

    same_lam = preview_router(router, logged, lam=lam, embeddings=emb)
    new_lam = router.calibrate(args.budget)
    same_budget = preview_router(router, logged, lam=new_lam, embeddings=emb)
    rows = [
        replace(same_lam.router, name=f"after, same λ={lam:.4f}"),
        replace(same_budget.router, name=f"after, same budget (λ={new_lam:.4f})"),
        replace(before.router, name=f"before (λ={lam:.4f})"),
        same_lam.most_accurate,
        same_lam.cheapest,
    ]
    print(format_comparison(rows, reference=rows[2], unit=setup.data.cost_unit))
    share_new = same_lam.router.share.get(args.new, 0.0)
    print(
        f"\n{args.new} now serves {100 * share_new:.1f}% of calls at the same λ; mean cost "
        f"{before.router.mean_cost:.2f} → {same_lam.router.mean_cost:.2f}, accuracy {before.router.mean_quality:.4f} → "
        f"{same_lam.router.mean_quality:.4f}. At the same budget: accuracy {same_budget.router.mean_quality:.4f} "
        f"at mean cost {same_budget.router.mean_cost:.2f}."
    )


if __name__ == "__main__":
    main()
