"""Pool scale: per-prompt routing time with 10, 100 and 1000 members (synthetic profiles). Goal: ≤ 2× from 10 to 1000.

The cluster map and probes are the real ones (MMLU-Pro, all-MiniLM-L6-v2 through the cache); each synthetic member gets
random 0/1 probe scores with its own accuracy and a random cost. Routing time is measured with the embeddings given
(the look-up alone, where the pool size can matter) and end to end through the real encoder, one prompt per call
(what a chat call pays).

    python benchmarks/pool_scale.py [--data DIR] [--sizes 10,100,1000]
"""

from __future__ import annotations

import numpy as np
from _common import build, data_folder, machine, parse_args, timed

from uniroute_core import UniRouter
from uniroute_core.embedding import default_embedder


def grow_pool(router: UniRouter, n_members: int, rng: np.random.Generator) -> None:
    """Add synthetic members until the pool has ``n_members``."""
    n_probes = len(router.probes)
    for j in range(len(router.models), n_members):
        acc = rng.uniform(0.2, 0.8)
        router.add_model(
            f"m{j:04d}", cost=float(rng.uniform(1, 100)), scores=(rng.random(n_probes) < acc).astype(float)
        )


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], [("--sizes", {"default": "10,100,1000"}),
                                                ("--single", {"type": int, "default": 12})])
    print(machine())
    raw = default_embedder()
    setup = build(data_folder(args.data), seed=args.seed, router_embedder=raw)
    held = setup.held_out
    emb = setup.embeddings[held]
    prompts = [setup.data.prompts[i] for i in held]
    single = prompts[: args.single]
    raw.embed(single[:2], show_progress=False)  # load the encoder
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    router, rng = setup.router, np.random.default_rng(args.seed)
    for size in sorted(sizes):
        grow_pool(router, size, rng)
        batch = timed(lambda: router.route(prompts, embeddings=emb), 3) / len(prompts)
        one = timed(lambda: [router.route([prompts[i]], embeddings=emb[i : i + 1]) for i in range(300)], 3) / 300
        e2e = timed(lambda: [router.route_one(p) for p in single], 2) / len(single)
        rows.append((size, batch, one, e2e))
    base = rows[0]
    print(
        f"\n{'members':>8}{'look-up batched':>18}{'look-up 1/call':>17}{'end to end 1/call':>20}   ratios vs {base[0]}"
    )
    for size, batch, one, e2e in rows:
        print(f"{size:>8}{1e6 * batch:>15.1f} µs{1e6 * one:>14.1f} µs{1e3 * e2e:>17.1f} ms   "
              f"{batch / base[1]:6.2f}× {one / base[2]:6.2f}× {e2e / base[3]:6.2f}×")
    print(f"goal: ≤ 2× per prompt from {sizes[0]} to {sizes[-1]} members")


if __name__ == "__main__":
    main()
