"""Graders: turn an LLM's free-text answer to a probe into a score in [0, 1].

Profiling a new LLM (computing its per-cluster loss vector Ψ) needs one number per
representative prompt: how well the LLM answered it. A *grader* is the function that
produces that number from the response text and the probe's reference (gold) answer.

Graders are known by name through the :data:`GRADERS` registry (:mod:`uniroute_core.registry`); the built-ins:

* ``"multiple_choice"`` — :func:`grade_multiple_choice` (option letters A–J, e.g. MMLU-Pro);
* ``"exact"`` — :func:`grade_exact` (normalised exact string match);
* ``"numeric"`` — :func:`grade_numeric` (last number in the response vs a numeric reference).

Add your own with :func:`register_grader` (then a probe set can name it, and a saved router gets it back by that
name when loaded). Any ``(response, reference) -> float`` callable is also accepted, e.g. an LLM judge built with
:func:`make_llm_judge`; an unregistered callable is not saved with a router (code never is). Whatever the source,
:func:`resolve_grader` checks every score lands in [0, 1], so a buggy custom grader fails loudly instead of
corrupting Ψ.

This module is framework-neutral: it must not import LangChain or LlamaIndex.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import re
import string
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, SupportsFloat, SupportsIndex

from .registry import Registry

__all__ = [
    "BUILTIN_GRADERS",
    "GRADERS",
    "REFERENCE_CHECKS",
    "DEFAULT_JUDGE_RUBRIC",
    "JudgeGrader",
    "call_judge",
    "parse_judge_score",
    "Grader",
    "register_grader",
    "grader_name",
    "resolve_saved_grader",
    "check_reference",
    "extract_choice_letter",
    "grade_exact",
    "grade_multiple_choice",
    "grade_numeric",
    "make_llm_judge",
    "make_numeric_grader",
    "resolve_grader",
]

Grader = Callable[[str, str], float]
"""``(response_text, reference) -> score`` with the score in [0, 1] (1 = correct)."""

_CHOICE_LETTERS = "ABCDEFGHIJ"

# --------------------------------------------------------------------------- multiple choice

# A letter right after an explicit "answer is / answer: / correct option is / \boxed{...}".
# Upper-case letters are taken when they stand alone as a token ("answer is C because");
# lower-case ones only when closed by markup or punctuation/end ("answer: c."), so that
# "the answer is a bit unclear" does not read as option A.
_LETTER_AFTER_CUE = (
    r"[\s*_(\[]*"
    r"(?:(?P<upper>[A-J])(?![A-Za-z0-9])"
    r"|(?P<lower>[a-j])(?=[*_)\]]|[ \t]*(?:[.,;:!?]|\n|\Z)))"
)
_EXPLICIT_ANSWER = re.compile(
    r"(?i:\b(?:answer|option|choice)\b"
    r"(?:\s+(?:is|would\s+be|should\s+be|will\s+be)\s*:?|\s*[:=])"
    r"\s*(?:(?:option|choice)\s+)?)" + _LETTER_AFTER_CUE
)
_BOXED = re.compile(r"\\boxed\{\s*(?:\\text\{)?\s*\(?(?P<letter>[A-Ja-j])\)?\s*\}?\s*\}")

# A bare letter at the very start, but only when followed by punctuation, markup, a line
# break or the end: "C", "C.", "C)", "C:", "**C**", "(C)" — never "A good answer is...".
# A lower-case one must also end its line ("c." yes; "a) first item", "(i) ..." are list markers).
_LEADING_LETTER = re.compile(
    r"\A[\s*_#>]*[(\[]?[ \t]*"
    r"(?:(?P<upper>[A-J])[ \t]*(?=[.):\]*_]|\n|\Z)"
    r"|(?P<lower>[a-j])[ \t]*[.):\]*_]*[ \t]*(?:\n|\Z))"
)
_BOLD_LETTER = re.compile(r"(\*\*|__)\s*\(?\s*(?P<letter>[A-Ja-j])\s*\)?\s*\1")
# Only upper-case in parentheses: "(i)", "(a)" are as often list markers as options.
_PAREN_LETTER = re.compile(r"\(\s*(?P<letter>[A-J])\s*\)")


def extract_choice_letter(text: str) -> str | None:
    """Return the option letter (``"A"``–``"J"``) a free-text answer commits to, or ``None``.

    Models phrase a multiple-choice answer in many ways ("The answer is (C).", "answer: C",
    "**C**", "C) foo", "I think the correct option is C because..."). The rules, in order
    of trust:

    1. an explicit cue — "answer is X", "answer: X", "correct option is X", ``\\boxed{X}`` —
       taking the *last* such cue, since chain-of-thought answers conclude at the end;
    2. a bare letter at the start of the text followed by punctuation, markup, a line break
       or the end ("C", "C.", "C)", "C:", "(C)", "**C**"), so the article in "A good
       answer..." is not mistaken for option A;
    3. the last bold letter (``**C**``) anywhere, else a parenthesised upper-case letter
       ``(C)`` anywhere provided only one distinct such letter occurs (several distinct
       ones usually mean the model is listing options, which is ambiguous).

    Returns ``None`` when none of these finds a letter.
    """
    if not isinstance(text, str):
        raise TypeError(f"response text must be a str, got {type(text).__name__}")

    cues = [(m.start(), m.group("upper") or m.group("lower")) for m in _EXPLICIT_ANSWER.finditer(text)]
    cues += [(m.start(), m.group("letter")) for m in _BOXED.finditer(text)]
    if cues:
        return max(cues)[1].upper()  # the last cue in the text wins

    leading = _LEADING_LETTER.match(text)
    if leading:
        return (leading.group("upper") or leading.group("lower")).upper()

    bold = [m.group("letter") for m in _BOLD_LETTER.finditer(text)]
    if bold:
        return bold[-1].upper()

    parenthesised = {m.group("letter") for m in _PAREN_LETTER.finditer(text)}
    if len(parenthesised) == 1:
        return parenthesised.pop()
    return None


def _normalise_choice_reference(reference: str) -> str:
    """Upper-cased single option letter of a multiple-choice reference, or ValueError."""
    letter = str(reference).strip().strip("()").strip().upper()
    if len(letter) != 1 or letter not in _CHOICE_LETTERS:
        raise ValueError(
            f"multiple-choice reference must be a single option letter A-J, got {reference!r}"
        )
    return letter


def grade_multiple_choice(response: str, reference: str) -> float:
    """Score 1.0 iff the option letter extracted from ``response`` equals ``reference``.

    ``reference`` is an option letter (surrounding whitespace/parentheses and case are
    ignored). A response with no recognisable letter scores 0.0, like a wrong letter:
    the model did not give the right answer. See :func:`extract_choice_letter`.
    """
    expected = _normalise_choice_reference(reference)
    return 1.0 if extract_choice_letter(response) == expected else 0.0


# --------------------------------------------------------------------------- exact match

_QUOTE_PAIRS = {'"': '"', "'": "'", "`": "`", "\u201c": "\u201d", "\u2018": "\u2019",
                "\u00ab": "\u00bb", "(": ")", "[": "]", "{": "}", "*": "*", "_": "_"}
_TRAILING_PUNCTUATION = ".!?,;:"


def _normalise_text(text: str) -> str:
    """Casefold, collapse whitespace, peel matching quotes/brackets and trailing punctuation."""
    text = " ".join(text.split()).casefold()
    while True:
        before = text
        text = text.rstrip(_TRAILING_PUNCTUATION).strip()
        if len(text) >= 2 and _QUOTE_PAIRS.get(text[0]) == text[-1]:
            text = text[1:-1].strip()
        if text == before:
            return text


def grade_exact(response: str, reference: str) -> float:
    """Score 1.0 iff response and reference are equal after light normalisation.

    Normalisation: case-folding, trimming, collapsing runs of whitespace, removing a
    trailing period (or other sentence punctuation) and matching surrounding quotes,
    brackets or markdown emphasis — so ``'"Paris."'`` matches ``"paris"``, but
    ``"Paris, France"`` does not.
    """
    if not isinstance(response, str):
        raise TypeError(f"response text must be a str, got {type(response).__name__}")
    return 1.0 if _normalise_text(response) == _normalise_text(str(reference)) else 0.0


# --------------------------------------------------------------------------- numeric

# A number not glued to a preceding word or number ("x2", "3.14" -> not "14", "10-12" -> "12").
_NUMBER = re.compile(
    r"(?<![\w.])"
    r"[-+\u2212]?"
    r"(?:\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d*)?|\.\d+)"
    r"(?:[eE][-+]?\d+)?"
)


def _to_float(token: str) -> float:
    return float(token.replace(",", "").replace("\u2212", "-"))


def _parse_reference_number(reference: str) -> float:
    """The numeric value of a reference such as ``"12"``, ``"$1,234.5"``, ``"-2.5e3"``, ``"12%"``."""
    cleaned = str(reference).strip().lstrip("$").rstrip("%").strip()
    try:
        value = _to_float(cleaned)
    except ValueError:
        raise ValueError(f"numeric reference {reference!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"numeric reference {reference!r} is not a finite number")
    return value


def grade_numeric(response: str, reference: str, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> float:
    """Score 1.0 iff the *last* number in ``response`` is close to the numeric ``reference``.

    The last number is used because worked solutions state intermediate values first and
    the result last. Thousands separators, signs, decimals, exponents, a leading ``$`` and a
    trailing ``%`` are understood ("1,234.5", "-3", "2.5e3", "$12", "12%"); the percent
    sign is not a scale factor (``"12%"`` reads as 12). No number in the response scores 0.0.
    Closeness is :func:`math.isclose` with ``rel_tol`` and ``abs_tol``.
    """
    if not isinstance(response, str):
        raise TypeError(f"response text must be a str, got {type(response).__name__}")
    expected = _parse_reference_number(reference)
    numbers = _NUMBER.findall(response)
    if not numbers:
        return 0.0
    try:
        got = _to_float(numbers[-1])
    except ValueError:  # pragma: no cover - the regex only matches float-parsable tokens
        return 0.0
    return 1.0 if math.isclose(got, expected, rel_tol=rel_tol, abs_tol=abs_tol) else 0.0


def make_numeric_grader(rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> Grader:
    """A :data:`Grader` like :func:`grade_numeric` with the given tolerances baked in."""
    if rel_tol < 0 or abs_tol < 0:
        raise ValueError(f"tolerances must be >= 0, got rel_tol={rel_tol!r}, abs_tol={abs_tol!r}")

    def numeric_grader(response: str, reference: str) -> float:
        return grade_numeric(response, reference, rel_tol=rel_tol, abs_tol=abs_tol)

    numeric_grader.__doc__ = f"grade_numeric with rel_tol={rel_tol!r}, abs_tol={abs_tol!r}."
    return numeric_grader


# --------------------------------------------------------------------------- LLM judge

DEFAULT_JUDGE_TEMPLATE = """\
You are grading a candidate response against a reference answer.

