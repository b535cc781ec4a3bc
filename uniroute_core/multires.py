"""Multi-resolution soft K-Means: several K-Means maps of different K, combined into one Φ.

    Φ(x) = [ Φ_1(x) / L, Φ_2(x) / L, …, Φ_L(x) / L ]          (L levels, K = K_1 + … + K_L cells)

Each level is a :class:`~uniroute_core.cluster_map.KMeansClusterMap` (hard, or soft with its own τ). The rows still
sum to 1 and are non-negative, so Φ is a valid UniRoute map: Ψ(h) is computed from probe scores exactly as for any
map (:func:`~uniroute_core.profile.build_profile`), a new LLM is added from its probe scores alone, and the predicted
quality is the mean of the levels' predictions,

    q(x, h) = Φ(x)ᵀΨ(h) = (1/L) Σ_l Φ_l(x)ᵀ Ψ_l(h),

a coarse level contributing a stable estimate and a fine level a specific one. Routing costs O((Σ K_l)·d + Σ K_l·M)
per prompt. Because each cell's probe weight is 1/L of its level's, the shrinkage α is in units of 1/L probe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .cluster_map import ClusterMap, KMeansClusterMap, register_cluster_map, shared_fitted_dim

__all__ = ["MultiResolutionClusterMap"]


@register_cluster_map
class MultiResolutionClusterMap(ClusterMap):
    """Several K-Means resolutions combined with equal weights (see the module docstring).

    Args:
        levels: the K of each level (each ≥ 1, at least one level); ``None`` (default) derives them from
            ``n_clusters``.
        n_clusters: the finest level's K when ``levels`` is ``None``: the levels are then about 4 geometric steps
            from 3 to it (e.g. 20 → 3, 6, 11, 20), so the map can be built like any kind from a single K.
        seed: K-Means random state (level l uses ``seed + l``).
        n_init: K-Means restarts per level.
        temperature_multiple: ``None`` for hard levels, or a number > 0: level l's τ is this multiple of the median
            squared distance from a fitting prompt to its nearest level-l centroid (the scale-free τ of the
            evaluation's soft K-Means search).

    Learned attributes: ``levels_`` (fitted :class:`KMeansClusterMap` per level, τ set), ``n_clusters_`` (Σ K_l),
    ``dim_``.
    """

    kind = "multires"

    def __init__(
        self,
        levels: Sequence[int] | None = None,
        seed: int = 0,
        n_init: int = 1,
        temperature_multiple: float | None = None,
        n_clusters: int | None = None,
    ) -> None:
        self.levels = levels
        self.n_clusters = n_clusters
        self.seed = seed
        self.n_init = n_init
        self.temperature_multiple = temperature_multiple

    def _level_ks(self) -> tuple[int, ...]:
        if self.levels is not None:
            return tuple(self.levels)
        k = self.n_clusters if self.n_clusters is not None else 20
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"n_clusters must be a positive integer, got {k!r}")
        return tuple(sorted({int(round(v)) for v in np.geomspace(min(3, k), k, 4)})) if k > 1 else (1,)

    def _check_params(self) -> None:
        levels = self._level_ks()
        if not levels or any(not isinstance(k, (int, np.integer)) or k < 1 for k in levels):
            raise ValueError(f"levels must be a non-empty sequence of positive integers, got {self.levels!r}")
        t = self.temperature_multiple
        if t is not None and (not isinstance(t, (int, float)) or not np.isfinite(t) or t <= 0):
            raise ValueError(f"temperature_multiple must be None (hard levels) or a finite number > 0, got {t!r}")

    def fit(self, embeddings: np.ndarray, **kwargs: Any) -> MultiResolutionClusterMap:
        """Fit one K-Means per level on the (unlabelled) training-prompt embeddings."""
        self._check_params()
        x = self._check_input(embeddings)
        fitted = [
            KMeansClusterMap(n_clusters=int(k), seed=int(self.seed) + i, n_init=int(self.n_init)).fit(x)
            for i, k in enumerate(self._level_ks())
        ]
        return self._install([self._with_tau(m, x) for m in fitted], int(x.shape[1]))

    @classmethod
    def from_levels(
        cls,
        levels: Sequence[KMeansClusterMap],
        *,
        seed: int = 0,
        n_init: int = 1,
        temperature_multiple: float | None = None,
    ) -> MultiResolutionClusterMap:
        """Combine already-fitted K-Means maps (with their τ as they are) into one multi-resolution map."""
        maps = list(levels)
        dim = shared_fitted_dim(maps, KMeansClusterMap, "from_levels", "levels")
        obj = cls(
            levels=[m.n_clusters_ for m in maps], seed=seed, n_init=n_init, temperature_multiple=temperature_multiple
        )
        obj._check_params()
        return obj._install(maps, dim)

    def _with_tau(self, cmap: KMeansClusterMap, x: np.ndarray) -> KMeansClusterMap:
        if self.temperature_multiple is None or cmap.n_clusters_ == 1:
            return cmap
        scale = float(np.median(np.maximum(cmap.squared_distances(x).min(axis=1), 0.0)))
        return cmap.with_temperature(float(self.temperature_multiple) * scale) if scale > 0 else cmap

    def _install(self, maps: list[KMeansClusterMap], dim: int) -> MultiResolutionClusterMap:
        self.levels_ = tuple(maps)
        self.n_clusters_ = int(sum(m.n_clusters_ for m in maps))
        self.dim_ = dim
        # every level's centroids in one matrix: routing computes all distances with one product
        self._centers = np.concatenate([m.cluster_centers_ for m in maps], axis=0).astype(np.float32)
        self._center_norms = (self._centers * self._centers).sum(1)
        self._bounds = np.cumsum([0] + [m.n_clusters_ for m in maps])
        return self

    def assign(self, embeddings: np.ndarray) -> np.ndarray:
        """``(n, Σ K_l)``: each level's assignment divided by the number of levels, side by side."""
        if not self.is_fitted:
            raise RuntimeError("MultiResolutionClusterMap.assign called before fit")
        x = self._check_input(embeddings)
        n_levels = len(self.levels_)
        d2_all = (x * x).sum(1, keepdims=True) - 2.0 * x @ self._centers.T + self._center_norms[None, :]
        out = np.zeros((len(x), self.n_clusters_), dtype=np.float64)
        for i, level in enumerate(self.levels_):
            lo, hi = int(self._bounds[i]), int(self._bounds[i + 1])
            d2 = d2_all[:, lo:hi]
            if level.temperature is None:  # hard: one-hot of the nearest centroid
                out[np.arange(len(x)), lo + np.argmin(d2, axis=1)] = 1.0 / n_levels
            else:  # soft: Φ_k ∝ exp(−d²_k / τ), shifted per row so that it cannot underflow
                d = d2.astype(np.float64)
                w = np.exp(-(d - d.min(axis=1, keepdims=True)) / level.temperature)
                out[:, lo:hi] = w / w.sum(axis=1, keepdims=True) / n_levels
        return out

    # ------------------------------------------------------------------ persistence
    def get_config(self) -> dict[str, Any]:
        return {
            "levels": [m.n_clusters_ for m in self.levels_],
            "seed": self.seed,
            "n_init": self.n_init,
            "temperature_multiple": self.temperature_multiple,
            "temperatures": [m.temperature for m in self.levels_],
            "dim": self.dim_,
        }

    def get_arrays(self) -> dict[str, np.ndarray]:
        return {f"level{i}.cluster_centers": m.cluster_centers_ for i, m in enumerate(self.levels_)}

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> MultiResolutionClusterMap:
        levels = [int(k) for k in config["levels"]]
        temps = list(config.get("temperatures") or [None] * len(levels))
        if len(temps) != len(levels):
            raise ValueError(f"multires config has {len(levels)} levels but {len(temps)} temperatures")
        maps = []
        for i, (k, tau) in enumerate(zip(levels, temps)):
            key = f"level{i}.cluster_centers"
            if key not in arrays:
                raise ValueError(f"multires map is missing array {key!r}")
            maps.append(
                KMeansClusterMap.from_state(
                    {
                        "n_clusters": k, "dim": int(config["dim"]), "seed": int(config.get("seed", 0)) + i,
                        "temperature": tau,
                    },
                    {"cluster_centers": arrays[key]},
                )
            )
        return cls.from_levels(
            maps,
            seed=int(config.get("seed", 0)),
            n_init=int(config.get("n_init", 1)),
            temperature_multiple=config.get("temperature_multiple"),
        )
