"""Routing data folders: prompts × LLMs with each cell the model's quality on that prompt.

The folder format (the bundled ``mmlu_pro`` is one, see :mod:`uniroute_core.datasets`)::

    prompts.csv.gz   prompt_id,category,split_hint,prompt[,reference]
    scores.csv.gz    prompt_id,model,score[,cost_usd][,response]   (long format, one row per (prompt, model))
    models.csv       model,cost,cost_unit,source_of_cost,...

:func:`load_routing_data` reads ANY folder in that format into a :class:`RoutingData`, checking that scores lie in
[0, 1] and that costs are finite and non-negative. Cells may be missing — a (prompt, model) pair with no row, or a
row with an empty score, means "not observed" — and become NaN: production logs, where each prompt was answered by
one member, are routing data too. Everything downstream treats NaN as unknown, never as wrong.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

__all__ = ["CsvTable", "RoutingData", "RoutingDataError", "load_routing_data", "read_csv", "write_routing_data"]


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
        scores: ``(n, m)`` float quality in [0, 1] (1 = correct); NaN = not observed (a sparse folder).
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

    @property
    def is_dense(self) -> bool:
        """Every (prompt, model) cell is observed (no NaN score)."""
        return not bool(np.isnan(self.scores).any())

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


_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)
"""The csv module's field-size limit while reading: a prompt may be megabytes long (the default stops at 128 KiB)."""


@dataclass(frozen=True)
class CsvTable:
    """One CSV file read by :func:`read_csv`: header, rows as dicts, and the line each row starts on."""

    path: Path
    columns: list[str]
    rows: list[dict[str, str]]
    lines: list[int]


def _open_text(file: Path) -> IO[str]:
    """``file`` opened for CSV reading as UTF-8 text (a BOM skipped), through gzip when named ``.gz``."""
    if file.suffix == ".gz":
        return gzip.open(file, "rt", encoding="utf-8-sig", newline="")
    return open(file, encoding="utf-8-sig", newline="")


