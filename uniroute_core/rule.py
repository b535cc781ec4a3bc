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
    "lambda_keys",
    "adequacy_keys",
    "pick",
    "rank",
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


def _masked(values: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    """Disallowed members get an infinite key: never chosen, ranked out."""
    if allowed is None:
        return values
    return np.where(np.asarray(allowed, dtype=bool)[None, :], values, np.inf)


def route_scores(expected_quality: np.ndarray, norm_costs: np.ndarray, lam: float) -> np.ndarray:
    """The rule's objective (1 − q) + λ·c̃ for every (prompt, member); lower is better."""
    return (1.0 - expected_quality) + lam * norm_costs[None, :]


def lambda_keys(
    expected_quality: np.ndarray, costs: np.ndarray, lam: float, allowed: np.ndarray | None = None
) -> np.ndarray:
    """Sort keys ``(n, M)`` of the λ rule (lower is better; ``inf`` for members not allowed)."""
    if lam is None or lam < 0 or not np.isfinite(lam):
        raise ValueError(f"lam must be a finite number >= 0, got {lam}")
    return _masked(route_scores(np.asarray(expected_quality, dtype=float), normalised_costs(costs), lam), allowed)


def adequacy_keys(
    expected_quality: np.ndarray, costs: np.ndarray, min_quality: float, allowed: np.ndarray | None = None
) -> np.ndarray:
    """Sort keys ``(n, M)`` of "cheapest adequate": adequate members by cost, then the rest by quality.

    An adequate member's key is its cost rank (0 … M−1); an inadequate one's is M + (1 − q), so every adequate
    member comes first, cheapest first, then the others best-first.
    """
    if min_quality is None or not (0.0 <= min_quality <= 1.0):
        raise ValueError(f"min_quality must lie in [0, 1], got {min_quality}")
    q = np.asarray(expected_quality, dtype=float)
    cost_rank = np.empty(len(costs))
    cost_rank[_cheapest_first(np.asarray(costs, dtype=float))] = np.arange(len(costs))
    keys = np.where(q >= min_quality, cost_rank[None, :], len(costs) + (1.0 - q))
    return _masked(keys, allowed)


def _cheapest_first(costs: np.ndarray) -> np.ndarray:
    """Member order used to break ties toward the cheaper member (stable for equal costs)."""
    return np.argsort(costs, kind="stable")


def pick(keys: np.ndarray, costs: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """The best member per row of ``keys`` — ties go to the cheaper member. O(n·M), no sorting.

    ``order`` may pass the members' cheapest-first order when the caller has it already.
    """
    if order is None:
        order = _cheapest_first(np.asarray(costs, dtype=float))
    return order[np.argmin(keys[:, order], axis=1)]


def rank(key_row: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """Members best-first for one prompt (same tie-break as :func:`pick`), without the disallowed ones."""
    order = _cheapest_first(np.asarray(costs, dtype=float))
    ranked = order[np.argsort(key_row[order], kind="stable")]
    return ranked[np.isfinite(key_row[ranked])]


def choose_by_lambda(
    expected_quality: np.ndarray, costs: np.ndarray, lam: float, allowed: np.ndarray | None = None
) -> np.ndarray:
    """Apply the rule argmin (1 − q) + λ·c̃: the chosen member per prompt. ``allowed`` restricts the choice."""
    return pick(lambda_keys(expected_quality, costs, lam, allowed), costs)


def choose_cheapest_adequate(
    expected_quality: np.ndarray, costs: np.ndarray, min_quality: float, allowed: np.ndarray | None = None
) -> np.ndarray:
    """Cheapest member whose expected quality ≥ ``min_quality``; if none is, the one with the highest quality."""
    return pick(adequacy_keys(expected_quality, costs, min_quality, allowed), costs)


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
        [np.average(costs[choose_by_lambda(expected_quality, costs, float(x), allowed)], weights=weights) for x in lams]
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
    if budget is None or isinstance(budget, bool) or not np.isfinite(budget) or budget <= 0:
        raise ValueError(f"budget must be a finite number > 0 (mean cost per call), got {budget!r}")
    rows, counts = np.unique(np.round(np.asarray(expected_quality, dtype=float), 12), axis=0, return_counts=True)
    lams = lambda_grid(rows, costs, allowed)
    spent = routed_cost_curve(rows, costs, lams, allowed, weights=counts)
    ok = np.nonzero(spent <= budget + 1e-12 * max(1.0, abs(budget)))[0]
    if ok.size == 0:
        return Calibration(lam=float(lams[-1]), expected_cost=float(spent[-1]), reachable=False)
    return Calibration(lam=float(lams[ok[0]]), expected_cost=float(spent[ok[0]]), reachable=True)
