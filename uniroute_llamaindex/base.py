"""UniRouteLLM: a pool of LlamaIndex LLMs behind one ``FunctionCallingLLM``, routing each call with UniRoute."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
    TextBlock,
)
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, model_validator
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM, ToolSelection
from llama_index.core.prompts import BasePromptTemplate, PromptTemplate
from llama_index.core.types import TokenAsyncGen, TokenGen

from uniroute_core.delegation import (
    BuiltPool,
    ConversationFloors,
    MemberMismatchError,
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
from uniroute_core.resilience import BreakerConfig, BreakerSlot, CircuitBreaker, arun_bounded
from uniroute_core.router import UniRouter
from uniroute_core.serving import ServingConfig, paced_turn

from ._undecorated import undecorated_method

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

__all__ = ["UniRouteLLM", "ToolRequest", "UNIROUTE_KEY"]

UNIROUTE_KEY = "uniroute"
"""The ``additional_kwargs`` key of every response (and streamed chunk) holding the routing record."""

_TOOL_REQUEST_KWARG = "uniroute_tool_request"


@dataclass(frozen=True)
class ToolRequest:
    """A ``chat_with_tools`` call whose tool formatting is left to the member the router picks.

    :meth:`UniRouteLLM._prepare_chat_with_tools` returns it (under ``uniroute_tool_request``) instead of formatting the
    tools itself, since each member formats tools its own way; the router's ``chat`` then routes among
    function-calling members and calls the chosen one's ``_prepare_chat_with_tools`` with these arguments.
    """

    tools: Sequence[BaseTool]
    user_msg: str | ChatMessage | None = None
    chat_history: list[ChatMessage] | None = None
    verbose: bool = False
    allow_parallel_tool_calls: bool = False
    tool_required: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)


_EMPTY = object()


def _feedback_key(response: Any) -> str:
    """The call id a response's routing record names (or the id given as a string)."""
    if isinstance(response, str):
        if not response.strip():
            raise ValueError("record_feedback: the call id is empty")
        return response.strip()
    kwargs = getattr(response, "additional_kwargs", None)
    if kwargs is None and hasattr(response, "message"):
        kwargs = getattr(response.message, "additional_kwargs", None)
    if not isinstance(kwargs, Mapping):
        raise TypeError(
            f"record_feedback takes a response UniRouteLLM returned or its call id, got {type(response).__name__}"
        )
    record = kwargs.get(UNIROUTE_KEY)
    if not isinstance(record, Mapping) or not record.get("call_id"):
        raise ValueError(
            f"this response carries no routing record (additional_kwargs[{UNIROUTE_KEY!r}]['call_id']): pass a "
            "response UniRouteLLM returned"
        )
    return str(record["call_id"])

_QUERY: ContextVar[str | None] = ContextVar("uniroute_llamaindex_query", default=None)
"""The query string of the prompt template being predicted (set by ``predict`` & co. for the call they make)."""

_QUERY_KEYS = ("query_str",)
"""Template variables holding the user's query in LlamaIndex's prompts (QA, refine, summarize, …)."""


def _query_of(prompt: Any, prompt_args: Mapping[str, Any]) -> str | None:
    """The user's query among a template's partial-format kwargs and the call's prompt arguments, if any."""
    args = {**(getattr(prompt, "kwargs", None) or {}), **prompt_args}
    for key in _QUERY_KEYS:
        value = args.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


@contextmanager
def _routing_on(query: str | None) -> Iterator[None]:
    token = _QUERY.set(query)
    try:
        yield
    finally:
        _QUERY.reset(token)


_CONVERSATION_KEYS = ("conversation_id", "thread_id", "session_id")
"""Call keywords naming the conversation a call belongs to (for ``sticky``), as ``ChatUniRoute`` reads them."""


@dataclass(frozen=True)
class _CallOptions:
    """Per-call router keywords, taken out of the call's kwargs so they never reach a member."""

    force: str | None = None
    conversation_id: str | None = None

    @classmethod
    def pop_from(cls, kwargs: dict[str, Any]) -> _CallOptions:
        force = kwargs.pop("model", None)
        conversation = None
        for key in _CONVERSATION_KEYS:
            value = kwargs.pop(key, None)
            if value is not None and conversation is None:
                conversation = str(value)
        if force is not None and not isinstance(force, str):
            raise TypeError(f"model= must name a member (str), got {type(force).__name__}")
        return cls(force, conversation)


