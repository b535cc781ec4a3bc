"""Framework-neutral delegation: which members to try for a call, in what order, and what to report.

Both adapters (LangChain's ``ChatUniRoute`` and LlamaIndex's ``UniRouteLLM``) hold member objects by name and do
only framework work; everything they share lives here, so it is written once:

* :func:`check_members` — the members given must be exactly the router's profiled models;
* :class:`PoolChanges` — members being added or removed while calls are routed: the order of the two steps (member
  object / router profile) and the names the check must tolerate until both are done;
* :class:`MemberSelector` — one routing decision for a text under a :class:`~uniroute_core.policy.RoutingPolicy`
  (lam / budget / min_quality), on one snapshot of the router, restricted to
  allowed members (tool-capable, context fits, no cheaper than an earlier turn), or forced to a named member;
* :func:`call_with_fallback` / :func:`acall_with_fallback` — try the chosen member, then the next ones by routing
  score, recording each failure; one :class:`AllMembersFailedError` naming every failure if all fail;
* :func:`add_profiled_model` / :func:`aadd_profiled_model` — run a new member on the router's probe set, grade,
  and add it: the "one function call to add a model";
* :func:`profile_pool` / :func:`aprofile_pool` — the same for a whole pool at once (the adapters' ``from_models``):
  members profiled concurrently under one progress bar, failures reported and left out.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
import warnings
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from .embedding import validate_texts
from .feedback import FeedbackLog
from .policy import RoutingPolicy
from .probes import ProbeSet
from .profile import ModelProfile
from .profiling import ProfilingResult, aprofile_answers, profile_answers
from .resilience import CircuitBreaker, MemberTimeoutError, await_bounded, check_timeout, run_bounded
from .router import UniRouter
from .routing_text import encoder_window, window_text
from .serving import BudgetController, MicroBatcher, ServingConfig, SpendMeter, TokenPrices, parse_cost
from .state import RouteDecision, RouterState

__all__ = [
    "MemberMismatchError",
    "AllMembersFailedError",
    "check_members",
    "PoolChanges",
    "RoutingChoice",
    "MemberSelector",
    "SelectRequest",
    "SelectorSlot",
    "call_with_fallback",
    "acall_with_fallback",
    "add_profiled_model",
    "aadd_profiled_model",
    "profile_pool",
    "aprofile_pool",
    "PoolReport",
    "PoolProfilingError",
    "router_for_pool",
    "split_pool_spec",
    "PoolSpec",
    "BuiltPool",
    "build_pool",
    "abuild_pool",
    "ConversationFloors",
    "CHARS_PER_TOKEN",
    "estimate_tokens",
    "members_fitting",
]

T = TypeVar("T")
MemberT = TypeVar("MemberT")


class MemberMismatchError(ValueError):
    """The adapter's members and the router's profiled models do not match."""


class AllMembersFailedError(RuntimeError):
    """Every member tried for a call raised. ``failures`` maps member name → the exception it raised."""

    def __init__(self, failures: Mapping[str, BaseException]) -> None:
        self.failures = dict(failures)
        detail = "; ".join(f"{name}: {type(e).__name__}: {e}" for name, e in self.failures.items())
        super().__init__(f"all {len(self.failures)} members failed — {detail}")


def check_members(router: UniRouter, member_names: Collection[str], *, changing: Collection[str] = ()) -> None:
    """Raise :class:`MemberMismatchError` unless ``member_names`` are exactly the router's profiled models.

    ``changing`` names members an adapter is adding or removing right now (see :class:`PoolChanges`): for them
    a member object without a profile, or a profile without a member object, is the expected halfway state and is
    not reported. Everything else is (at construction, or when the router was changed behind the adapter's back).
    """
    models = router.models
    no_profile = [m for m in member_names if m not in models and m not in changing]
    no_member = [m for m in models if m not in member_names and m not in changing]
    problems = []
    if no_profile:
        problems.append(
            f"members {no_profile} have no profile in the router (add them with add_model(name, model, cost) "
            "or router.add_model(name, cost, scores))"
        )
    if no_member:
        problems.append(f"the router has profiles {no_member} with no member object (pass them in members=)")
    if problems:
        raise MemberMismatchError("; ".join(problems))
    if not models:
        raise MemberMismatchError("the pool is empty: give at least one member (or add one with add_model)")


class PoolChanges:
    """Members an adapter is adding to or removing from its pool while calls keep being routed. Thread-safe.

    Adding or removing a member takes two steps, the member object (held by the adapter) and its profile (held by
    the router), and adding runs a slow profiling in between. Calls routed meanwhile must neither fail nor pick a
    name the adapter cannot call, so:

    * :meth:`adding` publishes a new member object *before* its profile is added (and withdraws it if adding
      fails); a replacement object is published *after* the new profile, so the old object serves until then;
    * :meth:`removing` removes the router profile *before* the member object;
    * until both steps are done the name is *changing*, and :meth:`steady_members` (the check every call makes)
      tolerates its halfway state; the name stops changing in a ``finally``, so a failed change leaves no trace.

    :meth:`steady_members` reads the adapter's members under the same lock as the publish / withdraw steps, so it
    never sees a member published without its name changing (or vice versa), even from another thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changing: Counter[str] = Counter()

    @property
    def changing(self) -> frozenset[str]:
        """Names being added or removed right now."""
        with self._lock:
            return frozenset(self._changing)

    def steady_members(
        self, router: UniRouter, read_members: Callable[[], Mapping[str, MemberT]]
    ) -> Mapping[str, MemberT]:
        """The adapter's members (``read_members()``), checked against the router with :func:`check_members`.

        Raises :class:`MemberMismatchError` on a mismatch other than a change in progress. A call should route
        only among, and call only, the members returned: every one of them stays callable for the whole call.
        """
        with self._lock:
            members = read_members()
            check_members(router, list(members), changing=frozenset(self._changing))
        return members

    @contextmanager
    def _changing_name(self, name: str, first_step: Callable[[], None] | None = None) -> Iterator[None]:
        with self._lock:
            if first_step is not None:
                first_step()
            self._changing[name] += 1
        try:
            yield
        finally:
            with self._lock:
                self._changing[name] -= 1
                if self._changing[name] <= 0:
                    del self._changing[name]

    @contextmanager
    def adding(
        self,
        name: str,
        publish_member: Callable[[], None],
        withdraw_member: Callable[[], None],
        *,
        replacing: bool,
    ) -> Iterator[None]:
        """Bracket adding member ``name``: the ``with`` body profiles it and adds its router profile.

        ``publish_member()`` puts the member object into the adapter's members; ``withdraw_member()`` takes it out
        again when the body raises (only for a new member: a replaced one was never taken out). ``replacing``:
        the adapter already holds a member of this name, whose object is swapped only after the body succeeded.
        """
        with self._changing_name(name, None if replacing else publish_member):
            try:
                yield
            except BaseException:
                if not replacing:
                    with self._lock:
                        withdraw_member()
                raise
            if replacing:
                with self._lock:
                    publish_member()

    def adding_to(self, pool: Any, name: str, member: Any) -> AbstractContextManager[None]:
        """:meth:`adding` for an adapter that keeps its members in ``pool.members``, a dict replaced, never mutated."""

        def publish() -> None:
            pool.members = {**pool.members, name: member}

        return self.adding(name, publish, lambda: _withdraw(pool, name), replacing=name in pool.members)

    def removing_from(self, pool: Any, name: str, router: UniRouter) -> ModelProfile:
        """:meth:`removing` for an adapter that keeps its members in ``pool.members``.

        Both adapters' one rule: an unknown name is a ``KeyError`` naming the members; the last member may be
        removed (an empty pool is what an adapter built with ``members={}`` starts from), after which every call
        fails with :class:`MemberMismatchError` ("the pool is empty") until a member is added.
        """
        if name not in pool.members:
            raise KeyError(f"{name!r} is not a member; members: {list(pool.members)}")
        return self.removing(name, router, lambda: _withdraw(pool, name))

    def removing(self, name: str, router: UniRouter, withdraw_member: Callable[[], None]) -> ModelProfile:
        """Remove member ``name``: its router profile first, then its object (``withdraw_member()``).

        Returns the removed profile.
        """
        with self._changing_name(name):
            profile = router.remove_model(name)
            with self._lock:
                withdraw_member()
        return profile


def _withdraw(pool: Any, name: str) -> None:
    pool.members = {n: m for n, m in pool.members.items() if n != name}


@dataclass(frozen=True)
class RoutingChoice:
    """A decision plus the order to try members in (the chosen one first, then by routing score)."""

    decision: RouteDecision | None
    order: tuple[str, ...]
    costs: Mapping[str, float]
    forced: bool = False
    selector: MemberSelector | None = field(default=None, repr=False, compare=False)
    """The selector that made the choice: :meth:`metadata` records the call's cost with it."""
    _recorded: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    _remembered: list[str] = field(default_factory=list, repr=False, compare=False)
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)
    """The routing text's embedding this choice was made on (what feedback on the call updates Ψ with)."""
    call_id: str = field(default_factory=lambda: uuid.uuid4().hex, compare=False)
    """This call's id (in the response's ``uniroute`` metadata): what ``record_feedback`` takes."""

    @property
    def member(self) -> str:
        """The first member to try."""
        return self.order[0]

    def metadata(
        self,
        used: str,
        fallbacks: Sequence[Mapping[str, str]] = (),
        *,
        usage: tuple[int, int] | None = None,
        account: bool = True,
    ) -> dict[str, Any]:
        """The ``uniroute`` entry adapters attach to a response; the first call also records the call as served.

        ``usage`` is (input tokens, output tokens) when the member reported them: for a member priced per token it
        gives the call's actual cost (``call_cost``, in the prices' currency). The entry also carries
        ``calls_served`` and ``realised_mean_cost`` — the mean cost per call of the calls this adapter served so far
        (actual cost where known, else the member's per-call cost) — and ``budget`` in budget mode.

        A stream knows its usage only at its end: it passes ``account=False`` here (the entry then has no cost
        accounting yet) and calls :meth:`settle` when the stream ends, adding what that returns to the same entry.
        """
        d = self.decision
        entry = {
            "member": used,
            "expected_quality": dict(d.expected_quality) if d is not None else {},
            "cost": self.costs[used],
            "lam": d.lam if d is not None else None,
            "mode": "forced" if self.forced else (d.mode if d is not None else None),
            "fallbacks": [dict(f) for f in fallbacks],
        }
        entry["call_id"] = self.call_id
        entry["exploratory"] = bool(d is not None and d.exploratory and used == d.model and not self.forced)
        if self.selector is not None:
            if not self._remembered and self.embedding is not None:
                self.selector.feedback.remember([self.call_id], self.embedding, used)
                self._remembered.append(used)
            if account:
                entry.update(self.settle(used, usage))
        return entry

    def settle(self, used: str, usage: tuple[int, int] | None = None) -> dict[str, Any]:
        """Count this call as served by ``used`` (once, however often it is called) and return its cost entries.

        The entries are ``calls_served``, ``realised_mean_cost``, ``budget`` (budget mode) and, for a member priced
        per token, ``call_cost`` and ``usage``. A later call returns the first call's entries unchanged.
        """
        if self.selector is not None and not self._recorded:  # one call, one record
            self._recorded.update(self.selector.record(used, self.costs[used], usage))
        return dict(self._recorded)

    def remember_alias(self, alias: str, used: str) -> None:
        """Let feedback name this call by ``alias`` too (LangChain's run id); ``used`` is the member that answered."""
        if self.selector is not None and self.embedding is not None:
            self.selector.feedback.remember([alias], self.embedding, used)


