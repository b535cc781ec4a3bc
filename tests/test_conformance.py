"""The conformance scenarios of ``uniroute_core.testing`` run against BOTH adapters: a difference is a failing test."""

from __future__ import annotations

import pytest

from uniroute_core.testing import SCENARIOS, AdapterHarness
from uniroute_langchain.testing import LangChainHarness
from uniroute_llamaindex.testing import LlamaIndexHarness

HARNESSES: list[AdapterHarness] = [LangChainHarness(), LlamaIndexHarness()]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
@pytest.mark.parametrize("harness", HARNESSES, ids=lambda h: h.name)
def test_conformance(harness: AdapterHarness, scenario) -> None:
    scenario(harness)