def _first_non_utf8_line(file: Path) -> int | None:
    """The first physical line of ``file`` that is not valid UTF-8 (only called once decoding has failed)."""
    try:
        with gzip.open(file, "rb") if file.suffix == ".gz" else open(file, "rb") as fh:
            for number, raw in enumerate(fh, start=1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    return number
    except (OSError, EOFError, zlib.error):
        return None
    return None


def read_csv(path: str | os.PathLike[str]) -> CsvTable:
    """Read a UTF-8 CSV file (gzip-compressed when its name ends in ``.gz``) — the one CSV reader of the package.

    RFC 4180 quoting (fields may hold commas, quotes and newlines), fields of any length (the ``csv`` module's
    128 KiB default limit is raised for this read and never lowered), a leading byte-order mark tolerated, blank lines
    skipped. Every problem is a :class:`RoutingDataError` naming the file and, where there is one, the line: a file
    that is not gzip although named ``.gz``, a truncated gzip stream, bytes that are not UTF-8, a NUL byte, an empty
    file, a repeated column name, or a row with more or fewer fields than the header.
    """
    file = Path(path)
    if not file.is_file():
        raise RoutingDataError(f"{file} does not exist or is not a file")
    if csv.field_size_limit() < _FIELD_LIMIT:
        csv.field_size_limit(_FIELD_LIMIT)  # raised only, never lowered: safe with concurrent readers
    line = 1
    try:
        if file.suffix == ".gz":
            with open(file, "rb") as raw:
                if raw.read(2) != b"\x1f\x8b":
                    raise RoutingDataError(f"{file} is not a gzip file although its name ends in .gz")
        with _open_text(file) as handle:
            reader = csv.reader(handle, strict=True)
            header: list[str] | None = None
            rows: list[dict[str, str]] = []
            lines: list[int] = []
            for record in reader:
                start, line = line, reader.line_num + 1
                if not record or (len(record) == 1 and not record[0].strip() and header is not None):
                    continue
                if header is None:
                    header = [c.strip() for c in record]
                    dup = sorted({c for c in header if header.count(c) > 1})
                    if dup:
                        raise RoutingDataError(
                            f"{file} line {start}: column(s) {dup} appear more than once in the header"
                        )
                    continue
                if len(record) != len(header):
                    raise RoutingDataError(
                        f"{file} line {start}: {len(record)} field(s) where the header has {len(header)} "
                        f"({', '.join(header)}); a row is cut short or has an unquoted comma"
                    )
                rows.append(dict(zip(header, record)))
                lines.append(start)
    except RoutingDataError:
        raise
    except UnicodeDecodeError as exc:
        where = _first_non_utf8_line(file)
        at = f" line {where}" if where else ""
        raise RoutingDataError(f"{file}{at}: not UTF-8 text ({exc.reason}); save the file as UTF-8") from None
    except csv.Error as exc:
        raise RoutingDataError(f"{file} line {line}: not readable as CSV ({exc})") from None
    except (EOFError, OSError, zlib.error) as exc:
        raise RoutingDataError(f"{file} near line {line}: damaged or truncated ({type(exc).__name__}: {exc})") from None
    if header is None:
        raise RoutingDataError(f"{file} is empty: expected a header row")
    return CsvTable(file, header, rows, lines)


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

    ``path`` is a folder, or the name of a data set bundled with the package (``"mmlu_pro"``; see
    :mod:`uniroute_core.datasets`).

    Raises :class:`RoutingDataError` naming the file, the line, the column or the (prompt, model) pair at fault: a
    missing file or column, a file that is not valid (gzip) UTF-8 CSV or has a row cut short (see :func:`read_csv`),
    a blank or repeated prompt id, a blank prompt, a blank or repeated model, a score outside [0, 1] or not a number,
    a duplicate (prompt, model) pair, a model in the scores that ``models.csv`` does not list, or a negative /
    non-finite cost. A missing pair or an empty score (also the text ``nan``) is "not observed": NaN in
    :attr:`RoutingData.scores` (a sparse folder, e.g. production logs). Prompts of any length are read (a 1 MB
    prompt round-trips through
    :func:`write_routing_data`); the embedder later reads as many tokens of each as it takes.
    """
    from .datasets import resolve_routing_data

    try:
        folder = resolve_routing_data(path)
    except FileNotFoundError as exc:
        raise RoutingDataError(str(exc)) from None

    p_path = _find(folder, "prompts")
    p_table = read_csv(p_path)
    p_cols, p_rows = p_table.columns, p_table.rows
    _require(p_cols, ["prompt_id", "prompt"], p_path)
    if not p_rows:
        raise RoutingDataError(f"{p_path} has no prompts")
    pos: dict[str, int] = {}
    for i, (r, line) in enumerate(zip(p_rows, p_table.lines)):
        pid = r["prompt_id"]
        if not pid.strip():
            raise RoutingDataError(f"{p_path} line {line}: the prompt_id is blank")
        if pid in pos:
            raise RoutingDataError(f"{p_path} line {line}: prompt_id {pid!r} appears more than once")
        if not r["prompt"].strip():
            raise RoutingDataError(
                f"{p_path} line {line}: prompt {pid!r} is blank (or only white space); there is nothing to route on"
            )
        pos[pid] = i
    prompt_ids = list(pos)

    m_path = _find(folder, "models")
    m_table = read_csv(m_path)
    m_cols, m_rows = m_table.columns, m_table.rows
    _require(m_cols, ["model", "cost"], m_path)
    if not m_rows:
        raise RoutingDataError(f"{m_path} lists no models")
    models: list[str] = []
    costs = np.empty(len(m_rows))
    for j, (r, line) in enumerate(zip(m_rows, m_table.lines)):
        name = r["model"]
        if not name.strip():
            raise RoutingDataError(f"{m_path} line {line}: the model name is blank")
        if name in models:
            raise RoutingDataError(f"{m_path} line {line}: model {name!r} is listed twice")
        models.append(name)
        try:
            costs[j] = float(r["cost"])
        except ValueError:
            raise RoutingDataError(
                f"{m_path} line {line}: model {name!r} has cost {r['cost']!r}, not a number"
            ) from None
        if not np.isfinite(costs[j]) or costs[j] < 0:
            raise RoutingDataError(
                f"{m_path} line {line}: model {name!r} has cost {r['cost']!r}; expected a finite number >= 0"
            )
    mpos = {m: j for j, m in enumerate(models)}

    s_path = _find(folder, "scores")
    s_table = read_csv(s_path)
    s_cols, s_rows = s_table.columns, s_table.rows
    _require(s_cols, ["prompt_id", "model", "score"], s_path)
    has_resp = "response" in s_cols
    scores = np.full((len(prompt_ids), len(models)), np.nan)
    seen = np.zeros(scores.shape, dtype=bool)
    responses = np.full((len(prompt_ids), len(models)), "", dtype=object) if has_resp else None
    for line, r in zip(s_table.lines, s_rows):
        pi = pos.get(r["prompt_id"])
        if pi is None:
            raise RoutingDataError(f"{s_path} line {line}: prompt_id {r['prompt_id']!r} is not in {p_path.name}")
        mj = mpos.get(r["model"])
        if mj is None:
            raise RoutingDataError(f"{s_path} line {line}: model {r['model']!r} is not in {m_path.name}")
        raw = (r["score"] or "").strip()
        try:
            v = float(raw) if raw else np.nan  # empty = not observed
        except ValueError:
            raise RoutingDataError(f"{s_path} line {line}: score {r['score']!r} is not a number") from None
        if not np.isnan(v) and not (0.0 <= v <= 1.0):
            raise RoutingDataError(
                f"{s_path} line {line}: score {v} for ({r['prompt_id']}, {r['model']}) is outside [0, 1]"
            )
        if seen[pi, mj]:
            raise RoutingDataError(f"{s_path} line {line}: ({r['prompt_id']}, {r['model']}) is scored twice")
        seen[pi, mj] = True
        scores[pi, mj] = v
        if responses is not None:
            responses[pi, mj] = r.get("response") or ""
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
    """Write a routing data folder in the standard format (used by tests, examples and to export your own logs).

    NaN scores (not observed) are written as rows with an empty score, which :func:`load_routing_data` reads back
    as NaN; any other score must lie in [0, 1].
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    n, m = len(prompts), len(models)
    scores = np.asarray(scores, dtype=float)
    if scores.shape != (n, m):
        raise ValueError(f"scores has shape {scores.shape}; expected ({n}, {m}) for {n} prompts × {m} models")
    bad = ~np.isnan(scores) & ((scores < 0) | (scores > 1) | ~np.isfinite(scores))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"score {scores[i, j]} for prompt {i}, model {models[j]!r} is outside [0, 1]")
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
            [ids[i], models[j], "" if np.isnan(scores[i, j]) else f"{scores[i, j]:g}"]
            + ([responses[i, j]] if responses is not None else [])
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
