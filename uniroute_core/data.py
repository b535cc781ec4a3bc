"""Routing data folders: prompts × LLMs with each cell the model's quality on that prompt.

The folder format (see ``shared/data/README.md``)::

    prompts.csv.gz   prompt_id,category,split_hint,prompt[,reference]
    scores.csv.gz    prompt_id,model,score[,cost_usd][,response]   (long format, one row per (prompt, model))
    models.csv       model,cost,cost_unit,source_of_cost,...

:func:`load_routing_data` reads ANY folder in that format into a dense :class:`RoutingData`, checking that every
prompt has a score for every model, that scores lie in [0, 1] and that costs are finite and non-negative.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["RoutingData", "load_routing_data", "RoutingDataError"]


class RoutingDataError(ValueError):
    """A routing data folder is missing a file or a column, or its values are inconsistent."""


@dataclass(frozen=True)
class RoutingData:
    """A dense routing benchmark.

    Attributes:
        name: folder name (e.g. ``"mmlu_pro"``).
        prompt_ids: ``(n,)`` prompt identifiers.
        prompts: ``(n,)`` prompt texts.
        categories: ``(n,)`` category per prompt (``""`` when blank).
        split_hints: ``(n,)`` ``"train"``/``"test"``/``""``.
        models: ``(m,)`` model names, in ``models.csv`` order.
        scores: ``(n, m)`` float quality in [0, 1] (1 = correct).
        costs: ``(m,)`` per-call cost used for routing (unit in ``cost_unit``).
        cost_unit: the unit named in ``models.csv`` (first row), informational.
        references: ``(n,)`` gold answers, or ``None`` when the folder has no ``reference`` column.
        responses: ``(n, m)`` the models' recorded answers, or ``None`` when there is no ``response`` column.
    """

    name: str
    prompt_ids: list[str]
    prompts: list[str]
    categories: list[str]
    split_hints: list[str]
    models: list[str]
    scores: np.ndarray
    costs: np.ndarray
    cost_unit: str = ""
    references: list[str] | None = None
    responses: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_prompts(self) -> int:
        """Number of prompts."""
        return len(self.prompts)

    @property
    def n_models(self) -> int:
        """Number of models."""
        return len(self.models)

    def model_index(self, name: str) -> int:
        """Column of model ``name`` in :attr:`scores` (KeyError listing the known models)."""
        try:
            return self.models.index(name)
        except ValueError:
            raise KeyError(f"model {name!r} is not in {self.name!r}; known models: {self.models}") from None

    def subset(
        self, prompt_idx: Sequence[int] | np.ndarray | None = None, models: Sequence[str] | None = None
    ) -> RoutingData:
        """A new :class:`RoutingData` restricted to some prompts (by position) and/or models (by name)."""
        p = np.arange(self.n_prompts) if prompt_idx is None else np.asarray(prompt_idx, dtype=np.int64)
        m = (
            np.arange(self.n_models)
            if models is None
            else np.array([self.model_index(x) for x in models], dtype=np.int64)
        )
        take = lambda xs: [xs[i] for i in p]  # noqa: E731
        return RoutingData(
            name=self.name,
            prompt_ids=take(self.prompt_ids),
            prompts=take(self.prompts),
            categories=take(self.categories),
            split_hints=take(self.split_hints),
            models=[self.models[j] for j in m],
            scores=self.scores[np.ix_(p, m)],
            costs=self.costs[m],
            cost_unit=self.cost_unit,
            references=None if self.references is None else take(self.references),
            responses=None if self.responses is None else self.responses[np.ix_(p, m)],
        )


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _find(folder: Path, stem: str) -> Path:
    for cand in (folder / f"{stem}.csv.gz", folder / f"{stem}.csv"):
        if cand.exists():
            return cand
    raise RoutingDataError(f"routing data folder {str(folder)!r} has no {stem}.csv.gz (or {stem}.csv)")


def _require(columns: list[str], needed: Sequence[str], path: Path) -> None:
    missing = [c for c in needed if c not in columns]
    if missing:
        raise RoutingDataError(f"{path} is missing column(s) {missing}; it has {columns}")


def load_routing_data(path: str | os.PathLike[str]) -> RoutingData:
    """Read a routing data folder (``prompts.csv.gz``, ``scores.csv.gz``, ``models.csv``) into :class:`RoutingData`.

    Raises :class:`RoutingDataError` naming the file, the column or the (prompt, model) pair at fault: a missing
    file or column, a score outside [0, 1] or not a number, a missing or duplicate (prompt, model) pair, a model in
    the scores that ``models.csv`` does not list, or a negative / non-finite cost.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise RoutingDataError(f"routing data folder {str(folder)!r} does not exist or is not a folder")

    p_path = _find(folder, "prompts")
    p_cols, p_rows = _read_csv(p_path)
    _require(p_cols, ["prompt_id", "prompt"], p_path)
    if not p_rows:
        raise RoutingDataError(f"{p_path} has no prompts")
    prompt_ids = [r["prompt_id"] for r in p_rows]
    pos = {pid: i for i, pid in enumerate(prompt_ids)}
    if len(pos) != len(prompt_ids):
        dup = next(pid for pid in prompt_ids if prompt_ids.count(pid) > 1)
        raise RoutingDataError(f"{p_path}: prompt_id {dup!r} appears more than once")

    m_path = _find(folder, "models")
    m_cols, m_rows = _read_csv(m_path)
    _require(m_cols, ["model", "cost"], m_path)
    models = [r["model"] for r in m_rows]
    if len(set(models)) != len(models):
        raise RoutingDataError(f"{m_path}: a model is listed twice")
    costs = np.empty(len(models))
    for j, r in enumerate(m_rows):
        try:
            costs[j] = float(r["cost"])
        except ValueError:
            raise RoutingDataError(f"{m_path}: model {r['model']!r} has cost {r['cost']!r}, not a number") from None
        if not np.isfinite(costs[j]) or costs[j] < 0:
            raise RoutingDataError(
                f"{m_path}: model {r['model']!r} has cost {r['cost']!r}; expected a finite number >= 0"
            )
    mpos = {m: j for j, m in enumerate(models)}

    s_path = _find(folder, "scores")
    s_cols, s_rows = _read_csv(s_path)
    _require(s_cols, ["prompt_id", "model", "score"], s_path)
    has_resp = "response" in s_cols
    scores = np.full((len(prompt_ids), len(models)), np.nan)
    responses = np.full((len(prompt_ids), len(models)), "", dtype=object) if has_resp else None
    for line, r in enumerate(s_rows, start=2):
        if r["prompt_id"] not in pos:
            raise RoutingDataError(f"{s_path} line {line}: prompt_id {r['prompt_id']!r} is not in {p_path.name}")
        if r["model"] not in mpos:
            raise RoutingDataError(f"{s_path} line {line}: model {r['model']!r} is not in {m_path.name}")
        i, j = pos[r["prompt_id"]], mpos[r["model"]]
        try:
            v = float(r["score"])
        except ValueError:
            raise RoutingDataError(f"{s_path} line {line}: score {r['score']!r} is not a number") from None
        if not (0.0 <= v <= 1.0):
            raise RoutingDataError(
                f"{s_path} line {line}: score {v} for ({r['prompt_id']}, {r['model']}) is outside [0, 1]"
            )
        if not np.isnan(scores[i, j]):
            raise RoutingDataError(f"{s_path} line {line}: ({r['prompt_id']}, {r['model']}) is scored twice")
        scores[i, j] = v
        if responses is not None:
            responses[i, j] = r.get("response") or ""
    holes = np.argwhere(np.isnan(scores))
    if len(holes):
        i, j = holes[0]
        raise RoutingDataError(
            f"{s_path}: {len(holes)} (prompt, model) pairs have no score, e.g. ({prompt_ids[i]}, {models[j]}); "
            "every prompt needs a score for every model"
        )
    return RoutingData(
        name=folder.resolve().name,
        prompt_ids=prompt_ids,
        prompts=[r["prompt"] for r in p_rows],
        categories=[r.get("category") or "" for r in p_rows],
        split_hints=[r.get("split_hint") or "" for r in p_rows],
        models=models,
        scores=scores,
        costs=costs,
        cost_unit=(m_rows[0].get("cost_unit") or "") if m_rows else "",
        references=[r.get("reference") or "" for r in p_rows] if "reference" in p_cols else None,
        responses=responses.astype(str) if responses is not None else None,
    )


