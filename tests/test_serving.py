"""Serving: the micro-batcher (batches from concurrent callers, never on the loop, errors to each caller, bounded,
clean shutdown), the live budget controller on shifted traffic, token prices, and the routing-text window."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from conftest import topic_embedder

from uniroute_core import UniRouter
from uniroute_core.routing_text import (
    TextWindow,
    encoder_window,
    window_text,
    word_window,
)
from uniroute_core.rule import choose_by_lambda
from uniroute_core.serving import (
    BudgetController,
    MicroBatcher,
    ServingClosedError,
    ServingOverloadedError,
    TokenPrices,
    parse_cost,
)

# ---------------------------------------------------------------------------------------------- the micro-batcher


class Gate:
    """A ``process`` for the batcher that records its batches and can hold the first one until released."""

    def __init__(self, hold_first: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()

    def __call__(self, requests: list[int]) -> list[int]:
        self.batches.append(list(requests))
        self.started.set()
        assert self.release.wait(10), "the test never released the batch"
        return [r * 10 for r in requests]


def test_requests_arriving_while_a_batch_runs_share_the_next_batch():
    gate = Gate(hold_first=True)
    batcher = MicroBatcher(gate, max_wait=0.0)
    first = batcher.submit(0)
    assert gate.started.wait(5)
    rest = batcher.submit_many(list(range(1, 50)))  # all queued while batch 1 is being processed
    gate.release.set()
    assert first.result(5) == 0
    assert [f.result(5) for f in rest] == [r * 10 for r in range(1, 50)]
    assert gate.batches == [[0], list(range(1, 50))]
    batcher.close()


def test_max_batch_size_splits_batches_in_arrival_order():
    gate = Gate(hold_first=True)
    batcher = MicroBatcher(gate, max_batch_size=8, max_wait=0.0)
    first = batcher.submit(-1)
    assert gate.started.wait(5)
    futures = batcher.submit_many(list(range(20)))
    gate.release.set()
    assert [f.result(5) for f in [first, *futures]] == [-10] + [r * 10 for r in range(20)]
    assert [len(b) for b in gate.batches] == [1, 8, 8, 4]
    assert [r for b in gate.batches[1:] for r in b] == list(range(20))
    batcher.close()


def test_concurrent_async_callers_are_batched_and_the_loop_keeps_running():
    """Processing blocks until a task on the event loop releases it: if processing ran on the loop (or blocked
    it), the releasing task could never run and the call would time out."""
    gate = Gate(hold_first=True)
    batcher = MicroBatcher(gate, max_wait=0.05)

    async def release_from_the_loop() -> None:
        while not gate.started.is_set():
            await asyncio.sleep(0.001)
        gate.release.set()

    async def main() -> list[int]:
        calls = [batcher.arun(i) for i in range(30)]
        results = await asyncio.wait_for(asyncio.gather(*calls, release_from_the_loop()), 10)
        return list(results[:-1])

    assert asyncio.run(main()) == [i * 10 for i in range(30)]
    assert len(gate.batches) < 30  # callers shared batches
    assert sorted(r for b in gate.batches for r in b) == list(range(30))
    batcher.close()


class LoopTicker:
    """Counts event-loop iterations: :meth:`run` bumps ``ticks`` and yields until ``stop`` is set, so a value noted
    by a coroutine when it resumes tells in which iteration it ran."""

    def __init__(self) -> None:
        self.ticks = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.ticks += 1
            await asyncio.sleep(0)


def test_the_callers_of_one_batch_resume_one_per_loop_iteration_so_the_loop_serves_others_in_between():
    """All 40 requests finish in ONE batch. A ticker task on the same loop counts loop iterations; each caller
    notes the count when it resumes. Woken together (``asyncio.wrap_future``), the callers' continuations would all
    run in one iteration (the same count, and the ticker waiting for all of them); paced, every caller resumes in
    an iteration of its own, with the ticker running between any two."""
    gate = Gate(hold_first=True)
    batcher = MicroBatcher(gate, max_wait=0.05)
    ticker = LoopTicker()
    seen: list[int] = []

    async def caller(i: int) -> int:
        result = await batcher.arun(i)
        seen.append(ticker.ticks)
        return result

    async def main() -> list[int]:
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker.run(stop))
        calls = [asyncio.create_task(caller(i)) for i in range(40)]
        while len(gate.batches) == 0 or batcher.pending:  # every request is in the held batch
            await asyncio.sleep(0.001)
        gate.release.set()
        results = await asyncio.wait_for(asyncio.gather(*calls), 10)
        stop.set()
        await tick
        return list(results)

    assert asyncio.run(main()) == [i * 10 for i in range(40)]  # in order, all answered
    assert len(gate.batches) == 1
    assert len(set(seen)) == 40 and seen == sorted(seen)  # one caller per iteration, the ticker between them
    batcher.close()


def test_a_cancelled_async_caller_does_not_disturb_the_others_of_its_batch():
    gate = Gate(hold_first=True)
    batcher = MicroBatcher(gate, max_wait=0.05)

    async def main() -> tuple[list[int], bool]:
        calls = [asyncio.create_task(batcher.arun(i)) for i in range(5)]
        while not gate.started.is_set():
            await asyncio.sleep(0.001)
        calls[2].cancel()
        gate.release.set()
        done = await asyncio.gather(*calls, return_exceptions=True)
        return [d for d in done if not isinstance(d, BaseException)], isinstance(done[2], asyncio.CancelledError)

    answered, cancelled = asyncio.run(main())
    assert answered == [0, 10, 30, 40] and cancelled
    batcher.close()


def test_threads_calling_run_share_batches():
    gate = Gate(hold_first=True)
    batcher = MicroBatcher(gate, max_wait=0.0)
    first = batcher.submit(100)
    assert gate.started.wait(5)
    results: dict[int, int] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, batcher.run(i))) for i in range(16)]
    for t in threads:
        t.start()
    while batcher.pending < 16:  # every thread is waiting on the batcher
        time.sleep(0.001)
    gate.release.set()
    for t in threads:
        t.join(5)
    assert first.result(5) == 1000 and results == {i: i * 10 for i in range(16)}
    assert len(gate.batches) == 2
    batcher.close()


def test_an_error_in_process_reaches_every_caller_of_the_batch_and_the_batcher_survives():
    calls = []

    def process(requests: list[str]) -> list[str]:
        calls.append(list(requests))
        if "boom" in requests:
            raise RuntimeError("encoder failed")
        return [r.upper() for r in requests]

    gate = threading.Event()
    batcher: MicroBatcher[str, str] = MicroBatcher(process, max_wait=0.2, max_batch_size=3)
    futures = batcher.submit_many(["a", "boom", "c"])
    for f in futures:
        with pytest.raises(RuntimeError, match="encoder failed"):
            f.result(5)
    assert batcher.run("ok") == "OK"  # the worker is still alive
    gate.set()
    batcher.close()


def test_a_per_request_error_reaches_that_caller_only():
    def process(requests: list[int]) -> list[object]:
        return [ValueError(f"bad request {r}") if r < 0 else r for r in requests]

    batcher: MicroBatcher[int, int] = MicroBatcher(process, max_wait=0.2, max_batch_size=3)
    ok1, bad, ok2 = batcher.submit_many([1, -1, 2])
    assert ok1.result(5) == 1 and ok2.result(5) == 2
    with pytest.raises(ValueError, match="bad request -1"):
        bad.result(5)
    batcher.close()


def test_pending_is_bounded():
    gate = Gate(hold_first=True)
    batcher = MicroBatcher(gate, max_pending=5, max_wait=0.0)
    first = batcher.submit(0)
    assert gate.started.wait(5)
    batcher.submit_many([1, 2, 3, 4, 5])
    with pytest.raises(ServingOverloadedError, match="max_pending=5"):
        batcher.submit(6)
    gate.release.set()
    assert first.result(5) == 0
    batcher.close()


def test_close_serves_pending_requests_then_refuses_new_ones_and_stops_the_thread():
    gate = Gate(hold_first=True)
    batcher = MicroBatcher(gate, max_wait=0.0)
    first = batcher.submit(1)
    assert gate.started.wait(5)
    queued = batcher.submit(2)
    closer = threading.Thread(target=batcher.close)
    closer.start()
    gate.release.set()
    closer.join(5)
    assert first.result(5) == 10 and queued.result(5) == 20
    assert not batcher.running
    with pytest.raises(ServingClosedError):
        batcher.submit(3)


def test_an_idle_worker_thread_exits_and_restarts_on_demand():
    batcher = MicroBatcher(lambda rs: rs, idle_timeout=0.0)
    assert batcher.run(1) == 1
    deadline = time.monotonic() + 5
    while batcher.running and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not batcher.running
    assert batcher.run(2) == 2  # started again
    batcher.close()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_batch_size": 2.5}, "max_batch_size"),
        ({"max_wait": -1}, "max_wait"),
        ({"max_wait": float("nan")}, "max_wait"),
        ({"max_pending": True}, "max_pending"),
    ],
)
def test_bad_batcher_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MicroBatcher(lambda rs: rs, **kwargs)


# ---------------------------------------------------------------------------------------------- the live budget

MATH = [f"math algebra equation number {i}" for i in range(30)]
HISTORY = [f"history war empire century {i}" for i in range(30)]


def _shifted_router() -> UniRouter:
    """Three members: cheap (good on history only), mid, big (good at everything). Probes: half math, half history."""
    probes = MATH[:10] + HISTORY[:10]
    router = UniRouter(embedder=topic_embedder, n_clusters=2, seed=0, shrinkage=0.0, show_progress=False)
    router.fit(MATH + HISTORY)
    router.set_probes(probes)
    is_math = np.array([p.startswith("math") for p in probes])
    router.add_model("cheap", 1.0, np.where(is_math, 0.2, 0.9))
    router.add_model("mid", 4.0, np.where(is_math, 0.6, 0.9))
    router.add_model("big", 10.0, np.where(is_math, 0.95, 0.95))
    return router


def _serve(router: UniRouter, controller: BudgetController | None, prompts: list[str], budget: float) -> list[float]:
    """Route prompts one batch of 10 at a time and record each call's cost; returns the costs."""
    state = router.state
    costs = []
    for start in range(0, len(prompts), 10):
        emb = router.embed(prompts[start : start + 10])
        if controller is None:
            lam = state.calibration(budget).lam if hasattr(state, "calibration") else router.calibrate(budget)
        else:
            lam = controller.lam_for(state, emb, lambda t: router.calibrate(t, warn=False))
        q = router.expected_quality(prompts[start : start + 10], embeddings=emb)
        for j in choose_by_lambda(q, state.costs, lam):
            costs.append(float(state.costs[j]))
            if controller is not None:
                controller.record(costs[-1])
    return costs


