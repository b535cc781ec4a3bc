"""Call a member LLM's own implementation without its LlamaIndex event wrappers.

``UniRouteLLM``'s public methods carry LlamaIndex's ``llm_chat_callback`` / ``llm_completion_callback`` wrappers, so a
routed call emits its LLM events (instrumentation ``LLMChatStartEvent``…, legacy ``CBEventType.LLM``) once, as the
router. If the router then called ``member.chat(...)``, the member's identical wrappers would emit the same events a
second time. So the router calls the function *inside* those wrappers (and inside the ``dispatcher.span`` wrapper
that LlamaIndex adds around them).

LlamaIndex keeps no reference to the inner function other than the wrapper's closure cell ``f``. The wrappers are
recognised by their code objects, taken at import time from LlamaIndex's own decorators (so a changed decorator body
is still recognised); a method wearing any other decorator is called as is (correct, only possibly with the
member's own events too). Tests check that one routed call fires one event.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from typing import Any

from llama_index.core.instrumentation.dispatcher import DISPATCHER_SPAN_DECORATED_ATTR
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback

__all__ = ["undecorated_method"]


def _callback_wrapper_codes() -> frozenset[types.CodeType]:
    """The code objects of every wrapper LlamaIndex's LLM callback decorators produce (sync/async, first/re-wrap)."""
    codes: set[types.CodeType] = set()
    for decorator in (llm_chat_callback, llm_completion_callback):

        def sync_probe(self: Any, arg: Any, **kwargs: Any) -> None:
            return None

        async def async_probe(self: Any, arg: Any, **kwargs: Any) -> None:
            return None

        for probe in (sync_probe, async_probe):
            first = decorator()(probe)  # the event-emitting wrapper; marks ``probe`` as wrapped
            again = decorator()(probe)  # the pass-through wrapper used for an already wrapped function
            codes.update((first.__code__, again.__code__))
    return frozenset(c for c in codes if "f" in c.co_freevars)


_WRAPPER_CODES = _callback_wrapper_codes()


def _inner_function(fn: Any) -> Any:
    """Strip dispatcher-span and LLM-callback wrappers from a class attribute; other decorators are kept."""
    for _ in range(16):  # wrappers nest a few levels at most; bounded so a cycle cannot hang
        if hasattr(fn, DISPATCHER_SPAN_DECORATED_ATTR) and callable(getattr(fn, "__wrapped__", None)):
            fn = fn.__wrapped__
        elif getattr(fn, "__code__", None) in _WRAPPER_CODES:
            fn = fn.__closure__[fn.__code__.co_freevars.index("f")].cell_contents
        else:
            return fn
    return fn


def undecorated_method(llm: Any, name: str) -> Callable[..., Any]:
    """``llm.<name>`` bound to ``llm`` but without LlamaIndex's span and LLM-event wrappers.

    Falls back to the ordinary bound method when the attribute is not a plain function underneath (e.g. set on
    the instance, or wrapped by another library).
    """
    raw = inspect.getattr_static(type(llm), name, None)
    if raw is None or name in vars(llm):
        return getattr(llm, name)
    inner = _inner_function(raw)
    if inner is raw or not isinstance(inner, types.FunctionType):
        return getattr(llm, name)
    return types.MethodType(inner, llm)
