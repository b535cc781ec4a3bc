"""Probe sets: the representative prompts a new LLM is run on once to profile it.

UniRoute adds an LLM to the pool without retraining by measuring its loss on a small set
of representative prompts S_val (typically a few hundred) and averaging per cluster.
A :class:`ProbeSet` is that S_val: the prompt texts, their reference answers, and the
grader that scores a response against a reference. Probe sets are immutable and
JSON-friendly (:meth:`ProbeSet.to_dict`), so the exact probes used to profile an LLM can
be saved next to its profile and reused for the next one.

This module is framework-neutral: it must not import LangChain or LlamaIndex.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data import read_csv
from .grading import (
    GRADERS,
    Grader,
    JudgeFn,
    JudgeGrader,
    call_judge,
    check_judge,
    check_reference,
    grader_name,
    resolve_grader,
    resolve_saved_grader,
)

__all__ = ["ProbeSet"]

_PROMPTS_FILE = "prompts.csv.gz"
_REQUIRED_COLUMNS = ("prompt_id", "prompt", "reference")
_DICT_KEYS = frozenset({"prompts", "references", "grader", "prompt_ids"})


@dataclass(frozen=True)
class ProbeSet:
    """Prompts (with reference answers and a grader) used to profile an LLM.

    Attributes:
        prompts: the probe texts, sent to the LLM as they are.
        references: the gold answer for each prompt (needed to grade; ``None`` when the
            set is only used to collect responses).
        grader: a built-in grader name (``"multiple_choice"``, ``"exact"``, ``"numeric"``)
            or a ``(response, reference) -> float`` callable; see
            :func:`uniroute_core.grading.resolve_grader`.
        prompt_ids: optional unique identifiers, e.g. the ids in a routing-data folder.

    Lists (any iterable) are accepted and stored as tuples. Construction validates
    everything it can — blank prompts, length mismatches, duplicate ids, references the
    named grader cannot read — so mistakes surface before any LLM is called.
    """

    prompts: tuple[str, ...]
    references: tuple[str, ...] | None = None
    grader: str | Grader | JudgeGrader = "multiple_choice"
    prompt_ids: tuple[str, ...] | None = None
    _grader_fn: Grader = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        prompts = _as_str_tuple(self.prompts, "prompts")
        if not prompts:
            raise ValueError("a ProbeSet needs at least one prompt, got none")
        for i, prompt in enumerate(prompts):
            if not prompt.strip():
                raise ValueError(f"prompt at index {i} is empty or whitespace-only")
        object.__setattr__(self, "prompts", prompts)

        if self.references is not None:
            references = _as_str_tuple(self.references, "references", allow_numbers=True)
            if len(references) != len(prompts):
                raise ValueError(
                    f"got {len(prompts)} prompts but {len(references)} references; "
                    "there must be exactly one reference per prompt"
                )
            object.__setattr__(self, "references", references)

        if self.prompt_ids is not None:
            prompt_ids = _as_str_tuple(self.prompt_ids, "prompt_ids", allow_numbers=True)
            if len(prompt_ids) != len(prompts):
                raise ValueError(
                    f"got {len(prompts)} prompts but {len(prompt_ids)} prompt_ids; "
                    "there must be exactly one id per prompt"
                )
            duplicates = sorted(pid for pid, count in Counter(prompt_ids).items() if count > 1)
            if duplicates:
                shown = ", ".join(repr(d) for d in duplicates[:5])
                more = f" (and {len(duplicates) - 5} more)" if len(duplicates) > 5 else ""
                raise ValueError(f"prompt_ids must be unique; duplicated: {shown}{more}")
            object.__setattr__(self, "prompt_ids", prompt_ids)

        if isinstance(self.grader, JudgeGrader):
            object.__setattr__(self, "_grader_fn", self.grader)
        else:
            object.__setattr__(self, "_grader_fn", resolve_grader(self.grader))
        name = self.grader_name
        if name is not None and name in GRADERS and self.references is not None:
            for i, reference in enumerate(self.references):
                try:
                    check_reference(name, reference)
                except ValueError as exc:
                    raise ValueError(f"reference at index {i} cannot be graded by {name!r}: {exc}") from None

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def gradable(self) -> bool:
        """Whether answers can be graded: there are references, or the grader is a judge that needs none."""
        return self.references is not None or isinstance(self.grader, JudgeGrader)

    @property
    def judged(self) -> bool:
        """Whether an LLM judge grades this set (one judge call per graded answer)."""
        return isinstance(self.grader, JudgeGrader)

    @property
    def grader_fn(self) -> Grader:
        """The resolved grader; every score it returns is checked to lie in [0, 1]."""
        return self._grader_fn

    @property
    def grader_name(self) -> str | None:
        """The grader's registered name (:data:`~uniroute_core.grading.GRADERS`; given as a name or as the
        registered callable), or ``None`` for an unregistered custom callable, which cannot be saved."""
        return grader_name(self.grader)

    def grade(self, i: int, response_text: str) -> float:
        """Score ``response_text`` as an answer to probe ``i`` (in [0, 1], 1 = correct).

        A :class:`~uniroute_core.grading.JudgeGrader` is shown the probe's prompt too (and its reference, if any).
        """
        if isinstance(self.grader, JudgeGrader):
            if not isinstance(response_text, str):
                raise TypeError(f"response_text must be a str, got {type(response_text).__name__}")
            reference = self.references[i] if self.references is not None else None
            return self.grader.grade(self.prompts[i], response_text, reference)
        if self.references is None:
            raise ValueError(
                "this ProbeSet has no references, so responses cannot be graded; "
                "pass references=... (one gold answer per prompt)"
            )
        if not isinstance(response_text, str):
            raise TypeError(f"response_text must be a str, got {type(response_text).__name__}")
        return self._grader_fn(response_text, self.references[i])

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_routing_data(
        cls,
        path: str | os.PathLike[str],
        split: str | None = None,
        n: int | None = None,
        seed: int = 0,
        grader: str | Grader = "multiple_choice",
    ) -> ProbeSet:
        """Build a probe set from a routing-data folder's ``prompts.csv.gz``.

        Args:
            path: the routing-data folder (or its ``prompts.csv.gz`` itself), or the name of a
                bundled data set (``"mmlu_pro"``, see :mod:`uniroute_core.datasets`). The file
                must have a ``reference`` column (the gold answers).
            split: keep only prompts whose ``split_hint`` equals this (e.g. ``"train"``);
                ``None`` or ``"all"`` keeps every prompt.
            n: how many prompts to draw at random (stratified by ``category`` so every
                category keeps its share); ``None`` takes all of them.
            seed: random seed for the draw, so the same probes can be drawn again.
            grader: the grader to attach (see :class:`ProbeSet`).

        Prompts with a blank reference cannot be graded and are skipped with a warning.
        The chosen probes keep the file's order.
        """
        from .datasets import resolve_routing_data

        file = Path(path)
        if not file.is_file():
            file = resolve_routing_data(path)
        if file.is_dir():
            file = file / _PROMPTS_FILE
        if not file.is_file():
            raise FileNotFoundError(f"no {_PROMPTS_FILE} found at {Path(path)}")
        folder = file.parent

        columns, rows = _read_gzip_csv(file)
        missing = [c for c in _REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise ValueError(
                f"{file.name} in {folder} lacks the column(s) {', '.join(missing)} needed for "
                f"probes (columns found: {', '.join(columns)}); a probe set needs each "
                "prompt's reference (gold) answer"
            )

        if split is not None and split != "all":
            hints = sorted({row.get("split_hint") or "" for row in rows})
            rows = [row for row in rows if (row.get("split_hint") or "") == split]
            if not rows:
                shown = ", ".join(repr(h) if h else "'' (blank)" for h in hints)
                raise ValueError(
                    f"no prompt in {folder} has split_hint {split!r} "
                    f"(values present: {shown}); use split=None for all prompts"
                )

        blank = [row["prompt_id"] for row in rows if not (row["reference"] or "").strip()]
        if blank:
            warnings.warn(
                f"skipping {len(blank)} prompt(s) in {folder} with a blank reference "
                f"(e.g. {', '.join(blank[:3])})",
                stacklevel=2,
            )
            rows = [row for row in rows if (row["reference"] or "").strip()]
        if not rows:
            raise ValueError(f"no gradable prompts (with a non-blank reference) in {folder}")

        if n is not None:
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"n must be a positive integer or None, got {n!r}")
            if n > len(rows):
                raise ValueError(f"asked for n={n} probes but {folder} has only {len(rows)} eligible prompts")
            keep = _stratified_sample([row.get("category") or "" for row in rows], n, seed)
            rows = [rows[i] for i in keep]

        return cls(
            prompts=tuple(row["prompt"] for row in rows),
            references=tuple(row["reference"].strip() for row in rows),
            grader=grader,
            prompt_ids=tuple(row["prompt_id"] for row in rows),
        )

    @classmethod
    def from_prompts(
        cls,
        prompts: Iterable[str],
        *,
        judge: JudgeFn,
        references: Sequence[str] | None = None,
        judge_references: bool = False,
        n: int | None = None,
        seed: int = 0,
        rubric: str | None = None,
        max_concurrency: int = 8,
        prompt_ids: Sequence[str] | None = None,
    ) -> ProbeSet:
        """A probe set from your own (production) prompts, graded by an LLM judge instead of gold answers.

        Each member's answer to a probe is shown to the judge WITH the probe's question, and the judge scores it on
        a documented rubric (:data:`~uniroute_core.grading.DEFAULT_JUDGE_RUBRIC`: 0-10, read as [0, 1]); a reply
        with no readable score, or a failed judge call, makes that probe unknown (NaN) for that member, not wrong.

        Args:
            prompts: your prompts (duplicates are dropped, first occurrence kept; blank ones are refused).
            judge: ``prompt -> reply text``, sync or async (a LangChain chat model / LlamaIndex LLM: wrap it with
                ``uniroute_langchain.as_judge`` / ``uniroute_llamaindex.as_judge``). Use a strong model.
            references: optional answers you trust, one per prompt, shown to the judge as a hint.
            judge_references: ask the judge to answer every prompt first and show its answers as pseudo-references
                (ignored when ``references`` is given). Helps on questions with a checkable answer.
            n: keep ``n`` prompts drawn at random (``seed``) instead of all of them; a few hundred is typical.
            seed: random seed of that draw.
            rubric: your own rubric template (fields ``{question}``, ``{response}``, ``{reference_block}``).
            max_concurrency: parallel judge calls when writing pseudo-references.
            prompt_ids: optional ids, one per prompt.

        Cost: ``len(probes)`` judge calls per member profiled (one per graded answer), plus ``len(probes)`` calls
        once, here, when ``judge_references=True``.
        """
        grader = JudgeGrader(check_judge(judge), rubric=rubric)
        texts = _as_str_tuple(prompts, "prompts")
        if references is not None:
            refs: tuple[str, ...] | None = _as_str_tuple(references, "references", allow_numbers=True)
            if len(refs) != len(texts):  # type: ignore[arg-type]
                raise ValueError(f"got {len(texts)} prompts but {len(refs)} references")  # type: ignore[arg-type]
        else:
            refs = None
        ids = None if prompt_ids is None else _as_str_tuple(prompt_ids, "prompt_ids", allow_numbers=True)
        if ids is not None and len(ids) != len(texts):
            raise ValueError(f"got {len(texts)} prompts but {len(ids)} prompt_ids")
        first: dict[str, int] = {}
        for i, text in enumerate(texts):
            first.setdefault(text, i)
        keep = sorted(first.values())  # each distinct text once, at its first occurrence
        if n is not None:
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"n must be a positive integer or None, got {n!r}")
            if n > len(keep):
                raise ValueError(f"asked for n={n} probes but there are only {len(keep)} distinct prompts")
            keep = sorted(np.random.default_rng(seed).choice(keep, size=n, replace=False).tolist())
        texts = tuple(texts[i] for i in keep)
        refs = None if refs is None else tuple(refs[i] for i in keep)
        ids = None if ids is None else tuple(ids[i] for i in keep)
        if refs is None and judge_references:
            refs = _judge_answers(grader.judge, texts, max_concurrency)
        return cls(prompts=texts, references=refs, grader=grader, prompt_ids=ids)

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; the grader is recorded by its registered name (``None`` for an unregistered
        custom callable)."""
        return {
            "prompts": list(self.prompts),
            "references": None if self.references is None else list(self.references),
            "grader": self.grader_name,
            "prompt_ids": None if self.prompt_ids is None else list(self.prompt_ids),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], grader: str | Grader | None = None) -> ProbeSet:
        """Rebuild a probe set saved with :meth:`to_dict`.

        ``grader``, when given, overrides the stored one. It is required when the saved
        set had an unregistered custom callable grader (stored as ``None``), since code is not saved. A stored
        name is looked up in :data:`~uniroute_core.grading.GRADERS`; if this process has not registered it, the
        set still loads (routing needs no grader) and grading raises an error naming the grader to register.
        """
        unknown = set(data) - _DICT_KEYS
        if unknown:
            raise ValueError(f"unexpected ProbeSet key(s) {sorted(unknown)}; expected {sorted(_DICT_KEYS)}")
        if "prompts" not in data:
            raise ValueError("ProbeSet dict has no 'prompts'")
        if grader is None:
            saved = data.get("grader")
            if saved is None:
                raise ValueError(
                    "this ProbeSet was saved with a custom grader callable, which is not "
                    "serialised; pass grader=... to from_dict (or register it by name with "
                    "uniroute_core.grading.register_grader before saving)"
                )
            if not isinstance(saved, str):
                raise ValueError(f"ProbeSet dict: 'grader' must be a grader name or null, got {saved!r}")
            grader = saved if saved in GRADERS else resolve_saved_grader(saved)
        return cls(
            prompts=data["prompts"],
            references=data.get("references"),
            grader=grader,
            prompt_ids=data.get("prompt_ids"),
        )


