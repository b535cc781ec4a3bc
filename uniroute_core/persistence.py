"""Save and load a router's settings and :class:`~uniroute_core.state.RouterState` as JSON + ``.npz``, never pickle.

Layout of a saved router directory (format version 6)::

    router.json              format name and version, settings (cluster-map kind or template parameters,
                             n_clusters, seed, shrinkage), embedder name and dimension, cluster-map config, the probe
                             set (prompts, references, grader name), each member's name and cost, and the manifest
                             ``"arrays": {"file": "arrays-<hash>.npz", "sha256": ...}``
    arrays-<hash>.npz        cluster-map arrays (``map/<name>``), probe scores (M, P), Ψ (M, K), probe counts (M, K),
                             feedback (live) sums and weights per cluster (M, K) (``live_sums``, ``live_counts``)

Format 3 (issue 14) adds what was learnt from served traffic: each member's ``prior`` ([quality, weight] or null),
its ``overall_quality`` and ``probe_weight``, and ``live`` (null, or the feedback totals ``score_sum`` and ``weight``,
``n_observations``, ``updated_at`` and ``probe_scale``) in ``models[i]``; the arrays ``live_sums`` / ``live_counts``;
and the router's ``forgetting`` and ``exploration`` settings. Versions 1 and 2 still load (no feedback, no prior).

Format 4 adds change detection: the router's ``change_detection`` setting; per member ``change`` (null, or the
member-level CUSUM ``member_stat``, ``member_since_n``, ``n_changes`` and the recent ``events``); the arrays
``probe_cluster_scale`` (M, K) (ρ_k, 1 where no change was detected) and the detectors' per-cluster state
``detector_stat``, ``detector_since_sums``, ``detector_since_counts``, ``detector_since_n``,
``detector_member_since_sums``, ``detector_member_since_counts`` (M, K). Version 3 files load with no detector state.

Format 5 adds the mixture change test (:class:`~uniroute_core.feedback.ChangeDetection` ``method="mixture"``): the
setting's ``method`` and ``drops``; per member ``change.mixture`` (true when it holds Shiryaev–Roberts statistics);
the arrays ``detector_sr`` (M, K, J) and ``detector_member_sr`` (M, J), J the number of assumed drops. A format-4
``change_detection`` setting has no ``method`` and loads as the CUSUM test it was saved with. It also adds the
array ``prior_offsets`` (M, K) — a member's cluster offsets, cold-started or (format 6) fitted in the low-rank
target's basis (a row of NaN: none) — and each member's
``shrinkage`` (a cold-started member's own prior strength; the router's α for the others).

Format 6 adds the low-rank shrinkage target chosen at fit (:mod:`uniroute_core.profile_basis`): ``profile_basis``
(null, or ``{"rank": r, "ridge": ...}``) and the array ``profile_basis`` (r, K). Members profiled with it keep their
fitted target in ``prior_offsets``. Older files load with no basis (every member's target is its own mean, as
before).

This module knows states and settings, not routers: :func:`save_state` writes a state with the settings that
produced it, :func:`load_state` reads them back as a :class:`SavedRouter`, and
:meth:`UniRouter.save <uniroute_core.router.UniRouter.save>` / :meth:`UniRouter.load
<uniroute_core.router.UniRouter.load>` (via :meth:`UniRouter.from_state`) are the router-level calls. Imports go
``router → persistence → state``, never back. :func:`read_saved_embedder` tells what embedder a saved router needs
without loading it (the replay CLI wraps it in the on-disk cache).

**Crash-safe, concurrency-safe saving.** ``router.json`` is the single commit point. A save writes the arrays to a
new content-addressed file (unique temporary name, ``fsync``, rename, ``fsync`` of the folder), then the new
``router.json`` the same way (one atomic rename), and only then deletes arrays files no longer named. A save killed at
any moment therefore leaves the old ``router.json`` naming the old, intact arrays, or the new one naming the new
arrays. Savers take an exclusive ``flock`` on the directory itself for the whole save (no lock file), so concurrent
saves (threads or processes) run one after the other and the last one is what is left, whole. Readers take no lock:
if a save removes the arrays a reader was about to open, the reader sees ``router.json`` changed and reads again.
Files outside this layout in the folder are left alone. Version-1 directories (``router.json`` + ``arrays.npz``)
still load; saving over one upgrades it.

**Checked loading.** The manifest's SHA-256 is checked, so a truncated, damaged or edited arrays file is refused;
every field of ``router.json`` is checked for type and value (names non-empty and distinct, costs finite numbers
>= 0, Ψ and probe scores in [0, 1], counts >= 0, probe assignments rows of weights in [0, 1] summing to 1, cluster
centres finite, ...), and each problem is a :class:`RouterFileError` naming the file, the field and the value —
never a raw ``KeyError``, ``TypeError`` or ``BadZipFile``. Member objects, API keys and callables are never written:
only names, numbers and texts.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import time
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from .autoselect import AUTO, Selection
from .cluster_map import CLUSTER_MAPS, ClusterMap
from .embedding import (
    DEFAULT_EMBEDDER_NAME,
    CallableEmbedder,
    Embedder,
    UntrustedEmbedderError,
    resolve_embedder,
    resolve_saved_embedder,
)
from .feedback import ChangeDetection, Exploration, Forgetting
from .probes import ProbeSet
from .profile import ChangeEvent, DetectorState, ModelProfile
from .profile_basis import ProfileBasis
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
    "saved_files",
]

FORMAT_NAME = "uniroute-router"
FORMAT_VERSION = 6
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6)
"""Version 1 (one fixed ``arrays.npz``, no manifest) is still read."""
JSON_FILE = "router.json"
ARRAYS_FILE = "arrays.npz"
"""The arrays file of a version-1 directory (version 2 names a content-addressed ``arrays-<hash>.npz``)."""
_ARRAYS_NAME = re.compile(r"arrays-[0-9a-f]{16}\.npz")
_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{32}\.tmp")
_STALE_SECONDS = 3600.0
"""Without a lock (no ``fcntl``), leftovers are only removed once this old, so a live saver's files are never hit."""
_READ_ATTEMPTS = 8


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


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; elsewhere the rename itself is the best there is)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(folder: Path, name: str, data: bytes) -> None:
    """Write ``data`` to ``folder/name`` atomically: unique temporary sibling, fsync, rename, fsync of the folder."""
    tmp = folder / f".{name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / name)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(folder)


