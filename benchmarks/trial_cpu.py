"""CPU seconds of each method in one trial of the main job (`uniroute eval --data mmlu_pro`, seed 0).

Where the time of `uniroute eval` goes: the trial runs exactly as in :func:`uniroute_core.evaluation.evaluate`
(:func:`~uniroute_core.evaluation.run_trial`, every default method, the 20-trial configuration), and each method's
``run`` is timed with ``time.process_time`` (CPU, so other jobs on the machine inflate it less than wall time).
torch and scikit-learn are imported before the clock starts (a worker imports them once, not per trial).

Run: ``PYTHONPATH=. python benchmarks/trial_cpu.py [--trial 0] [--data mmlu_pro]``; to compare two checkouts, run it
in each (minutes apart, under ``flock /work/cpu.lock`` on the shared machine).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trial", type=int, default=0)
    parser.add_argument("--data", default="mmlu_pro")
    args = parser.parse_args()

    import sklearn.cluster  # noqa: F401 - imported before the clock starts, as in a warm worker
    import torch  # noqa: F401

    import uniroute_core.evaluation.protocol as protocol
    from uniroute_core.data import load_routing_data
    from uniroute_core.embedding import default_embedder
    from uniroute_core.evaluation import EvaluationConfig, make_trial_splits, run_trial

    data = load_routing_data(args.data)
    x = np.asarray(default_embedder().embed(data.prompts))
    config = EvaluationConfig(trials=max(20, args.trial + 1))
    split, rng = make_trial_splits(data, config)[args.trial]
    cpu: dict[str, float] = {}
    get_method = protocol.get_method

    class Timed:
        def __init__(self, name: str) -> None:
            self.name, self.method = name, get_method(name)

        def run(self, ctx: Any) -> Any:
            t = time.process_time()
            out = self.method.run(ctx)
            cpu[self.name] = time.process_time() - t
            return out

    protocol.get_method = Timed  # type: ignore[assignment]
    t0, w0 = time.process_time(), time.perf_counter()
    result = run_trial(x, data, split, rng, config)
    print(f"trial {args.trial}: {time.process_time() - t0:.2f} s CPU, {time.perf_counter() - w0:.2f} s wall")
    for name in config.methods:
        print(f"  {name:<12} {cpu[name]:7.2f} s CPU   Area {result.metrics[name]['area']:.10f}")


if __name__ == "__main__":
    main()
