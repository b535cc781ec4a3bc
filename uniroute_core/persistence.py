"""Save and load a router's settings and :class:`~uniroute_core.state.RouterState` as JSON + ``.npz``, never pickle.

Layout of a saved router directory::

    router.json   format name and version, settings (cluster-map kind or template parameters, n_clusters, seed,
                  shrinkage), embedder name and dimension, cluster-map config, the probe set (prompts, references,
                  grader name), each member's name and cost
    arrays.npz    cluster-map arrays (``map/<name>``), probe scores (M, P), Ψ (M, K) and probe counts (M, K)

This module knows states and settings, not routers: :func:`save_state` writes a state with the settings that
produced it, :func:`load_state` reads them back as a :class:`SavedRouter`, and
:meth:`UniRouter.save <uniroute_core.router.UniRouter.save>` / :meth:`UniRouter.load
<uniroute_core.router.UniRouter.load>` (via :meth:`UniRouter.from_state`) are the router-level calls. Imports go
``router → persistence → state``, never back. :func:`read_saved_embedder` tells what embedder a saved router needs
without loading it (the replay CLI wraps it in the on-disk cache).

Member objects, API keys and callables are never written: only names, numbers and texts. Loading checks the format
version, that every file and array is present, that shapes agree, and that the embedder gives vectors of the saved
dimension; each problem is a :class:`RouterFileError` naming what is wrong.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from .cluster_map import CLUSTER_MAPS, ClusterMap
from .embedding import (
    DEFAULT_EMBEDDER_NAME,
    CallableEmbedder,
    Embedder,
    UntrustedEmbedderError,
    resolve_embedder,
    resolve_saved_embedder,
)
from .probes import ProbeSet
from .profile import ModelProfile
from .state import RouterState

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "JSON_FILE",
    "ARRAYS_FILE",
    "RouterFileError",
    "SavedEmbedder",
    "SavedRouter",
    "save_state",
    "load_state",
    "read_saved_embedder",
]

FORMAT_NAME = "uniroute-router"
FORMAT_VERSION = 1
JSON_FILE = "router.json"
ARRAYS_FILE = "arrays.npz"


class RouterFileError(ValueError):
    """A saved router directory is incomplete, from another format version, or inconsistent."""


@dataclass(frozen=True)
class SavedEmbedder:
    """The embedder a saved router was built with, as recorded in ``router.json``.

    Attributes:
        name: the embedder's name (the packaged default's, a sentence-transformers name/path, or a callable's).
        kind: ``"sentence-transformers"`` (loadable by name) or ``"callable"`` (code: the user must pass it again).
        dimension: the embedding dimension the cluster map was fitted on.
        directory: the saved router's directory (a model folder inside it may be named relative to it).
    """

    name: str
    kind: str
    dimension: int
    directory: Path | None = None

    @property
    def is_callable(self) -> bool:
        """A custom function: it was not saved, so loading needs ``embedder=`` again."""
        return self.kind == "callable"

    @property
    def spec(self) -> str | None:
        """What to pass to :func:`~uniroute_core.embedding.resolve_embedder` to rebuild it (``None`` = default)."""
        if self.is_callable:
            raise RouterFileError(
                f"this router was saved with a custom embedder {self.name!r}; pass the same one: "
                "UniRouter.load(directory, embedder=...)"
            )
        return None if self.name == DEFAULT_EMBEDDER_NAME else self.name

    def resolve(self) -> Embedder:
        """The named embedder, accepted only where loading it cannot run foreign code (see
        :func:`~uniroute_core.embedding.resolve_saved_embedder`: built in, in the local Hugging Face cache, or a
        folder inside the router's directory); anything else is a :class:`RouterFileError` asking for ``embedder=``.
        """
        if self.is_callable:
            raise RouterFileError(
                f"this router was saved with a custom embedder {self.name!r}; pass the same one: "
                "UniRouter.load(directory, embedder=...)"
            )
        where = self.directory / JSON_FILE if self.directory is not None else JSON_FILE
        try:
            return resolve_saved_embedder(self.name, self.directory if self.directory is not None else Path.cwd())
        except UntrustedEmbedderError as exc:
            raise RouterFileError(f"{where}: field 'embedder.name': {exc}") from None
        except Exception as exc:  # noqa: BLE001 - report which embedder could not be loaded
            raise RouterFileError(f"cannot load the embedder {self.name!r} named in {where}: {exc}") from exc


@dataclass(frozen=True)
class SavedRouter:
    """What :func:`load_state` read: ``UniRouter.from_state(state, embedder=embedder, **settings)`` rebuilds it.

    Attributes:
        state: the routing snapshot, exactly as saved (decisions are identical).
        settings: the router's constructor settings (``n_clusters``, ``seed``, ``shrinkage``, ``cluster_map``).
        embedder: the resolved embedder, checked against the saved dimension.
    """

    state: RouterState
    settings: dict[str, Any]
    embedder: Embedder


def _template_params(template: str | ClusterMap) -> dict[str, Any] | None:
    """JSON-able constructor parameters of a user-given cluster-map template (``None`` for a kind name)."""
    if isinstance(template, str):
        return None
    params = template.get_params()
    try:
        json.dumps(params)
    except (TypeError, ValueError):
        return None  # not JSON-able: the kind name is kept, the exotic parameters are not
    return params


def save_state(
    directory: str | os.PathLike[str],
    state: RouterState,
    *,
    settings: dict[str, Any],
    embedder: Embedder,
) -> Path:
    """Write ``state`` with the router ``settings`` and ``embedder`` description to ``directory`` (created if needed).

    ``settings`` are the router's constructor values (``n_clusters``, ``seed``, ``shrinkage``, ``cluster_map`` —
    a kind name or an unfitted template). Files are written then renamed into place.
    """
    if state.cluster_map is None:
        raise ValueError("cannot save an unfitted router: call fit() first")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    cmap = state.cluster_map
    dim = int(cmap.dim_)
    template = settings.get("cluster_map", cmap.kind)
    cmap_meta: dict[str, Any] = {"kind": cmap.kind, "config": cmap.get_config()}
    params = _template_params(template)
    if params is not None:
        cmap_meta["template_params"] = params
    meta: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "method": cmap.kind,
        "n_clusters": int(settings.get("n_clusters", cmap.n_clusters_)),
        "seed": int(settings.get("seed", 0)),
        "shrinkage": float(settings.get("shrinkage", 0.0)),
        "embedder": {
            "name": embedder.name,
            "dimension": dim,
            "kind": "callable" if isinstance(embedder, CallableEmbedder) else "sentence-transformers",
        },
        "cluster_map": cmap_meta,
        "probes": state.probes.to_dict() if state.probes is not None else None,
        "models": [{"name": p.name, "cost": p.cost} for p in state.profiles],
    }
    arrays: dict[str, np.ndarray] = {f"map/{k}": np.asarray(v) for k, v in cmap.get_arrays().items()}
    n_probes = len(state.probes) if state.probes is not None else 0
    arrays["probe_scores"] = (
        np.stack([p.probe_scores for p in state.profiles]) if state.profiles else np.zeros((0, n_probes))
    )
    arrays["cluster_quality"] = state.cluster_quality
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


def _read_meta(folder: Path) -> dict[str, Any]:
    """``router.json`` of a saved router directory, with its format checked."""
    if not folder.is_dir():
        raise RouterFileError(f"{str(folder)!r} is not a directory holding a saved router")
    for fname in (JSON_FILE, ARRAYS_FILE):
        if not (folder / fname).exists():
            raise RouterFileError(f"saved router {str(folder)!r} is missing {fname}")
    try:
        meta = json.loads((folder / JSON_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RouterFileError(f"{folder / JSON_FILE} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise RouterFileError(f"{folder / JSON_FILE} is not a UniRoute router file (format={found!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise RouterFileError(
            f"{folder / JSON_FILE} has format version {meta.get('format_version')!r}; this UniRoute reads version "
            f"{FORMAT_VERSION}"
        )
    return meta


def _embedder_meta(meta: dict[str, Any], where: Path) -> SavedEmbedder:
    emb: Any = meta.get("embedder")
    try:
        return SavedEmbedder(name=str(emb["name"]), kind=str(emb.get("kind", "sentence-transformers")),
                             dimension=int(emb["dimension"]), directory=where)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise RouterFileError(
            f"{where / JSON_FILE}: 'embedder' must hold a name and a dimension, got {emb!r}"
        ) from None


def read_saved_embedder(directory: str | os.PathLike[str]) -> SavedEmbedder:
    """The embedder recorded in a saved router directory, without loading the router (format checked first)."""
    folder = Path(directory)
    return _embedder_meta(_read_meta(folder), folder)


def _saved_settings(meta: dict[str, Any], cmap: ClusterMap) -> dict[str, Any]:
    """The router settings recorded in ``meta`` (files from before settings were saved fall back as they did)."""
    kind = cmap.kind
    template: str | ClusterMap = kind
    params = meta["cluster_map"].get("template_params")
    if isinstance(params, dict):
        try:
            template = CLUSTER_MAPS[kind](**params)
        except (TypeError, ValueError) as exc:
            raise RouterFileError(f"cluster map template parameters {params} are invalid for {kind!r}: {exc}") from None
    return {
        "n_clusters": int(meta.get("n_clusters", cmap.n_clusters_)),
        "seed": int(meta.get("seed", 0)),
        "shrinkage": float(meta.get("shrinkage", 0.0)),
        "cluster_map": template,
    }


def load_state(
    directory: str | os.PathLike[str],
    *,
    embedder: Any = None,
    grader: Any = None,
    show_progress: bool = True,
) -> SavedRouter:
    """Read what :func:`save_state` wrote (see the module docstring for the checks made).

    ``embedder`` overrides the saved one (required for a custom callable); ``grader`` re-attaches a custom probe
    grader (functions are never saved; built-in graders are saved by name).
    """
    folder = Path(directory)
    meta = _read_meta(folder)
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
    settings = _saved_settings(meta, cmap)

    emb_meta = _embedder_meta(meta, folder)
    dim = emb_meta.dimension
    from_file = embedder is None
    resolved = resolve_embedder(embedder) if embedder is not None else emb_meta.resolve()

    def embed(texts: list[str], progress: bool) -> np.ndarray:
        try:
            return resolved.embed(texts, show_progress=progress)
        except (OSError, ValueError, ImportError, RuntimeError) as exc:
            if not from_file:
                raise
            raise RouterFileError(
                f"the embedder {emb_meta.name!r} named in {folder / JSON_FILE} could not be loaded "
                f"({type(exc).__name__}: {exc}); pass one yourself: UniRouter.load(directory, embedder=...)"
            ) from None

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
            sample = embed([probes.prompts[0]], False)
        else:
            emb = embed(list(probes.prompts), show_progress)
            sample, assign = emb[:1], None
        if sample.shape[1] != dim:
            raise RouterFileError(
                f"the embedder {resolved.name!r} gives {sample.shape[1]}-dimensional vectors but this router "
                f"was saved with {emb_meta.name!r} of dimension {dim}"
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
                    shrinkage=settings["shrinkage"],
                )
            )
        state = RouterState(cluster_map=cmap, probes=probes, probe_assign=assign).with_profiles(profiles)
    elif models:
        raise RouterFileError(f"{JSON_FILE} lists {n_models} models but no probe set")
    return SavedRouter(state=state, settings=settings, embedder=resolved)
