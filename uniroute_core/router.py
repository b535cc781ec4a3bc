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
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .autoselect import AUTO, SearchSpace, Selection, default_n_clusters, select_representation
from .cluster_map import CLUSTER_MAPS, ClusterMap, KMeansClusterMap
from .embedding import Embedder, resolve_embedder, validate_texts
from .feedback import (
    ChangeDetection,
    Exploration,
    Forgetting,
    apply_observations,
    reset_live,
    validate_feedback_score,
)
from .policy import RoutingPolicy
from .probes import ProbeSet
from .profile import (
    ChangeEvent,
    ModelProfile,
    build_profile,
    pool_cluster_offsets,
    pool_prior_strength,
    validate_cost,
    validate_prior,
    validate_scores,
)
from .profile_basis import ProfileBasis, basis_offsets
from .rule import Calibration
from .state import NotFittedError, RouteDecision, RouterState, UnreachableBudgetWarning

__all__ = [
    "UniRouter", "RouteDecision", "RouterState", "NotFittedError", "UnreachableBudgetWarning", "RoutingPolicy",
    "FeedbackWarning",
]


class FeedbackWarning(UserWarning):
    """Feedback was ignored (its member is no longer in the pool) or live evidence was dropped (a refit)."""


_UNSET: Any = object()