@contextlib.contextmanager
def _save_lock(folder: Path) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on the directory itself (no lock file is left behind); yields whether a real lock
    is held. Each call opens its own descriptor, so threads of one process exclude each other as processes do."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: saves still publish atomically, leftovers are aged out
        yield False
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _collect_garbage(folder: Path, keep: str, *, locked: bool) -> None:
    """Remove arrays files ``router.json`` no longer names, the version-1 ``arrays.npz`` and dead savers' temps."""
    now = time.time()
    for path in folder.iterdir():
        name = path.name
        if not (
            (_ARRAYS_NAME.fullmatch(name) and name != keep) or name == ARRAYS_FILE or _TEMP_NAME.fullmatch(name)
        ):
            continue
        try:
            if not locked and now - path.stat().st_mtime < _STALE_SECONDS:
                continue
            if path.is_file():
                path.unlink()
        except FileNotFoundError:
            continue


def save_state(
    directory: str | os.PathLike[str],
    state: RouterState,
    *,
    settings: dict[str, Any],
    embedder: Embedder,
) -> Path:
    """Write ``state`` with the router ``settings`` and ``embedder`` description to ``directory`` (created if needed).

    ``settings`` are the router's constructor values (``n_clusters``, ``seed``, ``shrinkage``, ``cluster_map`` —
    a kind name or an unfitted template). Crash-safe and safe with concurrent savers (see the module docstring):
    whatever happens, the directory holds the previous router or this one, whole.
    """
    if state.cluster_map is None:
        raise ValueError("cannot save an unfitted router: call fit() first")
    folder = Path(directory)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"cannot save a router to {str(folder)!r}: it exists and is not a directory")
    cmap = state.cluster_map
    dim = int(cmap.dim_)
    template = settings.get("cluster_map", cmap.kind)
    cmap_meta: dict[str, Any] = {"kind": cmap.kind, "config": cmap.get_config()}
    if template == AUTO:
        cmap_meta["setting"] = AUTO  # the router chooses its map again on the next fit
    params = _template_params(template)
    if params is not None:
        cmap_meta["template_params"] = params
    meta: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "method": cmap.kind,
        "n_clusters": AUTO if settings.get("n_clusters") == AUTO else int(settings.get("n_clusters", cmap.n_clusters_)),
        "seed": int(settings.get("seed", 0)),
        "shrinkage": float(settings.get("shrinkage", 0.0)),
        "embedder": {
            "name": embedder.name,
            "dimension": dim,
            "kind": "callable" if isinstance(embedder, CallableEmbedder) else "sentence-transformers",
        },
        "cluster_map": cmap_meta,
        "probes": state.probes.to_dict() if state.probes is not None else None,
        "models": [_model_meta(p) for p in state.profiles],
        "forgetting": None if settings.get("forgetting") is None else settings["forgetting"].to_dict(),
        "exploration": None if state.exploration is None else state.exploration.to_dict(),
        "change_detection": (
            None if settings.get("change_detection") is None else settings["change_detection"].to_dict()
        ),
        "fitted_shrinkage": state.shrinkage,
        "selection": state.selection.to_dict() if state.selection is not None else None,
        "profile_basis": (
            None if state.profile_basis is None
            else {"rank": state.profile_basis.rank, "ridge": state.profile_basis.ridge}
        ),
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
    k = cmap.n_clusters_
    arrays["live_sums"] = np.stack([_or_zeros(p.live_sums, k) for p in state.profiles]) if state.profiles else (
        np.zeros((0, k))
    )
    arrays["live_counts"] = np.stack([_or_zeros(p.live_counts, k) for p in state.profiles]) if state.profiles else (
        np.zeros((0, k))
    )
    arrays["probe_cluster_scale"] = np.stack([
        np.ones(k) if p.probe_cluster_scale is None else np.asarray(p.probe_cluster_scale, dtype=float)
        for p in state.profiles
    ]) if state.profiles else np.zeros((0, k))
    for key, attr in _DETECTOR_ARRAYS.items():
        arrays[key] = np.stack([
            np.zeros(k) if p.detector is None or getattr(p.detector, attr) is None
            else np.asarray(getattr(p.detector, attr), dtype=float)
            for p in state.profiles
        ]) if state.profiles else np.zeros((0, k))
    n_drops = max((p.detector.sr.shape[1] for p in state.profiles
                   if p.detector is not None and p.detector.sr is not None), default=0)
    arrays["detector_sr"] = np.stack([
        np.asarray(p.detector.sr, dtype=float) if p.detector is not None and p.detector.sr is not None
        and p.detector.sr.shape == (k, n_drops) else np.zeros((k, n_drops))
        for p in state.profiles
    ]) if state.profiles else np.zeros((0, k, n_drops))
    arrays["detector_member_sr"] = np.stack([
        np.asarray(p.detector.member_sr, dtype=float) if p.detector is not None and p.detector.member_sr is not None
        and p.detector.member_sr.shape == (n_drops,) else np.zeros(n_drops)
        for p in state.profiles
    ]) if state.profiles else np.zeros((0, n_drops))
    if state.profile_basis is not None:
        arrays["profile_basis"] = np.asarray(state.profile_basis.components, dtype=float)
    arrays["prior_offsets"] = np.stack([
        np.full(k, np.nan) if p.prior_offsets is None else np.asarray(p.prior_offsets, dtype=float)
        for p in state.profiles
    ]) if state.profiles else np.zeros((0, k))
    buffer = io.BytesIO()
    np.savez(buffer, **cast("dict[str, Any]", arrays))  # numpy's stub types **kwds like allow_pickle
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    arrays_name = f"arrays-{digest[:16]}.npz"
    meta["arrays"] = {"file": arrays_name, "sha256": digest}
    text = json.dumps(meta, indent=2, ensure_ascii=False).encode("utf-8")

    folder.mkdir(parents=True, exist_ok=True)
    with _save_lock(folder) as locked:
        _publish(folder, arrays_name, data)
        _publish(folder, JSON_FILE, text)  # the commit point: one atomic rename
        _collect_garbage(folder, arrays_name, locked=locked)
    return folder