Reference answer:
{reference}

Candidate response:
{response}

Does the candidate response reach the same final answer as the reference answer? \
Reply with exactly one word: YES or NO."""

_JUDGE_WORD = re.compile(r"\A[\s*_\"'`#>(\[]*(?P<word>yes|no|correct|incorrect)\b", re.IGNORECASE)
_JUDGE_YES_NO_ANYWHERE = re.compile(r"\b(YES|NO)\b")
_JUDGE_FRACTION = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)")
_JUDGE_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?")


def _parse_judge_reply(reply: str) -> float:
    """Turn a judge's reply into a score in [0, 1], or raise ValueError.

    Accepted, in order: a leading yes/no/correct/incorrect; an upper-case YES or NO
    anywhere (if only one of them occurs); a fraction "8/10"; a bare number read as a
    0..1 score, or as a 0..10 score when it is above 1.
    """
    word = _JUDGE_WORD.match(reply)
    if word:
        return 1.0 if word.group("word").lower() in ("yes", "correct") else 0.0
    verdicts = set(_JUDGE_YES_NO_ANYWHERE.findall(reply))
    if len(verdicts) == 1:
        return 1.0 if verdicts.pop() == "YES" else 0.0
    fraction = _JUDGE_FRACTION.search(reply)
    if fraction:
        numerator, denominator = float(fraction.group(1)), float(fraction.group(2))
        if denominator > 0 and 0 <= numerator <= denominator:
            return numerator / denominator
    number = _JUDGE_NUMBER.search(reply)
    if number:
        value = float(number.group())
        if 0 <= value <= 1:
            return value
        if value <= 10:
            return value / 10
    raise ValueError(
        "could not parse a score from the judge's reply (expected YES/NO, a 0-1 or 0-10 "
        f"score, or a fraction like 8/10): {reply[:300]!r}"
    )


def make_llm_judge(judge: Callable[[str], str], template: str | None = None) -> Grader:
    """A :data:`Grader` that asks another LLM whether a response matches the reference.

    For open-ended probes where no regex can decide correctness. ``judge`` maps a prompt
    to the judge model's reply text (the LangChain / LlamaIndex adapters wrap a chat model
    into such a callable). ``template`` is a :meth:`str.format` template with the fields
    ``{response}`` and ``{reference}`` (literal braces must be doubled); by default the
    judge is asked for YES or NO. The reply may be YES/NO (or correct/incorrect), a score in
    0..1, a score in 0..10, or a fraction such as "8/10"; anything else raises ValueError.
    """
    if not callable(judge):
        raise TypeError(f"judge must be callable (prompt -> reply text), got {type(judge).__name__}")
    template = DEFAULT_JUDGE_TEMPLATE if template is None else template
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"invalid judge template: {exc}") from None
    if fields != {"response", "reference"}:
        raise ValueError(
            "judge template must use exactly the fields {response} and {reference} "
            f"(double any literal braces), found {sorted(fields)}"
        )

    def llm_judge(response: str, reference: str) -> float:
        reply = judge(template.format(response=response, reference=reference))
        if not isinstance(reply, str):
            raise TypeError(f"judge must return the reply text as a str, got {type(reply).__name__}")
        return _parse_judge_reply(reply)

    return llm_judge


# --------------------------------------------------------------------------- the registry

GRADERS: Registry[Grader] = Registry("grader")
"""Every grader known by name: the built-ins plus those added with :func:`register_grader`.

