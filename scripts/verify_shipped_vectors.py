"""Check that the shipped float16 vectors leave the evaluation's results unchanged (Area within 0.001).

    PYTHONPATH=. python scripts/verify_shipped_vectors.py --float32 /work/cache/mmlu_pro_minilm_f32.npy [--trials 5]

Runs the unseen-LLM protocol (``uniroute eval``'s :func:`evaluate`, every method, same seed) twice on the bundled
``mmlu_pro`` data: once on float32 vectors of the real encoder (one row per prompt in ``load_routing_data`` order),
once on the shipped float16 table as the default embedder returns it, and prints per-method mean Area and the largest
per-trial difference.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from uniroute_core import load_routing_data
from uniroute_core.embedding import default_embedder
from uniroute_core.evaluation import EvaluationConfig, evaluate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--float32", type=Path, required=True)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1, help="trials in this many processes (results do not depend on it)")
    ap.add_argument("--methods", default=None, help="comma-separated subset of the evaluation methods (default: all)")
    args = ap.parse_args()
    data = load_routing_data("mmlu_pro")
    x32 = np.load(args.float32, allow_pickle=False).astype(np.float32)
    x16 = default_embedder().embed(data.prompts, show_progress=False)
    cosines = np.sum(x16 * x32, axis=1) / (np.linalg.norm(x16, axis=1) * np.linalg.norm(x32, axis=1))
    print(
        f"max |float16 - float32| over all coordinates: {np.abs(x16 - x32).max():.2e}; "
        f"min cosine {np.min(cosines):.6f}"
    )
    methods = {} if args.methods is None else {"methods": tuple(m.strip() for m in args.methods.split(","))}
    config = EvaluationConfig(trials=args.trials, seed=args.seed, **methods)
    results = {}
    for label, x in (("float32", x32), ("float16 shipped", x16)):
        t0 = time.perf_counter()
        results[label] = evaluate(data, x, config, embedder_name=label, progress=False, jobs=args.jobs)
        print(f"{label}: {time.perf_counter() - t0:.0f} s")
    a, b = results["float32"], results["float16 shipped"]
    print(f"\n{'method':<14} {'Area f32':>9} {'Area f16':>9} {'mean diff':>10} {'max |trial diff|':>17}")
    worst = 0.0
    for method in config.methods:
        va, vb = np.array(a.values(method, "area")), np.array(b.values(method, "area"))
        worst = max(worst, abs(vb.mean() - va.mean()))
        print(
            f"{method:<14} {va.mean():>9.4f} {vb.mean():>9.4f} {vb.mean() - va.mean():>+10.5f} "
            f"{np.abs(vb - va).max():>17.5f}"
        )
    print(
        f"\nlargest difference in a method's mean Area: {worst:.5f} "
        f"({'within' if worst <= 0.001 else 'NOT within'} 0.001)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
