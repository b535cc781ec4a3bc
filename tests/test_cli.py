"""`uniroute eval` end to end on a small generated routing folder (fast topic embedder, temporary cache)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from uniroute_core.cli import build_parser, main
from uniroute_core.data import write_routing_data

TOPICS = {
    "math": "integral derivative algebra equation matrix",
    "law": "court statute contract plaintiff judge",
    "bio": "cell protein gene enzyme organism",
}


TOY_MODELS = list("abcdef")
TOY_COSTS = [1, 1, 1, 3, 8, 10]


def toy_routing(rng: np.random.Generator) -> tuple[list[str], list[str], np.ndarray]:
    """Prompts, categories and 0/1 scores of 240 prompts in 3 categories × the 6 LLMs ``TOY_MODELS`` (costs
    ``TOY_COSTS``): three cheap topic specialists, a mid generalist, two dear generalists."""
    prompts, cats, p = [], [], []
    for i in range(240):
        t = list(TOPICS)[i % 3]
        prompts.append(f"{t} q{i}: " + " ".join(rng.choice(TOPICS[t].split(), 5)))
        cats.append(t)
        p.append([0.9 if t == "math" else 0.2, 0.9 if t == "law" else 0.2, 0.9 if t == "bio" else 0.2, 0.6, 0.85, 0.9])
    return prompts, cats, (rng.random((240, 6)) < np.array(p)).astype(float)


@pytest.fixture
def folder(tmp_path):
    """The toy routing folder of :func:`toy_routing` (seed 0)."""
    prompts, cats, scores = toy_routing(np.random.default_rng(0))
    return write_routing_data(
        tmp_path / "toy_routing", prompts=prompts, models=TOY_MODELS, scores=scores, costs=TOY_COSTS, categories=cats,
    )


def _run(folder, out, cache, *extra):
    return main(["eval", "--data", str(folder), "--out", str(out), "--cache", str(cache), "--embedder",
                 "conftest:topic_embedder", "--quiet", *extra])


def test_eval_writes_results_json_in_the_issue_schema_and_a_png(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(folder, out, tmp_path / "cache", "--trials", "2", "--seed", "3") == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["data"] == "toy_routing" and doc["n_prompts"] == 240 and doc["n_models"] == 6
    assert doc["trials"] == 2 and doc["seed"] == 3 and doc["embedder"] == "conftest:topic_embedder"
    # where the time went: each step of the command, and the method runs' share of the processes' time
    assert set(doc["phases"]) == {"load_data", "embed", "evaluate", "plot"} and min(doc["phases"].values()) >= 0
    assert doc["phases"]["evaluate"] == doc["seconds"] <= doc["wall_seconds"]
    assert doc["jobs"] >= 1 and 0 < doc["busy_seconds"] <= doc["jobs"] * doc["seconds"]
    assert set(doc["methods"]) == {"uniroute", "kmeans", "learned_map", "knn", "zero", "clairvoyant", "random"}
    for name, m in doc["methods"].items():
        for key in ("area", "area_mean", "area50_mean", "qnc", "qnc_mean"):
            assert key in m, (name, key)
        assert len(m["area"]) == 2 and all(0.0 <= a <= 1.0 for a in m["area"])
        assert all(q is None or q > 0 for q in m["qnc"])
    assert len(doc["methods"]["kmeans"]["n_clusters"]) == 2 and len(doc["methods"]["learned_map"]["n_clusters"]) == 2
    assert doc["best_single"] == {"model": "f", "quality": pytest.approx(doc["best_single"]["quality"]), "cost": 10.0}
    assert doc["methods"]["uniroute"]["representation"][0] in ("zero", "kmeans", "multires", "probe_knn", "blend")
    chosen = doc["methods"]["uniroute"]["chosen"]  # every trial's full choice, whatever its keys
    assert len(chosen) == 2 and chosen[0]["representation"] == doc["methods"]["uniroute"]["representation"][0]
    assert [c["k"] for c in doc["methods"]["knn"]["chosen"]] == doc["methods"]["knn"]["k"]
    for key in ("uniroute_vs_knn", "uniroute_vs_zero", "kmeans_vs_knn", "kmeans_vs_zero", "learned_map_vs_knn",
                "learned_map_vs_zero"):
        t = doc["sign_test"][key]
        assert t["wins"] + t["losses"] <= 2 and 0.0 <= t["p"] <= 1.0
    png = (out / "deferral_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    printed = capsys.readouterr().out
    assert "Area(50%)" in printed and "learned_map" in printed and "sign test" in printed


def test_second_run_reads_the_embedding_cache(folder, tmp_path, monkeypatch):
    import sqlite3
    import sys

    cache = tmp_path / "cache"
    assert _run(folder, tmp_path / "o1", cache, "--trials", "1", "--methods", "zero,random") == 0
    with sqlite3.connect(cache / "embeddings.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM vectors").fetchone()[0] == 240
    embedded: list[str] = []
    real = sys.modules["conftest"].topic_embedder

    def counting(texts):
        embedded.extend(texts)
        return real(texts)

    monkeypatch.setattr(sys.modules["conftest"], "topic_embedder", counting)
    assert _run(folder, tmp_path / "o2", cache, "--trials", "1", "--methods", "zero,random") == 0
    assert embedded == []  # every vector came from the cache
    a = json.loads((tmp_path / "o1" / "results.json").read_text())["methods"]["zero"]["area"]
    b = json.loads((tmp_path / "o2" / "results.json").read_text())["methods"]["zero"]["area"]
    assert a == b


def test_method_subset_and_fixed_k(folder, tmp_path):
    out = tmp_path / "out"
    assert _run(folder, out, tmp_path / "cache", "--trials", "1", "--methods", "kmeans,zero", "--n-clusters", "3") == 0
    doc = json.loads((out / "results.json").read_text())
    assert set(doc["methods"]) == {"kmeans", "zero"} and doc["methods"]["kmeans"]["n_clusters"] == [3]
    assert set(doc["sign_test"]) == {"kmeans_vs_zero"}


def test_bad_input_is_reported_clearly(folder, tmp_path, capsys):
    assert main(["eval", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "cannot read routing data" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--data", str(folder), "--out", str(tmp_path / "o"), "--methods", "kmeans,bogus"])
    assert "unknown method" in capsys.readouterr().err
    assert _run(folder, tmp_path / "o", tmp_path / "cache", "--embedder", "conftest:not_there") == 2
    err = capsys.readouterr().err
    assert "no attribute" in err and err.count("\n") == 1


def test_parser_has_eval_subcommand():
    parser = build_parser()
    args = parser.parse_args(["eval", "--data", "d", "--out", "o"])
    assert args.trials == 20 and args.seed == 0 and args.command == "eval" and callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args([])


def test_a_saved_results_json_can_be_replotted(folder, tmp_path):
    from uniroute_core.evaluation.plotting import plot_deferral_curves

    out = tmp_path / "out"
    assert _run(folder, out, tmp_path / "cache", "--trials", "1", "--methods", "kmeans,random") == 0
    doc = json.loads((out / "results.json").read_text())
    png = plot_deferral_curves(doc, tmp_path / "again.png")  # no ZeroRouter: single panel
    assert png.read_bytes()[:4] == b"\x89PNG"
