"""Shared by the benchmarks: the examples' MMLU-Pro set-up (data, split, fitted router) and a timing helper."""

from __future__ import annotations

import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from _mmlu_pro import POOL, Setup, build, data_folder, parse_args  # noqa: E402

__all__ = ["POOL", "Setup", "build", "data_folder", "parse_args", "timed", "machine", "add_pool"]


def timed(fn: Callable[[], object], repeats: int = 3) -> float:
    """Median wall time of ``repeats`` calls of ``fn`` (seconds)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> str:
    """One line naming the machine, for the printed figures."""
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    return (f"{date.today()} | {platform.system()} {platform.machine()} {cpu}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads)")


def add_pool(setup: Setup, names: list[str] = POOL) -> None:
    """Add the replayed models with their recorded probe scores (what profiling them would give)."""
    for name in names:
        setup.router.add_model(
            name, setup.book.cost(name), setup.book.recorded_scores(name, setup.router.probes.prompts)
        )
