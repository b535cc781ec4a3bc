"""A LlamaIndex LLM as the judge of a probe set made from your own prompts (``ProbeSet.from_prompts``)."""

from __future__ import annotations

from collections.abc import Callable

from llama_index.core.llms.llm import LLM

__all__ = ["as_judge"]


def as_judge(llm: LLM) -> Callable[[str], str]:
    """``prompt -> reply text`` through ``llm.complete``, for ``ProbeSet.from_prompts(prompts, judge=as_judge(llm))``.

    The judge receives the rubric (question, answer, optional reference) and must reply with ``SCORE: <0-10>``. Use a
    strong model; it is called once per probe per member profiled.
    """
    if not isinstance(llm, LLM):
        raise TypeError(f"as_judge expects a llama_index LLM, got {type(llm).__name__}")

    def judge(prompt: str) -> str:
        return llm.complete(prompt).text

    return judge