@dataclass(frozen=True)
class SelectRequest:
    """One call's routing request: its text and restrictions (see :meth:`MemberSelector.select`)."""

    text: str
    allowed: tuple[str, ...] | None = None
    min_cost: float | None = None
    force: str | None = None


_UNSET: Any = object()


class MemberSelector:
    """Turns routing texts into :class:`RoutingChoice` objects with an adapter's settings: both adapters' one routing
    entry point.

    * **Micro-batched, off the loop.** Texts that arrive together — concurrent async calls, threads calling
      ``invoke``, the items of a ``batch`` — are embedded in one encoder call in a worker thread
      (:class:`~uniroute_core.serving.MicroBatcher`) and routed on ONE snapshot of the router per batch; async
      callers await it, so nothing is embedded on an event loop. ``config`` sets the batch size and wait window.
    * **A live budget.** With a ``budget`` policy, λ is kept on the traffic served by a
      :class:`~uniroute_core.serving.BudgetController` (the probe calibration is its starting point).
    * **Long texts.** A routing text longer than the encoder's window is cut to the part the encoder reads by
      ``config.text_window`` (default: its start and end, where a RAG prompt's question is; see
      :mod:`uniroute_core.routing_text`).
    * **Realised cost.** :meth:`RoutingChoice.metadata` records each served call's cost (:meth:`record`), so
      responses carry the realised mean cost so far; members in ``prices`` get their actual cost from token usage.

    An adapter keeps one selector for as long as its settings do not change (see :class:`SelectorSlot`).

    Args:
        router: the core router.
        policy: how to trade quality for cost (a validated :class:`~uniroute_core.policy.RoutingPolicy`).
        fallback: whether members after the first may be tried when it fails.
        config: batching, the budget window and the text window (:class:`~uniroute_core.serving.ServingConfig`).
        prices: token prices by member name (read at each call, so an adapter may add to it).
    """

    def __init__(
        self,
        router: UniRouter,
        policy: RoutingPolicy | None = None,
        fallback: bool = True,
        *,
        config: ServingConfig | None = None,
        prices: Mapping[str, TokenPrices] | None = None,
        feedback: FeedbackLog | None = None,
    ) -> None:
        policy = RoutingPolicy() if policy is None else policy
        if not isinstance(policy, RoutingPolicy):
            raise TypeError(f"policy must be a RoutingPolicy, got {type(policy).__name__}")
        config = ServingConfig() if config is None else config
        if not isinstance(config, ServingConfig):
            raise TypeError(f"config must be a ServingConfig, got {type(config).__name__}")
        self.router = router
        self.policy = policy
        self.fallback = fallback
        self.config = config
        self.prices: Mapping[str, TokenPrices] = {} if prices is None else prices
        self.feedback = FeedbackLog() if feedback is None else feedback
        self.meter = SpendMeter()
        self.budget: BudgetController | None = None
        if policy.budget is not None:
            self.budget = BudgetController(policy.budget, window=config.budget_window, meter=self.meter)
        self._batcher: MicroBatcher[SelectRequest, RoutingChoice] = MicroBatcher(
            self._process,
            max_batch_size=config.max_batch_size,
            max_wait=config.max_wait,
            max_pending=config.max_pending,
            name="uniroute-routing",
        )
        self._primed: dict[str, np.ndarray] = {}
        self._primed_count: Counter[str] = Counter()
        self._primed_lock = threading.Lock()
        self._window: Any = _UNSET

    # ------------------------------------------------------------------ entry points
    def select(
        self,
        text: str,
        *,
        allowed: Collection[str] | None = None,
        min_cost: float | None = None,
        force: str | None = None,
    ) -> RoutingChoice:
        """Route ``text`` among ``allowed`` members (all by default) costing at least ``min_cost``.

        ``force`` names a member to use without routing (it must be in the pool; fallback still follows the
        routing order of the others when enabled). This thread waits while the text's batch is embedded and routed
        in the worker thread; calls from other threads arriving meanwhile share the batch.
        """
        return self._batcher.run(_request(text, allowed, min_cost, force))

    async def aselect(
        self,
        text: str,
        *,
        allowed: Collection[str] | None = None,
        min_cost: float | None = None,
        force: str | None = None,
    ) -> RoutingChoice:
        """Async :meth:`select`: awaits the batch, so the event loop runs other tasks while the text is embedded."""
        return await self._batcher.arun(_request(text, allowed, min_cost, force))

    def select_many(self, requests: Sequence[SelectRequest]) -> list[RoutingChoice]:
        """Route several requests together (one encoder call when they fit ``max_batch_size``)."""
        return self._batcher.run_many([_checked(r) for r in requests])

    async def aselect_many(self, requests: Sequence[SelectRequest]) -> list[RoutingChoice]:
        """Async :meth:`select_many`."""
        return await self._batcher.arun_many([_checked(r) for r in requests])

    @contextmanager
    def primed(self, texts: Sequence[str]) -> Iterator[None]:
        """Embed ``texts`` now, in one encoder call; calls routing any of them inside the ``with`` reuse the vectors.

        An adapter's ``batch`` wraps its items' calls in this, so every item is embedded at once however the
        framework schedules the calls.
        """
        keys = self._prime(texts)
        try:
            yield
        finally:
            self._unprime(keys)

    @asynccontextmanager
    async def aprimed(self, texts: Sequence[str]) -> AsyncIterator[None]:
        """Async :meth:`primed` (the texts are embedded in a worker thread)."""
        keys = await asyncio.to_thread(self._prime, texts)
        try:
            yield
        finally:
            self._unprime(keys)

    def record(self, member: str, routing_cost: float, usage: tuple[int, int] | None = None) -> dict[str, Any]:
        """Count one served call and return its cost entries for the metadata (see :meth:`RoutingChoice.metadata`)."""
        prices = self.prices.get(member)
        actual = prices.call_cost(*usage) if prices is not None and usage is not None else None
        calls, spent = self.meter.record(actual if actual is not None else routing_cost)
        entry: dict[str, Any] = {"calls_served": calls, "realised_mean_cost": spent / calls}
        if self.budget is not None:
            entry["budget"] = self.budget.budget
        if prices is not None:
            entry["call_cost"] = actual  # in the prices' currency; None when the member reported no usage
            entry["usage"] = None if usage is None else {"input_tokens": usage[0], "output_tokens": usage[1]}
        return entry

    @property
    def batches_run(self) -> int:
        """How many routing batches have run (for monitoring and tests)."""
        return self._batcher.batches_run

    def close(self) -> None:
        """Stop the routing worker thread: pending calls are still routed, later ones raise
        :class:`~uniroute_core.serving.ServingClosedError`. Not needed normally (an idle worker exits by itself)."""
        self._batcher.close()

    # ------------------------------------------------------------------ the batch (worker thread)
    def _windowed(self, text: str) -> str:
        if self._window is _UNSET:
            self._window = encoder_window(self.router.embedder)
        return window_text(text, self._window, self.config.text_window)  # type: ignore[arg-type]

    def _embed(self, texts: list[str]) -> np.ndarray:
        return self.router.embedder.embed(texts, show_progress=False)

    def _prime(self, texts: Sequence[str]) -> list[str]:
        keys = list(dict.fromkeys(self._windowed(t) for t in validate_texts(texts, "routing text")))
        with self._primed_lock:
            missing = [k for k in keys if k not in self._primed]
        vectors = self._embed(missing) if missing else None
        with self._primed_lock:
            if vectors is not None:
                for k, v in zip(missing, vectors):
                    self._primed.setdefault(k, v)
            self._primed_count.update(keys)
        return keys

    def _unprime(self, keys: list[str]) -> None:
        with self._primed_lock:
            self._primed_count.subtract(keys)
            for k in keys:
                if self._primed_count[k] <= 0:
                    del self._primed_count[k]
                    self._primed.pop(k, None)

    def _vectors(self, texts: list[str]) -> np.ndarray:
        """Embeddings of a batch's (windowed) texts: primed ones reused, the others in ONE encoder call."""
        with self._primed_lock:
            known = {t: self._primed[t] for t in texts if t in self._primed}
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        if missing:
            known.update(zip(missing, self._embed(missing)))
        return np.stack([known[t] for t in texts])

    def _process(self, requests: list[SelectRequest]) -> list[RoutingChoice | Exception]:
        """Route one batch: one snapshot of the router, one encoder call (and the live budget's λ for each call)."""
        state = self.router.state  # the one snapshot this batch reads
        _before_route_hook(state)
        state.require_pool("route")
        embeddings = self._vectors([self._windowed(r.text) for r in requests])
        lams: list[float | None] = [None] * len(requests)
        if self.budget is not None:
            lams = list(self.budget.lams_for(state, embeddings, lambda target: state.calibration(target).lam))
        out: list[RoutingChoice | Exception] = []
        for request, x, lam in zip(requests, embeddings, lams):
            try:
                out.append(self._choose(state, request, x[None, :], lam))
            except Exception as exc:  # noqa: BLE001 - this caller's error only
                out.append(exc)
        return out

    def _choose(self, state: RouterState, request: SelectRequest, x: np.ndarray, lam: float | None) -> RoutingChoice:
        costs = state.cost_by_name
        allowed = request.allowed
        candidates = list(costs) if allowed is None else [m for m in costs if m in set(allowed)]
        if allowed is not None and not candidates:
            raise ValueError(f"no member is allowed for this call (allowed={sorted(allowed)}, pool={list(costs)})")
        if request.min_cost is not None:
            dearer = [m for m in candidates if costs[m] >= request.min_cost]
            candidates = dearer or [max(candidates, key=lambda m: costs[m])]
        force = request.force
        if force is not None and force not in costs:
            raise KeyError(f"model {force!r} is not a member; members: {list(costs)}")
        decision = state.route(x, self.policy if lam is None else RoutingPolicy(lam=lam), candidates=candidates)[0]
        if lam is not None:
            decision.mode = "budget"  # λ came from the live budget
        order = [decision.model] + [m for m in decision.ranking if m != decision.model]  # exploration may pick
        if force is not None:
            order = [force] + [m for m in order if m != force]
        if not self.fallback:
            order = order[:1]
        return RoutingChoice(
            decision, tuple(order), costs, forced=force is not None, selector=self, embedding=x.reshape(-1)
        )

    def __repr__(self) -> str:
        return f"MemberSelector(policy={self.policy}, fallback={self.fallback}, config={self.config})"