def write_routing_data(
    path: str | os.PathLike[str],
    *,
    prompts: Sequence[str],
    models: Sequence[str],
    scores: np.ndarray,
    costs: Sequence[float],
    categories: Sequence[str] | None = None,
    references: Sequence[str] | None = None,
    responses: np.ndarray | None = None,
    cost_unit: str = "relative",
) -> Path:
    """Write a routing data folder in the standard format (used by tests, examples and to export your own logs)."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    n, m = len(prompts), len(models)
    scores = np.asarray(scores, dtype=float)
    if scores.shape != (n, m):
        raise ValueError(f"scores has shape {scores.shape}; expected ({n}, {m}) for {n} prompts × {m} models")
    ids = [f"p{i}" for i in range(n)]

    def write_gz(name: str, header: list[str], rows: Sequence[Sequence[object]]) -> None:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(header)
        w.writerows(rows)
        with gzip.open(folder / name, "wt", encoding="utf-8", newline="") as fh:
            fh.write(buf.getvalue())

    header = ["prompt_id", "category", "split_hint", "prompt"] + (["reference"] if references is not None else [])
    write_gz(
        "prompts.csv.gz",
        header,
        [
            [ids[i], categories[i] if categories is not None else "", "", prompts[i]]
            + ([references[i]] if references is not None else [])
            for i in range(n)
        ],
    )
    s_header = ["prompt_id", "model", "score"] + (["response"] if responses is not None else [])
    write_gz(
        "scores.csv.gz",
        s_header,
        [
            [ids[i], models[j], f"{scores[i, j]:g}"] + ([responses[i, j]] if responses is not None else [])
            for i in range(n)
            for j in range(m)
        ],
    )
    with open(folder / "models.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "cost", "cost_unit", "source_of_cost"])
        for name, c in zip(models, costs):
            w.writerow([name, c, cost_unit, "given"])
    return folder
