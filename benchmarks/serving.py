"""Serving live traffic: concurrency without blocking the loop, shared batches, and a budget kept on shifted traffic.

Four figures, each measured in this one run (interleaved repeats where two timings are compared):

1. **Concurrency** — N concurrent ``ainvoke`` (LangChain ``ChatUniRoute``) and ``achat`` (LlamaIndex ``UniRouteLLM``)
   over members that ``await asyncio.sleep(0.2)``, routed with the real packaged embedder (all-MiniLM-L6-v2, no
   cache), vs the reference: one batched ``router.route`` of the same N prompts + 0.2 s. Goal: ratio ≤ 1.5. A
   heartbeat task on the loop (``sleep(0.005)`` in a loop) records its longest wait beyond 5 ms. Goal: ≤ 100 ms.
   Each adapter runs twice per repeat, with Python's default GC and with ``gc.freeze()`` after start-up (a full
   collection of the large start-up heap alone holds the loop 100–300 ms; see the README's serving notes), and the
   same 200 calls are made straight to one member with no router: the frameworks' own floor (their callbacks and
   instrumentation for 200 calls started in one loop iteration run on the loop whatever the router does).
2. **Threads** — T threads calling ``invoke`` at once: how many routing batches served them.
3. **Batch vs item by item** — ``router.route`` of N prompts one at a time vs once; and ``ChatUniRoute.batch``'s
   encoder calls.
4. **Live budget on shifted traffic** (real MMLU-Pro answers) — the budget is set on the balanced probe set, then
   300 held-out questions of one category are served: the mean cost over the last 150 calls with
   the probe-only λ and with the live controller, side by side, with the quality each got.

5. **Long prompts** — held-out questions behind a 400-word unrelated context, in two RAG layouts (context first,
   question first), embedded with the encoder's window over the head (what the encoder does by itself), the tail,
   or head + tail of the text: agreement with routing the question alone, and Area on the real answers.

    python benchmarks/serving.py [--data DIR] [--n 200] [--repeats 3] [--shift 20:history,6:math] [--long 300]
                                 [--only 1,2,3,4,5]

``--shift`` lists budget:category pairs (with the examples' ten-model pool, all-history traffic at budget 20 costs
about 2× the budget with the probe λ, all-math at budget 6 about 1.3×).
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import threading
import time
from typing import Any

import numpy as np
from _common import add_pool, build, data_folder, machine, parse_args
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_chat_callback

from uniroute_core.delegation import MemberSelector, SelectRequest
from uniroute_core.embedding import CallableEmbedder, default_embedder
from uniroute_core.policy import RoutingPolicy
from uniroute_core.router import UniRouter
from uniroute_langchain import ChatUniRoute
from uniroute_llamaindex import UniRouteLLM

DELAY = 0.2


class SleepyChat(BaseChatModel):
    """A LangChain member that takes DELAY seconds to answer (awaits on the loop when called async)."""

    @property
    def _llm_type(self) -> str:
        return "sleepy"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        time.sleep(DELAY)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="A"))])

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        await asyncio.sleep(DELAY)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="A"))])


class SleepyLLM(CustomLLM):
    """A LlamaIndex member that takes DELAY seconds to answer (awaits on the loop when called async)."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_chat_model=True, model_name="sleepy")

    def complete(self, prompt: str, formatted: bool = False, **kw: Any) -> CompletionResponse:
        time.sleep(DELAY)
        return CompletionResponse(text="A")

    def stream_complete(self, prompt: str, formatted: bool = False, **kw: Any) -> CompletionResponseGen:
        yield self.complete(prompt)

    @llm_chat_callback()  # as real LlamaIndex members are: their own instrumentation runs on the loop too
    async def achat(self, messages: Any, **kw: Any) -> ChatResponse:
        await asyncio.sleep(DELAY)
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content="A"))


async def _with_heartbeat(make_calls: Any) -> tuple[float, float]:
    """Run the calls concurrently with a heartbeat task; (wall seconds, longest heartbeat stall in seconds)."""
    stall = 0.0
    done = False

    async def heartbeat() -> None:
        nonlocal stall
        while not done:
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            stall = max(stall, time.perf_counter() - t - 0.005)

    beat = asyncio.create_task(heartbeat())
    await asyncio.sleep(0.02)  # the heartbeat is running before the calls start
    t0 = time.perf_counter()
    await asyncio.gather(*make_calls())
    wall = time.perf_counter() - t0
    done = True
    await beat
    return wall, stall