def saved_files(directory: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(router.json, arrays file)`` of a saved router directory, as ``router.json`` names them (format checked)."""
    folder = Path(directory)
    meta, _ = _read_meta_bytes(folder)
    return folder / JSON_FILE, folder / _arrays_name(meta, folder)


_DETECTOR_ARRAYS = {
    "detector_stat": "stat",
    "detector_since_sums": "since_sums",
    "detector_since_counts": "since_counts",
    "detector_since_n": "since_n",
    "detector_member_since_sums": "member_since_sums",
    "detector_member_since_counts": "member_since_counts",
}


def _or_zeros(a: np.ndarray | None, k: int) -> np.ndarray:
    return np.zeros(k) if a is None else np.asarray(a, dtype=float)


def _model_meta(p: ModelProfile) -> dict[str, Any]:
    """A member's JSON entry: name, cost, prior, and (format 3) its feedback totals — probe vs live weight."""
    return {
        "name": p.name,
        "cost": p.cost,
        "overall_quality": p.overall_quality,
        "prior": None if p.prior_quality is None else [p.prior_quality, p.prior_weight],
        "shrinkage": p.shrinkage,
        "probe_weight": p.probe_weight,
        "live": None if p.live_sums is None else {
            "score_sum": p.live_score_sum,
            "weight": p.live_weight,
            "n_observations": p.n_observations,
            "updated_at": p.live_updated_at,
            "probe_scale": p.probe_scale,
        },
        "change": None if p.detector is None else {
            "member_stat": p.detector.member_stat,
            "member_since_n": p.detector.member_since_n,
            "n_changes": p.detector.n_changes,
            "events": [e.to_dict() for e in p.detector.events],
            "mixture": p.detector.sr is not None,
        },
    }


def _model_change(m: dict[str, Any], file: Path, j: int) -> dict[str, Any] | None:
    """Saved member ``j``'s change-detector scalars and events (format 4), each field checked."""
    change = m.get("change")
    if change is None:
        return None
    at = f"models[{j}].change"
    change = _dict(change, file, at)
    stat = _number(_field(change, "member_stat", file, f"{at}.member_stat"), file, f"{at}.member_stat")
    if stat < 0:
        raise _bad(file, f"{at}.member_stat", stat, "a number >= 0")
    events_raw = _field(change, "events", file, f"{at}.events")
    if not isinstance(events_raw, list):
        raise _bad(file, f"{at}.events", events_raw, "a list of change events")
    events = []
    for i, e in enumerate(events_raw):
        where = f"{at}.events[{i}]"
        e = _dict(e, file, where)
        level = _field(e, "level", file, f"{where}.level")
        if level not in ("member", "cluster"):
            raise _bad(file, f"{where}.level", level, "'member' or 'cluster'")
        clusters = _field(e, "clusters", file, f"{where}.clusters")
        if not isinstance(clusters, list):
            raise _bad(file, f"{where}.clusters", clusters, "a list of cluster indices")
        t = e.get("time")
        events.append(ChangeEvent(
            member=_str(_field(e, "member", file, f"{where}.member"), file, f"{where}.member"),
            level=level,
            clusters=tuple(_int(c, file, f"{where}.clusters", minimum=0) for c in clusters),
            at_observation=_int(_field(e, "at_observation", file, f"{where}.at_observation"), file,
                                f"{where}.at_observation", minimum=0),
            statistic=_number(_field(e, "statistic", file, f"{where}.statistic"), file, f"{where}.statistic"),
            change_point=_int(_field(e, "change_point", file, f"{where}.change_point"), file,
                              f"{where}.change_point", minimum=0),
            time=None if t is None else _number(t, file, f"{where}.time"),
        ))
    mixture = change.get("mixture", False)
    if not isinstance(mixture, bool):
        raise _bad(file, f"{at}.mixture", mixture, "true or false")
    return {
        "mixture": mixture,
        "member_stat": stat,
        "member_since_n": _int(_field(change, "member_since_n", file, f"{at}.member_since_n"), file,
                               f"{at}.member_since_n", minimum=0),
        "n_changes": _int(_field(change, "n_changes", file, f"{at}.n_changes"), file, f"{at}.n_changes",
                          minimum=0),
        "events": tuple(events),
    }


def _model_live(m: Any, file: Path, j: int) -> dict[str, Any]:
    """The prior, overall quality and live totals of saved member ``j`` (format 3), each field checked."""
    from .profile import validate_prior

    m = _dict(m, file, f"models[{j}]")
    out: dict[str, Any] = {}
    prior = m.get("prior")
    if prior is not None:
        try:
            out["prior_quality"], out["prior_weight"] = validate_prior(str(m.get("name")), prior)
        except (TypeError, ValueError) as exc:
            raise _bad(file, f"models[{j}].prior", prior, f"[quality in [0, 1], weight >= 0] ({exc})") from None
    overall = _number(_field(m, "overall_quality", file, f"models[{j}].overall_quality"), file,
                      f"models[{j}].overall_quality")
    if not 0.0 <= overall <= 1.0:
        raise _bad(file, f"models[{j}].overall_quality", overall, "a number in [0, 1]")
    out["overall_quality"] = overall
    if m.get("shrinkage") is not None:  # format 5: a cold member's own prior strength
        alpha = _number(m["shrinkage"], file, f"models[{j}].shrinkage")
        if not (math.isfinite(alpha) and alpha >= 0):
            raise _bad(file, f"models[{j}].shrinkage", alpha, "a finite number >= 0")
        out["shrinkage"] = alpha
    live = m.get("live")
    if live is not None:
        live = _dict(live, file, f"models[{j}].live")
        at = f"models[{j}].live"
        out["live_score_sum"] = _number(_field(live, "score_sum", file, f"{at}.score_sum"), file, f"{at}.score_sum")
        out["live_weight"] = _number(_field(live, "weight", file, f"{at}.weight"), file, f"{at}.weight")
        out["n_observations"] = _int(_field(live, "n_observations", file, f"{at}.n_observations"), file,
                                     f"{at}.n_observations", minimum=0)
        t = live.get("updated_at")
        out["live_updated_at"] = None if t is None else _number(t, file, f"{at}.updated_at")
        scale = _number(live.get("probe_scale", 1.0), file, f"{at}.probe_scale")
        if not 0.0 < scale <= 1.0:
            raise _bad(file, f"{at}.probe_scale", scale, "a number in (0, 1]")
        out["probe_scale"] = scale
        if out["live_score_sum"] > out["live_weight"] + 1e-9:
            raise _bad(file, f"{at}.score_sum", out["live_score_sum"], f"at most the weight {out['live_weight']}")
    return out


def _grader_not_saved(response: str, reference: str) -> float:
    """Stands in for a custom grader, which is code and so is never saved: routing works, profiling asks for it."""
    raise RuntimeError(
        "this router's probe set was saved with a custom grader function, which is not stored on disk; "
        "load it with UniRouter.load(directory, grader=your_grader) to profile new models"
    )


def _bad(file: Path, field: str, value: Any, expected: str) -> RouterFileError:
    """The one shape of a load error: which file, which field, what value, what was expected."""
    shown = repr(value)
    if len(shown) > 200:
        shown = shown[:200] + "…"
    return RouterFileError(f"{file}: field {field!r} = {shown}: expected {expected}")


_MISSING = object()


def _field(obj: dict[str, Any], key: str, file: Path, path: str, default: Any = _MISSING) -> Any:
    if key not in obj:
        if default is _MISSING:
            raise RouterFileError(f"{file}: field {path!r} is missing")
        return default
    return obj[key]


def _str(value: Any, file: Path, path: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise _bad(file, path, value, "a non-empty string")
    return value


def _int(value: Any, file: Path, path: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        raise _bad(file, path, value, "an integer" + (f" >= {minimum}" if minimum is not None else ""))
    return value


def _number(value: Any, file: Path, path: str) -> float:
    """A finite number >= 0 (``true``/``false``, strings, NaN and infinities refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise _bad(file, path, value, "a finite number >= 0")
    return float(value)


def _dict(value: Any, file: Path, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(file, path, value, "a JSON object")
    return value


def _read_meta_bytes(folder: Path) -> tuple[dict[str, Any], bytes]:
    """``router.json`` parsed (and its raw bytes), with the header checked; any unreadable file is a RouterFileError."""
    file = folder / JSON_FILE
    if not folder.is_dir():
        raise RouterFileError(f"{str(folder)!r} is not a directory holding a saved router")
    if not file.exists():
        raise RouterFileError(f"saved router {str(folder)!r} is missing {JSON_FILE}")
    if not file.is_file():
        raise RouterFileError(f"{file} is not a file")
    try:
        raw = file.read_bytes()
        meta = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RouterFileError(f"{file} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise RouterFileError(f"{file} is not valid JSON: {exc}") from None
    except RecursionError:
        raise RouterFileError(f"{file} is nested too deeply to be a router file") from None
    except OSError as exc:
        raise RouterFileError(f"{file} cannot be read: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise RouterFileError(f"{file} is not a UniRoute router file (format={found!r})")
    version = meta.get("format_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise RouterFileError(
            f"{file} has format version {version!r}; this UniRoute reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    return meta, raw


def _read_meta(folder: Path) -> dict[str, Any]:
    """``router.json`` of a saved router directory, with its format checked."""
    return _read_meta_bytes(folder)[0]


def _arrays_name(meta: dict[str, Any], folder: Path) -> str:
    """The arrays file ``meta`` names: ``arrays.npz`` for version 1, the manifest's file for version 2."""
    file = folder / JSON_FILE
    if meta["format_version"] == 1:
        return ARRAYS_FILE
    manifest = _dict(_field(meta, "arrays", file, "arrays"), file, "arrays")
    name = _field(manifest, "file", file, "arrays.file")
    if not isinstance(name, str) or not _ARRAYS_NAME.fullmatch(name):
        raise _bad(file, "arrays.file", name, "a name like 'arrays-<16 hex digits>.npz' (no folders)")
    digest = _field(manifest, "sha256", file, "arrays.sha256")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise _bad(file, "arrays.sha256", digest, "64 lowercase hex digits")
    return name


def _read_saved(folder: Path) -> tuple[dict[str, Any], Path, dict[str, np.ndarray]]:
    """``router.json`` and the arrays it names, read consistently while saves may be replacing them."""
    for _attempt in range(_READ_ATTEMPTS):
        meta, raw = _read_meta_bytes(folder)
        name = _arrays_name(meta, folder)
        path = folder / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                if (folder / JSON_FILE).read_bytes() != raw:
                    continue  # a save replaced router.json (and removed these arrays) meanwhile: read again
            raise RouterFileError(f"saved router {str(folder)!r} is missing {name} (named in {JSON_FILE})") from None
        except OSError as exc:
            raise RouterFileError(f"{path} cannot be read: {exc}") from None
        if meta["format_version"] >= 2:
            digest = hashlib.sha256(data).hexdigest()
            if digest != meta["arrays"]["sha256"]:
                raise RouterFileError(
                    f"{path} does not match the SHA-256 recorded in {JSON_FILE} (file has {digest[:16]}…, "
                    f"expected {meta['arrays']['sha256'][:16]}…): it is truncated, damaged or was edited"
                )
        return meta, path, _parse_npz(data, path)
    raise RouterFileError(f"saved router {str(folder)!r} kept changing while it was read; try again")


def _parse_npz(data: bytes, path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` (no pickle), each one a RouterFileError if the archive is damaged."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as exc:
        raise RouterFileError(f"{path} is not a readable .npz archive ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # noqa: BLE001 - any other failure of a damaged archive is still a file error
        raise RouterFileError(f"{path} is damaged ({type(exc).__name__}: {exc})") from None


def _need(arrays: dict[str, np.ndarray], key: str, shape: tuple[int, ...], path: Path) -> np.ndarray:
    """Array ``key`` with exactly ``shape`` and a real-number dtype, as float64."""
    if key not in arrays:
        raise RouterFileError(f"{path}: has no array {key!r}")
    a = arrays[key]
    if a.dtype.kind not in "fiub":
        raise RouterFileError(f"{path}: array {key!r} has dtype {a.dtype}, expected numbers")
    if a.shape != shape:
        raise RouterFileError(f"{path}: array {key!r} has shape {a.shape}, expected {shape} from {JSON_FILE}")
    return a


def _check_values(
    a: np.ndarray,
    key: str,
    path: Path,
    *,
    low: float,
    high: float,
    allow_nan: bool = False,
    rows: list[str] | None = None,
) -> None:
    """Every value of ``a`` finite and in ``[low, high]`` (NaN only when allowed); the error names the first bad cell.
    """
    bad = ~((a >= low) & (a <= high) & np.isfinite(a))
    if allow_nan:
        bad &= ~np.isnan(a)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f"[{', '.join(map(str, idx))}]"
        if rows is not None and a.ndim == 2:
            where += f" (member {rows[idx[0]]!r})"
        span = f"in [{low:g}, {high:g}]" if math.isfinite(high) else f"a finite number >= {low:g}"
        raise RouterFileError(
            f"{path}: array {key!r} {where} = {float(a[idx])!r}: expected {span}"
            + (" or NaN (not probed)" if allow_nan else "")
            + f" ({int(bad.sum())} bad value(s))"
        )


def _embedder_meta(meta: dict[str, Any], where: Path) -> SavedEmbedder:
    file = where / JSON_FILE
    emb = _dict(_field(meta, "embedder", file, "embedder"), file, "embedder")
    name = _str(_field(emb, "name", file, "embedder.name"), file, "embedder.name")
    kind = _field(emb, "kind", file, "embedder.kind", "sentence-transformers")
    if kind not in ("sentence-transformers", "callable"):
        raise _bad(file, "embedder.kind", kind, "'sentence-transformers' or 'callable'")
    dim = _int(_field(emb, "dimension", file, "embedder.dimension"), file, "embedder.dimension", minimum=1)
    return SavedEmbedder(name=name, kind=kind, dimension=dim, directory=where)


def read_saved_embedder(directory: str | os.PathLike[str]) -> SavedEmbedder:
    """The embedder recorded in a saved router directory, without loading the router (format checked first)."""
    folder = Path(directory)
    return _embedder_meta(_read_meta(folder), folder)


def _saved_settings(meta: dict[str, Any], cmap: ClusterMap, file: Path) -> dict[str, Any]:
    """The router settings recorded in ``meta`` (files from before settings were saved fall back as they did)."""
    kind = cmap.kind
    template: str | ClusterMap = AUTO if meta["cluster_map"].get("setting") == AUTO else kind
    params = meta["cluster_map"].get("template_params")
    if params is not None:
        params = _dict(params, file, "cluster_map.template_params")
        try:
            template = CLUSTER_MAPS[kind](**params)
        except (TypeError, ValueError) as exc:
            raise _bad(file, "cluster_map.template_params", params, f"valid parameters of {kind!r} ({exc})") from None
    forgetting = None
    if meta.get("forgetting") is not None:
        try:
            forgetting = Forgetting.from_dict(meta["forgetting"])
        except (TypeError, ValueError) as exc:
            raise _bad(
                file, "forgetting", meta["forgetting"], f"{{half_life > 0, unit, decay_probes}} ({exc})"
            ) from None
    detection = None
    if meta.get("change_detection") is not None:
        try:
            detection = ChangeDetection.from_dict(meta["change_detection"])
        except (TypeError, ValueError) as exc:
            raise _bad(
                file, "change_detection", meta["change_detection"],
                f"{{false_alarm_rate in (0, 1), shift in (0, 1), member_level, cluster_level, keep}} ({exc})",
            ) from None
    return {
        "change_detection": detection,
        "n_clusters": (
            AUTO if meta.get("n_clusters") == AUTO
            else _int(meta.get("n_clusters", cmap.n_clusters_), file, "n_clusters", minimum=1)
        ),
        "seed": _int(meta.get("seed", 0), file, "seed"),
        "shrinkage": _number(meta.get("shrinkage", 0.0), file, "shrinkage"),
        "cluster_map": template,
        "forgetting": forgetting,
    }


def _saved_models(meta: dict[str, Any], file: Path) -> list[tuple[str, float]]:
    """``(name, cost)`` of every member: names non-empty and distinct, costs finite numbers >= 0."""
    models = meta.get("models", [])
    if models is None:
        models = []
    if not isinstance(models, list):
        raise _bad(file, "models", models, "a list of {name, cost} objects")
    out: list[tuple[str, float]] = []
    seen: set[str] = set()
    for j, m in enumerate(models):
        m = _dict(m, file, f"models[{j}]")
        name = _str(_field(m, "name", file, f"models[{j}].name"), file, f"models[{j}].name")
        if name in seen:
            raise _bad(file, f"models[{j}].name", name, "a name not used by another member")
        seen.add(name)
        out.append((name, _number(_field(m, "cost", file, f"models[{j}].cost"), file, f"models[{j}].cost")))
    return out


def _saved_cluster_map(meta: dict[str, Any], arrays: dict[str, np.ndarray], file: Path, path: Path) -> ClusterMap:
    cm = _dict(_field(meta, "cluster_map", file, "cluster_map"), file, "cluster_map")
    kind = _field(cm, "kind", file, "cluster_map.kind")
    if not isinstance(kind, str) or kind not in CLUSTER_MAPS:
        raise _bad(file, "cluster_map.kind", kind, f"one of {sorted(CLUSTER_MAPS)}")
    config = _dict(_field(cm, "config", file, "cluster_map.config"), file, "cluster_map.config")
    map_arrays = {k[len("map/") :]: v for k, v in arrays.items() if k.startswith("map/")}
    for key, a in map_arrays.items():
        if a.dtype.kind not in "fiub":
            raise RouterFileError(f"{path}: array 'map/{key}' has dtype {a.dtype}, expected numbers")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            idx = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
            raise RouterFileError(
                f"{path}: array 'map/{key}' [{', '.join(map(str, idx))}] = {float(a[idx])!r}: expected a finite number"
            )
    try:
        return CLUSTER_MAPS[kind].from_state(config, map_arrays)
    except (KeyError, ValueError, TypeError, AttributeError, OverflowError) as exc:
        raise RouterFileError(f"{file}: field 'cluster_map' does not match {path.name}: {exc}") from None


def _fitted_choice(meta: dict[str, Any], file: Path) -> tuple[float | None, Selection | None]:
    """The α and the selection record chosen by validation at fit (files saved before they existed have neither)."""
    alpha = meta.get("fitted_shrinkage")
    fitted = None if alpha is None else _number(alpha, file, "fitted_shrinkage")
    record = meta.get("selection")
    if record is None:
        return fitted, None
    try:
        return fitted, Selection.from_dict(_dict(record, file, "selection"))
    except ValueError as exc:
        if isinstance(exc, RouterFileError):
            raise
        raise RouterFileError(f"{file}: {exc}") from None


def _saved_profile_basis(
    meta: dict[str, Any], arrays: dict[str, np.ndarray], k: int, file: Path, path: Path
) -> ProfileBasis | None:
    """The low-rank target basis of a format-6 file (``None`` when it has none, and for older files)."""
    if meta["format_version"] < 6 or meta.get("profile_basis") is None:
        return None
    info = _dict(meta["profile_basis"], file, "profile_basis")
    rank = _int(info.get("rank"), file, "profile_basis.rank", minimum=1)
    ridge = _number(info.get("ridge"), file, "profile_basis.ridge")
    components = _need(arrays, "profile_basis", (rank, k), path)
    try:
        return ProfileBasis(components.astype(float), ridge)
    except ValueError as exc:
        raise RouterFileError(f"{path}: array 'profile_basis': {exc}") from None


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
    meta, path, arrays = _read_saved(folder)
    file = folder / JSON_FILE
    emb_meta = _embedder_meta(meta, folder)
    models = _saved_models(meta, file)
    cmap = _saved_cluster_map(meta, arrays, file, path)
    settings = _saved_settings(meta, cmap, file)
    dim = emb_meta.dimension
    if int(cmap.dim_) != dim:
        raise _bad(file, "embedder.dimension", dim, f"{cmap.dim_}, the dimension of the saved cluster map")

    probes = None
    probes_meta = meta.get("probes")
    if probes_meta:  # null (or an empty object, as version 1 allowed) means no probe set
        probes_meta = _dict(probes_meta, file, "probes")
        if grader is None and probes_meta.get("grader") is None:
            grader = _grader_not_saved
        try:
            probes = ProbeSet.from_dict(probes_meta, grader=grader)
        except (TypeError, ValueError, KeyError) as exc:
            raise RouterFileError(f"{file}: field 'probes' is not a valid probe set: {exc}") from None
    n_models, k = len(models), cmap.n_clusters_
    if probes is None and models:
        raise RouterFileError(f"{file} lists {n_models} models but no probe set")
    names = [name for name, _ in models]
    assign = None
    if probes is not None:
        n_probes = len(probes)
        scores = _need(arrays, "probe_scores", (n_models, n_probes), path)
        _check_values(scores, "probe_scores", path, low=0.0, high=1.0, allow_nan=True, rows=names)
        v3 = meta["format_version"] >= 3
        extras = [_model_live(m, file, j) for j, m in enumerate(meta.get("models") or [])] if v3 else (
            [{} for _ in names]
        )
        for j, name in enumerate(names):
            if np.isnan(scores[j]).all() and "prior_quality" not in extras[j]:
                raise RouterFileError(
                    f"{path}: array 'probe_scores' row {j} (member {name!r}) is all NaN and the member has no prior"
                )
        changes: list[dict[str, Any] | None] = [None] * n_models
        det_arrays: dict[str, np.ndarray] = {}
        cluster_scale = None
        if meta["format_version"] >= 4:
            changes = [_model_change(_dict(m, file, f"models[{j}]"), file, j)
                       for j, m in enumerate(meta.get("models") or [])]
            cluster_scale = _need(arrays, "probe_cluster_scale", (n_models, k), path)
            _check_values(cluster_scale, "probe_cluster_scale", path, low=0.0, high=1.0, rows=names)
            if (cluster_scale <= 0).any():
                raise RouterFileError(f"{path}: array 'probe_cluster_scale' has a value <= 0: expected (0, 1]")
            for key in _DETECTOR_ARRAYS:
                det_arrays[key] = _need(arrays, key, (n_models, k), path)
                _check_values(det_arrays[key], key, path, low=0.0, high=math.inf, rows=names)
        sr_arrays: tuple[np.ndarray, np.ndarray] | None = None
        offsets = None
        if meta["format_version"] >= 5:
            offsets = _need(arrays, "prior_offsets", (n_models, k), path).astype(float)
            _check_values(offsets, "prior_offsets", path, low=-1.0, high=1.0, allow_nan=True, rows=names)
            partial = np.isnan(offsets).any(axis=1) & ~np.isnan(offsets).all(axis=1)
            if partial.any():
                raise RouterFileError(f"{path}: array 'prior_offsets' row {int(np.flatnonzero(partial)[0])} mixes "
                                      "NaN and numbers: expected a member's offsets all given or all NaN")
            raw_sr = arrays.get("detector_sr")
            if raw_sr is None or raw_sr.ndim != 3:
                raise RouterFileError(f"{path}: array 'detector_sr' missing or not 3-dimensional (M, K, drops)")
            n_drops = int(raw_sr.shape[2])
            sr_all = _need(arrays, "detector_sr", (n_models, k, n_drops), path)
            msr_all = _need(arrays, "detector_member_sr", (n_models, n_drops), path)
            _check_values(sr_all.reshape(n_models, k * n_drops), "detector_sr", path, low=0.0, high=math.inf,
                          rows=names)
            _check_values(msr_all, "detector_member_sr", path, low=0.0, high=math.inf, rows=names)
            sr_arrays = (sr_all, msr_all)
        for j, ch in enumerate(changes):
            if ch is None:
                continue
            mixture = ch.pop("mixture", False)
            if mixture and (sr_arrays is None or sr_arrays[0].shape[2] == 0):
                raise RouterFileError(f"{path}: member {names[j]!r} has a mixture change detector but no "
                                      "'detector_sr' statistics")
            ch["sr"] = sr_arrays[0][j].astype(float) if mixture and sr_arrays is not None else None
            ch["member_sr"] = sr_arrays[1][j].astype(float) if mixture and sr_arrays is not None else None
        live_sums = live_counts = None
        if v3:
            live_sums = _need(arrays, "live_sums", (n_models, k), path)
            live_counts = _need(arrays, "live_counts", (n_models, k), path)
            _check_values(live_counts, "live_counts", path, low=0.0, high=math.inf, rows=names)
            _check_values(live_sums, "live_sums", path, low=0.0, high=math.inf, rows=names)
        quality = _need(arrays, "cluster_quality", (n_models, k), path)
        _check_values(quality, "cluster_quality", path, low=0.0, high=1.0, rows=names)
        counts = _need(arrays, "cluster_counts", (n_models, k), path)
        _check_values(counts, "cluster_counts", path, low=0.0, high=math.inf, rows=names)
        if "probe_assign" in arrays:
            assign = _need(arrays, "probe_assign", (n_probes, k), path)
            _check_values(assign, "probe_assign", path, low=0.0, high=1.0)
            sums = assign.sum(axis=1)
            off = np.flatnonzero(np.abs(sums - 1.0) > 1e-3)
            if len(off):
                raise RouterFileError(
                    f"{path}: array 'probe_assign' row {int(off[0])} sums to {sums[off[0]]:.6g}: expected each "
                    "probe's cluster weights to sum to 1"
                )

    from_file = embedder is None
    resolved = resolve_embedder(embedder) if embedder is not None else emb_meta.resolve()

    def embed(texts: list[str], progress: bool) -> np.ndarray:
        try:
            return resolved.embed(texts, show_progress=progress)
        except (OSError, ValueError, ImportError, RuntimeError) as exc:
            if not from_file:
                raise
            raise RouterFileError(
                f"the embedder {emb_meta.name!r} named in {file} could not be loaded "
                f"({type(exc).__name__}: {exc}); pass one yourself: UniRouter.load(directory, embedder=...)"
            ) from None

    fitted_alpha, selection = _fitted_choice(meta, file)
    basis = _saved_profile_basis(meta, arrays, k, file, path)
    state = RouterState(cluster_map=cmap, shrinkage=fitted_alpha, selection=selection, profile_basis=basis)
    if probes is not None:
        if assign is not None:
            sample = embed([probes.prompts[0]], False)
        else:
            emb = embed(list(probes.prompts), show_progress)
            sample = emb[:1]
        if sample.shape[1] != dim:
            raise RouterFileError(
                f"the embedder {resolved.name!r} gives {sample.shape[1]}-dimensional vectors but this router "
                f"was saved with {emb_meta.name!r} of dimension {dim}"
            )
        if assign is None:
            cmap = cmap.bind_probes(emb)  # the saved map is already bound; binding again keeps it
            assign = cmap.assign_probes(emb)
        profiles = []
        for j, (name, cost) in enumerate(models):
            known = ~np.isnan(scores[j])
            extra = dict(extras[j])
            has_live = "live_weight" in extra
            overall = extra.pop("overall_quality", None)
            own_alpha = extra.pop("shrinkage", None)
            profiles.append(
                ModelProfile(
                    name=name,
                    cost=cost,
                    cluster_quality=quality[j].copy(),
                    cluster_counts=counts[j].copy(),
                    overall_quality=float(np.nanmean(scores[j])) if overall is None else overall,
                    n_probes=int(known.sum()),
                    probe_scores=scores[j].copy(),
                    shrinkage=(own_alpha if own_alpha is not None
                               else fitted_alpha if fitted_alpha is not None else settings["shrinkage"]),
                    live_sums=live_sums[j].copy() if has_live and live_sums is not None else None,
                    live_counts=live_counts[j].copy() if has_live and live_counts is not None else None,
                    probe_cluster_scale=(
                        None if cluster_scale is None or (cluster_scale[j] == 1.0).all() else cluster_scale[j].copy()
                    ),
                    prior_offsets=(
                        None if offsets is None or np.isnan(offsets[j]).all() else offsets[j].copy()
                    ),
                    detector=None if changes[j] is None else DetectorState(
                        **{attr: det_arrays[key][j].copy() for key, attr in _DETECTOR_ARRAYS.items()},
                        **changes[j],  # type: ignore[arg-type]
                    ),
                    **extra,
                )
            )
        exploration = None
        if meta.get("exploration") is not None:
            try:
                exploration = Exploration.from_dict(meta["exploration"])
            except (TypeError, ValueError) as exc:
                raise _bad(file, "exploration", meta["exploration"], f"{{share in [0, 1], seed}} ({exc})") from None
        state = RouterState(
            cluster_map=cmap, probes=probes, probe_assign=assign, exploration=exploration,
            shrinkage=fitted_alpha, selection=selection, profile_basis=basis,
        ).with_profiles(profiles)
    return SavedRouter(state=state, settings=settings, embedder=resolved)
