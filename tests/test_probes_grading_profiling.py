"""Behaviour of the framework-neutral probing pieces: graders, probe sets and profiling."""

from __future__ import annotations

import asyncio
import csv
import gzip
import json
import math
import pickle
import threading
import time
from collections.abc import Collection
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from uniroute_core import profiling
from uniroute_core.grading import (
    extract_choice_letter,
    grade_exact,
    grade_multiple_choice,
    grade_numeric,
    make_llm_judge,
    make_numeric_grader,
    resolve_grader,
)
from uniroute_core.probes import ProbeSet
from uniroute_core.profiling import ProfilingError, aprofile_answers, profile_answers

# ============================================================================ grading


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("The answer is (C).", "C"),
        ("answer: C", "C"),
        ("C.", "C"),
        ("**C**", "C"),
        ("(C)", "C"),
        ("C) foo", "C"),
        ("Answer: **C**", "C"),
        ("C", "C"),
        ("c", "C"),
        ("  C:  ", "C"),
        ("I think the correct option is C because it fits.", "C"),
        ("A good answer is B.", "B"),
        ("Let's think step by step. Option A is wrong... The answer is (J).", "J"),
        ("The answer is option G", "G"),
        ("The final answer is: $\\boxed{D}$", "D"),
        ("Answer:\n\nE", "E"),
        ("The best choice is d.", "D"),
        ("Comparing the options, **H** fits best.", "H"),
        ("Only (F) satisfies both constraints.", "F"),
        ("answer is (c) because", "C"),
    ],
)
def test_extract_choice_letter_finds_the_committed_option(text: str, letter: str) -> None:
    assert extract_choice_letter(text) == letter


@pytest.mark.parametrize(
    "text",
    [
        "",
        "I don't know.",
        "A good answer would need more context.",  # the article "A" is not option A
        "I believe none of them is right.",  # the pronoun "I" is not option I
        "the answer is a bit unclear",
        "The answer is not (A) but maybe (B)",  # two distinct parenthesised letters: ambiguous
        "(i) first point (ii) second point",  # list markers
        "a) first item\nb) second item",
        "K",  # outside A-J
    ],
)
def test_extract_choice_letter_returns_none_without_a_clear_answer(text: str) -> None:
    assert extract_choice_letter(text) is None


def test_grade_multiple_choice_compares_letters() -> None:
    assert grade_multiple_choice("The answer is (C).", "C") == 1.0
    assert grade_multiple_choice("The answer is (C).", " c ") == 1.0
    assert grade_multiple_choice("The answer is (C).", "D") == 0.0
    assert grade_multiple_choice("no idea", "C") == 0.0
    with pytest.raises(ValueError, match="single option letter"):
        grade_multiple_choice("C", "42")


@pytest.mark.parametrize(
    ("response", "reference", "score"),
    [
        ("Paris", "paris", 1.0),
        ('"Paris."', "Paris", 1.0),
        ("  New   York  ", "new york", 1.0),
        ("**Paris**", "Paris", 1.0),
        ("f(x)", "F(X)", 1.0),
        ("Paris, France", "Paris", 0.0),
        ("Lyon", "Paris", 0.0),
    ],
)
def test_grade_exact_normalises(response: str, reference: str, score: float) -> None:
    assert grade_exact(response, reference) == score


@pytest.mark.parametrize(
    ("response", "reference", "score"),
    [
        ("The total is 1,234.5", "1234.5", 1.0),
        ("-3", "-3", 1.0),
        ("about 2.5e3 units", "2500", 1.0),
        ("It costs $12", "12", 1.0),
        ("12%", "12", 1.0),
        ("First 7, then 3*2=6, so the result is 42.", "42", 1.0),  # the last number counts
        ("pages 10-12", "12", 1.0),  # a hyphen between numbers is not a minus sign
        ("x = 5.", "5", 1.0),
        ("The answer is 41", "42", 0.0),
        ("no number here", "42", 0.0),
    ],
)
def test_grade_numeric_uses_the_last_number(response: str, reference: str, score: float) -> None:
    assert grade_numeric(response, reference) == score


