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
from .grading import Grader, check_reference, resolve_grader

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
    grader: str | Grader = "multiple_choice"
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

        object.__setattr__(self, "_grader_fn", resolve_grader(self.grader))
        if isinstance(self.grader, str) and self.references is not None:
            for i, reference in enumerate(self.references):
                try:
                    check_reference(self.grader, reference)
                except ValueError as exc:
                    raise ValueError(
                        f"reference at index {i} cannot be graded by {self.grader!r}: {exc}"
                    ) from None

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def grader_fn(self) -> Grader:
        """The resolved grader; every score it returns is checked to lie in [0, 1]."""
        return self._grader_fn

    @property
    def grader_name(self) -> str | None:
        """The built-in grader's name, or ``None`` when the grader is a custom callable."""
        return self.grader if isinstance(self.grader, str) else None

    def grade(self, i: int, response_text: str) -> float:
        """Score ``response_text`` as an answer to probe ``i`` (in [0, 1], 1 = correct)."""
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
            path: the routing-data folder (or its ``prompts.csv.gz`` itself). The file
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
        file = Path(path)
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

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; a custom grader callable is recorded as ``None``."""
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
        set had a custom callable grader (stored as ``None``), since code is not saved.
        """
        unknown = set(data) - _DICT_KEYS
        if unknown:
            raise ValueError(f"unexpected ProbeSet key(s) {sorted(unknown)}; expected {sorted(_DICT_KEYS)}")
        if "prompts" not in data:
            raise ValueError("ProbeSet dict has no 'prompts'")
        if grader is None:
            grader = data.get("grader")
            if grader is None:
                raise ValueError(
                    "this ProbeSet was saved with a custom grader callable, which is not "
                    "serialised; pass grader=... to from_dict"
                )
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
