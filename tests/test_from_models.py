"""A pool in one call: ``ChatUniRoute.from_models`` and ``UniRouteLLM.from_models`` run through the same scenarios."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate

from uniroute_core import ProbeSet, UniRouter, load_routing_data
from uniroute_core.delegation import PoolProfilingError
from uniroute_core.replay import ReplayBook
from uniroute_langchain import ChatUniRoute
from uniroute_langchain.testing import ReplayChatModel
from uniroute_llamaindex import UniRouteLLM
from uniroute_llamaindex.testing import ReplayLLM, ScriptedLLM

MATH = [f"math algebra equation number {i}" for i in range(10)]
LAW = [f"law contract court case {i}" for i in range(10)]


class ScriptedChat(BaseChatModel):
    """A LangChain chat model answering ``answer_fn(last message text)``; ``fail=True`` raises on every call."""

    answer_fn: Callable[[str], str]
    fail: bool = False
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.calls += 1
        if self.fail:
            raise ConnectionError("provider down")
        text = self.answer_fn(str(messages[-1].content))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def math_expert(prompt: str) -> str:
    return "The answer is (A)." if "math" in prompt else "The answer is (B)."


def law_expert(prompt: str) -> str:
    return "The answer is (A)." if "law" in prompt else "The answer is (B)."


def always_a(prompt: str) -> str:
    return "The answer is (A)."


def raise_down(prompt: str) -> str:
    raise ConnectionError("provider down")


ADAPTERS = ["langchain", "llamaindex"]


def make_member(adapter: str, fn: Callable[[str], str]) -> Any:
    if adapter == "langchain":
        return ScriptedChat(answer_fn=fn)
    return ScriptedLLM(answer_fn=fn)


def from_models(adapter: str, models: dict[str, Any], **kw: Any) -> Any:
    cls = ChatUniRoute if adapter == "langchain" else UniRouteLLM
    return cls.from_models(models, show_progress=False, retries=0, **kw)


def ask(adapter: str, routed: Any, text: str) -> tuple[str, str]:
    """(member used, answer text) for one call through the routed model."""
    if adapter == "langchain":
        msg = routed.invoke(text)
        return msg.response_metadata["uniroute"]["member"], msg.content
    resp = routed.complete(text)
    return resp.additional_kwargs["uniroute"]["member"], resp.text


@pytest.fixture
def small_router(embedder) -> UniRouter:
    router = UniRouter(embedder=embedder, n_clusters=2, shrinkage=0.0, seed=0, show_progress=False).fit(MATH + LAW)
    router.set_probes(ProbeSet(prompts=MATH + LAW, references=["A"] * 20, grader="multiple_choice"))
    return router


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_pool_of_fakes_is_profiled_and_routes(adapter, small_router):
    members = {
        "mathematician": (make_member(adapter, math_expert), 1.0),
        "lawyer": (make_member(adapter, law_expert), 1.0),
        "generalist": (make_member(adapter, always_a), 10.0),
    }
    routed = from_models(adapter, members, router=small_router, lam=0.5)
    assert routed.router is small_router and sorted(routed.members) == ["generalist", "lawyer", "mathematician"]
    assert routed.pool_report.failures == {}
    assert routed.router.profiles["generalist"].overall_quality == 1.0
    assert routed.router.profiles["mathematician"].overall_quality == 0.5
    for _, (member, _) in members.items():  # every member answered every probe once (profiled concurrently)
        assert member.calls == 20
    assert ask(adapter, routed, "math algebra equation number 77")[0] == "mathematician"
    assert ask(adapter, routed, "law contract court case 77")[0] == "lawyer"


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_failed_member_is_reported_and_the_rest_kept(adapter, small_router):
    members = {"good": (make_member(adapter, always_a), 1.0), "down": (make_member(adapter, raise_down), 2.0)}
    with pytest.warns(RuntimeWarning, match=r"member 'down' could not be profiled.*provider down"):
        routed = from_models(adapter, members, router=small_router)
    assert list(routed.members) == ["good"] and routed.router.models == ["good"]
    assert "ProfilingError" in routed.pool_report.failures["down"]
    assert ask(adapter, routed, "math algebra equation number 1")[0] == "good"


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_all_members_failing_is_a_clear_error(adapter, small_router):
    members = {"a": (make_member(adapter, raise_down), 1.0), "b": (make_member(adapter, raise_down), 2.0)}
    with pytest.raises(PoolProfilingError, match=r"none of the 2 members could be profiled — a: .*; b: "):
        from_models(adapter, members, router=small_router)
    assert small_router.models == []


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_bad_pool_specs_are_refused_before_any_call(adapter, small_router):
    member = make_member(adapter, always_a)
    with pytest.raises(TypeError, match=r"member 'x': expected a \(model, cost\) pair"):
        from_models(adapter, {"x": member}, router=small_router)
    with pytest.raises(TypeError, match="member 'x' must be a"):
        from_models(adapter, {"x": ("not a model", 1.0)}, router=small_router)
    with pytest.raises(TypeError, match="member 'x': cost must be a number"):
        from_models(adapter, {"x": (member, "cheap")}, router=small_router)
    with pytest.raises(ValueError, match="at least one member"):
        from_models(adapter, {}, router=small_router)
    assert member.calls == 0


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_async_from_models(adapter, small_router):
    cls = ChatUniRoute if adapter == "langchain" else UniRouteLLM
    members = {
        "mathematician": (make_member(adapter, math_expert), 1.0),
        "down": (make_member(adapter, raise_down), 1.0),
    }
    with pytest.warns(RuntimeWarning, match="'down'"):
        routed = asyncio.run(cls.afrom_models(members, router=small_router, show_progress=False, retries=0))
    assert list(routed.members) == ["mathematician"]


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_own_probe_set_replaces_the_routers(adapter, small_router):
    probes = ProbeSet(prompts=MATH[:4] + LAW[:4], references=["B"] * 8)
    routed = from_models(adapter, {"b": (make_member(adapter, lambda p: "B"), 1.0)}, router=small_router, probes=probes)
    assert len(routed.router.probes) == 8 and routed.router.profiles["b"].overall_quality == 1.0


@pytest.fixture(scope="module")
def book() -> ReplayBook:
    return ReplayBook.from_routing_data(load_routing_data("mmlu_pro"))


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_default_router_is_the_pretrained_one(adapter, book):
    """No router, no data of one's own: three replayed real LLMs profiled on the pretrained probes, then a chain."""
    names = {"gemini-1.5-pro-002": 135.5, "Meta-Llama-3_1-8B-Instruct": 8.0, "Phi-3-mini-4k-instruct": 3.8}
    if adapter == "langchain":
        models = {n: (ReplayChatModel(book=book, model=n), c) for n, c in names.items()}
    else:
        models = {n: (ReplayLLM(book=book, model=n), c) for n, c in names.items()}
    routed = from_models(adapter, models, budget=40.0)
    assert routed.router.models == list(names) and len(routed.router.probes) == 300
    question = book.data.prompts[-1]
    if adapter == "langchain":
        chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | routed | StrOutputParser()
        answer = chain.invoke({"q": question})
    else:
        answer = routed.complete(question).text
    assert re.fullmatch(r"The answer is \([A-J]\)\.|I am not able to answer this question\.", answer)


