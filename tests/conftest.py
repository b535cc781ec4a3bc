"""Shared fixtures: a fast deterministic embedder for logic tests, and the bundled real data for slow tests.

The real MMLU-Pro routing data ships inside the package (``uniroute_core/datasets/mmlu_pro``), so no test needs a
folder outside the repository and none skips for missing data.
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from uniroute_core.datasets import bundled_dataset_path

MMLU_PRO = bundled_dataset_path("mmlu_pro")


def topic_embedder(texts: list[str]) -> np.ndarray:
    """A deterministic 16-d bag-of-words embedder: texts sharing words land near each other.

    Logic tests use it instead of the real model for speed; topics are words like "math", "law", "code".
    """
    out = np.zeros((len(texts), 16))
    for i, t in enumerate(texts):
        for w in t.lower().split():
            h = int(hashlib.md5(w.encode()).hexdigest(), 16)
            out[i, h % 16] += 1.0
        n = np.linalg.norm(out[i])
        if n > 0:
            out[i] /= n
    return out


def run_readers_and_writers(
    readers: list[threading.Thread], writers: list[threading.Thread], stop: threading.Event
) -> None:
    """Start reader and writer threads together, wait for the writers, then set ``stop`` and join the readers.

    Warnings are raised as errors meanwhile: a warning from routing while the state is being swapped is a failure.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for t in readers + writers:
            t.start()
        for t in writers:
            t.join()
        stop.set()
        for t in readers:
            t.join()


@pytest.fixture
def embedder():
    """The fast deterministic test embedder (callable list[str] -> array)."""
    return topic_embedder


@pytest.fixture(scope="session")
def mmlu_pro_path() -> Path:
    """The real MMLU-Pro routing folder, bundled with the package (resolved through importlib.resources)."""
    return MMLU_PRO


@pytest.fixture(scope="session")
def real_embedder():
    """The packaged default embedder behind the shared on-disk cache (real data is embedded once per machine)."""
    from uniroute_core.embedding import CachedEmbedder, default_cache_dir, default_embedder

    return CachedEmbedder(default_embedder(), default_cache_dir())


@pytest.fixture(scope="session")
def mmlu_pro_data(mmlu_pro_path):
    """The real MMLU-Pro routing data, loaded once per session."""
    from uniroute_core import load_routing_data

    return load_routing_data(mmlu_pro_path)
