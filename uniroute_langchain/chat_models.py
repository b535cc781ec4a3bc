"""ChatUniRoute: a pool of LangChain chat models that behaves as one chat model, routing each call with UniRoute."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, BaseCallbackManager, CallbackManagerForLLMRun
from langchain_core.callbacks.base import Callbacks
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import BaseLanguageModel, LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig, ensure_config
from langchain_core.tools import BaseTool
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from uniroute_core.delegation import (
    BuiltPool,
    ConversationFloors,
    MemberSelector,
    PoolChanges,
    PoolReport,
    RoutingChoice,
    SelectorSlot,
    aadd_profiled_model,
    abuild_pool,
    acall_with_fallback,
    add_profiled_model,
    build_pool,
    call_with_fallback,
    check_members,
    estimate_tokens,
    members_fitting,
)
from uniroute_core.policy import RoutingPolicy
from uniroute_core.probes import ProbeSet
from uniroute_core.profile import ModelProfile
from uniroute_core.resilience import BreakerConfig, BreakerSlot, CircuitBreaker
from uniroute_core.router import UniRouter
from uniroute_core.serving import ServingConfig, paced_turn

from ._messages import conversation_text, last_human_text
from .profiling import answer_function, async_answer_function

__all__ = ["ChatUniRoute", "supports_tool_calling"]

_CONVERSATION_KEYS = ("conversation_id", "thread_id", "session_id")
"""Run metadata keys read as the conversation id for stickiness."""

_NOT_ROUTER_SETTINGS = {
    "api_key": "each member holds its own API key",
    "max_retries": "each member retries on its own; a failing member falls back to the next one (fallback=True)",
    "model": "members are chosen per call; pass model='<member>' to invoke() to force one",
    "model_name": "members are chosen per call; pass model='<member>' to invoke() to force one",
}

_PLAN_KWARG = "_uniroute_plan"
"""Private call keyword carrying a call's routing outcome from ``generate`` / ``stream`` (which route up front, so
the run is traced under the chosen member) to ``_generate`` / ``_stream`` (which then do not route again). It is
removed from invocation params and cache keys and never reaches a member."""

_TRACING_ONLY_KWARGS = ("ls_structured_output_format", "structured_output_format")
"""Call keywords langchain-core strips before ``_generate`` / ``_stream``; routing up front must ignore them too."""


def supports_tool_calling(chat_model: BaseChatModel) -> bool:
    """Whether a chat model implements ``bind_tools`` (the ``BaseChatModel`` default only raises)."""
    return type(chat_model).bind_tools is not BaseChatModel.bind_tools


@dataclass
class _CallPlan:
    """One call's routing outcome and what to pass to whichever member ends up answering."""

    choice: RoutingChoice
    conversation_id: str | None
    members: Mapping[str, BaseChatModel]
    """The members as routed on (a consistent snapshot): the call uses these objects even if the pool changes."""
    tools: list[Any] | None = None
    tool_choice: Any = None
    member_kwargs: dict[str, Any] = field(default_factory=dict)