class _UsageChat(ScriptedChat):
    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        result = super()._generate(messages, stop, run_manager, **kw)
        result.generations[0].message.usage_metadata = {"input_tokens": 200, "output_tokens": 50, "total_tokens": 250}
        return result


class _UsageLLM(ScriptedLLM):
    def complete(self, prompt: str, formatted: bool = False, **kw: Any) -> Any:
        response = super().complete(prompt, formatted, **kw)
        response.additional_kwargs = {"prompt_tokens": 200, "completion_tokens": 50}
        return response


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_members_priced_per_token_join_with_their_prices(adapter, mode, small_router):
    """``cost`` may be token prices in ``from_models`` as in ``add_model``: the member routes on the per-call cost
    of its typical call and its responses carry the actual cost of the call from the usage it reported."""
    priced = _UsageChat(answer_fn=always_a) if adapter == "langchain" else _UsageLLM(answer_fn=always_a)
    prices = {"input_per_mtok": 3.0, "output_per_mtok": 15.0, "typical_input_tokens": 500}
    members = {"priced": (priced, prices), "flat": (make_member(adapter, math_expert), 0.001)}
    cls = ChatUniRoute if adapter == "langchain" else UniRouteLLM
    if mode == "sync":
        routed = cls.from_models(members, router=small_router, show_progress=False, retries=0, lam=0.0)
    else:
        routed = asyncio.run(
            cls.afrom_models(members, router=small_router, show_progress=False, retries=0, lam=0.0)
        )
    assert routed.router.costs["priced"] == pytest.approx((500 * 3.0 + 250 * 15.0) / 1e6)
    assert routed.router.costs["flat"] == 0.001
    if adapter == "langchain":
        entry = routed.invoke("law contract court case 3").response_metadata["uniroute"]
    else:
        entry = routed.complete("law contract court case 3").additional_kwargs["uniroute"]
    assert entry["member"] == "priced"  # λ = 0: the better member, whatever it costs
    assert entry["usage"] == {"input_tokens": 200, "output_tokens": 50}
    assert entry["call_cost"] == pytest.approx((200 * 3.0 + 50 * 15.0) / 1e6)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_bad_token_prices_in_a_pool_spec_name_the_member(adapter, small_router):
    member = make_member(adapter, always_a)
    expected = r"member 'x': cost mapping needs 'input_per_mtok'.*missing \['output_per_mtok'\]"
    with pytest.raises(ValueError, match=expected):
        from_models(adapter, {"x": (member, {"input_per_mtok": 1.0})}, router=small_router)
    assert small_router.models == []
