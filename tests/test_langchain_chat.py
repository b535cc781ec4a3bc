"""ChatUniRoute behaviour users rely on: routing, one run per call, fallback, tools, structured output, stickiness,
adding a model by profiling it.

Pool used throughout (fast topic embedder, K = 2 clusters: math prompts vs law prompts, probes = 10 of each):
"cheap" (cost 1) is right on the math probes and wrong on law; "strong" (cost 10) is right on all. With the
router's shrinkage α = 2 toward the member's overall mean, the per-cluster qualities are, by hand:
cheap/math = (10·1 + 2·0.5)/12 = 11/12, cheap/law = (0 + 2·0.5)/12 = 1/12, strong = 1 everywhere.
Normalised costs: cheap 0.1, strong 1. Loss (1 − q) + λ·c̃ at λ = 0.3: math → cheap 1/12 + 0.03 < strong 0.3;
law → strong 0.3 < cheap 11/12 + 0.03. At λ = 2 cheap wins law too (11/12 + 0.2 < 2); at λ = 0 strong wins math.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.callbacks import BaseCallbackHandler, UsageMetadataCallbackHandler
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.load import dumpd
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.prompts import ChatPromptTemplate
from pydantic import BaseModel, Field, PrivateAttr

from uniroute_core import ProbeSet, ProfilingError, UniRouter
from uniroute_core.delegation import AllMembersFailedError
from uniroute_langchain import ChatUniRoute, profile_model
from uniroute_langchain.testing import FailingChatModel, FakeToolCallingChatModel, MemberFailure

MATH = [f"math problem number {i}" for i in range(10)]
LAW = [f"law case number {i}" for i in range(10)]
CHEAP_MATH_Q = 11 / 12
CHEAP_LAW_Q = 1 / 12


@pytest.fixture
def router(embedder) -> UniRouter:
    r = UniRouter(embedder=embedder, n_clusters=2, show_progress=False).fit(MATH + LAW)
    r.set_probes(ProbeSet(prompts=MATH + LAW, references=["A"] * 20, grader="multiple_choice"))
    r.add_model("cheap", 1.0, [1.0] * 10 + [0.0] * 10)
    r.add_model("strong", 10.0, [1.0] * 20)
    return r


def _members(**overrides: Any) -> dict[str, Any]:
    members = {
        "cheap": FakeToolCallingChatModel(model_name="fake-cheap"),
        "strong": FakeToolCallingChatModel(model_name="fake-strong"),
    }
    members.update(overrides)
    return members


def _chat(router: UniRouter, **kwargs: Any) -> ChatUniRoute:
    kwargs.setdefault("members", _members())
    return ChatUniRoute(router=router, **kwargs)


def _member(message: BaseMessage) -> str:
    return message.response_metadata["uniroute"]["member"]


class _RunCounter(BaseCallbackHandler):
    def __init__(self) -> None:
        self.starts = 0
        self.ends = 0
        self.tokens = 0

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        self.starts += 1

    def on_llm_end(self, *args: Any, **kwargs: Any) -> None:
        self.ends += 1

    def on_llm_new_token(self, *args: Any, **kwargs: Any) -> None:
        self.tokens += 1


class _TraceRecorder(BaseCallbackHandler):
    """What tracing sees of each run: its metadata (LangSmith params) and invocation params."""

    def __init__(self) -> None:
        self.starts: list[dict[str, Any]] = []
        self.ends = 0
        self.errors = 0

    def on_chat_model_start(self, *args: Any, metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.starts.append({"metadata": dict(metadata or {}), "invocation_params": kwargs.get("invocation_params")})

    def on_llm_end(self, *args: Any, **kwargs: Any) -> None:
        self.ends += 1

    def on_llm_error(self, *args: Any, **kwargs: Any) -> None:
        self.errors += 1

    def model_names(self) -> list[str]:
        return [start["metadata"]["ls_model_name"] for start in self.starts]


def _count_routing(monkeypatch: pytest.MonkeyPatch, router: UniRouter) -> list[str]:
    """Spy on the adapter's routing step (``MemberSelector.select`` / ``aselect``): the returned list receives every
    text routed."""
    from uniroute_core.delegation import MemberSelector

    routed: list[str] = []
    select, aselect = MemberSelector.select, MemberSelector.aselect

    def spy(self: MemberSelector, text: str, *args: Any, **kwargs: Any) -> Any:
        if self.router is router:
            routed.append(text)
        return select(self, text, *args, **kwargs)

    async def aspy(self: MemberSelector, text: str, *args: Any, **kwargs: Any) -> Any:
        if self.router is router:
            routed.append(text)
        return await aselect(self, text, *args, **kwargs)

    monkeypatch.setattr(MemberSelector, "select", spy)
    monkeypatch.setattr(MemberSelector, "aselect", aspy)
    return routed


def _joined(chunks: list[Any]) -> Any:
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk
    return full


# ----------------------------------------------------------------------------- construction


def test_the_pool_must_match_the_router_profiles(router):
    # MemberMismatchError is a ValueError; pydantic reports it as a ValidationError (also a ValueError)
    with pytest.raises(ValueError, match=r"router has profiles \['strong'\] with no member"):
        ChatUniRoute(router=router, members={"cheap": FakeToolCallingChatModel()})
    extra = {**_members(), "other": FakeToolCallingChatModel()}
    with pytest.raises(ValueError, match=r"members \['other'\] have no profile"):
        ChatUniRoute(router=router, members=extra)


def test_bad_settings_are_rejected_with_a_reason(router):
    with pytest.raises(ValueError, match="api_key.*each member holds its own API key"):
        _chat(router, api_key="sk-test")
    with pytest.raises(ValueError, match="'lamda'.*not a ChatUniRoute field"):
        _chat(router, lamda=0.3)
    with pytest.raises(ValueError, match="only one of lam, budget, min_quality"):
        _chat(router, lam=0.3, budget=2.0)
    with pytest.raises(ValueError, match=r"lam\n.*greater than or equal to 0"):
        _chat(router, lam=-1.0)
    with pytest.raises(ValueError, match="BaseChatModel"):
        ChatUniRoute(router=router, members={"cheap": lambda s: s, "strong": FakeToolCallingChatModel()})


def test_router_and_members_are_never_serialised(router):
    members = _members(strong=FakeToolCallingChatModel(model_name="sk-SECRET-in-member"))
    chat = _chat(router, members=members, lam=0.3)
    dumped = chat.model_dump()
    assert "router" not in dumped and "members" not in dumped
    assert dumped["lam"] == 0.3
    for text in (repr(chat), chat.model_dump_json(), json.dumps(dumpd(chat), default=str)):
        assert "sk-SECRET" not in text
    assert not ChatUniRoute.is_lc_serializable()


def test_ls_params_report_uniroute_and_the_forced_member(router):
    chat = _chat(router, lam=0.3, temperature=0.2)
    params = chat._get_ls_params(model="strong")
    assert params["ls_provider"] == "uniroute"
    assert params["ls_model_name"] == "strong"
    assert params["ls_temperature"] == 0.2
    assert chat._get_ls_params()["ls_model_name"] == "uniroute(cheap|strong)"


async def _call(chat: ChatUniRoute, how: str, prompt: str, config: dict[str, Any]) -> BaseMessage:
    if how == "invoke":
        return chat.invoke(prompt, config=config)
    if how == "ainvoke":
        return await chat.ainvoke(prompt, config=config)
    if how == "stream":
        return _joined(list(chat.stream(prompt, config=config)))
    return _joined([chunk async for chunk in chat.astream(prompt, config=config)])


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream"])
async def test_the_run_is_traced_under_the_routed_member_after_routing_once(router, monkeypatch, how):
    routed = _count_routing(monkeypatch, router)
    chat = _chat(router, lam=0.3)
    for prompt, member, cost in (("math problem number 1", "cheap", 1.0), ("law case number 2", "strong", 10.0)):
        recorder = _TraceRecorder()
        message = await _call(chat, how, prompt, {"callbacks": [recorder]})
        assert routed == [prompt]  # routed before the run started, and not again inside it
        routed.clear()
        assert len(recorder.starts) == 1 and (recorder.ends, recorder.errors) == (1, 0)
        metadata = recorder.starts[0]["metadata"]
        assert (metadata["ls_provider"], metadata["ls_model_name"]) == ("uniroute", member)
        assert "_uniroute_plan" not in recorder.starts[0]["invocation_params"]
        entry = message.response_metadata["uniroute"]
        assert set(entry) == {
            "member", "expected_quality", "cost", "lam", "mode", "fallbacks", "calls_served", "realised_mean_cost",
            "call_id", "exploratory",
        }
        assert (entry["member"], entry["cost"], entry["lam"], entry["fallbacks"]) == (member, cost, 0.3, [])
        assert entry["expected_quality"]["strong"] == pytest.approx(1.0)
        assert message.response_metadata["model_name"] == f"fake-{member}"


def test_batch_traces_each_run_under_its_own_member(router, monkeypatch):
    routed = _count_routing(monkeypatch, router)
    recorder = _TraceRecorder()
    prompts = ["math problem number 1", "law case number 2", "math problem number 3"]
    replies = _chat(router, lam=0.3).batch(prompts, config={"callbacks": [recorder]})
    assert [_member(m) for m in replies] == ["cheap", "strong", "cheap"]
    assert sorted(routed) == sorted(prompts)
    assert sorted(recorder.model_names()) == ["cheap", "cheap", "strong"] and recorder.ends == 3


def test_generate_with_several_message_lists_routes_each_and_traces_the_pool(router, monkeypatch):
    routed = _count_routing(monkeypatch, router)
    recorder = _TraceRecorder()
    chat = _chat(router, lam=0.3)
    result = chat.generate(
        [[HumanMessage("math problem number 1")], [HumanMessage("law case number 2")]], callbacks=[recorder]
    )
    assert [_member(g[0].message) for g in result.generations] == ["cheap", "strong"]
    assert routed == ["math problem number 1", "law case number 2"]
    # one trace metadata is shared by all the lists' runs, so it names the pool, not a member
    assert recorder.model_names() == ["uniroute(cheap|strong)"] * 2
    routed.clear()
    assert _member(chat._generate([HumanMessage("law case number 3")]).generations[0].message) == "strong"
    assert routed == ["law case number 3"]  # called directly, _generate routes by itself


def test_a_routing_error_is_still_raised_inside_the_run(router):
    recorder = _TraceRecorder()
    with pytest.raises(KeyError, match="'gpt-9' is not a member"):
        _chat(router, lam=0.3).invoke("math problem number 1", model="gpt-9", config={"callbacks": [recorder]})
    assert len(recorder.starts) == 1 and (recorder.ends, recorder.errors) == (0, 1)
    assert recorder.model_names() == ["gpt-9"]


class _KwargsRecordingChatModel(FakeToolCallingChatModel):
    """Records the call keywords each generation receives."""

    _seen: list[dict[str, Any]] = PrivateAttr(default_factory=list)

    def _response(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> AIMessage:
        self._seen.append(dict(kwargs))
        return super()._response(messages, stop, kwargs)


def test_the_routing_outcome_reaches_neither_the_member_nor_the_cache_key(router):
    cheap = _KwargsRecordingChatModel(model_name="fake-cheap")
    chat = _chat(router, members=_members(cheap=cheap), lam=0.3, temperature=0.2, cache=InMemoryCache())
    first = chat.invoke("math problem number 1")
    again = chat.invoke("math problem number 1")  # same prompt and parameters: served from the cache
    list(chat.stream("math problem number 2"))
    assert first.content == again.content and cheap.calls == 2
    assert cheap._seen == [{"temperature": 0.2}, {"temperature": 0.2}]
    assert "_uniroute_plan" not in chat._get_llm_string(_uniroute_plan=object())


# ----------------------------------------------------------------------------- routing


def test_each_topic_goes_where_it_should(router):
    chat = _chat(router, lam=0.3)
    math = chat.invoke("math problem number 42")
    law = chat.invoke("law case number 7")
    assert _member(math) == "cheap" and math.response_metadata["model_name"] == "fake-cheap"
    assert _member(law) == "strong" and law.response_metadata["model_name"] == "fake-strong"
    entry = math.response_metadata["uniroute"]
    assert entry["expected_quality"] == pytest.approx({"cheap": CHEAP_MATH_Q, "strong": 1.0})
    assert entry["cost"] == 1.0 and entry["lam"] == 0.3 and entry["fallbacks"] == []
    assert law.response_metadata["uniroute"]["expected_quality"]["cheap"] == pytest.approx(CHEAP_LAW_Q)
    assert math.usage_metadata == {"input_tokens": 4, "output_tokens": 6, "total_tokens": 10}


def test_raising_lambda_moves_traffic_to_the_cheap_member(router):
    prompts = ["math problem number 1", "law case number 2", "law case number 3", "math problem number 4"]

    def cheap_share(lam: float) -> float:
        replies = _chat(router, lam=lam).batch(prompts)
        return sum(_member(m) == "cheap" for m in replies) / len(prompts)

    assert cheap_share(0.0) == 0.0
    assert cheap_share(0.3) == 0.5
    assert cheap_share(2.0) == 1.0


def test_min_quality_and_budget_modes(router):
    chat = _chat(router, min_quality=0.9)
    assert _member(chat.invoke("math problem number 1")) == "cheap"  # 11/12 >= 0.9
    law = chat.invoke("law case number 1")
    assert _member(law) == "strong" and law.response_metadata["uniroute"]["mode"] == "min_quality"
    # a budget of the cheap cost buys no strong calls; a budget of the strong cost buys the best member everywhere
    assert _member(_chat(router, budget=1.0).invoke("law case number 1")) == "cheap"
    assert _member(_chat(router, budget=10.0).invoke("math problem number 1")) == "strong"


def test_a_per_call_model_forces_a_member(router):
    chat = _chat(router, lam=0.3)
    message = chat.invoke("math problem number 1", model="strong")
    assert _member(message) == "strong" and message.response_metadata["uniroute"]["mode"] == "forced"
    with pytest.raises(KeyError, match="'gpt-9' is not a member"):
        chat.invoke("math problem number 1", model="gpt-9")


def test_routing_text_is_the_last_human_message_or_the_conversation(router):
    messages = [
        SystemMessage("law law law case case"),
        HumanMessage("law case number 3"),
        AIMessage("law case ruling number 3"),
        HumanMessage("math problem"),
    ]
    assert _member(_chat(router, lam=0.3).invoke(messages)) == "cheap"  # system prompt and history ignored
    whole = "law case number 3\nlaw case ruling number 3\nmath problem"
    expected = router.route_one(whole, 0.3).model
    assert expected == "strong"  # the history is mostly law
    assert _member(_chat(router, lam=0.3, route_on="conversation").invoke(messages)) == expected


def test_sticky_conversations_escalate_but_never_downgrade(router):
    chat = _chat(router, lam=0.3, sticky=True)
    assert _member(chat.invoke("law case number 1", conversation_id="c1")) == "strong"
    assert _member(chat.invoke("math problem number 2", conversation_id="c1")) == "strong"  # no downgrade
    assert _member(chat.invoke("math problem number 2", conversation_id="c2")) == "cheap"  # other conversation
    assert _member(chat.invoke("law case number 3", conversation_id="c2")) == "strong"  # escalation is allowed
    thread = {"metadata": {"thread_id": "t1"}}
    assert _member(chat.invoke("law case number 1", config=thread)) == "strong"
    assert _member(chat.invoke("math problem number 2", config=thread)) == "strong"
    streamed = {"metadata": {"thread_id": "t2"}}
    assert _member(_joined(list(chat.stream("law case number 1", config=streamed)))) == "strong"
    assert _member(_joined(list(chat.stream("math problem number 2", config=streamed)))) == "strong"
    not_sticky = _chat(router, lam=0.3)
    not_sticky.invoke("law case number 1", conversation_id="c3")
    assert _member(not_sticky.invoke("math problem number 2", conversation_id="c3")) == "cheap"


# ----------------------------------------------------------------------------- one run per call


def test_one_call_is_one_run_with_the_members_usage_counted_once(router):
    member_counter = _RunCounter()
    cheap = FakeToolCallingChatModel(model_name="fake-cheap", callbacks=[member_counter])
    chat = _chat(router, members=_members(cheap=cheap), lam=0.3)
    counter, usage = _RunCounter(), UsageMetadataCallbackHandler()
    message = chat.invoke("math problem number 1", config={"callbacks": [counter, usage]})
    assert (counter.starts, counter.ends) == (1, 1)
    assert (member_counter.starts, member_counter.ends) == (0, 0)  # the member ran inside our run
    assert usage.usage_metadata == {"fake-cheap": message.usage_metadata}
    assert cheap.calls == 1


def test_streaming_through_a_chain_passes_tokens_through(router):
    prompt = ChatPromptTemplate.from_messages([("system", "Be brief."), ("human", "{question}")])
    chain = prompt | _chat(router, lam=0.3) | StrOutputParser()
    counter = _RunCounter()
    pieces = list(chain.stream({"question": "math problem number 5"}, config={"callbacks": [counter]}))
    assert "".join(pieces) == "fake-cheap answers: math problem number 5"
    assert len([p for p in pieces if p]) == 6  # word by word, not one block
    assert (counter.starts, counter.ends) == (1, 1)
    assert counter.tokens >= 6


async def test_async_streaming_carries_the_routing_entry_once(router):
    chat = _chat(router, lam=0.3)
    full = None
    async for chunk in chat.astream("law case number 1"):
        full = chunk if full is None else full + chunk
    assert full.content == "fake-strong answers: law case number 1"
    assert full.response_metadata["uniroute"]["member"] == "strong"
    assert full.response_metadata["model_name"] == "fake-strong"
    assert full.usage_metadata["total_tokens"] == 4 + 6


# ----------------------------------------------------------------------------- fallback


def _failing_cheap_chat(router: UniRouter, **kwargs: Any) -> tuple[ChatUniRoute, FailingChatModel]:
    cheap = FailingChatModel(model_name="fake-cheap", error_message="rate limited")
    return _chat(router, members=_members(cheap=cheap), lam=0.3, **kwargs), cheap


def _check_fell_back(message: BaseMessage) -> None:
    entry = message.response_metadata["uniroute"]
    assert entry["member"] == "strong"
    assert len(entry["fallbacks"]) == 1 and entry["fallbacks"][0]["member"] == "cheap"
    assert "MemberFailure" in entry["fallbacks"][0]["error"] and "rate limited" in entry["fallbacks"][0]["error"]
    assert message.response_metadata["model_name"] == "fake-strong"


def test_fallback_sync_invoke_and_stream(router):
    chat, cheap = _failing_cheap_chat(router)
    _check_fell_back(chat.invoke("math problem number 1"))
    full = None
    for chunk in chat.stream("math problem number 1"):
        full = chunk if full is None else full + chunk
    _check_fell_back(full)
    assert cheap.calls == 2


async def test_fallback_async_invoke_and_stream(router):
    chat, cheap = _failing_cheap_chat(router)
    _check_fell_back(await chat.ainvoke("math problem number 1"))
    full = None
    async for chunk in chat.astream("math problem number 1"):
        full = chunk if full is None else full + chunk
    _check_fell_back(full)
    results = await asyncio.gather(*(chat.ainvoke(f"math problem number {i}") for i in range(3)))
    for message in results:
        _check_fell_back(message)


def test_all_members_failing_raises_one_error_naming_each(router):
    members = {"cheap": FailingChatModel(model_name="c"), "strong": FailingChatModel(model_name="s")}
    chat = _chat(router, members=members, lam=0.3)
    with pytest.raises(AllMembersFailedError, match="all 2 members failed") as info:
        chat.invoke("law case number 1")
    assert set(info.value.failures) == {"cheap", "strong"}
    with pytest.raises(AllMembersFailedError):
        list(chat.stream("law case number 1"))


async def test_all_members_failing_async(router):
    members = {"cheap": FailingChatModel(model_name="c"), "strong": FailingChatModel(model_name="s")}
    with pytest.raises(AllMembersFailedError, match="cheap: MemberFailure.*strong: MemberFailure|strong.*cheap"):
        await _chat(router, members=members, lam=0.3).ainvoke("law case number 1")


def test_fallback_can_be_turned_off(router):
    chat, _ = _failing_cheap_chat(router, fallback=False)
    strong = chat.members["strong"]
    with pytest.raises(MemberFailure, match="rate limited"):
        chat.invoke("math problem number 1")
    assert strong.calls == 0


class _BreaksMidStream(FakeToolCallingChatModel):
    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        chunks = super()._stream(*args, **kwargs)
        yield next(chunks)
        raise MemberFailure("connection dropped mid-stream")


def test_no_fallback_once_tokens_were_streamed(router):
    chat = _chat(router, members=_members(cheap=_BreaksMidStream(model_name="fake-cheap")), lam=0.3)
    received = []
    with pytest.raises(MemberFailure, match="mid-stream"):
        for chunk in chat.stream("math problem number 1"):
            received.append(chunk.content)
    assert received == ["fake-cheap "]
    assert chat.members["strong"].calls == 0


# ----------------------------------------------------------------------------- tools and structured output


def magic_adder(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Verdict(BaseModel):
    """A court's decision."""

    court: str = Field(description="name of the court")
    years: int = Field(description="sentence in years")


