"""Serving live traffic: micro-batched routing off the event loop, and a budget kept on the calls actually served.

Two pieces, both framework-neutral (the adapters reach them through
:class:`~uniroute_core.delegation.MemberSelector`):

* :class:`MicroBatcher` — collects routing requests that arrive together (concurrent ``ainvoke`` calls on one event
  loop, threads calling ``invoke``, the items of ``batch`` / ``abatch``) and hands them to one worker thread, which
  embeds and routes them in ONE call. Nothing is embedded on an event loop: async callers await a future.
  A batch closes ``max_wait`` seconds after its first request arrived, or as soon as it holds ``max_batch_size``
  requests; requests arriving while a batch is being embedded wait for the next one (so under load the batches
  grow by themselves and the wait window only matters for a lone request). At most ``max_pending`` requests may
  wait; beyond that :class:`ServingOverloadedError` is raised at once instead of queueing without bound. The
  worker thread starts on the first request and stops after ``idle_timeout`` seconds without any, so an idle
  service holds no thread; :meth:`MicroBatcher.close` stops it for good (pending requests are still served).
  An error while processing a batch reaches every caller waiting on that batch; an error for one request (an
  unknown forced member…) reaches that caller only. Async callers of one batch are woken ONE PER LOOP ITERATION
  (:class:`_PacedWakeups`): each caller's code after the route (the framework's callbacks, the member call set-up)
  then runs in its own iteration, with the loop's timers and I/O served between them, instead of all of a
  64-request batch's continuations running back to back in one iteration and holding the loop for their sum.
* :class:`BudgetController` — ``budget=`` as the mean cost per call of the calls routed. The probe calibration
  gives the starting λ; afterwards λ is re-solved exactly (on the breakpoints of the rule:
  :func:`~uniroute_core.rule.lambda_grid` and :func:`~uniroute_core.rule.routed_cost_curve`, as
  :func:`~uniroute_core.rule.calibrate_lambda` does) on the predicted-quality rows of the last ``window`` routed
  prompts, against a target that pays back any realised overspend over the next ``window`` calls; calls are split
  between the two breakpoints around the target so that the budget is used, not only respected. Traffic that is
  dearer than the probes (all-history after balanced probes) therefore gets a larger λ, cheaper traffic a smaller
  one, and the realised mean stays at or just below the budget without collapsing to the cheapest member.

Per-token prices: :class:`TokenPrices` turns ``{"input_per_mtok": …, "output_per_mtok": …}`` into the per-call cost
routing uses (typical token counts times the prices, or an explicit ``per_call``), and prices a call from the token
usage a member reports.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from .rule import lambda_grid, routed_cost_curve

__all__ = [
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_MAX_WAIT",
    "BudgetController",
    "BudgetStatus",
    "MicroBatcher",
    "ServingClosedError",
    "ServingConfig",
    "ServingOverloadedError",
    "SpendMeter",
    "TokenPrices",
    "paced_turn",
    "parse_cost",
]

DEFAULT_MAX_BATCH_SIZE = 64
"""Requests embedded together at most (one encoder call; MiniLM on a CPU embeds 64 short prompts in ~0.1 s)."""
DEFAULT_MAX_WAIT = 0.002
"""Seconds a batch stays open after its first request (2 ms: a lone call pays at most this much extra)."""
DEFAULT_MAX_PENDING = 10_000
"""Requests that may wait at once before new ones are refused with :class:`ServingOverloadedError`."""
DEFAULT_IDLE_TIMEOUT = 1.0
"""Seconds without requests after which the worker thread exits (a new request starts it again)."""

Req = TypeVar("Req")
Res = TypeVar("Res")


class ServingOverloadedError(RuntimeError):
    """More routing requests are waiting than ``max_pending`` allows: the caller should back off."""


class ServingClosedError(RuntimeError):
    """The micro-batcher was closed; it routes no new requests."""


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _check_non_negative(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


class MicroBatcher(Generic[Req, Res]):
    """Run ``process(requests) -> results`` on batches of requests gathered from many callers, in one worker thread.

    Args:
        process: called in the worker thread with the requests of one batch (in arrival order); returns one result
            per request, where a result that is an ``Exception`` instance is raised to that request's caller only.
            If ``process`` itself raises, every caller of the batch gets that exception.
        max_batch_size: most requests per ``process`` call (default 64).
        max_wait: seconds a batch stays open after its first request arrives (default 0.002).
        max_pending: most requests waiting at once; more raise :class:`ServingOverloadedError` (default 10,000).
        idle_timeout: the worker thread exits after this many idle seconds and restarts on demand (default 1.0).
        name: the worker thread's name (for debugging).

    Thread-safe: :meth:`submit` / :meth:`run` may be called from any thread, :meth:`arun` from any event loop.
    """

    def __init__(
        self,
        process: Callable[[list[Req]], Sequence[Res | BaseException]],
        *,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_wait: float = DEFAULT_MAX_WAIT,
        max_pending: int = DEFAULT_MAX_PENDING,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        name: str = "uniroute-batcher",
    ) -> None:
        if not callable(process):
            raise TypeError(f"process must be callable, got {type(process).__name__}")
        self._process = process
        self.max_batch_size = _check_positive_int("max_batch_size", max_batch_size)
        self.max_wait = _check_non_negative("max_wait", max_wait)
        self.max_pending = _check_positive_int("max_pending", max_pending)
        self.idle_timeout = _check_non_negative("idle_timeout", idle_timeout)
        self.name = name
        self._cond = threading.Condition()
        self._queue: deque[tuple[Req, concurrent.futures.Future[Res]]] = deque()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches_run = 0
        """How many batches ``process`` has been called with (for tests and monitoring)."""

    # ------------------------------------------------------------------ submitting
    def submit_many(self, requests: Sequence[Req]) -> list[concurrent.futures.Future[Res]]:
        """Queue requests (they may share a batch with other callers'); one future per request."""
        futures: list[concurrent.futures.Future[Res]] = [concurrent.futures.Future() for _ in requests]
        if not futures:
            return futures
        with self._cond:
            if self._closed:
                raise ServingClosedError(f"{self.name} is closed; it routes no new requests")
            if len(self._queue) + len(futures) > self.max_pending:
                raise ServingOverloadedError(
                    f"{self.name}: {len(self._queue)} routing requests are already waiting (max_pending="
                    f"{self.max_pending}); retry later or raise max_pending"
                )
            self._queue.extend(zip(requests, futures))
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return futures

    def submit(self, request: Req) -> concurrent.futures.Future[Res]:
        """Queue one request; its future resolves when its batch has been processed."""
        return self.submit_many([request])[0]

    def run(self, request: Req) -> Res:
        """Process ``request`` in the next batch and return its result (blocks this thread, never the worker)."""
        return self.submit(request).result()

    def run_many(self, requests: Sequence[Req]) -> list[Res]:
        """Process several requests, in as few batches as ``max_batch_size`` allows (others' requests may join)."""
        return [f.result() for f in self.submit_many(requests)]

    async def arun(self, request: Req) -> Res:
        """Async :meth:`run`: the event loop keeps running other tasks while the batch is processed."""
        return await self._await(self.submit(request))

    async def arun_many(self, requests: Sequence[Req]) -> list[Res]:
        """Async :meth:`run_many`."""
        futures = self.submit_many(requests)
        return list(await asyncio.gather(*(self._await(f) for f in futures)))

    async def _await(self, done_in_worker: concurrent.futures.Future[Res]) -> Res:
        """Await a worker future on the running loop; its caller is woken through the loop's paced wake-ups.

        Cancelling the awaiting task cancels the request too (the worker skips it if its batch has not started).
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Res] = loop.create_future()
        pacer = _PacedWakeups.of(loop)

        def on_done(fut: concurrent.futures.Future[Res]) -> None:  # runs in the worker thread (or here, if done)
            if loop.is_closed():
                return
            try:
                loop.call_soon_threadsafe(pacer.wake, waiter, fut)
            except RuntimeError:  # the loop closed between the check and the call: nobody is waiting any more
                pass

        done_in_worker.add_done_callback(on_done)
        try:
            return await waiter
        except asyncio.CancelledError:
            done_in_worker.cancel()
            raise

    # ------------------------------------------------------------------ the worker
    def _next_batch(self) -> list[tuple[Req, concurrent.futures.Future[Res]]] | None:
        """Wait for a first request, keep the batch open ``max_wait`` (or until full); ``None`` = exit."""
        with self._cond:
            idle_until = time.monotonic() + self.idle_timeout
            while not self._queue:
                if self._closed:
                    self._thread = None
                    return None
                left = idle_until - time.monotonic()
                if left <= 0:
                    self._thread = None  # a later submit starts a new worker (checked under the same lock)
                    return None
                self._cond.wait(left)
            deadline = time.monotonic() + self.max_wait
            while len(self._queue) < self.max_batch_size and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            n = min(self.max_batch_size, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            live = [(r, f) for r, f in batch if f.set_running_or_notify_cancel()]
            if not live:
                continue
            self.batches_run += 1
            try:
                results = list(self._process([r for r, _ in live]))
                if len(results) != len(live):
                    raise RuntimeError(f"{self.name}: process returned {len(results)} results for {len(live)} requests")
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
                for _, fut in live:
                    fut.set_exception(exc)
                continue
            for (_, fut), res in zip(live, results):
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)

    # ------------------------------------------------------------------ lifecycle
    @property
    def pending(self) -> int:
        """Requests waiting for a batch right now."""
        with self._cond:
            return len(self._queue)

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive."""
        with self._cond:
            return self._thread is not None

    def close(self, timeout: float | None = None) -> None:
        """Refuse new requests, serve the pending ones, and stop the worker thread (waits up to ``timeout``)."""
        with self._cond:
            self._closed = True
            thread = self._thread
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __repr__(self) -> str:
        return (
            f"MicroBatcher(max_batch_size={self.max_batch_size}, max_wait={self.max_wait}, "
            f"pending={self.pending}, batches_run={self.batches_run})"
        )


class _PacedWakeups:
    """Wakes the async callers of finished routing requests one per event-loop iteration, in completion order.

    A routing batch finishes up to ``max_batch_size`` requests at the same instant. Woken together (as
    ``asyncio.wrap_future`` would), every caller's continuation — the framework's callbacks and instrumentation, the
    member call's set-up, up to its first real ``await`` — runs back to back in ONE loop iteration, and the loop's
    timers and I/O wait for their sum (measured: ~100 ms for 50 LlamaIndex ``achat`` continuations on 2 cores). Here
    the next caller is woken only by a callback queued behind the previous caller's continuation, so the loop serves
    its timers and I/O between any two of them. The total work and the order are unchanged.

    One instance per event loop, used only from that loop's thread.
    """

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _PacedWakeups] = weakref.WeakKeyDictionary()
    _lock = threading.Lock()

    def __init__(self) -> None:
        # No reference to the loop: the registry is keyed weakly by the loop, and a value holding its key would keep
        # every closed loop (one per ``asyncio.run``) alive. Its methods run on the loop, which they look up.
        self._ready: deque[tuple[asyncio.Future[Any], concurrent.futures.Future[Any] | None]] = deque()
        self._scheduled = False

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _PacedWakeups:
        """The pacer of ``loop`` (created on first use; forgotten with the loop)."""
        with cls._lock:
            pacer = cls._by_loop.get(loop)
            if pacer is None:
                pacer = cls._by_loop[loop] = cls()
            return pacer

    def wake(self, waiter: asyncio.Future[Any], done: concurrent.futures.Future[Any] | None) -> None:
        """Queue ``waiter`` to receive ``done``'s outcome, or ``None`` when ``done`` is ``None`` (loop thread only)."""
        self._ready.append((waiter, done))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._wake_next)

    def _wake_next(self) -> None:
        while self._ready:
            waiter, done = self._ready.popleft()
            if waiter.done():  # its caller was cancelled meanwhile
                continue
            if done is None:
                waiter.set_result(None)
            elif done.cancelled():
                waiter.cancel()
            elif (error := done.exception()) is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(done.result())
            break
        if self._ready:
            # queued behind the woken caller's continuation, which was queued just now
            asyncio.get_running_loop().call_soon(self._wake_next)
        else:
            self._scheduled = False