def _checked(request: SelectRequest) -> SelectRequest:
    if not isinstance(request, SelectRequest):
        raise TypeError(f"expected a SelectRequest, got {type(request).__name__}")
    validate_texts([request.text], "routing text")  # a bad text fails its own caller, before any batching
    return request


def _request(text: str, allowed: Collection[str] | None, min_cost: float | None, force: str | None) -> SelectRequest:
    return _checked(SelectRequest(text, None if allowed is None else tuple(allowed), min_cost, force))


def _settings(s: MemberSelector) -> tuple[Any, ...]:
    return (s.router, s.policy, s.fallback, s.config)


class SelectorSlot:
    """An adapter's one :class:`MemberSelector`, kept while its settings stay the same (thread-safe).

    Adapters are pydantic models whose fields may be reassigned; the selector (with its micro-batcher, live budget
    and spend meter) is rebuilt only when the router, policy, fallback or serving config changed. ``prices`` (token
    prices of members added with ``cost={"input_per_mtok": …}``) belong to the slot and survive a rebuild.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._selector: MemberSelector | None = None
        self.prices: dict[str, TokenPrices] = {}
        self.feedback = FeedbackLog()
        """Served calls that feedback may name; it belongs to the slot, so it survives a selector rebuild."""

    def get(
        self, router: UniRouter, policy: RoutingPolicy, fallback: bool, config: ServingConfig | None = None
    ) -> MemberSelector:
        """The current selector for these settings."""
        config = ServingConfig() if config is None else config
        wanted = (router, policy, fallback, config)
        s = self._selector
        if s is not None and _settings(s) == wanted:
            return s
        with self._lock:
            s = self._selector
            if s is None or _settings(s) != wanted:
                s = self._selector = MemberSelector(
                    router, policy, fallback, config=config, prices=self.prices, feedback=self.feedback
                )
            return s

    def member_cost(self, name: str, cost: float | Mapping[str, float]) -> float:
        """A new member's per-call routing cost from its ``cost=`` (a number or token prices, kept here)."""
        per_call, prices = parse_cost(name, cost)
        if prices is None:
            self.prices.pop(name, None)
        else:
            self.prices[name] = prices
        return per_call