def test_tools_route_only_to_tool_capable_members(router):
    plain_cheap = FakeListChatModel(responses=["plain answer"])  # cannot call tools
    chat = _chat(router, members=_members(cheap=plain_cheap), lam=0.3)
    assert chat.tool_capable_members == ["strong"]
    assert _member(chat.invoke("math problem number 1")) == "cheap"
    message = chat.bind_tools([magic_adder], tool_choice="any").invoke("math problem 3 + 4")
    assert _member(message) == "strong"
    assert message.tool_calls[0]["name"] == "magic_adder" and message.tool_calls[0]["args"] == {"a": 3, "b": 4}
    with pytest.raises(ValueError, match="'cheap' was forced but it does not support tool calling"):
        chat.bind_tools([magic_adder]).invoke("math problem 3 + 4", model="cheap")


def test_a_pool_without_tool_calling_fails_at_bind_time(router):
    members = {"cheap": FakeListChatModel(responses=["a"]), "strong": FakeListChatModel(responses=["b"])}
    chat = _chat(router, members=members, lam=0.3)
    with pytest.raises(ValueError, match="no member of this pool supports tool calling"):
        chat.bind_tools([magic_adder])
    with pytest.raises(ValueError, match="no member of this pool supports tool calling"):
        chat.with_structured_output(Verdict)