async def paced_turn() -> None:
    """Give up the event loop until this task's turn among the others doing the same, one per loop iteration.

    Async calls that start together (200 ``ainvoke`` gathered at once) run their first steps back to back in one
    loop iteration. The adapters await this before their own per-call work (reading the messages, choosing the
    allowed members, queueing the routing request), so that work is spread over iterations, in arrival order, with
    the loop's timers and I/O served in between — as the callers of one routing batch are woken
    (:class:`_PacedWakeups`). Costs one loop iteration per call.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    _PacedWakeups.of(loop).wake(waiter, None)
    await waiter


@dataclass(frozen=True)
class ServingConfig:
    """How an adapter serves live calls: micro-batching, the live budget's window, the routing-text window.

    Attributes:
        max_batch_size: most routing requests embedded in one encoder call (default 64).
        max_wait: seconds a batch stays open after its first request arrives (default 0.002: a lone call waits
            at most 2 ms; under load batches fill while the previous one is being embedded).
        max_pending: most requests waiting at once; beyond it a call fails at once with
            :class:`ServingOverloadedError` instead of queueing without bound (default 10,000).
        budget_window: how many recent prompts the live budget re-solves λ on (default 200; see
            :class:`BudgetController`).
        text_window: which part of a routing text longer than the encoder's window is embedded: ``"head_tail"``
            (default: a quarter of the window from the start, the rest from the end, where a context-first RAG
            prompt's question is), ``"tail"`` or ``"head"`` (see
            :mod:`uniroute_core.routing_text`).
    """

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_wait: float = DEFAULT_MAX_WAIT
    max_pending: int = DEFAULT_MAX_PENDING
    budget_window: int = 200
    text_window: str = "head_tail"

    def __post_init__(self) -> None:
        from .routing_text import WINDOW_STRATEGIES

        _check_positive_int("max_batch_size", self.max_batch_size)
        _check_non_negative("max_wait", self.max_wait)
        _check_positive_int("max_pending", self.max_pending)
        _check_positive_int("budget_window", self.budget_window)
        if self.text_window not in WINDOW_STRATEGIES:
            raise ValueError(f"text_window must be one of {list(WINDOW_STRATEGIES)}, got {self.text_window!r}")


# ---------------------------------------------------------------------------------------------------------- budget


@dataclass(frozen=True)
class BudgetStatus:
    """The live budget's numbers after a call (what the adapters put in the ``uniroute`` metadata)."""

    budget: float | None
    calls: int
    realised_mean_cost: float | None

    def as_metadata(self) -> dict[str, Any]:
        """The metadata entries ``budget``, ``calls_served`` and ``realised_mean_cost``."""
        return {"budget": self.budget, "calls_served": self.calls, "realised_mean_cost": self.realised_mean_cost}


