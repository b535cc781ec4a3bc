"""Offline members for tests, examples and benchmarks: no network, deterministic.

* :class:`FakeToolCallingChatModel` — a small chat model that supports ``bind_tools`` (none of ``langchain_core``'s
  fakes does): with tools bound it makes a real tool call whose arguments are read off the prompt (integers from the
  numbers in it, strings from a quoted phrase or the prompt itself), so tool calling and
  ``with_structured_output`` work end to end; otherwise it replies with text. It streams word by word and reports
  ``usage_metadata`` (whitespace tokens) and ``model_name``.
* :class:`FailingChatModel` — the same, but raises for its first ``failures`` calls (or always): an injected
  member failure for fallback tests.
* :class:`ReplayChatModel` — answers as a real LLM did, from a routing data folder's recorded responses
  (:class:`uniroute_core.replay.ReplayBook`); profiling it reproduces that model's recorded scores.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr

from uniroute_core.replay import ReplayBook
from uniroute_core.router import UniRouter
from uniroute_core.testing import AdapterHarness, MemberScript, Reply

from ._messages import last_human_text, message_text

__all__ = [
    "FakeToolCallingChatModel",
    "FailingChatModel",
    "MemberFailure",
    "ReplayChatModel",
    "ScriptedChatModel",
    "LangChainHarness",
]


def _word_count(messages: Sequence[BaseMessage]) -> int:
    return sum(len(message_text(m).split()) for m in messages)


def _usage(input_tokens: int, output_tokens: int) -> UsageMetadata:
    usage: UsageMetadata = {
        "input_tokens": input_tokens, "output_tokens": output_tokens, "total_tokens": input_tokens + output_tokens
    }
    return usage


def _apply_stop(text: str, stop: list[str] | None) -> str:
    """Cut ``text`` at the first stop sequence, as a real model stops generating there."""
    for s in stop or []:
        if s and s in text:
            text = text[: text.index(s)]
    return text


# --------------------------------------------------------------------------- arguments read off the prompt


def _first_type(spec: dict[str, Any]) -> str | None:
    if "type" in spec:
        t = spec["type"]
        return next((x for x in t if x != "null"), None) if isinstance(t, list) else t
    for option in spec.get("anyOf", []) + spec.get("oneOf", []):
        t = _first_type(option)
        if t not in (None, "null"):
            return t
    return None


def _arguments(parameters: dict[str, Any], prompt: str) -> dict[str, Any]:
    """Fill a JSON schema's properties from the prompt: numbers in order, a quoted phrase or the prompt for strings."""
    numbers = iter(re.findall(r"-?\d+(?:\.\d+)?", prompt))
    quoted = re.findall(r"'([^']+)'|\"([^\"]+)\"", prompt)
    phrase = next((a or b for a, b in quoted), None) or prompt.strip() or "text"
    args: dict[str, Any] = {}
    for name, spec in (parameters.get("properties") or {}).items():
        if spec.get("enum"):
            args[name] = spec["enum"][0]
            continue
        kind = _first_type(spec)
        if kind == "integer":
            args[name] = int(float(next(numbers, "0")))
        elif kind == "number":
            args[name] = float(next(numbers, "0"))
        elif kind == "boolean":
            args[name] = True
        elif kind == "array":
            args[name] = []
        elif kind == "object":
            args[name] = _arguments(spec, prompt)
        else:
            args[name] = phrase
    return args


def _chosen_tool(tools: list[dict[str, Any]], tool_choice: Any, prompt: str) -> dict[str, Any] | None:
    """The tool to call: the one ``tool_choice`` names, else one named in the prompt, else the first."""
    if not tools or tool_choice in ("none", False):
        return None
    by_name = {t["function"]["name"]: t for t in tools}
    named = None
    if isinstance(tool_choice, dict):
        named = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
    elif isinstance(tool_choice, str) and tool_choice not in ("any", "auto", "required"):
        named = tool_choice
    if named is not None:
        if named not in by_name:
            raise ValueError(f"tool_choice names {named!r}, which is not among the bound tools {list(by_name)}")
        return by_name[named]
    mentioned = [n for n in by_name if n in prompt]
    return by_name[max(mentioned, key=len)] if mentioned else tools[0]


# --------------------------------------------------------------------------- the fakes