def test_tool_calls_end_to_end_sync_async_and_streamed(router):
    chat = _chat(router, lam=0.3).bind_tools([magic_adder])
    message = chat.invoke("math problem: what is 20 + 22?")
    assert _member(message) == "cheap"
    assert message.tool_calls[0]["args"] == {"a": 20, "b": 22}
    full = None
    for chunk in chat.stream("law case: 5 + 6"):
        full = chunk if full is None else full + chunk
    assert full.tool_calls[0]["args"] == {"a": 5, "b": 6}
    assert full.response_metadata["uniroute"]["member"] == "strong"
    async_message = asyncio.run(chat.ainvoke("law case: 1 + 1"))
    assert async_message.tool_calls[0]["args"] == {"a": 1, "b": 1}


def test_structured_output_end_to_end(router):
    structured = _chat(router, lam=0.3).with_structured_output(Verdict, include_raw=True)
    out = structured.invoke("law case: the 'Supreme Court' gave 12 years")
    assert out["parsed"] == Verdict(court="Supreme Court", years=12)
    assert _member(out["raw"]) == "strong"
    plain = _chat(router, lam=0.3).with_structured_output(Verdict)
    assert plain.invoke("math problem: 'Math Court', 3") == Verdict(court="Math Court", years=3)
    assert list(plain.stream("math problem: 'Math Court', 3")) == [Verdict(court="Math Court", years=3)]


