"""A static (token-table) embedder: ``embedder="fast"`` — about two orders of magnitude faster than MiniLM on a CPU.

A static embedding model is a table with one vector per tokenizer token; a text's vector is the mean of its tokens'
vectors, L2-normalised (like the default all-MiniLM-L6-v2, whose vectors have unit length). No neural network runs
at inference: embedding is a tokenizer call plus a table look-up, so a 2-core machine embeds thousands of prompts
per second and one prompt in well under a millisecond (figures: ``benchmarks/scale.py``, README).

The packaged fast model is WordLlama ``l2_supercat`` at 256 dimensions, whose weights (16 MB, float16) and
tokenizer ship inside the PyPI wheel ``wordllama``. Its own loader (``WordLlama.load``) looks for the tokenizer
in ``wordllama/tokenizer/`` while the wheel ships it in ``wordllama/tokenizers/``, then tries a download, and
importing the ``wordllama`` package configures the root logger. So this module never imports ``wordllama``: it finds
the package folder with :func:`importlib.util.find_spec` (which runs none of its code) and reads the two files
directly with ``safetensors`` and ``tokenizers`` — offline by construction, nothing is ever downloaded.

Vectors are deterministic and independent of batching: each text is tokenized on its own (no padding) and its
token rows are summed by themselves, so a prompt gets bit-identical vectors alone, in any batch, in any process
(which is what lets the Ray path reproduce the in-process decisions exactly).
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from ._batching import embed_unique

__all__ = [
    "FAST_EMBEDDER_ALIASES",
    "FAST_EMBEDDER_NAME",
    "StaticEmbedder",
    "fast_embedder",
    "wordllama_files",
]

FAST_EMBEDDER_NAME = "wordllama-l2-256"
"""The name recorded in caches and saved routers for the packaged fast embedder."""

FAST_EMBEDDER_ALIASES: frozenset[str] = frozenset({"fast", FAST_EMBEDDER_NAME})
"""Names that ``resolve_embedder`` maps to :func:`fast_embedder`."""

_WORDLLAMA_WEIGHTS = ("weights", "l2_supercat_256.safetensors")
_WORDLLAMA_TOKENIZER = ("tokenizers", "l2_supercat_tokenizer_config.json")


def wordllama_files() -> tuple[Path, Path]:
    """Paths of the packaged WordLlama ``l2_supercat`` 256-d weights and tokenizer, found without importing it.

    Raises:
        ImportError: the ``wordllama`` package is not installed.
        FileNotFoundError: it is installed but a file is missing (a wheel without the packaged model).
    """
    spec = importlib.util.find_spec("wordllama")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "embedder='fast' needs the package 'wordllama' (pip install wordllama), which ships the static "
            "embedding weights and tokenizer"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    weights, tokenizer = root.joinpath(*_WORDLLAMA_WEIGHTS), root.joinpath(*_WORDLLAMA_TOKENIZER)
    for path, what in ((weights, "weights"), (tokenizer, "tokenizer")):
        if not path.is_file():
            raise FileNotFoundError(
                f"the installed 'wordllama' package has no packaged {what} file at {str(path)!r}; "
                "reinstall it from the PyPI wheel (pip install --force-reinstall wordllama)"
            )
    return weights, tokenizer


class StaticEmbedder:
    """Mean of token vectors from a static table, L2-normalised; loaded lazily, thread-safe, offline.

    Args:
        weights_path: a ``.safetensors`` file holding the ``(vocab, d)`` token table under ``tensor_key``.
        tokenizer_path: a Hugging Face ``tokenizers`` JSON file whose token ids index that table.
        name: the name recorded in caches and saved routers (required: it identifies the vectors).
        tensor_key: the table's key inside the safetensors file.
        batch_size: texts per tokenizer call (does not change the vectors).
        normalize: L2-normalise each vector (default, as the default embedder does).
    """

    kind = "static"

    def __init__(
        self,
        weights_path: str | os.PathLike[str],
        tokenizer_path: str | os.PathLike[str],
        *,
        name: str,
        tensor_key: str = "embedding.weight",
        batch_size: int = 512,
        normalize: bool = True,
    ) -> None:
        if not name:
            raise ValueError("a StaticEmbedder needs a name: it is what caches and saved routers record")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.weights_path = Path(weights_path)
        self.tokenizer_path = Path(tokenizer_path)
        self.name = name
        self.tensor_key = tensor_key
        self.batch_size = int(batch_size)
        self.normalize = bool(normalize)
        self._table: np.ndarray | None = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _load(self) -> tuple[np.ndarray, Any]:
        if self._table is None:
            with self._lock:
                if self._table is None:
                    from safetensors import safe_open
                    from tokenizers import Tokenizer

                    for path, what in ((self.weights_path, "weights"), (self.tokenizer_path, "tokenizer")):
                        if not path.is_file():
                            raise FileNotFoundError(
                                f"static embedder {self.name!r}: {what} file {str(path)!r} not found"
                            )
                    with safe_open(str(self.weights_path), framework="np") as f:
                        stored = list(f.keys())
                        if self.tensor_key not in stored:
                            raise ValueError(
                                f"static embedder {self.name!r}: {str(self.weights_path)!r} has no tensor "
                                f"{self.tensor_key!r} (it has {sorted(stored)})"
                            )
                        # float32 in memory (the file holds float16): 2× the RAM, many times faster sums
                        table = np.ascontiguousarray(f.get_tensor(self.tensor_key), dtype=np.float32)
                    if table.ndim != 2 or not np.issubdtype(table.dtype, np.floating):
                        raise ValueError(
                            f"static embedder {self.name!r}: the token table must be a 2-D float array, got "
                            f"{table.dtype} of shape {table.shape}"
                        )
                    tokenizer = Tokenizer.from_file(str(self.tokenizer_path))
                    tokenizer.no_padding()
                    tokenizer.no_truncation()
                    self._tokenizer = tokenizer
                    self._table = table  # set last: other threads test it without the lock
        assert self._tokenizer is not None
        return self._table, self._tokenizer

    @property
    def dimension(self) -> int:
        """Embedding width d."""
        return int(self._load()[0].shape[1])

    def encode_batch(self, batch: list[str]) -> np.ndarray:
        """Embed one batch exactly as given → ``(len(batch), d)`` float32 (no de-duplication).

        Token ids outside the table (a tokenizer larger than the table) are clipped to the last row, as WordLlama's
        own inference does. A text with no token gets the zero vector.
        """
        table, tokenizer = self._load()
        encodings = tokenizer.encode_batch(list(batch), add_special_tokens=False)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        ids = np.fromiter((i for e in encodings for i in e.ids), dtype=np.int64, count=int(lengths.sum()))
        np.clip(ids, 0, table.shape[0] - 1, out=ids)
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        # token counts (n × vocab, CSR) @ table: each row is summed over its own tokens only, in token order, so
        # a text's vector does not depend on the rest of the batch (and no (tokens × d) matrix is materialised)
        counts = scipy.sparse.csr_matrix(
            (np.ones(len(ids), dtype=np.float32), ids, indptr), shape=(len(encodings), table.shape[0])
        )
        out = np.asarray(counts @ table, dtype=np.float32)
        nonempty = lengths > 0
        out[nonempty] /= lengths[nonempty, None].astype(np.float32)
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            np.divide(out, norms, out=out, where=norms > 0)
        return out

    def embed(self, texts: Sequence[str], *, show_progress: bool = True) -> np.ndarray:
        """Embed ``texts`` → ``(n, d)`` float32 unit vectors; each unique text is encoded once."""
        return embed_unique(
            self.encode_batch, texts, batch_size=self.batch_size, show_progress=show_progress,
            desc=f"embed ({self.name})",
        )

    def __repr__(self) -> str:
        return f"StaticEmbedder({self.name!r})"


def fast_embedder(**kwargs: Any) -> StaticEmbedder:
    """The packaged fast embedder: WordLlama ``l2_supercat``, 256-d, from the ``wordllama`` wheel, offline.

    Keyword arguments go to :class:`StaticEmbedder` (e.g. ``batch_size``). Its name is :data:`FAST_EMBEDDER_NAME`,
    so a router saved with it reloads it with ``UniRouter.load(path)`` and caches keep its vectors apart.
    """
    weights, tokenizer = wordllama_files()
    kwargs.setdefault("name", FAST_EMBEDDER_NAME)
    return StaticEmbedder(weights, tokenizer, **kwargs)