def test_numeric_grader_tolerances_and_bad_reference() -> None:
    loose = make_numeric_grader(rel_tol=0.01)
    assert loose("3.14", "3.1416") == 1.0
    assert grade_numeric("3.14", "3.1416") == 0.0
    assert grade_numeric("$1,234", "$1,234") == 1.0
    with pytest.raises(ValueError, match="not a number"):
        grade_numeric("3", "three")


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("YES", 1.0),
        ("no", 0.0),
        ("Yes, the response is right.", 1.0),
        ("**NO**", 0.0),
        ("Incorrect.", 0.0),
        ("After comparing both, my verdict: YES", 1.0),
        ("0.7", 0.7),
        ("Score: 8", 0.8),
        ("8/10", 0.8),
    ],
)
def test_llm_judge_parses_verdicts_and_scores(reply: str, score: float) -> None:
    prompts: list[str] = []

    def judge(prompt: str) -> str:
        prompts.append(prompt)
        return reply

    grader = make_llm_judge(judge)
    assert grader("Paris is the capital.", "Paris") == pytest.approx(score)
    assert "Paris is the capital." in prompts[0] and "Paris" in prompts[0]


def test_llm_judge_custom_template_and_errors() -> None:
    seen: list[str] = []
    grader = make_llm_judge(lambda p: seen.append(p) or "YES", template="R={response} / G={reference}")
    assert grader("x {braces} y", "z") == 1.0
    assert seen == ["R=x {braces} y / G=z"]

    with pytest.raises(ValueError, match="could not parse a score"):
        make_llm_judge(lambda p: "I cannot decide")("a", "b")
    with pytest.raises(ValueError, match="could not parse a score"):
        make_llm_judge(lambda p: "42")("a", "b")
    with pytest.raises(ValueError, match=r"\{response\} and \{reference\}"):
        make_llm_judge(lambda p: "YES", template="Only {response}")
    with pytest.raises(TypeError):
        make_llm_judge("not callable")  # type: ignore[arg-type]