class FakeToolCallingChatModel(BaseChatModel):
    """A deterministic offline chat model with tool calling, streaming and usage reporting.

    Behaviour, so tests can predict it:

    * with tools bound (``bind_tools``) and a human message last, it calls one tool — the one ``tool_choice`` names,
      else one whose name appears in the prompt, else the first — with arguments read off the last human message
      (``tool_choice="none"`` turns this off);
    * after a tool result (a ``ToolMessage`` last) it replies with text quoting that result;
    * otherwise it replies ``replies[keyword]`` for the first keyword found in the last human message, else
      ``reply`` if set, else ``"<model_name> answers: <last human text>"``.

    Usage counts whitespace-separated words. Streaming yields the reply word by word; the last chunk carries the
    usage and the ``model_name``.
    """

    model_name: str = "fake-tool-model"
    """Name reported in ``response_metadata["model_name"]``."""

    reply: str | None = None
    """Fixed text reply; ``None`` echoes the last human message after the model name."""

    replies: dict[str, str] = Field(default_factory=dict)
    """Keyword → text reply: the first keyword found in the last human message picks the reply (else ``reply``).
    Lets a test member be right on one topic and wrong on another."""

    model_config = ConfigDict(extra="forbid")

    _calls: int = PrivateAttr(default=0)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "fake-tool-calling-chat-model"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    @property
    def calls(self) -> int:
        """How many generations this model has run (streamed or not)."""
        return self._calls

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (any format ``convert_to_openai_tool`` accepts) and an optional ``tool_choice``."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)

    # ---------------------------------------------------------------- what to say

    def _before_call(self) -> None:
        """Hook run at the start of every generation (the failing fake raises here)."""
        with self._lock:
            self._calls += 1

    def _response(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> AIMessage:
        self._before_call()
        prompt = last_human_text(messages)
        tools = [convert_to_openai_tool(t) for t in kwargs.get("tools") or []]
        tool = None if isinstance(messages[-1], ToolMessage) else _chosen_tool(tools, kwargs.get("tool_choice"), prompt)
        input_tokens = _word_count(messages)
        metadata = {"model_name": self.model_name}
        if tool is not None:
            args = _arguments(tool["function"].get("parameters") or {}, prompt)
            call = {"name": tool["function"]["name"], "args": args, "id": f"call_{uuid.uuid4().hex[:16]}"}
            output_tokens = len(json.dumps(args, ensure_ascii=False).split()) + 1
            return AIMessage(
                content="",
                tool_calls=[{**call, "type": "tool_call"}],
                usage_metadata=_usage(input_tokens, output_tokens),
                response_metadata=metadata,
            )
        if isinstance(messages[-1], ToolMessage):
            text = f"{self.model_name}: the tool returned {message_text(messages[-1])}"
        else:
            keyed = next((text for word, text in self.replies.items() if word in prompt), None)
            if keyed is not None:
                text = keyed
            else:
                text = self.reply if self.reply is not None else f"{self.model_name} answers: {prompt}"
        text = _apply_stop(text, stop) or "."
        return AIMessage(
            content=text, usage_metadata=_usage(input_tokens, len(text.split())), response_metadata=metadata
        )

    def _chunks(self, message: AIMessage) -> Iterator[ChatGenerationChunk]:
        """Split a response into stream chunks: words, then a last chunk with tool calls, usage and model name."""
        text = message_text(message)
        words = re.findall(r"\S+\s*", text)
        for word in words[:-1]:
            yield ChatGenerationChunk(message=AIMessageChunk(content=word))
        tool_call_chunks = [
            tool_call_chunk(name=c["name"], args=json.dumps(c["args"], ensure_ascii=False), id=c["id"], index=i)
            for i, c in enumerate(message.tool_calls)
        ]
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content=words[-1] if words else "",
                tool_call_chunks=tool_call_chunks,
                usage_metadata=message.usage_metadata,
                response_metadata=dict(message.response_metadata),
                chunk_position="last",
            )
        )

    # ---------------------------------------------------------------- BaseChatModel

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._response(messages, stop, kwargs))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield from self._chunks(self._response(messages, stop, kwargs))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._chunks(self._response(messages, stop, kwargs)):
            yield chunk


class MemberFailure(RuntimeError):
    """The error a :class:`FailingChatModel` raises (stands for a provider outage, rate limit, timeout...)."""


class FailingChatModel(FakeToolCallingChatModel):
    """A :class:`FakeToolCallingChatModel` that raises :class:`MemberFailure` on its first ``failures`` calls.

    ``failures=None`` (the default) fails every call. It fails before producing anything, so a router may fall back.
    """

    failures: int | None = None
    """How many calls fail before it starts answering; ``None`` = every call fails."""

    error_message: str = "injected failure"
    """Message of the raised :class:`MemberFailure`."""

    def _before_call(self) -> None:
        super()._before_call()
        if self.failures is None or self.calls <= self.failures:
            raise MemberFailure(f"{self.model_name}: {self.error_message} (call {self.calls})")


