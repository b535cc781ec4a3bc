"""The evaluation harness's inner loops, before vs after (issue 13: a fast first run of `uniroute eval`).

One run, interleaved (A, B, A, B, ...), median CPU time of each, on shapes of one MMLU-Pro trial:

* ``router_curve`` — the deferral curve over every λ. Before: the rule applied λ by λ (O(L·n·M)). After:
  :class:`uniroute_core.rule.LambdaPath` (each prompt's breakpoints once, then O(L + n·H)). Test curves (3,084 test
  prompts x 10 test LLMs, up to 2,000 λ) and validation curves (1,199 prompts x 19 training LLMs, 200 λ), for a soft
  map (every row distinct) and a hard one (20 distinct rows).
* ``lambda_grid`` — the λ values of a curve. Before: all M x M differences, ``np.unique(axis=0)``, ``np.quantile``.
  After: member by member over strictly cheaper members, rows de-duplicated by a checked hash, quantiles read off
  the sorted crossings. Both give the same λ values bit for bit (``tests/test_evaluation.py``).

Each pair is also checked to agree (same λ grid bit for bit, same curve up to float rounding) before it is timed.
Run: ``PYTHONPATH=. python benchmarks/eval_speed.py [--repeats 15]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from uniroute_core.evaluation.metrics import area, deferral_curve, router_curve
from uniroute_core.rule import choose_by_lambda, lambda_grid

COSTS = np.array(
    [21.0, 13.0, 70.0, 7.0, 70.6, 8.0, 70.6, 70.6, 8.0, 8.0, 7.2, 7.2, 7.2, 7.2, 12.9, 12.9, 3.8, 111.0, 72.0,
     7.7, 34.4, 6.1, 6.1, 35.0, 8.13, 135.5, 8.5, 94.0, 7.2]
)  # the per-call costs of the 29 LLMs of the bundled MMLU-Pro data


def lambda_grid_before(q: np.ndarray, costs: np.ndarray, max_points: int = 2000) -> np.ndarray:
    """lambda_grid as it was before this change."""
    c = costs / costs.max()
    q = np.unique(np.round(np.asarray(q, dtype=float), 12), axis=0)
    dq = q[:, :, None] - q[:, None, :]
    dc = c[:, None] - c[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = dq / dc[None, :, :]
    cross = np.unique(lam[(dc[None, :, :] > 0) & (dq > 0)])
    if cross.size > max_points:
        cross = np.unique(np.quantile(cross, np.linspace(0, 1, max_points)))
    if cross.size == 0:
        return np.array([0.0])
    return np.concatenate([[0.0], (cross[:-1] + cross[1:]) / 2.0, [cross[-1] * 2.0 + 1.0]])


def router_curve_before(pred: np.ndarray, true: np.ndarray, costs: np.ndarray, max_points: int = 2000) -> Any:
    """router_curve as it was before this change: the rule applied at each λ."""
    lams = lambda_grid_before(pred, costs, max_points)
    rows = np.arange(len(true))
    pts_c, pts_q = np.empty(len(lams)), np.empty(len(lams))
    for t, lam in enumerate(lams):
        pick = choose_by_lambda(pred, costs, float(lam))
        pts_c[t] = costs[pick].mean()
        pts_q[t] = np.nanmean(true[rows, pick])
    return deferral_curve(pts_c, pts_q, costs.min(), costs.max(), lams=lams)


def _median_cpu(fns: list[Callable[[], Any]], repeats: int) -> list[float]:
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):  # interleaved: both see the same machine load
            t = time.process_time()
            fn()
            times[i].append(time.process_time() - t)
    return [float(np.median(t)) for t in times]


def _case(rng: np.random.Generator, n: int, m: int, hard: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    costs = COSTS[rng.permutation(len(COSTS))[:m]]
    if hard:
        pred = (rng.random((20, m)) * 0.4 + 0.4)[rng.integers(0, 20, n)]
    else:
        pred = rng.random((n, m)) * 0.4 + 0.4
    true = (rng.random((n, m)) < pred).astype(float)
    return pred, true, costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for label, n, m, points, hard in (
        ("test curve, soft map", 3084, 10, 2000, False),
        ("test curve, hard map", 3084, 10, 2000, True),
        ("validation curve, soft map", 1199, 19, 200, False),
        ("validation curve, hard map", 1199, 19, 200, True),
    ):
        pred, true, costs = _case(rng, n, m, hard)
        grid_a, grid_b = lambda_grid_before(pred, costs, points), lambda_grid(pred, costs, max_points=points)
        if not np.array_equal(grid_a, grid_b):
            raise SystemExit(f"{label}: the λ grids differ")
        a, b = router_curve_before(pred, true, costs, points), router_curve(pred, true, costs, points)
        if abs(area(a) - area(b)) > 1e-12:
            raise SystemExit(f"{label}: the Areas differ ({area(a)} vs {area(b)})")
        t_grid = _median_cpu(
            [partial(lambda_grid_before, pred, costs, points), partial(lambda_grid, pred, costs, max_points=points)],
            args.repeats,
        )
        t_curve = _median_cpu(
            [partial(router_curve_before, pred, true, costs, points), partial(router_curve, pred, true, costs, points)],
            max(3, args.repeats // 3),
        )
        rows.append((f"lambda_grid, {label}", *t_grid))
        rows.append((f"router_curve, {label}", *t_curve))
    print(f"{'median CPU ms (interleaved)':<44} {'before':>9} {'after':>9} {'speed-up':>9}")
    for name, before, after in rows:
        print(f"{name:<44} {before * 1e3:9.2f} {after * 1e3:9.2f} {before / after:8.1f}x")


if __name__ == "__main__":
    main()