# ----------------------------------------------------------------------------- adding a model


def test_add_model_of_a_better_cheap_member_takes_traffic(router):
    chat = _chat(router, lam=0.3)
    assert _member(chat.invoke("math problem number 1")) == "cheap"
    better = FakeToolCallingChatModel(model_name="fake-better", reply="The answer is (A).")
    profile = chat.add_model("better", better, cost=0.5, show_progress=False)
    np.testing.assert_array_equal(profile.probe_scores, np.ones(20))
    assert chat.router.models == ["cheap", "strong", "better"] and chat.members["better"] is better
    for prompt in ("math problem number 1", "law case number 1"):
        assert _member(chat.invoke(prompt)) == "better"


def test_add_model_grades_each_probe(router):
    chat = _chat(router, lam=0.3)
    math_only = FakeToolCallingChatModel(replies={"math": "The answer is (A)."}, reply="I think (B).")
    profile = chat.add_model("math-only", math_only, cost=0.5, max_concurrency=3, show_progress=False)
    np.testing.assert_array_equal(profile.probe_scores, [1.0] * 10 + [0.0] * 10)
    assert math_only.calls == 20


async def test_aadd_model_retries_transient_failures(router):
    chat = _chat(router, lam=0.3)
    flaky = FailingChatModel(failures=3, reply="The answer is (A).")
    profile = await chat.aadd_model("flaky", flaky, cost=0.5, retries=3, retry_backoff=0.0, show_progress=False)
    np.testing.assert_array_equal(profile.probe_scores, np.ones(20))
    assert _member(await chat.ainvoke("law case number 1")) == "flaky"