def _token_usage(response: Any) -> tuple[int, int] | None:
    """(input, output) tokens a member reported: ``additional_kwargs`` prompt/completion tokens (llama-index-llms-
    openai and others), else a ``usage`` entry in ``raw`` (input/output or prompt/completion tokens)."""
    extra = getattr(response, "additional_kwargs", None) or {}
    if "prompt_tokens" in extra or "completion_tokens" in extra:
        return int(extra.get("prompt_tokens") or 0), int(extra.get("completion_tokens") or 0)
    raw = getattr(response, "raw", None)
    usage = raw.get("usage") if isinstance(raw, Mapping) else getattr(raw, "usage", None)
    if usage is None:
        return None
    get = usage.get if isinstance(usage, Mapping) else lambda k, d=None: getattr(usage, k, d)
    tokens_in = get("input_tokens") or get("prompt_tokens")
    tokens_out = get("output_tokens") or get("completion_tokens")
    if tokens_in is None and tokens_out is None:
        return None
    return int(tokens_in or 0), int(tokens_out or 0)


def _tag(response: Any, record: dict[str, Any]) -> Any:
    """Attach the routing record to a response or chunk (a fresh dict: members may share theirs between chunks)."""
    response.additional_kwargs = {**(response.additional_kwargs or {}), UNIROUTE_KEY: record}
    return response


def _is_blank(message: ChatMessage) -> bool:
    """A message with no text, no blocks with content and no extra fields: it cannot hold a tool call."""
    return not message.content and not message.additional_kwargs and not any(
        not isinstance(b, TextBlock) for b in message.blocks
    )


def _first_chunk(stream: Any) -> tuple[Any, Any]:
    """Pull the first chunk so that a member failing before its first token can still fall back."""
    iterator = iter(stream)
    try:
        return next(iterator), iterator
    except StopIteration:
        return _EMPTY, iterator


_SYNC_OF = {
    "achat": "chat", "acomplete": "complete", "astream_chat": "stream_chat", "astream_complete": "stream_complete"
}


def _sync_only(member: LLM, method: str) -> bool:
    """Whether ``member``'s async ``method`` is ``CustomLLM``'s default, which just calls the sync method on the
    event loop (so a member that blocks would block the loop)."""
    import inspect

    return method in _SYNC_OF and isinstance(member, CustomLLM) and (
        inspect.getattr_static(type(member), method, None) is inspect.getattr_static(CustomLLM, method, None)
    )


async def _athreaded(iterator: Any, member: str) -> AsyncGenerator[Any, None]:
    """A sync member stream as an async one: each chunk is pulled in a worker thread, never on the event loop."""
    it = iter(iterator)
    while True:
        chunk = await arun_bounded(lambda: next(it, _EMPTY), None, member=member)
        if chunk is _EMPTY:
            return
        yield chunk


async def _afirst_chunk(stream: Any) -> tuple[Any, Any]:
    iterator = stream.__aiter__()
    try:
        return await iterator.__anext__(), iterator
    except StopAsyncIteration:
        return _EMPTY, iterator


