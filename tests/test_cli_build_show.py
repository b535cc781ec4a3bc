"""`uniroute build` (from a routing-data folder or a prompts file) and `uniroute show` end to end (fast embedder)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import topic_embedder

from uniroute_core import UniRouter
from uniroute_core.cli import main
from uniroute_core.data import write_routing_data

TOPICS = {
    "math": "integral derivative algebra equation matrix",
    "law": "court statute contract plaintiff judge",
    "bio": "cell protein gene enzyme organism",
}
EMB = ["--embedder", "conftest:topic_embedder"]


@pytest.fixture
def folder(tmp_path):
    """300 prompts in 3 topics with references, 4 models: three specialists and a dear generalist."""
    rng = np.random.default_rng(0)
    prompts, cats, p = [], [], []
    for i in range(300):
        t = list(TOPICS)[i % 3]
        prompts.append(f"{t} q{i}: " + " ".join(rng.choice(TOPICS[t].split(), 5)))
        cats.append(t)
        p.append([0.9 if t == "math" else 0.2, 0.9 if t == "law" else 0.2, 0.9 if t == "bio" else 0.2, 0.85])
    scores = (rng.random((300, 4)) < np.array(p)).astype(float)
    return write_routing_data(
        tmp_path / "toy",
        prompts=prompts,
        models=["m", "l", "b", "big"],
        scores=scores,
        costs=[1, 1, 1, 10],
        categories=cats,
        references=["A"] * 300,
    )


def test_build_from_routing_data_then_show(folder, tmp_path, capsys):
    out = tmp_path / "router"
    assert (
        main(["build", "--data", str(folder), "--out", str(out), "--probes", "90", "--repeats", "3", "--quiet", *EMB])
        == 0
    )
    text = capsys.readouterr().out
    assert re.search(r"K = \d+, shrinkage [\d.]+, 90 probes, map fitted on 210 prompts, 4 members", text)
    assert "| K | α=0 | α=2 | α=10 |" in text  # the validation table
    router = UniRouter.load(out, embedder=topic_embedder)
    assert router.models == ["m", "l", "b", "big"] and len(router.probes) == 90
    assert router.probes.references is not None and router.probes.grader_name == "multiple_choice"

    assert main(["show", str(out), "--budgets", "2,5", *EMB]) == 0
    shown = capsys.readouterr().out
    assert "conftest:topic_embedder" in shown and "90 (with references, grader multiple_choice)" in shown
    for name in ("m", "l", "b", "big"):
        assert re.search(rf"^{name}\s+\S+\s+[\d.]+\s+90$", shown, re.M), shown
    assert re.search(r"budget\s+2\s+λ = [\d.]+", shown) and re.search(r"budget\s+5\s+λ = [\d.]+", shown)
    assert "per-cluster quality" in shown


def test_build_with_fixed_k_and_no_members(folder, tmp_path, capsys):
    out = tmp_path / "map"
    assert (
        main(
            [
                "build",
                "--data",
                str(folder),
                "--out",
                str(out),
                "--n-clusters",
                "3",
                "--members",
                "none",
                "--probes",
                "60",
                "--quiet",
                *EMB,
            ]
        )
        == 0
    )
    router = UniRouter.load(out, embedder=topic_embedder)
    assert router.cluster_map.n_clusters_ == 3 and router.models == []
    assert main(["show", str(out), *EMB]) == 0
    assert "members       none" in capsys.readouterr().out


def test_build_from_a_prompts_file(tmp_path, capsys):
    rng = np.random.default_rng(1)
    lines = [f"{t} " + " ".join(rng.choice(w.split(), 4)) + f" {i}" for i in range(120) for t, w in TOPICS.items()]
    for suffix, body in ((".txt", "\n".join(lines)), (".jsonl", "\n".join(json.dumps({"prompt": x}) for x in lines))):
        src = tmp_path / f"prompts{suffix}"
        src.write_text(body, encoding="utf-8")
        out = tmp_path / f"router{suffix}"
        assert main(["build", "--prompts", str(src), "--out", str(out), "--probes", "100", "--quiet", *EMB]) == 0
        router = UniRouter.load(out, embedder=topic_embedder)
        assert router.cluster_map.n_clusters_ == 2  # about one cluster per 50 probes
        assert len(router.probes) == 100 and router.probes.references is None


def test_build_and_show_errors_are_clear(folder, tmp_path, capsys):
    assert main(["build", "--data", "no_such_data", "--out", str(tmp_path / "x"), *EMB]) == 2
    assert "bundled data sets: mmlu_pro" in capsys.readouterr().err
    assert main(["build", "--data", str(folder), "--out", str(tmp_path / "x"), "--members", "m,zz", *EMB]) == 2
    assert "--members ['zz'] not in 'toy'" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert main(["build", "--prompts", str(empty), "--out", str(tmp_path / "y"), *EMB]) == 2
    assert "holds no prompts" in capsys.readouterr().err
    assert main(["show", str(tmp_path / "nothing-here")]) == 2
    assert "not a saved router folder" in capsys.readouterr().err
    assert main(["build", "--data", str(folder), "--out", str(tmp_path / "z"), "--probes", "300", *EMB]) == 2
    assert "n_probes must be between 2 and 299" in capsys.readouterr().err
    out = tmp_path / "r"
    args = ["build", "--data", str(folder), "--out", str(out), "--n-clusters", "2", "--probes", "50", "--quiet", *EMB]
    assert main(args) == 0
    assert main(args) == 2
    assert "pass --force" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["show", str(out), "--budgets", "-3"])


def test_show_pretrained(capsys):
    assert main(["show", "pretrained"]) == 0
    shown = capsys.readouterr().out
    assert "all-MiniLM-L6-v2" in shown and "300 (with references, grader multiple_choice)" in shown
    assert "members       none" in shown
