"""Reliability: 1000 concurrent async calls through ChatUniRoute over flaky replayed members, and add_model under load.

Part 1 — ten real LLMs (replayed offline from their recorded MMLU-Pro answers) where every member fails 20% of its calls
at random (a raised error, as from a rate limit or an outage) and one member, the one the router prefers most often,
never answers: it hangs until its own request timeout and then raises ``TimeoutError``. 1000 calls are sent at once
with ``ainvoke``. Counted: answered, lost (the caller got an exception), calls that needed fallbacks, fallbacks used.
Goal: 0 lost.

Part 2 — nine members answer 1000 concurrent calls while a tenth joins with ``aadd_model`` (profiled on 500 probes on
the same event loop); the calls start over a few seconds so that some are routed after the swap. Counted: answered,
lost, calls served by the newcomer (only possible after it is swapped in).

    python benchmarks/reliability.py [--data DIR] [--calls 1000] [--failure-rate 0.2] [--timeout 0.5]
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any

from _common import POOL, build, data_folder, machine, parse_args
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult
from pydantic import PrivateAttr

from uniroute_core.grading import grade_multiple_choice
from uniroute_langchain import ChatUniRoute
from uniroute_langchain.testing import MemberFailure, ReplayChatModel


class FlakyReplayChatModel(ReplayChatModel):
    """A replayed LLM that takes ``latency`` seconds and fails ``failure_rate`` of its calls at random (seeded)."""

    failure_rate: float = 0.0
    latency: float = 0.01
    seed: int = 0
    _rng: random.Random = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._rng = random.Random(f"{self.seed}-{self.model}")

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                         **kwargs: Any) -> ChatResult:
        await asyncio.sleep(self.latency)
        if self._rng.random() < self.failure_rate:
            raise MemberFailure(f"{self.model}: injected failure (rate {self.failure_rate})")
        return self._generate(messages, stop=stop, run_manager=None, **kwargs)


class HangingReplayChatModel(ReplayChatModel):
    """A member that never answers: it waits for its own request ``timeout`` and raises ``TimeoutError``."""

    timeout: float = 0.5

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                         **kwargs: Any) -> ChatResult:
        await asyncio.sleep(self.timeout + 1.0)  # would answer too late...
        raise TimeoutError(f"{self.model}: no answer within {self.timeout} s")  # ...so its client gives up


async def call_all(chat: ChatUniRoute, questions: list[str], spread: float = 0.0) -> list[Any]:
    """All calls at once (``spread`` > 0: call i starts after i/n·spread seconds, so calls keep arriving)."""
    async def one(i: int, q: str) -> Any:
        if spread:
            await asyncio.sleep(spread * i / len(questions))
        return await chat.ainvoke(q)

    return await asyncio.gather(*(one(i, q) for i, q in enumerate(questions)), return_exceptions=True)


def tally(results: list[Any], gold: list[str]) -> dict[str, Any]:
    answered = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    fb = [len(r.response_metadata["uniroute"]["fallbacks"]) for r in answered]
    correct = sum(
        grade_multiple_choice(r.content, g) for r, g in zip(results, gold) if not isinstance(r, BaseException)
    )
    return {
        "answered": len(answered), "lost": len(lost), "with_fallback": sum(f > 0 for f in fb), "fallbacks": sum(fb),
        "max_fallbacks": max(fb, default=0), "accuracy": correct / max(len(answered), 1),
        "members": Counter(r.response_metadata["uniroute"]["member"] for r in answered),
        "errors": Counter(type(e).__name__ for e in lost),
    }


async def main_async() -> None:
    args = parse_args(__doc__.splitlines()[0], [("--calls", {"type": int, "default": 1000}),
                                                ("--failure-rate", {"type": float, "default": 0.2}),
                                                ("--timeout", {"type": float, "default": 0.5}),
                                                ("--budget", {"type": float, "default": 20.0}),
                                                ("--spread", {"type": float, "default": 4.0})])
    print(machine())
    setup = build(data_folder(args.data), seed=args.seed)
    book = setup.book
    held = setup.held_out_sample(args.calls)
    questions = [setup.data.prompts[i] for i in held]
    gold = [setup.data.references[i] for i in held]  # type: ignore[index]

    # Profile with well-behaved replay members, then swap in the flaky ones for traffic.
    chat = ChatUniRoute(router=setup.router, members={}, budget=args.budget)
    for name in POOL:
        await chat.aadd_model(name, ReplayChatModel(book=book, model=name), cost=book.cost(name), show_progress=False)
    preferred = Counter(d.model for d in setup.router.route(questions, budget=args.budget)).most_common(1)[0][0]
    members = {
        name: HangingReplayChatModel(book=book, model=name, timeout=args.timeout) if name == preferred
        else FlakyReplayChatModel(book=book, model=name, failure_rate=args.failure_rate, seed=args.seed)
        for name in POOL
    }
    flaky = chat.model_copy(update={"members": members})
    t0 = time.perf_counter()
    res = tally(await call_all(flaky, questions), gold)
    took = time.perf_counter() - t0
    routed = setup.router.route(questions, budget=args.budget)
    first_choice_share = sum(d.model == preferred for d in routed) / len(questions)
    print(
        f"\n[part 1] {len(questions)} concurrent ainvoke calls, budget {args.budget:g}; every member fails "
        f"{100 * args.failure_rate:.0f}% at random; {preferred} (first choice for "
        f"{100 * first_choice_share:.0f}%"
        f" of calls) hangs past its {args.timeout:g} s timeout"
    )
    print(
        f"  answered {res['answered']}, lost {res['lost']} (goal 0), calls needing a fallback {res['with_fallback']}, "
        f"fallbacks used {res['fallbacks']} (max {res['max_fallbacks']} in one call), wall {took:.1f} s"
    )
    print(f"  accuracy of the answers {res['accuracy']:.4f}; served by: "
          + ", ".join(f"{m} {c}" for m, c in res["members"].most_common()))
    if res["errors"]:
        print(f"  errors reaching the caller: {dict(res['errors'])}")

    # Part 2: a newcomer joins while 1000 calls are in flight.
    newcomer = "gemini-1.5-flash-002"
    chat.remove_model(newcomer)
    slow = {n: FlakyReplayChatModel(book=book, model=n, failure_rate=0.0, latency=0.05) for n in chat.members}
    chat2 = chat.model_copy(update={"members": slow})
    pool_before = set(chat2.router.models)
    t0 = time.perf_counter()

    async def join() -> float:
        await asyncio.sleep(0.05)
        t = time.perf_counter()
        await chat2.aadd_model(
            newcomer,
            FlakyReplayChatModel(book=book, model=newcomer, failure_rate=0.0, latency=0.05),
            cost=book.cost(newcomer),
            show_progress=False,
        )
        return time.perf_counter() - t

    results, join_t = await asyncio.gather(call_all(chat2, questions, spread=args.spread), join())
    took = time.perf_counter() - t0
    res2 = tally(results, gold)
    strays = [m for m in res2["members"] if m not in pool_before | {newcomer}]
    print(
        f"\n[part 2] {len(questions)} concurrent calls over {len(pool_before)} members while aadd_model({newcomer!r}) "
        f"profiles it on {len(setup.router.probes)} probes (calls start over {args.spread:g} s)"
    )
    print(
        f"  answered {res2['answered']}, lost {res2['lost']} (goal 0); "
        f"served by the newcomer {res2['members'][newcomer]}; "
        f"by a member outside old/new pool {len(strays)}; add_model took {join_t:.2f} s under load, wall {took:.1f} s"
    )
    if res2["errors"]:
        first = next(r for r in results if isinstance(r, BaseException))
        print(f"  errors reaching the caller: {dict(res2['errors'])}; first: {first}")
    print(f"  pool after: {len(chat2.router.models)} members; {newcomer} in pool: {newcomer in chat2.router.models}")


if __name__ == "__main__":
    asyncio.run(main_async())
