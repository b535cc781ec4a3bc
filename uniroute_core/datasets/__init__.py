"""Routing-data folders shipped inside the package, addressable by name.

A fresh clone (or a wheel install) has everything it needs to run the main job, the examples and the tests: the
public MMLU-Pro routing matrix lives in ``uniroute_core/datasets/mmlu_pro/`` (with its ``DATACARD.md`` and licence /
citation ``NOTICE.md``) and every function that takes a routing-data folder also takes its name::

    load_routing_data("mmlu_pro")
    ProbeSet.from_routing_data("mmlu_pro", n=300)
    uniroute eval --data mmlu_pro --out out/mmlu_pro

:func:`resolve_routing_data` is the one place that turns what a user passed (a bundled name or a folder path) into
a folder. A bare name that is registered here means the bundled data set (write ``./mmlu_pro`` to mean a local
folder of the same name); anything else is a path, which must be an existing folder. Otherwise the error lists the
bundled names.

Bundled data sets are found with :mod:`importlib.resources`, so they resolve the same way from a source checkout,
an editable install and a wheel (``pyproject.toml`` lists them as package data).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..registry import Registry

__all__ = [
    "BundledDataset",
    "BUNDLED_DATASETS",
    "bundled_dataset_names",
    "bundled_dataset_path",
    "resolve_routing_data",
]


@dataclass(frozen=True)
class BundledDataset:
    """A routing-data folder shipped in this package.

    Attributes:
        name: the name users pass instead of a path.
        package: the importable package holding the folder (so ``importlib.resources`` can find it).
        description: one line shown in listings and error messages.
    """

    name: str
    package: str
    description: str


BUNDLED_DATASETS: Registry[BundledDataset] = Registry("bundled routing data set")
"""Registered bundled data sets, by name (``BUNDLED_DATASETS.register(name, BundledDataset(...))`` adds one)."""

BUNDLED_DATASETS.register(
    "mmlu_pro",
    BundledDataset(
        name="mmlu_pro",
        package="uniroute_core.datasets.mmlu_pro",
        description="10,279 MMLU-Pro questions (14 subjects) x 29 public LLMs, 0/1 correctness, "
        "cost = active parameters (B); Apache-2.0 outputs, MIT questions",
    ),
)


def bundled_dataset_names() -> list[str]:
    """The names of the bundled routing-data sets, sorted."""
    return sorted(BUNDLED_DATASETS)


def bundled_dataset_path(name: str) -> Path:
    """The folder of bundled data set ``name`` on disk.

    Raises ``KeyError`` listing the bundled names when ``name`` is not one of them, and ``FileNotFoundError`` when the
    package was installed without its data files (a broken build).
    """
    entry = BUNDLED_DATASETS.get(name)  # UnknownNameError (a KeyError) listing the bundled names
    traversable = resources.files(entry.package)
    folder = Path(str(traversable))
    if not (folder / "prompts.csv.gz").is_file():
        raise FileNotFoundError(
            f"the bundled data set {name!r} has no prompts.csv.gz in {folder}; the package was installed without its "
            "data files (reinstall uniroute; pyproject.toml lists them as package data)"
        )
    return folder


def resolve_routing_data(spec: str | os.PathLike[str]) -> Path:
    """The routing-data folder ``spec`` names: a bundled data set's name, or a path to an existing folder.

    A bare name registered in :data:`BUNDLED_DATASETS` (no path separator) means the bundled folder, so the same
    command works from any working directory. Any other ``spec`` is a path. Raises ``FileNotFoundError`` saying that
    ``spec`` is neither a bundled name nor an existing folder, and listing the bundled names.
    """
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"routing data must be a bundled data set name or a folder path, got {type(spec).__name__}")
    text = os.fspath(spec)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if text in BUNDLED_DATASETS and os.sep not in text and (os.altsep is None or os.altsep not in text):
        return bundled_dataset_path(text)
    folder = Path(text)
    if folder.is_dir():
        return folder
    what = (
        "is a file, not a folder"
        if folder.exists()
        else "does not exist: it is neither a bundled data set nor an existing folder"
    )
    raise FileNotFoundError(
        f"routing data {text!r} {what}; bundled data sets: {', '.join(bundled_dataset_names())} "
        "(or pass a folder with prompts.csv.gz, scores.csv.gz and models.csv)"
    )
