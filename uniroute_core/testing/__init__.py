"""Conformance scenarios for framework adapters: one behaviour, written once, run against every adapter.

An adapter (``ChatUniRoute`` for LangChain, ``UniRouteLLM`` for LlamaIndex, or a new one) implements
:class:`AdapterHarness`: build a routed model over scripted members (:class:`MemberScript`), call it sync / async /
streamed, read the ``uniroute`` metadata of the reply. Every function in :data:`SCENARIOS` then checks one shared
behaviour through that harness (routing by topic, λ, forced member, sticky conversations, context-window filtering,
fallback on error, timeouts, the circuit breaker, unknown settings, removing the last member, the metadata's shape).
The project's tests run every scenario against both adapters, so a difference between them is a failing test::

    @pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
    @pytest.mark.parametrize("harness", [LangChainHarness(), LlamaIndexHarness()], ids=lambda h: h.name)
    def test_conformance(harness, scenario):
        scenario(harness)

This module imports no framework: it is plain Python over the harness interface.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..delegation import AllMembersFailedError, MemberMismatchError
from ..probes import ProbeSet
from ..resilience import BreakerConfig, MemberTimeoutError
from ..router import UniRouter

__all__ = [
    "MemberScript",
    "Reply",
    "AdapterHarness",
    "MODES",
    "SCENARIOS",
    "word_embedder",
    "scenario_router",
    "METADATA_KEYS",
    "MATH",
    "HISTORY",
]

MODES = ("sync", "async", "stream", "astream")
"""The four ways every scenario that makes calls may call a routed model."""

MATH = "math algebra equation: solve for x"
HISTORY = "history empire war: which century"
_TRAIN_MATH = [f"math algebra equation problem {i}" for i in range(10)]
_TRAIN_HISTORY = [f"history empire war century {i}" for i in range(10)]

METADATA_KEYS = frozenset(
    {
        "member", "expected_quality", "cost", "lam", "mode", "fallbacks", "calls_served", "realised_mean_cost",
        "call_id", "exploratory",
    }
)
"""The keys of every reply's ``uniroute`` metadata (no budget, no token prices)."""

HANG_LIMIT = 30.0
"""A hung scripted member gives up after this many seconds, so a broken adapter fails a test instead of hanging it."""


def word_embedder(texts: Sequence[str]) -> np.ndarray:
    """A deterministic 16-d bag-of-words embedder (no model download): texts sharing words land near each other."""
    out = np.zeros((len(texts), 16))
    for i, t in enumerate(texts):
        for w in t.lower().split():
            out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % 16] += 1.0
        n = np.linalg.norm(out[i])
        if n > 0:
            out[i] /= n
    return out


@dataclass(eq=False)
class MemberScript:
    """A framework-neutral scripted member: what it answers, how it fails, how it is profiled.

    Harnesses turn it into a framework member whose every call (sync, async, stream) goes through :meth:`respond` /
    :meth:`arespond`. ``scores`` is its profile on :func:`scenario_router`'s 20 probes (10 math, then 10 history).
    """

    name: str
    cost: float
    scores: Sequence[float]
    fail: BaseException | None = None
    """Raised by every call (a stream: before its first chunk)."""
    hang: threading.Event | None = None
    """When given, every call blocks until it is set (at most :data:`HANG_LIMIT` s) — a hung member."""
    context_window: int | None = None
    """The member's context window in tokens (``None``: the framework's default / unknown)."""
    hang_limit: float = HANG_LIMIT
    """A hung call gives up after this many seconds and raises ``TimeoutError`` (so a test that expects someone
    to release it fails instead of passing late)."""
    calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _start(self) -> None:
        with self.lock:
            self.calls += 1

    def answer(self, text: str) -> str:
        return f"{self.name}: {text}"

    def respond(self, text: str) -> str:
        """A sync call: blocks while hung, raises ``fail``, else answers ``"<name>: <text>"``."""
        self._start()
        if self.hang is not None and not self.hang.wait(self.hang_limit):
            raise TimeoutError(f"{self.name} was never released (hung {self.hang_limit:g} s)")
        if self.fail is not None:
            raise self.fail
        return self.answer(text)

    async def arespond(self, text: str) -> str:
        """An async call: awaits while hung (cancellable), raises ``fail``, else answers."""
        self._start()
        if self.hang is not None:
            deadline = time.monotonic() + self.hang_limit
            while not self.hang.is_set():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} was never released (hung {self.hang_limit:g} s)")
                await asyncio.sleep(0.01)
        if self.fail is not None:
            raise self.fail
        return self.answer(text)


@dataclass(frozen=True)
class Reply:
    """What a call returned, framework-neutral: the text and the ``uniroute`` metadata entry."""

    text: str
    metadata: Mapping[str, Any]

    @property
    def member(self) -> str:
        return str(self.metadata["member"])