def test_a_mostly_failing_model_is_refused_and_not_added(router):
    chat = _chat(router, lam=0.3)
    with pytest.raises(ProfilingError, match="20 of 20 probes failed"):
        chat.add_model("down", FailingChatModel(), cost=0.1, retries=0, show_progress=False)
    assert chat.router.models == ["cheap", "strong"] and set(chat.members) == {"cheap", "strong"}
    with pytest.raises(ValueError, match="already in the pool"):
        chat.add_model("cheap", FakeToolCallingChatModel(), cost=1.0, show_progress=False)
    assert chat.members["cheap"].model_name == "fake-cheap"  # the old member is kept


def test_profile_model_scores_without_adding(router):
    half = FakeToolCallingChatModel(replies={"law": "(A)"}, reply="(C)")
    scores = profile_model(half, router.probes, max_concurrency=4, show_progress=False)
    np.testing.assert_array_equal(scores, [0.0] * 10 + [1.0] * 10)
    assert router.models == ["cheap", "strong"]


def test_an_empty_pool_can_be_filled_with_add_model(router):
    for name in list(router.models):
        router.remove_model(name)
    chat = ChatUniRoute(router=router, members={}, lam=0.3)
    chat.add_model("only", FakeToolCallingChatModel(model_name="fake-only", reply="(A)"), 1.0, show_progress=False)
    assert _member(chat.invoke("law case number 1")) == "only"
    chat.remove_model("only")
    assert chat.members == {} and router.models == []


