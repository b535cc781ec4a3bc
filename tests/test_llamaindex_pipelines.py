"""UniRouteLLM inside LlamaIndex pipelines: a VectorStoreIndex query engine via Settings.llm, a FunctionAgent calling a
tool, structured output, and (slow, real data) profiling a replayed real model through add_model."""

from __future__ import annotations

import numpy as np
import pytest
from llama_index.core import Document, MockEmbedding, Settings, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.bridge.pydantic import BaseModel
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMChatStartEvent
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from llamaindex_helpers import MATH, event_log, two_topic_router  # noqa: F401 - event_log is a fixture

from uniroute_core import ProbeSet, UniRouter
from uniroute_core.replay import ReplayBook
from uniroute_llamaindex import UniRouteLLM
from uniroute_llamaindex.testing import ReplayLLM, ScriptedLLM

# ============================================================================ query engine


def test_vector_index_query_engine_answers_through_settings_llm(embedder, event_log, monkeypatch):
    router = two_topic_router(embedder)
    members = {name: ScriptedLLM(answer_fn=lambda p, name=name: f"{name}: 42") for name in ("small", "big")}
    llm = UniRouteLLM(router=router, members=members, lam=0.3)
    monkeypatch.setattr(Settings, "_llm", llm)
    monkeypatch.setattr(Settings, "_embed_model", MockEmbedding(embed_dim=8))

    docs = [
        Document(text="The answer to the math question about numbers is 42."),
        Document(text="Contracts in law need an offer and an acceptance."),
        Document(text="Prime numbers have exactly two divisors."),
    ]
    engine = VectorStoreIndex.from_documents(docs).as_query_engine(similarity_top_k=2)
    response = engine.query(MATH)

    # one LLM call for the compact synthesis, emitted once, by the router
    (start,) = event_log.of(LLMChatStartEvent)
    (end,) = event_log.of(LLMChatEndEvent)
    assert start.model_dict["class_name"] == "UniRouteLLM"
    member = end.response.additional_kwargs["uniroute"]["member"]
    assert str(response) == f"{member}: 42"
    assert members[member].calls == 1 and sum(m.calls for m in members.values()) == 1
    # the member saw the retrieved context and the question, formatted by LlamaIndex's QA template
    prompt_seen = start.messages[-1].content
    assert MATH in prompt_seen and len(response.source_nodes) == 2
    assert all(node.node.get_content() in prompt_seen for node in response.source_nodes)


# ============================================================================ agent


calls: list[tuple[int, int]] = []


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    calls.append((a, b))
    return a * b


def scripted_tool_member(name: str) -> MockFunctionCallingLLM:
    """Asks for multiply(6, 7) when it has tools and no tool result yet; then reports the result."""

    def respond(messages, **kwargs):
        results = [m for m in messages if m.role == MessageRole.TOOL]
        if results:
            return ChatMessage(role=MessageRole.ASSISTANT, content=f"{name}: the product is {results[-1].content}")
        assert [t.metadata.name for t in kwargs["tools"]] == ["multiply"]  # formatted by this member's prepare
        call = ToolCallBlock(tool_call_id=f"{name}-1", tool_name="multiply", tool_kwargs={"a": 6, "b": 7})
        return ChatMessage(role=MessageRole.ASSISTANT, blocks=[call])

    return MockFunctionCallingLLM(response_generator=respond)


@pytest.mark.parametrize("streaming", [True, False])
async def test_function_agent_calls_a_tool_through_the_router(embedder, event_log, streaming):
    calls.clear()
    router = two_topic_router(embedder)
    llm = UniRouteLLM(
        router=router, members={"small": scripted_tool_member("small"), "big": scripted_tool_member("big")}, lam=0.3
    )
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(fn=multiply)], llm=llm, streaming=streaming)
    output = await agent.run(user_msg=MATH)

    assert calls == [(6, 7)]
    assert output.response.content == "small: the product is 42"  # math goes to small with λ = 0.3, both steps
    # tool-call step + answer step, one router event each (MockFunctionCallingLLM.achat runs its own chat, whose
    # inner event also fires in the non-streaming agent, exactly as when the mock is used alone)
    starts = [e for e in event_log.of(LLMChatStartEvent) if e.model_dict["class_name"] == "UniRouteLLM"]
    assert len(starts) == 2
    routed = [e.response.additional_kwargs.get("uniroute") for e in event_log.of(LLMChatEndEvent)]
    assert {r["member"] for r in routed if r} == {"small"}


