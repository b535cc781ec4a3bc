"""Serving through both adapters: no embedding on the event loop, calls arriving together share one encoder call,
``batch`` embeds all items at once, the live budget and realised cost in the metadata, token prices, and RAG prompts
routed on the question.

Pool (fast bag-of-words test embedder, K = 2): "cheap" (cost 1) is right on math probes and wrong on history ones,
"strong" (cost 10) is right on all; with λ = 0.3 math → cheap and history → strong (worked out in
tests/test_langchain_chat.py for the same scores).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import topic_embedder
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate
from llama_index.core import Document, MockEmbedding, Settings, VectorStoreIndex
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole

from uniroute_core import ProbeSet, UniRouter
from uniroute_core.routing_text import word_window
from uniroute_langchain import ChatUniRoute
from uniroute_langchain.testing import FakeToolCallingChatModel
from uniroute_llamaindex import UniRouteLLM
from uniroute_llamaindex.testing import ScriptedLLM

MATH = [f"math algebra equation problem {i}" for i in range(10)]
HISTORY = [f"history empire war century {i}" for i in range(10)]
MATH_Q = "math algebra equation: solve for x"
HISTORY_Q = "history empire war: which century"
CONTEXT = " ".join(f"retrieved{i % 37} passage{i % 11} text{i % 5}" for i in range(134))[:]  # ~400 words


class CountingEmbedder:
    """The topic embedder, counting calls; optionally blocking each call until ``release`` is set."""

    name = "counting-topic"

    def __init__(self, window: int | None = None) -> None:
        self.calls: list[list[str]] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()
        self.block_first = False
        if window is not None:
            self.text_window = word_window(window)

    def embed(self, texts: Any, *, show_progress: bool = True) -> np.ndarray:
        texts = list(texts)
        self.calls.append(texts)
        self.entered.set()
        if self.block_first and len(self.calls) == 1:
            assert self.release.wait(10), "the test never released the embedder"
        return topic_embedder(texts)


def _count_submitted(selector: Any) -> list[int]:
    """Spy on the selector's batcher: the returned list grows by one per routing request queued."""
    submitted: list[int] = []
    submit_many = selector._batcher.submit_many

    def spy(requests: Any) -> Any:
        futures = submit_many(requests)
        submitted.extend([1] * len(requests))
        return futures

    selector._batcher.submit_many = spy
    return submitted


def _router(embedder: Any) -> UniRouter:
    r = UniRouter(embedder=embedder, n_clusters=2, show_progress=False).fit(MATH + HISTORY)
    r.set_probes(ProbeSet(prompts=MATH + HISTORY, references=["A"] * 20, grader="multiple_choice"))
    r.add_model("cheap", 1.0, [1.0] * 10 + [0.0] * 10)
    r.add_model("strong", 10.0, [1.0] * 20)
    return r


def _langchain(router: UniRouter, **kw: Any) -> ChatUniRoute:
    members = {n: FakeToolCallingChatModel(model_name=f"fake-{n}") for n in ("cheap", "strong")}
    return ChatUniRoute(router=router, members=members, **kw)


def _llamaindex(router: UniRouter, **kw: Any) -> UniRouteLLM:
    members = {n: ScriptedLLM(answer_fn=lambda p, n=n: f"{n} says 42") for n in ("cheap", "strong")}
    return UniRouteLLM(router=router, members=members, **kw)


def _lc_member(message: Any) -> str:
    return message.response_metadata["uniroute"]["member"]


def _li_member(response: Any) -> str:
    return response.additional_kwargs["uniroute"]["member"]


def _user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.USER, content=text)]


ASYNC_CALLS: dict[str, tuple[Callable[..., Any], Callable[[Any, str], Any], Callable[[Any], str]]] = {
    "langchain": (_langchain, lambda m, p: m.ainvoke(p), _lc_member),
    "llamaindex": (_llamaindex, lambda m, p: m.achat(_user(p)), _li_member),
}
SYNC_CALLS: dict[str, tuple[Callable[..., Any], Callable[[Any, str], Any], Callable[[Any], str]]] = {
    "langchain": (_langchain, lambda m, p: m.invoke(p), _lc_member),
    "llamaindex": (_llamaindex, lambda m, p: m.chat(_user(p)), _li_member),
}


# ============================================================================ no embedding on the loop, shared batches


