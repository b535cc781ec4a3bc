"""record_feedback on both adapters, through the same scenarios (issue 14).

Pool (tests/llamaindex_helpers.py, no shrinkage): "small" is right on every math probe and wrong on every law probe;
"big" is right on all but one of the 4 law probes, so big's law Ψ = 3/4. At λ = 0.3 a law prompt goes to big
(loss 0.25 + 0.3 < 1 + 0.03). Feedback 0 on n served law calls makes big's law Ψ = 3 / (4 + n); big loses law to
small once 1 − 3/(4 + n) + 0.3 > 1.03, i.e. from n = 8 on.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import numpy as np
import pytest
from langchain_core.messages import HumanMessage
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llamaindex_helpers import LAW, MATH, two_topic_router

from uniroute_core.feedback import UnknownCallError
from uniroute_core.router import FeedbackWarning
from uniroute_langchain import ChatUniRoute
from uniroute_langchain.testing import FakeToolCallingChatModel
from uniroute_llamaindex import UniRouteLLM
from uniroute_llamaindex.testing import ScriptedLLM


class LangChainSide:
    name = "langchain"

    def __init__(self, router: Any) -> None:
        members = {"small": FakeToolCallingChatModel(model_name="s"), "big": FakeToolCallingChatModel(model_name="b")}
        self.model = ChatUniRoute(router=router, members=members, lam=0.3)

    def ask(self, text: str) -> Any:
        return self.model.invoke([HumanMessage(content=text)])

    async def aask(self, text: str) -> Any:
        return await self.model.ainvoke([HumanMessage(content=text)])

    def ask_with_id(self, text: str) -> tuple[Any, Any]:
        """A call and the id callbacks/LangSmith know it by (its run id)."""
        run_id = uuid.uuid4()
        return self.model.invoke([HumanMessage(content=text)], config={"run_id": run_id}), run_id

    @staticmethod
    def record(response: Any) -> dict[str, Any]:
        return response.response_metadata["uniroute"]


class LlamaIndexSide:
    name = "llamaindex"

    def __init__(self, router: Any) -> None:
        members = {
            "small": ScriptedLLM(answer_fn=lambda p: f"small: {p}"),
            "big": ScriptedLLM(answer_fn=lambda p: f"big: {p}"),
        }
        self.model = UniRouteLLM(router=router, members=members, lam=0.3)

    def ask(self, text: str) -> Any:
        return self.model.chat([ChatMessage(role=MessageRole.USER, content=text)])

    async def aask(self, text: str) -> Any:
        return await self.model.achat([ChatMessage(role=MessageRole.USER, content=text)])

    def ask_with_id(self, text: str) -> tuple[Any, Any]:
        response = self.ask(text)
        return response, self.record(response)["call_id"]

    @staticmethod
    def record(response: Any) -> dict[str, Any]:
        return response.additional_kwargs["uniroute"]


@pytest.fixture(params=[LangChainSide, LlamaIndexSide], ids=["langchain", "llamaindex"])
def side(request, embedder):
    return request.param(two_topic_router(embedder))


def test_negative_feedback_moves_traffic_off_a_member(side):
    first = side.ask(LAW)
    assert side.record(first)["member"] == "big" and side.record(first)["exploratory"] is False
    profile = side.model.record_feedback(first, 0.0)
    assert profile.name == "big" and profile.n_observations == 1 and profile.live_weight == pytest.approx(1.0)
    for _ in range(6):
        side.model.record_feedback(side.ask(LAW), 0.0)
    assert side.record(side.ask(LAW))["member"] == "big"  # 7 bad answers: 3/11 is still just good enough
    side.model.record_feedback(side.ask(LAW), 0.0)
    assert side.record(side.ask(LAW))["member"] == "small"  # the 8th tips it, as worked out above
    assert side.record(side.ask(MATH))["member"] == "small"  # the other cluster is untouched
    big = side.model.router.profiles["big"]
    assert big.n_observations == 8 and big.probe_weight == 10


def test_feedback_by_run_id_or_call_id_and_async_calls(side):
    response, call_key = side.ask_with_id(LAW)
    profile = side.model.record_feedback(call_key, 1.0)
    assert profile is not None and profile.name == side.record(response)["member"]
    response = asyncio.run(side.aask(MATH))
    assert side.model.record_feedback(response, 1.0).name == side.record(response)["member"] == "small"


def test_bad_feedback_is_a_clear_error_and_a_removed_member_is_ignored(side):
    response = side.ask(LAW)
    with pytest.raises(UnknownCallError, match="no served call with id 'no-such-call' is known here"):
        side.model.record_feedback("no-such-call", 1.0)
    with pytest.raises(ValueError, match=r"feedback for 'big': score must lie in \[0, 1\]"):
        side.model.record_feedback(response, 1.5)
    with pytest.raises(TypeError):
        side.model.record_feedback(12345, 1.0)
    before = side.model.router.state
    side.model.remove_model("big")
    with pytest.warns(FeedbackWarning, match=r"\['big'\] ignored: not in the pool"):
        assert side.model.record_feedback(response, 0.0) is None
    assert side.model.router.state.pool == ("small",) and before.pool == ("small", "big")


def test_feedback_uses_the_embedding_the_call_was_routed_on(side):
    response = side.ask(LAW)
    side.model.record_feedback(response, 0.0)
    router = side.model.router
    expected = two_topic_router(router.embedder)  # the same pool, fed back directly through the core
    expected.observe(LAW, "big", 0.0)
    np.testing.assert_allclose(router.profiles["big"].cluster_quality, expected.profiles["big"].cluster_quality)


def test_record_feedback_drives_change_detection(side):
    """With ChangeDetection on the router, feedback recorded through either adapter is tested like core feedback:
    one wrong math answer of small (right on all 6 math probes) judged with weight 5 is a change in the math
    cluster — logged in change_events, counted, small's stale math evidence discounted to 1 pseudo-observation (α = 0
    here), its 4 law probes kept — and math moves to big; the law cluster's routing is untouched."""
    from uniroute_core import ChangeDetection

    router = side.model.router
    router.change_detection = ChangeDetection()
    response = side.ask(MATH)
    assert side.record(response)["member"] == "small"
    side.model.record_feedback(response, 0.0, weight=5.0)
    assert [(e.member, e.level, len(e.clusters)) for e in router.change_events] == [("small", "cluster", 1)]
    small = router.profiles["small"]
    assert small.n_changes == 1 and small.probe_weight == pytest.approx(1.0 + 4.0)
    assert side.record(side.ask(MATH))["member"] == "big"
    assert side.record(side.ask(LAW))["member"] == "big"