A probe set whose grader is registered saves the *name* with a router (code is never saved), and a loaded router
gets the grader back by that name — as long as the code that registers it has been imported first.
"""

REFERENCE_CHECKS: Registry[Callable[[str], object]] = Registry("grader reference check")
"""Optional per-grader reference validators (raise ValueError for a reference the grader cannot read)."""


def register_grader(
    name: str,
    grader: Grader | None = None,
    *,
    check_reference: Callable[[str], object] | None = None,
    replace: bool = False,
) -> Any:
    """Register ``grader`` under ``name`` (or, without ``grader``, return a decorator that does).

    ``check_reference`` (optional) validates one reference answer at probe-set construction and raises ValueError
    for one the grader could not read, so bad probes fail before any LLM is called. A registered grader can be
    named in a :class:`~uniroute_core.probes.ProbeSet` (``grader="name"``) and is re-attached by that name when a
    saved router is loaded. Returns the grader (or the decorator), unchanged.
    """

    def add(fn: Grader) -> Grader:
        if not callable(fn):
            raise TypeError(f"grader {name!r} must be a callable (response, reference) -> float, got {fn!r}")
        GRADERS.register(name, fn, replace=replace)
        if check_reference is not None:
            REFERENCE_CHECKS.register(name, check_reference, replace=replace)
        return fn

    return add if grader is None else add(grader)


register_grader("multiple_choice", grade_multiple_choice, check_reference=_normalise_choice_reference)
register_grader("exact", grade_exact)
register_grader("numeric", grade_numeric, check_reference=_parse_reference_number)

BUILTIN_GRADERS: Mapping[str, Grader] = MappingProxyType(
    {
        "multiple_choice": grade_multiple_choice,
        "exact": grade_exact,
        "numeric": grade_numeric,
    }
)
"""The graders shipped with the package (all also in :data:`GRADERS`)."""


# --------------------------------------------------------------------------- resolution


def check_reference(grader: str, reference: str) -> None:
    """Raise ValueError if ``reference`` cannot be graded by the registered grader ``grader``.

    Lets a probe set reject, at construction, references its grader would choke on (a
    non-letter for ``"multiple_choice"``, a non-number for ``"numeric"``, a blank one for
    any) instead of failing midway through profiling. Custom callables are not checked.
    """
    if grader not in GRADERS:
        raise ValueError(_unknown_grader_message(grader))
    if not str(reference).strip():
        raise ValueError("reference is blank")
    if grader in REFERENCE_CHECKS:
        REFERENCE_CHECKS.get(grader)(reference)


def _unknown_grader_message(name: str) -> str:
    return (
        f"unknown grader {name!r}; registered names are {', '.join(repr(n) for n in GRADERS)} "
        "(add one with uniroute_core.grading.register_grader)"
    )


def _checked_score(value: object, grader_name: str) -> float:
    """``value`` as a float in [0, 1]; otherwise a ValueError/TypeError naming the value."""
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, (str, SupportsFloat, SupportsIndex)):
        raise TypeError(f"grader {grader_name} returned {value!r}, which is not a number")
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"grader {grader_name} returned {value!r}, which is not a number") from None
    if math.isnan(score) or not 0.0 <= score <= 1.0:
        raise ValueError(f"grader {grader_name} returned {value!r}; scores must be in [0, 1]")
    return score


class _CheckedGrader:
    """A grader wrapped so that every score is checked to lie in [0, 1].

    A small class rather than a closure so that probe sets using built-in (or any
    module-level) graders stay picklable. ``registered`` says whether ``name`` is the grader's name in
    :data:`GRADERS` (so that it can be saved by name).
    """

    __slots__ = ("fn", "name", "registered")

    def __init__(self, fn: Grader, name: str, registered: bool = False) -> None:
        self.fn = fn
        self.name = name
        self.registered = registered

    def __call__(self, response: str, reference: str) -> float:
        return _checked_score(self.fn(response, reference), repr(self.name))

    def __repr__(self) -> str:
        return f"<checked grader {self.name!r}>"


class _UnregisteredGrader:
    """Stands in for a grader that a saved probe set names but this process has not registered.

    Routing does not grade, so a loaded router routes as usual; profiling a new member calls the grader and gets an
    error saying which name to register. The name is kept, so saving again still records it.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, response: str, reference: str) -> float:
        raise RuntimeError(
            f"this probe set was saved with the grader {self.name!r}, which is not registered in this process; "
            f"import the code that calls uniroute_core.grading.register_grader({self.name!r}, ...) before loading, "
            "or pass grader=... when loading"
        )

    def __repr__(self) -> str:
        return f"<unregistered grader {self.name!r}>"