@pytest.mark.parametrize("adapter", list(ASYNC_CALLS))
def test_async_calls_embed_off_the_loop_and_share_one_encoder_call(adapter):
    """The first encoder call blocks until a task ON THE LOOP releases it, once every call has queued its request:
    had the embedding run on the loop, that task could never run (the call would time out)."""
    build, call, member_of = ASYNC_CALLS[adapter]
    embedder = CountingEmbedder()
    model = build(_router(embedder), lam=0.3)
    embedder.calls.clear()
    embedder.release.clear()
    embedder.block_first = True
    submitted = _count_submitted(model._selector())
    prompts = [MATH_Q, HISTORY_Q] * 10

    async def releaser() -> None:
        while not (embedder.entered.is_set() and len(submitted) == len(prompts)):
            await asyncio.sleep(0.002)
        embedder.release.set()

    async def main() -> list[Any]:
        results = await asyncio.wait_for(asyncio.gather(*(call(model, p) for p in prompts), releaser()), 20)
        return list(results[:-1])

    results = asyncio.run(main())
    assert [member_of(r) for r in results] == ["cheap", "strong"] * 10
    # one encoder call for the first batch, at most ONE for every call that arrived while it ran
    assert 1 <= len(embedder.calls) <= 2
    assert all(sorted(c) in ([MATH_Q], [HISTORY_Q], sorted([MATH_Q, HISTORY_Q])) for c in embedder.calls)


@pytest.mark.parametrize("adapter", list(SYNC_CALLS))
def test_threads_calling_invoke_share_a_batch(adapter):
    build, call, member_of = SYNC_CALLS[adapter]
    embedder = CountingEmbedder()
    model = build(_router(embedder), lam=0.3)
    embedder.calls.clear()
    embedder.release.clear()
    embedder.block_first = True
    submitted = _count_submitted(model._selector())
    results: dict[int, str] = {}
    prompts = [MATH_Q, HISTORY_Q] * 6
    threads = [
        threading.Thread(target=lambda i=i, p=p: results.__setitem__(i, member_of(call(model, p))))
        for i, p in enumerate(prompts)
    ]
    for t in threads:
        t.start()
    assert embedder.entered.wait(10)
    while len(submitted) < len(prompts):
        threading.Event().wait(0.002)
    embedder.release.set()
    for t in threads:
        t.join(10)
    assert [results[i] for i in range(len(prompts))] == ["cheap", "strong"] * 6
    assert 1 <= len(embedder.calls) <= 2  # 12 calls from 12 threads: at most two encoder calls


def test_langchain_batch_and_abatch_embed_every_item_in_one_call():
    embedder = CountingEmbedder()
    chat = _langchain(_router(embedder), lam=0.3)
    prompts = [f"{MATH_Q} {i}" for i in range(6)] + [f"{HISTORY_Q} {i}" for i in range(6)]
    embedder.calls.clear()
    out = chat.batch(prompts, config={"max_concurrency": 2})
    assert [_lc_member(m) for m in out] == ["cheap"] * 6 + ["strong"] * 6
    assert embedder.calls == [prompts]
    embedder.calls.clear()
    out = asyncio.run(chat.abatch(prompts, config={"max_concurrency": 2}))
    assert [_lc_member(m) for m in out] == ["cheap"] * 6 + ["strong"] * 6
    assert embedder.calls == [prompts]


# ============================================================================ live budget, realised cost, prices


@pytest.mark.parametrize("adapter", list(SYNC_CALLS))
def test_metadata_reports_the_realised_mean_cost_so_far(adapter):
    build, call, member_of = SYNC_CALLS[adapter]
    model = build(_router(topic_embedder), budget=5.5)
    costs = {"cheap": 1.0, "strong": 10.0}
    seen = []
    for p in [MATH_Q, HISTORY_Q, MATH_Q, MATH_Q]:
        r = call(model, p)
        entry = r.response_metadata["uniroute"] if adapter == "langchain" else r.additional_kwargs["uniroute"]
        seen.append(costs[entry["member"]])
        assert entry["budget"] == 5.5
        assert entry["calls_served"] == len(seen)
        assert entry["realised_mean_cost"] == pytest.approx(np.mean(seen))


