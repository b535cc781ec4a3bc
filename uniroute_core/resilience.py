"""Member timeouts and a circuit breaker: what both adapters use so that a hung or failing member costs a bounded
amount of time and is not tried first on every call.

* :func:`run_bounded` — run a blocking member call in a worker thread and wait at most ``timeout`` seconds. Python
  cannot kill a thread, so a call that times out is **abandoned**: its daemon thread keeps running until the member
  returns (its result is dropped). At most :data:`MAX_ABANDONED` abandoned threads may be alive at once (process-wide);
  beyond that a new bounded call fails at once with :class:`MemberTimeoutError` instead of starting yet another
  thread, so a member that hangs forever cannot pile up threads without limit. :func:`arun_bounded` is the same for
  an async caller (the event loop awaits the thread, never blocks on it) — used for sync-only members (e.g. a
  LlamaIndex ``CustomLLM``) called from async code.
* :class:`CircuitBreaker` — a member that failed ``failures`` times within ``window`` seconds is *open* (skipped) for
  ``cooldown`` seconds, then *half-open*: one call is let through; success closes it, failure opens it again.

Timeouts are measured with ``time.monotonic`` inside the wait primitives (``Future.result(timeout)`` /
``asyncio.wait_for``); nothing here sleeps or polls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "MemberTimeoutError",
    "CircuitOpenError",
    "BreakerConfig",
    "CircuitBreaker",
    "run_bounded",
    "arun_bounded",
    "abandoned_calls",
    "MAX_ABANDONED",
    "check_timeout",
]

T = TypeVar("T")

MAX_ABANDONED = 64
"""How many timed-out member calls may still be running in abandoned worker threads, process-wide."""


class MemberTimeoutError(TimeoutError):
    """A member did not answer (or, for a stream, did not send its first chunk) within the timeout."""

    def __init__(self, member: str | None, timeout: float, detail: str = "") -> None:
        self.member = member
        self.timeout = timeout
        who = f"member {member!r}" if member else "member call"
        super().__init__(f"{who} timed out after {timeout:g} s{detail}")


class CircuitOpenError(RuntimeError):
    """A member was skipped because its circuit breaker is open."""


def check_timeout(timeout: Any, what: str = "timeout") -> float | None:
    """``timeout`` validated: ``None`` (no limit) or a finite number of seconds > 0."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0 or timeout == float("inf"):
        raise ValueError(f"{what} must be a finite number of seconds > 0 or None, got {timeout!r}")
    return float(timeout)


# ----------------------------------------------------------------------------------------------- bounded calls

_abandoned_lock = threading.Lock()
_abandoned = 0


def abandoned_calls() -> int:
    """How many timed-out member calls are still running in abandoned threads right now."""
    with _abandoned_lock:
        return _abandoned


def _start(fn: Callable[[], T], name: str) -> concurrent.futures.Future[T]:
    """Run ``fn`` (in a copy of the caller's context) in a new daemon thread and return its future.

    The future gets an ``abandon()`` method: a waiter that gives up calls it, and the call then counts as abandoned
    until its thread ends.
    """
    with _abandoned_lock:
        if _abandoned >= MAX_ABANDONED:
            raise MemberTimeoutError(
                None, 0, f": not started, {_abandoned} timed-out member calls are still running (limit "
                f"uniroute_core.resilience.MAX_ABANDONED = {MAX_ABANDONED})"
            )
    future: concurrent.futures.Future[T] = concurrent.futures.Future()
    flags = {"abandoned": False, "finished": False}
    guard = threading.Lock()
    context = contextvars.copy_context()

    def work() -> None:
        global _abandoned
        try:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(context.run(fn))
                except BaseException as exc:  # noqa: BLE001 - handed to the waiter
                    future.set_exception(exc)
        finally:
            with guard:
                was_abandoned = flags["abandoned"]
                flags["finished"] = True
            if was_abandoned:
                with _abandoned_lock:
                    _abandoned -= 1

    def abandon() -> None:
        global _abandoned
        with guard:
            if flags["finished"] or flags["abandoned"]:
                return
            flags["abandoned"] = True
            with _abandoned_lock:
                _abandoned += 1

    future.abandon = abandon  # type: ignore[attr-defined]
    threading.Thread(target=work, name=name, daemon=True).start()
    return future


def run_bounded(fn: Callable[[], T], timeout: float | None, *, member: str | None = None) -> T:
    """``fn()`` with at most ``timeout`` seconds of waiting (``None``: called directly in this thread).

    With a timeout, ``fn`` runs in a daemon worker thread (with this thread's context variables); if it has not
    returned in time, :class:`MemberTimeoutError` is raised and the thread is abandoned (see the module doc).
    """
    if timeout is None:
        return fn()
    future = _start(fn, f"uniroute-member-{member or 'call'}")
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.abandon()  # type: ignore[attr-defined]
        raise MemberTimeoutError(member, timeout) from None


def _retrieve(f: asyncio.Future[Any]) -> None:
    if not f.cancelled():
        f.exception()


