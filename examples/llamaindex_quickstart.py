"""LlamaIndex quickstart: ten real LLMs behind one LLM, set as ``Settings.llm`` for a query engine and an agent,
offline.

1. Fit the router's cluster map on 6,000 unlabelled MMLU-Pro training prompts and set 500 graded probe prompts.
2. Add ten real LLMs with ONE ``UniRouteLLM.add_model`` call each (every member answers the probes, the answers are
   graded against the gold letters, and its per-cluster quality is computed). The members are ``ReplayLLM`` —
   LlamaIndex LLMs that answer exactly as the real LLM did (its recorded MMLU-Pro answers), so this runs with no
   network.
3. ``Settings.llm = UniRouteLLM(...)`` and answer a few hundred held-out questions with ``Settings.llm.complete`` at
   two budgets; print accuracy, cost and share of calls per member against "always the most accurate member" and
   "always the cheapest member", and say whether the router comes within 1 point of the most accurate member's
   accuracy at a clearly lower cost.
4. The same ``Settings.llm`` in LlamaIndex pipelines: a ``VectorStoreIndex`` query engine over a few notes (with
   ``MockEmbedding``, so retrieval is arbitrary; the answers are the replayed real models' recorded answers), and a
   ``FunctionAgent`` calling a tool. Replayed models cannot call tools, so a scripted ``MockFunctionCallingLLM`` joins
   the pool as its only tool-capable member; the router sends tool calls to function-calling members only.

    python examples/llamaindex_quickstart.py [--data DIR] [--n 400] [--budgets 20,80]
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from _mmlu_pro import POOL, build, data_folder, parse_args, print_verdicts, quickstart_options
from llama_index.core import Document, MockEmbedding, Settings, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.prompts import ChatPromptTemplate
from llama_index.core.tools import FunctionTool

from uniroute_core.grading import grade_multiple_choice
from uniroute_llamaindex import UNIROUTE_KEY, UniRouteLLM
from uniroute_llamaindex.testing import ReplayLLM

NOTES = [
    "MMLU-Pro questions have up to ten options, (A) to (J); a good answer ends with 'The answer is (X)'.",
    "In physics, work is force times displacement along the force; power is work per unit time.",
    "In law, a contract needs an offer, an acceptance and consideration.",
    "In economics, a price ceiling below the equilibrium price creates a shortage.",
    "In biology, mitochondria produce most of a cell's ATP by oxidative phosphorylation.",
]

# The query engine's QA prompt: retrieved notes in the system message, the question alone as the user message, so the
# router routes on the question (UniRouteLLM routes chats on the last user message) and the replayed members find it.
QA_TEMPLATE = ChatPromptTemplate(
    message_templates=[
        ChatMessage(role=MessageRole.SYSTEM, content="Notes that may help:\n{context_str}"),
        ChatMessage(role=MessageRole.USER, content="{query_str}"),
    ]
)

TOOL_MEMBER = "scripted-tool-caller"
AGENT_QUESTION = "A rectangular plot is 17 m by 23 m. What is its area in square metres? Use the multiply tool."


class RoutingRecords(BaseEventHandler):
    """Collects the ``uniroute`` record (chosen member, fallbacks, λ) of every chat the router answers."""

    records: list[dict[str, Any]] = []

    @classmethod
    def class_name(cls) -> str:
        return "RoutingRecords"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, LLMChatEndEvent) and event.response is not None:
            record = (event.response.additional_kwargs or {}).get(UNIROUTE_KEY)
            if record:
                self.records.append(record)


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def scripted_tool_calls(messages: list[ChatMessage], **kwargs: Any) -> ChatMessage:
    """The scripted tool-capable member: asks ``multiply`` for the first two integers of the question, then reports
    the tool's result. It is a script, not a model: it shows the plumbing of a tool call through the router."""
    results = [m for m in messages if m.role == MessageRole.TOOL]
    if results:
        return ChatMessage(role=MessageRole.ASSISTANT, content=f"The area is {results[-1].content} square metres.")
    question = next(m.content for m in reversed(messages) if m.role == MessageRole.USER) or ""
    a, b = (int(x) for x in re.findall(r"\d+", question)[:2])
    call = ToolCallBlock(tool_call_id="call-1", tool_name="multiply", tool_kwargs={"a": a, "b": b})
    return ChatMessage(role=MessageRole.ASSISTANT, blocks=[call])


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], quickstart_options("Settings.llm"))
    setup = build(data_folder(args.data), seed=args.seed)
    data, book = setup.data, setup.book

    t0 = time.perf_counter()
    pool = UniRouteLLM(router=setup.router, members={})  # an empty pool, filled with one add_model call per member
    for name in POOL:
        pool.add_model(name, ReplayLLM(book=book, model=name), cost=book.cost(name), show_progress=False)
    print(f"[pool] {len(POOL)} replayed real LLMs (ReplayLLM: their recorded MMLU-Pro answers) added with one "
          f"add_model call each ({time.perf_counter() - t0:.1f}s)")

    # ---------------------------------------------------------------- held-out questions through Settings.llm
    held = setup.held_out_sample(args.n)
    most_accurate, cheapest = setup.single_member_policies(held, POOL, setup.router.costs)
    verdicts = []
    for budget in [float(b) for b in args.budgets.split(",")]:
        Settings.llm = UniRouteLLM(router=setup.router, members=pool.members, budget=budget)
        t0 = time.perf_counter()
        members, scores = [], []
        for i in held:
            response = Settings.llm.complete(data.prompts[i])
            members.append(response.additional_kwargs[UNIROUTE_KEY]["member"])
            scores.append(grade_multiple_choice(response.text, data.references[i]))  # type: ignore[index]
        took = time.perf_counter() - t0
        verdicts.append(setup.report_budget(
            "UniRouteLLM", budget, members, scores, (most_accurate, cheapest),
            f"Settings.llm.complete in {took:.1f}s (answers replayed from the real models' records)",
        ))
    print_verdicts(verdicts)

    records = RoutingRecords(records=[])
    get_dispatcher().add_event_handler(records)

    # ---------------------------------------------------------------- a query engine with Settings.llm
    print(f"\n== VectorStoreIndex query engine with Settings.llm (the pool at budget {budget:g}) ==")
    print("Retrieval uses MockEmbedding (every note gets the same vector, so which notes are retrieved is arbitrary); "
          "the answers are the routed real model's RECORDED answer (replayed: it ignores the notes).")
    Settings.embed_model = MockEmbedding(embed_dim=8)
    engine = VectorStoreIndex.from_documents([Document(text=t) for t in NOTES]).as_query_engine(
        similarity_top_k=2, text_qa_template=QA_TEMPLATE
    )
    shown: set[str] = set()
    for i in held:
        category = data.categories[i] if data.categories is not None else "?"
        if category in shown:
            continue
        shown.add(category)
        response = engine.query(data.prompts[i])
        member = records.records[-1]["member"]
        correct = grade_multiple_choice(str(response), data.references[i])  # type: ignore[index]
        print(f"  [{category}] → {member}: {str(response)!r} (gold {data.references[i]}, "  # type: ignore[index]
              f"{'right' if correct else 'wrong'}; {len(response.source_nodes)} notes retrieved)")
        if len(shown) == 3:
            break

    # ---------------------------------------------------------------- an agent with a tool, through the router
    print("\n== FunctionAgent calling a tool through Settings.llm ==")
    print(f"Replayed models cannot call tools, so {TOOL_MEMBER!r} — a SCRIPTED MockFunctionCallingLLM, not a real "
          "model — joins the pool with one add_model call; it is the pool's only function-calling member, so the "
          "router sends every tool-calling step to it.")
    tool_member = MockFunctionCallingLLM(response_generator=scripted_tool_calls)
    profile = Settings.llm.add_model(TOOL_MEMBER, tool_member, cost=1.0, show_progress=False)
    print(f"  add_model({TOOL_MEMBER!r}, cost=1): probe accuracy {profile.overall_quality:.4f} (its plain "
          "completions just echo the prompt)")
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(fn=multiply)], llm=Settings.llm, streaming=False)
    before = len(records.records)

    async def run_agent() -> Any:
        return await agent.run(user_msg=AGENT_QUESTION)  # a workflow: it must start inside a running event loop

    output = asyncio.run(run_agent())
    steps = records.records[before:]
    tools_called = [(c.tool_name, c.tool_kwargs, c.tool_output.content) for c in output.tool_calls]
    print(f"  question: {AGENT_QUESTION}")
    print(f"  tool calls: {tools_called}")
    print(f"  answer: {output.response.content}")
    print(f"  routed steps: {[(r['member'], r['fallbacks']) for r in steps]} (member, fallbacks)")
    get_dispatcher().event_handlers.remove(records)


if __name__ == "__main__":
    main()
