"""False alarms of ``ChangeDetection`` on stationary feedback, measured against the rate it is built for (issue 14).

Synthetic pools on 4 well-separated topics (16-d blobs, K-Means K=4, 120 probes = 30 per topic, α = 2). Members'
probe answers and live answers are drawn at the SAME rates, so every alarm is a false alarm. Calls are routed in
blocks of 20 on one snapshot (λ = 0.2) and every call is fed back. Scenarios:

  * two members: ``good`` 0.9 everywhere (cost 1), ``backup`` 0.75 (cost 2) — the regressed-member set-up, no drift;
  * winner's curse: 4 members of equal cost and equal true quality (0.8, then 0.6); the router sends each topic to
    the member whose 30-probe estimate is luckiest, so its predictions start optimistic — the hard case for a
    detector that tests feedback against predictions.

Prints alarms per observation next to the default ``false_alarm_rate`` (1e-3) it must stay under.

    PYTHONPATH=$PWD nice -n 10 python benchmarks/change_detection_false_alarms.py [--seeds 20] [--calls 3000]
        [--method mixture|cusum]
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

from uniroute_core import ChangeDetection, UniRouter
from uniroute_core.embedding import CallableEmbedder

DIM, K, P = 16, 4, 120


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, K, n)
    x = np.eye(DIM)[:K][topic] * 3 + rng.normal(scale=0.3, size=(n, DIM))
    return x / np.linalg.norm(x, axis=1, keepdims=True), topic


def _no_text(texts: list[str]) -> np.ndarray:
    raise RuntimeError("routes on vectors only")


def run(rates: dict[str, float], costs: dict[str, float], seed: int, calls: int, detection: ChangeDetection) -> int:
    router = UniRouter(embedder=CallableEmbedder(_no_text, name="vectors"), n_clusters=K, cluster_map="kmeans",
                       shrinkage=2.0, show_progress=False, change_detection=detection)
    router.fit_embeddings(blobs(400, 0)[0])
    router.set_probes([f"p{i}" for i in range(P)], embeddings=blobs(P, 1)[0])
    rng = np.random.default_rng(seed)
    for name, q in rates.items():
        router.add_model(name, costs[name], (rng.random(P) < q).astype(float))
    x, _ = blobs(calls, 100 + seed)
    for lo in range(0, calls, 20):
        xs = x[lo : lo + 20]
        names = [d.model for d in router.route(["q"] * len(xs), embeddings=xs, lam=0.2)]
        router.observe_many(xs, names, (rng.random(len(xs)) < np.array([rates[m] for m in names])).astype(float))
    return len(router.change_events)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--calls", type=int, default=3000)
    p.add_argument("--method", choices=["mixture", "cusum"], default=ChangeDetection().method,
                   help="the change test (default: the library default)")
    args = p.parse_args()
    logging.getLogger("uniroute_core.feedback").setLevel(logging.ERROR)  # the alarms are counted, not printed
    det = ChangeDetection(method=args.method)
    scenarios = {
        "two members (0.9 / 0.75)": ({"good": 0.9, "backup": 0.75}, {"good": 1.0, "backup": 2.0}),
        "winner's curse, 4 x 0.8": ({f"m{j}": 0.8 for j in range(4)}, {f"m{j}": 1.0 for j in range(4)}),
        "winner's curse, 4 x 0.6": ({f"m{j}": 0.6 for j in range(4)}, {f"m{j}": 1.0 for j in range(4)}),
    }
    print(f"ChangeDetection(method={det.method!r}): false_alarm_rate {det.false_alarm_rate:g}, threshold "
          f"{det.threshold:.2f} nats; {args.seeds} seeds x {args.calls} calls, every call fed back")
    print(f"{'scenario':<28}{'observations':>14}{'false alarms':>14}{'per observation':>18}{'allowed':>10}")
    for name, (rates, costs) in scenarios.items():
        alarms = sum(run(rates, costs, s, args.calls, det) for s in range(args.seeds))
        n = args.seeds * args.calls
        print(f"{name:<28}{n:>14}{alarms:>14}{alarms / n:>18.1e}{det.false_alarm_rate:>10.0e}")


if __name__ == "__main__":
    main()
