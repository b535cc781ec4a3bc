"""The prompt → cluster map Φ: embeddings → assignment weights over K clusters (rows sum to 1).

:class:`KMeansClusterMap` is the unsupervised variant of the method note (scikit-learn K-Means on unlabelled training
prompts, Φ(x) = one-hot of the nearest centroid, or optionally a soft assignment over the centroids, which the
method note also allows: Φ(x) ∈ Δ_K). Other maps (e.g. the LearnedMap) follow the same small interface
and register themselves in the :data:`CLUSTER_MAPS` registry (:mod:`uniroute_core.registry`) under their ``kind``:
a registered kind can be named by ``UniRouter(cluster_map="kind")``, is found again when a saved router is loaded,
and is evaluated by ``uniroute eval`` / :func:`uniroute_core.evaluation.evaluate` (``methods=("kind", ...)``) with
no change to the harness — see ``ARCHITECTURE.md``.
"""

from __future__ import annotations

import copy
import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from .registry import Registry

__all__ = ["ClusterMap", "KMeansClusterMap", "CLUSTER_MAPS", "register_cluster_map"]

CLUSTER_MAPS: Registry[type[ClusterMap]] = Registry("cluster map kind")
"""Every cluster-map class by its ``kind`` name (``"kmeans"``, ``"learned_map"``, …)."""


def register_cluster_map(cls: type[ClusterMap]) -> type[ClusterMap]:
    """Class decorator: register a :class:`ClusterMap` subclass in :data:`CLUSTER_MAPS` under its ``kind``.

    The class must set ``kind`` and (to be evaluable by the generic evaluation method) accept ``n_clusters`` and
    ``seed`` in its constructor; :meth:`ClusterMap.fit` receives the training embeddings and, as keyword arguments,
    whatever supervision the caller has (unsupervised maps ignore them).
    """
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"{cls.__name__} must define a non-empty string class attribute `kind` to be registered")
    return CLUSTER_MAPS.register(kind, cls)