def test_resolve_grader_names_callables_and_errors() -> None:
    assert resolve_grader("multiple_choice")("answer: B", "B") == 1.0
    assert resolve_grader("exact")("Paris.", "paris") == 1.0
    assert resolve_grader("numeric")("= 4", "4") == 1.0
    assert resolve_grader(lambda r, ref: 0.25)("x", "y") == 0.25

    with pytest.raises(ValueError, match="multiple_choice.*exact.*numeric"):
        resolve_grader("fuzzy")
    with pytest.raises(TypeError):
        resolve_grader(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1.5"):
        resolve_grader(lambda r, ref: 1.5)("x", "y")
    with pytest.raises(ValueError, match="nan"):
        resolve_grader(lambda r, ref: float("nan"))("x", "y")
    with pytest.raises(ValueError, match="-0.1"):
        resolve_grader(lambda r, ref: -0.1)("x", "y")


# ============================================================================ ProbeSet


def test_probeset_accepts_lists_and_grades() -> None:
    probes = ProbeSet(prompts=["Q1?", "Q2?"], references=["A", "b"], prompt_ids=["p1", "p2"])
    assert probes.prompts == ("Q1?", "Q2?") and probes.references == ("A", "b")
    assert probes.prompt_ids == ("p1", "p2")
    assert len(probes) == 2
    assert probes.grader_name == "multiple_choice"
    assert probes.grade(0, "The answer is (A).") == 1.0
    assert probes.grade(1, "B") == 1.0
    assert probes.grade(1, "C") == 0.0
    assert probes.grader_fn("(A)", "A") == 1.0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"prompts": []}, ValueError, "at least one prompt"),
        ({"prompts": ["ok", "  \n"]}, ValueError, "index 1"),
        ({"prompts": "just one string"}, TypeError, "sequence of strings"),
        ({"prompts": ["ok", 3]}, TypeError, r"prompts\[1\]"),
        ({"prompts": ["a", "b"], "references": ["A"]}, ValueError, "2 prompts but 1 references"),
        ({"prompts": ["a", "b"], "prompt_ids": ["x"]}, ValueError, "2 prompts but 1 prompt_ids"),
        ({"prompts": ["a", "b", "c"], "prompt_ids": ["x", "y", "x"]}, ValueError, "duplicated: 'x'"),
        ({"prompts": ["a"], "references": ["42"]}, ValueError, "index 0 cannot be graded by 'multiple_choice'"),
        ({"prompts": ["a"], "references": ["x"], "grader": "numeric"}, ValueError, "not a number"),
        ({"prompts": ["a"], "grader": "fuzzy"}, ValueError, "unknown grader"),
        ({"prompts": ["a"], "grader": 3}, TypeError, "grader must be"),
    ],
)
def test_probeset_validation(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ProbeSet(**kwargs)


def test_probeset_grade_needs_references() -> None:
    with pytest.raises(ValueError, match="no references"):
        ProbeSet(prompts=["q"]).grade(0, "A")


def test_probeset_dict_round_trip() -> None:
    probes = ProbeSet(prompts=["1+1?", "2*3?"], references=[2, "6"], grader="numeric", prompt_ids=["a", "b"])
    data = json.loads(json.dumps(probes.to_dict()))
    assert data["grader"] == "numeric" and data["references"] == ["2", "6"]
    assert ProbeSet.from_dict(data) == probes


def test_probeset_pickles_with_builtin_and_module_level_graders() -> None:
    named = ProbeSet(prompts=["q"], references=["A"])
    module_level = ProbeSet(prompts=["q"], references=["x"], grader=grade_exact)
    for probes in (named, module_level):
        restored = pickle.loads(pickle.dumps(probes))
        assert restored == probes
        assert restored.grade(0, probes.references[0]) == 1.0


def test_probeset_dict_with_callable_grader_needs_grader_back() -> None:
    def half(response: str, reference: str) -> float:
        return 0.5

    probes = ProbeSet(prompts=["q"], references=["r"], grader=half)
    assert probes.grader_name is None
    data = probes.to_dict()
    assert data["grader"] is None
    with pytest.raises(ValueError, match="pass grader="):
        ProbeSet.from_dict(data)
    restored = ProbeSet.from_dict(data, grader=half)
    assert restored.grade(0, "anything") == 0.5


def _write_prompts(folder: Path, rows: list[dict[str, str]], columns: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / "prompts.csv.gz", "wt", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return folder


TRICKY_PROMPTS = [
    'He said, "pick one":\nA. yes\nB. no',
    "Commas, commas, and more commas?\r\nA. 1\nB. 2",
    'Quotes "inside" and \'single\' ones\n\n\nA. x\nB. y',
    "Plain question\nA. p\nB. q",
]


def _tiny_folder(tmp_path: Path) -> Path:
    rows = [
        {"prompt_id": f"p{i}", "category": "math" if i < 2 else "", "split_hint": "test" if i % 2 else "train",
         "prompt": prompt, "reference": "AB"[i % 2]}
        for i, prompt in enumerate(TRICKY_PROMPTS)
    ]
    return _write_prompts(tmp_path / "tiny", rows, ["prompt_id", "category", "split_hint", "prompt", "reference"])


def test_from_routing_data_reads_rfc4180_prompts(tmp_path: Path) -> None:
    probes = ProbeSet.from_routing_data(_tiny_folder(tmp_path))
    assert probes.prompts == tuple(TRICKY_PROMPTS)
    assert probes.references == ("A", "B", "A", "B")
    assert probes.prompt_ids == ("p0", "p1", "p2", "p3")
    assert probes.grader_name == "multiple_choice"


def test_from_routing_data_split_and_sampling(tmp_path: Path) -> None:
    folder = _tiny_folder(tmp_path)
    assert ProbeSet.from_routing_data(folder, split="test").prompt_ids == ("p1", "p3")
    assert len(ProbeSet.from_routing_data(folder, split="all")) == 4

    drawn = ProbeSet.from_routing_data(folder, n=2, seed=3)
    assert len(drawn) == 2
    assert ProbeSet.from_routing_data(folder, n=2, seed=3) == drawn  # reproducible
    # stratified: one prompt from "math" (p0, p1) and one from the blank category (p2, p3)
    assert len({pid for pid in drawn.prompt_ids if pid in ("p0", "p1")}) == 1

    with pytest.raises(ValueError, match="split_hint 'validation'"):
        ProbeSet.from_routing_data(folder, split="validation")
    with pytest.raises(ValueError, match="only 4"):
        ProbeSet.from_routing_data(folder, n=5)


def test_from_routing_data_without_reference_column(tmp_path: Path) -> None:
    folder = _write_prompts(
        tmp_path / "noref",
        [{"prompt_id": "p0", "category": "", "split_hint": "", "prompt": "Q?"}],
        ["prompt_id", "category", "split_hint", "prompt"],
    )
    with pytest.raises(ValueError, match="reference") as excinfo:
        ProbeSet.from_routing_data(folder)
    message = str(excinfo.value)
    assert str(folder) in message and "prompt_id, category, split_hint, prompt" in message

    with pytest.raises(FileNotFoundError, match="prompts.csv.gz"):
        ProbeSet.from_routing_data(tmp_path / "missing")


def test_from_routing_data_on_bundled_mmlu_pro() -> None:
    probes = ProbeSet.from_routing_data("mmlu_pro", n=300, seed=0)
    assert len(probes) == 300
    assert len(set(probes.prompt_ids or ())) == 300
    assert set(probes.references or ()) <= set("ABCDEFGHIJ")
    assert all(p.strip() for p in probes.prompts)
    assert ProbeSet.from_routing_data("mmlu_pro", n=300, seed=0).prompt_ids == probes.prompt_ids


# ============================================================================ profiling

PROBES = ProbeSet(prompts=[f"question {i}" for i in range(10)], references=["ABCDEFGHIJ"[i] for i in range(10)])


def _index(prompt: str) -> int:
    return int(prompt.split()[-1])


class Flaky:
    """Fails the first ``failures`` calls per prompt with a transient error, then answers correctly."""

    def __init__(self, failures: int, always_fail: Collection[int] = (), exc: type[Exception] = ConnectionError):
        self.failures = failures
        self.always_fail = always_fail
        self.exc = exc
        self.calls: dict[int, int] = {}
        self.lock = threading.Lock()

    def __call__(self, prompt: str) -> str:
        i = _index(prompt)
        with self.lock:
            self.calls[i] = self.calls.get(i, 0) + 1
            attempt = self.calls[i]
        if i in self.always_fail or attempt <= self.failures:
            raise self.exc(f"boom on probe {i}")
        return f"The answer is ({'ABCDEFGHIJ'[i]})." if i % 2 == 0 else "The answer is (A)."


def test_profile_retries_transient_errors_then_grades() -> None:
    answer = Flaky(failures=2)
    result = profile_answers(answer, PROBES, retries=2, retry_backoff=0, show_progress=False)
    assert all(count == 3 for count in answer.calls.values())
    assert result.errors == {} and result.n_failed == 0 and result.failure_rate == 0
    # Flaky answers even probes right and odd ones wrong ("A")
    assert result.scores.tolist() == [1.0 if i % 2 == 0 else 0.0 for i in range(10)]
    assert result.responses[4] == "The answer is (E)."


def test_profile_marks_persistent_failures_unknown_not_wrong() -> None:
    answer = Flaky(failures=0, always_fail={3, 7})
    result = profile_answers(answer, PROBES, retries=1, retry_backoff=0, show_progress=False)
    assert set(result.errors) == {3, 7}
    assert "ConnectionError" in result.errors[3] and "boom on probe 3" in result.errors[3]
    assert math.isnan(result.scores[3]) and math.isnan(result.scores[7])
    assert result.responses[3] is None
    assert np.nansum(result.scores) == 5.0  # the even probes are answered right
    assert result.n_failed == 2 and result.failure_rate == pytest.approx(0.2)
    assert answer.calls[3] == 2  # one retry


def test_profile_backs_off_exponentially(monkeypatch: pytest.MonkeyPatch) -> None:
    delays: list[float] = []
    monkeypatch.setattr(profiling, "time", SimpleNamespace(sleep=delays.append))
    probes = ProbeSet(prompts=["question 0"], references=["A"])
    result = profile_answers(Flaky(failures=3), probes, retries=3, retry_backoff=1.0, show_progress=False)
    assert result.scores.tolist() == [1.0]
    assert len(delays) == 3
    for k, delay in enumerate(delays):  # retry_backoff * 2**k, with 0.5-1x jitter
        assert 0.5 * 2**k <= delay <= 2**k


def test_profile_does_not_retry_non_transient_errors() -> None:
    answer = Flaky(failures=1, exc=ValueError)
    result = profile_answers(answer, PROBES, retries=3, retry_backoff=0, max_failure_rate=1.0, show_progress=False)
    assert all(count == 1 for count in answer.calls.values())
    assert result.n_failed == 10 and np.isnan(result.scores).all()

    custom = Flaky(failures=1, exc=ValueError)
    result = profile_answers(
        custom, PROBES, retries=1, retry_backoff=0, is_transient=lambda e: True, show_progress=False
    )
    assert result.n_failed == 0


def test_profile_raises_when_most_probes_fail() -> None:
    answer = Flaky(failures=0, always_fail=set(range(6)))
    with pytest.raises(ProfilingError, match="'gpt-flaky'.*6 of 10") as excinfo:
        profile_answers(answer, PROBES, model_name="gpt-flaky", retries=0, show_progress=False)
    assert "boom on probe" in str(excinfo.value)
    assert excinfo.value.result.n_failed == 6
    # exactly at the threshold is still accepted
    result = profile_answers(answer, PROBES, retries=0, max_failure_rate=0.6, show_progress=False)
    assert result.n_failed == 6


def test_profile_grading_errors_are_unknown() -> None:
    def bad_grader(response: str, reference: str) -> float:
        return 2.0

    probes = ProbeSet(prompts=["question 0", "question 1"], references=["A", "B"], grader=bad_grader)
    with pytest.raises(ProfilingError, match="grading failed.*2.0"):
        profile_answers(lambda p: "A", probes, show_progress=False)


def test_profile_respects_max_concurrency() -> None:
    lock = threading.Lock()
    active = peak = 0

    def slow(prompt: str) -> str:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.02)
        with lock:
            active -= 1
        return "A"

    probes = ProbeSet(prompts=[f"question {i}" for i in range(12)], references=["A"] * 12)
    result = profile_answers(slow, probes, max_concurrency=3, show_progress=False)
    assert peak == 3
    assert result.scores.tolist() == [1.0] * 12


def test_profile_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="no references"):
        profile_answers(lambda p: "A", ProbeSet(prompts=["q"]), show_progress=False)
    with pytest.raises(ValueError, match="max_concurrency"):
        profile_answers(lambda p: "A", PROBES, max_concurrency=0, show_progress=False)
    with pytest.raises(ValueError, match="retries"):
        profile_answers(lambda p: "A", PROBES, retries=-1, show_progress=False)


