"""Adding a model: UniRouter.add_model from known probe scores vs refitting the LearnedMap, and vs KNN routing.

UniRoute adds an LLM by computing its per-cluster quality Ψ from its scores on the probe prompts — no training. The
alternative that also needs the new LLM's data is to refit the supervised LearnedMap on the training LLMs (the paper's
settings: 5 epochs, batch 64, Adam). KNN routing also adds a model for free (it stores the probe scores) but pays
O(|probes|) per routed prompt; its per-prompt routing time is compared with the cluster look-up. Goal: add_model
≥ 200× faster than the refit.

    python benchmarks/add_model.py [--data DIR] [--repeats 200]
"""

from __future__ import annotations

import time

import numpy as np
from _common import POOL, add_pool, build, data_folder, machine, parse_args, timed

from uniroute_core.evaluation.baselines import knn_neighbours, knn_quality
from uniroute_core.learned_map import LearnedMapClusterMap


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], [("--repeats", {"type": int, "default": 200}),
                                                ("--k", {"type": int, "default": 20, "help": "KNN neighbours"})])
    print(machine())
    setup = build(data_folder(args.data), seed=args.seed)
    router, data, book = setup.router, setup.data, setup.book
    add_pool(setup, POOL[:-1])
    new = POOL[-1]
    scores = book.recorded_scores(new, router.probes.prompts)
    cost = book.cost(new)
    router.add_model(new, cost, scores)  # warm-up
    add_t = timed(lambda: router.add_model(new, cost, scores, replace=True), args.repeats)
    print(f"\n[add_model] {new} from {len(scores)} probe scores into a pool of {len(router.models)}: "
          f"{1e3 * add_t:.3f} ms (median of {args.repeats})")

    train_models = [m for m in data.models if m not in POOL]  # the LearnedMap learns from LLMs outside the pool
    cols = [data.model_index(m) for m in train_models]
    x = setup.embeddings[setup.train]
    s = data.scores[np.ix_(setup.train, cols)]
    px = setup.embeddings[setup.probes]
    ps = data.scores[np.ix_(setup.probes, cols)]
    t0 = time.perf_counter()
    LearnedMapClusterMap(n_clusters=20, seed=args.seed).fit(
        x, train_scores=s, train_models=train_models, probe_embeddings=px, probe_scores=ps
    )
    refit_t = time.perf_counter() - t0
    print(
        f"[LearnedMap refit] {len(x)} training prompts × {len(train_models)} training LLMs, 5 epochs: {refit_t:.2f} s"
    )
    print(f"  ratio refit / add_model: {refit_t / add_t:,.0f}×   (goal ≥ 200×)")

    held = setup.held_out
    emb = setup.embeddings[held]
    prompts = [data.prompts[i] for i in held]
    probe_emb = setup.embeddings[setup.probes]
    probe_scores = np.stack([router.profiles[m].probe_scores for m in router.models], axis=1)

    def knn_route() -> None:
        q = knn_quality(knn_neighbours(probe_emb, emb, args.k), probe_scores, args.k)
        np.argmax(q, axis=1)

    def knn_one() -> None:
        for i in range(500):
            q = knn_quality(knn_neighbours(probe_emb, emb[i : i + 1], args.k), probe_scores, args.k)
            np.argmax(q, axis=1)

    qcol = timed(lambda: router.expected_quality([], embeddings=emb).argmax(axis=1), 5)
    knn_b = timed(knn_route, 5)
    uni_b = timed(lambda: router.route(prompts, embeddings=emb), 5)
    knn_1 = timed(knn_one, 3)
    uni_1 = timed(lambda: [router.route([prompts[i]], embeddings=emb[i : i + 1]) for i in range(500)], 3)
    print(f"\n[routing cost per prompt, embeddings given, {len(router.models)} members, {len(probe_emb)} probes]")
    print(f"  cluster look-up Φᵀ Ψ + argmax (batched, {len(held)}): {1e6 * qcol / len(held):8.2f} µs/prompt")
    print(f"  KNN (k={args.k}) over the probes + argmax (batched)     : {1e6 * knn_b / len(held):8.2f} µs/prompt  "
          f"({knn_b / qcol:.1f}× the cluster look-up)")
    print(f"  UniRouter.route, full decisions (batched)           : {1e6 * uni_b / len(held):8.2f} µs/prompt")
    print(f"  one prompt per call: KNN {1e6 * knn_1 / 500:.1f} µs vs UniRouter.route {1e6 * uni_1 / 500:.1f} µs")
    print("  (KNN's cost grows with the number of probes; the cluster look-up's does not)")


if __name__ == "__main__":
    main()