class ReplayChatModel(BaseChatModel):
    """Answers as the real LLM ``model`` did, from a :class:`~uniroute_core.replay.ReplayBook` (offline).

    The prompt looked up is the last human message; a prompt the book does not know raises
    :class:`~uniroute_core.replay.UnknownPromptError` rather than inventing an answer.
    """

    book: ReplayBook = Field(exclude=True, repr=False)
    """The recorded answers (``ReplayBook.from_routing_data(folder)``)."""

    model: str
    """Which recorded model to replay (one of ``book.models``)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    def model_post_init(self, context: Any, /) -> None:
        if self.model not in self.book.models:
            raise ValueError(f"model {self.model!r} has no recorded answers in this book; recorded: {self.book.models}")

    @property
    def _llm_type(self) -> str:
        return "replay-chat-model"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        prompt = last_human_text(messages)
        text = _apply_stop(self.book.answer(self.model, prompt), stop)
        message = AIMessage(
            content=text,
            usage_metadata=_usage(_word_count(messages), len(text.split())),
            response_metadata={"model_name": self.model},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


# --------------------------------------------------------------------------- the conformance harness


class ScriptedChatModel(BaseChatModel):
    """A member driven by a :class:`uniroute_core.testing.MemberScript` (it may hang or fail): sync calls go through
    ``script.respond``, async ones through ``script.arespond`` (a hung async call awaits, so it can be cancelled);
    streams yield the answer word by word, after the script has answered (a hang delays the first chunk).
    ``max_input_tokens`` is set in the model ``profile`` when the script gives a context window."""

    script: Any = Field(exclude=True, repr=False)

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    @property
    def _llm_type(self) -> str:
        return "scripted-chat-model"

    def _result(self, text: str) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    @staticmethod
    def _chunks(text: str) -> Iterator[ChatGenerationChunk]:
        words = text.split(" ")
        for i, word in enumerate(words):
            yield ChatGenerationChunk(message=AIMessageChunk(content=word if i == 0 else " " + word))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._result(self.script.respond(last_human_text(messages)))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._result(await self.script.arespond(last_human_text(messages)))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield from self._chunks(self.script.respond(last_human_text(messages)))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._chunks(await self.script.arespond(last_human_text(messages))):
            yield chunk


class LangChainHarness(AdapterHarness):
    """Drives :class:`~uniroute_langchain.ChatUniRoute` through the conformance scenarios."""

    name = "langchain"

    def build(self, router: UniRouter, members: Sequence[MemberScript], **settings: Any) -> Any:
        from .chat_models import ChatUniRoute

        chat_models: dict[str, BaseChatModel] = {}
        for m in members:
            model = ScriptedChatModel(script=m)
            if m.context_window is not None:
                model.profile = {"max_input_tokens": m.context_window}
            chat_models[m.name] = model
        return ChatUniRoute(router=router, members=chat_models, **settings)

    def call(self, routed: Any, text: str, mode: str = "sync", /, **call_kwargs: Any) -> Reply:
        if mode == "sync":
            r = routed.invoke(text, **call_kwargs)
            return Reply(str(r.content), r.response_metadata["uniroute"])
        if mode == "async":
            r = asyncio.run(routed.ainvoke(text, **call_kwargs))
            return Reply(str(r.content), r.response_metadata["uniroute"])
        if mode == "stream":
            chunks = list(routed.stream(text, **call_kwargs))
        elif mode == "astream":

            async def collect() -> list[Any]:
                return [c async for c in routed.astream(text, **call_kwargs)]

            chunks = asyncio.run(collect())
        else:
            raise ValueError(f"unknown mode {mode!r}")
        assert chunks, "the stream was empty"
        metas = [c.response_metadata["uniroute"] for c in chunks if "uniroute" in c.response_metadata]
        assert len(metas) == 1, "the routing record rides on the first chunk"
        return Reply("".join(str(c.content) for c in chunks), metas[0])

    def add_model(self, routed: Any, member: MemberScript, **profiling_kwargs: Any) -> Any:
        profiling_kwargs.setdefault("show_progress", False)
        return routed.add_model(member.name, ScriptedChatModel(script=member), member.cost, **profiling_kwargs)

    def remove_model(self, model: Any, name: str) -> Any:
        return model.remove_model(name)