def _before_route_hook(state: RouterState) -> None:
    """Called by :meth:`MemberSelector.select` right after it took its snapshot; does nothing.

    It exists so that a test can run a pool change at exactly that point and show that the call still routes on
    the snapshot it took (the select/route race of issue 10).
    """


class ConversationFloors:
    """Conversation stickiness bookkeeping: the dearest member cost used so far in each conversation.

    With stickiness on, a later turn of a conversation is routed with ``min_cost = floor(conversation_id)`` (see
    :meth:`MemberSelector.select`), so it may escalate to a dearer member but never downgrade to a cheaper one than
    an earlier turn used — a cheap model should not pick up a thread a strong one started. Only the
    ``max_conversations`` most recently used conversations are remembered (least recently used forgotten first),
    so memory stays bounded in a long-running service. Thread-safe.
    """

    def __init__(self, max_conversations: int = 10_000) -> None:
        if isinstance(max_conversations, bool) or not isinstance(max_conversations, int) or max_conversations < 1:
            raise ValueError(f"max_conversations must be an integer >= 1, got {max_conversations!r}")
        self.max_conversations = max_conversations
        self._floors: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def floor(self, conversation_id: str | None) -> float | None:
        """The dearest cost used so far in this conversation; ``None`` for a new (or unnamed) conversation."""
        if conversation_id is None:
            return None
        with self._lock:
            cost = self._floors.get(conversation_id)
            if cost is not None:
                self._floors.move_to_end(conversation_id)
            return cost

    def record(self, conversation_id: str | None, cost: float) -> None:
        """Note that a turn of this conversation used a member costing ``cost`` (the floor only rises)."""
        if conversation_id is None:
            return
        with self._lock:
            old = self._floors.pop(conversation_id, None)
            self._floors[conversation_id] = cost if old is None else max(old, cost)
            while len(self._floors) > self.max_conversations:
                self._floors.popitem(last=False)

    def forget(self, conversation_id: str) -> None:
        """Drop a conversation's floor (e.g. when the conversation is closed)."""
        with self._lock:
            self._floors.pop(conversation_id, None)

    def __len__(self) -> int:
        return len(self._floors)