class ClusterMap(ABC):
    """Φ: an ``(n, d)`` embedding matrix → ``(n, K)`` non-negative weights whose rows sum to 1.

    Subclasses learn in :meth:`fit` (returning ``self``; learned state ends in ``_``) and serialise to a JSON-able
    config plus NumPy arrays (never pickle). As in scikit-learn, every ``__init__`` parameter is stored unchanged
    as an attribute of the same name, so :meth:`get_params` / :meth:`clone` can rebuild an unfitted copy: the router
    fits a clone of a user-given map, never the user's object (a fitted map inside a router snapshot never changes).
    """

    kind: ClassVar[str]
    n_clusters_: int
    dim_: int

    @abstractmethod
    def fit(self, embeddings: np.ndarray, **kwargs: Any) -> ClusterMap:
        """Learn the map from training-prompt embeddings; returns self."""

    @abstractmethod
    def assign(self, embeddings: np.ndarray) -> np.ndarray:
        """Assignment weights ``(n, K)`` for ``embeddings`` ``(n, d)``."""

    @abstractmethod
    def get_config(self) -> dict[str, Any]:
        """JSON-able hyper-parameters and scalar learned state."""

    @abstractmethod
    def get_arrays(self) -> dict[str, np.ndarray]:
        """Learned arrays, saved in the router's ``.npz``."""

    @classmethod
    @abstractmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> ClusterMap:
        """Rebuild a fitted map from :meth:`get_config` and :meth:`get_arrays`."""

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters (the ``__init__`` arguments, read back from same-named attributes)."""
        sig = inspect.signature(type(self).__init__)
        names = [
            p.name for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        missing = [n for n in names if not hasattr(self, n)]
        if missing:
            raise TypeError(
                f"{type(self).__name__} must store its __init__ parameters {missing} as attributes of the same "
                "name (scikit-learn convention) so that it can be cloned"
            )
        return {n: getattr(self, n) for n in names}

    def clone(self) -> ClusterMap:
        """A new, unfitted map with the same parameters (deep-copied) and none of the learned state."""
        return type(self)(**copy.deepcopy(self.get_params()))

    def bind_probes(self, probe_embeddings: np.ndarray) -> ClusterMap:
        """The map to route with once the probe set is known (called by ``UniRouter.set_probes``).

        Most maps do not depend on the probes and return ``self``. A map whose cells *are* the probe prompts
        (:class:`~uniroute_core.probe_knn.ProbeKNNClusterMap`) returns a new fitted map anchored on them; the map it
        was called on is never changed (it may be inside a snapshot that is being routed on).
        """
        return self

    def assign_probes(self, probe_embeddings: np.ndarray) -> np.ndarray:
        """Φ of the probe prompts ``(P, K)``, from which every member's Ψ is computed (``add_model``).

        The same as :meth:`assign` for every map except those anchored on the probes, where probe i is the only
        evidence of its own cell (the identity), so that Ψ of a cell is that probe's (shrunk) score.
        """
        return self.assign(probe_embeddings)

    def assign_compact(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Assignments as ``(row index (n,), distinct weight rows (R, K))``: row i of Φ is ``table[index[i]]``.

        Routing works on the R distinct rows and shares the result between prompts. A soft map has one row per
        prompt; a hard map (K-Means) has the K one-hot rows, so routing a batch costs O(K·M + n), not O(n·M).
        """
        weights = self.assign(embeddings)
        return np.arange(len(weights)), weights

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`from_state`) has run."""
        return hasattr(self, "n_clusters_")

    def _check_input(self, embeddings: np.ndarray) -> np.ndarray:
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"embeddings must be a 2-D array (n, d), got shape {x.shape}")
        if self.is_fitted and x.shape[1] != self.dim_:
            raise ValueError(
                f"embeddings have dimension {x.shape[1]} but the cluster map was fitted on dimension {self.dim_}: "
                "use the same embedder for fitting and routing"
            )
        return x


@register_cluster_map
class KMeansClusterMap(ClusterMap):
    """K-Means assignment (scikit-learn ``KMeans``); K = 1 makes every prompt the same cluster (ZeroRouter).

    By default Φ(x) is the one-hot of the nearest centroid (hard). With a ``temperature`` τ > 0 it is the soft
    assignment Φ_k(x) ∝ exp(−‖x − μ_k‖² / τ): a prompt near a cluster boundary borrows from the clusters on both
    sides, so its prediction is a smoother neighbourhood average (as τ → 0 this becomes the hard map). The
    centroids do not depend on τ, so :meth:`with_temperature` can try several τ on one fit.

    Args:
        n_clusters: K.
        seed: random state for the K-Means initialisation.
        n_init: K-Means restarts (the best inertia is kept).
        temperature: τ of the soft assignment, in squared-embedding-distance units; ``None`` (default) = hard.
    """

    kind = "kmeans"

    def __init__(self, n_clusters: int = 20, seed: int = 0, n_init: int = 3, temperature: float | None = None) -> None:
        self.n_clusters = n_clusters
        self.seed = seed
        self.n_init = n_init
        self.temperature = _check_temperature(temperature)

    def fit(self, embeddings: np.ndarray, **kwargs: Any) -> KMeansClusterMap:
        """Fit K-Means on the training-prompt embeddings (unlabelled)."""
        x = self._check_input(embeddings)
        k = self.n_clusters
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"n_clusters must be a positive integer, got {k!r}")
        if len(x) < k:
            raise ValueError(
                f"cannot fit {k} clusters on {len(x)} training prompts; pass at least {k} prompts or lower n_clusters"
            )
        if k == 1:
            centers = x.mean(axis=0, keepdims=True)
        else:
            from sklearn.cluster import KMeans

            km = KMeans(n_clusters=int(k), random_state=self.seed, n_init=self.n_init).fit(x)
            centers = km.cluster_centers_
        self.cluster_centers_ = np.asarray(centers, dtype=np.float32)
        self.n_clusters_ = int(k)
        self.dim_ = int(x.shape[1])
        return self

    def squared_distances(self, embeddings: np.ndarray) -> np.ndarray:
        """Squared Euclidean distance ``(n, K)`` of each row to each centroid (expanded form; may dip just below 0)."""
        x = self._check_input(embeddings)
        c = self.cluster_centers_
        return (x * x).sum(1, keepdims=True) - 2.0 * x @ c.T + (c * c).sum(1)[None, :]

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """Index of the nearest centroid for each row."""
        return np.argmin(self.squared_distances(embeddings), axis=1)

    def assign_compact(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hard: nearest-centroid index per prompt and the K one-hot rows. Soft: one row per prompt."""
        if self.temperature is not None:
            return super().assign_compact(embeddings)
        return self.predict(embeddings), np.eye(self.n_clusters_)

    def assign(self, embeddings: np.ndarray) -> np.ndarray:
        """One-hot of the nearest centroid (hard), or the softmax of −‖x − μ_k‖² / τ (soft)."""
        if self.temperature is not None:
            d2 = self.squared_distances(embeddings).astype(np.float64)
            logits = -(d2 - d2.min(axis=1, keepdims=True)) / self.temperature
            w = np.exp(logits)
            return w / w.sum(axis=1, keepdims=True)
        idx = self.predict(embeddings)
        out = np.zeros((len(idx), self.n_clusters_), dtype=np.float64)
        out[np.arange(len(idx)), idx] = 1.0
        return out

    def with_temperature(self, temperature: float | None) -> KMeansClusterMap:
        """A copy of this fitted map with another τ (same centroids; ``None`` = hard)."""
        if not self.is_fitted:
            raise ValueError("with_temperature needs a fitted KMeansClusterMap; call fit first")
        other = KMeansClusterMap(
            n_clusters=self.n_clusters, seed=self.seed, n_init=self.n_init, temperature=temperature
        )
        other.cluster_centers_ = self.cluster_centers_
        other.n_clusters_ = self.n_clusters_
        other.dim_ = self.dim_
        return other

    def get_config(self) -> dict[str, Any]:
        return {
            "n_clusters": self.n_clusters_, "seed": self.seed, "n_init": self.n_init, "dim": self.dim_,
            "temperature": self.temperature,
        }

    def get_arrays(self) -> dict[str, np.ndarray]:
        return {"cluster_centers": self.cluster_centers_}

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> KMeansClusterMap:
        """Rebuild from a saved config; files saved before soft assignments existed have no τ and load as hard."""
        obj = cls(
            n_clusters=int(config["n_clusters"]), seed=int(config.get("seed", 0)), n_init=int(config.get("n_init", 3)),
            temperature=config.get("temperature"),
        )
        centers = np.asarray(arrays["cluster_centers"], dtype=np.float32)
        if centers.shape != (obj.n_clusters, int(config["dim"])):
            raise ValueError(
                f"cluster_centers has shape {centers.shape}; the config says ({obj.n_clusters}, {config['dim']})"
            )
        obj.cluster_centers_ = centers
        obj.n_clusters_ = obj.n_clusters
        obj.dim_ = int(config["dim"])
        return obj


def shared_fitted_dim(maps: Sequence[ClusterMap], required: type[object], caller: str, noun: str) -> int:
    """The embedding dimension of already-fitted maps combined into one (multi-resolution levels, blend parts).

    Raises a ``ValueError`` naming ``caller`` when there is no map, or one is not a fitted ``required``, and naming
    the ``noun`` when the maps were fitted on different dimensions.
    """
    if not maps or not all(isinstance(m, required) and m.is_fitted for m in maps):
        raise ValueError(f"{caller} needs at least one fitted {required.__name__}")
    dims = {m.dim_ for m in maps}
    if len(dims) != 1:
        raise ValueError(f"the {noun} were fitted on different embedding dimensions {sorted(dims)}")
    return dims.pop()


def _check_temperature(temperature: float | None) -> float | None:
    """``None`` (hard) or a finite τ > 0, as a float."""
    if temperature is None:
        return None
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise TypeError(f"temperature must be None (hard assignment) or a number > 0, got {temperature!r}") from None
    if not np.isfinite(t) or t <= 0:
        raise ValueError(f"temperature must be None (hard assignment) or a finite number > 0, got {temperature!r}")
    return t