def test_a_router_profile_without_member_is_a_clear_error_at_call_time(router):
    chat = _chat(router, lam=0.3)
    router.add_model("ghost", 0.1, [1.0] * 20)  # added to the router directly, not through chat.add_model
    with pytest.raises(ValueError, match=r"profiles \['ghost'\] with no member object"):
        chat.invoke("math problem number 1")


# ----------------------------------------------------------------------------- changing the pool under load


class _GatedChatModel(FakeToolCallingChatModel):
    """A member whose answers wait until the test opens its gate, so profiling it (or a call to it) lasts as long as
    the test needs; ``entered`` counts the calls that reached it."""

    _async_gate: asyncio.Event = PrivateAttr(default_factory=asyncio.Event)
    _thread_gate: threading.Event = PrivateAttr(default_factory=threading.Event)
    _entered: int = PrivateAttr(default=0)

    @property
    def entered(self) -> int:
        return self._entered

    def open_gate(self) -> None:
        self._async_gate.set()
        self._thread_gate.set()

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
        self._entered += 1
        self._thread_gate.wait(timeout=60)
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> Any:
        self._entered += 1
        await self._async_gate.wait()
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


def _prompts(n: int) -> list[str]:
    return [f"math problem number {i % 10}" if i % 2 else f"law case number {i % 10}" for i in range(n)]