# ---------------------------------------------------------------------------- async


class AsyncFlaky(Flaky):
    async def __call__(self, prompt: str) -> str:  # type: ignore[override]
        await asyncio.sleep(0)
        return Flaky.__call__(self, prompt)


async def test_aprofile_retries_and_grades() -> None:
    answer = AsyncFlaky(failures=2)
    result = await aprofile_answers(answer, PROBES, retries=2, retry_backoff=0, show_progress=False)
    assert all(count == 3 for count in answer.calls.values())
    assert result.scores.tolist() == [1.0 if i % 2 == 0 else 0.0 for i in range(10)]


async def test_aprofile_persistent_failures_and_error() -> None:
    result = await aprofile_answers(
        AsyncFlaky(failures=0, always_fail={1}), PROBES, retries=1, retry_backoff=0, show_progress=False
    )
    assert set(result.errors) == {1} and math.isnan(result.scores[1]) and result.responses[1] is None

    with pytest.raises(ProfilingError, match="'async-model'.*10 of 10"):
        await aprofile_answers(
            AsyncFlaky(failures=0, always_fail=set(range(10))), PROBES, model_name="async-model",
            retries=0, show_progress=False,
        )


async def test_aprofile_respects_max_concurrency() -> None:
    active = peak = 0

    async def slow(prompt: str) -> str:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        return "A"

    probes = ProbeSet(prompts=[f"question {i}" for i in range(12)], references=["A"] * 12)
    result = await aprofile_answers(slow, probes, max_concurrency=4, show_progress=False)
    assert peak == 4
    assert result.n_failed == 0


async def test_aprofile_sync_answer_is_a_clear_error() -> None:
    with pytest.raises(ProfilingError, match="async function"):
        await aprofile_answers(lambda p: "A", PROBES, show_progress=False)  # type: ignore[arg-type]
