"""Shared by the LlamaIndex adapter tests (imported by tests/test_llamaindex_*.py): a tiny two-topic pool and an
instrumentation event log.

The router is fitted with the fast bag-of-words test embedder on "math …" and "law …" prompts (two clusters, no
shrinkage), so expected routes can be worked out by hand. "small" (cost 1) is right on every math probe and wrong
on every law probe; "big" (cost 10) is right on all but one law probe. Normalised costs are 0.1 and 1, so with
λ = 0.3: math → small (loss 0 + 0.03 < 0 + 0.3) and law → big (0.25 + 0.3 < 1 + 0.03); small takes law too once
λ > 0.75 / 0.9 ≈ 0.83.
"""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent

from uniroute_core import ProbeSet, UniRouter

TRAIN = [f"math question number {i}" for i in range(15)] + [f"law question number {i}" for i in range(15)]
PROBES = [f"math probe {i}" for i in range(6)] + [f"law probe {i}" for i in range(4)]
SMALL_SCORES = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
BIG_SCORES = [1, 1, 1, 1, 1, 1, 1, 1, 1, 0]
MATH = "math question about numbers"
LAW = "law question about contracts"


def two_topic_router(embedder) -> UniRouter:
    """small/big as described above; probes are graded by exact match against the probe text itself."""
    router = UniRouter(embedder=embedder, n_clusters=2, shrinkage=0.0, show_progress=False).fit(TRAIN)
    router.set_probes(ProbeSet(prompts=PROBES, references=PROBES, grader="exact"))
    router.add_model("small", cost=1.0, scores=SMALL_SCORES)
    router.add_model("big", cost=10.0, scores=BIG_SCORES)
    return router


class EventLog(BaseEventHandler):
    """Collects instrumentation events (attached to the root dispatcher, so it sees every LLM's events)."""

    events: list[BaseEvent] = []

    @classmethod
    def class_name(cls) -> str:
        return "EventLog"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list:
        """The events of this type, in order."""
        return [e for e in self.events if isinstance(e, kind)]

    def count(self, kind: type) -> int:
        return len(self.of(kind))


@pytest.fixture
def event_log():
    """An :class:`EventLog` attached to the root dispatcher for the duration of a test."""
    log = EventLog(events=[])
    root = get_dispatcher()
    root.add_event_handler(log)
    yield log
    root.event_handlers.remove(log)
