"""Profiling: run an LLM once on every probe and grade its answers.

Adding an LLM to a UniRoute pool only needs its loss on the representative probes
(Ψ(h) is a per-cluster average of those losses). This module produces those per-probe
scores from any ``prompt -> response text`` function, sync (:func:`profile_answers`,
bounded thread pool) or async (:func:`aprofile_answers`, bounded by a semaphore).

Real LLM endpoints fail: rate limits, timeouts, dropped connections. Each probe is
therefore retried with exponential backoff on transient errors, and a probe that still
fails is recorded as *unknown* (NaN) — not as a wrong answer (0), which would make a
flaky-but-good model look bad. If too many probes fail, the profile would be mostly
guesswork, so :class:`ProfilingError` is raised instead.

This module is framework-neutral: it must not import LangChain or LlamaIndex; the
adapters wrap their chat models into the plain callables used here.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from .probes import ProbeSet

__all__ = ["ProfilingError", "ProfilingResult", "aprofile_answers", "profile_answers"]

logger = logging.getLogger(__name__)

_ERRORS_SHOWN = 3


@dataclass
class ProfilingResult:
    """Per-probe outcome of profiling one LLM.

    Attributes:
        scores: one float per probe in [0, 1]; NaN where the probe failed (the LLM call
            kept failing, or its response could not be graded) so the score is unknown.
        responses: the response text per probe, ``None`` where the call failed.
        errors: probe index -> ``repr`` of the final exception, for every failed probe.
    """

    scores: np.ndarray
    responses: list[str | None]
    errors: dict[int, str]

    @property
    def n_failed(self) -> int:
        """How many probes have no score."""
        return len(self.errors)

    @property
    def failure_rate(self) -> float:
        """Fraction of probes that failed (0.0 for an empty result)."""
        return self.n_failed / len(self.scores) if len(self.scores) else 0.0


class ProfilingError(RuntimeError):
    """Too many probes failed for the profile of an LLM to be trusted.

    ``model_name`` and the partial ``result`` are kept on the exception for inspection.
    """

    def __init__(self, message: str, *, model_name: str, result: ProfilingResult) -> None:
        super().__init__(message)
        self.model_name = model_name
        self.result = result


def _default_is_transient(exc: BaseException) -> bool:
    """Retry anything except errors that signal a bug or bad input rather than bad luck."""
    return not isinstance(exc, (ValueError, TypeError, KeyboardInterrupt))


# --------------------------------------------------------------------------- shared logic


@dataclass(frozen=True)
class _RetryPolicy:
    """When to retry a failed call, and how long to wait first."""

    retries: int
    backoff: float
    is_transient: Callable[[BaseException], bool]

    def delay_before_retry(self, exc: Exception, attempt: int) -> float | None:
        """Seconds to sleep before retrying after failed ``attempt`` (0-based), or None to give up.

        Exponential backoff with jitter (0.5-1x), so concurrent probes hitting the same
        rate limit do not all retry in lockstep.
        """
        if attempt >= self.retries or not self.is_transient(exc):
            return None
        return self.backoff * 2**attempt * random.uniform(0.5, 1.0)


@dataclass(frozen=True)
class _ProbeOutcome:
    response: str | None = None
    score: float = math.nan
    error: str | None = None


def _validated_policy(
    answer: Callable[..., object],
    probes: ProbeSet,
    max_concurrency: int,
    retries: int,
    retry_backoff: float,
    is_transient: Callable[[BaseException], bool] | None,
    max_failure_rate: float,
) -> _RetryPolicy:
    """Validate the arguments shared by both entry points (before any call is made)."""
    if not callable(answer):
        raise TypeError(f"answer must be callable (prompt -> response text), got {type(answer).__name__}")
    if not isinstance(probes, ProbeSet):
        raise TypeError(f"probes must be a ProbeSet, got {type(probes).__name__}")
    if not probes.gradable:
        raise ValueError(
            "probes have no references and no judge, so answers cannot be graded; profiling needs references "
            "or a judge (ProbeSet.from_prompts(prompts, judge=...))"
        )
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
        raise ValueError(f"max_concurrency must be an integer >= 1, got {max_concurrency!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
    if not (math.isfinite(retry_backoff) and retry_backoff >= 0):
        raise ValueError(f"retry_backoff must be a finite number >= 0, got {retry_backoff!r}")
    if not 0.0 <= max_failure_rate <= 1.0:
        raise ValueError(f"max_failure_rate must be in [0, 1], got {max_failure_rate!r}")
    return _RetryPolicy(retries, retry_backoff, is_transient or _default_is_transient)


def _checked_response(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"answer must return the response text as a str, got {type(value).__name__}")
    return value


def _log_retry(model_name: str, index: int, attempt: int, exc: Exception, delay: float) -> None:
    logger.info(
        "%s: probe %d failed (attempt %d: %r); retrying in %.2fs", model_name, index, attempt + 1, exc, delay
    )


def _failed(exc: Exception) -> _ProbeOutcome:
    return _ProbeOutcome(error=repr(exc))


def _grade_outcome(probes: ProbeSet, index: int, response: str) -> _ProbeOutcome:
    """Grade one successful response; a grading error makes the probe unknown, not wrong."""
    try:
        return _ProbeOutcome(response=response, score=probes.grade(index, response))
    except Exception as exc:  # noqa: BLE001 - recorded per probe and reported in ProfilingError
        return _ProbeOutcome(response=response, error=f"grading failed: {exc!r}")


def _progress_bar(total: int, model_name: str, show_progress: bool) -> tqdm:
    return tqdm(total=total, desc=f"Profiling {model_name}", unit="probe", disable=not show_progress)


def _assemble_result(
    outcomes: Sequence[_ProbeOutcome], model_name: str, max_failure_rate: float
) -> ProfilingResult:
    """Collect per-probe outcomes (in probe order) and raise if too many failed."""
    result = ProfilingResult(
        scores=np.array([o.score for o in outcomes], dtype=float),
        responses=[o.response for o in outcomes],
        errors={i: o.error for i, o in enumerate(outcomes) if o.error is not None},
    )
    if result.failure_rate > max_failure_rate:
        distinct = list(dict.fromkeys(result.errors.values()))
        shown = "; ".join(e if len(e) <= 300 else e[:297] + "..." for e in distinct[:_ERRORS_SHOWN])
        more = f" (+{len(distinct) - _ERRORS_SHOWN} other distinct errors)" if len(distinct) > _ERRORS_SHOWN else ""
        raise ProfilingError(
            f"profiling {model_name!r} failed: {result.n_failed} of {len(outcomes)} probes failed "
            f"({result.failure_rate:.0%} > max_failure_rate {max_failure_rate:.0%}). "
            f"Errors: {shown}{more}",
            model_name=model_name,
            result=result,
        )
    if result.n_failed:
        logger.warning("%s: %d of %d probes failed and are unknown (NaN)", model_name, result.n_failed, len(outcomes))
    return result


# --------------------------------------------------------------------------- sync


def _answer_with_retries(
    answer: Callable[[str], str], prompt: str, policy: _RetryPolicy, model_name: str, index: int
) -> str:
    attempt = 0
    while True:
        try:
            return _checked_response(answer(prompt))
        except Exception as exc:
            delay = policy.delay_before_retry(exc, attempt)
            if delay is None:
                raise
            _log_retry(model_name, index, attempt, exc, delay)
            time.sleep(delay)
            attempt += 1


def profile_answers(
    answer: Callable[[str], str],
    probes: ProbeSet,
    *,
    model_name: str = "model",
    max_concurrency: int = 8,
    retries: int = 2,
    retry_backoff: float = 0.5,
    is_transient: Callable[[BaseException], bool] | None = None,
    max_failure_rate: float = 0.5,
    show_progress: bool = True,
    on_progress: Callable[[], object] | None = None,
) -> ProfilingResult:
    """Run ``answer`` on every probe (at most ``max_concurrency`` at once) and grade the responses.

    Args:
        answer: prompt text -> response text, e.g. a wrapped chat model. Called from
            worker threads, so it must be thread-safe.
        probes: the probe set; it must have references.
        model_name: used in the progress bar, log messages and errors.
        max_concurrency: maximum simultaneous calls to ``answer``.
        retries: extra attempts per probe after a transient error.
        retry_backoff: base delay in seconds; retry k waits about ``retry_backoff * 2**k``.
        is_transient: decides whether an exception is worth retrying; by default
            everything except ValueError, TypeError and KeyboardInterrupt.
        max_failure_rate: raise :class:`ProfilingError` when a larger fraction fails.
        show_progress: show a tqdm progress bar.
        on_progress: called once per finished probe (e.g. to advance one bar shared by several models).

    Returns:
        A :class:`ProfilingResult`; failed probes score NaN and are listed in ``errors``.
    """
    policy = _validated_policy(answer, probes, max_concurrency, retries, retry_backoff, is_transient, max_failure_rate)

    def run(index: int) -> _ProbeOutcome:
        try:
            response = _answer_with_retries(answer, probes.prompts[index], policy, model_name, index)
        except Exception as exc:  # noqa: BLE001 - a failed probe is recorded, not fatal
            return _failed(exc)
        return _grade_outcome(probes, index, response)

    outcomes: list[_ProbeOutcome] = [_ProbeOutcome()] * len(probes)
    executor = ThreadPoolExecutor(max_workers=min(max_concurrency, len(probes)), thread_name_prefix="uniroute-profile")
    try:
        with _progress_bar(len(probes), model_name, show_progress) as bar:
            futures = {executor.submit(run, i): i for i in range(len(probes))}
            for future in as_completed(futures):
                outcomes[futures[future]] = future.result()
                bar.update()
                if on_progress is not None:
                    on_progress()
    finally:
        # On an interrupt, drop queued probes rather than waiting for all of them.
        executor.shutdown(wait=False, cancel_futures=True)
    return _assemble_result(outcomes, model_name, max_failure_rate)


# --------------------------------------------------------------------------- async


async def _aanswer_with_retries(
    answer: Callable[[str], Awaitable[str]], prompt: str, policy: _RetryPolicy, model_name: str, index: int
) -> str:
    attempt = 0
    while True:
        try:
            pending = answer(prompt)
            if not inspect.isawaitable(pending):
                raise TypeError(
                    f"answer must be an async function (returning an awaitable), but it returned "
                    f"{type(pending).__name__}; use profile_answers for a sync function"
                )
            return _checked_response(await pending)
        except Exception as exc:
            delay = policy.delay_before_retry(exc, attempt)
            if delay is None:
                raise
            _log_retry(model_name, index, attempt, exc, delay)
            await asyncio.sleep(delay)
            attempt += 1


async def aprofile_answers(
    answer: Callable[[str], Awaitable[str]],
    probes: ProbeSet,
    *,
    model_name: str = "model",
    max_concurrency: int = 8,
    retries: int = 2,
    retry_backoff: float = 0.5,
    is_transient: Callable[[BaseException], bool] | None = None,
    max_failure_rate: float = 0.5,
    show_progress: bool = True,
    on_progress: Callable[[], object] | None = None,
) -> ProfilingResult:
    """Async :func:`profile_answers`: ``answer`` is an async function, bounded by a semaphore.

    Same arguments, retries, grading and failure handling as :func:`profile_answers`.
    Grading runs in a worker thread so a slow grader (e.g. an LLM judge) does not block
    the event loop. Cancelling the caller cancels the outstanding probes.
    """
    policy = _validated_policy(answer, probes, max_concurrency, retries, retry_backoff, is_transient, max_failure_rate)
    semaphore = asyncio.Semaphore(max_concurrency)

    async def run(index: int) -> tuple[int, _ProbeOutcome]:
        async with semaphore:
            try:
                response = await _aanswer_with_retries(answer, probes.prompts[index], policy, model_name, index)
            except Exception as exc:  # noqa: BLE001 - a failed probe is recorded, not fatal
                return index, _failed(exc)
            return index, await asyncio.to_thread(_grade_outcome, probes, index, response)

    outcomes: list[_ProbeOutcome] = [_ProbeOutcome()] * len(probes)
    tasks = [asyncio.create_task(run(i)) for i in range(len(probes))]
    try:
        with _progress_bar(len(probes), model_name, show_progress) as bar:
            for next_done in asyncio.as_completed(tasks):
                index, outcome = await next_done
                outcomes[index] = outcome
                bar.update()
                if on_progress is not None:
                    on_progress()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return _assemble_result(outcomes, model_name, max_failure_rate)
