"""Saving and loading routers: identical decisions, no pickle, and precise errors for damaged files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_router import PROBES, SMALL, TRAIN, two_topic_router
from uniroute_core import ProbeSet, RouterFileError, UniRouter
from uniroute_core.persistence import JSON_FILE, saved_files

PROMPTS = ["math homework", "law contract", "math proof", "law tort", "something else entirely"]


def rewrite_arrays(folder, edit) -> None:
    """Replace a saved router's arrays with ``edit(arrays)`` and re-record their SHA-256 in the manifest (so what
    is tested is the loader's value and shape checks, not the hash check)."""
    import hashlib

    meta_path, arrays_path = saved_files(folder)
    with np.load(arrays_path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays = edit(arrays) or arrays
    np.savez(arrays_path, **arrays)
    meta = json.loads(meta_path.read_text())
    meta["arrays"]["sha256"] = hashlib.sha256(arrays_path.read_bytes()).hexdigest()
    meta_path.write_text(json.dumps(meta))


def decisions(router: UniRouter, **kw):
    return [(d.model, d.ranking, d.expected_quality) for d in router.route(PROMPTS, **kw)]


def test_round_trip_gives_identical_decisions(embedder, tmp_path):
    router = two_topic_router(embedder, shrinkage=1.5)
    router.add_model("mid", cost=4.0, scores=[1, 0, 1, np.nan, 1, 1, 1, 0, 1, 0])
    router.save(tmp_path / "r")
    loaded = UniRouter.load(tmp_path / "r", embedder=embedder)
    assert loaded.models == router.models and loaded.costs == router.costs
    for kw in ({"lam": 0.0}, {"lam": 0.3}, {"lam": 2.0}, {"budget": 4.0}, {"min_quality": 0.8}):
        assert decisions(loaded, **kw) == decisions(router, **kw)
    np.testing.assert_array_equal(loaded.profiles["mid"].probe_scores, router.profiles["mid"].probe_scores)
    # a loaded router keeps working: profile another model on the same probes
    loaded.add_model("late", cost=0.5, scores=SMALL)
    assert "late" in loaded.models


def test_saved_files_are_json_and_plain_npz(embedder, tmp_path):
    two_topic_router(embedder).save(tmp_path)
    meta = json.loads((tmp_path / JSON_FILE).read_text())
    assert meta["format"] == "uniroute-router" and meta["format_version"] == 6
    assert [m["name"] for m in meta["models"]] == ["small", "big"]
    assert meta["probes"]["prompts"] == PROBES
    arrays_path = saved_files(tmp_path)[1]
    assert arrays_path.name == meta["arrays"]["file"] and arrays_path.name.startswith("arrays-")
    with np.load(arrays_path, allow_pickle=False) as z:  # would raise on object arrays
        assert z["probe_scores"].shape == (2, len(PROBES))
        assert all(z[k].dtype != object for k in z.files)


def test_probe_references_and_grader_survive(embedder, tmp_path):
    router = UniRouter(embedder=embedder, n_clusters=2, show_progress=False).fit(TRAIN)
    router.set_probes(ProbeSet(prompts=PROBES, references=list("ABCDABCDAB"), grader="multiple_choice"))
    router.add_model("small", 1.0, SMALL)
    router.save(tmp_path)
    loaded = UniRouter.load(tmp_path, embedder=embedder)
    assert loaded.probes.references == tuple("ABCDABCDAB")
    assert loaded.probes.grade(2, "The answer is (C).") == 1.0


def test_custom_grader_must_be_passed_again_to_profile(embedder, tmp_path):
    router = UniRouter(embedder=embedder, n_clusters=2, show_progress=False).fit(TRAIN)
    router.set_probes(ProbeSet(prompts=PROBES, references=["x"] * 10, grader=lambda r, ref: float(r == ref)))
    router.add_model("small", 1.0, SMALL)
    router.save(tmp_path)
    loaded = UniRouter.load(tmp_path, embedder=embedder)
    assert loaded.route_one("math q").model == "small"  # routing needs no grader
    with pytest.raises(RuntimeError, match="custom grader"):
        loaded.probes.grade(0, "x")
    regraded = UniRouter.load(tmp_path, embedder=embedder, grader="exact")
    assert regraded.probes.grade(0, "x") == 1.0


def test_missing_files(embedder, tmp_path):
    two_topic_router(embedder).save(tmp_path)
    arrays_path = saved_files(tmp_path)[1]
    arrays_path.unlink()
    with pytest.raises(RouterFileError, match=f"missing {arrays_path.name}"):
        UniRouter.load(tmp_path, embedder=embedder)
    with pytest.raises(RouterFileError, match="not a directory"):
        UniRouter.load(tmp_path / "nowhere", embedder=embedder)


def test_other_format_version(embedder, tmp_path):
    two_topic_router(embedder).save(tmp_path)
    meta = json.loads((tmp_path / JSON_FILE).read_text())
    meta["format_version"] = 99
    (tmp_path / JSON_FILE).write_text(json.dumps(meta))
    with pytest.raises(RouterFileError, match="format version 99; this UniRoute reads versions 1, 2, 3"):
        UniRouter.load(tmp_path, embedder=embedder)


def test_shapes_that_disagree(embedder, tmp_path):
    two_topic_router(embedder).save(tmp_path)
    rewrite_arrays(tmp_path, lambda a: {**a, "probe_scores": a["probe_scores"][:, :5]})
    with pytest.raises(RouterFileError, match=r"'probe_scores' has shape \(2, 5\), expected \(2, 10\)"):
        UniRouter.load(tmp_path, embedder=embedder)


def test_cluster_centers_that_disagree(embedder, tmp_path):
    two_topic_router(embedder).save(tmp_path)
    rewrite_arrays(tmp_path, lambda a: {**a, "map/cluster_centers": a["map/cluster_centers"][:1]})
    with pytest.raises(RouterFileError, match="cluster_centers has shape"):
        UniRouter.load(tmp_path, embedder=embedder)


def test_embedder_of_another_dimension(embedder, tmp_path):
    two_topic_router(embedder).save(tmp_path)
    with pytest.raises(RouterFileError, match="gives 3-dimensional vectors .* dimension 16"):
        UniRouter.load(tmp_path, embedder=lambda texts: np.ones((len(texts), 3)))


def test_custom_embedder_must_be_passed(embedder, tmp_path):
    two_topic_router(embedder).save(tmp_path)
    with pytest.raises(RouterFileError, match="custom embedder 'topic_embedder'; pass the same one"):
        UniRouter.load(tmp_path)


def test_not_a_router_file(tmp_path):
    (tmp_path / JSON_FILE).write_text(json.dumps({"format": "something-else"}))
    np.savez(tmp_path / "arrays.npz", x=np.zeros(1))
    with pytest.raises(RouterFileError, match="not a UniRoute router file"):
        UniRouter.load(tmp_path)


