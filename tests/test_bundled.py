"""A fresh clone runs with nothing beside it: bundled data by name, shipped vectors, the pretrained router."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from uniroute_core import ProbeSet, RoutingDataError, load_routing_data, write_routing_data
from uniroute_core.datasets import bundled_dataset_names, bundled_dataset_path, resolve_routing_data
from uniroute_core.datasets import vectors as shipped

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, cwd: Path, extra_path: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter from ``cwd`` with only ``extra_path`` added to the import path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "UNIROUTE_MMLU_PRO")}
    env["PYTHONPATH"] = str(extra_path)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


# ----------------------------------------------------------------------------------------- bundled data by name


def test_fresh_clone_resolves_bundled_data_from_any_folder(tmp_path):
    """From an empty working folder, the name resolves to the package's own copy (no folder beside the checkout)."""
    code = (
        "import json; from uniroute_core import load_routing_data, ProbeSet\n"
        "from uniroute_core.datasets import resolve_routing_data\n"
        "d = load_routing_data('mmlu_pro'); p = ProbeSet.from_routing_data('mmlu_pro', n=28, seed=0)\n"
        "print(json.dumps({'path': str(resolve_routing_data('mmlu_pro')), 'shape': list(d.scores.shape),"
        " 'name': d.name, 'probes': len(p), 'refs': sorted(set(p.references))[:1]}))"
    )
    done = run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(out["path"]).resolve() == (REPO / "uniroute_core" / "datasets" / "mmlu_pro").resolve()
    assert out["shape"] == [10279, 29] and out["name"] == "mmlu_pro" and out["probes"] == 28


def test_bundled_data_carries_its_card_and_licence_notice():
    folder = bundled_dataset_path("mmlu_pro")
    card = (folder / "DATACARD.md").read_text(encoding="utf-8")
    notice = (folder / "NOTICE.md").read_text(encoding="utf-8")
    assert "Apache-2.0" in card
    assert "Apache License 2.0" in notice and "MIT" in notice and "2406.01574" in notice


def test_unknown_name_lists_the_bundled_data_sets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RoutingDataError, match=r"'mmlu_pr' does not exist.*bundled data sets: mmlu_pro"):
        load_routing_data("mmlu_pr")
    with pytest.raises(FileNotFoundError, match="bundled data sets: mmlu_pro"):
        ProbeSet.from_routing_data("no_such_data", n=3)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(RoutingDataError, match="is a file, not a folder"):
        load_routing_data("a_file")
    assert bundled_dataset_names() == ["mmlu_pro"]


def test_a_folder_path_still_works(tmp_path):
    folder = write_routing_data(
        tmp_path / "mine", prompts=["a b", "c d"], models=["x", "y"], scores=np.array([[1, 0], [0, 1]]), costs=[1, 2]
    )
    assert load_routing_data(folder).name == "mine"
    assert load_routing_data(str(folder)).n_models == 2
    assert resolve_routing_data(folder) == folder


def test_a_local_folder_named_like_a_bundled_set_needs_a_path(tmp_path, monkeypatch):
    """A bare registered name always means the bundled set; ``./mmlu_pro`` means the local folder."""
    write_routing_data(tmp_path / "mmlu_pro", prompts=["a b"], models=["x"], scores=np.array([[1]]), costs=[1])
    monkeypatch.chdir(tmp_path)
    assert load_routing_data("mmlu_pro").n_prompts == 10279
    assert load_routing_data(f".{os.sep}mmlu_pro").n_prompts == 1


# ----------------------------------------------------------------------------------------- shipped vectors


def _table_file() -> Path:
    return bundled_dataset_path("mmlu_pro") / shipped.shipped_vectors_file("all-MiniLM-L6-v2")


def test_tampered_table_is_ignored_with_a_warning(tmp_path, monkeypatch):
    bad = tmp_path / "vectors.npz"
    np.savez(
        bad,
        format=np.array(shipped.FORMAT),
        embedder=np.array("all-MiniLM-L6-v2"),
        fingerprint=np.array("x"),
        keys=np.zeros((2, 32), dtype=np.uint8),
        vectors=np.zeros((2, 4), dtype=np.float16),
    )
    with pytest.raises(ValueError, match="duplicate text keys"):
        shipped.ShippedVectors.load(bad)
    np.savez(
        bad,
        format=np.array(shipped.FORMAT),
        embedder=np.array("e"),
        fingerprint=np.array("x"),
        keys=np.zeros((2, 32), dtype=np.uint8),
        vectors=np.full((2, 4), np.nan, dtype=np.float16),
    )
    with pytest.raises(ValueError, match="NaN"):
        shipped.ShippedVectors.load(bad)
    np.savez(bad, format=np.array("something-else/9"))
    with pytest.raises(ValueError, match="not a shipped-vectors table"):
        shipped.ShippedVectors.load(bad)

    # a damaged table inside a bundled data set: warned about, skipped, and the encoder is used instead
    def fake_bundled_path(name: str) -> Path:
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        (folder / shipped.shipped_vectors_file("all-MiniLM-L6-v2")).write_bytes(b"not an npz at all")
        return folder

    monkeypatch.setattr(shipped, "_tables", {})
    monkeypatch.setattr("uniroute_core.datasets.bundled_dataset_path", fake_bundled_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert shipped.shipped_tables("all-MiniLM-L6-v2") == []
    assert any("ignoring shipped vectors" in str(w.message) for w in caught)


# ----------------------------------------------------------------------------------------- pretrained router