class UniRouter:
    """Route prompts among a pool of LLMs by γ(x, h) = Φ(x)ᵀΨ(h) and the rule argmin (1 − q) + λ·c̃.

    Args:
        embedder: ``None`` for the packaged offline all-MiniLM-L6-v2; a sentence-transformers model name, path or
            instance; or any callable ``list[str] -> (n, d) array``.
        n_clusters: K for a cluster map built from a kind name (1 = ZeroRouter), or ``"auto"`` (default): chosen
            by validation when ``fit`` gets a training matrix, else about one cluster per 50 probe prompts
            (:func:`~uniroute_core.autoselect.default_n_clusters`: 1 … 20), so a small probe set is not split into
            clusters too small to trust.
        seed: random seed for the cluster map and for the validation splits (same data + seed → same router).
        shrinkage: α, pseudo-probes pulling each cluster's quality toward the model's overall mean (see
            :mod:`uniroute_core.profile`); 0 disables it. When ``fit`` chooses the representation by validation it
            also chooses α (:attr:`shrinkage_`); this setting is then the fallback for later fits without scores.
        cluster_map: the cluster map Φ: ``"auto"`` (default) — with a training matrix, the representation (ZeroRouter,
            hard or soft K-Means, multi-resolution soft K-Means — the maps that route in O(K·d) per prompt; ``"kmeans"``
            restricts it to ZeroRouter and K-Means; ``search_space=`` widens or narrows it) and its
            hyper-parameters are chosen by validation
            Area on the training LLMs (:mod:`uniroute_core.autoselect`; the record is :attr:`selection_`); without
            one, K-Means with ``n_clusters``. Or a registered kind name (``"kmeans"``, ``"learned_map"``, …), built
            with ``n_clusters`` and ``seed``; or an unfitted :class:`ClusterMap` instance used as a template. The router
            fits a *clone* of an instance (:meth:`ClusterMap.clone`), never the object given, so a later ``fit``
            cannot change a snapshot routed on before — the scikit-learn rule that parameters are never mutated.
        method: deprecated alias of ``cluster_map`` for a kind name (warns; kept for one release).
        show_progress: tqdm bars when embedding more than a few hundred prompts.
        forgetting: exponential decay of feedback evidence (:class:`~uniroute_core.feedback.Forgetting`);
            ``None`` (default) keeps all of it — see :mod:`uniroute_core.feedback` for why.
        exploration: Thompson-sampling exploration on a share of calls
            (:class:`~uniroute_core.feedback.Exploration`); ``None`` (default) routes by the point estimates only.
        search_space: the candidates ``cluster_map="auto"`` chooses among
            (:class:`~uniroute_core.autoselect.SearchSpace`); ``None`` (default) = ZeroRouter, K-Means and
            multi-resolution K-Means over the automatic K grid. ``SearchSpace(families=FAMILIES_ALL)`` adds KNN over
            the probes and its blend with a K-Means map (routing cost O(P·d) per prompt instead of O(K·d)). Not
            saved with the router (it only steers a later ``fit``; what it chose is saved in :attr:`selection_`).
        change_detection: test feedback against what Ψ predicts and, when a member is detected to have got worse,
            let the recent feedback outweigh its stale evidence (:class:`~uniroute_core.feedback.ChangeDetection`);
            ``None`` (default) never discounts evidence on its own. Detected changes are in :attr:`change_events`.

    The fitted map is :attr:`cluster_map` (a property of the current state); the constructor's value is in
    :meth:`get_params`.
    """

    def __init__(
        self,
        embedder: Any = None,
        n_clusters: int | str = AUTO,
        seed: int = 0,
        shrinkage: float = 2.0,
        cluster_map: str | ClusterMap = AUTO,
        show_progress: bool = True,
        *,
        method: str | None = None,
        forgetting: Forgetting | None = None,
        exploration: Exploration | None = None,
        change_detection: ChangeDetection | None = None,
        search_space: SearchSpace | None = None,
    ) -> None:
        if shrinkage < 0 or not np.isfinite(shrinkage):
            raise ValueError(f"shrinkage must be a finite number >= 0, got {shrinkage}")
        if method is not None:
            warnings.warn(
                "UniRouter(method=...) is deprecated; pass the kind name as cluster_map=... instead",
                DeprecationWarning,
                stacklevel=2,
            )
            if cluster_map != AUTO and cluster_map != method:
                raise ValueError(
                    f"method={method!r} and cluster_map={cluster_map!r} disagree; give only cluster_map= "
                    "(method= is a deprecated alias of it)"
                )
            cluster_map = method
        if n_clusters != AUTO and (
            not isinstance(n_clusters, (int, np.integer)) or isinstance(n_clusters, bool) or n_clusters < 1
        ):
            raise ValueError(f"n_clusters must be 'auto' or a positive integer, got {n_clusters!r}")
        if isinstance(cluster_map, str):
            if cluster_map != AUTO and cluster_map not in CLUSTER_MAPS:
                raise ValueError(
                    f"unknown cluster map kind {cluster_map!r}; known: {[AUTO, *sorted(CLUSTER_MAPS)]}"
                )
        elif not isinstance(cluster_map, ClusterMap):
            raise TypeError(
                f"cluster_map must be a kind name ({sorted(CLUSTER_MAPS)}) or a ClusterMap instance, "
                f"got {type(cluster_map).__name__}"
            )
        self._embedder_spec = embedder
        self._embedder: Embedder | None = None
        self.n_clusters = n_clusters
        self.seed = seed
        self.shrinkage = float(shrinkage)
        self._cluster_map_param: str | ClusterMap = cluster_map
        if search_space is not None and not isinstance(search_space, SearchSpace):
            raise TypeError(f"search_space must be a SearchSpace or None, got {type(search_space).__name__}")
        self.search_space = search_space
        self.show_progress = show_progress
        if forgetting is not None and not isinstance(forgetting, Forgetting):
            raise TypeError(f"forgetting must be a Forgetting or None, got {type(forgetting).__name__}")
        if exploration is not None and not isinstance(exploration, Exploration):
            raise TypeError(f"exploration must be an Exploration or None, got {type(exploration).__name__}")
        if change_detection is not None and not isinstance(change_detection, ChangeDetection):
            raise TypeError(
                f"change_detection must be a ChangeDetection or None, got {type(change_detection).__name__}"
            )
        self.forgetting = forgetting
        self.exploration = exploration
        self.change_detection = change_detection
        self._state = RouterState(exploration=exploration)
        self._write_lock = threading.RLock()
        self._refit_at_probes: np.ndarray | None = None
        """Training embeddings kept after an ``n_clusters="auto"`` K-Means fit whose probe count was unknown, so
        that :meth:`set_probes` can refit with K for the real probe count (then dropped; never saved)."""

    @classmethod
    def from_state(cls, state: RouterState, *, embedder: Any = None, **params: Any) -> UniRouter:
        """A router serving ``state`` as it is: the one way to build a router around an existing snapshot.

        ``embedder`` must be the embedder the state's cluster map was fitted with (an :class:`Embedder`, or
        anything ``embedder=`` accepts). ``params`` are the other constructor settings (``n_clusters``, ``seed``,
        ``shrinkage``, ``cluster_map``, ``show_progress``); they matter for later ``fit`` / ``add_model`` calls,
        not for routing on ``state``. Used by loading (:meth:`load`) and by anything that builds states itself.
        """
        if not isinstance(state, RouterState):
            raise TypeError(f"state must be a RouterState, got {type(state).__name__}")
        params.setdefault("exploration", state.exploration)
        router = cls(embedder=embedder, **params)
        if isinstance(embedder, Embedder):
            router._embedder = embedder
        router._state = state if state.exploration is router.exploration else dataclasses.replace(
            state, exploration=router.exploration
        )
        return router

    def update_state(self, update: Callable[[RouterState], RouterState]) -> RouterState:
        """Replace the state with ``update(current_state)``, atomically; returns the new state.

        ``update`` runs under the router's write lock, so it sees the latest state and no ``fit`` / ``add_model`` /
        ``remove_model`` can slip in between its read and the swap (no lost update). It must return a new
        :class:`RouterState` (build it with ``dataclasses.replace`` or :meth:`RouterState.with_profiles`), never
        mutate the one it gets: routing calls may be reading that one. This is the extension point for code that
        derives states outside the router (e.g. online updates of Ψ from feedback).
        """
        with self._write_lock:
            new = update(self._state)
            if not isinstance(new, RouterState):
                raise TypeError(f"update must return a RouterState, got {type(new).__name__}")
            self._state = new
        return new

    def get_params(self) -> dict[str, Any]:
        """The constructor settings (scikit-learn style); ``cluster_map`` is the kind name or template given."""
        return {
            "embedder": self._embedder_spec,
            "n_clusters": self.n_clusters,
            "seed": self.seed,
            "shrinkage": self.shrinkage,
            "cluster_map": self._cluster_map_param,
            "show_progress": self.show_progress,
            "forgetting": self.forgetting,
            "exploration": self.exploration,
            "change_detection": self.change_detection,
            "search_space": self.search_space,
        }

    @property
    def cluster_map_kind(self) -> str:
        """The registered kind of the cluster map this router fits (``"kmeans"``, ``"learned_map"``, …)."""
        p = self._cluster_map_param
        return p if isinstance(p, str) else p.kind

    @property
    def method(self) -> str:
        """Deprecated: the cluster map's kind name; use :attr:`cluster_map_kind`."""
        warnings.warn("UniRouter.method is deprecated; use cluster_map_kind", DeprecationWarning, stacklevel=2)
        return self.cluster_map_kind

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
        return self._state.cost_by_name

    @property
    def probes(self) -> ProbeSet | None:
        """The probe set (representative prompts), or ``None`` before :meth:`set_probes`."""
        return self._state.probes

    @property
    def cluster_map(self) -> ClusterMap | None:
        """The fitted Φ of the current state, or ``None`` before :meth:`fit`."""
        return self._state.cluster_map

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return self._state.cluster_map is not None

    def embed(self, prompts: Sequence[str]) -> np.ndarray:
        """Embed prompts with the router's embedder (unique texts once, batched, progress bar when long)."""
        return self.embedder.embed(validate_texts(prompts), show_progress=self.show_progress)

    # ------------------------------------------------------------------ learning
    @property
    def selection_(self) -> Selection | None:
        """How the current map was chosen by validation (candidates and their validation Areas), or ``None`` when
        it was not (fitted without a training matrix, or a fixed representation). Saved with the router."""
        return self._state.selection

    @property
    def profile_basis_(self) -> ProfileBasis | None:
        """The low-rank shrinkage target chosen by validation with the map (:mod:`uniroute_core.profile_basis`), or
        ``None`` (each member's Ψ shrinks towards its own mean, the paper's target). Saved with the router."""
        return self._state.profile_basis

    @property
    def shrinkage_(self) -> float:
        """The α the current profiles use: the one chosen by validation, else the ``shrinkage`` setting."""
        return self._alpha(self._state)

    def _alpha(self, state: RouterState) -> float:
        return state.shrinkage if state.shrinkage is not None else self.shrinkage

    def _selects(self, train_scores: Any) -> bool:
        """Whether ``fit`` chooses by validation: a training matrix and a K-Means-based map (``"auto"`` or
        ``"kmeans"``; a fixed ``n_clusters`` keeps K and chooses the soft temperature and α only)."""
        return train_scores is not None and self._cluster_map_param in (AUTO, "kmeans")

    def _search_space(self) -> SearchSpace:
        if self.n_clusters != AUTO:
            k = int(self.n_clusters)
            return SearchSpace(families=("zero",)) if k == 1 else SearchSpace(families=("kmeans",), n_clusters=(k,))
        if self._cluster_map_param == AUTO:
            return self.search_space or SearchSpace()  # default: ZeroRouter, K-Means, multi-resolution K-Means
        return SearchSpace(families=("zero", "kmeans"))

    def _resolved_k(self, n_probes: int | None, n_train: int) -> int:
        """K for a fit without validation: the setting, or ``"auto"`` → one per 50 probes (20 while unknown)."""
        if self.n_clusters != AUTO:
            return int(self.n_clusters)
        k = default_n_clusters(n_probes) if n_probes is not None else 20
        return max(1, min(k, n_train))

    def _new_cluster_map(self, n_clusters: int | None = None) -> ClusterMap:
        """A fresh, unfitted map for one ``fit``: built from the kind name, or a clone of the user's template."""
        p = self._cluster_map_param
        if isinstance(p, ClusterMap):
            return p.clone()
        k = n_clusters if n_clusters is not None else self._resolved_k(None, 10**9)
        if p in (AUTO, "kmeans"):
            return KMeansClusterMap(n_clusters=k, seed=self.seed)
        return CLUSTER_MAPS[p](n_clusters=k, seed=self.seed)  # type: ignore[call-arg]

    def fit(
        self,
        train_prompts: Sequence[str],
        train_scores: Any = None,
        *,
        train_costs: Any = None,
        train_models: Sequence[str] | None = None,
        n_probes: int | None = None,
        **fit_params: Any,
    ) -> UniRouter:
        """Learn the cluster map Φ from training prompts. Returns self.

        Args:
            train_prompts: prompts like your traffic (unlabelled is enough for K-Means).
            train_scores: optional training matrix ``(len(train_prompts), m)``: the scores in [0, 1] of m
                *training* LLMs on those prompts (NaN = unknown). With ``cluster_map="auto"`` the representation and
                its hyper-parameters are then chosen by validation Area on these LLMs only — the members you route
                later are never looked at — and the record is :attr:`selection_` (``"kmeans"``: K-Means and
                ZeroRouter only; a fixed ``n_clusters`` keeps that K and chooses the soft temperature and α). A
                supervised map (``"learned_map"``) trains on it.
            train_costs: the m training LLMs' per-call costs (needed with ``train_scores`` for the validation Area).
            train_models: their names (error messages and the record).
            n_probes: how many probe prompts members will be profiled on, when :meth:`set_probes` has not run yet
                (K is chosen for that probe count). Default: the current probe set's size, else a guess
                (a seventh of the training prompts for the validation; K is adjusted at ``set_probes``).
            fit_params: passed to the cluster map's ``fit`` (e.g. ``probe_embeddings``/``probe_scores`` for the
                learned map).

        If probes and models are already set, their assignments and profiles are rebuilt for the new map from the
        kept probe scores, so no data is lost. The previous state (and its map) is left untouched.
        """
        texts = validate_texts(train_prompts, "training prompt")
        if not texts:
            raise ValueError("fit needs at least one training prompt")
        return self.fit_embeddings(
            self.embed(texts), train_scores, train_costs=train_costs, train_models=train_models, n_probes=n_probes,
            **fit_params,
        )

    def fit_embeddings(
        self,
        embeddings: np.ndarray,
        train_scores: Any = None,
        *,
        train_costs: Any = None,
        train_models: Sequence[str] | None = None,
        n_probes: int | None = None,
        **fit_params: Any,
    ) -> UniRouter:
        """Like :meth:`fit` for prompts already embedded with this router's embedder."""
        x = np.asarray(embeddings)
        # a streaming map (e.g. MiniBatchKMeansClusterMap) may take everything from ``batches=`` and an empty array
        streamed = fit_params.get("batches") is not None
        if not streamed and (x.ndim != 2 or len(x) == 0):
            raise ValueError(f"embeddings must be a non-empty 2-D array (n, d), got shape {x.shape}")
        probes = self._state.probes
        known_p = n_probes if n_probes is not None else (len(probes) if probes is not None else None)
        selection: Selection | None = None
        alpha: float | None = None
        basis: ProfileBasis | None = None
        refit: np.ndarray | None = None
        if self._selects(train_scores):
            if fit_params:
                raise TypeError(f"fit got parameters {sorted(fit_params)} that the automatic selection does not take")
            res = select_representation(
                x, train_scores, train_costs, n_probes=known_p, seed=self.seed, space=self._search_space(),
                train_models=train_models,
            )
            cmap, alpha, selection, basis = res.cluster_map, res.shrinkage, res.selection, res.profile_basis
        else:
            if train_scores is not None:
                fit_params = {"train_scores": train_scores, **fit_params}
                if train_models is not None:
                    fit_params["train_models"] = train_models
            cmap = self._new_cluster_map(self._resolved_k(known_p, 10**9 if streamed else len(x))).fit(x, **fit_params)
            auto_kmeans = self.n_clusters == AUTO and self._cluster_map_param in (AUTO, "kmeans")
            if not streamed and known_p is None and auto_kmeans:
                refit = x
        with self._write_lock:
            self._refit_at_probes = refit
            self._swap(
                cluster_map=cmap, probes=self._state.probes, shrinkage=alpha, selection=selection, profile_basis=basis
            )
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
        refit_map = None
        pending = self._refit_at_probes
        if pending is not None and not self._state.profiles:
            # n_clusters="auto" was fitted before the probe count was known: K for this probe set now
            k = self._resolved_k(len(probe_set), len(pending))
            current = self._state.cluster_map
            if current is None or current.n_clusters_ != k:
                refit_map = self._new_cluster_map(k).fit(pending)
        with self._write_lock:
            if refit_map is not None and self._refit_at_probes is pending:
                self._state = dataclasses.replace(self._state, cluster_map=refit_map)
                self._refit_at_probes = None
            state = self._state
            if state.profiles:
                raise ValueError(
                    f"cannot change the probe set while the pool has {len(state.profiles)} models "
                    f"({state.names}): their profiles were computed on the old probes; remove them first"
                )
            assert state.cluster_map is not None  # checked by _require_fitted; fit never unsets it
            bound = state.cluster_map.bind_probes(emb)  # a map whose cells are the probes is anchored on them
            self._state = dataclasses.replace(
                state, cluster_map=bound, probes=probe_set, calibrations={}, probe_assign=bound.assign_probes(emb)
            )
        return self

    def _swap(
        self,
        *,
        cluster_map: ClusterMap,
        probes: ProbeSet | None,
        shrinkage: float | None = None,
        selection: Selection | None = None,
        profile_basis: ProfileBasis | None = None,
    ) -> None:
        """Install a new cluster map (with the α, selection record and profile basis it was chosen with),
        re-assigning probes and re-profiling the pool from the kept probe scores."""
        state = self._state
        assign = None
        if probes is not None:
            emb = self.embed(list(probes.prompts))
            cluster_map = cluster_map.bind_probes(emb)
            assign = cluster_map.assign_probes(emb)
        if profile_basis is not None and profile_basis.n_clusters != cluster_map.n_clusters_:
            raise ValueError(
                f"the profile basis has {profile_basis.n_clusters} clusters but the map has {cluster_map.n_clusters_}"
            )
        alpha = shrinkage if shrinkage is not None else self.shrinkage
        profiles = [
            build_profile(p.name, p.cost, p.probe_scores, assign, alpha, prior=_prior_of(p),
                          prior_offsets=basis_offsets(profile_basis, p.probe_scores, assign))
            for p in state.profiles
        ] if assign is not None else []
        if assign is not None and any(_is_cold(p) for p in state.profiles):
            # the cold members' offsets and prior strength, from the pool on the new map
            offsets, strength = pool_cluster_offsets(profiles), pool_prior_strength(profiles)
            profiles = [
                build_profile(p.name, p.cost, p.probe_scores, assign, _cold_alpha(alpha, strength, offsets),
                              prior=_prior_of(p), prior_offsets=offsets) if _is_cold(old) else p
                for p, old in zip(profiles, state.profiles)
            ]
        fed = [p.name for p in state.profiles if p.n_observations]
        if fed and assign is not None:
            warnings.warn(
                f"the new cluster map drops the feedback evidence of {fed}: live sums are per cluster of the old "
                "map (re-apply your logs with update_from_logs to keep them)",
                FeedbackWarning,
                stacklevel=3,
            )
        self._state = RouterState(
            cluster_map=cluster_map, probes=probes, probe_assign=assign, exploration=self.exploration,
            shrinkage=shrinkage, selection=selection, profile_basis=profile_basis,
        ).with_profiles(profiles)

    # ------------------------------------------------------------------ the pool
    def add_model(
        self,
        name: str,
        cost: float,
        scores: Sequence[float] | np.ndarray | None = None,
        *,
        prior: tuple[float, float] | None = None,
        replace: bool = False,
        pool_offsets: bool = True,
    ) -> ModelProfile:
        """Add a member profiled by its ``scores`` on the probe prompts (NaN = not answered). Returns its profile.

        This is the whole of "adding an LLM": Ψ is computed from the scores, nothing is retrained. A name already
        in the pool is an error unless ``replace=True`` (the member then keeps its position; its feedback evidence
        is dropped, as it describes the member being replaced).

        Cold start: ``prior=(quality, weight)`` is an overall prior quality in [0, 1] counted as ``weight``
        pseudo-observations in the member's overall mean. With a prior, ``scores`` may be omitted (or all NaN): Ψ is
        then the prior quality until feedback (:meth:`observe`) arrives, shifted per cluster by how much easier or
        harder the pool finds that cluster than its own mean (``pool_offsets=True``, the default, when the pool has
        a member profiled on probes: :func:`~uniroute_core.profile.pool_cluster_offsets`; ``False``: the same value
        in every cluster). As feedback arrives each cluster shrinks towards the member's learnt mean (net of the
        offsets) plus that offset, with the strength the pool's own spread around such predictions supports
        (:func:`~uniroute_core.profile.pool_prior_strength`, at least the router's α), so a cluster it rarely
        serves is predicted from how the pool does there and a few lucky or unlucky answers do not decide it. An
        :class:`~uniroute_core.feedback.Exploration` gives such a member traffic to learn from.
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"model name must be a non-empty string, got {name!r}")
        self._require_probes("add_model")
        cost = validate_cost(name, cost)
        with self._write_lock:
            state = self._state
            assert state.probes is not None and state.probe_assign is not None  # checked by _require_probes
            p0 = None if prior is None else validate_prior(name, prior)
            if scores is None:
                if p0 is None:
                    raise ValueError(f"model {name!r}: give its probe scores, or prior=(quality, weight) to cold-start")
                s = np.full(len(state.probes), np.nan)
            else:
                s = validate_scores(name, scores, len(state.probes), allow_all_nan=p0 is not None)
            if not isinstance(pool_offsets, bool):
                raise TypeError(f"model {name!r}: pool_offsets must be True or False, got {pool_offsets!r}")
            offsets, alpha = basis_offsets(state.profile_basis, s, state.probe_assign), self._alpha(state)
            if p0 is not None and np.isnan(s).all() and pool_offsets:
                rest = [p for p in state.profiles if p.name != name]
                offsets = pool_cluster_offsets(rest)
                alpha = _cold_alpha(alpha, pool_prior_strength(rest), offsets)
            profile = build_profile(name, cost, s, state.probe_assign, alpha, prior=p0, prior_offsets=offsets)
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

    # ------------------------------------------------------------------ feedback
    def set_exploration(self, exploration: Exploration | None) -> UniRouter:
        """Turn Thompson-sampling exploration on (an :class:`Exploration`) or off (``None``). Returns self."""
        if exploration is not None and not isinstance(exploration, Exploration):
            raise TypeError(f"exploration must be an Exploration or None, got {type(exploration).__name__}")
        with self._write_lock:
            self.exploration = exploration
            self._state = dataclasses.replace(self._state, exploration=exploration)
        return self

    def _observation_inputs(
        self, items: Sequence[str] | np.ndarray, n: int
    ) -> tuple[np.ndarray | None, Sequence[str] | None]:
        if isinstance(items, np.ndarray) and items.dtype.kind == "f":
            x = items.reshape(1, -1) if items.ndim == 1 else items
            if x.ndim != 2 or len(x) != n:
                raise ValueError(f"embeddings have shape {items.shape}; expected ({n}, dim)")
            return x, None
        texts = validate_texts(list(items), "feedback prompt")
        if len(texts) != n:
            raise ValueError(f"{len(texts)} prompts for {n} feedback scores")
        return None, texts

    def observe(
        self,
        prompt_or_embedding: str | np.ndarray,
        model: str,
        score: float,
        *,
        weight: float = 1.0,
        time: float | None = None,
    ) -> ModelProfile | None:
        """Feedback on one served call: ``model`` answered this prompt and the answer scored ``score`` in [0, 1].

        The member's live sums gain Φ(x)·weight·score and Φ(x)·weight, and its Ψ is recomputed with the profile's
        shrinkage estimator (see :mod:`uniroute_core.feedback`); a new state is swapped in like :meth:`add_model`,
        routing takes no lock. ``prompt_or_embedding`` is the routing text or its embedding (1-D). ``time``
        (seconds, any epoch) is needed for forgetting in seconds (default: now). Returns the member's new profile,
        or ``None`` when the member is no longer in the pool (the feedback is ignored with a
        :class:`FeedbackWarning`). A score outside [0, 1] is a ``ValueError``.
        """
        items: Any = prompt_or_embedding if isinstance(prompt_or_embedding, np.ndarray) else [prompt_or_embedding]
        done = self.observe_many(
            items, [model], [score], weights=[weight], times=None if time is None else [time]
        )
        return done.get(model)

    def observe_many(
        self,
        prompts_or_embeddings: Sequence[str] | np.ndarray,
        models: Sequence[str],
        scores: Sequence[float] | np.ndarray,
        *,
        weights: Sequence[float] | np.ndarray | None = None,
        times: Sequence[float] | np.ndarray | None = None,
    ) -> dict[str, ModelProfile]:
        """A batch of feedback observations (see :meth:`observe`), applied in order in one state swap.

        ``prompts_or_embeddings`` is a list of routing texts or an ``(n, dim)`` array of their embeddings.
        Observations of members no longer in the pool are ignored with one :class:`FeedbackWarning` naming them.
        Every score is checked before anything is applied. Returns the updated members' new profiles.
        """
        models = [str(m) for m in models]
        n = len(models)
        score_list = list(scores)
        if len(score_list) != n:
            raise ValueError(f"{len(score_list)} scores for {n} members")
        vals = np.array([validate_feedback_score(m, v) for m, v in zip(models, score_list)], dtype=float)
        w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
        if w.shape != (n,) or not np.all(np.isfinite(w)) or (w < 0).any():
            raise ValueError(f"weights must be {n} finite numbers >= 0, got {weights!r}")
        t = None if times is None else np.asarray(times, dtype=float)
        if t is not None and (t.shape != (n,) or not np.all(np.isfinite(t))):
            raise ValueError(f"times must be {n} finite numbers (seconds), got {times!r}")
        if t is None and self.forgetting is not None and self.forgetting.unit == "seconds":
            import time as _time

            t = np.full(n, _time.time())
        x, texts = self._observation_inputs(prompts_or_embeddings, n)
        self._require_probes("observe")
        if n == 0:
            return {}
        if x is None:
            assert texts is not None
            x = self.embed(texts)
        with self._write_lock:
            state = self._state
            state.require_pool("observe")
            assert state.cluster_map is not None and state.probe_assign is not None
            phi = state.cluster_map.assign(x)
            names = state.names
            gone = sorted({m for m in models if m not in names})
            if gone:
                warnings.warn(
                    f"feedback for {gone} ignored: not in the pool (removed since the call?); members: {names}",
                    FeedbackWarning,
                    stacklevel=3,
                )
            pool = list(state.profiles)
            updated: dict[str, ModelProfile] = {}
            idx = np.array(models, dtype=object)
            for j, name in enumerate(names):
                rows = np.nonzero(idx == name)[0]
                if not len(rows):
                    continue
                pool[j] = apply_observations(
                    pool[j], phi[rows], vals[rows], w[rows], state.probe_assign,
                    forgetting=self.forgetting, times=None if t is None else t[rows],
                    detection=self.change_detection,
                )
                updated[name] = pool[j]
            if updated:
                self._state = state.with_profiles(pool)
        return updated

    def update_from_logs(
        self, logs: str | Path | Iterable[tuple[str, str, float]], *, embeddings: np.ndarray | None = None
    ) -> dict[str, ModelProfile]:
        """Apply logged feedback: a sparse routing-data folder, or an iterable of ``(prompt, member, score)``.

        In a folder, every known score of a pool member is one observation of that member on that prompt
        (missing rows and empty scores are "not observed" and skipped); members not in the pool are ignored with a
        :class:`FeedbackWarning`. ``embeddings`` may give the folder's prompts' embeddings (rows in
        :func:`~uniroute_core.data.load_routing_data` order) to skip embedding. Returns the updated profiles.
        """
        if isinstance(logs, (str, Path)):
            from .data import load_routing_data

            data = load_routing_data(logs)
            if embeddings is not None and len(embeddings) != data.n_prompts:
                raise ValueError(f"embeddings has {len(embeddings)} rows for {data.n_prompts} prompts in {logs}")
            ii, jj = np.nonzero(~np.isnan(data.scores))
            models = [data.models[j] for j in jj]
            scores = data.scores[ii, jj]
            if embeddings is not None:
                return self.observe_many(np.asarray(embeddings, dtype=float)[ii], models, scores)
            return self.observe_many([data.prompts[i] for i in ii], models, scores)
        rows = list(logs)
        for r, row in enumerate(rows):
            if not isinstance(row, (tuple, list)) or len(row) != 3:
                raise ValueError(f"log row {r} must be (prompt, member, score), got {row!r}")
        if embeddings is not None:
            if len(embeddings) != len(rows):
                raise ValueError(f"embeddings has {len(embeddings)} rows for {len(rows)} log rows")
            return self.observe_many(
                np.asarray(embeddings, dtype=float), [r[1] for r in rows], [r[2] for r in rows]
            )
        return self.observe_many([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])

    @property
    def change_events(self) -> list[ChangeEvent]:
        """Changes detected by :class:`~uniroute_core.feedback.ChangeDetection` in the current pool's members
        (each member's most recent 20), oldest first by member observation count; counts per member are
        ``profiles[name].n_changes``."""
        events = [e for p in self._state.profiles if p.detector is not None for e in p.detector.events]
        return sorted(events, key=lambda e: (e.time if e.time is not None else 0.0, e.member, e.at_observation))

    def reset_feedback(self, model: str | None = None) -> None:
        """Drop the live (feedback) evidence of one member, or of every member: Ψ returns to the probe estimate
        (probe evidence discounted by a detected change counts whole again)."""
        with self._write_lock:
            state = self._state
            if state.probe_assign is None:
                return
            if model is not None and model not in state.names:
                raise KeyError(f"model {model!r} is not in the pool; members: {state.names}")
            pool = [
                reset_live(p, state.probe_assign) if model is None or p.name == model else p for p in state.profiles
            ]
            self._state = state.with_profiles(pool)

    # ------------------------------------------------------------------ routing
    def _require_fitted(self, action: str) -> None:
        if self._state.cluster_map is None:
            raise NotFittedError(f"{action}: the router is not fitted; call fit(train_prompts) first")

    def _require_probes(self, action: str) -> None:
        self._require_fitted(action)
        if self._state.probes is None:
            raise NotFittedError(f"{action}: no probe prompts; call set_probes(probe_prompts) first")

    def expected_quality(self, prompts: Sequence[str], *, embeddings: np.ndarray | None = None) -> np.ndarray:
        """Predicted quality ``(n, M)`` of every member on every prompt: Φ(x)ᵀΨ(h) as 1 − expected loss."""
        state = self._state
        state.require_pool("expected_quality")
        return state.expected_quality(self.embed(prompts) if embeddings is None else embeddings)

    def calibrate(
        self,
        budget: float,
        prompts: Sequence[str] | None = None,
        *,
        candidates: Sequence[str] | None = None,
        warn: bool = True,
    ) -> float:
        """The λ whose mean routed cost on ``prompts`` (default: the probe prompts) is as high as fits ``budget``.

        ``budget`` is a mean cost per call (> 0) in the members' cost unit. A budget below the cheapest member's cost
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
    ) -> Calibration:
        """Like :meth:`calibrate`, returning the full :class:`~uniroute_core.rule.Calibration` (λ, expected cost).

        Works on one snapshot of the router (:meth:`RouterState.calibration`).
        """
        state = self._state
        state.require_pool("calibrate")
        emb = None if prompts is None else self.embed(prompts)
        return state.calibration(budget, candidates=candidates, embeddings=emb, warn=warn)

    def route(
        self,
        prompts: Sequence[str],
        lam: float | None = None,
        *,
        budget: float | None = None,
        min_quality: float | None = None,
        policy: RoutingPolicy | None = None,
        candidates: Sequence[str] | None = None,
        embeddings: np.ndarray | None = None,
    ) -> list[RouteDecision]:
        """Choose a member for each prompt.

        How to trade quality for cost: a ready :class:`~uniroute_core.policy.RoutingPolicy` as ``policy``, or, for
        convenience, at most one of these (they build the policy):
            lam: the trade-off λ ≥ 0 of the rule argmin (1 − q) + λ·c̃ (costs normalised by the pool's maximum).
            budget: a mean cost per call > 0; λ is calibrated on the probe prompts (see :meth:`calibrate`).
            min_quality: "cheapest adequate" — the cheapest member with expected quality ≥ this, else the best.
        None of them means λ = 0 (the most accurate predicted member).

        ``candidates`` restricts the choice to some members (e.g. those that support tool calling). The whole call
        reads one snapshot (:meth:`RouterState.route`).
        """
        policy = RoutingPolicy.coerce(policy, lam=lam, budget=budget, min_quality=min_quality)
        texts = validate_texts(prompts)
        state = self._state  # one snapshot for the whole call
        state.require_pool("route")
        state.candidate_mask(candidates)  # report bad candidates before embedding
        if embeddings is not None and len(embeddings) != len(texts):
            raise ValueError(f"embeddings has {len(embeddings)} rows for {len(texts)} prompts")
        if not texts:
            return []
        if embeddings is None:
            embeddings = self.embed(texts)
        return state.route(embeddings, policy, candidates=candidates)

    def route_one(self, prompt: str, lam: float | None = None, **kwargs: Any) -> RouteDecision:
        """Route a single prompt (see :meth:`route`)."""
        return self.route([prompt], lam, **kwargs)[0]

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Save to ``directory`` as ``router.json`` + ``arrays-<hash>.npz`` (format-versioned, no pickle).

        Crash-safe and safe with concurrent savers: a save killed at any moment leaves the previous router or this
        one, whole; two saves at once leave one of them, whole (see :mod:`uniroute_core.persistence`).

        What is written is this router's settings (:meth:`get_params` without the embedder object) and its
        current state; see :mod:`uniroute_core.persistence`.
        """
        from .persistence import save_state

        params = self.get_params()
        params.pop("embedder")
        params.pop("show_progress")
        params.pop("exploration")  # saved with the state
        return save_state(directory, self._state, settings=params, embedder=self.embedder)

    @classmethod
    def load(
        cls, directory: str | Path, embedder: Any = None, *, grader: Any = None, show_progress: bool = True
    ) -> UniRouter:
        """Load a router saved by :meth:`save`; routing decisions are identical to the saved router's.

        ``embedder`` must be given when the router was saved with a custom callable; by default the embedder named
        in the file is used (the packaged default, or a sentence-transformers model from local files).
        ``grader`` re-attaches a custom probe grader (functions are never saved; built-in graders are by name).
        """
        from .persistence import load_state

        saved = load_state(directory, embedder=embedder, grader=grader, show_progress=show_progress)
        return cls.from_state(saved.state, embedder=saved.embedder, show_progress=show_progress, **saved.settings)

    @classmethod
    def pretrained(
        cls, name: str = "mmlu_pro-minilm", *, embedder: Any = None, show_progress: bool = True
    ) -> UniRouter:
        """A ready router shipped with the package: a fitted cluster map and a graded probe set, no members yet.

        The default (``"mmlu_pro-minilm"``) is K-Means on the bundled MMLU-Pro questions with 300 multiple-choice
        probes over 14 subjects; add members with :meth:`add_model` or profile them with an adapter's
        ``from_models``. See :mod:`uniroute_core.pretrained` and the README for what traffic it suits.
        ``embedder`` is normally left ``None`` (the packaged embedder the router was fitted with); another one is
        refused by the load checks unless it gives vectors of the same width, and would route badly even then.
        """
        from .pretrained import pretrained_path

        return cls.load(pretrained_path(name), embedder=embedder, show_progress=show_progress)

    def __repr__(self) -> str:
        state = self._state
        k = state.cluster_map.n_clusters_ if state.cluster_map is not None else None
        n_probes = len(state.probes) if state.probes is not None else 0
        return (
            f"UniRouter(cluster_map={self.cluster_map_kind!r}, n_clusters={k}, probes={n_probes}, "
            f"models={state.names})"
        )


def _cold_alpha(alpha: float, strength: float | None, offsets: np.ndarray | None) -> float:
    """A cold member's shrinkage: the pool's prior strength when its offsets are used (never below the router's α,
    which remains the floor the probe estimates were validated with)."""
    if offsets is None or strength is None:
        return alpha
    return max(float(alpha), float(strength))


def _is_cold(profile: ModelProfile) -> bool:
    """A member that joined with ``prior=`` only and follows the pool's cluster offsets (recomputed on a new map)."""
    return profile.n_probes == 0 and profile.prior_offsets is not None


def _prior_of(profile: ModelProfile) -> tuple[float, float] | None:
    return None if profile.prior_quality is None else (profile.prior_quality, profile.prior_weight)
