"""Build the pretrained default router shipped as ``uniroute_core/pretrained/mmlu_pro_minilm``.

    PYTHONPATH=. python scripts/build_pretrained.py [--probes 300] [--n-clusters auto|K] [--repeats 10] [--out DIR]

Deterministic (seed 0 everywhere; rerunning gives the same router), using
:func:`uniroute_core.build.build_from_routing_data`:

1. Probe set: ``--probes`` questions of the bundled ``mmlu_pro`` data, drawn stratified by category (each of the 14
   subjects keeps its share), with their gold letters and the multiple-choice grader.
2. K and α are chosen by validation (the default, ``--n-clusters auto``; a fixed ``--n-clusters K`` uses α = 2
   unless ``--shrinkage`` is given): the other questions are split ``--repeats`` times
   into a fitting part (80 %) and a validation part (20 %); each time a random pool of 10 of the 29 recorded LLMs is
   profiled on the probes from its recorded answers, the validation questions are routed over every λ, and the Area
   under the deferral curve is measured; the best mean Area wins (ZeroRouter K = 1 is in the grid).
3. The chosen map is refitted on all non-probe questions and saved with the probe set and NO members, in the normal
   router format, with a ``MODEL_CARD.md`` holding the validation table.

Embeddings come from the packaged all-MiniLM-L6-v2 (its shipped vectors for the bundled prompts).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from uniroute_core import load_routing_data
from uniroute_core.build import BuildReport, build_from_routing_data

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "uniroute_core" / "pretrained" / "mmlu_pro_minilm"


def how_chosen(report: BuildReport, n_probes: int) -> list[str]:
    """The MODEL_CARD paragraph on K and α: the validation table when K was validated, else the rule used."""
    if not report.validation:
        return [
            f"K = {report.n_clusters}: one cluster per 50 of the {n_probes} probes, the upper end of the method note's "
            "K range (3 … |S_val|/50). Each member's per-cluster accuracy is then a mean over about 50 probes "
            "(standard error about 0.07 for a 0/1 score near 0.5), which the shrinkage α = "
            f"{report.shrinkage:g} (pseudo-probes toward the member's overall accuracy) steadies further; a larger K "
            "would leave too few probes per cluster. The evaluation protocol, given ~1,028 probes, chose K = 12 "
            "(about 86 probes per cluster) and α = 2 as its median. `--n-clusters auto` chooses K and α by "
            "validation instead (random splits of the other questions, random pools of 10 recorded LLMs, mean Area).",
        ]
    zero = max(v for (k, _), v in report.validation.items() if k == 1)
    best = report.validation[(report.n_clusters, report.shrinkage)]
    return [
        f"{report.repeats} random splits of the non-probe questions (80 % fit the map, 20 % validate); in each split "
        "a random pool of 10 of the 29 recorded LLMs is profiled on the probes from its recorded answers and the "
        "validation questions are routed over every λ. Mean Area under the deferral curve (higher is better):",
        "",
        report.table(),
        "",
        f"Chosen: K = {report.n_clusters}, α = {report.shrinkage:g} (mean Area {best:.4f}; best K = 1, i.e. "
        f"ZeroRouter: {zero:.4f}; the chosen map beats it in {report.wins_over_zero} of {report.repeats} splits). "
        f"With {n_probes} probes, a large K leaves few probes per cluster to estimate a member's accuracy there.",
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probes", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=10, help="validation splits with --n-clusters auto")
    ap.add_argument(
        "--n-clusters", default="auto",
        help="'auto' (default: K and the shrinkage chosen by validation, about 11 CPU-minutes; this is how the shipped "
        "router was built) or a fixed K (e.g. 6: one cluster per 50 probes, the method note's upper end |S_val|/50)",
    )
    ap.add_argument("--shrinkage", type=float, default=None, help="α (default 2 with a fixed K; validated with auto)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    t0 = time.perf_counter()

    data = load_routing_data("mmlu_pro")
    n_clusters = args.n_clusters if args.n_clusters == "auto" else int(args.n_clusters)
    router, report = build_from_routing_data(
        data, n_clusters=n_clusters, shrinkage=args.shrinkage, n_probes=args.probes, members="none",
        repeats=args.repeats, seed=0, show_progress=True,
    )
    if args.out.exists():
        shutil.rmtree(args.out)
    router.save(args.out)

    probes = router.probes
    assert probes is not None and probes.prompt_ids is not None
    cat_of = dict(zip(data.prompt_ids, data.categories))
    cats = sorted(set(data.categories))
    per_cat = {c: sum(1 for pid in probes.prompt_ids if cat_of[pid] == c) for c in cats}
    counts = router.state.probe_assign.sum(axis=0)  # type: ignore[union-attr]
    lines = [
        "# Pretrained router `mmlu_pro-minilm`",
        "",
        "Built by `scripts/build_pretrained.py` (deterministic, seed 0) from the bundled `mmlu_pro` data "
        "(source, licence and citation: `uniroute_core/datasets/mmlu_pro/DATACARD.md` and `NOTICE.md`).",
        "",
        "- **Embedder**: all-MiniLM-L6-v2 (packaged, 384-d).",
        f"- **Cluster map**: K-Means, K = {report.n_clusters}, fitted on the {report.n_fit} bundled questions that "
        "are not probes (unlabelled).",
        f"- **Shrinkage** α = {report.shrinkage:g} pseudo-probes toward each member's overall probe accuracy.",
        f"- **Probe set**: {len(probes)} MMLU-Pro questions drawn stratified by subject, each with its gold letter; "
        "grader `multiple_choice`. Per subject: " + ", ".join(f"{c} {per_cat[c]}" for c in cats) + ".",
        f"- **Probes per cluster**: {', '.join(str(int(round(c))) for c in counts)}.",
        "- **Members**: none. Add yours with `add_model` (scores on the probes) or an adapter's `from_models` "
        "(profiles each member on the probes: one call per probe per member).",
        "",
        "## How K and α were chosen",
        "",
        *how_chosen(report, len(probes)),
        "",
        "## What traffic it suits",
        "",
        "Knowledge and reasoning questions across MMLU-Pro's 14 subjects (math, physics, chemistry, law, economics, "
        "business, health, psychology, biology, philosophy, computer science, history, engineering, other), "
        "especially multiple-choice or short-answer ones in English. It does not represent code generation, long "
        "documents (RAG contexts), chit-chat, creative writing, tool use or other languages: for such traffic, refit "
        "the map on your own prompts (`router.fit(your_prompts)` keeps the pool and re-profiles it from the kept "
        "probe scores) and profile members on a probe set made from them (`ProbeSet.from_prompts(..., judge=...)`).",
        "",
    ]
    (args.out / "MODEL_CARD.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    print(f"saved {args.out} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
