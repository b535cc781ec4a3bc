"""Probe sets from your own prompts, graded by an LLM judge that sees the question; refitting on your prompts."""

from __future__ import annotations

import asyncio
import math
import re
import threading

import numpy as np
import pytest

from uniroute_core import ProbeSet, UniRouter
from uniroute_core.delegation import add_profiled_model
from uniroute_core.grading import JudgeGrader, parse_judge_score
from uniroute_core.profiling import aprofile_answers, profile_answers

QUESTIONS = [f"What is {a} plus {b}?" for a, b in [(2, 2), (3, 4), (10, 5), (7, 8), (1, 1), (6, 6)]]


def truth(question: str) -> int:
    a, b = map(int, re.findall(r"\d+", question))
    return a + b


class ScriptedJudge:
    """A judge that reads the question and the answer out of the rubric and scores 10 when the sum is right."""

    def __init__(self, reply_for_wrong: str = "SCORE: 0") -> None:
        self.calls: list[str] = []
        self.reply_for_wrong = reply_for_wrong
        self.lock = threading.Lock()

    def __call__(self, prompt: str) -> str:
        with self.lock:
            self.calls.append(prompt)
        if "Answer to grade:" not in prompt:  # asked to answer the question itself (pseudo-reference)
            return f"The answer is {truth(prompt)}."
        question = prompt.split("Question:\n", 1)[1].split("\n", 1)[0]
        answer = prompt.split("Answer to grade:\n", 1)[1].split("\n\nScore the answer", 1)[0]
        if "garble" in answer:
            return "I cannot decide."
        if "explode" in answer:
            raise ConnectionError("judge down")
        ok = str(truth(question)) in answer
        return "Looks right.\nSCORE: 10" if ok else self.reply_for_wrong


def good_member(question: str) -> str:
    return f"It is {truth(question)}."


def wrong_member(question: str) -> str:
    return "It is 99."


def test_judge_sees_question_and_answer_and_scores_in_unit_interval():
    judge = ScriptedJudge()
    probes = ProbeSet.from_prompts(QUESTIONS, judge=judge)
    assert probes.gradable and probes.judged and probes.references is None
    assert probes.grade(1, "It is 7.") == 1.0
    assert probes.grade(1, "It is 8.") == 0.0
    assert "What is 3 plus 4?" in judge.calls[0] and "It is 7." in judge.calls[0]


def test_profiling_with_a_judge_costs_one_call_per_probe_and_failures_are_nan():
    judge = ScriptedJudge()
    probes = ProbeSet.from_prompts(QUESTIONS, judge=judge)

    def flaky(question: str) -> str:
        if "7 plus 8" in question:
            return "garble"  # the judge cannot read a score → unknown
        if "1 plus 1" in question:
            return "explode"  # the judge call fails → unknown
        return good_member(question)

    result = profile_answers(flaky, probes, model_name="flaky", show_progress=False)
    assert len(judge.calls) == len(QUESTIONS)  # one judge call per probe answered
    assert math.isnan(result.scores[3]) and math.isnan(result.scores[4])
    assert np.nansum(result.scores) == 4.0 and set(result.errors) == {3, 4}
    wrong = profile_answers(wrong_member, probes, model_name="wrong", show_progress=False)
    assert np.all(wrong.scores == 0.0)


def test_async_judge_in_async_profiling():
    calls = []

    async def ajudge(prompt: str) -> str:
        calls.append(prompt)
        await asyncio.sleep(0)
        return ScriptedJudge()(prompt)

    async def amember(question: str) -> str:
        return good_member(question)

    probes = ProbeSet.from_prompts(QUESTIONS, judge=ajudge)
    result = asyncio.run(aprofile_answers(amember, probes, model_name="a", show_progress=False))
    assert result.scores.tolist() == [1.0] * len(QUESTIONS) and len(calls) == len(QUESTIONS)


def test_judge_references_are_asked_once_and_shown_when_grading():
    judge = ScriptedJudge()
    probes = ProbeSet.from_prompts(QUESTIONS + [QUESTIONS[0]], judge=judge, judge_references=True)
    assert len(probes) == len(QUESTIONS)  # the duplicate is dropped
    assert len(judge.calls) == len(QUESTIONS)  # one answer per distinct prompt
    assert probes.references[2] == "The answer is 15."  # type: ignore[index]
    probes.grade(2, "It is 15.")
    assert "The answer is 15." in judge.calls[-1] and "reference answer" in judge.calls[-1]


def test_sample_of_prompts_and_given_references():
    judge = ScriptedJudge()
    probes = ProbeSet.from_prompts(QUESTIONS, judge=judge, n=3, seed=1, references=[str(truth(q)) for q in QUESTIONS])
    assert len(probes) == 3 and set(probes.prompts) <= set(QUESTIONS)
    assert all(r == str(truth(q)) for q, r in zip(probes.prompts, probes.references))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only 6 distinct prompts"):
        ProbeSet.from_prompts(QUESTIONS, judge=judge, n=7)
    with pytest.raises(ValueError, match="6 prompts but 2 references"):
        ProbeSet.from_prompts(QUESTIONS, judge=judge, references=["1", "2"])


@pytest.mark.parametrize(
    "reply, score",
    [
        ("SCORE: 7", 0.7),
        ("Reasoning...\n**Score:** 10", 1.0),
        ("score = 3/5", 0.6),
        ("SCORE: 2\nSCORE: 9", 0.9),
        ("YES", 1.0),
        ("**7**", 0.7),
        ("3/4", 0.75),
    ],
)
def test_parse_judge_score(reply, score):
    assert parse_judge_score(reply) == pytest.approx(score)