def grader_name(grader: str | Grader) -> str | None:
    """The name under which ``grader`` can be saved: a registered name (given as a string, as the registered
    callable itself, or as a grader resolved from either), else ``None`` (an anonymous callable)."""
    if isinstance(grader, str):
        return grader
    if isinstance(grader, _CheckedGrader):
        return grader.name if grader.registered else None
    if isinstance(grader, _UnregisteredGrader):
        return grader.name
    for name, fn in GRADERS.items():
        if fn is grader:
            return name
    return None


def resolve_saved_grader(name: str) -> Grader:
    """The grader a saved probe set names: the registered one, or (when this process has not registered it) a
    stand-in that routes fine and raises a clear error only when asked to grade."""
    if name in GRADERS:
        return resolve_grader(name)
    return _UnregisteredGrader(name)


def resolve_grader(spec: str | Grader) -> Grader:
    """Turn a grader name or callable into a :data:`Grader` whose scores are checked.

    ``spec`` is a name in :data:`GRADERS` (the built-ins or any added with :func:`register_grader`) or any
    ``(response, reference) -> float`` callable. The returned grader raises ValueError if
    the underlying one produces NaN or a value outside [0, 1] (TypeError for a non-number).
    Raises ValueError for an unknown name (listing the registered ones), TypeError for anything
    that is neither a string nor callable.
    """
    if isinstance(spec, (_CheckedGrader, _UnregisteredGrader)):
        return spec
    if isinstance(spec, str):
        if spec not in GRADERS:
            raise ValueError(_unknown_grader_message(spec))
        return _CheckedGrader(GRADERS.get(spec), spec, registered=True)
    if callable(spec):
        name = grader_name(spec)
        if name is not None:
            return _CheckedGrader(spec, name, registered=True)
        return _CheckedGrader(spec, getattr(spec, "__name__", type(spec).__name__))
    raise TypeError(
        f"grader must be a name ({', '.join(GRADERS)}) or a callable "
        f"(response, reference) -> float, got {type(spec).__name__}"
    )


