"""Two more representations Φ that keep UniRoute's property (a new LLM is added from its probe scores alone):

* :class:`ProbeKNNClusterMap` (kind ``"probe_knn"``) — KNN over the probe prompts as a cluster map. Each probe prompt is
  one cell; Φ(x) is the average one-hot of the ``k`` probes nearest to x (cosine similarity), a non-negative row that
  sums to 1. A probe prompt is the only evidence of its own cell (Φ of the probes is the identity), so with the
  profile formula of :mod:`uniroute_core.profile` a member's Ψ_p is its score on probe p shrunk toward its mean,

      Ψ_p(h) = (s_p(h) + α·s̄(h)) / (1 + α),      q(x, h) = Φ(x)ᵀΨ(h) = mean of Ψ_p(h) over the k probes nearest x,

  i.e. exactly the KNN baseline when α = 0, and a shrunk KNN otherwise. Adding an LLM is still computing Ψ from its
  probe scores; nothing is trained. The map only knows its cells once the probe set is known: ``fit`` records the
  dimension, ``UniRouter.set_probes`` calls :meth:`ClusterMap.bind_probes`, which returns the map anchored on the
  probes (saved with the router: the probe embeddings are the map's array). Routing costs one similarity product
  with the P probes, O(P·d + k·M) per prompt — more than K-Means' O(K·d + K·M) when P ≫ K
  (``benchmarks/representation_cost.py`` measures it).

* :class:`BlendClusterMap` (kind ``"blend"``) — a weighted blend of several maps, Φ(x) = [w_1 Φ_1(x), …, w_L Φ_L(x)]
  with w_l > 0 summing to 1. The rows still sum to 1, so Ψ is computed by the same formula over the concatenated
  cells and q(x, h) = Σ_l w_l Φ_l(x)ᵀ Ψ_l(h): the prediction is the blend of the parts' predictions (each part's cells
  weighted by w_l, so the shrinkage α counts in units of w_l probe there). The validation selection
  (:mod:`uniroute_core.autoselect`) blends its best probe-KNN with its best K-Means-based map, the weight chosen by
  validation Area.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from .cluster_map import CLUSTER_MAPS, ClusterMap, KMeansClusterMap, register_cluster_map, shared_fitted_dim

__all__ = ["ProbeKNNClusterMap", "BlendClusterMap", "probe_neighbours"]

_CHUNK = 4096
"""Rows per similarity block (bounds memory for big batches: 4096 × P floats)."""


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def probe_neighbours(unit_probes: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Indices ``(n, k)`` of each query's ``k`` most cosine-similar probes, most similar first.

    ``unit_probes`` are row-normalised probe embeddings. Same ranking (and tie order) as the evaluation's KNN
    baseline, so that ``probe_knn`` with α = 0 predicts exactly what KNN predicts.
    """
    k = int(min(k, len(unit_probes)))
    q = _unit_rows(queries)
    out = np.empty((len(q), k), dtype=np.int64)
    for start in range(0, len(q), _CHUNK):
        sim = q[start : start + _CHUNK] @ unit_probes.T
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sim, part, axis=1), axis=1, kind="stable")
        out[start : start + _CHUNK] = np.take_along_axis(part, order, axis=1)
    return out


