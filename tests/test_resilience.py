"""Member timeouts and the circuit breaker (issue 11.5), below and through the adapters.

The behaviour shared by both adapters (a hung member answered by the next one in sync / async / stream calls, the
breaker's skips in metadata) is in the conformance suite (tests/test_conformance.py); here: the core pieces, the
event loop never blocked by a sync-only LlamaIndex member, the bound on abandoned threads, and add_model deadlines.
No timing asserts: hung members wait on events the test controls, and bounds are generous.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from uniroute_core import resilience
from uniroute_core.delegation import AllMembersFailedError, acall_with_fallback, call_with_fallback
from uniroute_core.resilience import (
    BreakerConfig,
    CircuitBreaker,
    MemberTimeoutError,
    abandoned_calls,
    arun_bounded,
    run_bounded,
)
from uniroute_core.testing import MATH, MemberScript, scenario_router
from uniroute_llamaindex.testing import LlamaIndexHarness


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_failures_in_window_then_half_opens_and_closes():
    clock = Clock()
    b = CircuitBreaker(BreakerConfig(failures=3, window=10, cooldown=5), clock=clock)
    b.record_failure("m")
    clock.now = 11  # the first failure leaves the window
    b.record_failure("m")
    b.record_failure("m")
    assert b.state("m") == "closed" and b.allow("m")
    b.record_failure("m")
    assert b.state("m") == "open" and not b.allow("m") and b.open_members() == ["m"]
    assert "circuit open" in b.reason("m")
    clock.now = 16.5
    assert b.state("m") == "half-open"
    assert b.allow("m") and not b.allow("m")  # one trial call at a time
    b.record_failure("m")  # the trial failed: open for a full cool-down again
    assert b.state("m") == "open"
    clock.now = 22
    assert b.allow("m")
    b.record_success("m")
    assert b.state("m") == "closed" and b.allow("m") and b.allow("m")


def test_breaker_trial_released_when_the_call_is_interrupted():
    clock = Clock()
    b = CircuitBreaker(BreakerConfig(failures=1, window=10, cooldown=1), clock=clock)
    b.record_failure("m")
    clock.now = 2
    assert b.allow("m") and not b.allow("m")
    b.release("m")
    assert b.allow("m")


@pytest.mark.parametrize("bad", [{"failures": 0}, {"failures": 1.5}, {"window": 0}, {"cooldown": float("inf")}])
def test_breaker_config_is_validated(bad):
    with pytest.raises(ValueError, match="BreakerConfig"):
        BreakerConfig(**bad)


def test_half_open_member_is_not_left_blocked_when_an_earlier_member_answers():
    """Members are asked lazily: a half-open member after the one that answers is not marked as on trial."""
    clock = Clock()
    b = CircuitBreaker(BreakerConfig(failures=1, window=10, cooldown=1), clock=clock)
    b.record_failure("second")
    clock.now = 5
    assert call_with_fallback(["first", "second"], lambda n: n, breaker=b)[1] == "first"
    assert b.allow("second")


def test_run_bounded_times_out_abandons_and_counts_the_thread_out_when_it_ends():
    release = threading.Event()
    before = abandoned_calls()
    with pytest.raises(MemberTimeoutError, match="'slow' timed out after 0.2 s"):
        run_bounded(lambda: release.wait(30), 0.2, member="slow")
    assert abandoned_calls() == before + 1
    release.set()
    for _ in range(200):  # the abandoned thread ends once released
        if abandoned_calls() == before:
            break
        threading.Event().wait(0.01)
    assert abandoned_calls() == before
    assert run_bounded(lambda: 7, 5.0) == 7


def test_abandoned_threads_are_bounded(monkeypatch):
    monkeypatch.setattr(resilience, "MAX_ABANDONED", abandoned_calls() + 1)
    release = threading.Event()
    started: list[int] = []
    try:
        with pytest.raises(MemberTimeoutError):
            run_bounded(lambda: release.wait(30), 0.1, member="hung")
        with pytest.raises(MemberTimeoutError, match="not started"):
            run_bounded(lambda: started.append(1), 5.0, member="next")
        assert started == []  # no new thread was started past the limit
    finally:
        release.set()


def test_fallback_records_timeout_with_member_name():
    release = threading.Event()
    try:
        result, used, fallbacks = call_with_fallback(
            ["hung", "ok"], lambda n: release.wait(30) if n == "hung" else "answer", timeout=0.2
        )
    finally:
        release.set()
    assert (result, used) == ("answer", "ok")
    assert fallbacks[0]["member"] == "hung" and fallbacks[0]["reason"] == "timeout"


def test_async_fallback_cancels_a_hung_coroutine():
    cancelled = []

    async def call(name: str) -> str:
        if name == "hung":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.append(name)
                raise
        return name

    result, used, fallbacks = asyncio.run(acall_with_fallback(["hung", "ok"], call, timeout=0.2))
    assert used == "ok" and cancelled == ["hung"] and fallbacks[0]["reason"] == "timeout"


def test_every_member_timing_out_is_all_members_failed():
    release = threading.Event()
    try:
        with pytest.raises(AllMembersFailedError) as info:
            call_with_fallback(["a", "b"], lambda n: release.wait(30), timeout=0.1)
    finally:
        release.set()
    assert all(isinstance(e, MemberTimeoutError) for e in info.value.failures.values())


def test_arun_bounded_does_not_block_the_loop():
    """The blocking call waits for an event only a coroutine on the loop sets: a blocked loop would time out."""

    async def main() -> str:
        gate = threading.Event()

        async def opener() -> None:
            await asyncio.sleep(0.05)
            gate.set()

        task = asyncio.create_task(opener())
        out = await arun_bounded(lambda: "opened" if gate.wait(10) else "blocked", 20)
        await task
        return out

    assert asyncio.run(main()) == "opened"


@pytest.mark.parametrize("method", ["achat", "astream_chat", "acomplete", "astream_complete"])
def test_a_blocking_customllm_member_does_not_block_the_event_loop(method):
    """A sync-only LlamaIndex member (CustomLLM) that blocks until a task on the loop releases it: with the loop
    blocked, the member would give up after 5 s and raise; through UniRouteLLM it is released and answers."""
    from llama_index.core.base.llms.types import ChatMessage, MessageRole

    gate = threading.Event()
    only = MemberScript("only", 1.0, [1.0] * 20, hang=gate, hang_limit=5)
    llm = LlamaIndexHarness().build(scenario_router([only]), [only], lam=0.0)

    async def main() -> str:
        async def opener() -> None:
            await asyncio.sleep(0.05)
            gate.set()

        task = asyncio.create_task(opener())
        if method in ("achat", "astream_chat"):
            messages = [ChatMessage(role=MessageRole.USER, content=MATH)]
            result = await getattr(llm, method)(messages)
        else:
            result = await getattr(llm, method)(MATH)
        if method.startswith("astream"):
            text = "".join([c.delta or "" async for c in result])
        else:
            text = result.message.content if method == "achat" else result.text
        await task
        return text

    try:
        assert asyncio.run(main()) == f"only: {MATH}"
        assert only.calls == 1
    finally:
        gate.set()


def test_langchain_members_rate_limiters_are_acquired_sync_and_async():
    """Each attempt on a member first acquires the member's own rate limiter (counted, not timed)."""
    from langchain_core.rate_limiters import BaseRateLimiter

    from uniroute_langchain.testing import LangChainHarness

    class Counting(BaseRateLimiter):
        def __init__(self) -> None:
            self.sync = 0
            self.async_ = 0

        def acquire(self, *, blocking: bool = True) -> bool:
            self.sync += 1
            return True

        async def aacquire(self, *, blocking: bool = True) -> bool:
            self.async_ += 1
            return True

    cheap = MemberScript("cheap", 1.0, [1.0] * 10 + [0.0] * 10)
    strong = MemberScript("strong", 10.0, [1.0] * 20)
    h = LangChainHarness()
    chat = h.build(scenario_router([cheap, strong]), [cheap, strong], lam=0.3)
    limiter = Counting()
    chat.members["cheap"].rate_limiter = limiter
    for mode in ("sync", "stream"):
        assert h.call(chat, MATH, mode).member == "cheap"
    for mode in ("async", "astream"):
        assert h.call(chat, MATH, mode).member == "cheap"
    assert (limiter.sync, limiter.async_) == (2, 2)