# --------------------------------------------------------------------------- reference-free judge (sees the question)

DEFAULT_JUDGE_RUBRIC = """\
You are grading an AI assistant's answer to a user's question.

Question:
{question}
{reference_block}
Answer to grade:
{response}

Score the answer from 0 to 10:
10 = correct, complete and directly answers the question;
7 = correct but with minor omissions or imprecision;
4 = partly correct, or correct with a significant error;
1 = mostly wrong, but on topic;
0 = wrong, off-topic, empty, or a refusal of a harmless question.
Judge correctness first; ignore length and style.
Reply with one line: SCORE: <integer 0-10>"""
"""The default rubric of :class:`JudgeGrader`: a 0-10 score, read as score/10 in [0, 1]."""

DEFAULT_REFERENCE_BLOCK = """
A reference answer (written by another model; it may itself be wrong, use it as a hint only):
{reference}
"""

_BARE_SCORE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:/\s*(\d+(?:\.\d+)?))?")
_SCORE_LINE = re.compile(r"score\s*[:=]\s*\**\s*(\d+(?:\.\d+)?)\s*(?:/\s*(\d+(?:\.\d+)?))?", re.IGNORECASE)


def parse_judge_score(reply: str) -> float:
    """A judge's reply → score in [0, 1]; ``ValueError`` when no score can be read (the probe then counts as unknown).

    Reads the last ``SCORE: N`` (or ``SCORE: N/M``) in the reply, N on the rubric's 0-10 scale (``/M``: its own
    scale). Failing that, a reply that is nothing but a number (0-10), a fraction ``N/M``, or one word YES / NO /
    CORRECT / INCORRECT. Anything else — prose without a score line, a score out of range — is an error, never a
    guess and never clipped.
    """
    if not isinstance(reply, str):
        raise TypeError(f"the judge must return the reply text as a str, got {type(reply).__name__}")
    matches = _SCORE_LINE.findall(reply)
    if matches:
        value_text, scale_text = matches[-1]
    else:
        bare = reply.strip().strip("*_`.\"' ").strip()
        word = bare.lower()
        if word in ("yes", "correct"):
            return 1.0
        if word in ("no", "incorrect"):
            return 0.0
        only = _BARE_SCORE.fullmatch(bare)
        if not only:
            raise ValueError(
                "could not read a score from the judge's reply (expected a line 'SCORE: <0-10>'): " f"{reply[:300]!r}"
            )
        value_text, scale_text = only.group(1), only.group(2) or ""
    value, scale = float(value_text), float(scale_text) if scale_text else 10.0
    if scale <= 0 or not 0 <= value <= scale:
        shown = value_text + ("/" + scale_text if scale_text else "")
        raise ValueError(f"judge score {shown} is out of range: {reply[:300]!r}")
    return value / scale