class SpendMeter:
    """The realised cost of the calls served so far (count and total). Thread-safe, one short lock per update."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spent = 0.0
        self._calls = 0

    def record(self, cost: float) -> tuple[int, float]:
        """Add one served call's cost; returns (calls, total spent) after it."""
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not math.isfinite(cost) or cost < 0:
            raise ValueError(f"a call's cost must be a finite number >= 0, got {cost!r}")
        with self._lock:
            self._spent += float(cost)
            self._calls += 1
            return self._calls, self._spent

    def totals(self) -> tuple[int, float]:
        """(calls, total spent) so far."""
        with self._lock:
            return self._calls, self._spent

    @property
    def calls(self) -> int:
        """Calls recorded."""
        return self.totals()[0]

    @property
    def mean(self) -> float | None:
        """Mean cost per call so far (``None`` before the first call)."""
        calls, spent = self.totals()
        return spent / calls if calls else None


class BudgetController:
    """Keep the mean cost per routed call at or below ``budget`` on the traffic actually served.

    For each batch, the routed mean cost over the predicted-quality rows of the last ``window`` prompts (this batch
    included) is computed at every breakpoint of the rule (exact, as :func:`~uniroute_core.rule.calibrate_lambda`
    does) and compared with a *target*: the budget, lowered when the calls served so far cost more than the budget
    in total — the overspend is paid back over the next ``window`` calls (``target = budget − overspend / window``,
    never below half the budget). Underspending is not banked: the target never exceeds the budget. Calls get the
    smallest λ whose window mean fits the target, or — in the share that brings the window's expected mean to the
    target — the next breakpoint below it (see :meth:`lams_for`). Until ``min_rows`` prompts have been seen, λ comes
    from the probe calibration (``start_lam``), the starting point.

    The solution is over the whole pool; a call restricted to some members (tools, stickiness) applies its λ to its
    candidates.
    The rows are recomputed from the window's embeddings on the snapshot each batch is routed on, so a pool change
    (``add_model``, ``remove_model``, feedback) never mixes columns of two pools.

    Thread-safe: :meth:`lams_for` is called by the micro-batcher's one worker thread; :meth:`record` (a served
    call's realised cost) from any thread; each takes one short lock.
    """

    def __init__(
        self, budget: float, *, window: int = 200, min_rows: int = 20, meter: SpendMeter | None = None
    ) -> None:
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0:
            raise ValueError(f"budget must be a finite mean cost per call > 0, got {budget!r}")
        self.budget = float(budget)
        self.window = _check_positive_int("window", window)
        self.min_rows = _check_positive_int("min_rows", min_rows)
        self.meter = meter if meter is not None else SpendMeter()
        self._lock = threading.Lock()
        self._embeddings: deque[np.ndarray] = deque(maxlen=self.window)
        self._lam = 0.0
        self._carry = 0.0

    @property
    def calls(self) -> int:
        """Calls whose cost was recorded."""
        return self.meter.calls

    @property
    def realised_mean_cost(self) -> float | None:
        """Mean cost of the calls recorded so far (``None`` before the first)."""
        return self.meter.mean

    @property
    def lam(self) -> float:
        """The λ of the latest batch."""
        return self._lam

    def target(self) -> float:
        """The mean cost the next batch aims at: the budget minus the overspend so far spread over ``window`` calls."""
        calls, spent = self.meter.totals()
        overspend = spent - self.budget * calls
        return self.budget - min(max(overspend, 0.0) / self.window, self.budget / 2)

    def lams_for(self, state: Any, embeddings: np.ndarray, start_lam: Callable[[float], float]) -> np.ndarray:
        """λ for each prompt of a batch (rows of ``embeddings``) routed on ``state``; adds them to the window.

        On the window's rows the routed mean cost is a step function of λ: the smallest λ whose mean fits the
        target (``λ_hi``) may spend well under it, the next breakpoint below (``λ_lo``) over it. So that the
        budget is used and not only respected, calls are split between the two in the proportion that makes the
        window's expected mean equal the target — deterministically, by an accumulator (error diffusion), so a
        share p of λ_lo is exactly one call in 1/p. ``start_lam(target)`` gives the probe calibration's λ, used
        until the window holds ``min_rows`` prompts. ``state`` is the router-state snapshot the batch is routed on.
        """
        x = np.asarray(embeddings, dtype=np.float32)
        with self._lock:
            self._embeddings.extend(x)
            seen = np.stack(list(self._embeddings)) if len(self._embeddings) >= self.min_rows else None
        target = self.target()
        if seen is None:
            lam = float(start_lam(target))
            self._lam = lam
            return np.full(len(x), lam)
        quality = state.cluster_map.assign(seen) @ _psi(state).T
        rows, counts = np.unique(np.round(quality, 12), axis=0, return_counts=True)
        lams = lambda_grid(rows, state.costs)
        spent = routed_cost_curve(rows, state.costs, lams, weights=counts)
        ok = np.nonzero(spent <= target + 1e-12 * max(1.0, target))[0]
        if ok.size == 0:  # even the cheapest choice is over the target: route as cheaply as possible
            self._lam = float(lams[-1])
            return np.full(len(x), self._lam)
        k = int(ok[0])
        lam_hi = float(lams[k])
        share = 0.0
        if k > 0 and spent[k - 1] > spent[k]:
            share = float(np.clip((target - spent[k]) / (spent[k - 1] - spent[k]), 0.0, 1.0))
        out = np.full(len(x), lam_hi)
        with self._lock:
            for i in range(len(x)):
                self._carry += share
                if self._carry >= 1.0:
                    self._carry -= 1.0
                    out[i] = float(lams[k - 1])
        self._lam = lam_hi
        return out

    def lam_for(self, state: Any, embeddings: np.ndarray, start_lam: Callable[[float], float]) -> float:
        """One λ for a whole batch: the λ of :meth:`lams_for` that most of its prompts get (for simple callers)."""
        lams = self.lams_for(state, embeddings, start_lam)
        values, counts = np.unique(lams, return_counts=True)
        return float(values[np.argmax(counts)])

    def record(self, cost: float) -> BudgetStatus:
        """Add one served call's realised cost; returns the status after it."""
        calls, spent = self.meter.record(cost)
        return BudgetStatus(self.budget, calls, spent / calls)

    def status(self) -> BudgetStatus:
        """The status without recording anything."""
        return BudgetStatus(self.budget, self.meter.calls, self.meter.mean)

    def __repr__(self) -> str:
        return f"BudgetController(budget={self.budget}, calls={self.calls}, realised={self.realised_mean_cost})"