@pytest.mark.parametrize("adapter", list(SYNC_CALLS))
def test_live_budget_through_an_adapter_keeps_to_the_budget_on_shifted_traffic(adapter):
    """Three members; probes half math, half history. Budget 5.5 on the probes = history → cheap, math → strong.
    All-math traffic would cost 10 per call with the probe λ; the live budget moves it to "mid" (4 per call)."""
    probes = MATH + HISTORY
    router = UniRouter(embedder=topic_embedder, n_clusters=2, shrinkage=0.0, show_progress=False).fit(probes)
    router.set_probes(ProbeSet(prompts=probes, references=["A"] * 20, grader="multiple_choice"))
    router.add_model("cheap", 1.0, [0.2] * 10 + [0.9] * 10)
    router.add_model("mid", 4.0, [0.6] * 10 + [0.9] * 10)
    router.add_model("strong", 10.0, [0.95] * 20)
    assert {d.model for d in router.route([MATH_Q], budget=5.5)} == {"strong"}  # the probe-only choice
    _, call, member_of = SYNC_CALLS[adapter]
    names = ("cheap", "mid", "strong")
    if adapter == "langchain":
        model: Any = ChatUniRoute(router=router, members={n: FakeToolCallingChatModel() for n in names}, budget=5.5)
        entry_of: Callable[[Any], dict[str, Any]] = lambda r: r.response_metadata["uniroute"]  # noqa: E731
    else:
        model = UniRouteLLM(router=router, members={n: ScriptedLLM(answer_fn=lambda p: "A") for n in names}, budget=5.5)
        entry_of = lambda r: r.additional_kwargs["uniroute"]  # noqa: E731
    costs = {"cheap": 1.0, "mid": 4.0, "strong": 10.0}
    entries = [entry_of(call(model, f"{MATH_Q} {i}")) for i in range(60)]
    last = np.mean([costs[e["member"]] for e in entries[-30:]])
    assert 0.6 * 5.5 <= last <= 1.05 * 5.5
    assert entries[-1]["mode"] == "budget" and entries[-1]["realised_mean_cost"] <= 1.05 * 5.5