JudgeFn = Callable[[str], Any]
"""A judge: ``prompt text -> reply text``, or an async function returning the reply text."""


def call_judge(judge: JudgeFn, prompt: str) -> str:
    """Call a sync or async judge from synchronous code (an async judge runs in its own event loop).

    Must not be called from inside a running event loop with an async judge; profiling calls graders from worker
    threads, where this holds.
    """
    reply = judge(prompt)
    if inspect.isawaitable(reply):
        reply = asyncio.run(_await(reply))
    if not isinstance(reply, str):
        raise TypeError(f"the judge must return the reply text as a str, got {type(reply).__name__}")
    return reply


async def _await(awaitable: Any) -> Any:
    return await awaitable


def check_judge(judge: object) -> JudgeFn:
    """``judge`` if it is a plain callable ``str -> str`` (or async); a clear TypeError otherwise.

    A LangChain chat model or a LlamaIndex LLM is not a plain callable: wrap it with ``uniroute_langchain.as_judge``
    or ``uniroute_llamaindex.as_judge``.
    """
    if hasattr(judge, "invoke") or hasattr(judge, "complete") or hasattr(judge, "chat"):
        raise TypeError(
            f"judge is a {type(judge).__name__} (a framework model), not a callable str -> str; wrap it with "
            "uniroute_langchain.as_judge(chat_model) or uniroute_llamaindex.as_judge(llm)"
        )
    if not callable(judge):
        raise TypeError(f"judge must be a callable str -> str (or async), got {type(judge).__name__}")
    return judge