def _run_metadata(
    callbacks: Callbacks, metadata: Mapping[str, Any] | None, own: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The metadata the run manager of a call will carry (parent run's, then the call's, then the model's own),
    merged as ``CallbackManager.configure`` does, so routing up front sees the same conversation keys."""
    merged = dict(callbacks.metadata) if isinstance(callbacks, BaseCallbackManager) else {}
    merged.update(metadata or {})
    merged.update(own or {})
    return merged


def _feedback_key(target: Any) -> str:
    """The call id feedback names: from a response message (or generation), a run id, or the id itself."""
    if isinstance(target, ChatGeneration):
        target = target.message
    if isinstance(target, BaseMessage):
        record = target.response_metadata.get("uniroute")
        if not isinstance(record, Mapping) or not record.get("call_id"):
            raise ValueError(
                "this message carries no uniroute routing record (response_metadata['uniroute']['call_id']): "
                "pass a response ChatUniRoute returned, or the call's run id"
            )
        return str(record["call_id"])
    if isinstance(target, uuid.UUID):
        return str(target)
    if isinstance(target, str) and target.strip():
        return target.strip()
    raise TypeError(
        f"record_feedback takes a response message, a run id (UUID or str) or a call id, got {type(target).__name__}"
    )


def _token_usage(result: ChatResult) -> tuple[int, int] | None:
    """(input tokens, output tokens) the member reported for a call (``usage_metadata``), if it did."""
    for generation in result.generations:
        usage = getattr(generation.message, "usage_metadata", None)
        if usage:
            return int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
    return None


def _unwrap_binding(runnable: Runnable, member: str) -> tuple[BaseChatModel, dict[str, Any]]:
    """A member's ``bind_tools`` result as (chat model, bound call kwargs), so its ``_generate`` can be called."""
    kwargs: dict[str, Any] = {}
    while isinstance(runnable, RunnableBinding):
        kwargs = {**runnable.kwargs, **kwargs}
        runnable = runnable.bound
    if not isinstance(runnable, BaseChatModel):
        raise TypeError(
            f"member {member!r}: bind_tools returned {type(runnable).__name__}, not a chat model bound with "
            "keyword arguments, so ChatUniRoute cannot call it inside its own run"
        )
    return runnable, kwargs


def _as_chunk(generation: ChatGeneration) -> ChatGenerationChunk:
    """A whole generation as one final stream chunk (for members that cannot stream)."""
    message = generation.message
    tool_call_chunks = [
        tool_call_chunk(name=c["name"], args=json.dumps(c["args"], ensure_ascii=False), id=c.get("id"), index=i)
        for i, c in enumerate(getattr(message, "tool_calls", []) or [])
    ]
    chunk = AIMessageChunk(
        content=message.content,
        additional_kwargs=message.additional_kwargs,
        response_metadata=message.response_metadata,
        usage_metadata=getattr(message, "usage_metadata", None),
        tool_call_chunks=tool_call_chunks,
        id=message.id,
        chunk_position="last",
    )
    return ChatGenerationChunk(message=chunk, generation_info=generation.generation_info)


def _member_chunks(
    model: BaseChatModel,
    messages: list[BaseMessage],
    stop: list[str] | None,
    run_manager: CallbackManagerForLLMRun | None,
    kwargs: dict[str, Any],
) -> Iterator[ChatGenerationChunk]:
    if type(model)._stream is not BaseChatModel._stream:
        yield from model._stream(messages, stop=stop, run_manager=run_manager, **kwargs)
    else:
        for generation in model._generate(messages, stop=stop, run_manager=run_manager, **kwargs).generations:
            yield _as_chunk(generation)


async def _amember_chunks(
    model: BaseChatModel,
    messages: list[BaseMessage],
    stop: list[str] | None,
    run_manager: AsyncCallbackManagerForLLMRun | None,
    kwargs: dict[str, Any],
) -> AsyncIterator[ChatGenerationChunk]:
    cls = type(model)
    if cls._astream is not BaseChatModel._astream or cls._stream is not BaseChatModel._stream:
        async for chunk in model._astream(messages, stop=stop, run_manager=run_manager, **kwargs):
            yield chunk
    else:
        result = await model._agenerate(messages, stop=stop, run_manager=run_manager, **kwargs)
        for generation in result.generations:
            yield _as_chunk(generation)


def _context_window(member: BaseChatModel) -> int | None:
    """The member's input window in tokens from its model profile (``profile["max_input_tokens"]``), if known."""
    profile = getattr(member, "profile", None)
    window = profile.get("max_input_tokens") if isinstance(profile, Mapping) else None
    return window if isinstance(window, int) and not isinstance(window, bool) and window > 0 else None


def _prompt_tokens(member: BaseChatModel, messages: list[BaseMessage]) -> int:
    """The prompt's tokens as ``member`` counts them when it has its own tokenizer (it overrides
    ``get_num_tokens_from_messages``); else ``ceil(chars / 4)`` (:func:`uniroute_core.delegation.estimate_tokens`),
    never LangChain's GPT-2 fallback (which needs ``transformers`` and warns)."""
    if type(member).get_num_tokens_from_messages is not BaseLanguageModel.get_num_tokens_from_messages:
        try:
            return int(member.get_num_tokens_from_messages(messages))
        except Exception:  # noqa: BLE001 - a member that cannot count falls back to the estimate
            pass
    return estimate_tokens(conversation_text(messages, include_system=True))


def _fitting(allowed: list[str], members: Mapping[str, BaseChatModel], messages: list[BaseMessage]) -> list[str]:
    """``allowed`` restricted to the members whose context window holds the prompt (the core's rule)."""
    windows = {n: _context_window(members[n]) for n in allowed}
    if all(w is None for w in windows.values()):
        return allowed
    tokens = {n: _prompt_tokens(members[n], messages) for n, w in windows.items() if w is not None}
    return members_fitting({**dict.fromkeys(windows, 0), **tokens}, windows)


def _acquire(member: BaseChatModel) -> None:
    """Wait for the member's own rate limiter (``BaseChatModel.rate_limiter``), as the member's ``invoke`` would."""
    if member.rate_limiter is not None:
        member.rate_limiter.acquire(blocking=True)


async def _aacquire(member: BaseChatModel) -> None:
    """Async :func:`_acquire`."""
    if member.rate_limiter is not None:
        await member.rate_limiter.aacquire(blocking=True)


class _StreamState:
    """Adds the routing entry to the first chunk and the member's name as ``model_name`` if it gave none.

    It also adds up the token usage the member reports on its chunks (as LangChain does when it merges them), so
    that :meth:`settle` can price the call when the stream ends and add its cost entries to the routing entry —
    the same dict the first chunk (and any merge of the chunks) holds.
    """

    def __init__(self, choice: RoutingChoice, uniroute: dict[str, Any], member: str) -> None:
        self.choice = choice
        self.uniroute = uniroute
        self.member = member
        self.first = True
        self.saw_model_name = False
        self.tokens: list[int] | None = None

    def annotate(self, chunk: ChatGenerationChunk) -> ChatGenerationChunk:
        metadata = dict(chunk.message.response_metadata)
        self.saw_model_name = self.saw_model_name or "model_name" in metadata
        if self.first:
            metadata["uniroute"] = self.uniroute
            self.first = False
        if getattr(chunk.message, "chunk_position", None) == "last" and not self.saw_model_name:
            metadata["model_name"] = self.member
            self.saw_model_name = True
        chunk.message.response_metadata = metadata
        usage = getattr(chunk.message, "usage_metadata", None)
        if usage:
            if self.tokens is None:
                self.tokens = [0, 0]
            self.tokens[0] += int(usage.get("input_tokens", 0))
            self.tokens[1] += int(usage.get("output_tokens", 0))
        return chunk

    def settle(self) -> None:
        """Count the call as served (priced from the usage seen, if any) and add its cost entries."""
        usage = None if self.tokens is None else (self.tokens[0], self.tokens[1])
        self.uniroute.update(self.choice.settle(self.member, usage))


class ChatUniRoute(BaseChatModel):
    """A pool of chat models that looks like one: each call goes to the cheapest member likely to answer it well.

    Routing is UniRoute (arXiv 2502.08773) as implemented by :class:`uniroute_core.UniRouter`: the prompt's cluster
    membership times each member's per-cluster quality, traded off against cost by ``lam`` (or a ``budget`` or a
    ``min_quality``). This class only turns messages into the text to route, asks the router, and delegates to the
    chosen member's ``_generate`` / ``_agenerate`` / ``_stream`` / ``_astream`` inside its own run, so one call is
    one run: callbacks fire once, usage is counted once, tokens stream through.

    Setup:
        .. code-block:: python

            from uniroute_core import UniRouter, ProbeSet
            from uniroute_langchain import ChatUniRoute

            router = UniRouter(n_clusters=20).fit(train_prompts)
            router.set_probes(ProbeSet(prompts=probe_prompts, references=gold, grader="multiple_choice"))
            chat = ChatUniRoute(router=router, members={}, lam=0.3)
            chat.add_model("llama-8b", ChatOllama(model="llama3.1:8b"), cost=1.0)     # profiles it on the probes
            chat.add_model("gemini-pro", ChatGoogleGenerativeAI(model="gemini-pro"), cost=8.0)

    Invoke:
        .. code-block:: python

            msg = chat.invoke("What is the derivative of x**2?")
            msg.response_metadata["uniroute"]
            # {"member": "llama-8b", "expected_quality": {...}, "cost": 1.0, "lam": 0.3, "mode": "lam", "fallbacks": []}
            chat.invoke("...", model="gemini-pro")     # force a member

    Tools and structured output:
        ``chat.bind_tools([...])`` restricts routing to members whose ``bind_tools`` is implemented and binds the
        tools on the chosen member at call time; ``chat.with_structured_output(MyModel)`` works through it.

    Conversations:
        With ``sticky=True``, a later turn of a conversation is never routed to a cheaper member than an earlier
        turn used. The conversation is named by ``conversation_id=...`` in the call (or ``.bind(conversation_id=...)``),
        or by ``thread_id`` / ``session_id`` / ``conversation_id`` in the run's metadata
        (``config={"metadata": {"thread_id": "..."}}``).

    Not forwarded: members' own callbacks and caches are bypassed (this model's apply instead), because the member
    runs inside this model's run. Members' own ``rate_limiter`` is honoured: it is acquired before each attempt on
    that member (inside the attempt's ``timeout``).

    Timeouts and failing members:
        ``timeout=`` bounds each member attempt (a stream: until its first chunk); ``circuit_breaker=`` skips a
        member that keeps failing for a cool-down. Both are reported in the ``uniroute`` metadata's ``fallbacks``
        (``reason``: ``"error"``, ``"timeout"`` or ``"skipped: circuit open"``).
    """

    router: UniRouter = Field(exclude=True, repr=False)
    """The fitted :class:`~uniroute_core.UniRouter`; its profiled models must be exactly the ``members``."""

    members: dict[str, BaseChatModel] = Field(exclude=True, repr=False)
    """Member chat models by name (the router's model names). Never serialised: members hold credentials."""

    lam: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    """Quality/cost trade-off λ ≥ 0 (finite): higher sends more traffic to cheaper members. ``None`` with no
    ``budget`` or ``min_quality`` means λ = 0 (the member predicted best)."""

    budget: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Target mean cost per call (> 0, finite), in the members' cost unit; λ is calibrated on the router's probe
    prompts."""

    min_quality: float | None = Field(default=None, ge=0, le=1)
    """Use the cheapest member whose expected quality is at least this (in [0, 1]), else the best."""

    fallback: bool = True
    """When the chosen member raises before producing output, try the next member by routing score."""

    route_on: Literal["last_human", "conversation"] | Callable[[list[BaseMessage]], str] = Field(
        default="last_human", exclude=True
    )
    """Text to route on: the last human message (default; system prompt excluded), the whole conversation, or a
    callable ``messages -> str`` (e.g. the question of a RAG prompt that puts context and question in one message).
    A text longer than the encoder's window is cut to its start and end by default (``serving.text_window``)."""

    serving: ServingConfig = Field(default_factory=ServingConfig, exclude=True)
    """Micro-batching (``max_batch_size`` 64, ``max_wait`` 2 ms), the live budget's window and the long-text window:
    see :class:`uniroute_core.serving.ServingConfig`. A dict is accepted."""

    timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Seconds each member attempt may take (for a stream: until its first chunk); a member that takes longer is
    abandoned and the next member by routing score is tried, with ``{"member": ..., "reason": "timeout"}`` in the
    response's ``uniroute`` ``fallbacks``. ``None`` (default): no limit. A sync call runs the member in a worker thread
    and stops waiting at the timeout; the thread itself cannot be killed and finishes in the background (at most
    ``uniroute_core.resilience.MAX_ABANDONED`` such threads at once, then further timed calls fail fast)."""

    circuit_breaker: BreakerConfig | None = Field(default_factory=BreakerConfig, exclude=True)
    """A member failing (error or timeout) ``failures`` times within ``window`` s is skipped for ``cooldown`` s, then
    given one trial call (default 5 in 60 s, 30 s); a skip is reported in ``fallbacks`` as
    ``"skipped: circuit open"``. When every member is open, all are still tried, best first. ``None``: off."""

    sticky: bool = False
    """Within one conversation, never route a later turn to a cheaper member than an earlier turn used."""

    max_conversations: int = 10_000
    """How many conversations stickiness remembers (least recently used forgotten first)."""

    stop: list[str] | None = None
    """Default stop sequences passed to the member (a call's own ``stop`` takes precedence)."""

    temperature: float | None = None
    """If set, passed to the member as the call keyword ``temperature`` (``None`` keeps each member's own)."""

    max_tokens: int | None = None
    """If set, passed to the member as the call keyword ``max_tokens`` (``None`` keeps each member's own)."""

    streaming: bool = False
    """Whether ``invoke`` streams from the member internally (so streaming callbacks receive tokens)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    _breakers: BreakerSlot = PrivateAttr(default_factory=BreakerSlot)
    _floors: ConversationFloors = PrivateAttr()
    _policy: RoutingPolicy = PrivateAttr(default_factory=RoutingPolicy)
    _pool_changes: PoolChanges = PrivateAttr(default_factory=PoolChanges)
    _selector_slot: SelectorSlot = PrivateAttr(default_factory=SelectorSlot)
    _pool_report: PoolReport | None = PrivateAttr(default=None)

    # ------------------------------------------------------------------ validation

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_settings(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            known = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
            unknown = [k for k in data if k not in known]
            if unknown:
                reasons = [f"{k!r} ({_NOT_ROUTER_SETTINGS[k]})" for k in unknown if k in _NOT_ROUTER_SETTINGS]
                others = [repr(k) for k in unknown if k not in _NOT_ROUTER_SETTINGS]
                detail = "; ".join(reasons + ([f"{', '.join(others)} (not a ChatUniRoute field)"] if others else []))
                raise ValueError(f"ChatUniRoute does not take {detail}. Fields: {sorted(cls.model_fields)}")
        return data

    @model_validator(mode="after")
    def _check_pool(self) -> ChatUniRoute:
        for name, member in self.members.items():
            if member is self:
                raise ValueError(f"member {name!r} is this ChatUniRoute itself")
        if self.members or self.router.models:  # an empty pool may be filled with add_model
            check_members(self.router, list(self.members))
        # the fields' bounds are checked by pydantic; the policy adds "at most one of them", built once here
        self._policy = RoutingPolicy(lam=self.lam, budget=self.budget, min_quality=self.min_quality)
        self._floors = ConversationFloors(self.max_conversations)
        return self

    # ------------------------------------------------------------------ LangChain plumbing

    @property
    def _llm_type(self) -> str:
        return "uniroute"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "members": list(self.members),
            "lam": self.lam,
            "budget": self.budget,
            "min_quality": self.min_quality,
            "route_on": self.route_on,
            "sticky": self.sticky,
            "fallback": self.fallback,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        """Provider ``uniroute``; the model is the member routing chose for the call.

        ``invoke`` / ``ainvoke`` / ``stream`` / ``astream`` / ``batch`` (and ``generate`` with one message list)
        route before the run starts, so the run is traced under the chosen member (the first one tried: if it
        fails and another answers, the response's ``model_name`` and ``uniroute`` metadata name the one that
        answered). Where no routing outcome is known yet, the model is the forced ``model=`` member, else the pool
        ``uniroute(a|b|...)``: ``generate`` with several message lists (one trace metadata for all of them, while
        each list is routed on its own), a call whose routing failed (the error is raised inside the run), and
        ``stream_events(version="v3")``.
        """
        plan = kwargs.get(_PLAN_KWARG)
        routed = plan.choice.member if isinstance(plan, _CallPlan) else None
        params = LangSmithParams(
            ls_provider="uniroute",
            ls_model_name=routed or kwargs.get("model") or f"uniroute({'|'.join(self.members)})",
            ls_model_type="chat",
        )
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        if kwargs.get("temperature", self.temperature) is not None:
            params["ls_temperature"] = kwargs.get("temperature", self.temperature)
        if kwargs.get("max_tokens", self.max_tokens) is not None:
            params["ls_max_tokens"] = kwargs.get("max_tokens", self.max_tokens)
        return params

    def _get_invocation_params(self, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        kwargs.pop(_PLAN_KWARG, None)  # a routing outcome is not a call parameter (kwargs is this call's own dict)
        return super()._get_invocation_params(stop=stop, **kwargs)

    def _get_llm_string(self, stop: list[str] | None = None, **kwargs: Any) -> str:
        kwargs.pop(_PLAN_KWARG, None)  # cache keys stay what they were: the call's parameters, not its routing
        return super()._get_llm_string(stop=stop, **kwargs)

    # ------------------------------------------------------------------ routing before the run starts

    def _with_plan(
        self, messages: list[BaseMessage], kwargs: dict[str, Any], metadata: Mapping[str, Any]
    ) -> dict[str, Any]:
        """``kwargs`` plus the call's routing outcome under :data:`_PLAN_KWARG` (unless it already has one).

        A routing error is carried instead of a plan and raised by ``_generate`` / ``_stream``, so it still
        happens inside the run (``on_chat_model_start`` then ``on_llm_error``), as when routing ran there.
        """
        if _PLAN_KWARG in kwargs:
            return kwargs
        routing_kwargs = {k: v for k, v in kwargs.items() if k not in _TRACING_ONLY_KWARGS}
        try:
            plan: _CallPlan | Exception = self._plan(messages, routing_kwargs, metadata)
        except Exception as exc:  # noqa: BLE001 - re-raised inside the run by _call_plan
            plan = exc
        return {**kwargs, _PLAN_KWARG: plan}

    async def _awith_plan(
        self, messages: list[BaseMessage], kwargs: dict[str, Any], metadata: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Async :meth:`_with_plan` (routing awaits the core's worker thread)."""
        if _PLAN_KWARG in kwargs:
            return kwargs
        routing_kwargs = {k: v for k, v in kwargs.items() if k not in _TRACING_ONLY_KWARGS}
        try:
            plan: _CallPlan | Exception = await self._aplan(messages, routing_kwargs, metadata)
        except Exception as exc:  # noqa: BLE001 - re-raised inside the run by _acall_plan
            plan = exc
        return {**kwargs, _PLAN_KWARG: plan}

    def _input_with_plan(
        self, input: LanguageModelInput, config: RunnableConfig | None, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        if _PLAN_KWARG in kwargs:
            return kwargs
        config = ensure_config(config)
        metadata = _run_metadata(config.get("callbacks"), config.get("metadata"), self.metadata)
        return self._with_plan(self._convert_input(input).to_messages(), kwargs, metadata)

    async def _ainput_with_plan(
        self, input: LanguageModelInput, config: RunnableConfig | None, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        if _PLAN_KWARG in kwargs:
            return kwargs
        config = ensure_config(config)
        metadata = _run_metadata(config.get("callbacks"), config.get("metadata"), self.metadata)
        return await self._awith_plan(self._convert_input(input).to_messages(), kwargs, metadata)

    def _call_plan(self, messages: list[BaseMessage], kwargs: dict[str, Any], run_manager: Any) -> _CallPlan:
        """The plan routed before the run (taken out of ``kwargs``), else route now (``_generate`` called directly,
        or ``generate`` with several message lists)."""
        given = kwargs.pop(_PLAN_KWARG, None)
        if isinstance(given, Exception):
            raise given
        if given is not None:
            return given
        return self._plan(messages, kwargs, getattr(run_manager, "metadata", None) or {})

    async def _acall_plan(self, messages: list[BaseMessage], kwargs: dict[str, Any], run_manager: Any) -> _CallPlan:
        """Async :meth:`_call_plan`."""
        given = kwargs.pop(_PLAN_KWARG, None)
        if isinstance(given, Exception):
            raise given
        if given is not None:
            return given
        await paced_turn()  # calls started together do their per-call work one per loop iteration
        return await self._aplan(messages, kwargs, getattr(run_manager, "metadata", None) or {})

    def _generate_kwargs(
        self,
        messages: list[list[BaseMessage]],
        callbacks: Callbacks,
        metadata: dict[str, Any] | None,
        kwargs: dict[str, Any],
    ) -> dict[str, Any]:
        """A ``generate`` call's keywords, with the routing outcome when it has a single message list."""
        if len(messages) != 1:
            return kwargs
        return self._with_plan(messages[0], kwargs, _run_metadata(callbacks, metadata, self.metadata))

    def generate(
        self,
        messages: list[list[BaseMessage]],
        stop: list[str] | None = None,
        callbacks: Callbacks = None,
        *,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        run_name: str | None = None,
        run_id: uuid.UUID | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        """``BaseChatModel.generate``, routing a single message list before the run starts (see ``_get_ls_params``).

        With several message lists each is still routed on its own, inside its run.
        """
        kwargs = self._generate_kwargs(messages, callbacks, metadata, kwargs)
        return super().generate(
            messages, stop, callbacks, tags=tags, metadata=metadata, run_name=run_name, run_id=run_id, **kwargs
        )

    async def agenerate(
        self,
        messages: list[list[BaseMessage]],
        stop: list[str] | None = None,
        callbacks: Callbacks = None,
        *,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        run_name: str | None = None,
        run_id: uuid.UUID | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        """Async :meth:`generate`."""
        if len(messages) == 1:
            kwargs = await self._awith_plan(messages[0], kwargs, _run_metadata(callbacks, metadata, self.metadata))
        return await super().agenerate(
            messages, stop, callbacks, tags=tags, metadata=metadata, run_name=run_name, run_id=run_id, **kwargs
        )

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        """``BaseChatModel.stream``, routing before the run starts (see ``_get_ls_params``)."""
        yield from super().stream(input, config, stop=stop, **self._input_with_plan(input, config, kwargs))

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        """``BaseChatModel.astream``, routing before the run starts (see ``_get_ls_params``)."""
        kwargs = await self._ainput_with_plan(input, config, kwargs)
        async for chunk in super().astream(input, config, stop=stop, **kwargs):
            yield chunk

    def _batch_texts(self, inputs: Sequence[LanguageModelInput]) -> list[str]:
        """The routing texts of a batch's inputs (inputs that cannot be read are left to fail in their own call)."""
        texts = []
        for item in inputs:
            try:
                texts.append(self._routing_text(self._convert_input(item).to_messages()))
            except Exception:  # noqa: BLE001, S112 - that item's own call reports it
                continue
        return [t for t in texts if t.strip()]

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:
        """``BaseChatModel.batch`` with every input's routing text embedded in one encoder call up front."""
        with self._selector().primed(self._batch_texts(inputs)):
            return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:
        """Async :meth:`batch` (the inputs are embedded in a worker thread, never on the loop)."""
        async with self._selector().aprimed(self._batch_texts(inputs)):
            return await super().abatch(
                inputs, config, return_exceptions=return_exceptions, **kwargs
            )

    # ------------------------------------------------------------------ the pool

    @property
    def tool_capable_members(self) -> list[str]:
        """Members that implement ``bind_tools`` (routing is restricted to them when tools are bound)."""
        return [name for name, member in self.members.items() if supports_tool_calling(member)]

    @property
    def policy(self) -> RoutingPolicy:
        """The routing policy built from ``lam`` / ``budget`` / ``min_quality`` at construction.

        Rebuilt (and so validated again) only if one of those fields was reassigned since.
        """
        p = self._policy
        if (p.lam, p.budget, p.min_quality) != (self.lam, self.budget, self.min_quality):
            p = self._policy = RoutingPolicy(lam=self.lam, budget=self.budget, min_quality=self.min_quality)
        return p

    def _selector(self) -> MemberSelector:
        """The core's routing entry point for this model's settings (kept across calls: it batches them)."""
        return self._selector_slot.get(self.router, self.policy, self.fallback, self.serving)

    @staticmethod
    def _check_new_member(name: str, chat_model: Any) -> None:
        if not isinstance(chat_model, BaseChatModel):
            raise TypeError(
                f"member {name!r} must be a LangChain BaseChatModel, got {type(chat_model).__name__} "
                "(bind tools on ChatUniRoute, not on the member)"
            )

    # ------------------------------------------------------------------ a pool in one call

    @classmethod
    def from_models(
        cls,
        models: Mapping[str, tuple[BaseChatModel, float | Mapping[str, float]]],
        router: UniRouter | None = None,
        probes: ProbeSet | None = None,
        *,
        max_concurrency: int = 8,
        max_parallel_members: int = 4,
        retries: int = 2,
        max_failure_rate: float = 0.5,
        show_progress: bool = True,
        **settings: Any,
    ) -> ChatUniRoute:
        """A routed chat model over ``{"name": (chat_model, cost), ...}``, every member profiled in one call.

        With no ``router``, :meth:`UniRouter.pretrained` is used (a cluster map and 300 graded probes of
        knowledge/reasoning questions); ``probes`` replaces its probe set (e.g. ``ProbeSet.from_prompts(...,
        judge=as_judge(strong_chat))`` for your own prompts). Every member answers the probes concurrently
        (``max_concurrency`` calls per member, ``max_parallel_members`` members at once, one progress bar), with
        :meth:`add_model`'s retries and failure policy. A member that cannot be profiled is left out with a
        ``RuntimeWarning`` and listed in :attr:`pool_report`; if none can be,
        :class:`uniroute_core.delegation.PoolProfilingError` names every failure. ``settings`` are the other
        fields (``lam``, ``budget``, ``fallback``...). A ``cost`` may be token prices (``{"input_per_mtok": …,
        "output_per_mtok": …}``, as in :meth:`add_model`).

        Cost: one call per probe per member (plus one judge call per probe per member with a judged probe set).
        """
        built = build_pool(
            models, cls._check_new_member, answer_function, router, probes,
            max_concurrency=max_concurrency, max_parallel_members=max_parallel_members, retries=retries,
            max_failure_rate=max_failure_rate, show_progress=show_progress,
        )
        return cls._from_built(built, settings)

    @classmethod
    async def afrom_models(
        cls,
        models: Mapping[str, tuple[BaseChatModel, float | Mapping[str, float]]],
        router: UniRouter | None = None,
        probes: ProbeSet | None = None,
        *,
        max_concurrency: int = 8,
        retries: int = 2,
        max_failure_rate: float = 0.5,
        show_progress: bool = True,
        **settings: Any,
    ) -> ChatUniRoute:
        """Async :meth:`from_models`: every member's probes run concurrently on the event loop (``ainvoke``)."""
        built = await abuild_pool(
            models, cls._check_new_member, async_answer_function, router, probes,
            max_concurrency=max_concurrency, retries=retries, max_failure_rate=max_failure_rate,
            show_progress=show_progress,
        )
        return cls._from_built(built, settings)

    @classmethod
    def _from_built(cls, built: BuiltPool, settings: Mapping[str, Any]) -> ChatUniRoute:
        chat = cls(router=built.router, members=built.members, **settings)
        chat._pool_report = built.report
        chat._selector_slot.prices.update(built.prices)  # members given token prices report their call cost
        return chat

    @property
    def pool_report(self) -> PoolReport | None:
        """What :meth:`from_models` did: ``profiles`` of the members added, ``failures`` (name → reason) of those
        left out; ``None`` when this model was built otherwise."""
        return self._pool_report

    def add_model(
        self,
        name: str,
        chat_model: BaseChatModel,
        cost: float | Mapping[str, float],
        *,
        replace: bool = False,
        **profiling_kwargs: Any,
    ) -> ModelProfile:
        """Profile ``chat_model`` on the router's probe set, grade it, and add it to the pool; returns its profile.

        ``profiling_kwargs`` go to :func:`uniroute_core.profile_answers` (``max_concurrency`` (default 8),
        ``retries``, ``max_failure_rate``, ``show_progress``...). A failed probe counts as unknown, not wrong; a
        model whose answers are mostly errors is refused (:class:`uniroute_core.ProfilingError`) and not added.
        Calls in flight keep routing on the old pool; the new member is swapped in at the end.

        ``cost`` is the per-call cost, or token prices ``{"input_per_mtok": …, "output_per_mtok": …}`` (optional
        ``typical_input_tokens`` / ``typical_output_tokens`` / ``per_call``): routing then uses the per-call cost of
        :class:`uniroute_core.serving.TokenPrices`, and each response's ``uniroute`` metadata gives the call's
        actual cost (``call_cost``) from the member's reported token usage. Prices are kept by this model, not saved
        with the router.
        """
        self._check_new_member(name, chat_model)
        cost = self._selector_slot.member_cost(name, cost)
        profiling_kwargs.setdefault("probe_timeout", self.timeout)  # a probe is bounded like a call
        with self._pool_changes.adding_to(self, name, chat_model):
            return add_profiled_model(
                self.router, name, answer_function(chat_model), cost, replace=replace, **profiling_kwargs
            )

    async def aadd_model(
        self,
        name: str,
        chat_model: BaseChatModel,
        cost: float | Mapping[str, float],
        *,
        replace: bool = False,
        **profiling_kwargs: Any,
    ) -> ModelProfile:
        """Async :meth:`add_model` (probes run concurrently on the event loop)."""
        self._check_new_member(name, chat_model)
        cost = self._selector_slot.member_cost(name, cost)
        profiling_kwargs.setdefault("probe_timeout", self.timeout)  # a probe is bounded like a call
        with self._pool_changes.adding_to(self, name, chat_model):
            return await aadd_profiled_model(
                self.router, name, async_answer_function(chat_model), cost, replace=replace, **profiling_kwargs
            )

    def remove_model(self, name: str) -> ModelProfile:
        """Take a member out of the pool (router profile, then member object); returns its profile.

        Calls routed before the removal still finish on the removed member; later calls never pick it.
        """
        return self._pool_changes.removing_from(self, name, self.router)

    # ------------------------------------------------------------------ feedback

    def record_feedback(
        self, response_or_run_id: BaseMessage | ChatGeneration | uuid.UUID | str, score: float, *, weight: float = 1.0
    ) -> ModelProfile | None:
        """Feedback on a call this model served: its answer scored ``score`` in [0, 1] (thumbs up = 1, a passing
        unit test, an LLM judge, a human label).

        ``response_or_run_id`` is the response message (its ``response_metadata["uniroute"]["call_id"]``), or the
        call's run id (what callbacks and LangSmith carry), or the call id itself. The member that answered has its
        Ψ updated in the call's cluster(s) on the embedding the call was routed on (:meth:`UniRouter.observe
        <uniroute_core.router.UniRouter.observe>`); routing never waits for it. Returns the member's new profile,
        or ``None`` when the member has left the pool since (ignored with a ``FeedbackWarning``).

        Raises:
            UnknownCallError: no call with that id was served here (or it is older than the last 10,000 calls).
            ValueError / TypeError: ``score`` is not a number in [0, 1], or the message carries no routing record.
        """
        key = _feedback_key(response_or_run_id)
        return self._selector_slot.feedback.record(self.router, key, score, weight=weight)

    # ------------------------------------------------------------------ routing one call

    def _routing_text(self, messages: Sequence[BaseMessage]) -> str:
        if callable(self.route_on):
            text = self.route_on(list(messages))
            if not isinstance(text, str):
                raise TypeError(f"route_on returned {type(text).__name__}; it must return the text to route on (str)")
            if not text.strip():
                raise ValueError("route_on returned an empty text: there is nothing to route on")
            return text
        text = conversation_text(messages) if self.route_on == "conversation" else last_human_text(messages)
        if not text.strip():
            text = conversation_text(messages, include_system=True)
        if not text.strip():
            raise ValueError("nothing to route on: the messages contain no text")
        return text

    @staticmethod
    def _conversation_id(kwargs: dict[str, Any], metadata: Mapping[str, Any]) -> str | None:
        given = kwargs.pop("conversation_id", None)
        if given is not None:
            return str(given)
        for key in _CONVERSATION_KEYS:
            if metadata.get(key) is not None:
                return str(metadata[key])
        return None

    def _plan(self, messages: list[BaseMessage], kwargs: dict[str, Any], metadata: Mapping[str, Any]) -> _CallPlan:
        """Route one call: ``kwargs`` are its call keywords, ``metadata`` its run's metadata (conversation id)."""
        text, request, make_plan = self._plan_parts(messages, kwargs, metadata)
        return make_plan(self._selector().select(text, **request))

    async def _aplan(
        self, messages: list[BaseMessage], kwargs: dict[str, Any], metadata: Mapping[str, Any]
    ) -> _CallPlan:
        """Async :meth:`_plan`: the routing text is embedded in the core's worker thread, never on the loop."""
        text, request, make_plan = self._plan_parts(messages, kwargs, metadata)
        return make_plan(await self._selector().aselect(text, **request))

    def _plan_parts(
        self, messages: list[BaseMessage], kwargs: dict[str, Any], metadata: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any], Callable[[RoutingChoice], _CallPlan]]:
        """Everything of :meth:`_plan` but the routing: (text, selection keywords, choice -> plan)."""
        kwargs = dict(kwargs)
        force = kwargs.pop("model", None)
        conversation_id = self._conversation_id(kwargs, metadata)
        tools = kwargs.pop("tools", None)
        tool_choice = kwargs.pop("tool_choice", None)
        members = self._pool_changes.steady_members(self.router, lambda: self.members)
        allowed = list(members)  # a member being added has no profile yet, so routing cannot pick it
        if tools:
            allowed = [name for name, member in members.items() if supports_tool_calling(member)]
            if not allowed:
                raise ValueError(self._no_tool_member_message())
            if force is not None and force in members and force not in allowed:
                raise ValueError(
                    f"model={force!r} was forced but it does not support tool calling; tool-capable members: {allowed}"
                )
        allowed = _fitting(allowed, members, messages)
        min_cost = self._floors.floor(conversation_id) if self.sticky else None
        for name, value in (("temperature", self.temperature), ("max_tokens", self.max_tokens)):
            if value is not None:
                kwargs.setdefault(name, value)

        def make_plan(choice: RoutingChoice) -> _CallPlan:
            return _CallPlan(choice, conversation_id, members, list(tools) if tools else None, tool_choice, kwargs)

        request = {"allowed": allowed, "min_cost": min_cost, "force": force}
        return self._routing_text(messages), request, make_plan

    def _no_tool_member_message(self) -> str:
        return (
            f"no member of this pool supports tool calling (members: {list(self.members)}; none implements "
            "bind_tools), so tools and structured output cannot be used; add a tool-capable member"
        )

    def _member_call(self, name: str, plan: _CallPlan) -> tuple[BaseChatModel, dict[str, Any]]:
        """The member's chat model and call kwargs, with the tools bound on it when the call has tools."""
        member = plan.members[name]
        if not plan.tools:
            return member, dict(plan.member_kwargs)
        extra = {} if plan.tool_choice is None else {"tool_choice": plan.tool_choice}
        model, bound = _unwrap_binding(member.bind_tools(plan.tools, **extra), name)
        return model, {**bound, **plan.member_kwargs}

    def _resilience(self) -> dict[str, Any]:
        """The timeout and circuit breaker every member attempt of a call runs under."""
        breaker: CircuitBreaker | None = self._breakers.get(self.circuit_breaker)
        return {"timeout": self.timeout, "breaker": breaker}

    def _finish(self, plan: _CallPlan, used: str) -> None:
        if self.sticky:
            self._floors.record(plan.conversation_id, plan.choice.costs[used])

    @staticmethod
    def _remember_run(plan: _CallPlan, used: str, run_manager: Any) -> None:
        """Let ``record_feedback`` take this call's run id (what callbacks and LangSmith carry)."""
        run_id = getattr(run_manager, "run_id", None)
        if run_id is not None:
            plan.choice.remember_alias(str(run_id), used)

    def _annotate(
        self, result: ChatResult, plan: _CallPlan, used: str, fallbacks: list[dict[str, str]], run_manager: Any = None
    ) -> ChatResult:
        self._finish(plan, used)
        entry = plan.choice.metadata(used, fallbacks, usage=_token_usage(result))
        self._remember_run(plan, used, run_manager)
        for generation in result.generations:
            metadata = dict(generation.message.response_metadata)
            metadata.setdefault("model_name", used)
            metadata["uniroute"] = entry
            generation.message.response_metadata = metadata
        return result

    # ------------------------------------------------------------------ BaseChatModel

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        plan = self._call_plan(messages, kwargs, run_manager)
        stop = stop if stop is not None else self.stop

        def attempt(name: str) -> ChatResult:
            model, member_kwargs = self._member_call(name, plan)
            _acquire(plan.members[name])
            return model._generate(messages, stop=stop, run_manager=run_manager, **member_kwargs)

        result, used, fallbacks = call_with_fallback(plan.choice.order, attempt, **self._resilience())
        return self._annotate(result, plan, used, fallbacks, run_manager)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        plan = await self._acall_plan(messages, kwargs, run_manager)
        stop = stop if stop is not None else self.stop

        async def attempt(name: str) -> ChatResult:
            model, member_kwargs = self._member_call(name, plan)
            await _aacquire(plan.members[name])
            return await model._agenerate(messages, stop=stop, run_manager=run_manager, **member_kwargs)

        result, used, fallbacks = await acall_with_fallback(plan.choice.order, attempt, **self._resilience())
        return self._annotate(result, plan, used, fallbacks, run_manager)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        plan = self._call_plan(messages, kwargs, run_manager)
        stop = stop if stop is not None else self.stop

        def start(name: str) -> tuple[Iterator[ChatGenerationChunk], ChatGenerationChunk]:
            """Open the member's stream and take its first chunk: failing up to here may fall back."""
            model, member_kwargs = self._member_call(name, plan)
            _acquire(plan.members[name])
            chunks = iter(_member_chunks(model, messages, stop, run_manager, member_kwargs))
            first = next(chunks, None)
            if first is None:
                raise RuntimeError(f"member {name!r} returned an empty stream")
            return chunks, first

        (chunks, first), used, fallbacks = call_with_fallback(plan.choice.order, start, **self._resilience())
        self._finish(plan, used)
        state = _StreamState(plan.choice, plan.choice.metadata(used, fallbacks, account=False), used)
        self._remember_run(plan, used, run_manager)
        try:
            yield state.annotate(first)
            for chunk in chunks:  # after the first token, a failure is the caller's (output was already sent)
                yield state.annotate(chunk)
        finally:
            state.settle()

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        plan = await self._acall_plan(messages, kwargs, run_manager)
        stop = stop if stop is not None else self.stop

        async def start(name: str) -> tuple[AsyncIterator[ChatGenerationChunk], ChatGenerationChunk]:
            model, member_kwargs = self._member_call(name, plan)
            await _aacquire(plan.members[name])
            chunks = _amember_chunks(model, messages, stop, run_manager, member_kwargs).__aiter__()
            try:
                first = await chunks.__anext__()
            except StopAsyncIteration:
                raise RuntimeError(f"member {name!r} returned an empty stream") from None
            return chunks, first

        (chunks, first), used, fallbacks = await acall_with_fallback(
            plan.choice.order, start, **self._resilience()
        )
        self._finish(plan, used)
        state = _StreamState(plan.choice, plan.choice.metadata(used, fallbacks, account=False), used)
        self._remember_run(plan, used, run_manager)
        try:
            yield state.annotate(first)
            async for chunk in chunks:
                yield state.annotate(chunk)
        finally:
            state.settle()

    # ------------------------------------------------------------------ tools

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools: calls are then routed among tool-capable members only, and the chosen member binds them.

        ``tools`` and ``tool_choice`` are handed to the chosen member's own ``bind_tools`` unchanged (so each
        provider formats them its way). Raises ``ValueError`` now if no member supports tool calling.
        """
        if not self.tool_capable_members:
            raise ValueError(self._no_tool_member_message())
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=list(tools), **kwargs)