@pytest.mark.parametrize("reply", ["SCORE: 12", "no idea", "", "score: 4/0", "No problem, it is right.", "11"])
def test_parse_judge_score_refuses_what_it_cannot_read(reply):
    with pytest.raises(ValueError):
        parse_judge_score(reply)


def test_framework_models_and_bad_rubrics_are_refused_clearly():
    class LooksLikeAChatModel:
        def invoke(self, x):  # noqa: ANN001, ANN201
            return x

    with pytest.raises(TypeError, match="uniroute_langchain.as_judge"):
        ProbeSet.from_prompts(QUESTIONS, judge=LooksLikeAChatModel())
    with pytest.raises(TypeError, match="callable"):
        ProbeSet.from_prompts(QUESTIONS, judge=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="question"):
        JudgeGrader(ScriptedJudge(), rubric="Grade {response}")
    with pytest.raises(TypeError, match="needs the question"):
        JudgeGrader(ScriptedJudge())("answer", "ref")


def test_judged_probe_set_profiles_members_into_a_router(embedder):
    """The whole path: own prompts → judge-graded probes → two members profiled by their answers → routing."""
    judge = ScriptedJudge()
    router = UniRouter(embedder=embedder, n_clusters=1, show_progress=False).fit(QUESTIONS)
    router.set_probes(ProbeSet.from_prompts(QUESTIONS, judge=judge))
    add_profiled_model(router, "good", good_member, cost=10.0, show_progress=False)
    add_profiled_model(router, "wrong", wrong_member, cost=1.0, show_progress=False)
    assert router.profiles["good"].overall_quality == 1.0 and router.profiles["wrong"].overall_quality == 0.0
    assert router.route(["What is 5 plus 5?"], lam=0.5)[0].model == "good"
    assert len(judge.calls) == 2 * len(QUESTIONS)


def test_refit_on_own_unlabelled_prompts_keeps_the_pool(embedder):
    """The documented path: start from a router with a pool, refit the map on your own prompts; members stay and
    are re-profiled from their kept probe scores (no member is called again)."""
    math_q = [f"math algebra equation {i}" for i in range(12)]
    law_q = [f"law contract court {i}" for i in range(12)]
    router = UniRouter(embedder=embedder, n_clusters=1, shrinkage=0.0, show_progress=False).fit(math_q + law_q)
    router.set_probes(math_q + law_q)
    router.add_model("mathematician", cost=1.0, scores=[1.0] * 12 + [0.0] * 12)
    router.add_model("lawyer", cost=1.0, scores=[0.0] * 12 + [1.0] * 12)
    # one cluster: both look the same everywhere
    assert router.expected_quality(["math algebra equation 99"])[0].tolist() == [0.5, 0.5]

    router.n_clusters = 2
    own_traffic = [f"math algebra question {i}" for i in range(30)] + [f"law contract dispute {i}" for i in range(30)]
    assert router.fit(own_traffic) is router
    assert router.models == ["mathematician", "lawyer"]
    q = router.expected_quality(["math algebra equation 99", "law contract court 99"])
    assert q[0, 0] > q[0, 1] and q[1, 1] > q[1, 0]


def test_a_judged_router_saved_and_loaded_routes_and_asks_for_its_judge_to_profile(embedder, tmp_path):
    """A judge is code, so it is never written: the saved router keeps the probes (and the judge's pseudo-
    references) and routes as before; profiling a new member after loading needs the judge given back, and says
    so; with ``grader=JudgeGrader(judge)`` the judge sees the question again."""
    judge = ScriptedJudge()
    router = UniRouter(embedder=embedder, n_clusters=1, show_progress=False).fit(QUESTIONS)
    router.set_probes(ProbeSet.from_prompts(QUESTIONS, judge=judge, judge_references=True))
    add_profiled_model(router, "good", good_member, cost=10.0, show_progress=False)
    add_profiled_model(router, "wrong", wrong_member, cost=1.0, show_progress=False)
    router.save(tmp_path / "judged")
    saved = (tmp_path / "judged" / "router.json").read_text(encoding="utf-8")
    assert "ScriptedJudge" not in saved and "Answer to grade" not in saved  # no code, no rubric-filled prompts

    loaded = UniRouter.load(tmp_path / "judged", embedder=embedder, show_progress=False)
    assert loaded.probes.references == router.probes.references  # the judge's pseudo-references were kept
    assert loaded.route(["What is 5 plus 5?"], lam=0.5)[0].model == "good"
    for name in ("good", "wrong"):
        np.testing.assert_array_equal(loaded.profiles[name].probe_scores, router.profiles[name].probe_scores)
    with pytest.raises(Exception, match=r"custom grader.*UniRouter.load\(directory, grader=your_grader\)"):
        add_profiled_model(loaded, "late", good_member, cost=2.0, show_progress=False, retries=0,
                           max_failure_rate=0.0)
    assert "late" not in loaded.models

    calls_before = len(judge.calls)
    again = UniRouter.load(tmp_path / "judged", embedder=embedder, grader=JudgeGrader(judge), show_progress=False)
    add_profiled_model(again, "late", good_member, cost=2.0, show_progress=False)
    assert again.profiles["late"].overall_quality == 1.0
    asked = judge.calls[calls_before:]
    assert len(asked) == len(QUESTIONS) and all("Question:\n" in p and "Answer to grade:" in p for p in asked)