class JudgeGrader:
    """Grade an answer by asking an LLM judge, who sees the QUESTION and the answer (and a reference when there is one).

    For probe sets made from production prompts, which have no gold answer: the judge scores each answer on
    :data:`DEFAULT_JUDGE_RUBRIC` (0-10, read as [0, 1]). A reply with no readable score, or a judge call that fails,
    raises; profiling then records that probe as unknown (NaN), never as wrong.

    Args:
        judge: ``prompt -> reply text`` (sync or async). Framework models are wrapped by the adapters' ``as_judge``.
        rubric: a :meth:`str.format` template with ``{question}``, ``{response}`` and ``{reference_block}``
            (literal braces doubled).
        reference_block: how a reference is shown (template with ``{reference}``); empty when a probe has none.

    Cost: one judge call per graded answer, i.e. ``len(probes)`` judge calls per member profiled.
    """

    needs_question = True

    def __init__(self, judge: JudgeFn, *, rubric: str | None = None, reference_block: str | None = None) -> None:
        self.judge = check_judge(judge)
        self.rubric = DEFAULT_JUDGE_RUBRIC if rubric is None else rubric
        self.reference_block = DEFAULT_REFERENCE_BLOCK if reference_block is None else reference_block
        _check_fields(self.rubric, {"question", "response", "reference_block"}, "rubric")
        _check_fields(self.reference_block, {"reference"}, "reference_block")

    def prompt(self, question: str, response: str, reference: str | None = None) -> str:
        """The text sent to the judge."""
        block = self.reference_block.format(reference=reference) if reference else ""
        return self.rubric.format(question=question, response=response, reference_block=block)

    def grade(self, question: str, response: str, reference: str | None = None) -> float:
        """Score ``response`` to ``question`` in [0, 1] (raises when the judge fails or its reply has no score)."""
        return parse_judge_score(call_judge(self.judge, self.prompt(question, response, reference)))

    def __call__(self, response: str, reference: str) -> float:
        raise TypeError(
            "a JudgeGrader needs the question: use it as a ProbeSet's grader (ProbeSet.grade passes the prompt), "
            "or call .grade(question, response, reference)"
        )

    def __repr__(self) -> str:
        return f"JudgeGrader({getattr(self.judge, '__name__', type(self.judge).__name__)})"


def _check_fields(template: str, expected: set[str], what: str) -> None:
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"invalid judge {what}: {exc}") from None
    if fields != expected:
        raise ValueError(
            f"judge {what} must use exactly the fields {sorted(expected)} (double any literal braces), "
            f"found {sorted(fields)}"
        )
