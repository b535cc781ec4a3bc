"""UniRouter: fit a cluster map once, add models by profiling them on probe prompts, route each prompt by the rule.

Typical use::

    router = UniRouter(n_clusters=20).fit(train_prompts)     # unlabelled prompts → K-Means cluster map Φ
    router.set_probes(probe_prompts)                          # the representative prompts, embedded once
    router.add_model("small", cost=1.0, scores=small_scores)  # scores[i] = quality on probe i (NaN = unknown)
    router.add_model("large", cost=8.0, scores=large_scores)
    router.route(["What is 2+2?"], lam=0.3)[0].model          # → "small" when it is good enough

Thread safety: everything routing reads lives in one immutable :class:`RouterState`; ``fit``, ``set_probes``,
``add_model`` and ``remove_model`` build a new state and swap the reference under a lock, so a concurrent
``route`` sees either the old pool or the new one, never half of each.
"""

from __future__ import annotations

import dataclasses
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cluster_map import ClusterMap, KMeansClusterMap
from .embedding import Embedder, resolve_embedder, validate_texts
from .probes import ProbeSet
from .profile import ModelProfile, build_profile, validate_cost, validate_scores
from .rule import Calibration, adequacy_keys, calibrate_lambda, lambda_keys, pick, rank

__all__ = ["UniRouter", "RouteDecision", "RouterState", "NotFittedError", "UnreachableBudgetWarning"]


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

    ``expected_quality`` and ``ranking`` are built on first access from the row the router computed, so routing a
    large batch over a large pool costs O(M) array work per prompt, not O(M) Python objects.
    """

    __slots__ = ("model", "cost", "lam", "mode", "_pool", "_quality", "_keys", "_costs", "_eq", "_ranking")

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
    ) -> None:
        self.model = model
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
        return (self.model, self.cost, self.lam, self.mode, self.expected_quality, self.ranking) == (
            other.model, other.cost, other.lam, other.mode, other.expected_quality, other.ranking
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"RouteDecision(model={self.model!r}, cost={self.cost}, lam={self.lam}, mode={self.mode!r}, "
            f"expected_quality={self.expected_quality})"
        )


@dataclass(frozen=True)
class RouterState:
    """An immutable snapshot of everything routing reads. Replaced as a whole, never mutated."""

    cluster_map: ClusterMap | None = None
    probes: ProbeSet | None = None
    probe_assign: np.ndarray | None = field(default=None, repr=False)
    profiles: tuple[ModelProfile, ...] = ()
    costs: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    quality: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), repr=False)  # (M, K)
    pool: tuple[str, ...] = ()
    """Member names in insertion order (the columns of ``costs`` and rows of ``quality``)."""
    cost_order: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    """Members cheapest first (stable): the rule's tie-break order, computed once per pool."""
    calibrations: dict[tuple[Any, ...], Calibration] = field(default_factory=dict, repr=False, compare=False)
    """Budget → λ results on the probe prompts for this exact state (a new state starts empty)."""

    @property
    def names(self) -> list[str]:
        """Member names in insertion order (a fresh list)."""
        return list(self.pool)

    def with_profiles(self, profiles: Sequence[ModelProfile]) -> RouterState:
        """A new state with this pool (costs and the Ψ matrix restacked)."""
        k = self.cluster_map.n_clusters_ if self.cluster_map is not None else 0
        quality = np.stack([p.cluster_quality for p in profiles]) if profiles else np.zeros((0, k))
        costs = np.array([p.cost for p in profiles], dtype=float)
        return dataclasses.replace(
            self,
            profiles=tuple(profiles),
            costs=costs,
            quality=quality,
            pool=tuple(p.name for p in profiles),
            cost_order=np.argsort(costs, kind="stable"),
            calibrations={},
        )