async def test_calls_during_aadd_model_keep_routing_on_the_old_pool(router):
    chat = _chat(router, lam=0.3)
    newcomer = _GatedChatModel(model_name="fake-better", reply="The answer is (A).")
    adding = asyncio.create_task(chat.aadd_model("better", newcomer, cost=0.5, max_concurrency=2, show_progress=False))
    while newcomer.entered == 0:  # profiling has started and is now held at the gate
        await asyncio.sleep(0)
    during = await asyncio.gather(*(chat.ainvoke(p) for p in _prompts(200)), return_exceptions=True)
    assert [r for r in during if isinstance(r, BaseException)] == []
    assert {_member(r) for r in during} == {"cheap", "strong"}  # the newcomer has no profile yet
    assert not adding.done() and "better" in chat.members and router.models == ["cheap", "strong"]

    newcomer.open_gate()
    across_the_swap = asyncio.gather(*(chat.ainvoke(p) for p in _prompts(200)), return_exceptions=True)
    profile, results = await asyncio.gather(adding, across_the_swap)
    np.testing.assert_array_equal(profile.probe_scores, np.ones(20))
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert {_member(r) for r in results} <= {"cheap", "strong", "better"}
    after = await asyncio.gather(*(chat.ainvoke(p) for p in _prompts(20)))
    assert {_member(r) for r in after} == {"better"}  # right everywhere and cheapest: it takes all traffic