# ============================================================================ structured output


class Invoice(BaseModel):
    """An invoice's total."""

    total: float
    currency: str


def invoice_filler(messages, **kwargs):
    tools = kwargs.get("tools") or []
    assert [t.metadata.name for t in tools] == ["Invoice"]
    call = ToolCallBlock(tool_call_id="inv", tool_name="Invoice", tool_kwargs={"total": 12.5, "currency": "EUR"})
    return ChatMessage(role=MessageRole.ASSISTANT, blocks=[call])


async def test_structured_predict_goes_through_a_function_calling_member(embedder):
    router = two_topic_router(embedder)
    plain = ScriptedLLM(answer_fn=lambda p: "not a tool call")
    llm = UniRouteLLM(
        router=router, members={"small": plain, "big": MockFunctionCallingLLM(response_generator=invoice_filler)}
    )
    prompt = PromptTemplate("math question about numbers: read the invoice {text}")
    assert llm.structured_predict(Invoice, prompt, text="12.50 EUR") == Invoice(total=12.5, currency="EUR")
    assert await llm.astructured_predict(Invoice, prompt, text="12.50 EUR") == Invoice(total=12.5, currency="EUR")
    assert plain.calls == 0  # the non-function-calling member is never asked for tool calls


def test_structured_predict_without_function_calling_members_parses_text(embedder):
    router = two_topic_router(embedder)
    answer = '{"total": 3.0, "currency": "USD"}'
    members = {name: ScriptedLLM(answer_fn=lambda p: answer) for name in ("small", "big")}
    llm = UniRouteLLM(router=router, members=members)
    prompt = PromptTemplate("law question about contracts: read the invoice {text}")
    assert llm.structured_predict(Invoice, prompt, text="3 USD") == Invoice(total=3.0, currency="USD")


# ============================================================================ real data (slow)


@pytest.mark.slow
def test_add_model_of_a_replayed_model_reproduces_its_recorded_scores(mmlu_pro_path, embedder):
    """Profiling a replayed real model through UniRouteLLM.add_model gives exactly its recorded scores.

    The fast test embedder is enough here: the embedder decides clusters, not the per-probe scores under test.
    """
    book = ReplayBook.from_routing_data(mmlu_pro_path)
    probes = ProbeSet.from_routing_data(mmlu_pro_path, n=150, seed=1)
    router = UniRouter(embedder=embedder, n_clusters=4, show_progress=False).fit(list(probes.prompts))
    router.set_probes(probes)
    first, added = "Meta-Llama-3-70B", "Llama-2-7b-hf"
    assert {first, added} <= set(book.models)
    router.add_model(first, book.cost(first), book.recorded_scores(first, probes.prompts))
    llm = UniRouteLLM(router=router, members={first: ReplayLLM.from_routing_data(book, first)}, lam=0.1)

    profile = llm.add_model(added, ReplayLLM.from_routing_data(book, added), cost=book.cost(added), show_progress=False)

    recorded = book.recorded_scores(added, probes.prompts)
    np.testing.assert_array_equal(profile.probe_scores, recorded)
    assert 0 < np.nanmean(recorded) < 1  # a real mix of right and wrong answers, not a degenerate case
    # routed real prompts are answered exactly as the chosen model recorded
    for prompt in book.data.prompts[:5]:
        resp = llm.chat([ChatMessage(role=MessageRole.USER, content=prompt)])
        assert resp.message.content == book.answer(resp.additional_kwargs["uniroute"]["member"], prompt)
