"""K-Means for more prompts than fit in memory: mini-batch K-Means fed one batch of embeddings at a time.

:class:`MiniBatchKMeansClusterMap` learns its centroids with scikit-learn's ``MiniBatchKMeans.partial_fit`` over a
stream of ``(b, d)`` embedding batches (from a Ray dataset, a file reader, a generator), so only one batch and the
K centroids are in memory at any time. The result **is** a K-Means cluster map: same ``kind`` (``"kmeans"``), same
config and arrays, saved and loaded exactly like :class:`~uniroute_core.cluster_map.KMeansClusterMap` — a router
fitted this way is an ordinary router on disk, and ``UniRouter.load`` gives it back as a ``KMeansClusterMap``.

Mini-batch centroids are close to, not equal to, full-batch (Lloyd) centroids; the stream order matters, so feed
batches in a fixed order (the Ray path preserves the dataset order while fitting) to get the same map twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..cluster_map import KMeansClusterMap

__all__ = ["MiniBatchKMeansClusterMap"]


class MiniBatchKMeansClusterMap(KMeansClusterMap):
    """K-Means cluster map fitted by mini-batch K-Means over a stream of embedding batches.

    Args:
        n_clusters: K.
        seed: random state of the initialisation and of the mini-batch re-assignments.
        n_init: initialisations tried on the first batch (the best inertia is kept).
        temperature: τ of the soft assignment (``None`` = hard), as in :class:`KMeansClusterMap`.
        batch_size: rows per ``partial_fit`` call when an in-memory array is given to :meth:`fit` (streamed batches
            are used as they come).

    Use :meth:`partial_fit` batch by batch, or :meth:`fit` with ``batches=`` (an iterable of arrays), which is what
    ``UniRouter(cluster_map=MiniBatchKMeansClusterMap(...)).fit_embeddings(empty, batches=stream)`` calls.
    """

    def __init__(
        self,
        n_clusters: int = 20,
        seed: int = 0,
        n_init: int = 3,
        temperature: float | None = None,
        batch_size: int = 4096,
    ) -> None:
        super().__init__(n_clusters=n_clusters, seed=seed, n_init=n_init, temperature=temperature)
        self.batch_size = batch_size

    def get_params(self) -> dict[str, Any]:
        """The K-Means parameters (``batch_size`` is a streaming setting, not part of the K-Means format).

        A router saves these as its cluster-map template, so a router fitted by streaming loads as an ordinary
        K-Means router whose refits (on data that fits in memory) use full-batch K-Means.
        """
        return {
            "n_clusters": self.n_clusters, "seed": self.seed, "n_init": self.n_init, "temperature": self.temperature,
        }

    def clone(self) -> MiniBatchKMeansClusterMap:
        """A new, unfitted mini-batch map with the same parameters, ``batch_size`` included."""
        return MiniBatchKMeansClusterMap(**self.get_params(), batch_size=self.batch_size)

    def _estimator(self) -> Any:
        from sklearn.cluster import MiniBatchKMeans

        k = self.n_clusters
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"n_clusters must be a positive integer, got {k!r}")
        return MiniBatchKMeans(
            n_clusters=int(k), random_state=self.seed, n_init=self.n_init, batch_size=int(self.batch_size)
        )

    def partial_fit(self, batch: np.ndarray) -> MiniBatchKMeansClusterMap:
        """Update the centroids with one ``(b, d)`` batch; the first batch needs at least K rows. Returns self."""
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"a batch of embeddings must be a 2-D array (b, d), got shape {x.shape}")
        if len(x) == 0:
            return self
        if not np.all(np.isfinite(x)):
            raise ValueError("a batch of embeddings holds NaN or infinite values")
        est = getattr(self, "_mbk", None)
        if est is None:
            if len(x) < self.n_clusters:
                raise ValueError(
                    f"the first batch has {len(x)} rows but mini-batch K-Means needs at least "
                    f"n_clusters={self.n_clusters} "
                    "to initialise; use larger batches"
                )
            est = self._estimator()
            self._mbk = est
            self.dim_ = int(x.shape[1])
        elif x.shape[1] != self.dim_:
            raise ValueError(
                f"batch has dimension {x.shape[1]} but earlier batches had {self.dim_}: "
                "one embedder for the whole stream"
            )
        if self.n_clusters == 1:
            # K = 1 is the running mean (ZeroRouter); MiniBatchKMeans would do the same, more slowly
            n_seen = getattr(self, "_n_seen", 0)
            mean = getattr(self, "_mean", np.zeros(x.shape[1], dtype=np.float64))
            self._mean = mean + (x.sum(axis=0, dtype=np.float64) - len(x) * mean) / (n_seen + len(x))
            self._n_seen = n_seen + len(x)
            centers = self._mean[None, :]
        else:
            est.partial_fit(x)
            centers = est.cluster_centers_
        self.cluster_centers_ = np.asarray(centers, dtype=np.float32)
        self.n_clusters_ = int(self.n_clusters)
        self.n_samples_seen_ = int(getattr(self, "n_samples_seen_", 0) + len(x))
        return self

    def fit(
        self, embeddings: np.ndarray, *, batches: Iterable[np.ndarray] | None = None, **kwargs: Any
    ) -> MiniBatchKMeansClusterMap:
        """Fit from scratch on ``embeddings`` (cut into ``batch_size`` rows), then on each array of ``batches``.

        ``embeddings`` may be empty (shape ``(0, d)`` or ``(0,)``) when everything comes from ``batches``.
        """
        for attr in ("_mbk", "_mean", "_n_seen", "n_samples_seen_", "cluster_centers_", "n_clusters_", "dim_"):
            self.__dict__.pop(attr, None)
        x = np.asarray(embeddings, dtype=np.float32)
        if x.size:
            x = self._check_input(x)
            step = max(int(self.batch_size), int(self.n_clusters))
            for start in range(0, len(x), step):
                self.partial_fit(x[start : start + step])
        for batch in batches or ():
            self.partial_fit(batch)
        if not self.is_fitted:
            raise ValueError("no embeddings to fit on: both the array and the batches were empty")
        return self

    def to_kmeans(self) -> KMeansClusterMap:
        """The plain :class:`KMeansClusterMap` with these centroids (what ``UniRouter.load`` gives back)."""
        if not self.is_fitted:
            raise ValueError("to_kmeans needs a fitted map; call fit or partial_fit first")
        return KMeansClusterMap.from_state(self.get_config(), self.get_arrays())
