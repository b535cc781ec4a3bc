"""Batching shared by every embedder: validate the texts, embed each unique text once, scatter rows back.

A leaf module (no project imports), so both :mod:`uniroute_core.embedding` and :mod:`uniroute_core.static_embedding`
build on it without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

__all__ = ["PROGRESS_THRESHOLD", "embed_unique", "validate_texts"]

PROGRESS_THRESHOLD = 256
"""Show a progress bar when a call embeds more unique texts than this."""


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


def embed_unique(
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