class AdapterHarness(ABC):
    """How the scenarios drive one adapter. Implement the abstract methods; the rest have common defaults."""

    name: str = "adapter"

    @abstractmethod
    def build(self, router: UniRouter, members: Sequence[MemberScript], **settings: Any) -> Any:
        """The adapter's routed model over framework members made from ``members`` (``settings``: its fields)."""

    @abstractmethod
    def call(self, routed: Any, text: str, mode: str = "sync", /, **call_kwargs: Any) -> Reply:
        """Call ``routed`` with one user message ``text`` in ``mode`` (one of :data:`MODES`; async modes may use
        ``asyncio.run``); ``call_kwargs`` are call keywords (e.g. :meth:`conversation`, :meth:`force`)."""

    @abstractmethod
    def remove_model(self, model: Any, name: str) -> Any:
        """Remove member ``name`` through the adapter."""

    @abstractmethod
    def add_model(self, routed: Any, member: MemberScript, **profiling_kwargs: Any) -> Any:
        """Profile and add ``member`` through the adapter's ``add_model`` (no progress bar)."""

    def conversation(self, conversation_id: str) -> dict[str, Any]:
        """Call keywords that name the conversation a call belongs to."""
        return {"conversation_id": conversation_id}

    def force(self, member: str) -> dict[str, Any]:
        """Call keywords that force a member."""
        return {"model": member}

    def pool_is_empty_error(self) -> type[BaseException]:
        return MemberMismatchError


def scenario_router(members: Sequence[MemberScript]) -> UniRouter:
    """A small fitted router (K = 2 over math / history prompts) with ``members`` profiled on its 20 probes."""
    r = UniRouter(embedder=word_embedder, n_clusters=2, show_progress=False).fit(_TRAIN_MATH + _TRAIN_HISTORY)
    prompts = tuple(_TRAIN_MATH + _TRAIN_HISTORY)
    r.set_probes(ProbeSet(prompts=prompts, references=("A",) * 20, grader="multiple_choice"))
    for m in members:
        r.add_model(m.name, m.cost, list(m.scores))
    return r


def _pair(
    cheap: dict[str, Any] | None = None, strong: dict[str, Any] | None = None
) -> tuple[MemberScript, MemberScript]:
    """"cheap" (cost 1, right on math only) and "strong" (cost 10, right on all): λ = 0.3 sends math to cheap and
    history to strong."""
    return (
        MemberScript("cheap", 1.0, [1.0] * 10 + [0.0] * 10, **(cheap or {})),
        MemberScript("strong", 10.0, [1.0] * 20, **(strong or {})),
    )


def _built(h: AdapterHarness, members: Sequence[MemberScript], **settings: Any) -> Any:
    return h.build(scenario_router(members), members, **settings)


@contextmanager
def _released(*events: threading.Event) -> Iterator[None]:
    """Release hung members at the end (their abandoned threads then finish)."""
    try:
        yield
    finally:
        for e in events:
            e.set()


# ================================================================================================= scenarios


def routes_by_topic(h: AdapterHarness) -> None:
    """Math goes to the cheap member that is good at math, history to the strong one; the answer is theirs."""
    cheap, strong = _pair()
    model = _built(h, [cheap, strong], lam=0.3)
    for mode in MODES:
        math, history = h.call(model, MATH, mode), h.call(model, HISTORY, mode)
        assert (math.member, history.member) == ("cheap", "strong"), mode
        assert math.text.startswith("cheap:") and history.text.startswith("strong:"), (mode, math.text)


def lam_moves_traffic(h: AdapterHarness) -> None:
    """A large λ sends even history to the cheap member; λ = 0 sends it to the strong one."""
    cheap, strong = _pair()
    router = scenario_router([cheap, strong])
    assert h.call(h.build(router, [cheap, strong], lam=0.0), HISTORY).member == "strong"
    assert h.call(h.build(router, [cheap, strong], lam=10.0), HISTORY).member == "cheap"


def metadata_shape(h: AdapterHarness) -> None:
    """Every reply carries the same ``uniroute`` keys, in every mode."""
    model = _built(h, list(_pair()), lam=0.3)
    for mode in MODES:
        reply = h.call(model, MATH, mode)
        assert set(reply.metadata) == METADATA_KEYS, (mode, sorted(reply.metadata))
        assert reply.metadata["mode"] == "lam" and reply.metadata["lam"] == 0.3 and reply.metadata["cost"] == 1.0
        assert set(reply.metadata["expected_quality"]) == {"cheap", "strong"}
        assert reply.metadata["fallbacks"] == []