def _psi(state: Any) -> np.ndarray:
    """Ψ (M × K) of a router state, whatever the state calls it."""
    psi = getattr(state, "cluster_quality", None)
    return np.asarray(psi if psi is not None else state.quality)


# ---------------------------------------------------------------------------------------------------------- prices

TYPICAL_INPUT_TOKENS = 1000
"""Input tokens of a typical call, for turning per-token prices into a per-call routing cost (override per member)."""
TYPICAL_OUTPUT_TOKENS = 250
"""Output tokens of a typical call, likewise."""

_PRICE_KEYS = ("input_per_mtok", "output_per_mtok", "typical_input_tokens", "typical_output_tokens", "per_call")


@dataclass(frozen=True)
class TokenPrices:
    """A member's prices per million tokens, and the per-call cost routing uses for it.

    Routing compares members by one cost per call. With token prices that cost is
    ``per_call`` when given, else ``(typical_input_tokens · input_per_mtok + typical_output_tokens ·
    output_per_mtok) / 1e6`` (defaults 1,000 input and 250 output tokens — set them to your traffic's averages:
    only the members' cost ratios matter to routing, and they depend on the input/output mix). When a member
    reports the tokens a call used, :meth:`call_cost` gives that call's actual cost in the prices' currency.
    """

    input_per_mtok: float
    output_per_mtok: float
    typical_input_tokens: float = TYPICAL_INPUT_TOKENS
    typical_output_tokens: float = TYPICAL_OUTPUT_TOKENS
    per_call: float | None = None

    def __post_init__(self) -> None:
        for key in _PRICE_KEYS:
            value = getattr(self, key)
            if key == "per_call" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"cost[{key!r}] must be a finite number >= 0, got {value!r}")

    @property
    def routing_cost(self) -> float:
        """The per-call cost routing uses for this member."""
        if self.per_call is not None:
            return float(self.per_call)
        return self.call_cost(self.typical_input_tokens, self.typical_output_tokens)

    def call_cost(self, input_tokens: float, output_tokens: float) -> float:
        """The actual cost of a call that used these many tokens."""
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