CHARS_PER_TOKEN = 4
"""Characters per token assumed by :func:`estimate_tokens` (the usual rule of thumb for English text)."""


def estimate_tokens(text: str) -> int:
    """A rough token count, ``ceil(len(text) / CHARS_PER_TOKEN)``, for choosing members whose context fits.

    Adapters use it when no tokenizer is given; it needs no model download. It is an estimate: code and
    non-English text use more tokens per character, so :func:`members_fitting` never rejects the whole pool on it.
    """
    return -(-len(text) // CHARS_PER_TOKEN)


def members_fitting(n_tokens: int | Mapping[str, int], context_windows: Mapping[str, int | None]) -> list[str]:
    """The members whose context window holds the prompt (``None`` = unknown window, assumed to fit).

    ``n_tokens`` is the prompt's token count, or a count per member (members with their own tokenizer count
    their own way). When no member fits, the members with the largest window are returned rather than none: the
    count is usually an estimate, so the call is tried where it is most likely to fit and the member itself reports
    a real overflow. Both adapters filter members with it.
    """

    def count(m: str) -> int:
        return n_tokens[m] if isinstance(n_tokens, Mapping) else n_tokens

    fit = [m for m, w in context_windows.items() if w is None or w >= count(m)]
    if fit or not context_windows:
        return fit
    largest = max(w for w in context_windows.values() if w is not None)
    return [m for m, w in context_windows.items() if w == largest]


def _failure(name: str, exc: BaseException) -> dict[str, str]:
    reason = "timeout" if isinstance(exc, (MemberTimeoutError, asyncio.TimeoutError, TimeoutError)) else "error"
    return {"member": name, "reason": reason, "error": f"{type(exc).__name__}: {exc}"}


def _skipped(name: str, breaker: CircuitBreaker) -> dict[str, str]:
    return {"member": name, "reason": "skipped: circuit open", "error": breaker.reason(name)}


class _Attempts:
    """One call's way through its members: circuit-breaker skips, failures (errors and timeouts), the outcome."""

    def __init__(self, order: Sequence[str], breaker: CircuitBreaker | None) -> None:
        self.order = list(order)
        self.breaker = breaker
        self.failures: dict[str, BaseException] = {}
        self.report: list[dict[str, str]] = []

    def members(self) -> Iterator[str]:
        """The members to try, in order: those whose circuit is open are skipped (and reported); when every
        member is open, all are tried anyway, best first, rather than failing without trying."""
        skipped: list[str] = []
        for name in self.order:
            if self.breaker is not None and not self.breaker.allow(name):
                skipped.append(name)
                self.report.append(_skipped(name, self.breaker))
                continue
            yield name
        if skipped and len(skipped) == len(self.order):
            self.report.clear()
            yield from skipped

    def failed(self, name: str, exc: BaseException) -> None:
        self.failures[name] = exc
        self.report.append(_failure(name, exc))
        if self.breaker is not None:
            self.breaker.record_failure(name)

    def succeeded(self, name: str) -> list[dict[str, str]]:
        if self.breaker is not None:
            self.breaker.record_success(name)
        return [dict(r) for r in self.report]

    def interrupted(self, name: str) -> None:
        if self.breaker is not None:
            self.breaker.release(name)

    def error(self) -> BaseException:
        if len(self.failures) == 1:
            return next(iter(self.failures.values()))
        return AllMembersFailedError(self.failures)


def call_with_fallback(
    order: Sequence[str],
    call: Callable[[str], T],
    *,
    is_fatal: Callable[[BaseException], bool] | None = None,
    timeout: float | None = None,
    breaker: CircuitBreaker | None = None,
) -> tuple[T, str, list[dict[str, str]]]:
    """Call ``call(member)`` for each member of ``order`` until one returns.

    Returns ``(result, member used, fallbacks)``: ``fallbacks`` lists, in order, each member skipped because its
    circuit is open (``reason`` ``"skipped: circuit open"``) and each member that failed (``reason`` ``"error"`` or
    ``"timeout"``), with its ``error``. ``timeout`` bounds each attempt (seconds): the attempt runs in a worker
    thread and a member that has not returned in time is abandoned (:func:`~uniroute_core.resilience.run_bounded`)
    and counts as failed. ``breaker`` (a :class:`~uniroute_core.resilience.CircuitBreaker`) skips members that keep
    failing and is told of every outcome. ``is_fatal(exc)`` True stops at once and re-raises.
    """
    attempts = _Attempts(order, breaker)
    for name in attempts.members():
        try:
            result = run_bounded(lambda name=name: call(name), timeout, member=name)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - a failing member is a normal event
            if is_fatal is not None and is_fatal(exc):
                attempts.interrupted(name)
                raise
            attempts.failed(name, exc)
            continue
        except BaseException:
            attempts.interrupted(name)
            raise
        return result, name, attempts.succeeded(name)
    raise attempts.error()


async def acall_with_fallback(
    order: Sequence[str],
    call: Callable[[str], Awaitable[T]],
    *,
    is_fatal: Callable[[BaseException], bool] | None = None,
    timeout: float | None = None,
    breaker: CircuitBreaker | None = None,
) -> tuple[T, str, list[dict[str, str]]]:
    """Async :func:`call_with_fallback`: each attempt is awaited for at most ``timeout`` seconds, then cancelled."""
    attempts = _Attempts(order, breaker)
    for name in attempts.members():
        try:
            result = await await_bounded(call(name), timeout, member=name)
        except Exception as exc:  # noqa: BLE001
            if is_fatal is not None and is_fatal(exc):
                attempts.interrupted(name)
                raise
            attempts.failed(name, exc)
            continue
        except BaseException:
            attempts.interrupted(name)
            raise
        return result, name, attempts.succeeded(name)
    raise attempts.error()


def _probe_set(router: UniRouter, probes: ProbeSet | None) -> ProbeSet:
    probes = probes or router.probes
    if probes is None:
        raise ValueError("the router has no probe set; call router.set_probes(ProbeSet(...)) first")
    if not probes.gradable:
        raise ValueError(
            "the router's probes have no reference answers and no judge, so a new model's answers cannot be graded; "
            "set_probes(ProbeSet(prompts=..., references=..., grader=...)) or "
            "set_probes(ProbeSet.from_prompts(prompts, judge=...)), or pass scores to router.add_model"
        )
    return probes


def add_profiled_model(
    router: UniRouter,
    name: str,
    answer: Callable[[str], str],
    cost: float,
    *,
    replace: bool = False,
    probe_timeout: float | None = None,
    deadline: float | None = None,
    **profiling_kwargs: Any,
) -> ModelProfile:
    """Run ``answer`` on the router's probes, grade, and add the model: the one call that adds a member.

    ``profiling_kwargs`` go to :func:`~uniroute_core.profiling.profile_answers` (``max_concurrency``, ``retries``,
    ``max_failure_rate``, ``show_progress``...). Failed probes count as unknown, not wrong. Routing continues
    on the old pool while profiling runs; the new pool is swapped in at the end.

    ``probe_timeout`` (seconds) bounds each probe answer: a probe that takes longer is a failed probe (abandoned in
    its worker thread, see :func:`~uniroute_core.resilience.run_bounded`). ``deadline`` (seconds) bounds the whole
    profiling: past it, :class:`~uniroute_core.resilience.MemberTimeoutError` is raised and nothing is added (the
    profiling still running is abandoned; its result is never added).
    """
    probe_timeout = check_timeout(probe_timeout, "probe_timeout")
    deadline = check_timeout(deadline, "deadline")
    if name in router.models and not replace:
        raise ValueError(f"model {name!r} is already in the pool; pass replace=True to re-profile it")
    probes = _probe_set(router, None)
    bounded = answer if probe_timeout is None else (
        lambda prompt: run_bounded(lambda: answer(prompt), probe_timeout, member=name)
    )
    result: ProfilingResult = run_bounded(
        lambda: profile_answers(bounded, probes, model_name=name, **profiling_kwargs), deadline, member=name
    )
    return router.add_model(name, cost, result.scores, replace=replace)


async def aadd_profiled_model(
    router: UniRouter,
    name: str,
    answer: Callable[[str], Awaitable[str]],
    cost: float,
    *,
    replace: bool = False,
    probe_timeout: float | None = None,
    deadline: float | None = None,
    **profiling_kwargs: Any,
) -> ModelProfile:
    """Async :func:`add_profiled_model` (a probe past ``probe_timeout`` and profiling past ``deadline`` are
    cancelled)."""
    probe_timeout = check_timeout(probe_timeout, "probe_timeout")
    deadline = check_timeout(deadline, "deadline")
    if name in router.models and not replace:
        raise ValueError(f"model {name!r} is already in the pool; pass replace=True to re-profile it")
    probes = _probe_set(router, None)

    async def bounded(prompt: str) -> str:
        return await await_bounded(answer(prompt), probe_timeout, member=name)

    result = await await_bounded(
        aprofile_answers(bounded, probes, model_name=name, **profiling_kwargs), deadline, member=name
    )
    return router.add_model(name, cost, result.scores, replace=replace)


# ----------------------------------------------------------------------------------------- a pool in one call


class PoolProfilingError(RuntimeError):
    """No member of a pool could be profiled. ``failures`` maps member name → what went wrong."""

    def __init__(self, failures: Mapping[str, str]) -> None:
        self.failures = dict(failures)
        detail = "; ".join(f"{name}: {err}" for name, err in self.failures.items())
        super().__init__(f"none of the {len(self.failures)} members could be profiled — {detail}")


@dataclass(frozen=True)
class PoolReport:
    """What :func:`profile_pool` did: the members added (with their profiles) and those left out (with the reason).

    Adapters keep it as ``pool_report`` so a user can see which members were dropped and why.
    """

    profiles: Mapping[str, ModelProfile]
    failures: Mapping[str, str]

    @property
    def added(self) -> list[str]:
        """Names of the members that were profiled and added, in the order given."""
        return list(self.profiles)


def _check_pool_spec(members: Mapping[str, tuple[Any, float]], router: UniRouter) -> None:
    if not isinstance(members, Mapping) or not members:
        raise ValueError("give at least one member: {'name': (model, cost), ...}")
    for name, spec in members.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"member names must be non-empty strings, got {name!r}")
        if not isinstance(spec, tuple) or len(spec) != 2:
            raise TypeError(f"member {name!r}: expected a (model, cost) pair, got {type(spec).__name__}")
        if name in router.models:
            raise ValueError(f"member {name!r} is already in the router's pool")
    if not router.is_fitted:
        from .router import NotFittedError

        raise NotFittedError(
            "the router has no cluster map yet: start from UniRouter.pretrained() or call router.fit(prompts) "
            "before profiling a pool"
        )
    _probe_set(router, None)


