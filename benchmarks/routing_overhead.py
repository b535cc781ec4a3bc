"""Routing overhead: UniRouter.route on N prompts vs the bare sentence-transformers encode of the same prompts.

Both sides use the same loaded all-MiniLM-L6-v2 (the real packaged default, no cache), so the ratio is what routing
adds on top of the embedding a router cannot avoid. Goal: ≤ 1.05×. Also the per-prompt time of the table look-up
alone (embeddings given: cluster assignment + Φᵀ Ψ + the rule + building the decisions), batched and one at a time.

    python benchmarks/routing_overhead.py [--data DIR] [--n 128] [--repeats 3]
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time

import numpy as np
from _common import add_pool, build, data_folder, machine, parse_args, timed

from uniroute_core.embedding import default_embedder


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], [("--n", {"type": int, "default": 96}),
                                                ("--repeats", {"type": int, "default": 3}),
                                                ("--single", {"type": int, "default": 24})])
    print(machine())
    raw = default_embedder()
    setup = build(data_folder(args.data), seed=args.seed, router_embedder=raw)
    add_pool(setup)
    router = setup.router
    idx = setup.held_out_sample(args.n)
    prompts = [setup.data.prompts[i] for i in idx]
    model = raw.model
    model.encode(prompts[:8], show_progress_bar=False)  # warm-up (first call allocates)

    def bare() -> None:
        model.encode(prompts, batch_size=raw.batch_size, show_progress_bar=False, convert_to_numpy=True)

    def routed() -> None:
        router.route(prompts)

    # interleave the two so that background load affects both alike
    bare_t, route_t = [], []
    for _ in range(args.repeats):
        bare_t.append(timed(bare, 1))
        route_t.append(timed(routed, 1))
    b, r = float(np.median(bare_t)), float(np.median(route_t))
    print(f"\n[batch] {len(prompts)} MMLU-Pro prompts (mean {np.mean([len(p) for p in prompts]):.0f} chars), "
          f"median of {args.repeats}:")
    print(f"  bare SentenceTransformer.encode : {b:8.3f} s  ({1000 * b / len(prompts):.2f} ms/prompt)")
    print(f"  UniRouter.route (embeds itself) : {r:8.3f} s  ({1000 * r / len(prompts):.2f} ms/prompt)")
    print(f"  ratio route / encode            : {r / b:8.3f}×   (goal ≤ 1.05×)")

    single = prompts[: args.single]
    sb_t, sr_t = 0.0, 0.0
    for rep in range(args.repeats):  # per call, alternate which side runs first so background load hits both alike
        for i, p in enumerate(single):
            first_bare = (i + rep) % 2 == 0
            for side in ("bare", "route") if first_bare else ("route", "bare"):
                t0 = time.perf_counter()
                if side == "bare":
                    model.encode([p], show_progress_bar=False, convert_to_numpy=True)
                    sb_t += time.perf_counter() - t0
                else:
                    router.route_one(p)
                    sr_t += time.perf_counter() - t0
    sb_m, sr_m = sb_t / args.repeats, sr_t / args.repeats
    print(f"\n[one prompt per call] {len(single)} calls × {args.repeats}, interleaved:")
    print(f"  bare encode([p])   : {1000 * sb_m / len(single):8.2f} ms/call")
    print(f"  router.route_one(p): {1000 * sr_m / len(single):8.2f} ms/call")
    print(f"  ratio              : {sr_m / sb_m:8.3f}×")

    held = setup.held_out
    emb = setup.embeddings[held]
    held_prompts = [setup.data.prompts[i] for i in held]
    lookup = timed(lambda: router.route(held_prompts, embeddings=emb), args.repeats)
    one = timed(lambda: [router.route([held_prompts[i]], embeddings=emb[i : i + 1]) for i in range(500)], args.repeats)
    print(
        f"\n[table look-up alone, embeddings given; pool of {len(router.models)}, K={router.cluster_map.n_clusters_}]"
    )
    print(f"  batched ({len(held)} prompts in one route call): {1e6 * lookup / len(held):8.1f} µs/prompt")
    print(f"  one prompt per route call (500 calls)        : {1e6 * one / 500:8.1f} µs/prompt")
    print(f"  look-up as a share of a one-prompt call: {100 * (one / 500) / (sb_m / len(single)):.3f}%  "
          f"(look-up {1e3 * one / 500:.3f} ms vs encode {1e3 * sb_m / len(single):.1f} ms; the end-to-end "
          "difference above is within timing noise)")

    prof = cProfile.Profile()
    prof.enable()
    for i in range(300):
        router.route([held_prompts[i]], embeddings=emb[i : i + 1])
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(8)
    print("\n[profile of 300 one-prompt look-ups, top 8 by own time]")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:3000])


if __name__ == "__main__":
    main()
