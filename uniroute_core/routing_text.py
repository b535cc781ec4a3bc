"""Which part of a long prompt the router reads: a window of the encoder's size over the text.

An encoder such as all-MiniLM-L6-v2 reads at most 256 word pieces and silently drops the rest. A retrieval-augmented
(RAG) prompt — a long retrieved context followed by the user's question — then embeds as its context alone, and two
prompts with the same context and different questions route identically. So before a prompt longer than the
encoder's window is embedded for routing, the router chooses which part of it the window covers:

* ``"head_tail"`` (the default) — the first quarter of the window from the start and the rest from the end, joined
  by a newline: the end holds the question of a context-first prompt (LlamaIndex's QA template), the start a short
  instruction or question;
* ``"tail"`` — the end of the text, cut at a token boundary;
* ``"head"`` — the start (what the encoder does by itself: the behaviour before this module).

Texts that fit the window are never changed, so short prompts (and every prompt a router was fitted on that fits)
route exactly as before. Adapters that can see the question itself (LlamaIndex query engines pass it as the
template's ``query_str``; LangChain's ``route_on`` may be a callable) route on that and need no window at all.

The default was chosen by measurement (``benchmarks/serving.py``, section 5): 150 held-out MMLU-Pro questions behind a
400-word unrelated context, routed with each window and compared with routing the question alone. ``"head_tail"`` was
the best when the question follows the context and the best on average over the two layouts; when a long question
comes first (LangChain hub's ``rlm/rag-prompt``) only ``"head"`` reads it, so route such prompts with a ``route_on``
callable (figures in ``benchmarks/README.md``).

The window is the encoder's own: :func:`encoder_window` reads the tokenizer and ``max_seq_length`` of a
sentence-transformers embedder; any other embedder may expose ``text_window`` (a :class:`TextWindow`) to opt in;
otherwise texts are passed unchanged (the embedder reads them whole, or truncates them its own way).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

__all__ = ["WINDOW_STRATEGIES", "TextWindow", "WindowStrategy", "encoder_window", "window_text", "word_window"]

WindowStrategy = Literal["tail", "head", "head_tail"]
WINDOW_STRATEGIES: tuple[str, ...] = get_args(WindowStrategy)
HEAD_SHARE = 0.25
"""In ``"head_tail"``, the share of the window given to the start of the text (the rest covers its end)."""

_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class TextWindow:
    """An encoder's input window: how many tokens it reads and where each token of a text lies.

    Attributes:
        max_tokens: tokens the encoder reads (special tokens excluded).
        token_spans: ``text -> [(start, end), ...]`` character offsets of the text's tokens, in order.
    """

    max_tokens: int
    token_spans: Callable[[str], Sequence[tuple[int, int]]]

    def __post_init__(self) -> None:
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 2:
            raise ValueError(f"TextWindow.max_tokens must be an integer >= 2, got {self.max_tokens!r}")


def word_window(max_words: int) -> TextWindow:
    """A window counting white-space separated words (for embedders without a tokenizer, and for tests)."""
    return TextWindow(max_words, lambda text: [m.span() for m in _WORD.finditer(text)])


def _sentence_transformer_window(model: Any) -> TextWindow | None:
    tokenizer = getattr(model, "tokenizer", None)
    max_len = getattr(model, "max_seq_length", None)
    if tokenizer is None or not isinstance(max_len, int) or not getattr(tokenizer, "is_fast", False):
        return None  # offsets need a fast (Rust) tokenizer; without one the text is passed unchanged
    n_special = len(tokenizer("")["input_ids"])  # [CLS] and [SEP] for BERT-like encoders

    def spans(text: str) -> list[tuple[int, int]]:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False)
        return [(int(a), int(b)) for a, b in enc["offset_mapping"]]

    return TextWindow(max(2, max_len - n_special), spans)


def encoder_window(embedder: Any) -> TextWindow | None:
    """The input window of ``embedder``, or ``None`` when it is unknown (texts are then routed as given).

    An embedder's own ``text_window`` attribute wins; a :class:`~uniroute_core.embedding.SentenceTransformerEmbedder`
    gives its model's tokenizer and ``max_seq_length`` (loading the model if it is not loaded yet).
    """
    own = getattr(embedder, "text_window", None)
    if isinstance(own, TextWindow):
        return own
    from .embedding import SentenceTransformerEmbedder

    if isinstance(embedder, SentenceTransformerEmbedder):
        return _sentence_transformer_window(embedder.model)
    return None


def window_text(text: str, window: TextWindow | None, strategy: WindowStrategy = "head_tail") -> str:
    """The part of ``text`` the encoder should read: ``text`` itself when it fits ``window`` (or no window is known).

    ``strategy`` is ``"head_tail"`` (default: a quarter of the window from the start, the rest from the end),
    ``"tail"`` (the end of the text) or ``"head"`` (its start). Cuts fall on token boundaries of the encoder's own
    tokenizer, so the result fits the window and is a substring (or two joined substrings) of ``text``.
    """
    if strategy not in WINDOW_STRATEGIES:
        raise ValueError(f"window strategy must be one of {list(WINDOW_STRATEGIES)}, got {strategy!r}")
    if window is None:
        return text
    spans = window.token_spans(text)
    n, limit = len(spans), window.max_tokens
    if n <= limit:
        return text
    if strategy == "head":
        return text[: spans[limit - 1][1]]
    if strategy == "tail":
        return text[spans[n - limit][0] :]
    n_head = max(1, int(limit * HEAD_SHARE))
    n_tail = limit - n_head - 1  # one token's room for the joining newline
    return text[: spans[n_head - 1][1]] + "\n" + text[spans[n - n_tail][0] :]
