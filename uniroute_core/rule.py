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
    "LambdaPath",
    "choose_by_lambdas",
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


class LambdaPath:
    """Every prompt's choice under the λ rule as a function of λ, so that many λ cost O(L·n), not O(L·n·M).

    For one prompt, as λ grows the rule's choice only moves to cheaper members, at *breakpoints* where the chosen
    member's objective (1 − q) + λ·c̃ is crossed by a cheaper member's (the lower convex hull of the members'
    (c̃, 1 − q) points). Those are found once per prompt (a few O(n·M) passes); :meth:`choose` then reads the choice
    at any λ by counting breakpoints below it.

    The result is *exactly* :func:`choose_by_lambda` at every λ (same objective values in floating point, same
    tie-break toward the cheaper member): wherever a λ lies within a rounding band of one of the prompt's
    breakpoints, that (prompt, λ) pair is decided by evaluating the rule itself; rows with a non-finite quality
    are always evaluated by the rule. ``tests/test_evaluation.py`` compares the two on ties, equal costs and
    near-collinear members.

    Args:
        expected_quality: ``(n, M)`` predicted quality per prompt and member.
        costs: ``(M,)`` the members' per-call costs.
    """

    def __init__(self, expected_quality: np.ndarray, costs: np.ndarray) -> None:
        q = np.asarray(expected_quality, dtype=float)
        costs = np.asarray(costs, dtype=float)
        if q.ndim != 2 or costs.ndim != 1 or q.shape[1] != costs.shape[0] or costs.size == 0:
            raise ValueError(f"expected_quality {q.shape} and costs {costs.shape} disagree")
        self.order = _cheapest_first(costs)
        self.costs = costs
        c_sorted = normalised_costs(costs)[self.order]
        loss = (1.0 - q)[:, self.order]  # the rule's (1 - q), columns cheapest first
        self._loss, self._c = loss, c_sorted
        n, m = loss.shape
        rows = np.arange(n)
        self._exact_rows = np.asarray(~np.isfinite(loss).all(axis=1))  # decided by the rule itself at every λ
        cur = np.argmin(np.where(self._exact_rows[:, None], 0.0, loss), axis=1)  # λ = 0: the first minimum
        members, breaks, bands = [cur], [], []
        last = np.zeros(n)
        active = (cur > 0) & ~self._exact_rows
        for _ in range(m - 1):
            if not active.any():
                break
            dc = c_sorted[cur][:, None] - c_sorted[None, :]  # > 0 only for strictly cheaper members
            with np.errstate(divide="ignore", invalid="ignore"):
                lam = np.where(dc > 0, (loss - loss[rows, cur][:, None]) / np.where(dc > 0, dc, 1.0), np.inf)
            lam[~active] = np.inf
            nxt = np.argmin(lam, axis=1)  # the cheapest of the members crossing first
            at = np.maximum(lam[rows, nxt], last)  # breakpoints never go back (rounding)
            moved = np.isfinite(at)
            gap = np.where(moved, dc[rows, nxt], 1.0)
            breaks.append(np.where(moved, at, np.inf))
            # rounding band: the objectives are O(1) sums, so a crossing is known to ~1e-15 / (cost gap) in λ
            bands.append(np.where(moved, 1e-9 * (1.0 + np.abs(at)) + 1e-12 / gap, 0.0))
            cur = np.where(moved, nxt, cur)
            members.append(cur)
            last = np.where(moved, at, last)
            active = moved & (cur > 0)
        self._members = np.stack(members, axis=1)  # (n, H + 1) positions in cheapest-first order
        self._breaks = np.stack(breaks, axis=1) if breaks else np.zeros((n, 0))  # (n, H), inf = none
        self._bands = np.stack(bands, axis=1) if bands else np.zeros((n, 0))

    def _sorted_lams(self, lams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lams = np.asarray(lams, dtype=float).reshape(-1)
        if lams.size and (not np.isfinite(lams).all() or (lams < 0).any()):
            raise ValueError(f"every lam must be a finite number >= 0, got min {lams.min()}, max {lams.max()}")
        srt = np.argsort(lams, kind="stable")
        return srt, lams[srt]

    def _starts(self, ls: np.ndarray) -> np.ndarray:
        """``(n, H + 1)``: index into the sorted λ where each of a prompt's segments starts (``len(ls)``: never)."""
        b = self._breaks
        first = np.full(b.shape, len(ls), dtype=np.int64)
        finite = np.isfinite(b)
        first[finite] = np.searchsorted(ls, b[finite], side="left")  # first λ at or past each breakpoint
        return np.concatenate([np.zeros((len(b), 1), dtype=np.int64), first], axis=1)

    def _ruled_pairs(self, ls: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The (λ index, prompt) pairs the rule decides itself (see the class docstring): λ index, prompt, the
        rule's choice and the segment's choice (positions in cheapest-first order)."""
        b, n_l = self._breaks, len(ls)
        finite = np.isfinite(b)
        r_idx = np.broadcast_to(np.arange(len(b))[:, None], b.shape)[finite]
        lo = np.searchsorted(ls, (b - self._bands)[finite], side="left")
        hi = np.searchsorted(ls, (b + self._bands)[finite], side="right")
        hit = np.nonzero(hi > lo)[0]  # usually none: a grid λ almost never sits on a prompt's crossing
        t_parts = [np.arange(lo[i], hi[i]) for i in hit]
        r_parts = [np.full(hi[i] - lo[i], r_idx[i]) for i in hit]
        exact = np.nonzero(self._exact_rows)[0]
        if exact.size and n_l:
            t_parts.append(np.repeat(np.arange(n_l), exact.size))
            r_parts.append(np.tile(exact, n_l))
        if not t_parts:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty, empty
        t_all, r_all = np.concatenate(t_parts), np.concatenate(r_parts)
        # de-duplicate (bands of one prompt may overlap)
        key = np.unique(t_all * len(b) + r_all)
        t_all, r_all = key // len(b), key % len(b)
        keys = self._loss[r_all] + ls[t_all][:, None] * self._c[None, :]  # the rule's objective, cheapest first
        ruled = np.argmin(keys, axis=1)
        seg = (b[r_all] <= ls[t_all][:, None]).sum(axis=1)
        return t_all, r_all, ruled, self._members[r_all, seg]

    def choose(self, lams: np.ndarray) -> np.ndarray:
        """The chosen member ``(len(lams), n)`` at each λ: row t equals ``choose_by_lambda(q, costs, lams[t])``."""
        srt, ls = self._sorted_lams(lams)
        n_l, n = len(ls), self._members.shape[0]
        starts = self._starts(ls)
        inc = np.zeros((n_l + 1, n), dtype=np.int64)
        np.add.at(inc, (starts[:, 1:].ravel(), np.repeat(np.arange(n), starts.shape[1] - 1)), 1)
        seg = np.cumsum(inc[:n_l], axis=0)  # segments started at or below each λ, minus the first
        pos = np.take_along_axis(self._members.T, seg, axis=0)
        t_all, r_all, ruled, _ = self._ruled_pairs(ls)
        pos[t_all, r_all] = ruled
        out = np.empty_like(pos)
        out[srt] = self.order[pos]
        return out

    def means(self, lams: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per λ: the mean over prompts of ``values[i, chosen member]`` (NaN = unknown, left out) and the number of
        known values — ``np.nanmean(values[rows, choose_by_lambda(q, costs, lam)])`` for every λ in O(n·H + L).

        Sums are accumulated λ by λ from the changes at breakpoints, so the means equal the direct ones up to float
        rounding (exactly, when the values are integers such as 0/1 correctness).
        """
        srt, ls = self._sorted_lams(lams)
        n_l, n = len(ls), self._members.shape[0]
        v = np.asarray(values, dtype=float)
        if v.shape != self._loss.shape:
            raise ValueError(f"values must be {self._loss.shape} (prompts x members), got {v.shape}")
        v = v[:, self.order]
        known = ~np.isnan(v)
        v0 = np.where(known, v, 0.0)
        rows = np.arange(n)[:, None]
        seg_v, seg_k = v0[rows, self._members], known[rows, self._members].astype(float)
        seg_v[self._exact_rows] = 0.0  # those rows are added below, λ by λ
        seg_k[self._exact_rows] = 0.0
        starts = self._starts(ls).ravel()
        d_v = np.diff(seg_v, axis=1, prepend=0.0).ravel()
        d_k = np.diff(seg_k, axis=1, prepend=0.0).ravel()
        total = np.cumsum(np.bincount(starts, weights=d_v, minlength=n_l + 1)[:n_l])
        count = np.cumsum(np.bincount(starts, weights=d_k, minlength=n_l + 1)[:n_l])
        t_all, r_all, ruled, segpos = self._ruled_pairs(ls)
        if t_all.size:
            is_exact = self._exact_rows[r_all]
            before_v = np.where(is_exact, 0.0, v0[r_all, segpos])
            before_k = np.where(is_exact, 0.0, known[r_all, segpos].astype(float))
            total += np.bincount(t_all, weights=v0[r_all, ruled] - before_v, minlength=n_l)
            count += np.bincount(t_all, weights=known[r_all, ruled] - before_k, minlength=n_l)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, total / np.where(count > 0, count, 1.0), np.nan)
        out_m, out_k = np.empty(n_l), np.empty(n_l)
        out_m[srt], out_k[srt] = mean, count
        return out_m, out_k


def choose_by_lambdas(expected_quality: np.ndarray, costs: np.ndarray, lams: np.ndarray) -> np.ndarray:
    """:func:`choose_by_lambda` at every λ of ``lams`` at once: ``(len(lams), n)`` member indices (see
    :class:`LambdaPath`, exact and O(L·n + n·M·H))."""
    return LambdaPath(expected_quality, costs).choose(lams)


def _distinct_rows(q: np.ndarray) -> np.ndarray:
    """The distinct rows of ``q`` (K-Means gives at most K), in any order — what ``np.unique(q, axis=0)`` keeps, found
    by hashing each row to one number (a fixed random projection) and checking that equal hashes are equal rows;
    on any doubt, ``np.unique(q, axis=0)`` itself."""
    if len(q) < 2:
        return q
    weights = np.random.default_rng(20260101).uniform(0.5, 1.5, q.shape[1])
    _, first, inverse = np.unique(q @ weights, return_index=True, return_inverse=True)
    if len(first) == len(q):  # all hashes differ: all rows differ
        return q
    kept = q[first]
    if np.array_equal(kept[inverse.reshape(-1)], q, equal_nan=True):
        return kept
    return np.unique(q, axis=0)


def _sorted_quantiles(values: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """``np.quantile(values, probs)`` (its default "linear" method) of an already sorted, NaN-free array, without
    numpy's partitioning pass: numpy's own arithmetic, so the same bits (``tests/test_evaluation.py`` checks it)."""
    n = values.shape[0]
    virtual = (n - 1) * probs
    lo = np.floor(virtual).astype(np.intp)
    hi = np.clip(lo + 1, 0, n - 1)
    lo = np.clip(lo, 0, n - 1)
    gamma = virtual - np.floor(virtual)
    a, b = values[lo], values[hi]
    diff = b - a
    out = np.add(a, diff * gamma)
    np.subtract(b, diff * (1 - gamma), out=out, where=gamma >= 0.5)
    return out


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
    q = _distinct_rows(np.round(q, 12))
    # every crossing (q_i - q_j) / (c_i - c_j) > 0 of a dearer i with a strictly cheaper j, member by member
    order = np.argsort(c, kind="stable")
    q_by_member, c_sorted = np.ascontiguousarray(q.T[order]), c[order]
    parts = []
    for i in range(1, len(c_sorted)):
        j = int(np.searchsorted(c_sorted, c_sorted[i], side="left"))  # members strictly cheaper than i: [0, j)
        if j:
            dq = q_by_member[i][None, :] - q_by_member[:j]
            up = dq > 0
            parts.append(dq[up] / np.broadcast_to((c_sorted[i] - c_sorted[:j])[:, None], dq.shape)[up])
    cross = np.unique(np.concatenate(parts)) if parts else np.zeros(0)
    if cross.size > max_points:
        cross = np.unique(_sorted_quantiles(cross, np.linspace(0, 1, max_points)))
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