def fallback_on_error(h: AdapterHarness) -> None:
    """A member that raises is followed by the next member by routing score; the failure is in ``fallbacks``."""
    for mode in MODES:
        cheap, strong = _pair(cheap={"fail": ConnectionError("cheap is down")})
        reply = h.call(_built(h, [cheap, strong], lam=0.3, circuit_breaker=None), MATH, mode)
        assert reply.member == "strong" and reply.text.startswith("strong:"), mode
        assert reply.metadata["fallbacks"] == [
            {"member": "cheap", "reason": "error", "error": "ConnectionError: cheap is down"}
        ], mode


def timeout_falls_back(h: AdapterHarness) -> None:
    """A hung member is abandoned after ``timeout`` and the next member answers (sync, async and streams: the
    time to the first chunk); ``fallbacks`` says "timeout" with the member's name."""
    for mode in MODES:
        hang = threading.Event()
        with _released(hang):
            cheap, strong = _pair(cheap={"hang": hang})
            model = _built(h, [cheap, strong], lam=0.3, timeout=0.5)
            reply = h.call(model, MATH, mode)
            assert reply.member == "strong" and reply.text.startswith("strong:"), mode
            [entry] = reply.metadata["fallbacks"]
            assert entry["member"] == "cheap" and entry["reason"] == "timeout", (mode, entry)
            assert not hang.is_set()  # the hung member was still hung when the answer came


def circuit_breaker_skips(h: AdapterHarness) -> None:
    """A member that failed ``failures`` times is skipped (not called) while its circuit is open, and the skip is
    reported; when every member is open they are all still tried."""
    cheap, strong = _pair(cheap={"fail": ConnectionError("cheap is down")})
    model = _built(h, [cheap, strong], lam=0.3, circuit_breaker=BreakerConfig(failures=2, window=60, cooldown=60))
    for _ in range(2):
        assert h.call(model, MATH).metadata["fallbacks"][0]["reason"] == "error"
    assert cheap.calls == 2
    for mode in MODES:
        reply = h.call(model, MATH, mode)
        assert reply.member == "strong", mode
        [entry] = reply.metadata["fallbacks"]
        assert entry["member"] == "cheap" and entry["reason"] == "skipped: circuit open", (mode, entry)
    assert cheap.calls == 2  # skipped, never called

    broken = [MemberScript(n, c, [1.0] * 20, fail=ConnectionError(f"{n} is down")) for n, c in (("a", 1), ("b", 2))]
    model = _built(h, broken, lam=0.3, circuit_breaker=BreakerConfig(failures=1, window=60, cooldown=60))
    for _ in range(2):
        try:
            h.call(model, MATH)
        except AllMembersFailedError as exc:
            assert set(exc.failures) == {"a", "b"}
        else:
            raise AssertionError("a call over members that all fail must raise")
    assert [m.calls for m in broken] == [2, 2]  # all open, still tried


def unknown_settings_rejected(h: AdapterHarness) -> None:
    """A misspelt or foreign setting is an error naming it, not silently ignored."""
    members = list(_pair())
    for bad in ({"stickyy": True}, {"lamda": 0.3}, {"time_out": 5}):
        try:
            _built(h, members, **bad)
        except (ValueError, TypeError) as exc:
            assert next(iter(bad)) in str(exc), str(exc)
        else:
            raise AssertionError(f"{bad} was accepted")
    for bad in ({"timeout": 0}, {"timeout": -1.0}, {"lam": -1.0}):
        try:
            _built(h, members, **bad)
        except (ValueError, TypeError):
            pass
        else:
            raise AssertionError(f"{bad} was accepted")


def removing_members(h: AdapterHarness) -> None:
    """Removing a member stops routing to it; an unknown name is a ``KeyError``; the last member may be removed,
    after which a call is a clear error saying the pool is empty."""
    cheap, strong = _pair()
    model = _built(h, [cheap, strong], lam=0.3)
    h.remove_model(model, "cheap")
    assert h.call(model, MATH).member == "strong"
    try:
        h.remove_model(model, "nobody")
    except KeyError as exc:
        assert "nobody" in str(exc)
    else:
        raise AssertionError("removing an unknown member must raise KeyError")
    h.remove_model(model, "strong")
    try:
        h.call(model, MATH)
    except h.pool_is_empty_error() as exc:
        assert "empty" in str(exc), str(exc)
    else:
        raise AssertionError("a call on an empty pool must raise")


def forced_member(h: AdapterHarness) -> None:
    """``model="<member>"`` in the call forces that member (mode "forced"), in every mode; it never reaches the
    member as a keyword; an unknown name is a ``KeyError`` naming the members."""
    model = _built(h, list(_pair()), lam=0.3)
    for mode in MODES:
        reply = h.call(model, MATH, mode, **h.force("strong"))
        assert reply.member == "strong" and reply.text.startswith("strong:"), mode
        assert reply.metadata["mode"] == "forced", (mode, reply.metadata["mode"])
    try:
        h.call(model, MATH, **h.force("nobody"))
    except KeyError as exc:
        assert "nobody" in str(exc)
    else:
        raise AssertionError("forcing an unknown member must raise KeyError")