def _pool_outcome(
    router: UniRouter, order: Sequence[str], costs: Mapping[str, float], results: Mapping[str, Any]
) -> PoolReport:
    """Add the profiled members in the order given; warn about (and report) the others."""
    profiles: dict[str, ModelProfile] = {}
    failures: dict[str, str] = {}
    for name in order:
        outcome = results[name]
        if isinstance(outcome, BaseException):
            failures[name] = f"{type(outcome).__name__}: {outcome}"
            continue
        try:
            profiles[name] = router.add_model(name, costs[name], outcome.scores)
        except (ValueError, TypeError) as exc:  # e.g. a bad cost
            failures[name] = f"{type(exc).__name__}: {exc}"
    if not profiles:
        raise PoolProfilingError(failures)
    for name, err in failures.items():
        warnings.warn(
            f"member {name!r} could not be profiled and was left out of the pool: {err}", RuntimeWarning, stacklevel=3
        )
    return PoolReport(profiles=profiles, failures=failures)


def profile_pool(
    router: UniRouter,
    members: Mapping[str, tuple[Callable[[str], str], float]],
    *,
    max_parallel_members: int = 4,
    show_progress: bool = True,
    **profiling_kwargs: Any,
) -> PoolReport:
    """Profile every member on the router's probes concurrently, with one progress bar, and add those that succeed.

    ``members`` maps name → (``prompt -> response text`` function, cost). Each member is profiled exactly as
    :func:`add_profiled_model` does (``profiling_kwargs``: ``max_concurrency`` calls per member, ``retries``,
    ``retry_backoff``, ``max_failure_rate``...); up to ``max_parallel_members`` members run at once. A member that
    cannot be profiled (its calls keep failing, its answers cannot be graded, a bad cost) is left out with a
    ``RuntimeWarning`` and listed in the returned :class:`PoolReport`; if none can be, :class:`PoolProfilingError`
    names every failure and the router is unchanged. Members are added in the order given.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    _check_pool_spec(members, router)
    probes = _probe_set(router, None)
    costs = {name: spec[1] for name, spec in members.items()}
    lock = threading.Lock()
    with tqdm(total=len(members) * len(probes), desc=f"Profiling {len(members)} members", unit="probe",
              disable=not show_progress) as bar:

        def advance() -> None:
            with lock:
                bar.update()

        def run(name: str) -> Any:
            try:
                return profile_answers(members[name][0], probes, model_name=name, show_progress=False,
                                       on_progress=advance, **profiling_kwargs)
            except Exception as exc:  # noqa: BLE001 - one member's failure is reported, the others are kept
                return exc

        with ThreadPoolExecutor(max_workers=max(1, min(int(max_parallel_members), len(members))),
                                thread_name_prefix="uniroute-pool") as pool:
            results = dict(zip(members, pool.map(run, list(members))))
    return _pool_outcome(router, list(members), costs, results)


async def aprofile_pool(
    router: UniRouter,
    members: Mapping[str, tuple[Callable[[str], Awaitable[str]], float]],
    *,
    show_progress: bool = True,
    **profiling_kwargs: Any,
) -> PoolReport:
    """Async :func:`profile_pool`: every member's probes run on the event loop at once (each member bounded by
    ``max_concurrency``), with one progress bar; same reporting and errors."""
    import asyncio

    from tqdm.auto import tqdm

    _check_pool_spec(members, router)
    probes = _probe_set(router, None)
    costs = {name: spec[1] for name, spec in members.items()}
    with tqdm(total=len(members) * len(probes), desc=f"Profiling {len(members)} members", unit="probe",
              disable=not show_progress) as bar:
        outcomes = await asyncio.gather(
            *(aprofile_answers(members[name][0], probes, model_name=name, show_progress=False,
                               on_progress=bar.update, **profiling_kwargs) for name in members),
            return_exceptions=True,
        )
    for outcome in outcomes:
        if isinstance(outcome, (KeyboardInterrupt, SystemExit, asyncio.CancelledError)):
            raise outcome
    return _pool_outcome(router, list(members), costs, dict(zip(members, outcomes)))


def router_for_pool(router: UniRouter | None = None, probes: ProbeSet | None = None) -> UniRouter:
    """The router an adapter's ``from_models`` profiles its pool on.

    ``router=None`` → a fresh :meth:`UniRouter.pretrained` (its cluster map and 300 graded MMLU-Pro probes);
    ``probes`` replaces the router's probe set (e.g. ``ProbeSet.from_prompts(your_prompts, judge=...)``), which is
    refused when the router already has members (their profiles were measured on the old probes).
    """
    if router is None:
        router = UniRouter.pretrained(show_progress=False)
    elif not isinstance(router, UniRouter):
        raise TypeError(f"router must be a UniRouter, got {type(router).__name__}")
    if probes is not None:
        if not isinstance(probes, ProbeSet):
            raise TypeError(f"probes must be a ProbeSet, got {type(probes).__name__}")
        router.set_probes(probes)
    return router


@dataclass(frozen=True)
class PoolSpec:
    """A validated ``{"name": (model, cost)}`` for ``from_models``: the framework members, each one's per-call routing
    cost, and the token prices of members whose ``cost`` was given as prices."""

    models: dict[str, Any]
    costs: dict[str, float]
    prices: dict[str, TokenPrices]


def split_pool_spec(models: Mapping[str, Any], check: Callable[[str, Any], None]) -> PoolSpec:
    """``{"name": (model, cost)}`` validated: each value a (model, cost) pair, ``check(name, model)`` for the
    framework type, cost a number or token prices (``{"input_per_mtok": …, "output_per_mtok": …}``, see
    :func:`~uniroute_core.serving.parse_cost`); a clear error naming the member otherwise."""
    if not isinstance(models, Mapping) or not models:
        raise ValueError("from_models needs at least one member: {'name': (model, cost), ...}")
    members: dict[str, Any] = {}
    costs: dict[str, float] = {}
    prices: dict[str, TokenPrices] = {}
    for name, spec in models.items():
        if not isinstance(spec, (tuple, list)) or len(spec) != 2:
            raise TypeError(f"member {name!r}: expected a (model, cost) pair, got {spec!r:.80}")
        model, cost = spec
        check(name, model)
        if not isinstance(cost, Mapping) and (isinstance(cost, bool) or not isinstance(cost, (int, float))):
            raise TypeError(
                f"member {name!r}: cost must be a number or token prices {{'input_per_mtok': …, "
                f"'output_per_mtok': …}}, got {type(cost).__name__}"
            )
        per_call, member_prices = parse_cost(name, cost)
        members[name], costs[name] = model, float(per_call)
        if member_prices is not None:
            prices[name] = member_prices
    return PoolSpec(members, costs, prices)


@dataclass(frozen=True)
class BuiltPool:
    """What ``from_models`` builds a routed model from: the router (members profiled and added), the framework
    members that joined, the report of who joined and who was left out, and the joined members' token prices."""

    router: UniRouter
    members: dict[str, Any]
    report: PoolReport
    prices: dict[str, TokenPrices]