@register_cluster_map
class ProbeKNNClusterMap(ClusterMap):
    """KNN over the probe prompts as a cluster map (see the module docstring).

    Args:
        n_neighbors: k, how many nearest probes each prompt averages (capped at the probe count).
        seed: unused (nothing is random); kept so the kind is built like any other.
        n_clusters: alias of ``n_neighbors`` for code that builds every kind from one size (the evaluation's
            generic method); ``n_neighbors`` wins when both are given.

    Learned attributes: ``dim_``; after :meth:`bind_probes`, ``anchors_`` (the row-normalised probe embeddings) and
    ``n_clusters_`` = P (0 while no probe set is bound).
    """

    kind = "probe_knn"

    def __init__(self, n_neighbors: int | None = None, seed: int = 0, n_clusters: int | None = None) -> None:
        self.n_neighbors = n_neighbors
        self.seed = seed
        self.n_clusters = n_clusters

    @property
    def k(self) -> int:
        """The k used (``n_neighbors``, else ``n_clusters``, else 20)."""
        k = self.n_neighbors if self.n_neighbors is not None else self.n_clusters
        k = 20 if k is None else k
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise ValueError(f"n_neighbors must be a positive integer, got {k!r}")
        return int(k)

    @property
    def is_bound(self) -> bool:
        """Whether the map is anchored on a probe set (it can assign prompts)."""
        return getattr(self, "anchors_", None) is not None

    def fit(self, embeddings: np.ndarray, **kwargs: Any) -> ProbeKNNClusterMap:
        """Record the embedding dimension (the cells are the probes, bound later by :meth:`bind_probes`)."""
        self.k  # noqa: B018 - validates the parameter now, not at the first routing call
        x = self._check_input(embeddings)
        self.dim_ = int(x.shape[1])
        self.anchors_: np.ndarray | None = None
        self.n_clusters_ = 0
        return self

    def bind_probes(self, probe_embeddings: np.ndarray) -> ProbeKNNClusterMap:
        """A new map anchored on these probes (this one is left as it is)."""
        if not self.is_fitted:
            raise RuntimeError("ProbeKNNClusterMap.bind_probes called before fit")
        p = self._check_input(probe_embeddings)
        if len(p) < 1:
            raise ValueError("probe_knn needs at least one probe prompt")
        other = ProbeKNNClusterMap(n_neighbors=self.n_neighbors, seed=self.seed, n_clusters=self.n_clusters)
        other.dim_ = self.dim_
        other.anchors_ = _unit_rows(p)
        other.n_clusters_ = int(len(p))
        return other

    def assign(self, embeddings: np.ndarray) -> np.ndarray:
        """``(n, P)``: 1/k on each of the k most similar probes (k capped at P)."""
        if not self.is_bound:
            raise RuntimeError(
                "the probe_knn map has no probe set yet: its cells are the probe prompts, so call "
                "UniRouter.set_probes(...) (or bind_probes) before assigning prompts"
            )
        x = self._check_input(embeddings)
        anchors = self.anchors_
        assert anchors is not None
        k = min(self.k, len(anchors))
        out = np.zeros((len(x), len(anchors)), dtype=np.float64)
        u = _unit_rows(x)
        for start in range(0, len(u), _CHUNK):  # only the set of the k nearest matters here, not their order
            sim = u[start : start + _CHUNK] @ anchors.T
            nb = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < len(anchors) else None
            if nb is None:
                out[start : start + _CHUNK] = 1.0 / k
            else:
                np.put_along_axis(out[start : start + _CHUNK], nb, 1.0 / k, axis=1)
        return out

    def assign_probes(self, probe_embeddings: np.ndarray) -> np.ndarray:
        """The identity when these are the bound probes (each probe is its own cell's evidence); else :meth:`assign`."""
        if self.is_bound:
            anchors = self.anchors_
            assert anchors is not None
            p = self._check_input(probe_embeddings)
            if p.shape == anchors.shape and np.array_equal(_unit_rows(p), anchors):
                return np.eye(len(anchors))
        return self.assign(probe_embeddings)

    def get_config(self) -> dict[str, Any]:
        return {
            "n_neighbors": self.k, "seed": self.seed, "dim": self.dim_,
            "n_probes": int(self.n_clusters_),
        }

    def get_arrays(self) -> dict[str, np.ndarray]:
        return {"anchors": self.anchors_} if self.anchors_ is not None else {}

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> ProbeKNNClusterMap:
        obj = cls(n_neighbors=int(config["n_neighbors"]), seed=int(config.get("seed", 0)))
        obj.k  # noqa: B018 - validates
        obj.dim_ = int(config["dim"])
        n_probes = int(config.get("n_probes", 0))
        if n_probes == 0:
            obj.anchors_ = None
            obj.n_clusters_ = 0
            return obj
        if "anchors" not in arrays:
            raise ValueError("probe_knn map is bound to probes but its array 'anchors' is missing")
        anchors = np.asarray(arrays["anchors"], dtype=np.float32)
        if anchors.shape != (n_probes, obj.dim_):
            raise ValueError(f"probe_knn anchors have shape {anchors.shape}; the config says ({n_probes}, {obj.dim_})")
        norms = np.linalg.norm(anchors, axis=1)
        if not np.all(np.abs(norms - 1.0) < 1e-3):
            raise ValueError("probe_knn anchors must be unit rows (row-normalised probe embeddings)")
        obj.anchors_ = anchors
        obj.n_clusters_ = n_probes
        return obj