def test_token_prices_give_the_call_cost_from_the_members_usage():
    router = _router(topic_embedder)
    chat = _langchain(router, lam=0.3)
    prices = {"input_per_mtok": 1.0, "output_per_mtok": 4.0}
    chat.add_model("priced", FakeToolCallingChatModel(model_name="fake-priced"), cost=prices, show_progress=False)
    entry = chat.invoke(MATH_Q, model="priced").response_metadata["uniroute"]
    usage = entry["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert entry["call_cost"] == pytest.approx((usage["input_tokens"] * 1.0 + usage["output_tokens"] * 4.0) / 1e6)
    assert router.costs["priced"] == pytest.approx((1000 * 1.0 + 250 * 4.0) / 1e6)


def test_llamaindex_token_prices_read_the_usage_members_report():
    router = _router(topic_embedder)

    class Counting(ScriptedLLM):
        def chat(self, messages: Any, **kw: Any) -> ChatResponse:
            response = super().chat(messages, **kw)
            response.additional_kwargs = {"prompt_tokens": 120, "completion_tokens": 30}
            return response

    llm = _llamaindex(router, lam=0.3)
    llm.add_model("priced", Counting(answer_fn=lambda p: "A"), cost={"input_per_mtok": 2.0, "output_per_mtok": 8.0},
                  show_progress=False)
    entry = llm.chat(_user(MATH_Q))
    record = entry.additional_kwargs["uniroute"]
    assert record["call_cost"] == pytest.approx((120 * 2.0 + 30 * 8.0) / 1e6)


class _UsageReportingLLM(ScriptedLLM):
    """A LlamaIndex member reporting its token usage: on the response, and on the LAST chunk of its streams."""

    def chat(self, messages: Any, **kw: Any) -> ChatResponse:
        response = super().chat(messages, **kw)
        response.additional_kwargs = {"prompt_tokens": 120, "completion_tokens": 30}
        return response

    def stream_chat(self, messages: Any, **kw: Any) -> Any:
        chunks = list(super().stream_chat(messages, **kw))
        chunks[-1].additional_kwargs = {"prompt_tokens": 120, "completion_tokens": 30}
        return iter(chunks)

    async def astream_chat(self, messages: Any, **kw: Any) -> Any:
        chunks = list(self.stream_chat(messages, **kw))

        async def gen() -> Any:
            for c in chunks:
                yield c

        return gen()


LI_PRICES = {"input_per_mtok": 2.0, "output_per_mtok": 8.0}


def _li_stream(llm: UniRouteLLM, prompt: str, mode: str) -> list[ChatResponse]:
    if mode == "sync":
        return list(llm.stream_chat(_user(prompt), model="priced"))

    async def go() -> list[ChatResponse]:
        return [c async for c in await llm.astream_chat(_user(prompt), model="priced")]

    return asyncio.run(go())


def _lc_stream(chat: ChatUniRoute, prompt: str, mode: str) -> list[Any]:
    if mode == "sync":
        return list(chat.stream(prompt, model="priced"))

    async def go() -> list[Any]:
        return [c async for c in chat.astream(prompt, model="priced")]

    return asyncio.run(go())


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_streamed_call_is_priced_from_the_usage_its_chunks_report_langchain(mode):
    router = _router(topic_embedder)
    chat = _langchain(router, lam=0.3)
    prices = {"input_per_mtok": 1.0, "output_per_mtok": 4.0}
    chat.add_model("priced", FakeToolCallingChatModel(model_name="fake-priced"), cost=prices, show_progress=False)
    chunks = _lc_stream(chat, MATH_Q, mode)
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    entry = merged.response_metadata["uniroute"]
    usage = merged.usage_metadata
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    # the call cost is the price of the usage summed over the chunks, as LangChain itself sums it
    assert entry["usage"] == {"input_tokens": usage["input_tokens"], "output_tokens": usage["output_tokens"]}
    assert entry["call_cost"] == pytest.approx((usage["input_tokens"] * 1.0 + usage["output_tokens"] * 4.0) / 1e6)
    assert entry["calls_served"] == 1 and entry["realised_mean_cost"] == pytest.approx(entry["call_cost"])
    # the first chunk a consumer holds carries the same entry, complete once the stream has ended
    assert chunks[0].response_metadata["uniroute"]["call_cost"] == entry["call_cost"]
    # a second call is counted once more, not twice
    assert chat.invoke(MATH_Q, model="priced").response_metadata["uniroute"]["calls_served"] == 2


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_streamed_call_is_priced_from_the_usage_its_chunks_report_llamaindex(mode):
    router = _router(topic_embedder)
    llm = _llamaindex(router, lam=0.3)
    llm.add_model("priced", _UsageReportingLLM(answer_fn=lambda p: "the answer is A"), cost=LI_PRICES,
                  show_progress=False)
    chunks = _li_stream(llm, MATH_Q, mode)
    assert len(chunks) > 1
    record = chunks[-1].additional_kwargs["uniroute"]
    assert record["member"] == "priced"
    assert record["usage"] == {"input_tokens": 120, "output_tokens": 30}
    assert record["call_cost"] == pytest.approx((120 * 2.0 + 30 * 8.0) / 1e6)
    assert record["calls_served"] == 1
    assert chunks[0].additional_kwargs["uniroute"]["call_cost"] == record["call_cost"]  # one entry for the call
    assert llm.chat(_user(MATH_Q), model="priced").additional_kwargs["uniroute"]["calls_served"] == 2


def test_a_stream_closed_early_is_still_counted_once_in_both_adapters():
    router = _router(topic_embedder)
    chat = _langchain(router, lam=0.3)
    stream = chat.stream(MATH_Q + " " + "word " * 20)
    first = next(stream)
    stream.close()  # the consumer stops reading: the call was served all the same
    assert first.response_metadata["uniroute"]["calls_served"] == 1
    assert chat.invoke(MATH_Q).response_metadata["uniroute"]["calls_served"] == 2

    llm = _llamaindex(_router(topic_embedder), lam=0.3)
    li_stream = llm.stream_chat(_user(MATH_Q))
    head = next(li_stream)
    li_stream.close()
    assert head.additional_kwargs["uniroute"]["calls_served"] == 1
    assert llm.chat(_user(MATH_Q)).additional_kwargs["uniroute"]["calls_served"] == 2


# ============================================================================ RAG prompts routed on the question


@pytest.mark.parametrize(("question", "alone"), [(MATH_Q, "cheap"), (HISTORY_Q, "strong")])
def test_llamaindex_query_engine_routes_on_the_query_not_the_retrieved_context(question, alone, monkeypatch):
    router = _router(topic_embedder)
    seen: dict[str, list[str]] = {"cheap": [], "strong": []}
    members = {n: ScriptedLLM(answer_fn=lambda p, n=n: seen[n].append(p) or f"{n} says 42") for n in seen}
    llm = UniRouteLLM(router=router, members=members, lam=0.3)
    assert _li_member(llm.chat(_user(question))) == alone
    monkeypatch.setattr(Settings, "_llm", llm)
    monkeypatch.setattr(Settings, "_embed_model", MockEmbedding(embed_dim=8))
    engine = VectorStoreIndex.from_documents([Document(text=CONTEXT)]).as_query_engine(similarity_top_k=1)
    sync_answer = engine.query(question)
    async_answer = asyncio.run(engine.aquery(question))
    streaming = VectorStoreIndex.from_documents([Document(text=CONTEXT)]).as_query_engine(
        similarity_top_k=1, streaming=True
    )
    streamed = "".join(streaming.query(question).response_gen)
    assert str(sync_answer) == str(async_answer) == streamed == f"{alone} says 42"
    other = "strong" if alone == "cheap" else "cheap"
    assert not seen[other]  # every call went to the member of the question alone
    assert len(seen[alone]) == 4 and all(CONTEXT[:100] in p and question in p for p in seen[alone][1:])


def _rag_chain(chat: ChatUniRoute) -> Any:
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer from the context."), ("human", "Context:\n{context}\n\nQuestion: {question}")]
    )
    return prompt | chat