def concurrency(setup: Any, prompts: list[str], repeats: int) -> None:
    router = setup.router
    names = router.models
    chat = ChatUniRoute(router=router, members={n: SleepyChat() for n in names}, lam=0.3)
    llm = UniRouteLLM(router=router, members={n: SleepyLLM() for n in names}, lam=0.3)
    router.route(prompts[:8])  # warm-up: load the encoder

    def reference() -> float:
        t0 = time.perf_counter()
        router.route(prompts)
        return time.perf_counter() - t0 + DELAY

    def lc() -> tuple[float, float]:
        return asyncio.run(_with_heartbeat(lambda: [chat.ainvoke(p) for p in prompts]))

    def li() -> tuple[float, float]:
        msgs = [[ChatMessage(role=MessageRole.USER, content=p)] for p in prompts]
        return asyncio.run(_with_heartbeat(lambda: [llm.achat(m) for m in msgs]))

    # the frameworks' own floor: the same 200 calls made straight to one member, no router (their callbacks and
    # instrumentation for 200 calls started in one loop iteration run on the loop whatever UniRoute does)
    lc_member, li_member = SleepyChat(), SleepyLLM()

    def lc_direct() -> tuple[float, float]:
        return asyncio.run(_with_heartbeat(lambda: [lc_member.ainvoke(p) for p in prompts]))

    def li_direct() -> tuple[float, float]:
        msgs = [[ChatMessage(role=MessageRole.USER, content=p)] for p in prompts]
        return asyncio.run(_with_heartbeat(lambda: [li_member.achat(m) for m in msgs]))

    # Python's cyclic GC: a full (generation-2) collection walks every tracked object of the process — torch,
    # transformers, LangChain, LlamaIndex and pydantic make that heap large, and one full pass holds the loop thread
    # 100–300 ms whatever the code on the loop is. ``gc.freeze()`` after start-up moves the start-up heap out of the
    # collector's sight (the usual remedy for long-running servers), so each run is measured both ways, interleaved.
    lc()  # warm-up of both adapters' first-call paths (lazy imports, thread pools) before anything is timed
    li()
    pauses: dict[bool, list[float]] = {False: [], True: []}
    started: list[float] = []
    frozen_now = [False]

    def gc_timer(phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            pauses[frozen_now[0]].append(time.perf_counter() - started.pop())

    gc.callbacks.append(gc_timer)
    ref: list[float] = []
    runs: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    b0 = chat._selector().batches_run, llm._selector().batches_run
    for _ in range(repeats):  # interleaved, so background load hits every variant alike
        ref.append(reference())
        for frozen in (False, True):
            if frozen:
                gc.collect()
                gc.freeze()
            frozen_now[0] = frozen
            try:
                runs.setdefault(("ChatUniRoute.ainvoke", frozen), []).append(lc())
                runs.setdefault(("UniRouteLLM.achat", frozen), []).append(li())
                runs.setdefault(("member.ainvoke, no router", frozen), []).append(lc_direct())
                runs.setdefault(("member.achat, no router", frozen), []).append(li_direct())
            finally:
                if frozen:
                    gc.unfreeze()
    gc.callbacks.remove(gc_timer)
    r = statistics.median(ref)
    print(f"\n[1] {len(prompts)} concurrent calls over members that await {DELAY} s, real all-MiniLM-L6-v2 "
          f"(median of {repeats}, interleaved):")
    print(f"    reference: one batched router.route of the {len(prompts)} prompts + {DELAY} s = {r:.2f} s")
    for (label, frozen), got in runs.items():
        wall = statistics.median(x[0] for x in got)
        stall = max(x[1] for x in got)
        heap = "gc.freeze() after start-up" if frozen else "default GC"
        goal = "" if "no router" in label else " (goal ≤ 1.5)"
        print(f"    {label:26s} {heap:27s} {wall:6.2f} s  ratio {wall / r:.2f}{goal:13s} longest loop stall "
              f"{stall * 1000:4.0f} ms over {repeats} runs{'' if goal == '' else ' (goal ≤ 100 ms)'}")
    for frozen, got in pauses.items():
        heap = "gc.freeze() after start-up" if frozen else "default GC"
        longest = f"{max(got) * 1000:.0f} ms" if got else "-"
        print(f"    full (gen-2) GC collections during the timed calls, {heap}: {len(got)}, longest {longest}")
    b1 = chat._selector().batches_run, llm._selector().batches_run
    print(f"    routing batches: ChatUniRoute {(b1[0] - b0[0]) / (2 * repeats):.1f} per {len(prompts)} calls, "
          f"UniRouteLLM {(b1[1] - b0[1]) / (2 * repeats):.1f}")


def threads(setup: Any, prompts: list[str], n_threads: int) -> None:
    router = setup.router
    chat = ChatUniRoute(router=router, members={n: SleepyChat() for n in router.models}, lam=0.3)
    chat.invoke(prompts[0])
    before = chat._selector().batches_run
    barrier = threading.Barrier(n_threads)

    def call(p: str) -> None:
        barrier.wait()
        chat.invoke(p)

    ts = [threading.Thread(target=call, args=(p,)) for p in prompts[:n_threads]]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    print(f"\n[2] {n_threads} threads calling ChatUniRoute.invoke at once (members sleep {DELAY} s): "
          f"{chat._selector().batches_run - before} routing batches, {wall:.2f} s")


def batching(setup: Any, prompts: list[str], repeats: int) -> None:
    router = setup.router
    one_by_one, batched = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for p in prompts:
            router.route([p])
        one_by_one.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        router.route(prompts)
        batched.append(time.perf_counter() - t0)
    a, b = statistics.median(one_by_one), statistics.median(batched)
    print(f"\n[3] router.route of {len(prompts)} prompts: one at a time {a:.2f} s, in one call {b:.2f} s "
          f"({a / b:.1f}× faster batched; median of {repeats}, interleaved)")
    embedder = router.embedder
    calls = []
    inner = embedder.embed

    def counting(texts: Any, **kw: Any) -> Any:
        calls.append(len(texts))
        return inner(texts, **kw)

    chat = ChatUniRoute(router=router, members={n: SleepyChat() for n in router.models}, lam=0.3)
    embedder.embed = counting  # type: ignore[method-assign]
    try:
        t0 = time.perf_counter()
        chat.batch(prompts)
        wall = time.perf_counter() - t0
    finally:
        del embedder.embed  # type: ignore[method-assign]
    print(f"    ChatUniRoute.batch of {len(prompts)} inputs: {len(calls)} encoder call(s) of {calls} texts, "
          f"{wall:.2f} s (members sleep {DELAY} s each)")


def live_budget(setup: Any, budget: float, category: str, n_calls: int = 300) -> None:
    data = setup.data
    # the same MiniLM vectors, read from the setup's embeddings (this figure is about λ, not encoder speed)
    row = {t: k for k, t in enumerate(data.prompts)}
    lookup = CallableEmbedder(lambda texts: setup.embeddings[[row[t] for t in texts]], name="all-MiniLM-L6-v2")
    router = UniRouter.from_state(setup.router.state, embedder=lookup)
    names = router.models
    cols = [data.models.index(n) for n in names]
    cats = np.asarray(data.categories)
    distinct = [int(i) for i in setup.held_out if cats[i] == category][:n_calls]
    if not distinct:
        raise SystemExit(f"no held-out {category!r} questions; categories: {sorted(set(cats))}")
    held = [distinct[k % len(distinct)] for k in range(n_calls)]  # cycled when the category has fewer
    state = router.state
    costs = state.costs
    cal = state.calibration(budget)
    print(f"\n[4] live budget on shifted traffic: budget {budget} per call (cost = {data.cost_unit}), set on the "
          f"{len(router.probes)} balanced probes (λ = {cal.lam:.4f}, expected {cal.expected_cost:.2f} per call there); "
          f"then {n_calls} calls of held-out {category!r} questions ({len(distinct)} distinct, cycled)")
    prompts = [data.prompts[i] for i in held]
    true = data.scores[np.ix_(held, cols)]
    # probe-only: the λ calibrated on the probes, kept for every call (the behaviour before the live controller)
    fixed = router.route(prompts, lam=cal.lam)
    fixed_cost = np.array([d.cost for d in fixed])
    fixed_q = np.array([true[k, names.index(d.model)] for k, d in enumerate(fixed)])
    # live: the adapters' selector, batches of 10 calls (as concurrent traffic would arrive), costs recorded per call
    selector = MemberSelector(router, policy=RoutingPolicy(budget=budget))
    live_cost, live_q = [], []
    for start in range(0, n_calls, 10):
        chunk = prompts[start : start + 10]
        for k, choice in enumerate(selector.select_many([SelectRequest(p) for p in chunk]), start=start):
            meta = choice.metadata(choice.member)
            live_cost.append(costs[names.index(choice.member)])
            live_q.append(true[k, names.index(choice.member)])
    live_cost_a, live_q_a = np.array(live_cost), np.array(live_q)
    print(f"    {'':28s} {'mean cost, last 150':>20s} {'× budget':>9s} {'all 300':>8s} {'accuracy':>9s}")
    for label, c, q in (("probe-only λ", fixed_cost, fixed_q), ("live controller", live_cost_a, live_q_a)):
        last = c[-150:].mean()
        print(f"    {label:28s} {last:20.2f} {last / budget:9.2f} {c.mean():8.2f} {q.mean():9.3f}")
    print(f"    goal: live mean over the last 150 calls within [0.6, 1.05] × budget; metadata realised_mean_cost "
          f"after the last call: {meta['realised_mean_cost']:.2f}")
    cheapest = costs.min()
    print(f"    (cheapest member costs {cheapest}; all-cheapest would be {cheapest / budget:.2f} × budget)")


def _context(data: Any, i: int, words: int = 400) -> str:
    """A 400-word 'retrieved context' unrelated to question i: stems of other-category questions, concatenated."""
    cats = np.asarray(data.categories)
    pool = np.nonzero(cats != cats[i])[0]
    rng = np.random.default_rng(i)
    out: list[str] = []
    while len(out) < words:
        out += data.prompts[int(rng.choice(pool))].split("\n")[0].split()
    return " ".join(out[:words])


TEMPLATES = {
    # LlamaIndex's default text-QA layout: context first, the query last
    "context, then question": lambda ctx, q: (
        "Context information is below.\n---------------------\n"
        f"{ctx}\n---------------------\nGiven the context information and not prior knowledge, answer the query.\n"
        f"Query: {q}\nAnswer: "
    ),
    # the LangChain hub's rlm/rag-prompt layout: the question first, then the context
    "question, then context": lambda ctx, q: (
        "Use the following pieces of retrieved context to answer the question.\n"
        f"Question: {q}\nContext: {ctx}\nAnswer:"
    ),
}


def long_prompts(setup: Any, n: int) -> None:
    """Which part of a long prompt to embed: agreement with routing the question alone, and Area on real answers."""
    from uniroute_core.evaluation.metrics import area, router_curve
    from uniroute_core.routing_text import encoder_window, window_text
    from uniroute_core.rule import choose_by_lambda, lambda_grid

    data, router = setup.data, setup.router
    state = router.state
    names = router.models
    cols = [data.models.index(m) for m in names]
    idx = setup.held_out_sample(n, seed=2)
    true = data.scores[np.ix_(idx, cols)]
    embedder = router.embedder
    window = encoder_window(embedder)
    alone = state.expected_quality(setup.embeddings[idx])
    lams = lambda_grid(alone, state.costs)

    def agreement(q: np.ndarray) -> float:
        return float(np.mean([np.mean(choose_by_lambda(q, state.costs, float(x)) ==
                                      choose_by_lambda(alone, state.costs, float(x))) for x in lams]))

    print(f"\n[5] long prompts: {n} held-out questions behind a 400-word unrelated context; the encoder reads "
          f"{window.max_tokens} tokens. Agreement = share of routing decisions equal to routing the question "
          f"alone, over all {len(lams)} distinct λ; Area on the real answers (question alone: "
          f"{area(router_curve(alone, true, state.costs)):.4f})")
    print(f"    {'layout':24s} {'window':10s} {'agreement':>9s} {'Area':>7s}")
    for layout, make in TEMPLATES.items():
        texts = [make(_context(data, int(i)), data.prompts[int(i)]) for i in idx]
        for strategy in ("head", "tail", "head_tail"):
            windowed = [window_text(t, window, strategy) for t in texts]
            q = state.expected_quality(embedder.embed(windowed, show_progress=False))
            score = area(router_curve(q, true, state.costs))
            print(f"    {layout:24s} {strategy:10s} {agreement(q):9.3f} {score:7.4f}")
    plain = [data.prompts[int(i)] for i in idx]
    long = [k for k, t in enumerate(plain) if len(window.token_spans(t)) > window.max_tokens]
    print(f"    plain questions (no context), {len(long)} of {n} longer than the window ('head' = as embedded for "
          "fitting, agreement 1 by definition):")
    for strategy in ("tail", "head_tail"):
        x = setup.embeddings[idx].copy()
        if long:
            x[long] = embedder.embed([window_text(plain[k], window, strategy) for k in long], show_progress=False)
        q = state.expected_quality(x)
        score = area(router_curve(q, true, state.costs))
        print(f"    {'plain question':24s} {strategy:10s} {agreement(q):9.3f} {score:7.4f}")


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], [("--n", {"type": int, "default": 200}),
                                                ("--repeats", {"type": int, "default": 3}),
                                                ("--threads", {"type": int, "default": 32}),
                                                ("--shift", {"type": str, "default": "20:history,6:math"}),
                                                ("--long", {"type": int, "default": 300}),
                                                ("--only", {"type": str, "default": "1,2,3,4,5"})])
    print(machine())
    setup = build(data_folder(args.data), seed=args.seed, router_embedder=default_embedder(shipped_vectors=False))
    add_pool(setup)
    idx = setup.held_out_sample(args.n)
    prompts = [setup.data.prompts[i] for i in idx]
    only = set(args.only.split(","))
    if "1" in only:
        concurrency(setup, prompts, args.repeats)
    if "2" in only:
        threads(setup, prompts, args.threads)
    if "3" in only:
        batching(setup, prompts[:40], args.repeats)
    if "4" in only:
        for item in args.shift.split(","):
            budget, category = item.split(":", 1)
            live_budget(setup, float(budget), category)
    if "5" in only:
        long_prompts(setup, args.long)


if __name__ == "__main__":
    main()