def test_probe_calibration_overspends_on_shifted_traffic_and_the_controller_keeps_the_budget():
    router = _shifted_router()
    budget = 5.5  # on the balanced probes: history -> cheap, math -> big (mean 5.5)
    traffic = (MATH * 10)[:300]  # all math
    probe_only = _serve(router, None, traffic, budget)
    assert np.mean(probe_only[-150:]) > 1.5 * budget  # the failure the controller fixes
    controller = BudgetController(budget, window=50, min_rows=10)
    served = _serve(router, controller, traffic, budget)
    last = np.mean(served[-150:])
    assert 0.6 * budget <= last <= 1.05 * budget
    assert controller.realised_mean_cost == pytest.approx(np.mean(served))
    assert controller.realised_mean_cost <= budget * 1.05


def test_the_controller_uses_the_budget_on_traffic_like_the_probes():
    router = _shifted_router()
    budget = 5.5
    traffic = [p for pair in zip(MATH * 5, HISTORY * 5) for p in pair][:300]  # balanced, like the probes
    controller = BudgetController(budget, window=50, min_rows=10)
    served = _serve(router, controller, traffic, budget)
    assert np.mean(served[-150:]) == pytest.approx(budget)  # all of it used (history cheap, math big)


def test_overspend_is_paid_back():
    controller = BudgetController(2.0, window=10)
    assert controller.target() == 2.0
    for _ in range(5):
        controller.record(4.0)  # 10 over in total
    assert controller.target() == pytest.approx(1.0)  # 2 − 10/10, floored at half the budget
    for _ in range(20):
        controller.record(0.5)  # underspend is not banked
    assert controller.target() == 2.0


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), True, "5"])
def test_bad_budgets_are_refused(bad):
    with pytest.raises(ValueError, match="budget"):
        BudgetController(bad)


