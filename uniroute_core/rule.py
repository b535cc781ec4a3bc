"""The routing rule — the one place where a member is chosen.

For a prompt x with predicted quality q_m(x) = Φ(x)ᵀ Ψ(h_m) (1 − expected loss) and normalised cost c̃_m:

    r(x) = argmin_m [ (1 − q_m(x)) + λ · c̃_m ],      c̃_m = c_m / max_j c_j

Normalising by the largest cost in the pool makes λ unit-free: λ = 0 picks the most accurate predicted member,
λ = 1 trades one unit of expected loss for the full cost range, and a large λ picks the cheapest member. Ties go to
the cheaper member, so the routed cost is non-increasing in λ (the property calibration relies on).

"Cheapest adequate" (``min_quality=τ``) picks the cheapest member with q_m(x) ≥ τ, else the highest q_m(x).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "normalised_costs",
    "route_scores",
    "choose_by_lambda",
    "choose_cheapest_adequate",
    "lambda_grid",
    "routed_cost_curve",
    "Calibration",
    "calibrate_lambda",
]


def normalised_costs(costs: np.ndarray) -> np.ndarray:
    """Costs divided by the largest one (all zeros stay zeros), so λ has the same meaning in any cost unit."""
    costs = np.asarray(costs, dtype=float)
    top = costs.max() if costs.size else 0.0
    return costs / top if top > 0 else np.zeros_like(costs)


def _masked(values: np.ndarray, allowed: np.ndarray | None, fill: float) -> np.ndarray:
    if allowed is None:
        return values
    return np.where(allowed[None, :], values, fill)


def route_scores(expected_quality: np.ndarray, norm_costs: np.ndarray, lam: float) -> np.ndarray:
    """The rule's objective (1 − q) + λ·c̃ for every (prompt, member); lower is better."""
    return (1.0 - expected_quality) + lam * norm_costs[None, :]


def _cheapest_first(costs: np.ndarray) -> np.ndarray:
    """Member order used to break ties toward the cheaper member (stable for equal costs)."""
    return np.argsort(costs, kind="stable")


def choose_by_lambda(
    expected_quality: np.ndarray, costs: np.ndarray, lam: float, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the rule. Returns ``(choice (n,), ranking (n, M))``: ranking lists members best-first by the rule.

    ``allowed`` (bool per member) restricts the choice; disallowed members are ranked last.
    """
    if lam < 0 or not np.isfinite(lam):
        raise ValueError(f"lam must be a finite number >= 0, got {lam}")
    order = _cheapest_first(costs)
    s = route_scores(expected_quality, normalised_costs(costs), lam)
    s = _masked(s, allowed, np.inf)[:, order]
    ranking = order[np.argsort(s, axis=1, kind="stable")]
    return ranking[:, 0], ranking


def choose_cheapest_adequate(
    expected_quality: np.ndarray, costs: np.ndarray, min_quality: float, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Cheapest member whose expected quality ≥ ``min_quality``; if none is, the one with the highest quality.

    Ranking: adequate members by cost, then the others by expected quality (ties to the cheaper).
    """
    if not (0.0 <= min_quality <= 1.0):
        raise ValueError(f"min_quality must lie in [0, 1], got {min_quality}")
    order = _cheapest_first(costs)
    q = expected_quality[:, order]
    adequate = q >= min_quality
    n_members = len(order)
    # adequate: key = position by cost (0..M-1); inadequate: M + rank by descending quality
    key = np.where(adequate, np.arange(n_members)[None, :], n_members + (1.0 - q))
    key = _masked(key, None if allowed is None else allowed[order], np.inf)
    ranking = order[np.argsort(key, axis=1, kind="stable")]
    return ranking[:, 0], ranking


def lambda_grid(
    expected_quality: np.ndarray, costs: np.ndarray, allowed: np.ndarray | None = None, max_points: int = 2000
) -> np.ndarray:
    """λ values that visit every distinct routing decision of the rule on these prompts (exact up to ``max_points``).

    The decision for a prompt changes only where two members' objectives cross, at
    λ = (q_i − q_j) / (c̃_i − c̃_j) for a dearer, better i and a cheaper j. Evaluating at 0, between consecutive
    crossings and past the last one sees each distinct decision once. Rows are de-duplicated first (K-Means gives
    at most K distinct rows); when there are more crossings than ``max_points``, quantiles of them are used.
    """
    c = normalised_costs(costs)  # the rule normalises by the whole pool, whatever ``allowed`` is
    q = np.asarray(expected_quality, dtype=float)
    if allowed is not None:
        q, c = q[:, allowed], c[allowed]
    q = np.unique(np.round(q, 12), axis=0)
    dq = q[:, :, None] - q[:, None, :]  # q_i - q_j
    dc = c[:, None] - c[None, :]  # c_i - c_j
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = dq / dc[None, :, :]
    valid = (dc[None, :, :] > 0) & (dq > 0)
    cross = np.unique(lam[valid])
    if cross.size > max_points:
        cross = np.unique(np.quantile(cross, np.linspace(0, 1, max_points)))
    if cross.size == 0:
        return np.array([0.0])
    mids = (cross[:-1] + cross[1:]) / 2.0
    return np.concatenate([[0.0], mids, [cross[-1] * 2.0 + 1.0]])


def routed_cost_curve(
    expected_quality: np.ndarray,
    costs: np.ndarray,
    lams: np.ndarray,
    allowed: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Mean routed cost (in the user's units) at each λ of ``lams``; ``weights`` counts repeated rows."""
    costs = np.asarray(costs, dtype=float)
    return np.array(
        [np.average(costs[choose_by_lambda(expected_quality, costs, float(x), allowed)[0]], weights=weights) for x in lams]
    )


@dataclass(frozen=True)
class Calibration:
    """The result of turning a budget into λ.

    Attributes:
        lam: the smallest λ whose mean routed cost on the calibration prompts is ≤ the budget.
        expected_cost: that mean routed cost.
        reachable: False when even "always the cheapest member" costs more than the budget (``lam`` then routes
            everything to the cheapest member).
    """

    lam: float
    expected_cost: float
    reachable: bool


def calibrate_lambda(
    expected_quality: np.ndarray, costs: np.ndarray, budget: float, allowed: np.ndarray | None = None
) -> Calibration:
    """Find the smallest λ whose mean routed cost on these prompts is ≤ ``budget`` (exact search over the λ grid).

    Routed cost is non-increasing in λ, so the smallest feasible λ spends as much of the budget as helps quality.
    """
    if budget is None or not np.isfinite(budget) or budget < 0:
        raise ValueError(f"budget must be a finite number >= 0 (mean cost per call), got {budget}")
    rows, counts = np.unique(np.round(np.asarray(expected_quality, dtype=float), 12), axis=0, return_counts=True)
    lams = lambda_grid(rows, costs, allowed)
    spent = routed_cost_curve(rows, costs, lams, allowed, weights=counts)
    ok = np.nonzero(spent <= budget + 1e-12 * max(1.0, abs(budget)))[0]
    if ok.size == 0:
        return Calibration(lam=float(lams[-1]), expected_cost=float(spent[-1]), reachable=False)
    return Calibration(lam=float(lams[ok[0]]), expected_cost=float(spent[ok[0]]), reachable=True)
