"""Deferral curves and their summaries: Area, Area(50%), QNC (see the method note, "Metrics").

A router traced over λ gives points (mean cost, mean quality) of the routed prompts. The *deferral curve* is their
upper envelope: sort by cost, keep the points that improve on every cheaper point, join them linearly; the curve is
flat beyond its last point (and before its first).

* **Area** — the integral of that curve over cost normalised to [0, 1] between the cheapest and the most expensive
  single model of the pool (higher is better; a perfect free router would score 1).
* **Area(50%)** — the mean quality of the curve over the cheaper half of that range (its integral on [0, 0.5]
  divided by 0.5, so it is on the same 0–1 scale as Area).
* **QNC** — quality-neutral cost: the smallest mean cost at which the curve reaches the quality of the most
  accurate single model, as a fraction of that model's cost (``None`` when it never does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..rule import LambdaPath, lambda_grid

# np.trapezoid from NumPy 2.0 on; np.trapz (same function) before that.
_TRAPEZOID: Callable[..., Any] = getattr(np, "trapezoid", None) or getattr(np, "trapz")  # noqa: B009

__all__ = ["DeferralCurve", "deferral_curve", "router_curve", "area", "area_up_to", "qnc"]


@dataclass(frozen=True)
class DeferralCurve:
    """Upper envelope of (cost, quality) points, sorted by cost, with the pool's cost range for normalising.

    Attributes:
        cost: ``(p,)`` mean cost at each envelope vertex (increasing).
        quality: ``(p,)`` mean quality at each vertex (strictly increasing).
        cost_min / cost_max: the cheapest and the most expensive single model's cost (the [0, 1] range of Area).
        raw_cost / raw_quality: every traced point, before the envelope (for plotting and inspection).
        lams: the λ of each raw point when it came from a λ sweep, else ``None``.
    """

    cost: np.ndarray
    quality: np.ndarray
    cost_min: float
    cost_max: float
    raw_cost: np.ndarray
    raw_quality: np.ndarray
    lams: np.ndarray | None = None

    def quality_at(self, cost: np.ndarray | float) -> np.ndarray:
        """Envelope quality at ``cost`` (linear between vertices, flat outside them)."""
        return np.interp(cost, self.cost, self.quality)

    def normalised(self, cost: np.ndarray | float) -> np.ndarray:
        """Cost mapped to [0, 1] of the pool's cost range."""
        span = self.cost_max - self.cost_min
        return (np.asarray(cost, dtype=float) - self.cost_min) / span if span > 0 else np.zeros_like(cost, dtype=float)


def deferral_curve(
    cost: np.ndarray, quality: np.ndarray, cost_min: float, cost_max: float, lams: np.ndarray | None = None
) -> DeferralCurve:
    """Build the deferral curve (upper envelope) of arbitrary (cost, quality) points."""
    cost = np.asarray(cost, dtype=float)
    quality = np.asarray(quality, dtype=float)
    if cost.shape != quality.shape or cost.ndim != 1 or cost.size == 0:
        raise ValueError(
            f"cost and quality must be equal-length non-empty 1-D arrays, got {cost.shape} and {quality.shape}"
        )
    order = np.lexsort((-quality, cost))  # by cost, best quality first among equal costs
    env_c: list[float] = []
    env_q: list[float] = []
    for c, q in zip(cost[order], quality[order]):
        if not env_q or q > env_q[-1] + 1e-15:
            if env_c and c == env_c[-1]:
                env_q[-1] = q
            else:
                env_c.append(c)
                env_q.append(q)
    return DeferralCurve(
        cost=np.array(env_c), quality=np.array(env_q), cost_min=float(cost_min), cost_max=float(cost_max),
        raw_cost=cost, raw_quality=quality, lams=lams,
    )


def router_curve(
    predicted_quality: np.ndarray, true_quality: np.ndarray, costs: np.ndarray, max_points: int = 2000
) -> DeferralCurve:
    """Trace the rule over every distinct λ on a labelled set: predicted vs observed quality, per (prompt, member).

    ``costs`` are the pool's per-call costs; the Area range is that pool's cheapest to most expensive member.
    A NaN true quality (a sparse folder) is unknown: that prompt is left out of that point's quality mean.
    """
    predicted_quality = np.asarray(predicted_quality, dtype=float)
    true_quality = np.asarray(true_quality, dtype=float)
    costs = np.asarray(costs, dtype=float)
    if predicted_quality.shape != true_quality.shape or predicted_quality.shape[1] != costs.shape[0]:
        raise ValueError(
            f"predicted {predicted_quality.shape}, true {true_quality.shape} and costs {costs.shape} disagree"
        )
    lams = lambda_grid(predicted_quality, costs, max_points=max_points)
    # every λ's choices at once (rule.LambdaPath: exactly choose_by_lambda at each λ, in O(n·M + L) instead of
    # O(L·n·M)); an unobserved cell (NaN) is unknown, not wrong
    path = LambdaPath(predicted_quality, costs)
    pts_q, _ = path.means(lams, true_quality)
    pts_c, _ = path.means(lams, np.broadcast_to(costs, predicted_quality.shape))
    return deferral_curve(pts_c, pts_q, costs.min(), costs.max(), lams=lams)


def area_up_to(curve: DeferralCurve, upto: float = 1.0) -> float:
    """Integral of the curve over normalised cost [0, ``upto``]."""
    x = curve.normalised(curve.cost)
    y = curve.quality
    inner = (x > 0) & (x < upto)
    xs = np.concatenate([[0.0], x[inner], [upto]])
    ys = np.interp(xs, x, y)
    return float(_TRAPEZOID(ys, xs))


def area(curve: DeferralCurve, fraction: float = 1.0) -> float:
    """Area under the deferral curve (``fraction=1``), or mean quality over the cheapest ``fraction`` of the range."""
    if not (0 < fraction <= 1):
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return area_up_to(curve, fraction) / fraction


def qnc(curve: DeferralCurve, target_quality: float, reference_cost: float) -> float | None:
    """Smallest mean cost at which the curve reaches ``target_quality``, over ``reference_cost``; ``None`` if never."""
    c, q = curve.cost, curve.quality
    hit = np.nonzero(q >= target_quality - 1e-12)[0]
    if hit.size == 0:
        return None
    i = hit[0]
    if i == 0:
        at = c[0]
    else:  # linear interpolation inside the segment that crosses the target
        frac = (target_quality - q[i - 1]) / (q[i] - q[i - 1])
        at = c[i - 1] + frac * (c[i] - c[i - 1])
    return float(at / reference_cost) if reference_cost > 0 else float("inf")