@pytest.mark.parametrize(("question", "alone"), [(MATH_Q, "cheap"), (HISTORY_Q, "strong")])
def test_langchain_rag_message_routes_as_its_question_with_the_tail_window(question, alone):
    """One human message of a 400-word context then the question: the tail window (here as long as the question
    line) covers its end."""
    embedder = CountingEmbedder(window=len(f"Question: {question}".split()))
    chat = _langchain(_router(embedder), lam=0.3, serving={"text_window": "tail"})
    assert _lc_member(chat.invoke(question)) == alone
    assert _lc_member(_rag_chain(chat).invoke({"context": CONTEXT, "question": question})) == alone
    assert embedder.calls[-1] == [f"Question: {question}"]  # the window the encoder read


@pytest.mark.parametrize(("question", "alone"), [(MATH_Q, "cheap"), (HISTORY_Q, "strong")])
def test_langchain_route_on_a_callable_routes_on_what_it_returns(question, alone):
    def question_only(messages: list[BaseMessage]) -> str:
        return str(messages[-1].content).rsplit("Question:", 1)[-1]

    chat = _langchain(_router(topic_embedder), lam=0.3, route_on=question_only)
    assert _lc_member(_rag_chain(chat).invoke({"context": CONTEXT, "question": question})) == alone
    assert _lc_member(chat.invoke([HumanMessage(content=f"{CONTEXT}\nQuestion: {question}")])) == alone


def test_langchain_route_on_callable_must_return_text():
    chat = _langchain(_router(topic_embedder), lam=0.3, route_on=lambda messages: None)
    with pytest.raises(TypeError, match="route_on"):
        chat.invoke(MATH_Q)


def test_the_core_window_keeps_context_out_of_a_long_routing_text():
    """Without the window (head), the context decides; with the default (tail), the question does."""
    embedder = CountingEmbedder(window=8)
    router = _router(embedder)
    long = f"{CONTEXT}\n\nQuestion: {HISTORY_Q}"
    head = _langchain(router, lam=0.3, serving={"text_window": "head"})
    tail = _langchain(router, lam=0.3, serving={"text_window": "tail"})
    head.invoke(long)
    assert embedder.calls[-1] == [" ".join(CONTEXT.split()[:8])]
    assert _lc_member(tail.invoke(long)) == "strong"


@pytest.mark.parametrize("question_first", [False, True])
def test_the_default_window_reads_a_short_question_before_or_after_the_context(question_first):
    """Default ``head_tail``: a quarter of the window from the start, the rest from the end, so a question that fits
    in the quarter is read before the context, and one that fits in the rest after it."""
    question = "Question: " + MATH_Q
    n = len(question.split())
    embedder = CountingEmbedder(window=4 * n)  # the head quarter holds a leading question, the tail a trailing one
    chat = _langchain(_router(embedder), lam=0.3)
    text = f"{question}\n{CONTEXT}" if question_first else f"{CONTEXT}\n{question}"
    chat.invoke(text)
    (read,) = embedder.calls[-1]
    assert question in read and len(read.split()) == 4 * n - 1