class UniRouteLLM(FunctionCallingLLM):
    """One LlamaIndex LLM over a pool of member LLMs: each call goes to the member UniRoute picks for its prompt.

    ``UniRouteLLM(router=router, members={"small": llm_a, "large": llm_b}, lam=0.3)`` works wherever an LLM does
    (``Settings.llm``, query engines, agents). Each response carries ``additional_kwargs["uniroute"]`` =
    ``{"member", "expected_quality", "cost", "lam", "mode", "fallbacks"}``.

    * Routing is the core's (:class:`~uniroute_core.delegation.MemberSelector`); this class only turns messages
      into the routing text and delegates. Only members whose context window holds the prompt are candidates
      (tokens counted by ``token_counter`` or estimated as ``ceil(chars / 4)``).
    * Tool calls (``chat_with_tools``, ``predict_and_call``, ``structured_predict``, agents) are routed among
      function-calling members only; the chosen member formats the tools and reads the tool calls back.
    * A call emits its LLM events once, as this LLM: the member's own implementation is called without its event
      wrappers. A member whose chat is built on its own ``complete`` (``CustomLLM``) still emits that inner
      completion event, as it does when used directly.
    * A member that raises (before its first streamed chunk) is a normal event: the next member by routing score is
      tried and the failure is listed in ``fallbacks``.
    """

    router: UniRouter = Field(exclude=True, description="The fitted core router holding every member's profile.")
    members: dict[str, LLM] = Field(
        exclude=True, description="The member LLMs by name; exactly the router's profiled models."
    )
    lam: float | None = Field(
        default=None, ge=0, allow_inf_nan=False,
        description="λ ≥ 0 (finite): the price of cost in the rule (1 − quality) + λ·cost. None with no "
        "budget/min_quality means 0 (best expected quality).",
    )
    budget: float | None = Field(
        default=None, gt=0, allow_inf_nan=False,
        description="Average cost per call to aim for (> 0, finite); λ is calibrated on the router's probes.",
    )
    min_quality: float | None = Field(
        default=None, ge=0, le=1,
        description="Use the cheapest member whose expected quality reaches this value in [0, 1], else the best.",
    )
    fallback: bool = Field(
        default=True, description="Try the next member by routing score when the chosen one raises."
    )
    route_on: Literal["last_user", "conversation"] = Field(
        default="last_user",
        description="Route chats on the last user message (system prompt excluded) or on the whole conversation "
        "(system messages excluded).",
    )
    token_counter: Callable[[str], int] | None = Field(
        default=None,
        exclude=True,
        description="Counts a prompt's tokens for the context-window check; None estimates ceil(chars / 4).",
    )
    sticky: bool = Field(
        default=False,
        description="Within one conversation (named by conversation_id= / thread_id= / session_id= in the call), "
        "never route a later turn to a cheaper member than an earlier turn used.",
    )
    max_conversations: int = Field(
        default=10_000, ge=1, description="How many conversations stickiness remembers (least recently used first)."
    )
    timeout: float | None = Field(
        default=None, gt=0, allow_inf_nan=False,
        description="Seconds each member attempt may take (a stream: until its first chunk); a member that takes "
        "longer is abandoned and the next member by routing score is tried, with reason 'timeout' in the record's "
        "fallbacks. None: no limit. Sync calls wait on a worker thread that cannot be killed and finishes in the "
        "background (at most uniroute_core.resilience.MAX_ABANDONED such threads at once).",
    )
    circuit_breaker: BreakerConfig | None = Field(
        default_factory=BreakerConfig,
        exclude=True,
        description="A member failing (error or timeout) `failures` times within `window` s is skipped for "
        "`cooldown` s, then given one trial call (default 5 in 60 s, 30 s); skips are reported in fallbacks as "
        "'skipped: circuit open'. When every member is open all are still tried, best first. None: off.",
    )
    serving: ServingConfig = Field(
        default_factory=ServingConfig,
        exclude=True,
        description="Micro-batching (max_batch_size 64, max_wait 2 ms), the live budget's window and the long-text "
        "window: see uniroute_core.serving.ServingConfig. A dict is accepted.",
    )

    model_config = ConfigDict(extra="forbid")

    _breakers: BreakerSlot = PrivateAttr(default_factory=BreakerSlot)
    _floors: ConversationFloors = PrivateAttr(default_factory=ConversationFloors)
    _pool_changes: PoolChanges = PrivateAttr(default_factory=PoolChanges)
    _selector_slot: SelectorSlot = PrivateAttr(default_factory=SelectorSlot)
    _pool_report: PoolReport | None = PrivateAttr(default=None)
    _policy: RoutingPolicy = PrivateAttr(default_factory=RoutingPolicy)
    _member_metadata: tuple[tuple[tuple[str, int], ...], dict[str, LLMMetadata], list[LLM]] | None = PrivateAttr(
        default=None
    )

    @model_validator(mode="after")
    def _build_policy(self) -> UniRouteLLM:
        """Build the routing policy once, at construction (the fields' bounds were checked by pydantic already)."""
        self._policy = RoutingPolicy(lam=self.lam, budget=self.budget, min_quality=self.min_quality)
        self._floors = ConversationFloors(self.max_conversations)
        return self

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        # checked after pydantic so the specific errors (MemberMismatchError...) reach the caller unwrapped
        if self.members or self.router.models:  # an empty pool may be filled with add_model
            check_members(self.router, list(self.members))

    @classmethod
    def class_name(cls) -> str:
        return "UniRouteLLM"

    # ------------------------------------------------------------------ description
    @property
    def metadata(self) -> LLMMetadata:
        """The pool as one LLM: smallest context window, largest output reservation, function calling if any member."""
        metas = list(self._metadata_of(self.members).values())
        if not metas:  # an empty pool, before its first add_model: LlamaIndex's defaults
            return LLMMetadata(is_chat_model=True, model_name="uniroute")
        return LLMMetadata(
            context_window=min(m.context_window for m in metas),
            num_output=max(m.num_output for m in metas),
            is_chat_model=True,  # chats reach each member as chats, so each formats prompts its own way
            is_function_calling_model=any(m.is_function_calling_model for m in metas),
            model_name="uniroute",
        )

    def to_payload(self) -> dict[str, Any]:
        """Observability payload: the pool's metadata plus the member names and routing settings."""
        return {
            **super().to_payload(),
            "members": list(self.members),
            "lam": self.lam,
            "budget": self.budget,
            "min_quality": self.min_quality,
        }

    # ------------------------------------------------------------------ routing
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
        """The core's routing entry point for these settings (kept across calls: it batches them)."""
        return self._selector_slot.get(self.router, self.policy, self.fallback, self.serving)

    def _metadata_of(self, members: Mapping[str, LLM]) -> dict[str, LLMMetadata]:
        """Each member's ``metadata``, read once per member object while the pool keeps it.

        LlamaIndex LLMs build a new ``LLMMetadata`` on every access; reading it for every member on every call (for
        the context-window filter, function calling and this model's own metadata, which LlamaIndex's callbacks read
        per call) cost ~20 pydantic constructions per call on the event loop. A member's context window and
        function-calling flag are fixed by its configuration, so they are read when a member object first appears
        in the pool (replacing a member, or adding one, reads it again).
        """
        key = tuple((name, id(member)) for name, member in members.items())
        cached = self._member_metadata
        if cached is not None and cached[0] == key:
            return cached[1]
        metas = {name: member.metadata for name, member in members.items()}
        # the member objects are kept with the key, so an id in the key cannot be reused by another object
        self._member_metadata = (key, metas, list(members.values()))
        return metas

    def _function_calling_members(self, members: Mapping[str, LLM]) -> list[str]:
        metas = self._metadata_of(members)
        names = [n for n in members if metas[n].is_function_calling_model]
        if not names:
            raise ValueError(
                f"no member supports function calling (members: {list(members)}), so tools cannot be used; "
                "add a FunctionCallingLLM member whose metadata.is_function_calling_model is True"
            )
        return names

    def _count_tokens(self, text: str) -> int:
        return self.token_counter(text) if self.token_counter is not None else estimate_tokens(text)

    def _allowed(self, full_prompt: str, tools: bool) -> list[str]:
        """The members allowed for this call: tool-capable when it has tools, and whose context holds the prompt."""
        members = self._pool_changes.steady_members(self.router, lambda: self.members)
        allowed = self._function_calling_members(members) if tools else list(members)
        metas = self._metadata_of(members)
        windows = {n: metas[n].context_window for n in allowed}
        return members_fitting(self._count_tokens(full_prompt), windows)

    def _choose(
        self, routing_text: str, full_prompt: str, *, tools: bool, options: _CallOptions | None = None
    ) -> RoutingChoice:
        """Route ``routing_text`` (or the query of the template being predicted) among the allowed members."""
        allowed = self._allowed(full_prompt, tools)
        o = options or _CallOptions()
        return self._selector().select(
            _QUERY.get() or routing_text, allowed=allowed, force=o.force, min_cost=self._floor(o.conversation_id)
        )

    async def _achoose(
        self, routing_text: str, full_prompt: str, *, tools: bool, options: _CallOptions | None = None
    ) -> RoutingChoice:
        """Async :meth:`_choose`: the text is embedded in the core's worker thread, never on the event loop."""
        await paced_turn()  # calls started together do their per-call work one per loop iteration
        allowed = self._allowed(full_prompt, tools)
        o = options or _CallOptions()
        return await self._selector().aselect(
            _QUERY.get() or routing_text, allowed=allowed, force=o.force, min_cost=self._floor(o.conversation_id)
        )

    def _floor(self, conversation_id: str | None) -> float | None:
        return self._floors.floor(conversation_id) if self.sticky else None

    def _served(
        self,
        choice: RoutingChoice,
        options: _CallOptions,
        used: str,
        fallbacks: list[dict[str, str]],
        usage: tuple[int, int] | None = None,
        *,
        stream: bool = False,
    ) -> dict[str, Any]:
        """The call's routing record; with ``sticky``, its conversation's cost floor rises to the member used.

        A stream's record gets its cost entries (``calls_served``, ``realised_mean_cost``, ``call_cost``…) when the
        stream ends, from the usage its chunks reported (see :meth:`_tagged_stream`).
        """
        if self.sticky:
            self._floors.record(options.conversation_id, choice.costs[used])
        return choice.metadata(used, fallbacks, usage=usage, account=not stream)

    def _routing_text(self, messages: Sequence[ChatMessage]) -> str:
        spoken = [m for m in messages if m.role != MessageRole.SYSTEM]
        if self.route_on == "last_user":
            users = [m for m in spoken if m.role == MessageRole.USER]
            if users:
                return users[-1].content or ""
        return "\n".join(m.content or "" for m in spoken)

    def _choose_for_chat(
        self, messages: Sequence[ChatMessage], request: ToolRequest | None, options: _CallOptions
    ) -> RoutingChoice:
        full = "\n".join(m.content or "" for m in messages)
        return self._choose(self._routing_text(messages), full, tools=request is not None, options=options)

    async def _achoose_for_chat(
        self, messages: Sequence[ChatMessage], request: ToolRequest | None, options: _CallOptions
    ) -> RoutingChoice:
        full = "\n".join(m.content or "" for m in messages)
        return await self._achoose(self._routing_text(messages), full, tools=request is not None, options=options)

    # ------------------------------------------------------------------ prompt templates: route on the query
    def predict(self, prompt: BasePromptTemplate, **prompt_args: Any) -> str:
        """``LLM.predict``, routed on the template's ``query_str`` when it has one (query engines: the user's
        question, not the retrieved context the formatted prompt starts with)."""
        with _routing_on(_query_of(prompt, prompt_args)):
            return super().predict(prompt, **prompt_args)

    async def apredict(self, prompt: BasePromptTemplate, **prompt_args: Any) -> str:
        """Async :meth:`predict`."""
        with _routing_on(_query_of(prompt, prompt_args)):
            return await super().apredict(prompt, **prompt_args)

    def stream(self, prompt: BasePromptTemplate, **prompt_args: Any) -> TokenGen:
        """``LLM.stream``, routed on the template's ``query_str`` (see :meth:`predict`)."""
        with _routing_on(_query_of(prompt, prompt_args)):
            return super().stream(prompt, **prompt_args)

    async def astream(self, prompt: BasePromptTemplate, **prompt_args: Any) -> TokenAsyncGen:
        """Async :meth:`stream`."""
        with _routing_on(_query_of(prompt, prompt_args)):
            return await super().astream(prompt, **prompt_args)

    def structured_predict(
        self, output_cls: Any, prompt: PromptTemplate, llm_kwargs: Any = None, **prompt_args: Any
    ) -> Any:
        """``LLM.structured_predict``, routed on the template's ``query_str`` (see :meth:`predict`)."""
        with _routing_on(_query_of(prompt, prompt_args)):
            return super().structured_predict(output_cls, prompt, llm_kwargs, **prompt_args)

    async def astructured_predict(
        self, output_cls: Any, prompt: PromptTemplate, llm_kwargs: Any = None, **prompt_args: Any
    ) -> Any:
        """Async :meth:`structured_predict`."""
        with _routing_on(_query_of(prompt, prompt_args)):
            return await super().astructured_predict(output_cls, prompt, llm_kwargs, **prompt_args)

    # ------------------------------------------------------------------ member calls
    @staticmethod
    def _chat_args(
        member: LLM, messages: Sequence[ChatMessage], request: ToolRequest | None, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """The member's chat arguments; with tools, the member formats them itself."""
        if request is None:
            return {"messages": messages, **kwargs}
        prepared = member._prepare_chat_with_tools_compat(  # type: ignore[attr-defined]
            request.tools,
            user_msg=request.user_msg,
            chat_history=request.chat_history,
            verbose=request.verbose,
            allow_parallel_tool_calls=request.allow_parallel_tool_calls,
            tool_required=request.tool_required,
            **request.kwargs,
        )
        return {**kwargs, **prepared}

    @staticmethod
    def _validated(member: LLM, response: ChatResponse, request: ToolRequest | None) -> ChatResponse:
        if request is None:
            return response
        return member._validate_chat_with_tools_response(  # type: ignore[attr-defined]
            response, request.tools, allow_parallel_tool_calls=request.allow_parallel_tool_calls, **request.kwargs
        )

    def _call(self, name: str, method: str, *args: Any, **kwargs: Any) -> Any:
        member = self.members[name]
        if member.rate_limiter is not None:
            member.rate_limiter.acquire()
        return undecorated_method(member, method)(*args, **kwargs)

    async def _acall(self, name: str, method: str, *args: Any, **kwargs: Any) -> Any:
        member = self.members[name]
        if member.rate_limiter is not None:
            await member.rate_limiter.async_acquire()
        if _sync_only(member, method):  # a CustomLLM's async default would run its sync call on the loop
            sync = getattr(member, _SYNC_OF[method])  # decorated, as CustomLLM's async default calls it
            result = await arun_bounded(lambda: sync(*args, **kwargs), None, member=name)
            return _athreaded(result, name) if method.startswith("astream") else result
        return await undecorated_method(member, method)(*args, **kwargs)

    def _resilience(self) -> dict[str, Any]:
        """The timeout and circuit breaker every member attempt of a call runs under."""
        breaker: CircuitBreaker | None = self._breakers.get(self.circuit_breaker)
        return {"timeout": self.timeout, "breaker": breaker}

    # ------------------------------------------------------------------ chat
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        request: ToolRequest | None = kwargs.pop(_TOOL_REQUEST_KWARG, None)
        options = _CallOptions.pop_from(kwargs)
        choice = self._choose_for_chat(messages, request, options)

        def call(name: str) -> ChatResponse:
            member = self.members[name]
            response = self._call(name, "chat", **self._chat_args(member, messages, request, kwargs))
            return self._validated(member, response, request)

        response, used, fallbacks = call_with_fallback(choice.order, call, **self._resilience())
        return _tag(response, self._served(choice, options, used, fallbacks, _token_usage(response)))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        request: ToolRequest | None = kwargs.pop(_TOOL_REQUEST_KWARG, None)
        options = _CallOptions.pop_from(kwargs)
        choice = await self._achoose_for_chat(messages, request, options)

        async def call(name: str) -> ChatResponse:
            member = self.members[name]
            response = await self._acall(name, "achat", **self._chat_args(member, messages, request, kwargs))
            return self._validated(member, response, request)

        response, used, fallbacks = await acall_with_fallback(choice.order, call, **self._resilience())
        return _tag(response, self._served(choice, options, used, fallbacks, _token_usage(response)))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        request: ToolRequest | None = kwargs.pop(_TOOL_REQUEST_KWARG, None)
        options = _CallOptions.pop_from(kwargs)
        choice = self._choose_for_chat(messages, request, options)

        def call(name: str) -> tuple[Any, Any]:
            member = self.members[name]
            return _first_chunk(self._call(name, "stream_chat", **self._chat_args(member, messages, request, kwargs)))

        (first, rest), used, fallbacks = call_with_fallback(choice.order, call, **self._resilience())
        record = self._served(choice, options, used, fallbacks, stream=True)
        return self._tagged_stream(first, rest, record, choice, used)

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        request: ToolRequest | None = kwargs.pop(_TOOL_REQUEST_KWARG, None)
        options = _CallOptions.pop_from(kwargs)
        choice = await self._achoose_for_chat(messages, request, options)

        async def call(name: str) -> tuple[Any, Any]:
            member = self.members[name]
            stream = await self._acall(name, "astream_chat", **self._chat_args(member, messages, request, kwargs))
            return await _afirst_chunk(stream)

        (first, rest), used, fallbacks = await acall_with_fallback(choice.order, call, **self._resilience())
        record = self._served(choice, options, used, fallbacks, stream=True)
        return self._atagged_stream(first, rest, record, choice, used)

    # ------------------------------------------------------------------ completion
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        options = _CallOptions.pop_from(kwargs)
        choice = self._choose(prompt, prompt, tools=False, options=options)
        response, used, fallbacks = call_with_fallback(
            choice.order, lambda name: self._call(name, "complete", prompt, formatted=formatted, **kwargs),
            **self._resilience(),
        )
        return _tag(response, self._served(choice, options, used, fallbacks, _token_usage(response)))

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        options = _CallOptions.pop_from(kwargs)
        choice = await self._achoose(prompt, prompt, tools=False, options=options)
        response, used, fallbacks = await acall_with_fallback(
            choice.order, lambda name: self._acall(name, "acomplete", prompt, formatted=formatted, **kwargs),
            **self._resilience(),
        )
        return _tag(response, self._served(choice, options, used, fallbacks, _token_usage(response)))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        options = _CallOptions.pop_from(kwargs)
        choice = self._choose(prompt, prompt, tools=False, options=options)
        (first, rest), used, fallbacks = call_with_fallback(
            choice.order,
            lambda name: _first_chunk(self._call(name, "stream_complete", prompt, formatted=formatted, **kwargs)),
            **self._resilience(),
        )
        record = self._served(choice, options, used, fallbacks, stream=True)
        return self._tagged_stream(first, rest, record, choice, used)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        options = _CallOptions.pop_from(kwargs)
        choice = await self._achoose(prompt, prompt, tools=False, options=options)

        async def call(name: str) -> tuple[Any, Any]:
            stream = await self._acall(name, "astream_complete", prompt, formatted=formatted, **kwargs)
            return await _afirst_chunk(stream)

        (first, rest), used, fallbacks = await acall_with_fallback(choice.order, call, **self._resilience())
        record = self._served(choice, options, used, fallbacks, stream=True)
        return self._atagged_stream(first, rest, record, choice, used)

    @staticmethod
    def _tagged_stream(
        first: Any, rest: Any, record: dict[str, Any], choice: RoutingChoice, used: str
    ) -> Generator[Any, None, None]:
        """Tag every chunk with the call's record; when the stream ends (or is closed early), settle its cost.

        The chunks share one record dict, so the cost entries added at the end (``call_cost`` from the usage the
        member reported on its chunks, ``calls_served``, ``realised_mean_cost``) are visible on every chunk,
        including the last one a consumer holds.
        """
        usage: tuple[int, int] | None = None
        try:
            if first is not _EMPTY:
                usage = _token_usage(first) or usage
                yield _tag(first, record)
            for chunk in rest:
                usage = _token_usage(chunk) or usage
                yield _tag(chunk, record)
        finally:
            record.update(choice.settle(used, usage))

    @staticmethod
    async def _atagged_stream(
        first: Any, rest: Any, record: dict[str, Any], choice: RoutingChoice, used: str
    ) -> AsyncGenerator[Any, None]:
        """Async :meth:`_tagged_stream`."""
        usage: tuple[int, int] | None = None
        try:
            if first is not _EMPTY:
                usage = _token_usage(first) or usage
                yield _tag(first, record)
            async for chunk in rest:
                usage = _token_usage(chunk) or usage
                yield _tag(chunk, record)
        finally:
            record.update(choice.settle(used, usage))

    # ------------------------------------------------------------------ tools
    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Defer tool formatting to the member chosen at call time (see :class:`ToolRequest`)."""
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(
                ChatMessage(role=MessageRole.USER, content=user_msg) if isinstance(user_msg, str) else user_msg
            )
        request = ToolRequest(
            tools=list(tools),
            user_msg=user_msg,
            chat_history=chat_history,
            verbose=verbose,
            allow_parallel_tool_calls=allow_parallel_tool_calls,
            tool_required=tool_required,
            kwargs=dict(kwargs),
        )
        return {"messages": messages, _TOOL_REQUEST_KWARG: request}

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """Read tool calls with the member that produced ``response`` (named in its ``uniroute`` entry)."""
        record = (response.additional_kwargs or {}).get(UNIROUTE_KEY)
        if not record and not error_on_no_tool_call and _is_blank(response.message):
            return []  # e.g. the empty placeholder an agent reads when a stream yielded nothing
        if not record or record.get("member") not in self.members:
            raise ValueError(
                "this response has no 'uniroute' entry naming one of this router's members "
                f"({list(self.members)}), so it does not know which member's tool-call format to read; pass a "
                "response returned by this UniRouteLLM"
            )
        member = self.members[record["member"]]
        return member.get_tool_calls_from_response(  # type: ignore[attr-defined]
            response, error_on_no_tool_call=error_on_no_tool_call, **kwargs
        )

    # ------------------------------------------------------------------ growing the pool
    def _check_new_member(self, name: str, llm: LLM, replace: bool) -> None:
        if not isinstance(llm, LLM):
            raise TypeError(f"member {name!r} must be a llama_index LLM, got {type(llm).__name__}")
        if llm is self:
            raise ValueError("a UniRouteLLM cannot be a member of itself")
        if name in self.members and not replace:
            raise MemberMismatchError(f"member {name!r} already exists; pass replace=True to re-profile it")

    # ------------------------------------------------------------------ a pool in one call
    @staticmethod
    def _check_pool_member(name: str, llm: Any) -> None:
        if not isinstance(llm, LLM):
            raise TypeError(f"member {name!r} must be a llama_index LLM, got {type(llm).__name__}")

    @classmethod
    def from_models(
        cls,
        models: dict[str, Any],
        router: UniRouter | None = None,
        probes: ProbeSet | None = None,
        *,
        max_concurrency: int = 8,
        max_parallel_members: int = 4,
        retries: int = 2,
        max_failure_rate: float = 0.5,
        show_progress: bool = True,
        **settings: Any,
    ) -> UniRouteLLM:
        """A routed LLM over ``{"name": (llm, cost), ...}``, every member profiled in one call (via ``complete``).

        With no ``router``, :meth:`UniRouter.pretrained` is used; ``probes`` replaces its probe set. Members answer
        the probes concurrently under one progress bar, with :meth:`add_model`'s retries and failure policy; one that
        cannot be profiled is left out with a ``RuntimeWarning`` and listed in :attr:`pool_report`; if none can be,
        :class:`uniroute_core.delegation.PoolProfilingError` names every failure. ``settings`` are the other fields
        (``lam``, ``budget``...). A ``cost`` may be token prices (``{"input_per_mtok": …,
        "output_per_mtok": …}``, as in :meth:`add_model`). Cost: one call per probe per member.
        """
        def answer_of(llm: LLM) -> Callable[[str], str]:
            return lambda prompt: llm.complete(prompt).text

        built = build_pool(
            models, cls._check_pool_member, answer_of, router, probes,
            max_concurrency=max_concurrency, max_parallel_members=max_parallel_members, retries=retries,
            max_failure_rate=max_failure_rate, show_progress=show_progress,
        )
        return cls._from_built(built, settings)

    @classmethod
    async def afrom_models(
        cls,
        models: dict[str, Any],
        router: UniRouter | None = None,
        probes: ProbeSet | None = None,
        *,
        max_concurrency: int = 8,
        retries: int = 2,
        max_failure_rate: float = 0.5,
        show_progress: bool = True,
        **settings: Any,
    ) -> UniRouteLLM:
        """Async :meth:`from_models` (answers via ``acomplete``, all members concurrently on the event loop)."""
        def answer_of(llm: LLM) -> Callable[[str], Any]:
            async def answer(prompt: str) -> str:
                return (await llm.acomplete(prompt)).text

            return answer

        built = await abuild_pool(
            models, cls._check_pool_member, answer_of, router, probes,
            max_concurrency=max_concurrency, retries=retries, max_failure_rate=max_failure_rate,
            show_progress=show_progress,
        )
        return cls._from_built(built, settings)

    @classmethod
    def _from_built(cls, built: BuiltPool, settings: Mapping[str, Any]) -> UniRouteLLM:
        llm = cls(router=built.router, members=built.members, **settings)
        llm._pool_report = built.report
        llm._selector_slot.prices.update(built.prices)  # members given token prices report their call cost
        return llm

    @property
    def pool_report(self) -> PoolReport | None:
        """What :meth:`from_models` did (members added with profiles, members left out with reasons), else None."""
        return self._pool_report

    def add_model(
        self, name: str, llm: LLM, cost: float | Mapping[str, float], *, replace: bool = False, **profiling_kwargs: Any
    ) -> ModelProfile:
        """Profile ``llm`` on the router's probe set (answers via ``llm.complete``), add it, and return its profile.

        One call adds a member: the probes are answered concurrently, graded with the probe set's grader, and the
        member joins the pool atomically (calls in flight keep routing over the old pool). ``profiling_kwargs`` go
        to :func:`uniroute_core.profiling.profile_answers` (``max_concurrency``, ``retries``, ``show_progress``...).

        ``cost`` is the per-call cost, or token prices ``{"input_per_mtok": …, "output_per_mtok": …}`` (optional
        ``typical_input_tokens`` / ``typical_output_tokens`` / ``per_call``): routing then uses the per-call cost of
        :class:`uniroute_core.serving.TokenPrices`, and the ``uniroute`` record gives each call's actual cost
        (``call_cost``) from the token counts the member reports (``prompt_tokens`` / ``completion_tokens`` in
        ``additional_kwargs``, or ``usage`` in ``raw``). Prices are kept by this LLM, not saved with the router.
        """
        self._check_new_member(name, llm, replace)
        cost = self._selector_slot.member_cost(name, cost)
        profiling_kwargs.setdefault("probe_timeout", self.timeout)  # a probe is bounded like a call

        def answer(prompt: str) -> str:
            return llm.complete(prompt).text

        with self._pool_changes.adding_to(self, name, llm):
            return add_profiled_model(self.router, name, answer, cost, replace=replace, **profiling_kwargs)

    async def aadd_model(
        self, name: str, llm: LLM, cost: float | Mapping[str, float], *, replace: bool = False, **profiling_kwargs: Any
    ) -> ModelProfile:
        """Async :meth:`add_model` (answers via ``llm.acomplete``)."""
        self._check_new_member(name, llm, replace)
        cost = self._selector_slot.member_cost(name, cost)
        profiling_kwargs.setdefault("probe_timeout", self.timeout)  # a probe is bounded like a call

        async def answer(prompt: str) -> str:
            return (await llm.acomplete(prompt)).text

        with self._pool_changes.adding_to(self, name, llm):
            return await aadd_profiled_model(self.router, name, answer, cost, replace=replace, **profiling_kwargs)

    def record_feedback(self, response: Any, score: float, *, weight: float = 1.0) -> ModelProfile | None:
        """Feedback on a call this LLM served: its answer scored ``score`` in [0, 1] (thumbs up = 1, a passing
        unit test, an LLM judge, a human label).

        ``response`` is the ``ChatResponse`` / ``CompletionResponse`` (or a streamed chunk) it returned — its
        ``additional_kwargs["uniroute"]["call_id"]`` names the call — or that call id itself. The member that
        answered has its Ψ updated in the call's cluster(s) on the embedding the call was routed on
        (:meth:`UniRouter.observe <uniroute_core.router.UniRouter.observe>`). Returns the member's new profile, or
        ``None`` when the member has left the pool since (ignored with a ``FeedbackWarning``).

        Raises:
            UnknownCallError: no call with that id was served here (or it is older than the last 10,000 calls).
            ValueError / TypeError: ``score`` is not a number in [0, 1], or the response carries no routing record.
        """
        return self._selector_slot.feedback.record(self.router, _feedback_key(response), score, weight=weight)

    def remove_model(self, name: str) -> ModelProfile:
        """Remove a member and its profile from the pool (profile first); returns the removed profile.

        Calls routed before the removal may still finish on the removed member; later calls never pick it. An
        unknown name is a ``KeyError``. The last member may be removed (as in ``ChatUniRoute``; the rule is the
        core's :meth:`~uniroute_core.delegation.PoolChanges.removing_from`): calls then fail with a
        ``MemberMismatchError`` saying the pool is empty until :meth:`add_model` adds one.
        """
        return self._pool_changes.removing_from(self, name, self.router)