def build_pool(
    models: Mapping[str, Any],
    check: Callable[[str, Any], None],
    answer_of: Callable[[Any], Callable[[str], str]],
    router: UniRouter | None = None,
    probes: ProbeSet | None = None,
    **profiling_kwargs: Any,
) -> BuiltPool:
    """Both adapters' ``from_models``: validate ``models`` (:func:`split_pool_spec`), pick the router
    (:func:`router_for_pool`), profile every member concurrently (:func:`profile_pool`; ``answer_of(model)`` is
    the member's ``prompt -> text`` function) and keep those that could be profiled."""
    spec = split_pool_spec(models, check)
    router = router_for_pool(router, probes)
    report = profile_pool(
        router, {name: (answer_of(model), spec.costs[name]) for name, model in spec.models.items()},
        **profiling_kwargs,
    )
    return _built(router, spec, report)


async def abuild_pool(
    models: Mapping[str, Any],
    check: Callable[[str, Any], None],
    answer_of: Callable[[Any], Callable[[str], Awaitable[str]]],
    router: UniRouter | None = None,
    probes: ProbeSet | None = None,
    **profiling_kwargs: Any,
) -> BuiltPool:
    """Async :func:`build_pool` (:func:`aprofile_pool`: every member's probes on the event loop at once)."""
    spec = split_pool_spec(models, check)
    router = router_for_pool(router, probes)
    report = await aprofile_pool(
        router, {name: (answer_of(model), spec.costs[name]) for name, model in spec.models.items()},
        **profiling_kwargs,
    )
    return _built(router, spec, report)


def _built(router: UniRouter, spec: PoolSpec, report: PoolReport) -> BuiltPool:
    joined = list(report.added)
    return BuiltPool(
        router=router,
        members={name: spec.models[name] for name in joined},
        report=report,
        prices={name: spec.prices[name] for name in joined if name in spec.prices},
    )
