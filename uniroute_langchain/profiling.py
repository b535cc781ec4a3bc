"""Profile a LangChain chat model on a probe set: the framework side of "one function call to add a model".

The grading, retries, concurrency bound, progress bar and failure policy are the core's
(:func:`uniroute_core.profile_answers`); this module only turns a chat model into a ``prompt -> text`` function.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from langchain_core.language_models import BaseChatModel

from uniroute_core.probes import ProbeSet
from uniroute_core.profiling import aprofile_answers, profile_answers

from ._messages import message_text

__all__ = ["profile_model", "aprofile_model", "answer_function", "async_answer_function", "model_label", "as_judge"]


def model_label(chat_model: BaseChatModel) -> str:
    """A readable name for progress bars and errors: the model's ``model_name`` / ``model``, else its class."""
    for attribute in ("model_name", "model", "model_id"):
        value = getattr(chat_model, attribute, None)
        if isinstance(value, str) and value:
            return value
    return type(chat_model).__name__


def answer_function(chat_model: BaseChatModel) -> Callable[[str], str]:
    """``prompt -> response text`` by invoking the chat model with the prompt as one human message."""

    def answer(prompt: str) -> str:
        return message_text(chat_model.invoke(prompt))

    return answer


def async_answer_function(chat_model: BaseChatModel) -> Callable[[str], Awaitable[str]]:
    """Async :func:`answer_function`."""

    async def answer(prompt: str) -> str:
        return message_text(await chat_model.ainvoke(prompt))

    return answer


def profile_model(
    chat_model: BaseChatModel, probe_set: ProbeSet, *, max_concurrency: int = 8, **profiling_kwargs: Any
) -> np.ndarray:
    """Run ``chat_model`` on every probe and grade it: one score per probe in [0, 1], NaN where the call failed.

    Nothing is added to any router: pass the scores to ``router.add_model(name, cost, scores)``, or use
    :meth:`ChatUniRoute.add_model` to do both. ``profiling_kwargs`` go to :func:`uniroute_core.profile_answers`
    (``retries``, ``max_failure_rate``, ``show_progress``, ``model_name``...); mostly-failing models raise
    :class:`uniroute_core.ProfilingError`.
    """
    profiling_kwargs.setdefault("model_name", model_label(chat_model))
    result = profile_answers(
        answer_function(chat_model), probe_set, max_concurrency=max_concurrency, **profiling_kwargs
    )
    return result.scores


async def aprofile_model(
    chat_model: BaseChatModel, probe_set: ProbeSet, *, max_concurrency: int = 8, **profiling_kwargs: Any
) -> np.ndarray:
    """Async :func:`profile_model` (calls ``ainvoke``, at most ``max_concurrency`` at once)."""
    profiling_kwargs.setdefault("model_name", model_label(chat_model))
    result = await aprofile_answers(
        async_answer_function(chat_model), probe_set, max_concurrency=max_concurrency, **profiling_kwargs
    )
    return result.scores


def as_judge(chat_model: BaseChatModel) -> Callable[[str], str]:
    """A LangChain chat model as the judge of ``ProbeSet.from_prompts(prompts, judge=as_judge(chat))``.

    The judge receives the rubric (question, answer, optional reference) as one human message and must reply with
    ``SCORE: <0-10>``. Use a strong model; it is called once per probe per member profiled.
    """
    if not isinstance(chat_model, BaseChatModel):
        raise TypeError(f"as_judge expects a LangChain BaseChatModel, got {type(chat_model).__name__}")
    return answer_function(chat_model)