@register_cluster_map
class BlendClusterMap(ClusterMap):
    """A weighted blend of maps: Φ(x) = [w_1 Φ_1(x), …, w_L Φ_L(x)] (see the module docstring).

    Args:
        parts: the maps to blend (unfitted templates, or fitted maps for :meth:`from_parts`); ``None`` = K-Means with
            ``n_clusters`` and probe KNN with k = 20 (so the kind can be built from one size like any other).
        weights: one positive weight per part (normalised to sum to 1); ``None`` = equal weights.
        n_clusters: K of the default K-Means part.
        seed: seed of the default parts (fitting clones the given parts, never the objects given).

    Learned attributes: ``parts_`` (the fitted parts), ``weights_``, ``n_clusters_`` (Σ of the parts' cells),
    ``dim_``.
    """

    kind = "blend"

    def __init__(
        self,
        parts: Sequence[ClusterMap] | None = None,
        weights: Sequence[float] | None = None,
        n_clusters: int | None = None,
        seed: int = 0,
    ) -> None:
        self.parts = parts
        self.weights = weights
        self.n_clusters = n_clusters
        self.seed = seed

    def _templates(self) -> list[ClusterMap]:
        if self.parts is None:
            k = 20 if self.n_clusters is None else self.n_clusters
            return [KMeansClusterMap(n_clusters=k, seed=self.seed), ProbeKNNClusterMap(n_neighbors=20, seed=self.seed)]
        parts = list(self.parts)
        if not parts or not all(isinstance(p, ClusterMap) for p in parts):
            raise ValueError(f"parts must be a non-empty sequence of ClusterMap instances, got {self.parts!r}")
        return parts

    @staticmethod
    def _normalised(weights: Sequence[float] | None, n: int) -> np.ndarray:
        if weights is None:
            return np.full(n, 1.0 / n)
        try:
            w = np.asarray([float(v) for v in weights], dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"weights must be numbers, got {weights!r}") from None
        if len(w) != n:
            raise ValueError(f"weights has {len(w)} values for {n} parts")
        if not np.all(np.isfinite(w)) or (w <= 0).any():
            raise ValueError(f"weights must be finite numbers > 0, got {list(w)}")
        return w / w.sum()

    def fit(self, embeddings: np.ndarray, **kwargs: Any) -> BlendClusterMap:
        """Fit a clone of every part on the training prompts (each part takes the supervision it understands)."""
        templates = self._templates()
        w = self._normalised(self.weights, len(templates))
        x = self._check_input(embeddings)
        return self._install([t.clone().fit(x, **kwargs) for t in templates], w, int(x.shape[1]))

    @classmethod
    def from_parts(cls, parts: Sequence[ClusterMap], weights: Sequence[float], *, seed: int = 0) -> BlendClusterMap:
        """Blend already-fitted maps with these weights."""
        maps = list(parts)
        dim = shared_fitted_dim(maps, ClusterMap, "from_parts", "parts")
        w = cls._normalised(weights, len(maps))
        obj = cls(parts=[m.clone() for m in maps], weights=[float(v) for v in w], seed=seed)
        return obj._install(maps, w, dim)

    def _install(self, maps: list[ClusterMap], w: np.ndarray, dim: int) -> BlendClusterMap:
        self.parts_ = tuple(maps)
        self.weights_ = w
        self.dim_ = dim
        self.n_clusters_ = int(sum(m.n_clusters_ for m in maps))
        return self

    def _combine(self, blocks: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([wi * b for wi, b in zip(self.weights_, blocks)], axis=1)

    def bind_probes(self, probe_embeddings: np.ndarray) -> BlendClusterMap:
        """Bind every part that depends on the probes; returns a new blend (or ``self`` when none does)."""
        bound = [m.bind_probes(probe_embeddings) for m in self.parts_]
        if all(b is m for b, m in zip(bound, self.parts_)):
            return self
        other = copy.copy(self)
        return other._install(bound, self.weights_, self.dim_)

    def assign(self, embeddings: np.ndarray) -> np.ndarray:
        if not self.is_fitted:
            raise RuntimeError("BlendClusterMap.assign called before fit")
        x = self._check_input(embeddings)
        return self._combine([m.assign(x) for m in self.parts_])

    def assign_probes(self, probe_embeddings: np.ndarray) -> np.ndarray:
        x = self._check_input(probe_embeddings)
        return self._combine([m.assign_probes(x) for m in self.parts_])

    # ------------------------------------------------------------------ persistence
    def get_config(self) -> dict[str, Any]:
        return {
            "parts": [{"kind": m.kind, "config": m.get_config()} for m in self.parts_],
            "weights": [float(v) for v in self.weights_],
            "seed": self.seed,
            "dim": self.dim_,
        }

    def get_arrays(self) -> dict[str, np.ndarray]:
        return {f"part{i}.{k}": v for i, m in enumerate(self.parts_) for k, v in m.get_arrays().items()}

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> BlendClusterMap:
        parts_cfg = config["parts"]
        if not isinstance(parts_cfg, list) or not parts_cfg:
            raise ValueError("blend config must list its parts")
        maps: list[ClusterMap] = []
        for i, part in enumerate(parts_cfg):
            kind = part["kind"]
            if kind == cls.kind or kind not in CLUSTER_MAPS:
                raise ValueError(f"blend part {i} has kind {kind!r}; expected one of {sorted(CLUSTER_MAPS)} but blend")
            prefix = f"part{i}."
            sub = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            maps.append(CLUSTER_MAPS[kind].from_state(dict(part["config"]), sub))
        w = cls._normalised(config["weights"], len(maps))
        dims = {m.dim_ for m in maps}
        if dims != {int(config["dim"])}:
            raise ValueError(f"blend parts have dimensions {sorted(dims)}; the config says {config['dim']}")
        obj = cls(parts=[m.clone() for m in maps], weights=[float(v) for v in w], seed=int(config.get("seed", 0)))
        return obj._install(maps, w, int(config["dim"]))
