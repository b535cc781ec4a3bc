"""Offline member LLMs for tests, examples and benchmarks of :class:`~uniroute_llamaindex.UniRouteLLM`.

LlamaIndex's ``MockLLM`` (echoes the prompt) and ``MockFunctionCallingLLM`` (calls the tools it is given) cover most
needs; these add what they cannot do:

* :class:`ReplayLLM` — answers as a real model did, from a routing data folder's recorded responses
  (:class:`uniroute_core.replay.ReplayBook`), so whole pipelines run with no network and profiling a replayed
  model reproduces its recorded scores;
* :class:`ScriptedLLM` — answers with a Python function of the prompt, with a settable context window;
* :class:`FailingLLM` — raises on every call (streams: on the first chunk), to exercise fallback;
* :class:`LlamaIndexHarness` — runs the conformance scenarios of :mod:`uniroute_core.testing` against
  ``UniRouteLLM`` (members: :class:`ScriptMemberLLM`, a sync-only ``CustomLLM`` that may hang or fail).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from typing import Any

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
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.llms.mock import MockFunctionCallingLLM

from uniroute_core.data import RoutingData
from uniroute_core.replay import ReplayBook
from uniroute_core.router import UniRouter
from uniroute_core.testing import AdapterHarness, MemberScript, Reply

__all__ = ["ReplayLLM", "ScriptedLLM", "FailingLLM", "last_user_text", "ScriptMemberLLM", "LlamaIndexHarness"]


def last_user_text(messages: Sequence[ChatMessage]) -> str:
    """The last user message's text (the whole question for a single-turn chat); ``""`` when there is none."""
    users = [m for m in messages if m.role == MessageRole.USER]
    return (users[-1].content or "") if users else ""


class _PromptAnsweringLLM(CustomLLM):
    """A CustomLLM whose answer is ``self._answer(prompt)``; a chat is answered on its last user message."""

    context_window: int = Field(default=DEFAULT_CONTEXT_WINDOW, description="Context window reported in metadata.")

    def __init__(self, **data: Any) -> None:
        data.setdefault("messages_to_prompt", last_user_text)
        super().__init__(**data)

    def _answer(self, prompt: str) -> str:
        raise NotImplementedError

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=self.context_window, model_name=self.class_name())

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self._answer(prompt))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        text = self._answer(prompt)

        def gen() -> CompletionResponseGen:
            words = text.split(" ")
            for i, word in enumerate(words):
                delta = word if i == 0 else " " + word
                yield CompletionResponse(text=" ".join(words[: i + 1]), delta=delta)

        return gen()


class ReplayLLM(_PromptAnsweringLLM):
    """Answers exactly as ``model`` did on each prompt of a routing data folder ("The answer is (C).").

    A prompt the folder does not hold raises :class:`uniroute_core.replay.UnknownPromptError` (never an invented
    answer), which :class:`~uniroute_llamaindex.UniRouteLLM` treats as a member failure.
    """

    book: ReplayBook = Field(exclude=True, description="The recorded answers.")
    model: str = Field(description="Which recorded model to replay.")

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        if self.model not in self.book.models:
            raise ValueError(f"model {self.model!r} is not in the replay book; recorded models: {self.book.models}")

    @classmethod
    def from_routing_data(
        cls, source: str | os.PathLike[str] | RoutingData | ReplayBook, model: str, **kwargs: Any
    ) -> ReplayLLM:
        """A replay member for ``model`` from a routing data folder, loaded data, or a ready book (share one
        book between several members of the same folder)."""
        book = source if isinstance(source, ReplayBook) else ReplayBook.from_routing_data(source)
        return cls(book=book, model=model, **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "ReplayLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=self.context_window, model_name=self.model)

    def _answer(self, prompt: str) -> str:
        return self.book.answer(self.model, prompt)


class ScriptedLLM(_PromptAnsweringLLM):
    """Answers ``answer_fn(prompt)``; a chat is answered on its last user message. Counts its calls."""

    answer_fn: Callable[[str], str] = Field(exclude=True, description="prompt -> answer text.")
    calls: int = Field(default=0, description="How many prompts it has answered.")

    @classmethod
    def class_name(cls) -> str:
        return "ScriptedLLM"

    def _answer(self, prompt: str) -> str:
        self.calls += 1
        return self.answer_fn(prompt)


class FailingLLM(MockFunctionCallingLLM):
    """Raises ``error`` on every call, to test fallback; streams raise when their first chunk is pulled.

    ``function_calling`` sets ``metadata.is_function_calling_model`` so it can stand in either kind of member.
    """

    error: Exception = Field(default_factory=lambda: RuntimeError("injected failure"), exclude=True)
    function_calling: bool = Field(default=True)
    context_window: int = Field(default=DEFAULT_CONTEXT_WINDOW)
    _calls: int = PrivateAttr(default=0)

    @classmethod
    def class_name(cls) -> str:
        return "FailingLLM"

    @property
    def calls(self) -> int:
        """How many calls (or stream starts) it has refused."""
        return self._calls

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window,
            is_function_calling_model=self.function_calling,
            model_name=self.class_name(),
        )

    def _fail(self) -> Exception:
        self._calls += 1
        return self.error

    def _failing_stream(self) -> Generator[Any, None, None]:
        raise self._fail()
        yield  # pragma: no cover - makes this a generator

    async def _afailing_stream(self) -> AsyncGenerator[Any, None]:
        raise self._fail()
        yield  # pragma: no cover

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        raise self._fail()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        raise self._fail()

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return self._failing_stream()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        return self._afailing_stream()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        raise self._fail()

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        raise self._fail()

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return self._failing_stream()

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        return self._afailing_stream()


