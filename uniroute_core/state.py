"""The immutable routing snapshot: everything a routing decision reads, and routing on it.

:class:`RouterState` holds the fitted cluster map Φ, the probe set with its assignments, the pool's profiles, and
the arrays derived from them (costs, Ψ as ``cluster_quality``, the cheapest-first order). A
:class:`~uniroute_core.router.UniRouter` owns one reference to a state and *replaces* it whole on every change
(``fit``, ``set_probes``, ``add_model``, ``remove_model``); a state is never mutated (its only mutable part is a
cache of budget → λ results that depends on nothing but the state itself).

Routing is a function of one state: :meth:`RouterState.route` takes prompt embeddings and a
:class:`~uniroute_core.policy.RoutingPolicy`. Anything that reads the pool more than once for one decision (costs
first, then the route — as the adapters' member selection does) reads ``router.state`` once and works on that
snapshot, so a concurrent ``remove_model`` can never make the two reads disagree. Serving code that embeds a batch
itself can route it on a snapshot the same way.

This module imports neither the router nor persistence: ``router → state`` and ``persistence → state``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .autoselect import Selection
from .cluster_map import ClusterMap
from .feedback import Exploration
from .policy import RoutingPolicy
from .probes import ProbeSet
from .profile import ModelProfile
from .profile_basis import ProfileBasis
from .rule import Calibration, adequacy_keys, calibrate_lambda, lambda_keys, pick, rank

__all__ = ["RouterState", "RouteDecision", "NotFittedError", "UnreachableBudgetWarning"]


class NotFittedError(RuntimeError):
    """The router was asked to route before it has a cluster map, probes or models."""


class UnreachableBudgetWarning(UserWarning):
    """The budget is below the cost of the cheapest member: every call goes to the cheapest member."""


class RouteDecision:
    """The router's choice for one prompt.

    Attributes:
        model: the chosen member.
        cost: the chosen member's per-call cost.
        lam: the λ used (``None`` in "cheapest adequate" mode).
        mode: ``"lam"``, ``"budget"`` or ``"min_quality"``.
        expected_quality: predicted quality (1 − expected loss) of every candidate member on this prompt.
        ranking: candidate members best-first by the same rule — the fallback order when a member fails.
        exploratory: the member was chosen by a posterior sample (:class:`~uniroute_core.feedback.Exploration`)
            rather than by the point estimates; ``expected_quality`` and ``ranking`` stay the point estimates'.

    ``expected_quality`` and ``ranking`` are built on first access from the row the router computed, so routing a
    large batch over a large pool costs O(M) array work per prompt, not O(M) Python objects.
    """

    __slots__ = (
        "model", "cost", "lam", "mode", "exploratory", "_pool", "_quality", "_keys", "_costs", "_eq", "_ranking"
    )

    def __init__(
        self,
        model: str,
        cost: float,
        lam: float | None,
        mode: str,
        *,
        pool: Sequence[str],
        quality_row: np.ndarray,
        key_row: np.ndarray,
        costs: np.ndarray,
        exploratory: bool = False,
    ) -> None:
        self.model = model
        self.exploratory = exploratory
        self.cost = cost
        self.lam = lam
        self.mode = mode
        self._pool = pool
        self._quality = quality_row
        self._keys = key_row
        self._costs = costs
        self._eq: dict[str, float] | None = None
        self._ranking: tuple[str, ...] | None = None

    @property
    def expected_quality(self) -> dict[str, float]:
        """Predicted quality of each candidate member (members excluded by ``candidates`` are absent)."""
        if self._eq is None:
            allowed = np.isfinite(self._keys)
            self._eq = {name: float(q) for name, q, ok in zip(self._pool, self._quality, allowed) if ok}
        return dict(self._eq)

    @property
    def ranking(self) -> tuple[str, ...]:
        """Candidate members best-first by the rule (ties to the cheaper member): the fallback order."""
        if self._ranking is None:
            self._ranking = tuple(self._pool[j] for j in rank(self._keys, self._costs))
        return self._ranking

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RouteDecision):
            return NotImplemented
        return (
            self.model, self.cost, self.lam, self.mode, self.exploratory, self.expected_quality, self.ranking
        ) == (
            other.model, other.cost, other.lam, other.mode, other.exploratory, other.expected_quality, other.ranking
        )

    __hash__ = None  # type: ignore[assignment]  # mutable-looking value object: equality without hashing

    def __repr__(self) -> str:
        return (
            f"RouteDecision(model={self.model!r}, cost={self.cost}, lam={self.lam}, mode={self.mode!r}, "
            f"expected_quality={self.expected_quality})"
        )


@dataclass(frozen=True)
class RouterState:
    """An immutable snapshot of everything routing reads. Replaced as a whole, never mutated.

    Attributes:
        cluster_map: the fitted Φ (``None`` before ``fit``).
        probes: the probe set (``None`` before ``set_probes``).
        probe_assign: Φ of the probe prompts ``(P, K)``.
        profiles: the pool members' profiles, in insertion order.
        costs: ``(M,)`` per-call cost of each member.
        cluster_quality: Ψ, ``(M, K)``: each member's expected quality per cluster (row m is
            ``profiles[m].cluster_quality``). Not to be confused with :meth:`expected_quality`, ``(n, M)`` per prompt.
        pool: member names in insertion order (the entries of ``costs`` and rows of ``cluster_quality``).
        cost_order: members cheapest first (stable): the rule's tie-break order, computed once per pool.
        calibrations: budget → λ results on the probe prompts for this exact state (a new state starts empty).
        evidence: ``(M, K)`` the probe + live weight behind each Ψ entry (for exploration's posteriors).
        exploration: Thompson-sampling exploration on a share of calls, or ``None`` (off).
        shrinkage: the α this state's profiles are built with when ``fit`` chose it by validation (``None``: the
            router's ``shrinkage`` setting).
        selection: the record of that choice (:class:`~uniroute_core.autoselect.Selection`), or ``None`` when the
            map was not chosen by validation (no training matrix, or a fixed representation).
        profile_basis: the low-rank shrinkage target chosen with the map
            (:class:`~uniroute_core.profile_basis.ProfileBasis`): a member profiled on probes shrinks towards its own
            fitted profile in it (kept as its ``prior_offsets``); ``None``: towards its own mean (the paper's).
    """

    cluster_map: ClusterMap | None = None
    probes: ProbeSet | None = None
    probe_assign: np.ndarray | None = field(default=None, repr=False)
    profiles: tuple[ModelProfile, ...] = ()
    costs: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    cluster_quality: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), repr=False)
    pool: tuple[str, ...] = ()
    cost_order: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    calibrations: dict[tuple[Any, ...], Calibration] = field(default_factory=dict, repr=False, compare=False)
    evidence: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), repr=False)
    exploration: Exploration | None = field(default=None, compare=False)
    shrinkage: float | None = None
    selection: Selection | None = field(default=None, repr=False, compare=False)
    profile_basis: ProfileBasis | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ building new states
    @property
    def names(self) -> list[str]:
        """Member names in insertion order (a fresh list)."""
        return list(self.pool)

    @property
    def cost_by_name(self) -> dict[str, float]:
        """Per-call cost of each member, in insertion order (a fresh dict)."""
        return {p.name: p.cost for p in self.profiles}

    def with_profiles(self, profiles: Sequence[ModelProfile]) -> RouterState:
        """A new state with this pool (costs and the Ψ matrix restacked, calibrations reset)."""
        k = self.cluster_map.n_clusters_ if self.cluster_map is not None else 0
        quality = np.stack([p.cluster_quality for p in profiles]) if profiles else np.zeros((0, k))
        evidence = np.stack([p.evidence for p in profiles]) if profiles else np.zeros((0, k))
        costs = np.array([p.cost for p in profiles], dtype=float)
        return dataclasses.replace(
            self,
            profiles=tuple(profiles),
            costs=costs,
            cluster_quality=quality,
            evidence=evidence,
            pool=tuple(p.name for p in profiles),
            cost_order=np.argsort(costs, kind="stable"),
            calibrations={},
        )

    # ------------------------------------------------------------------ checks
    def require_pool(self, action: str) -> None:
        """Raise :class:`NotFittedError` naming ``action`` and the missing step unless routing is possible."""
        if self.cluster_map is None:
            raise NotFittedError(f"{action}: the router is not fitted; call fit(train_prompts) first")
        if self.probes is None:
            raise NotFittedError(f"{action}: no probe prompts; call set_probes(probe_prompts) first")
        if not self.profiles:
            raise NotFittedError(f"{action}: the pool is empty; add models with add_model(name, cost, scores)")

    def candidate_mask(self, candidates: Sequence[str] | None) -> np.ndarray | None:
        """Boolean mask over the pool for ``candidates`` (``None`` = all members allowed)."""
        if candidates is None:
            return None
        names = self.names
        unknown = [c for c in candidates if c not in names]
        if unknown:
            raise KeyError(f"candidates {unknown} are not in the pool; members: {names}")
        wanted = set(candidates)
        mask = np.array([n in wanted for n in names])
        if not mask.any():
            raise ValueError("candidates is empty: at least one member must be allowed")
        return mask

    def _fitted_map(self) -> ClusterMap:
        if self.cluster_map is None:
            raise NotFittedError("the router is not fitted; call fit(train_prompts) first")
        return self.cluster_map

    # ------------------------------------------------------------------ routing
    def expected_quality(self, embeddings: np.ndarray) -> np.ndarray:
        """Predicted quality ``(n, M)`` of every member on every embedded prompt: Φ(x)ᵀΨ(h)."""
        self.require_pool("expected_quality")
        return self._fitted_map().assign(embeddings) @ self.cluster_quality.T

    def calibration(
        self,
        budget: float,
        *,
        candidates: Sequence[str] | None = None,
        embeddings: np.ndarray | None = None,
        warn: bool = True,
    ) -> Calibration:
        """The smallest λ whose mean routed cost on some prompts fits ``budget`` (mean cost per call > 0).

        The prompts are the probe prompts (result cached on this state) or the given ``embeddings``. A budget below
        the cheapest allowed member's cost cannot be met: an :class:`UnreachableBudgetWarning` says so (unless
        ``warn=False``) and the λ returned routes every call to the cheapest member.
        """
        self.require_pool("calibrate")
        checked = RoutingPolicy(budget=budget).budget  # the one check of a budget's value
        assert checked is not None
        budget = checked
        allowed = self.candidate_mask(candidates)
        key = (budget, None if candidates is None else tuple(sorted(set(candidates))))
        if embeddings is None and key in self.calibrations:
            cal = self.calibrations[key]
        else:
            if embeddings is None:
                q = np.asarray(self.probe_assign) @ self.cluster_quality.T
            else:
                q = self.expected_quality(embeddings)
            cal = calibrate_lambda(q, self.costs, budget, allowed)
            if embeddings is None:
                self.calibrations[key] = cal  # a cache of a pure function of this frozen state
        if not cal.reachable and warn:
            costs = self.costs if allowed is None else self.costs[allowed]
            cheapest = self.pool[int(np.nonzero(self.costs == costs.min())[0][0])]
            warnings.warn(
                f"budget {budget} per call is below the cheapest member's cost ({cheapest!r}: {costs.min()}); "
                "routing every call to the cheapest member",
                UnreachableBudgetWarning,
                stacklevel=3,
            )
        return cal

    def route(
        self,
        embeddings: np.ndarray,
        policy: RoutingPolicy | None = None,
        *,
        candidates: Sequence[str] | None = None,
    ) -> list[RouteDecision]:
        """Choose a member for each embedded prompt (rows of ``embeddings``) by ``policy`` (default: λ = 0).

        ``candidates`` restricts the choice to some members. Every read is of this one snapshot.
        """
        policy = RoutingPolicy() if policy is None else policy
        self.require_pool("route")
        allowed = self.candidate_mask(candidates)
        x = np.asarray(embeddings)
        if len(x) == 0:
            return []
        rows, table = self._fitted_map().assign_compact(x)
        used, rows = np.unique(rows, return_inverse=True)
        q = table[used] @ self.cluster_quality.T  # predicted quality of each distinct assignment row in use
        lam_used: float | None
        if policy.min_quality is not None:
            keys = adequacy_keys(q, self.costs, policy.min_quality, allowed)
            lam_used = None
        else:
            if policy.budget is not None:
                lam_used = self.calibration(policy.budget, candidates=candidates).lam
            else:
                lam_used = 0.0 if policy.lam is None else policy.lam
            keys = lambda_keys(q, self.costs, lam_used, allowed)
        choice = pick(keys, self.costs, self.cost_order)
        names = self.pool
        mode = policy.mode
        rows = rows.reshape(-1)
        chosen = choice[rows]
        explored = self.exploration.draw(len(rows)) if self.exploration is not None else np.zeros(len(rows), bool)
        if explored.any():
            chosen = chosen.copy()
            chosen[explored] = self._explore(x[explored], chosen[explored], policy, lam_used, allowed)
        return [
            RouteDecision(
                names[c], float(self.costs[c]), lam_used, mode, pool=names, quality_row=q[r],
                key_row=keys[r], costs=self.costs, exploratory=bool(e),
            )
            for r, c, e in zip(rows, chosen, explored)
        ]

    def _explore(
        self, x: np.ndarray, exploit: np.ndarray, policy: RoutingPolicy, lam: float | None, allowed: np.ndarray | None
    ) -> np.ndarray:
        """Thompson-sampled choices for the rows of ``x``, each among members costing at most its exploit choice."""
        assert self.exploration is not None
        phi = self._fitted_map().assign(x)
        shrink = np.array([p.shrinkage for p in self.profiles])[:, None]
        draws = self.exploration.sample_quality(self.cluster_quality, self.evidence + shrink, 0.0, len(x))
        q = np.einsum("nk,nmk->nm", phi, draws)
        within = self.costs[None, :] <= self.costs[exploit][:, None]
        if allowed is not None:
            within &= allowed[None, :]
        if policy.min_quality is not None:
            keys = adequacy_keys(q, self.costs, policy.min_quality)
        else:
            keys = lambda_keys(q, self.costs, 0.0 if lam is None else lam)
        return pick(np.where(within, keys, np.inf), self.costs, self.cost_order)
