"""Packaging promises: the core imports without LangChain or LlamaIndex, and every package is typed."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest


def test_core_imports_no_framework():
    code = (
        "import sys, uniroute_core, uniroute_core.cli, uniroute_core.evaluation, uniroute_core.delegation;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('langchain_core', 'langchain', 'llama_index'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, f"uniroute_core imported framework modules: {done.stdout}{done.stderr}"


@pytest.mark.parametrize("package", ["uniroute_core", "uniroute_langchain", "uniroute_llamaindex"])
def test_packages_are_typed(package):
    module = importlib.import_module(package)
    assert (Path(module.__file__).parent / "py.typed").exists()


def test_console_script_entry_point():
    from uniroute_core.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