# --------------------------------------------------------------------------- the conformance harness


class ScriptMemberLLM(_PromptAnsweringLLM):
    """A sync-only ``CustomLLM`` member driven by a :class:`uniroute_core.testing.MemberScript` (it may hang or
    fail); its async methods are ``CustomLLM``'s defaults, which the router runs in a worker thread."""

    script: Any = Field(exclude=True, description="The MemberScript saying what this member does.")

    @classmethod
    def class_name(cls) -> str:
        return "ScriptMemberLLM"

    def _answer(self, prompt: str) -> str:
        return self.script.respond(prompt)


class LlamaIndexHarness(AdapterHarness):
    """Drives :class:`~uniroute_llamaindex.UniRouteLLM` through the conformance scenarios (chat calls)."""

    name = "llamaindex"

    def build(self, router: UniRouter, members: Sequence[MemberScript], **settings: Any) -> Any:
        from .base import UniRouteLLM

        llms: dict[str, ScriptMemberLLM] = {}
        for m in members:
            llms[m.name] = llm = ScriptMemberLLM(script=m)
            if m.context_window is not None:
                llm.context_window = m.context_window
        return UniRouteLLM(router=router, members=llms, **settings)

    def call(self, routed: Any, text: str, mode: str = "sync", /, **call_kwargs: Any) -> Reply:
        from .base import UNIROUTE_KEY

        messages = [ChatMessage(role=MessageRole.USER, content=text)]
        if mode == "sync":
            r = routed.chat(messages, **call_kwargs)
            return Reply(r.message.content or "", r.additional_kwargs[UNIROUTE_KEY])
        if mode == "async":
            r = asyncio.run(routed.achat(messages, **call_kwargs))
            return Reply(r.message.content or "", r.additional_kwargs[UNIROUTE_KEY])
        if mode == "stream":
            chunks = list(routed.stream_chat(messages, **call_kwargs))
        elif mode == "astream":

            async def collect() -> list[Any]:
                return [c async for c in await routed.astream_chat(messages, **call_kwargs)]

            chunks = asyncio.run(collect())
        else:
            raise ValueError(f"unknown mode {mode!r}")
        assert chunks, "the stream was empty"
        metas = [c.additional_kwargs[UNIROUTE_KEY] for c in chunks]
        assert all(m == metas[0] for m in metas), "every chunk carries the same routing record"
        return Reply("".join(c.delta or "" for c in chunks), metas[0])

    def add_model(self, routed: Any, member: MemberScript, **profiling_kwargs: Any) -> Any:
        profiling_kwargs.setdefault("show_progress", False)
        return routed.add_model(member.name, ScriptMemberLLM(script=member), member.cost, **profiling_kwargs)

    def remove_model(self, model: Any, name: str) -> Any:
        return model.remove_model(name)