class UniRouter:
    """Route prompts among a pool of LLMs by γ(x, h) = Φ(x)ᵀΨ(h) and the rule argmin (1 − q) + λ·c̃.

    Args:
        embedder: ``None`` for the packaged offline all-MiniLM-L6-v2; a sentence-transformers model name, path or
            instance; or any callable ``list[str] -> (n, d) array``.
        n_clusters: K for the cluster map (1 = ZeroRouter).
        seed: random seed for fitting the cluster map.
        shrinkage: α, pseudo-probes pulling each cluster's quality toward the model's overall mean (see
            :mod:`uniroute_core.profile`); 0 disables it.
        method: ``"kmeans"`` (unsupervised). Other registered cluster maps may be named here.
        cluster_map: a ready, unfitted :class:`ClusterMap` to use instead of building one from ``method``.
        show_progress: tqdm bars when embedding more than a few hundred prompts.
    """

    def __init__(
        self,
        embedder: Any = None,
        n_clusters: int = 20,
        seed: int = 0,
        shrinkage: float = 2.0,
        method: str = "kmeans",
        cluster_map: ClusterMap | None = None,
        show_progress: bool = True,
    ) -> None:
        if shrinkage < 0 or not np.isfinite(shrinkage):
            raise ValueError(f"shrinkage must be a finite number >= 0, got {shrinkage}")
        self._embedder_spec = embedder
        self._embedder: Embedder | None = None
        self.n_clusters = n_clusters
        self.seed = seed
        self.shrinkage = float(shrinkage)
        self.method = method
        self._cluster_map_template = cluster_map
        self.show_progress = show_progress
        self._state = RouterState()
        self._write_lock = threading.RLock()

    # ------------------------------------------------------------------ properties
    @property
    def embedder(self) -> Embedder:
        """The resolved embedder (loaded on first use)."""
        if self._embedder is None:
            with self._write_lock:
                if self._embedder is None:
                    self._embedder = resolve_embedder(self._embedder_spec)
        return self._embedder

    @property
    def state(self) -> RouterState:
        """The current immutable snapshot (read it once and use it, to see one consistent pool)."""
        return self._state

    @property
    def models(self) -> list[str]:
        """Pool member names, in insertion order."""
        return self._state.names

    @property
    def profiles(self) -> dict[str, ModelProfile]:
        """Pool members' profiles by name (insertion order)."""
        return {p.name: p for p in self._state.profiles}

    @property
    def costs(self) -> dict[str, float]:
        """Per-call cost of each member."""
        return {p.name: p.cost for p in self._state.profiles}

    @property
    def probes(self) -> ProbeSet | None:
        """The probe set (representative prompts), or ``None`` before :meth:`set_probes`."""
        return self._state.probes

    @property
    def cluster_map(self) -> ClusterMap | None:
        """The fitted Φ, or ``None`` before :meth:`fit`."""
        return self._state.cluster_map

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return self._state.cluster_map is not None

    def embed(self, prompts: Sequence[str]) -> np.ndarray:
        """Embed prompts with the router's embedder (unique texts once, batched, progress bar when long)."""
        return self.embedder.embed(validate_texts(prompts), show_progress=self.show_progress)

    # ------------------------------------------------------------------ learning
    def _new_cluster_map(self) -> ClusterMap:
        if self._cluster_map_template is not None:
            return self._cluster_map_template
        if self.method == "kmeans":
            return KMeansClusterMap(n_clusters=self.n_clusters, seed=self.seed)
        from .cluster_map import CLUSTER_MAPS

        if self.method in CLUSTER_MAPS:
            return CLUSTER_MAPS[self.method](n_clusters=self.n_clusters, seed=self.seed)  # type: ignore[call-arg]
        raise ValueError(f"unknown method {self.method!r}; known: {sorted(CLUSTER_MAPS)}")

    def fit(self, train_prompts: Sequence[str], **fit_params: Any) -> UniRouter:
        """Learn the cluster map Φ from training prompts (unlabelled for K-Means). Returns self.

        If probes and models are already set, their assignments and profiles are rebuilt for the new map from the
        kept probe scores, so no data is lost.
        """
        texts = validate_texts(train_prompts, "training prompt")
        if not texts:
            raise ValueError("fit needs at least one training prompt")
        emb = self.embed(texts)
        cmap = self._new_cluster_map().fit(emb, **fit_params)
        with self._write_lock:
            self._swap(cluster_map=cmap, probes=self._state.probes)
        return self

    def fit_embeddings(self, embeddings: np.ndarray, **fit_params: Any) -> UniRouter:
        """Like :meth:`fit` for prompts already embedded with this router's embedder."""
        cmap = self._new_cluster_map().fit(np.asarray(embeddings), **fit_params)
        with self._write_lock:
            self._swap(cluster_map=cmap, probes=self._state.probes)
        return self

    def set_probes(self, probes: Sequence[str] | ProbeSet, *, embeddings: np.ndarray | None = None) -> UniRouter:
        """Set the representative prompts that models are profiled on; they are embedded once and kept.

        Changing the probes invalidates every profile, so it is refused while the pool is not empty.
        ``embeddings`` may be given when the caller already embedded these prompts with this embedder.
        """
        self._require_fitted("set_probes")
        if isinstance(probes, ProbeSet):
            probe_set = probes
        else:
            probe_set = ProbeSet(prompts=tuple(validate_texts(probes, "probe prompt")))
        emb = self.embed(list(probe_set.prompts)) if embeddings is None else np.asarray(embeddings)
        if emb.shape[0] != len(probe_set):
            raise ValueError(f"embeddings has {emb.shape[0]} rows for {len(probe_set)} probe prompts")
        with self._write_lock:
            if self._state.profiles:
                raise ValueError(
                    f"cannot change the probe set while the pool has {len(self._state.profiles)} models "
                    f"({self.models}): their profiles were computed on the old probes; remove them first"
                )
            self._state = dataclasses.replace(
                self._state, probes=probe_set, calibrations={}, probe_assign=self._state.cluster_map.assign(emb)  # type: ignore[union-attr]
            )
        return self

    def _swap(self, *, cluster_map: ClusterMap, probes: ProbeSet | None) -> None:
        """Install a new cluster map, re-assigning probes and re-profiling the pool from the kept probe scores."""
        state = self._state
        assign = None
        if probes is not None:
            assign = cluster_map.assign(self.embed(list(probes.prompts)))
        profiles = [
            build_profile(p.name, p.cost, p.probe_scores, assign, self.shrinkage) for p in state.profiles
        ] if assign is not None else []
        self._state = RouterState(cluster_map=cluster_map, probes=probes, probe_assign=assign).with_profiles(profiles)

    # ------------------------------------------------------------------ the pool
    def add_model(
        self, name: str, cost: float, scores: Sequence[float] | np.ndarray, *, replace: bool = False
    ) -> ModelProfile:
        """Add a member profiled by its ``scores`` on the probe prompts (NaN = not answered). Returns its profile.

        This is the whole of "adding an LLM": Ψ is computed from the scores, nothing is retrained. A name already
        in the pool is an error unless ``replace=True`` (the member then keeps its position).
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"model name must be a non-empty string, got {name!r}")
        self._require_probes("add_model")
        cost = validate_cost(name, cost)
        with self._write_lock:
            state = self._state
            s = validate_scores(name, scores, len(state.probes))  # type: ignore[arg-type]
            profile = build_profile(name, cost, s, state.probe_assign, self.shrinkage)  # type: ignore[arg-type]
            pool = list(state.profiles)
            names = [p.name for p in pool]
            if name in names:
                if not replace:
                    raise ValueError(f"model {name!r} is already in the pool; pass replace=True to re-profile it")
                pool[names.index(name)] = profile
            else:
                pool.append(profile)
            self._state = state.with_profiles(pool)
        return profile

    def remove_model(self, name: str) -> ModelProfile:
        """Remove a member; returns its profile (so it can be added back)."""
        with self._write_lock:
            state = self._state
            names = state.names
            if name not in names:
                raise KeyError(f"model {name!r} is not in the pool; members: {names}")
            removed = state.profiles[names.index(name)]
            self._state = state.with_profiles([p for p in state.profiles if p.name != name])
        return removed

    # ------------------------------------------------------------------ routing
    def _require_fitted(self, action: str) -> None:
        if self._state.cluster_map is None:
            raise NotFittedError(f"{action}: the router is not fitted; call fit(train_prompts) first")

    def _require_probes(self, action: str) -> None:
        self._require_fitted(action)
        if self._state.probes is None:
            raise NotFittedError(f"{action}: no probe prompts; call set_probes(probe_prompts) first")

    def _require_pool(self, state: RouterState, action: str) -> None:
        if state.cluster_map is None:
            raise NotFittedError(f"{action}: the router is not fitted; call fit(train_prompts) first")
        if state.probes is None:
            raise NotFittedError(f"{action}: no probe prompts; call set_probes(probe_prompts) first")
        if not state.profiles:
            raise NotFittedError(f"{action}: the pool is empty; add models with add_model(name, cost, scores)")

    @staticmethod
    def _allowed_mask(state: RouterState, candidates: Sequence[str] | None) -> np.ndarray | None:
        if candidates is None:
            return None
        names = state.names
        unknown = [c for c in candidates if c not in names]
        if unknown:
            raise KeyError(f"candidates {unknown} are not in the pool; members: {names}")
        mask = np.array([n in set(candidates) for n in names])
        if not mask.any():
            raise ValueError("candidates is empty: at least one member must be allowed")
        return mask

    def expected_quality(self, prompts: Sequence[str], *, embeddings: np.ndarray | None = None) -> np.ndarray:
        """Predicted quality ``(n, M)`` of every member on every prompt: Φ(x)ᵀΨ(h) as 1 − expected loss."""
        state = self._state
        self._require_pool(state, "expected_quality")
        return self._quality(state, prompts, embeddings)

    def _quality(self, state: RouterState, prompts: Sequence[str] | None, embeddings: np.ndarray | None) -> np.ndarray:
        if embeddings is None:
            embeddings = self.embed(prompts)  # type: ignore[arg-type]
        return state.cluster_map.assign(embeddings) @ state.quality.T  # type: ignore[union-attr]

    def calibrate(
        self,
        budget: float,
        prompts: Sequence[str] | None = None,
        *,
        candidates: Sequence[str] | None = None,
        warn: bool = True,
    ) -> float:
        """The λ whose mean routed cost on ``prompts`` (default: the probe prompts) is as high as fits ``budget``.

        ``budget`` is a mean cost per call in the members' cost unit. A budget below the cheapest member's cost
        cannot be met: an :class:`UnreachableBudgetWarning` says so and the λ returned routes every call to the
        cheapest member.
        """
        return self.calibration(budget, prompts, candidates=candidates, warn=warn).lam

    def calibration(
        self,
        budget: float,
        prompts: Sequence[str] | None = None,
        *,
        candidates: Sequence[str] | None = None,
        warn: bool = True,
        state: RouterState | None = None,
    ) -> Calibration:
        """Like :meth:`calibrate`, returning the full :class:`~uniroute_core.rule.Calibration` (λ, expected cost)."""
        state = state or self._state
        self._require_pool(state, "calibrate")
        allowed = self._allowed_mask(state, candidates)
        key = (float(budget), None if candidates is None else tuple(sorted(candidates)))
        if prompts is None and key in state.calibrations:
            cal = state.calibrations[key]
        else:
            if prompts is None:
                q = state.probe_assign @ state.quality.T
            else:
                q = self._quality(state, prompts, None)
            cal = calibrate_lambda(q, state.costs, budget, allowed)
            if prompts is None:
                state.calibrations[key] = cal
        if not cal.reachable and warn:
            costs = state.costs if allowed is None else state.costs[allowed]
            cheapest = state.names[int(np.nonzero(state.costs == costs.min())[0][0])]
            warnings.warn(
                f"budget {budget} per call is below the cheapest member's cost ({cheapest!r}: {costs.min()}); "
                "routing every call to the cheapest member",
                UnreachableBudgetWarning,
                stacklevel=3,
            )
        return cal

    def route(
        self,
        prompts: Sequence[str],
        lam: float | None = None,
        *,
        budget: float | None = None,
        min_quality: float | None = None,
        candidates: Sequence[str] | None = None,
        embeddings: np.ndarray | None = None,
    ) -> list[RouteDecision]:
        """Choose a member for each prompt.

        Give at most one of:
            lam: the trade-off λ ≥ 0 of the rule argmin (1 − q) + λ·c̃ (costs normalised by the pool's maximum).
            budget: a mean cost per call; λ is calibrated on the probe prompts (see :meth:`calibrate`).
            min_quality: "cheapest adequate" — the cheapest member with expected quality ≥ this, else the best.
        None of them means λ = 0 (the most accurate predicted member).

        ``candidates`` restricts the choice to some members (e.g. those that support tool calling).
        """
        given = [n for n, v in (("lam", lam), ("budget", budget), ("min_quality", min_quality)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"give only one of lam, budget, min_quality; got {given}")
        texts = validate_texts(prompts)
        state = self._state  # one snapshot for the whole call
        self._require_pool(state, "route")
        allowed = self._allowed_mask(state, candidates)
        if embeddings is not None and len(embeddings) != len(texts):
            raise ValueError(f"embeddings has {len(embeddings)} rows for {len(texts)} prompts")
        if not texts:
            return []
        if embeddings is None:
            embeddings = self.embed(texts)
        rows, table = state.cluster_map.assign_compact(embeddings)  # type: ignore[union-attr]
        used, rows = np.unique(rows, return_inverse=True)
        q = table[used] @ state.quality.T  # predicted quality of each distinct assignment row in use
        mode = "lam"
        if min_quality is not None:
            keys = adequacy_keys(q, state.costs, float(min_quality), allowed)
            lam_used: float | None = None
            mode = "min_quality"
        else:
            if budget is not None:
                lam_used = self.calibration(float(budget), candidates=candidates, state=state).lam
                mode = "budget"
            else:
                lam_used = 0.0 if lam is None else float(lam)
            keys = lambda_keys(q, state.costs, lam_used, allowed)
        choice = pick(keys, state.costs, state.cost_order)
        names = state.pool
        return [
            RouteDecision(
                names[choice[r]], float(state.costs[choice[r]]), lam_used, mode, pool=names, quality_row=q[r],
                key_row=keys[r], costs=state.costs,
            )
            for r in rows
        ]

    def route_one(self, prompt: str, lam: float | None = None, **kwargs: Any) -> RouteDecision:
        """Route a single prompt (see :meth:`route`)."""
        return self.route([prompt], lam, **kwargs)[0]

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Save to ``directory`` as ``router.json`` + ``arrays.npz`` (format-versioned, no pickle)."""
        from .persistence import save_router

        return save_router(self, directory)

    @classmethod
    def load(
        cls, directory: str | Path, embedder: Any = None, *, grader: Any = None, show_progress: bool = True
    ) -> UniRouter:
        """Load a router saved by :meth:`save`; routing decisions are identical to the saved router's.

        ``embedder`` must be given when the router was saved with a custom callable; by default the embedder named
        in the file is used (the packaged default, or a sentence-transformers model from local files).
        ``grader`` re-attaches a custom probe grader (functions are never saved; built-in graders are by name).
        """
        from .persistence import load_router

        return load_router(cls, directory, embedder=embedder, grader=grader, show_progress=show_progress)

    def __repr__(self) -> str:
        state = self._state
        k = state.cluster_map.n_clusters_ if state.cluster_map is not None else None
        n_probes = len(state.probes) if state.probes is not None else 0
        return f"UniRouter(method={self.method!r}, n_clusters={k}, probes={n_probes}, models={state.names})"

