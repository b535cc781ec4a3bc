"""Set a budget in cost units per call, get λ, and check the mean cost actually spent on held-out prompts.

A budget is a mean cost per call (here: billions of active parameters, the MMLU-Pro folder's cost unit). The router
turns it into the trade-off λ on its probe prompts — the smallest λ whose mean routed cost there fits the budget —
and then routes new prompts with that λ. This example profiles ten real LLMs (replayed offline from their recorded
MMLU-Pro answers), asks for several budgets, and reports for each the λ, the cost predicted on the probes, and the
mean cost and accuracy realised on ~3,600 held-out questions, against always-the-most-accurate and always-the-cheapest.

    python examples/budget.py [--data DIR] [--budgets 5,10,20,40,80]
"""

from __future__ import annotations

import time

from _mmlu_pro import POOL, build, data_folder, parse_args

from uniroute_core.delegation import add_profiled_model
from uniroute_core.evaluation.preview import preview_router


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], [("--budgets", {"default": "5,10,20,40,80", "help": "comma-separated"})])
    setup = build(data_folder(args.data), seed=args.seed)
    router, book = setup.router, setup.book
    t0 = time.perf_counter()
    for name in POOL:  # one call per model: answer the probes, grade against the gold letters, compute Ψ
        add_profiled_model(router, name, setup.answer_fn(name), cost=book.cost(name), show_progress=False)
    print(f"[pool] profiled {len(POOL)} replayed LLMs on {len(router.probes)} probes ({time.perf_counter() - t0:.1f}s)")

    held = setup.held_out
    logged = setup.data.subset(held)
    unit = setup.data.cost_unit
    print(f"\nbudget per call ({unit}) → λ → mean cost on {len(held)} held-out prompts")
    print(f"{'budget':>8}{'λ':>9}{'cost on probes':>16}{'realised cost':>15}{'realised/budget':>17}{'accuracy':>10}")
    within = 0
    budgets = [float(b) for b in args.budgets.split(",")]
    for budget in budgets:
        cal = router.calibration(budget, warn=False)
        result = preview_router(router, logged, budget=budget, embeddings=setup.embeddings[held])
        r = result.router
        within += r.mean_cost <= budget
        print(f"{budget:>8g}{cal.lam:>9.4f}{cal.expected_cost:>16.2f}{r.mean_cost:>15.2f}"
              f"{r.mean_cost / budget:>16.2f}×{r.mean_quality:>10.4f}")
    best, cheap = result.most_accurate, result.cheapest
    print(f"\nfor reference on the same prompts: {best.name}: accuracy {best.mean_quality:.4f} at {best.mean_cost:g}; "
          f"{cheap.name}: accuracy {cheap.mean_quality:.4f} at {cheap.mean_cost:g}")
    print(f"realised mean cost within budget for {within} of {len(budgets)} budgets "
          "(λ is fitted on the probes, so held-out spending can differ slightly)")


if __name__ == "__main__":
    main()