def _as_str_tuple(values: Iterable[Any], what: str, *, allow_numbers: bool = False) -> tuple[str, ...]:
    """``values`` as a tuple of str, with a TypeError naming the first bad item."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{what} must be a sequence of strings, not a single {type(values).__name__}")
    try:
        items = tuple(values)
    except TypeError:
        raise TypeError(f"{what} must be a sequence of strings, got {type(values).__name__}") from None
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            out.append(item)
        elif allow_numbers and isinstance(item, (int, float, np.integer, np.floating)) and not isinstance(item, bool):
            out.append(str(item))
        else:
            raise TypeError(f"{what}[{i}] must be a str, got {type(item).__name__}")
    return tuple(out)


def _read_gzip_csv(file: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of the prompts file, through the package's one CSV reader (long fields, BOM, clear errors)."""
    table = read_csv(file)
    return table.columns, table.rows


def _stratified_sample(strata: Sequence[str], n: int, seed: int) -> list[int]:
    """Sorted indices of ``n`` items drawn without replacement, proportionally per stratum.

    Each stratum gets the floor of its proportional share; the remaining slots go to the
    strata with the largest fractional remainders (ties broken at random by ``seed``).
    """
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for i, stratum in enumerate(strata):
        groups.setdefault(stratum, []).append(i)
    names = sorted(groups)
    shares = np.array([n * len(groups[name]) / len(strata) for name in names])
    quotas = np.floor(shares).astype(int)
    leftover = n - int(quotas.sum())
    if leftover:
        tie_break = rng.random(len(names))
        order = np.lexsort((tie_break, -(shares - quotas)))
        quotas[order[:leftover]] += 1
    chosen: list[int] = []
    for name, quota in zip(names, quotas):
        if quota:
            chosen.extend(rng.choice(groups[name], size=int(quota), replace=False).tolist())
    return sorted(chosen)


def _judge_answers(judge: JudgeFn, prompts: Sequence[str], max_concurrency: int) -> tuple[str, ...]:
    """The judge's own answer to every prompt (pseudo-references), asked concurrently; any failure is an error."""
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
        raise ValueError(f"max_concurrency must be an integer >= 1, got {max_concurrency!r}")
    from concurrent.futures import ThreadPoolExecutor

    def ask(i: int) -> str:
        try:
            reply = call_judge(judge, prompts[i])
        except Exception as exc:
            raise RuntimeError(f"the judge failed to answer prompt {i} for a pseudo-reference: {exc!r}") from exc
        if not reply.strip():
            raise ValueError(f"the judge gave an empty answer to prompt {i}; cannot use it as a pseudo-reference")
        return reply.strip()

    with ThreadPoolExecutor(max_workers=min(max_concurrency, len(prompts))) as pool:
        return tuple(pool.map(ask, range(len(prompts))))