async def arun_bounded(fn: Callable[[], T], timeout: float | None, *, member: str | None = None) -> T:
    """Async: run the *blocking* ``fn()`` in a worker thread and await it, at most ``timeout`` seconds if given.

    The event loop is never blocked. A call that times out (or whose awaiting task is cancelled) is abandoned.
    """
    future = _start(fn, f"uniroute-member-{member or 'call'}")
    wrapped = asyncio.wrap_future(future)
    wrapped.add_done_callback(_retrieve)  # an abandoned call's late error is not logged as never retrieved
    try:
        if timeout is None:
            return await asyncio.shield(wrapped)
        try:
            return await asyncio.wait_for(asyncio.shield(wrapped), timeout)
        except asyncio.TimeoutError:
            future.abandon()  # type: ignore[attr-defined]
            raise MemberTimeoutError(member, timeout) from None
    except asyncio.CancelledError:
        future.abandon()  # type: ignore[attr-defined]
        raise


async def await_bounded(awaitable: Any, timeout: float | None, *, member: str | None = None) -> Any:
    """Await ``awaitable`` for at most ``timeout`` seconds (``None``: no limit); on timeout it is cancelled and
    :class:`MemberTimeoutError` is raised."""
    if timeout is None:
        return await awaitable
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        raise MemberTimeoutError(member, timeout) from None


# ----------------------------------------------------------------------------------------------- circuit breaker


@dataclass(frozen=True)
class BreakerConfig:
    """When a member's circuit opens and for how long.

    Args:
        failures: failures (errors or timeouts) within ``window`` seconds that open the circuit (>= 1).
        window: the sliding window, in seconds (> 0).
        cooldown: how long an open circuit skips the member before one trial call (half-open), in seconds (> 0).
    """

    failures: int = 5
    window: float = 60.0
    cooldown: float = 30.0

    def __post_init__(self) -> None:
        if isinstance(self.failures, bool) or not isinstance(self.failures, int) or self.failures < 1:
            raise ValueError(f"BreakerConfig.failures must be an integer >= 1, got {self.failures!r}")
        check_timeout(self.window, "BreakerConfig.window")
        check_timeout(self.cooldown, "BreakerConfig.cooldown")


class CircuitBreaker:
    """Per-member circuit breaker (thread-safe): closed → open after ``failures`` failures within ``window`` s →
    half-open after ``cooldown`` s (one trial call) → closed on success, open again on failure.

    ``clock`` (default ``time.monotonic``) is injectable so tests need not wait.
    """

    def __init__(self, config: BreakerConfig | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = BreakerConfig() if config is None else config
        if not isinstance(self.config, BreakerConfig):
            raise TypeError(f"config must be a BreakerConfig, got {type(self.config).__name__}")
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}
        self._opened: dict[str, float] = {}
        self._trial: set[str] = set()

    def state(self, member: str) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"``."""
        with self._lock:
            return self._state(member, self._clock())

    def _state(self, member: str, now: float) -> str:
        opened = self._opened.get(member)
        if opened is None:
            return "closed"
        return "open" if now - opened < self.config.cooldown else "half-open"

    def allow(self, member: str) -> bool:
        """Whether ``member`` may be tried now. In half-open state only one trial call at a time is let through."""
        with self._lock:
            state = self._state(member, self._clock())
            if state == "closed":
                return True
            if state == "half-open" and member not in self._trial:
                self._trial.add(member)
                return True
            return False

    def record_success(self, member: str) -> None:
        """The member answered: its circuit closes and its failure history is cleared."""
        with self._lock:
            self._opened.pop(member, None)
            self._trial.discard(member)
            self._failures.pop(member, None)

    def record_failure(self, member: str) -> None:
        """The member raised or timed out."""
        with self._lock:
            now = self._clock()
            if member in self._trial or self._state(member, now) != "closed":
                self._trial.discard(member)
                self._opened[member] = now  # a failed trial (or a late failure) re-opens for a full cool-down
                return
            times = self._failures.setdefault(member, deque())
            times.append(now)
            while times and now - times[0] > self.config.window:
                times.popleft()
            if len(times) >= self.config.failures:
                self._opened[member] = now
                times.clear()

    def release(self, member: str) -> None:
        """A trial call let through by :meth:`allow` ended without a verdict (e.g. cancelled)."""
        with self._lock:
            self._trial.discard(member)

    def open_members(self) -> list[str]:
        """Members whose circuit is open right now (for monitoring)."""
        with self._lock:
            now = self._clock()
            return [m for m in self._opened if self._state(m, now) == "open"]

    def reason(self, member: str) -> str:
        """Why ``member`` is skipped, for the metadata."""
        with self._lock:
            opened = self._opened.get(member)
            left = 0.0 if opened is None else max(0.0, self.config.cooldown - (self._clock() - opened))
        return (
            f"circuit open ({self.config.failures} failures within {self.config.window:g} s; "
            f"retried in {left:.1f} s)"
        )


class BreakerSlot:
    """An adapter's one :class:`CircuitBreaker`, kept while its configuration stays the same (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._breaker: CircuitBreaker | None = None

    def get(self, config: BreakerConfig | None) -> CircuitBreaker | None:
        """The breaker for ``config`` (``None``: no breaker)."""
        if config is None:
            return None
        with self._lock:
            if self._breaker is None or self._breaker.config != config:
                self._breaker = CircuitBreaker(config)
            return self._breaker
