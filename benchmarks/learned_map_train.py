"""One LearnedMap training of a main-job trial's size, with torch's NaN-fill of new tensors on (as before issue 13's
change) and off (now), interleaved: CPU seconds, the ratio, and whether the weights are bit-identical.

Deterministic mode (``torch.use_deterministic_algorithms(True)``) also fills every new tensor with NaN, a guard
against reading uninitialised memory; LearnedMap's training writes every tensor before reading it, so it turns the
fill off (``uniroute_core.learned_map._FILL_UNINITIALIZED``). Shapes: 5,140 training prompts, 1,028 probes, d = 384,
19 training LLMs, K = 8, the paper's 5 epochs of batch 64 (random data: the cost does not depend on the values).

Run: ``PYTHONPATH=. python benchmarks/learned_map_train.py [--repeats 4]`` (under ``flock -x /work/cpu.lock`` on the
shared machine).
"""

from __future__ import annotations

import argparse
import hashlib
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()

    import uniroute_core.learned_map as lm

    rng = np.random.default_rng(0)
    n, n_probes, dim, n_llms = 5140, 1028, 384, 19
    x = rng.standard_normal((n, dim)).astype(np.float32)
    px = rng.standard_normal((n_probes, dim)).astype(np.float32)
    s = (rng.random((n, n_llms)) < 0.6).astype(float)
    ps = (rng.random((n_probes, n_llms)) < 0.6).astype(float)
    default = lm._FILL_UNINITIALIZED

    def train(fill: bool) -> tuple[float, str]:
        lm._FILL_UNINITIALIZED = fill
        try:
            t = time.process_time()
            m = lm.LearnedMapClusterMap(8, seed=1).fit(x, train_scores=s, probe_embeddings=px, probe_scores=ps)
            cpu = time.process_time() - t
        finally:
            lm._FILL_UNINITIALIZED = default
        return cpu, hashlib.sha256(b"".join(v.tobytes() for _, v in sorted(m.weights_.items()))).hexdigest()

    train(False)  # warm-up (torch and MKL initialisation)
    cpu: dict[bool, list[float]] = {True: [], False: []}
    hashes: dict[bool, set[str]] = {True: set(), False: set()}
    for _ in range(args.repeats):
        for fill in (True, False):
            t, h = train(fill)
            cpu[fill].append(t)
            hashes[fill].add(h)
    on, off = float(np.median(cpu[True])), float(np.median(cpu[False]))
    print(f"LearnedMap training, median CPU of {args.repeats} interleaved repeats")
    print(f"  NaN fill on (before)  {on:6.2f} s")
    print(f"  NaN fill off (now)    {off:6.2f} s   ratio {on / off:.2f}x")
    print(f"  weights bit-identical: {hashes[True] == hashes[False] and len(hashes[True]) == 1}")


if __name__ == "__main__":
    main()
