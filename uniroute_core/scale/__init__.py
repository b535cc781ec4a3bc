"""Past one machine: streaming K-Means and a Ray Data engine for the heavy offline jobs.

* :class:`MiniBatchKMeansClusterMap` (no extra dependency): fit the cluster map on a stream of embedding batches,
  saved in the ordinary K-Means format.
* :mod:`uniroute_core.scale.ray_engine` (``pip install "uniroute[ray]"``): read prompts from Parquet/JSONL/CSV
  shards, embed them with an actor pool (the encoder is loaded once per actor), route and aggregate in parallel,
  write decisions and per-member aggregates as Parquet, run the evaluation protocol's trials as Ray tasks and fit a
  router from a prompt file larger than memory. Its names are importable from here; Ray is imported on first use.
"""

from __future__ import annotations

from typing import Any

from .kmeans import MiniBatchKMeansClusterMap

__all__ = [
    "MiniBatchKMeansClusterMap",
    "RayReplayResult",
    "connect",
    "dataset_from_prompts",
    "dataset_from_routing_data",
    "embed_dataset",
    "embed_in_order",
    "evaluate_on_ray",
    "fit_router_on_ray",
    "read_prompts",
    "replay_on_ray",
    "route_dataset",
]
_RAY_NAMES = frozenset(__all__) - {"MiniBatchKMeansClusterMap"}


def __getattr__(name: str) -> Any:
    if name in _RAY_NAMES:
        from . import ray_engine

        return getattr(ray_engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
