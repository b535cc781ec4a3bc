"""Shipped vectors: the default embedder's embeddings of the bundled prompts, read instead of running the encoder.

On 2 CPU cores the packaged all-MiniLM-L6-v2 needs 5 to 11 minutes to embed the 10,279 bundled MMLU-Pro prompts, which
used to be most of a fresh clone's first run. Each bundled data set may therefore carry a table
``vectors-<embedder>.npz`` of float16 vectors (built by ``scripts/build_shipped_vectors.py``), which
:class:`~uniroute_core.embedding.SentenceTransformerEmbedder` consults before its encoder — transparently, for any
caller (the router, ``uniroute eval``, the examples).

A shipped vector is used ONLY when all of these hold, otherwise the text goes to the encoder as before:

* the embedder's name is the table's embedder name (``all-MiniLM-L6-v2``);
* the embedder's model files hash to the table's *fingerprint* (SHA-256 over the weights, configuration and
  tokenizer files), so another model that merely carries the same name never gets these vectors;
* the text's SHA-256 is one of the table's keys (the exact text that was embedded, byte for byte).

The table is read with ``allow_pickle=False`` and checked (shapes, key width, finite values); a damaged or foreign
file is ignored with a warning, never trusted. float16 keeps 3 significant digits of unit-norm vectors (max error
~5e-4 per coordinate), which leaves routing results unchanged (see the README's note on the first run).
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "FORMAT",
    "ShippedVectors",
    "model_fingerprint",
    "shipped_vectors_file",
    "shipped_tables",
    "lookup_shipped",
    "text_key",
]

FORMAT = "uniroute-shipped-vectors/1"
_MODEL_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "config.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
    "1_Pooling/config.json",
)
"""Files whose bytes define what a sentence-transformers folder computes (hashed into its fingerprint)."""


def text_key(text: str) -> bytes:
    """The 32-byte SHA-256 of a text's UTF-8 bytes: the key a shipped vector is stored under."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def shipped_vectors_file(embedder_name: str) -> str:
    """The file name a bundled data set's table for ``embedder_name`` has (``vectors-all-MiniLM-L6-v2.npz``)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in embedder_name)
    return f"vectors-{safe}.npz"


_fingerprints: dict[tuple[str, tuple[tuple[str, int, int], ...]], str | None] = {}
_fingerprint_lock = threading.Lock()


def model_fingerprint(model_dir: str | os.PathLike[str]) -> str | None:
    """SHA-256 over a sentence-transformers folder's weight, configuration and tokenizer files, or ``None``.

    ``None`` when ``model_dir`` is not a local folder with weights (e.g. a hub name): such an embedder never uses
    shipped vectors. Computed once per process per (folder, file sizes and modification times).
    """
    folder = Path(model_dir)
    if not folder.is_dir():
        return None
    present = [(name, folder / name) for name in _MODEL_FILES if (folder / name).is_file()]
    if not any(name in ("model.safetensors", "pytorch_model.bin") for name, _ in present):
        return None
    stamp = tuple((name, p.stat().st_size, p.stat().st_mtime_ns) for name, p in present)
    key = (str(folder.resolve()), stamp)
    with _fingerprint_lock:
        if key in _fingerprints:
            return _fingerprints[key]
    total = hashlib.sha256()
    for name, path in present:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        total.update(f"{name}\0{digest.hexdigest()}\n".encode())
    result = total.hexdigest()
    with _fingerprint_lock:
        _fingerprints[key] = result
    return result


@dataclass(frozen=True)
class ShippedVectors:
    """One read-only table: text SHA-256 → float16 vector, for one embedder (name + model fingerprint).

    Attributes:
        embedder: the embedder name the vectors were computed with.
        fingerprint: :func:`model_fingerprint` of that embedder's model folder.
        vectors: ``(n, d)`` float16 vectors.
        rows: text key (32-byte SHA-256) → row of :attr:`vectors`.
        source: the file the table was read from (for messages).
    """

    embedder: str
    fingerprint: str
    vectors: np.ndarray
    rows: dict[bytes, int]
    source: str

    @property
    def dimension(self) -> int:
        """Embedding width d."""
        return int(self.vectors.shape[1])

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ShippedVectors:
        """Read and check a table written by :func:`save_shipped_vectors` (``ValueError`` naming what is wrong)."""
        path = Path(path)
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("format", "embedder", "fingerprint", "keys", "vectors") if k not in z.files]
            if missing:
                raise ValueError(f"{path}: not a shipped-vectors table (missing {missing})")
            fmt = str(z["format"])
            if fmt != FORMAT:
                raise ValueError(f"{path}: format {fmt!r}, expected {FORMAT!r}")
            keys = np.asarray(z["keys"])
            vectors = np.asarray(z["vectors"])
            embedder, fingerprint = str(z["embedder"]), str(z["fingerprint"])
        if keys.dtype != np.uint8 or keys.ndim != 2 or keys.shape[1] != 32:
            raise ValueError(
                f"{path}: keys must be an (n, 32) uint8 array of SHA-256 digests, got {keys.dtype} {keys.shape}"
            )
        if vectors.ndim != 2 or vectors.shape[0] != keys.shape[0] or vectors.shape[1] < 1:
            raise ValueError(f"{path}: vectors have shape {vectors.shape}; expected ({keys.shape[0]}, d)")
        if vectors.dtype not in (np.float16, np.float32):
            raise ValueError(f"{path}: vectors must be float16 or float32, got {vectors.dtype}")
        if not np.all(np.isfinite(vectors)):
            raise ValueError(f"{path}: vectors hold NaN or infinite values")
        rows = {bytes(k): i for i, k in enumerate(keys)}
        if len(rows) != len(keys):
            raise ValueError(f"{path}: duplicate text keys")
        vectors.setflags(write=False)
        return cls(embedder=embedder, fingerprint=fingerprint, vectors=vectors, rows=rows, source=str(path))


def save_shipped_vectors(
    path: str | os.PathLike[str], *, embedder: str, fingerprint: str, texts: Sequence[str], vectors: np.ndarray
) -> Path:
    """Write a table for ``texts`` (unique) and their ``vectors`` as float16, atomically (temp file + rename)."""
    path = Path(path)
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape[0] != len(texts) or vectors.ndim != 2:
        raise ValueError(f"{len(texts)} texts but vectors of shape {vectors.shape}")
    keys = np.frombuffer(b"".join(text_key(t) for t in texts), dtype=np.uint8).reshape(len(texts), 32)
    if len({bytes(k) for k in keys}) != len(texts):
        raise ValueError("texts must be unique")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(
            fh,
            format=np.array(FORMAT),
            embedder=np.array(embedder),
            fingerprint=np.array(fingerprint),
            keys=keys,
            vectors=vectors.astype(np.float16),
        )
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


_tables: dict[str, list[ShippedVectors]] = {}
_tables_lock = threading.Lock()


def shipped_tables(embedder_name: str) -> list[ShippedVectors]:
    """Every bundled data set's table for ``embedder_name`` (loaded once per process; bad files warned and skipped)."""
    with _tables_lock:
        if embedder_name in _tables:
            return _tables[embedder_name]
    from . import BUNDLED_DATASETS, bundled_dataset_path

    found: list[ShippedVectors] = []
    for name in BUNDLED_DATASETS:
        try:
            file = bundled_dataset_path(name) / shipped_vectors_file(embedder_name)
        except (KeyError, FileNotFoundError):
            continue
        if not file.is_file():
            continue
        try:
            table = ShippedVectors.load(file)
        except (ValueError, OSError) as exc:
            warnings.warn(f"ignoring shipped vectors {file}: {exc}", RuntimeWarning, stacklevel=2)
            continue
        if table.embedder != embedder_name:
            warnings.warn(
                f"ignoring shipped vectors {file}: made with embedder {table.embedder!r}, not {embedder_name!r}",
                RuntimeWarning,
                stacklevel=2,
            )
            continue
        found.append(table)
    with _tables_lock:
        _tables[embedder_name] = found
    return found


def lookup_shipped(
    embedder_name: str, model_dir: str | os.PathLike[str] | None, texts: Sequence[str]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Shipped vectors for ``texts``: ``(hit_mask, vectors_of_hits as float32)``, or ``None`` when none apply.

    Only tables whose embedder name equals ``embedder_name`` AND whose fingerprint equals
    :func:`model_fingerprint` of ``model_dir`` are consulted; each text is matched by its SHA-256.
    """
    tables = shipped_tables(embedder_name)
    if not tables or model_dir is None or not texts:
        return None
    fingerprint = model_fingerprint(model_dir)
    tables = [t for t in tables if t.fingerprint == fingerprint]
    if not tables:
        return None
    dims = {t.dimension for t in tables}
    if len(dims) != 1:
        return None
    hit = np.zeros(len(texts), dtype=bool)
    out = np.zeros((len(texts), dims.pop()), dtype=np.float32)
    for i, text in enumerate(texts):
        key = text_key(text)
        for table in tables:
            row = table.rows.get(key)
            if row is not None:
                hit[i] = True
                out[i] = table.vectors[row]
                break
    if not hit.any():
        return None
    return hit, out[hit]
