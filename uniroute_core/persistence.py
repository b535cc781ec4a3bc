"""Save and load a :class:`~uniroute_core.router.UniRouter` as JSON + NumPy ``.npz`` — never pickle.

Layout of a saved router directory::

    router.json   format name and version, settings, embedder name and dimension, cluster-map config,
                  the probe set (prompts, references, grader name), each member's name and cost
    arrays.npz    cluster-map arrays (``map/<name>``), probe scores (M, P), Ψ (M, K) and probe counts (M, K)

Member objects, API keys and callables are never written: only names, numbers and texts. Loading checks the format
version, that every file and array is present, that shapes agree, and that the embedder gives vectors of the saved
dimension; each problem is a :class:`RouterFileError` naming what is wrong.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .cluster_map import CLUSTER_MAPS
from .embedding import DEFAULT_EMBEDDER_NAME, CallableEmbedder, resolve_embedder
from .probes import ProbeSet
from .profile import ModelProfile
from .router import RouterState

if TYPE_CHECKING:
    from .router import UniRouter

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "RouterFileError", "save_router", "load_router"]

FORMAT_NAME = "uniroute-router"
FORMAT_VERSION = 1
JSON_FILE = "router.json"
ARRAYS_FILE = "arrays.npz"


class RouterFileError(ValueError):
    """A saved router directory is incomplete, from another format version, or inconsistent."""


def save_router(router: UniRouter, directory: str | os.PathLike[str]) -> Path:
    """Write ``router`` to ``directory`` (created if needed). Files are written then renamed into place."""
    state = router.state
    if state.cluster_map is None:
        raise ValueError("cannot save an unfitted router: call fit() first")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    cmap = state.cluster_map
    embedder = router.embedder
    dim = int(cmap.dim_)
    meta: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "method": router.method,
        "seed": router.seed,
        "shrinkage": router.shrinkage,
        "embedder": {
            "name": embedder.name,
            "dimension": dim,
            "kind": "callable" if isinstance(embedder, CallableEmbedder) else "sentence-transformers",
        },
        "cluster_map": {"kind": cmap.kind, "config": cmap.get_config()},
        "probes": state.probes.to_dict() if state.probes is not None else None,
        "models": [{"name": p.name, "cost": p.cost} for p in state.profiles],
    }
    arrays: dict[str, np.ndarray] = {f"map/{k}": np.asarray(v) for k, v in cmap.get_arrays().items()}
    n_probes = len(state.probes) if state.probes is not None else 0
    arrays["probe_scores"] = (
        np.stack([p.probe_scores for p in state.profiles]) if state.profiles else np.zeros((0, n_probes))
    )
    arrays["cluster_quality"] = state.quality
    arrays["cluster_counts"] = (
        np.stack([p.cluster_counts for p in state.profiles]) if state.profiles else np.zeros((0, cmap.n_clusters_))
    )
    if state.probe_assign is not None:
        arrays["probe_assign"] = state.probe_assign
    tmp_npz = folder / (ARRAYS_FILE + ".tmp.npz")
    np.savez(tmp_npz, **cast("dict[str, Any]", arrays))  # numpy's stub types **kwds like allow_pickle
    os.replace(tmp_npz, folder / ARRAYS_FILE)
    tmp_json = folder / (JSON_FILE + ".tmp")
    tmp_json.write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp_json, folder / JSON_FILE)
    return folder


def _grader_not_saved(response: str, reference: str) -> float:
    """Stands in for a custom grader, which is code and so is never saved: routing works, profiling asks for it."""
    raise RuntimeError(
        "this router's probe set was saved with a custom grader function, which is not stored on disk; "
        "load it with UniRouter.load(directory, grader=your_grader) to profile new models"
    )


def _need(arrays: dict[str, np.ndarray], key: str, shape: tuple[int, ...]) -> np.ndarray:
    if key not in arrays:
        raise RouterFileError(f"{ARRAYS_FILE} has no array {key!r}")
    a = arrays[key]
    if a.shape != shape:
        raise RouterFileError(f"{ARRAYS_FILE}: {key!r} has shape {a.shape}, expected {shape} from {JSON_FILE}")
    return a


def load_router(
    cls: type[UniRouter],
    directory: str | os.PathLike[str],
    *,
    embedder: Any = None,
    grader: Any = None,
    show_progress: bool = True,
) -> UniRouter:
    """Rebuild a router saved by :func:`save_router` (see the module docstring for the checks made)."""
    folder = Path(directory)
    if not folder.is_dir():
        raise RouterFileError(f"{str(folder)!r} is not a directory holding a saved router")
    for fname in (JSON_FILE, ARRAYS_FILE):
        if not (folder / fname).exists():
            raise RouterFileError(f"saved router {str(folder)!r} is missing {fname}")
    try:
        meta = json.loads((folder / JSON_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RouterFileError(f"{folder / JSON_FILE} is not valid JSON: {exc}") from None
    if meta.get("format") != FORMAT_NAME:
        raise RouterFileError(f"{folder / JSON_FILE} is not a UniRoute router file (format={meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise RouterFileError(
            f"{folder / JSON_FILE} has format version {meta.get('format_version')!r}; this UniRoute reads version "
            f"{FORMAT_VERSION}"
        )
    with np.load(folder / ARRAYS_FILE, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}

    kind = meta["cluster_map"]["kind"]
    if kind not in CLUSTER_MAPS:
        raise RouterFileError(f"unknown cluster map kind {kind!r}; known: {sorted(CLUSTER_MAPS)}")
    map_arrays = {k[len("map/") :]: v for k, v in arrays.items() if k.startswith("map/")}
    try:
        cmap = CLUSTER_MAPS[kind].from_state(meta["cluster_map"]["config"], map_arrays)
    except (KeyError, ValueError) as exc:
        raise RouterFileError(f"cluster map in {str(folder)!r} is inconsistent: {exc}") from None

    emb_meta = meta["embedder"]
    dim = int(emb_meta["dimension"])
    if embedder is None:
        if emb_meta.get("kind") == "callable":
            raise RouterFileError(
                f"this router was saved with a custom embedder {emb_meta['name']!r}; pass the same one: "
                "UniRouter.load(directory, embedder=...)"
            )
        embedder = None if emb_meta["name"] == DEFAULT_EMBEDDER_NAME else emb_meta["name"]
    router = cls(
        embedder=embedder,
        n_clusters=cmap.n_clusters_,
        seed=int(meta.get("seed", 0)),
        shrinkage=float(meta.get("shrinkage", 0.0)),
        method=meta.get("method", kind),
        show_progress=show_progress,
    )
    router._embedder = resolve_embedder(embedder)

    probes = None
    if meta.get("probes"):
        if grader is None and meta["probes"].get("grader") is None:
            grader = _grader_not_saved
        probes = ProbeSet.from_dict(meta["probes"], grader=grader)
    models = meta.get("models", [])
    n_models, k = len(models), cmap.n_clusters_
    state = RouterState(cluster_map=cmap)
    if probes is not None:
        n_probes = len(probes)
        if "probe_assign" in arrays:
            assign = _need(arrays, "probe_assign", (n_probes, k))
            sample = router.embedder.embed([probes.prompts[0]], show_progress=False)
        else:
            emb = router.embedder.embed(list(probes.prompts), show_progress=show_progress)
            sample, assign = emb[:1], None
        if sample.shape[1] != dim:
            raise RouterFileError(
                f"the embedder {router.embedder.name!r} gives {sample.shape[1]}-dimensional vectors but this router "
                f"was saved with {emb_meta['name']!r} of dimension {dim}"
            )
        if assign is None:
            assign = cmap.assign(emb)
        scores = _need(arrays, "probe_scores", (n_models, n_probes))
        quality = _need(arrays, "cluster_quality", (n_models, k))
        counts = _need(arrays, "cluster_counts", (n_models, k))
        profiles = []
        for j, m in enumerate(models):
            known = ~np.isnan(scores[j])
            profiles.append(
                ModelProfile(
                    name=m["name"],
                    cost=float(m["cost"]),
                    cluster_quality=quality[j].copy(),
                    cluster_counts=counts[j].copy(),
                    overall_quality=float(np.nanmean(scores[j])),
                    n_probes=int(known.sum()),
                    probe_scores=scores[j].copy(),
                    shrinkage=router.shrinkage,
                )
            )
        state = RouterState(cluster_map=cmap, probes=probes, probe_assign=assign).with_profiles(profiles)
    elif models:
        raise RouterFileError(f"{JSON_FILE} lists {n_models} models but no probe set")
    router._state = state
    return router