def test_record_refuses_bad_costs():
    with pytest.raises(ValueError, match="cost"):
        BudgetController(1.0).record(float("nan"))


# ---------------------------------------------------------------------------------------------- token prices


def test_token_prices_give_a_per_call_routing_cost_and_the_actual_cost_of_a_call():
    cost, prices = parse_cost("gpt", {"input_per_mtok": 3.0, "output_per_mtok": 15.0})
    assert prices is not None
    assert cost == pytest.approx((1000 * 3.0 + 250 * 15.0) / 1e6)
    assert prices.call_cost(2000, 100) == pytest.approx((2000 * 3.0 + 100 * 15.0) / 1e6)
    cost, _ = parse_cost("gpt", {"input_per_mtok": 3.0, "output_per_mtok": 15.0, "per_call": 0.01})
    assert cost == 0.01
    cost, _ = parse_cost("gpt", {"input_per_mtok": 1.0, "output_per_mtok": 1.0, "typical_input_tokens": 500,
                                 "typical_output_tokens": 500})
    assert cost == pytest.approx(0.001)
    assert parse_cost("small", 2.5) == (2.5, None)


@pytest.mark.parametrize(
    ("cost", "match"),
    [
        ({"input_per_mtok": 3.0}, "missing \\['output_per_mtok'\\]"),
        ({"input_per_mtok": 3.0, "output_per_mtok": 1, "per_token": 2}, "unknown keys \\['per_token'\\]"),
        ({"input_per_mtok": -3.0, "output_per_mtok": 1}, "input_per_mtok"),
        ({"input_per_mtok": 0, "output_per_mtok": 0}, "per-call cost of 0"),
    ],
)
def test_bad_prices_are_refused_naming_the_member(cost, match):
    with pytest.raises(ValueError, match=match) as info:
        parse_cost("gpt", cost)
    assert "'gpt'" in str(info.value)


