"""Routing cost per prompt of each representation the automatic selection can choose, against hard K-Means.

The embedding of a prompt is the same for every representation, so this measures what differs: the look-up from an
embedding to a decision (Φ(x), Φ(x)ᵀΨ for every member, the rule, the decision objects), with embeddings given.
Routers are built on the real MMLU-Pro data (1,000 probes, a pool of 10 members profiled from their recorded probe
scores) and timed interleaved — every repeat runs each representation once, in rotating order, so background load
hits all of them alike. Reported: ms per prompt for a batch and for one prompt per call, and the ratio to hard
K-Means with K = 20 (the paper's router). KNN over the probes as a cluster map (``probe_knn``, k = 160, the harness's
usual choice) and its blend with multi-resolution K-Means go through the router like the others; the evaluation's KNN
baseline (k = 160) is timed the same way as a reference. Goal (issue 15): the representation the product chooses
costs ≤ 2× K-Means per prompt.

    python benchmarks/representation_cost.py [--data DIR] [--embeddings FILE.npy] [--n 2000] [--single 200]
                                             [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from uniroute_core import KMeansClusterMap, MultiResolutionClusterMap, UniRouter, load_routing_data
from uniroute_core.cluster_map import ClusterMap
from uniroute_core.evaluation.baselines import knn_neighbours, knn_quality
from uniroute_core.probe_knn import BlendClusterMap, ProbeKNNClusterMap
from uniroute_core.rule import choose_by_lambda

DEFAULT_EMBEDDINGS = Path("/work/cache/mmlu_pro_minilm_f32.npy")


def _unused(texts: list[str]) -> np.ndarray:
    raise RuntimeError("embeddings are passed in; the benchmark never embeds")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mmlu_pro"))
    ap.add_argument("--embeddings", default=str(DEFAULT_EMBEDDINGS),
                    help="precomputed (n_prompts, d) embeddings of the data's prompts, row order = the data's")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--single", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    data = load_routing_data(args.data)
    x = np.load(args.embeddings).astype(np.float32)
    if x.shape[0] != data.n_prompts:
        raise SystemExit(f"{args.embeddings} has {x.shape[0]} rows; {args.data} has {data.n_prompts} prompts")
    rng = np.random.default_rng(0)
    perm = rng.permutation(data.n_prompts)
    train, probes, held = perm[:6000], perm[6000:7000], perm[7000 : 7000 + args.n]
    pool = rng.choice(data.n_models, size=10, replace=False)
    costs = np.asarray(data.costs, dtype=float)

    multires = MultiResolutionClusterMap(levels=(3, 5, 8, 12, 20), temperature_multiple=0.1)
    variants: dict[str, ClusterMap] = {
        "K-Means K=20 hard (paper)": KMeansClusterMap(n_clusters=20, seed=0, n_init=1),
        "K-Means K=12 soft": KMeansClusterMap(n_clusters=12, seed=0, n_init=1, temperature=0.05),
        "K-Means K=20 soft": KMeansClusterMap(n_clusters=20, seed=0, n_init=1, temperature=0.05),
        "multires 3,5,8,12,20 soft": multires,
        # the finest maps the product's grid reaches on 1,000 probes (K up to probes / 25, issue 15's low-rank target);
        # the target itself changes Ψ's values, not the look-up
        "K-Means K=41 soft": KMeansClusterMap(n_clusters=41, seed=0, n_init=1, temperature=0.05),
        "multires 3,6,11,21,41 soft": MultiResolutionClusterMap(levels=(3, 6, 11, 21, 41), temperature_multiple=0.1),
        "probe_knn k=160": ProbeKNNClusterMap(n_neighbors=160),
        "blend probe_knn 160 + multires": BlendClusterMap(parts=[ProbeKNNClusterMap(n_neighbors=160), multires],
                                                          weights=[0.5, 0.5]),
    }
    routers: dict[str, UniRouter] = {}
    for name, template in variants.items():
        r = UniRouter(embedder=_unused, cluster_map=template, show_progress=False).fit_embeddings(x[train])
        r.set_probes([data.prompts[i] for i in probes], embeddings=x[probes])
        for j in pool:
            r.add_model(data.models[j], float(costs[j]), data.scores[probes, j])
        routers[name] = r

    probe_s = data.scores[np.ix_(probes, pool)]

    def knn_route(idx: np.ndarray) -> None:
        nb = knn_neighbours(x[probes], x[idx], 160)
        choose_by_lambda(knn_quality(nb, probe_s, 160), costs[pool], 0.3)

    prompts = [data.prompts[i] for i in held]
    emb = x[held]
    single = list(range(min(args.single, len(held))))
    batch: dict[str, list[float]] = {name: [] for name in [*routers, "KNN k=160 (reference)"]}
    one: dict[str, list[float]] = {name: [] for name in batch}

    def run(name: str, fn_batch: Callable[[], object], fn_one: Callable[[int], object]) -> None:
        t0 = time.perf_counter()
        fn_batch()
        batch[name].append((time.perf_counter() - t0) / len(held))
        t0 = time.perf_counter()
        for i in single:
            fn_one(i)
        one[name].append((time.perf_counter() - t0) / len(single))

    names = list(batch)
    for rep in range(args.repeats):
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            if name in routers:
                r = routers[name]
                run(name, lambda r=r: r.route(prompts, lam=0.3, embeddings=emb),
                    lambda i, r=r: r.route([prompts[i]], lam=0.3, embeddings=emb[i : i + 1]))
            else:
                run(name, lambda: knn_route(held), lambda i: knn_route(held[i : i + 1]))

    base_b = statistics.median(batch[names[0]])
    base_o = statistics.median(one[names[0]])
    print(f"{len(held)} prompts batched, {len(single)} one per call, pool of {len(pool)}, 1000 probes, "
          f"d={x.shape[1]}, median of {args.repeats} interleaved repeats (look-up only, embeddings given)")
    print(f"{'representation':<32} {'batch µs/prompt':>16} {'ratio':>7} {'1/call µs':>11} {'ratio':>7}")
    for name in names:
        b, o = statistics.median(batch[name]), statistics.median(one[name])
        print(f"{name:<32} {1e6 * b:>16.1f} {b / base_b:>6.2f}× {1e6 * o:>11.1f} {o / base_o:>6.2f}×")


if __name__ == "__main__":
    main()
