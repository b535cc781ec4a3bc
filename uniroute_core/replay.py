"""Replay real models' recorded answers: offline stand-ins for LLMs, driven by a routing data folder.

A routing data folder with a ``response`` column (e.g. ``mmlu_pro``) records what each real LLM answered on each
prompt. :class:`ReplayBook` looks a prompt up by its text and answers as that model did, in a sentence
("The answer is (C).") so that graders see free text as from a live model. An unknown prompt is an
:class:`UnknownPromptError`, never an invented answer. The LangChain and LlamaIndex adapters wrap a book into chat
models in their ``testing`` modules; examples and benchmarks use those to run whole pipelines with no network.

A few folders hold the same prompt text under two ids with different recorded answers; the book replays the first
occurrence and lists such texts in :attr:`ReplayBook.ambiguous_prompts`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .data import RoutingData, load_routing_data

__all__ = ["ReplayBook", "UnknownPromptError", "NO_ANSWER_TEXT", "format_answer"]

NO_ANSWER_TEXT = "I am not able to answer this question."
"""What a replayed model says where its recorded answer is blank (it gave none): graded as wrong."""


class UnknownPromptError(KeyError):
    """The replayed model has no recorded answer for this prompt."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "unknown prompt"


def format_answer(response: str) -> str:
    """A recorded answer as a model would say it: ``"C"`` → ``"The answer is (C)."``; blank → :data:`NO_ANSWER_TEXT`."""
    response = (response or "").strip()
    if not response:
        return NO_ANSWER_TEXT
    if len(response) == 1 and response.isalpha():
        return f"The answer is ({response.upper()})."
    return f"The answer is {response}."


@dataclass(frozen=True)
class ReplayBook:
    """Recorded answers (and scores) of real models, looked up by prompt text.

    Attributes:
        data: the routing data the answers come from (must have a ``response`` column).
        ambiguous_prompts: texts that occur under several ids with different recorded answers or scores.
    """

    data: RoutingData
    _row: dict[str, int] = field(repr=False, compare=False)
    ambiguous_prompts: frozenset[str] = field(default=frozenset(), repr=False)

    @classmethod
    def from_routing_data(cls, source: str | os.PathLike[str] | RoutingData) -> ReplayBook:
        """Build a book from a routing data folder (or an already loaded :class:`RoutingData`)."""
        data = source if isinstance(source, RoutingData) else load_routing_data(source)
        if data.responses is None:
            raise ValueError(
                f"routing data {data.name!r} has no 'response' column in scores.csv.gz, so there is nothing to replay"
            )
        row: dict[str, int] = {}
        ambiguous: set[str] = set()
        for i, text in enumerate(data.prompts):
            first = row.setdefault(text, i)
            if first != i and (
                (data.responses[first] != data.responses[i]).any() or (data.scores[first] != data.scores[i]).any()
            ):
                ambiguous.add(text)
        return cls(data=data, _row=row, ambiguous_prompts=frozenset(ambiguous))

    @property
    def models(self) -> list[str]:
        """Models whose answers can be replayed."""
        return list(self.data.models)

    def cost(self, model: str) -> float:
        """The model's per-call cost from ``models.csv``."""
        return float(self.data.costs[self.data.model_index(model)])

    def _index(self, prompt: str) -> int:
        try:
            return self._row[prompt]
        except KeyError:
            short = prompt if len(prompt) < 80 else prompt[:77] + "..."
            raise UnknownPromptError(
                f"no recorded answer for prompt {short!r} in {self.data.name!r}: a replayed model only knows the "
                "prompts of its data folder"
            ) from None

    def knows(self, prompt: str) -> bool:
        """Whether the prompt text is in the book."""
        return prompt in self._row

    def recorded_response(self, model: str, prompt: str) -> str:
        """The model's raw recorded answer (e.g. ``"C"``; ``""`` when it gave none)."""
        return str(self.data.responses[self._index(prompt), self.data.model_index(model)])  # type: ignore[index]

    def answer(self, model: str, prompt: str) -> str:
        """What ``model`` answered on ``prompt``, as a sentence (see :func:`format_answer`)."""
        return format_answer(self.recorded_response(model, prompt))

    def recorded_scores(self, model: str, prompts: Sequence[str]) -> np.ndarray:
        """The model's recorded scores on ``prompts`` (the occurrence that :meth:`answer` replays)."""
        j = self.data.model_index(model)
        return np.array([self.data.scores[self._index(p), j] for p in prompts], dtype=float)

    def reference(self, prompt: str) -> str:
        """The gold answer of ``prompt`` (``""`` when the folder has no ``reference`` column)."""
        refs = self.data.references
        return "" if refs is None else refs[self._index(prompt)]