def test_token_prices_validate_types():
    with pytest.raises(ValueError, match="output_per_mtok"):
        TokenPrices(input_per_mtok=1.0, output_per_mtok=float("inf"))


# ---------------------------------------------------------------------------------------------- the text window


def test_a_text_that_fits_is_unchanged_whatever_the_strategy():
    w = word_window(10)
    for strategy in ("tail", "head", "head_tail"):
        assert window_text("a short question", w, strategy) == "a short question"
    assert window_text("anything at all", None) == "anything at all"


def test_windows_cover_the_end_the_start_or_both_on_token_boundaries():
    text = " ".join(f"w{i}" for i in range(100))
    w = word_window(8)
    assert window_text(text, w, "tail") == "w92 w93 w94 w95 w96 w97 w98 w99"
    assert window_text(text, w, "head") == "w0 w1 w2 w3 w4 w5 w6 w7"
    assert window_text(text, w, "head_tail") == "w0 w1\nw95 w96 w97 w98 w99"


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="tail"):
        window_text("x", word_window(4), "middle")  # type: ignore[arg-type]


def test_text_window_needs_a_sensible_size():
    with pytest.raises(ValueError, match="max_tokens"):
        TextWindow(1, lambda t: [])


def test_an_embedder_may_declare_its_window_and_plain_callables_have_none():
    class Windowed:
        name = "windowed"
        text_window = word_window(16)

        def embed(self, texts, *, show_progress=True):
            return topic_embedder(list(texts))

    assert encoder_window(Windowed()) is Windowed.text_window
    assert encoder_window(topic_embedder) is None


# ---------------------------------------------------------------------------------------------- MemberSelector