def test_threaded_calls_during_add_model_never_fail(router):
    chat = _chat(router, lam=0.3)
    newcomer = _GatedChatModel(model_name="fake-better", reply="The answer is (A).")
    adder = ThreadPoolExecutor(max_workers=1)
    adding = adder.submit(chat.add_model, "better", newcomer, 0.5, max_concurrency=2, show_progress=False)
    while newcomer.entered == 0 and not adding.done():
        time.sleep(0.001)
    with ThreadPoolExecutor(max_workers=8) as callers:
        during = [f.exception() or f.result() for f in [callers.submit(chat.invoke, p) for p in _prompts(100)]]
        assert [r for r in during if isinstance(r, BaseException)] == []
        assert {_member(r) for r in during} == {"cheap", "strong"}
        across = [callers.submit(chat.invoke, p) for p in _prompts(200)]
        newcomer.open_gate()
        adding.result(timeout=60)
        results = [f.exception() or f.result() for f in across]
    adder.shutdown()
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert {_member(r) for r in results} <= {"cheap", "strong", "better"}
    assert _member(chat.invoke("law case number 3")) == "better"


async def test_remove_model_under_concurrent_calls(router):
    cheap = _GatedChatModel(model_name="fake-cheap", reply="math answer")
    chat = _chat(router, lam=0.3, members=_members(cheap=cheap))
    in_flight = [asyncio.create_task(chat.ainvoke(p)) for p in MATH * 5]  # math goes to cheap, held at its gate
    while cheap.entered < len(in_flight):
        await asyncio.sleep(0)
    profile = chat.remove_model("cheap")
    assert profile.name == "cheap" and router.models == ["strong"] and list(chat.members) == ["strong"]
    later = [asyncio.create_task(chat.ainvoke(p)) for p in _prompts(50)]
    cheap.open_gate()
    routed_before = await asyncio.gather(*in_flight)
    assert {_member(r) for r in routed_before} == {"cheap"}  # finished on the member they were routed to
    assert all(r.response_metadata["uniroute"]["fallbacks"] == [] for r in routed_before)
    assert {_member(r) for r in await asyncio.gather(*later)} == {"strong"}


def test_threaded_calls_during_remove_model_never_fail(router):
    chat = _chat(router, lam=0.3)
    with ThreadPoolExecutor(max_workers=8) as callers:
        futures = [callers.submit(chat.invoke, p) for p in _prompts(300)]
        chat.remove_model("cheap")
        results = [f.exception() or f.result() for f in futures]
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert {_member(r) for r in results} <= {"cheap", "strong"}
    assert all(r.response_metadata["uniroute"]["fallbacks"] == [] for r in results)
    assert _member(chat.invoke("math problem number 1")) == "strong"