def parse_cost(name: str, cost: float | Mapping[str, float]) -> tuple[float, TokenPrices | None]:
    """A member's ``cost=`` as (per-call routing cost, token prices or ``None``).

    ``cost`` is a number (the per-call cost) or a mapping with ``input_per_mtok`` and ``output_per_mtok`` and
    optionally ``typical_input_tokens``, ``typical_output_tokens`` or ``per_call`` (see :class:`TokenPrices`).
    """
    if isinstance(cost, Mapping):
        unknown = sorted(set(cost) - set(_PRICE_KEYS))
        missing = [k for k in ("input_per_mtok", "output_per_mtok") if k not in cost]
        if unknown or missing:
            raise ValueError(
                f"member {name!r}: cost mapping needs 'input_per_mtok' and 'output_per_mtok' "
                f"(optional: 'typical_input_tokens', 'typical_output_tokens', 'per_call'); "
                + (f"missing {missing}" if missing else f"unknown keys {unknown}")
            )
        try:
            prices = TokenPrices(**{k: cost[k] for k in cost})
        except ValueError as exc:
            raise ValueError(f"member {name!r}: {exc}") from None
        if prices.routing_cost <= 0 and prices.per_call is None:
            raise ValueError(f"member {name!r}: prices {dict(cost)} give a per-call cost of 0; give positive prices")
        return prices.routing_cost, prices
    return cost, None  # numbers are validated where the profile is built