def _selector_router(calls: list[list[str]]) -> UniRouter:
    def counting(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return topic_embedder(texts)

    return _shifted_router_with(counting)


def _shifted_router_with(embed: object) -> UniRouter:
    probes = MATH[:10] + HISTORY[:10]
    router = UniRouter(embedder=embed, n_clusters=2, seed=0, shrinkage=0.0, show_progress=False)
    router.fit(MATH + HISTORY)
    router.set_probes(probes)
    is_math = np.array([p.startswith("math") for p in probes])
    router.add_model("cheap", 1.0, np.where(is_math, 0.2, 0.9))
    router.add_model("big", 10.0, np.full(len(probes), 0.95))
    return router


def test_select_many_embeds_once_and_a_bad_request_fails_alone():
    from uniroute_core.delegation import MemberSelector, SelectRequest

    calls: list[list[str]] = []
    router = _selector_router(calls)
    selector = MemberSelector(router)
    calls.clear()
    requests = [SelectRequest(MATH[0]), SelectRequest(HISTORY[0], force="nobody"), SelectRequest(HISTORY[1])]
    with pytest.raises(KeyError, match="nobody"):
        selector.select_many(requests)
    futures = selector._batcher.submit_many(requests)
    assert futures[0].result(5).member == "big" and futures[2].result(5).member == "big"
    with pytest.raises(KeyError, match="'nobody' is not a member"):
        futures[1].result(5)
    assert all(len(c) == 3 for c in calls)  # each batch: ONE encoder call for its three texts
    selector.close()


def test_primed_texts_are_not_embedded_again():
    from uniroute_core.delegation import MemberSelector

    calls: list[list[str]] = []
    selector = MemberSelector(_selector_router(calls))
    calls.clear()
    with selector.primed(MATH[:5]):
        assert calls == [MATH[:5]]
        for p in MATH[:5]:
            selector.select(p)
        assert calls == [MATH[:5]]
    selector.select(MATH[0])  # no longer primed
    assert calls == [MATH[:5], [MATH[0]]]
    assert selector._primed == {}


def test_a_batch_routes_on_one_snapshot_and_later_batches_see_the_new_pool():
    from uniroute_core.delegation import MemberSelector

    router = _shifted_router_with(topic_embedder)
    selector = MemberSelector(router)
    assert selector.select(HISTORY[0]).order == ("big", "cheap")
    router.remove_model("big")
    assert selector.select(HISTORY[0]).order == ("cheap",)
    with pytest.raises(ValueError, match="no member is allowed"):
        selector.select(HISTORY[0], allowed=["big"])  # a member removed meanwhile is no longer a candidate


def test_selector_slot_keeps_one_selector_per_settings_and_prices_survive_a_rebuild():
    from uniroute_core.delegation import SelectorSlot
    from uniroute_core.policy import RoutingPolicy

    router = _shifted_router_with(topic_embedder)
    slot = SelectorSlot()
    a = slot.get(router, RoutingPolicy(lam=0.3), True)
    assert slot.get(router, RoutingPolicy(lam=0.3), True) is a
    assert slot.member_cost("gpt", {"input_per_mtok": 1.0, "output_per_mtok": 2.0}) == pytest.approx(0.0015)
    b = slot.get(router, RoutingPolicy(budget=3.0), True)
    assert b is not a and b.budget is not None and "gpt" in b.prices
    assert slot.member_cost("gpt", 2.0) == 2.0 and "gpt" not in b.prices


def test_a_routing_text_must_be_text():
    from uniroute_core.delegation import MemberSelector

    selector = MemberSelector(_shifted_router_with(topic_embedder))
    with pytest.raises(ValueError, match="empty"):
        selector.select("   ")
    with pytest.raises(TypeError, match="str"):
        selector.select(None)  # type: ignore[arg-type]


def test_calls_started_together_take_paced_turns_so_the_loop_runs_between_them():
    """``paced_turn`` (awaited by both adapters before their per-call work): 30 tasks created in one go resume one
    per loop iteration, in order, with a ticker task running between any two."""
    from uniroute_core.serving import paced_turn

    ticker = LoopTicker()
    seen: list[tuple[int, int]] = []

    async def call(i: int) -> None:
        await paced_turn()
        seen.append((i, ticker.ticks))

    async def main() -> None:
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker.run(stop))
        await asyncio.sleep(0)
        await asyncio.gather(*(call(i) for i in range(30)))
        stop.set()
        await tick

    asyncio.run(main())
    assert [i for i, _ in seen] == list(range(30))  # arrival order
    at = [t for _, t in seen]
    assert len(set(at)) == 30 and at == sorted(at)  # one per iteration, the ticker in between


def test_the_pacers_of_finished_event_loops_are_released():
    """One pacer per event loop, keyed weakly: a closed loop (one per ``asyncio.run``) must not be kept alive."""
    import gc

    from uniroute_core.serving import _PacedWakeups, paced_turn

    async def turn() -> None:
        await paced_turn()

    for _ in range(5):
        asyncio.run(turn())
    gc.collect()
    assert len(_PacedWakeups._by_loop) == 0
