"""UniRouteLLM as a LlamaIndex LLM: every call style, the uniroute record, one event per call, routing, tools,
context windows, fallback, adding members, and clear errors. Offline: Mock members and uniroute_llamaindex.testing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, CompletionResponse, MessageRole, ToolCallBlock
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionStartEvent,
)
from llama_index.core.llms import MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.tools import FunctionTool
from llamaindex_helpers import LAW, MATH, event_log, two_topic_router  # noqa: F401 - event_log is a fixture

from uniroute_core import ProfilingError
from uniroute_core.delegation import AllMembersFailedError, MemberMismatchError
from uniroute_llamaindex import UniRouteLLM
from uniroute_llamaindex.testing import FailingLLM, ScriptedLLM


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.USER, content=text)]


def answered_by(name: str) -> ScriptedLLM:
    """A member whose answer names it, so a test can see who answered."""
    return ScriptedLLM(answer_fn=lambda prompt: f"{name} answers: {prompt}")


@pytest.fixture
def router(embedder):
    return two_topic_router(embedder)


@pytest.fixture
def llm(router):
    return UniRouteLLM(router=router, members={"small": answered_by("small"), "big": answered_by("big")}, lam=0.3)


# ============================================================================ every call style


def test_metadata_describes_the_pool(router):
    members = {
        "small": ScriptedLLM(answer_fn=str, context_window=2000),
        "big": MockFunctionCallingLLM(),
    }
    meta = UniRouteLLM(router=router, members=members).metadata
    assert meta.model_name == "uniroute"
    assert meta.context_window == 2000  # the smallest member window (MockFunctionCallingLLM has the 3900 default)
    assert meta.is_function_calling_model is True
    members["big"] = MockLLM()
    assert UniRouteLLM(router=router, members=members).metadata.is_function_calling_model is False


def test_sync_calls_route_by_topic_and_carry_the_record(llm):
    resp = llm.complete(MATH)
    assert resp.text == f"small answers: {MATH}"
    record = resp.additional_kwargs["uniroute"]
    assert record["member"] == "small" and record["cost"] == 1.0 and record["lam"] == 0.3
    assert record["fallbacks"] == [] and record["mode"] == "lam"
    assert record["expected_quality"] == pytest.approx({"small": 1.0, "big": 1.0})  # both right on every math probe

    chat = llm.chat(user(LAW))
    assert chat.message.content == f"big answers: {LAW}"
    assert chat.additional_kwargs["uniroute"]["member"] == "big"
    assert chat.additional_kwargs["uniroute"]["expected_quality"] == pytest.approx({"small": 0.0, "big": 0.75})

    chunks = list(llm.stream_chat(user(MATH)))
    assert "".join(c.delta for c in chunks) == f"small answers: {MATH}"
    assert all(c.additional_kwargs["uniroute"]["member"] == "small" for c in chunks) and len(chunks) > 1

    chunks = list(llm.stream_complete(LAW))
    assert chunks[-1].text == f"big answers: {LAW}"
    assert {c.additional_kwargs["uniroute"]["member"] for c in chunks} == {"big"}


async def test_async_calls_route_by_topic_and_carry_the_record(llm):
    resp = await llm.acomplete(LAW)
    assert resp.text == f"big answers: {LAW}" and resp.additional_kwargs["uniroute"]["member"] == "big"
    chat = await llm.achat(user(MATH))
    assert chat.message.content == f"small answers: {MATH}"
    assert chat.additional_kwargs["uniroute"]["member"] == "small"

    chunks = [c async for c in await llm.astream_chat(user(LAW))]
    assert "".join(c.delta for c in chunks) == f"big answers: {LAW}"
    assert {c.additional_kwargs["uniroute"]["member"] for c in chunks} == {"big"}
    chunks = [c async for c in await llm.astream_complete(MATH)]
    assert chunks[-1].text == f"small answers: {MATH}"
    assert {c.additional_kwargs["uniroute"]["member"] for c in chunks} == {"small"}


def test_predict_and_stream_helpers_go_through_the_router(llm):
    from llama_index.core.prompts import PromptTemplate

    prompt = PromptTemplate("{topic} question about numbers")
    assert llm.predict(prompt, topic="math") == f"small answers: {MATH}"
    assert "".join(llm.stream(prompt, topic="math")) == f"small answers: {MATH}"


def test_members_keep_their_identity(router):
    small, big = MockLLM(), MockFunctionCallingLLM()
    llm = UniRouteLLM(router=router, members={"small": small, "big": big})
    assert llm.members["small"] is small and llm.members["big"] is big


# ============================================================================ routing behaviour


def test_routing_text_is_the_last_user_message_without_the_system_prompt(llm):
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content="law law law law law"),
        ChatMessage(role=MessageRole.USER, content=LAW),
        ChatMessage(role=MessageRole.ASSISTANT, content="noted"),
        ChatMessage(role=MessageRole.USER, content=MATH),
    ]
    assert llm.chat(messages).additional_kwargs["uniroute"]["member"] == "small"
    llm.route_on = "conversation"  # the earlier law turn now weighs in
    whole = [messages[0], ChatMessage(role=MessageRole.USER, content=f"{LAW} law law"), messages[3]]
    assert llm.chat(whole).additional_kwargs["uniroute"]["member"] == "big"


def test_raising_lambda_moves_traffic_to_the_cheap_member(llm):
    prompts = [MATH, LAW, "math probe 9", "law probe 9"]
    members_at = {}
    for lam in (0.0, 0.3, 2.0):
        llm.lam = lam
        members_at[lam] = [llm.complete(p).additional_kwargs["uniroute"]["member"] for p in prompts]
    assert members_at[0.3] == ["small", "big", "small", "big"]
    assert members_at[2.0] == ["small"] * 4
    cheap = [sum(m == "small" for m in members_at[lam]) for lam in (0.0, 0.3, 2.0)]
    assert cheap == sorted(cheap)


def test_min_quality_and_budget_modes(router):
    members = {"small": answered_by("small"), "big": answered_by("big")}
    strict = UniRouteLLM(router=router, members=members, min_quality=0.7)
    assert strict.complete(MATH).additional_kwargs["uniroute"]["member"] == "small"
    record = strict.complete(LAW).additional_kwargs["uniroute"]
    assert record["member"] == "big" and record["mode"] == "min_quality"
    frugal = UniRouteLLM(router=router, members=members, budget=1.0)
    record = frugal.complete(LAW).additional_kwargs["uniroute"]
    assert record["member"] == "small" and record["mode"] == "budget"


def test_add_model_profiles_a_better_cheap_member_which_then_takes_traffic(llm, router):
    # "tiny" echoes the probe, which is its reference: right on every probe, and cheaper than small.
    tiny = ScriptedLLM(answer_fn=lambda prompt: prompt)
    profile = llm.add_model("tiny", tiny, cost=0.5, show_progress=False)
    assert profile.name == "tiny" and profile.overall_quality == pytest.approx(1.0)
    assert tiny.calls == 10  # one call per probe
    assert router.models == ["small", "big", "tiny"] and llm.members["tiny"] is tiny
    for prompt in (MATH, LAW):
        record = llm.complete(prompt).additional_kwargs["uniroute"]
        assert record["member"] == "tiny" and record["cost"] == 0.5


async def test_aadd_model_profiles_with_the_async_api(llm, router):
    tiny = ScriptedLLM(answer_fn=lambda prompt: "wrong")
    profile = await llm.aadd_model("tiny", tiny, cost=0.5, show_progress=False)
    assert profile.overall_quality == 0.0 and "tiny" in router.models
    assert (await llm.acomplete(LAW)).additional_kwargs["uniroute"]["member"] == "big"


def test_add_model_that_cannot_answer_leaves_the_pool_unchanged(llm, router):
    with pytest.raises(ProfilingError, match="broken"):
        llm.add_model("broken", FailingLLM(), cost=0.1, show_progress=False, retries=0)
    assert router.models == ["small", "big"] and set(llm.members) == {"small", "big"}
    with pytest.raises(MemberMismatchError, match="already exists"):
        llm.add_model("small", MockLLM(), cost=1.0)


def test_remove_model(llm, router):
    llm.remove_model("small")
    assert router.models == ["big"] and list(llm.members) == ["big"]
    assert llm.complete(MATH).additional_kwargs["uniroute"]["member"] == "big"
    llm.remove_model("big")  # the last member may go (the rule shared with ChatUniRoute)
    with pytest.raises(MemberMismatchError, match="pool is empty"):
        llm.complete(MATH)


# ============================================================================ context windows


def test_only_members_whose_window_fits_the_prompt_are_candidates(router):
    members = {"small": ScriptedLLM(answer_fn=str, context_window=20), "big": ScriptedLLM(answer_fn=str)}
    llm = UniRouteLLM(router=router, members=members, lam=0.3)
    assert llm.complete(MATH).additional_kwargs["uniroute"]["member"] == "small"  # 7 estimated tokens
    long_math = MATH + " numbers" * 20  # ~48 tokens at 4 chars each: too long for small's 20
    record = llm.complete(long_math).additional_kwargs["uniroute"]
    assert record["member"] == "big" and set(record["expected_quality"]) == {"big"}
    # the whole conversation counts for the window, not only the routing text
    chat = [ChatMessage(role=MessageRole.SYSTEM, content="x" * 200)] + user(MATH)
    assert llm.chat(chat).additional_kwargs["uniroute"]["member"] == "big"
    llm.token_counter = lambda text: 1  # a caller's tokenizer replaces the estimate
    assert llm.complete(long_math).additional_kwargs["uniroute"]["member"] == "small"


# ============================================================================ one event per call


def test_one_instrumentation_event_per_call_as_the_router(event_log, router):
    llm = UniRouteLLM(
        router=router, members={"small": MockFunctionCallingLLM(), "big": MockFunctionCallingLLM()}, lam=0.3
    )
    llm.chat(user(MATH))
    assert event_log.count(LLMChatStartEvent) == 1 and event_log.count(LLMChatEndEvent) == 1
    assert event_log.count(LLMCompletionStartEvent) == 0
    start = next(e for e in event_log.events if isinstance(e, LLMChatStartEvent))
    end = next(e for e in event_log.events if isinstance(e, LLMChatEndEvent))
    assert start.model_dict["class_name"] == "UniRouteLLM" and start.model_dict["members"] == ["small", "big"]
    assert end.response.additional_kwargs["uniroute"]["member"] == "small"

    event_log.events.clear()
    list(llm.stream_chat(user(LAW)))
    llm.complete(MATH)
    list(llm.stream_complete(MATH))
    assert event_log.count(LLMChatStartEvent) == 1 and event_log.count(LLMChatEndEvent) == 1
    assert event_log.count(LLMCompletionStartEvent) == 2 and event_log.count(LLMCompletionEndEvent) == 2


LLM_EVENTS = (LLMChatStartEvent, LLMChatEndEvent, LLMCompletionStartEvent, LLMCompletionEndEvent)


async def _run(method: str, llm, text: str) -> None:
    """Call ``llm.<method>`` on ``text`` (a one-message chat for chat methods) and drain any stream."""
    arg = user(text) if "chat" in method else text
    out = getattr(llm, method)(arg)
    if hasattr(out, "__await__"):
        out = await out
    if hasattr(out, "__aiter__"):
        [c async for c in out]
    elif hasattr(out, "__next__"):
        list(out)


@pytest.mark.parametrize("member_type", [MockLLM, MockFunctionCallingLLM])
@pytest.mark.parametrize(
    "method",
    ["chat", "achat", "stream_chat", "astream_chat", "complete", "acomplete", "stream_complete", "astream_complete"],
)
async def test_router_adds_no_event_to_what_the_member_fires_alone(event_log, router, member_type, method):
    """Counted per event type. Some mocks run one public method inside another (MockLLM.chat runs complete,
    MockFunctionCallingLLM.achat runs chat); those inner events fire through the router as they do directly."""
    await _run(method, member_type(), MATH)
    alone = [event_log.count(kind) for kind in LLM_EVENTS]
    assert sum(alone) >= 2
    event_log.events.clear()
    llm = UniRouteLLM(router=router, members={"small": member_type(), "big": member_type()}, lam=0.3)
    await _run(method, llm, MATH)
    assert [event_log.count(kind) for kind in LLM_EVENTS] == alone
    starts = [e for e in event_log.events if isinstance(e, (LLMChatStartEvent, LLMCompletionStartEvent))]
    assert starts[0].model_dict["class_name"] == "UniRouteLLM"  # the outer event is the router's


def test_fallback_is_still_one_event(event_log, router):
    llm = UniRouteLLM(router=router, members={"small": FailingLLM(), "big": MockFunctionCallingLLM()}, lam=0.3)
    resp = llm.chat(user(MATH))
    assert resp.additional_kwargs["uniroute"]["member"] == "big"
    assert event_log.count(LLMChatStartEvent) == 1 and event_log.count(LLMChatEndEvent) == 1


def test_legacy_callbacks_fire_once_on_the_router_and_not_on_members(router):
    router_debug, member_debug = LlamaDebugHandler(), LlamaDebugHandler()
    members = {
        "small": MockFunctionCallingLLM(callback_manager=CallbackManager([member_debug])),
        "big": MockFunctionCallingLLM(callback_manager=CallbackManager([member_debug])),
    }
    llm = UniRouteLLM(router=router, members=members, callback_manager=CallbackManager([router_debug]), lam=0.3)
    llm.chat(user(MATH))
    llm.complete(LAW)
    assert len(router_debug.get_event_pairs(CBEventType.LLM)) == 2
    assert member_debug.get_event_pairs(CBEventType.LLM) == []


# ============================================================================ tools


class RecordingToolLLM(MockFunctionCallingLLM):
    """MockFunctionCallingLLM that notes which of its tool hooks the router called."""

    hooks: list[str] = []

    def _prepare_chat_with_tools(self, tools, user_msg=None, chat_history=None, **kwargs):  # type: ignore[override]
        self.hooks.append("prepare")
        return super()._prepare_chat_with_tools(tools, user_msg=user_msg, chat_history=chat_history, **kwargs)

    def get_tool_calls_from_response(self, response, error_on_no_tool_call=False, **kwargs):  # type: ignore[override]
        self.hooks.append("get_tool_calls")
        return super().get_tool_calls_from_response(response, error_on_no_tool_call=error_on_no_tool_call)


calls: list[str] = []


def record_topic(topic: str = "math") -> str:
    """Record a topic."""
    calls.append(topic)
    return f"recorded {topic}"


@pytest.fixture
def tool():
    calls.clear()
    return FunctionTool.from_defaults(fn=record_topic)


@pytest.fixture
def tool_pool(router):
    """small is a plain (non function-calling) LLM, big calls tools."""
    return UniRouteLLM(
        router=router, members={"small": answered_by("small"), "big": RecordingToolLLM(hooks=[])}, lam=0.3
    )


def test_tool_calls_route_only_among_function_calling_members(tool_pool, tool):
    resp = tool_pool.chat_with_tools([tool], user_msg=MATH)  # math would go to small without tools
    assert resp.additional_kwargs["uniroute"]["member"] == "big"
    assert set(resp.additional_kwargs["uniroute"]["expected_quality"]) == {"big"}
    assert [b.tool_name for b in resp.message.blocks if isinstance(b, ToolCallBlock)] == ["record_topic"]
    selections = tool_pool.get_tool_calls_from_response(resp)
    assert [s.tool_name for s in selections] == ["record_topic"]
    assert tool_pool.members["big"].hooks == ["prepare", "get_tool_calls"]
    assert tool_pool.chat(user(MATH)).additional_kwargs["uniroute"]["member"] == "small"  # without tools: as before


async def test_async_and_streaming_tool_calls(tool_pool, tool):
    resp = await tool_pool.achat_with_tools([tool], user_msg=MATH)
    assert resp.additional_kwargs["uniroute"]["member"] == "big"
    chunks = list(tool_pool.stream_chat_with_tools([tool], user_msg=MATH))
    assert [s.tool_name for s in tool_pool.get_tool_calls_from_response(chunks[-1])] == ["record_topic"]
    chunks = [c async for c in await tool_pool.astream_chat_with_tools([tool], user_msg=MATH)]
    assert chunks[-1].additional_kwargs["uniroute"]["member"] == "big"
    assert tool_pool.members["big"].hooks.count("prepare") == 3


def test_predict_and_call_runs_the_tool_through_the_chosen_member(tool_pool, tool):
    out = tool_pool.predict_and_call([tool], user_msg=MATH)
    assert out.response == "recorded math" and calls == ["math"]
    assert tool_pool.members["big"].hooks == ["prepare", "get_tool_calls"]


async def test_apredict_and_call(tool_pool, tool):
    out = await tool_pool.apredict_and_call([tool], user_msg=LAW)
    assert out.response == "recorded math" and calls == ["math"]


def test_tools_need_a_function_calling_member(router, tool):
    llm = UniRouteLLM(router=router, members={"small": MockLLM(), "big": MockLLM()})
    with pytest.raises(ValueError, match="no member supports function calling"):
        llm.chat_with_tools([tool], user_msg=MATH)


def test_tool_calls_of_a_foreign_response_are_refused(tool_pool):
    foreign = MockFunctionCallingLLM().chat(user(MATH))
    with pytest.raises(ValueError, match="no 'uniroute' entry"):
        tool_pool.get_tool_calls_from_response(foreign)


def test_tool_call_falls_back_to_the_next_function_calling_member(router, tool):
    llm = UniRouteLLM(router=router, members={"small": FailingLLM(), "big": MockFunctionCallingLLM()}, lam=0.3)
    resp = llm.chat_with_tools([tool], user_msg=MATH)
    record = resp.additional_kwargs["uniroute"]
    assert record["member"] == "big" and [f["member"] for f in record["fallbacks"]] == ["small"]


# ============================================================================ fallback


@pytest.fixture
def flaky(router):
    failing = FailingLLM(error=ConnectionError("small is down"))
    # no circuit breaker: every call here must try "small" first (the breaker is tested in the conformance suite)
    return UniRouteLLM(
        router=router, members={"small": failing, "big": answered_by("big")}, lam=0.3, circuit_breaker=None
    )


def test_fallback_on_a_failing_member_is_recorded_for_every_sync_call(flaky):
    expected = [{"member": "small", "reason": "error", "error": "ConnectionError: small is down"}]
    resp = flaky.complete(MATH)
    assert resp.text == f"big answers: {MATH}"
    assert resp.additional_kwargs["uniroute"]["member"] == "big"
    assert resp.additional_kwargs["uniroute"]["fallbacks"] == expected
    assert flaky.chat(user(MATH)).additional_kwargs["uniroute"]["fallbacks"] == expected
    chunks = list(flaky.stream_chat(user(MATH)))  # the failure surfaces at the first chunk: still before any token
    assert "".join(c.delta for c in chunks) == f"big answers: {MATH}"
    assert chunks[0].additional_kwargs["uniroute"]["fallbacks"] == expected
    assert list(flaky.stream_complete(MATH))[-1].additional_kwargs["uniroute"]["fallbacks"] == expected
    assert flaky.members["small"].calls == 4
    # a prompt routed to big first never touches small
    assert flaky.complete(LAW).additional_kwargs["uniroute"]["fallbacks"] == []
    assert flaky.members["small"].calls == 4


async def test_fallback_on_a_failing_member_is_recorded_for_every_async_call(flaky):
    expected = [{"member": "small", "reason": "error", "error": "ConnectionError: small is down"}]
    assert (await flaky.acomplete(MATH)).additional_kwargs["uniroute"]["fallbacks"] == expected
    assert (await flaky.achat(user(MATH))).additional_kwargs["uniroute"]["fallbacks"] == expected
    chunks = [c async for c in await flaky.astream_chat(user(MATH))]
    assert chunks[-1].additional_kwargs["uniroute"]["fallbacks"] == expected
    chunks = [c async for c in await flaky.astream_complete(MATH)]
    assert chunks[-1].text == f"big answers: {MATH}"
    assert chunks[-1].additional_kwargs["uniroute"]["fallbacks"] == expected


async def test_all_members_failing_is_one_error_naming_each(router):
    members = {"small": FailingLLM(error=TimeoutError("slow")), "big": FailingLLM(error=ValueError("bad"))}
    llm = UniRouteLLM(router=router, members=members)
    with pytest.raises(AllMembersFailedError, match="small: TimeoutError: slow.*big: ValueError: bad|big: .*small: "):
        llm.complete(MATH)
    with pytest.raises(AllMembersFailedError) as info:
        await llm.achat(user(LAW))
    assert set(info.value.failures) == {"small", "big"}


def test_fallback_off_raises_the_members_own_error(router):
    llm = UniRouteLLM(
        router=router, members={"small": FailingLLM(error=ConnectionError("down")), "big": MockLLM()}, lam=0.3,
        fallback=False,
    )
    with pytest.raises(ConnectionError, match="down"):
        llm.complete(MATH)
    assert llm.members["small"].calls == 1


# ============================================================================ validation


def test_members_must_match_the_router_profiles(router):
    with pytest.raises(MemberMismatchError, match=r"router has profiles \['big'\] with no member"):
        UniRouteLLM(router=router, members={"small": MockLLM()})
    with pytest.raises(MemberMismatchError, match=r"members \['extra'\] have no profile"):
        UniRouteLLM(router=router, members={"small": MockLLM(), "big": MockLLM(), "extra": MockLLM()})


def test_a_member_must_be_a_llamaindex_llm(router):
    with pytest.raises(ValueError, match="big"):
        UniRouteLLM(router=router, members={"small": MockLLM(), "big": "gpt-4"})


def test_only_one_routing_target(router):
    with pytest.raises(ValueError, match="only one of lam, budget, min_quality"):
        UniRouteLLM(router=router, members={"small": MockLLM(), "big": MockLLM()}, lam=0.3, budget=2.0)


def test_router_changed_behind_the_adapters_back_is_reported(llm, router):
    router.add_model("ghost", cost=0.1, scores=[1] * 10)
    with pytest.raises(MemberMismatchError, match="ghost"):
        llm.complete(MATH)


# ============================================================================ member plumbing


def test_member_rate_limiter_is_still_honoured(router):
    class CountingLimiter:
        def __init__(self) -> None:
            self.acquired = 0

        def acquire(self) -> None:
            self.acquired += 1

        async def async_acquire(self) -> None:
            self.acquired += 1

    limiter = CountingLimiter()
    small = MockFunctionCallingLLM(rate_limiter=limiter)
    llm = UniRouteLLM(router=router, members={"small": small, "big": MockFunctionCallingLLM()}, lam=0.3)
    llm.chat(user(MATH))
    llm.complete(MATH)
    assert limiter.acquired == 2


def test_a_member_method_without_llamaindex_wrappers_is_called_as_is():
    from uniroute_llamaindex._undecorated import undecorated_method

    class Plain:
        def chat(self, messages):
            return ("plain", messages)

    assert undecorated_method(Plain(), "chat")("hi") == ("plain", "hi")
    mock = MockFunctionCallingLLM()
    inner = undecorated_method(mock, "chat")
    assert inner.__func__ is not type(mock).chat and inner(user("x")).message.content == "x"


def test_blank_placeholder_response_has_no_tool_calls(tool_pool):
    from llama_index.core.base.llms.types import ChatResponse

    assert (
        tool_pool.get_tool_calls_from_response(ChatResponse(message=ChatMessage()), error_on_no_tool_call=False) == []
    )


def test_replay_members_answer_as_recorded_and_unknown_prompts_fall_back(tmp_path, embedder):
    import numpy as np

    from uniroute_core import ProbeSet, UniRouter, write_routing_data
    from uniroute_core.replay import UnknownPromptError
    from uniroute_llamaindex.testing import ReplayLLM

    prompts = ["math probe 0", "math probe 1", "law probe 0", "law probe 1"]
    folder = write_routing_data(
        tmp_path / "tiny", prompts=prompts, models=["m1", "m2"], costs=[1.0, 5.0],
        scores=np.array([[1, 1], [1, 0], [0, 1], [0, 1]]), references=["A", "B", "C", "D"],
        responses=np.array([["A", "A"], ["B", "C"], ["", "C"], ["B", "D"]]),
    )
    m1 = ReplayLLM.from_routing_data(folder, "m1")
    assert m1.complete("math probe 1").text == "The answer is (B)."
    assert m1.chat(user("math probe 0")).message.content == "The answer is (A)."  # the last user message
    with pytest.raises(UnknownPromptError, match="no recorded answer"):
        m1.complete("never recorded")
    with pytest.raises(ValueError, match="'m9' is not in the replay book"):
        ReplayLLM.from_routing_data(folder, "m9")

    router = UniRouter(embedder=embedder, n_clusters=1, show_progress=False).fit(prompts)
    probes = ProbeSet.from_routing_data(folder)
    router.set_probes(probes)
    router.add_model("m1", cost=1.0, scores=m1.book.recorded_scores("m1", probes.prompts))
    llm = UniRouteLLM(router=router, members={"m1": m1}, lam=5.0)
    profile = llm.add_model("m2", ReplayLLM.from_routing_data(m1.book, "m2"), cost=5.0, show_progress=False)
    np.testing.assert_array_equal(profile.probe_scores, [1, 0, 1, 1])
    # an unknown prompt is a member failure like any other: every replayed member refuses it
    with pytest.raises(AllMembersFailedError) as info:
        llm.complete("never recorded")
    assert {name: type(e) for name, e in info.value.failures.items()} == {
        "m1": UnknownPromptError,
        "m2": UnknownPromptError,
    }


# ============================================================================ changing the pool under load


class GatedLLM(ScriptedLLM):
    """A member whose async answers wait until the test opens its gate, so profiling it (or a call to it) lasts as
    long as the test needs; ``entered`` counts the async calls that reached it."""

    _gate: asyncio.Event = PrivateAttr(default_factory=asyncio.Event)
    _entered: int = PrivateAttr(default=0)

    @classmethod
    def class_name(cls) -> str:
        return "GatedLLM"

    @property
    def entered(self) -> int:
        return self._entered

    def open_gate(self) -> None:
        self._gate.set()

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._entered += 1
        await self._gate.wait()
        return CompletionResponse(text=self._answer(prompt))


def _mixed(n: int) -> list[str]:
    return [MATH if i % 2 else LAW for i in range(n)]


async def test_calls_during_aadd_model_keep_routing_on_the_old_pool(llm, router):
    tiny = GatedLLM(answer_fn=lambda prompt: prompt)  # right on every probe, and cheaper than small
    adding = asyncio.create_task(llm.aadd_model("tiny", tiny, cost=0.5, show_progress=False))
    while tiny.entered == 0:  # profiling has started and is now held at the gate
        await asyncio.sleep(0)
    during = await asyncio.gather(*(llm.acomplete(p) for p in _mixed(200)), return_exceptions=True)
    assert [r for r in during if isinstance(r, BaseException)] == []
    assert {r.additional_kwargs["uniroute"]["member"] for r in during} == {"small", "big"}
    assert not adding.done() and "tiny" in llm.members and router.models == ["small", "big"]

    tiny.open_gate()
    across_the_swap = asyncio.gather(*(llm.achat(user(p)) for p in _mixed(200)), return_exceptions=True)
    profile, results = await asyncio.gather(adding, across_the_swap)
    assert profile.overall_quality == pytest.approx(1.0)
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert {r.additional_kwargs["uniroute"]["member"] for r in results} <= {"small", "big", "tiny"}
    after = await asyncio.gather(*(llm.acomplete(p) for p in _mixed(10)))
    assert {r.additional_kwargs["uniroute"]["member"] for r in after} == {"tiny"}


async def test_remove_model_under_concurrent_calls(router):
    small = GatedLLM(answer_fn=lambda prompt: f"small answers: {prompt}")
    llm = UniRouteLLM(router=router, members={"small": small, "big": answered_by("big")}, lam=0.3)
    in_flight = [asyncio.create_task(llm.acomplete(MATH)) for _ in range(50)]  # math goes to small, held at its gate
    while small.entered < len(in_flight):
        await asyncio.sleep(0)
    llm.remove_model("small")
    assert router.models == ["big"] and list(llm.members) == ["big"]
    later = [asyncio.create_task(llm.acomplete(p)) for p in _mixed(50)]
    small.open_gate()
    routed_before = await asyncio.gather(*in_flight)
    assert {r.text for r in routed_before} == {f"small answers: {MATH}"}
    assert all(r.additional_kwargs["uniroute"]["fallbacks"] == [] for r in routed_before)
    assert {r.additional_kwargs["uniroute"]["member"] for r in await asyncio.gather(*later)} == {"big"}


def test_an_empty_pool_is_filled_with_add_model(embedder):
    from uniroute_core import ProbeSet, UniRouter

    router = UniRouter(embedder=embedder, n_clusters=1, show_progress=False).fit(["math a", "law b", "math c"])
    router.set_probes(ProbeSet(prompts=["math one", "law two"], references=["math one", "law two"], grader="exact"))
    llm = UniRouteLLM(router=router, members={}, lam=0.0)
    assert llm.metadata.model_name == "uniroute"
    with pytest.raises(Exception, match="pool is empty"):
        llm.complete("math question")
    llm.add_model("echo", MockLLM(), cost=1.0, show_progress=False)
    assert router.models == ["echo"]
    assert llm.complete("math question").additional_kwargs["uniroute"]["member"] == "echo"