def sticky_conversations(h: AdapterHarness) -> None:
    """With ``sticky=True`` a conversation that used the strong member never drops to the cheap one; another
    conversation (or a model without ``sticky``) routes on its own."""
    cheap, strong = _pair()
    router = scenario_router([cheap, strong])
    model = h.build(router, [cheap, strong], lam=0.3, sticky=True)
    for mode in MODES:
        cid = f"conversation-{mode}"
        assert h.call(model, MATH, mode, **h.conversation(cid)).member == "cheap", mode
        assert h.call(model, HISTORY, mode, **h.conversation(cid)).member == "strong", mode
        assert h.call(model, MATH, mode, **h.conversation(cid)).member == "strong", mode  # never downgraded
        assert h.call(model, MATH, mode, **h.conversation(f"other-{mode}")).member == "cheap", mode
    loose = h.build(router, [cheap, strong], lam=0.3)
    h.call(loose, HISTORY, **h.conversation("c"))
    assert h.call(loose, MATH, **h.conversation("c")).member == "cheap"


def context_filter(h: AdapterHarness) -> None:
    """A prompt longer than a member's context window does not go to it (tokens estimated as chars / 4 unless the
    member counts them itself); a short one still does."""
    cheap, strong = _pair(cheap={"context_window": 64})
    model = _built(h, [cheap, strong], lam=0.3)
    long_math = MATH + " solve" * 100  # ~630 characters: ~160 tokens by the chars/4 estimate
    for mode in MODES:
        assert h.call(model, MATH, mode).member == "cheap", mode
        assert h.call(model, long_math, mode).member == "strong", mode


def add_model_deadline(h: AdapterHarness) -> None:
    """Profiling a hung candidate stops at the ``deadline`` with ``MemberTimeoutError`` and leaves no trace (not a
    member, no profile); a candidate whose probes each hang fails them at ``probe_timeout`` and is refused."""
    cheap, strong = _pair()
    model = _built(h, [cheap, strong], lam=0.3)
    hang = threading.Event()
    with _released(hang):
        hung = MemberScript("hung", 2.0, [], hang=hang)
        try:
            h.add_model(model, hung, deadline=0.5, max_concurrency=2)
        except MemberTimeoutError as exc:
            assert "hung" in str(exc)
        else:
            raise AssertionError("profiling a hung candidate past its deadline must raise")
        assert h.call(model, MATH).member == "cheap"
        try:
            h.remove_model(model, "hung")
        except KeyError:
            pass
        else:
            raise AssertionError("the hung candidate was left half-added")
        slow = MemberScript("slow", 2.0, [], hang=hang)
        try:
            h.add_model(model, slow, probe_timeout=0.2, retries=0, max_concurrency=20)
        except Exception as exc:  # noqa: BLE001 - refused: every probe failed (timed out)
            assert "slow" in str(exc) or "timed out" in str(exc), str(exc)
        else:
            raise AssertionError("a candidate whose every probe times out must be refused")


def budget_on_traffic(h: AdapterHarness) -> None:
    """``budget=`` is the mean cost per call of the calls served. All-history traffic (the dear kind: only the
    strong member is good at it) under a budget between the two members' costs: the realised mean stays at or just
    below the budget, the budget is used (both members serve), and every reply says so (``mode``, ``budget``,
    ``realised_mean_cost``). Streams count like any call."""
    budget = 4.0
    model = _built(h, list(_pair()), budget=budget)
    replies = [h.call(model, f"{HISTORY} {i}", MODES[i % len(MODES)]) for i in range(60)]
    last = replies[-1].metadata
    assert set(last) == METADATA_KEYS | {"budget"}, sorted(last)
    assert last["mode"] == "budget" and last["budget"] == budget
    assert last["calls_served"] == 60
    served = [r.metadata["cost"] for r in replies]
    assert last["realised_mean_cost"] == sum(served) / len(served)
    assert last["realised_mean_cost"] <= 1.05 * budget, last["realised_mean_cost"]
    recent = served[-30:]
    assert 0.6 * budget <= sum(recent) / len(recent) <= 1.05 * budget, recent
    assert {r.member for r in replies[-30:]} == {"cheap", "strong"}  # the budget is used, not collapsed to cheap


SCENARIOS: list[Callable[[AdapterHarness], None]] = [
    add_model_deadline,
    forced_member,
    sticky_conversations,
    context_filter,
    routes_by_topic,
    lam_moves_traffic,
    metadata_shape,
    fallback_on_error,
    timeout_falls_back,
    circuit_breaker_skips,
    unknown_settings_rejected,
    removing_members,
    budget_on_traffic,
]
"""Every conformance scenario; each takes a harness and raises ``AssertionError`` on a difference."""
