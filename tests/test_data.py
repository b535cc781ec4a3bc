"""Reading routing data folders: the standard format, quoting, and precise errors."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from uniroute_core import RoutingDataError, load_routing_data, write_routing_data

PROMPTS = ['Say "hi", then\nsay bye', "2, 3, or 4?", "plain"]


def make(tmp_path, **kw):
    args = dict(
        prompts=PROMPTS,
        models=["a", "b"],
        scores=np.array([[1, 0], [0.5, 1], [0, 0]]),
        costs=[1.0, 3.5],
        categories=["x", "y", ""],
        references=["A", "B", "C"],
        responses=np.array([["A", "C"], ["B", "B"], ["", "D"]]),
    )
    args.update(kw)
    return write_routing_data(tmp_path / "data", **args)


def test_round_trip_with_quotes_commas_and_newlines(tmp_path):
    d = load_routing_data(make(tmp_path))
    assert d.prompts == PROMPTS and d.models == ["a", "b"] and d.name == "data"
    np.testing.assert_array_equal(d.scores, [[1, 0], [0.5, 1], [0, 0]])
    np.testing.assert_array_equal(d.costs, [1.0, 3.5])
    assert d.categories == ["x", "y", ""] and d.references == ["A", "B", "C"]
    assert d.responses[2, 0] == "" and d.responses[0, 1] == "C"
    sub = d.subset([2, 0], models=["b"])
    assert sub.prompts == ["plain", PROMPTS[0]] and sub.scores.tolist() == [[0.0], [0.0]]


def test_optional_columns_absent(tmp_path):
    d = load_routing_data(make(tmp_path, references=None, responses=None, categories=None))
    assert d.references is None and d.responses is None and d.categories == ["", "", ""]


def rewrite_scores(folder, edit):
    path = folder / "scores.csv.gz"
    with gzip.open(path, "rt") as fh:
        lines = fh.read().splitlines()
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(edit(lines)) + "\n")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda ls: ls[:-1], r"1 \(prompt, model\) pairs have no score, e.g. \(p2, b\)"),
        (lambda ls: ls + [ls[1]], r"\(p0, a\) is scored twice"),
        (lambda ls: ls[:1] + ["p0,a,1.7,A"] + ls[2:], r"score 1.7 for \(p0, a\) is outside \[0, 1\]"),
        (lambda ls: ls[:1] + ["p0,zz,1,A"] + ls[2:], "model 'zz' is not in models.csv"),
        (lambda ls: ls[:1] + ["p9,a,1,A"] + ls[2:], "prompt_id 'p9' is not in prompts.csv.gz"),
        (lambda ls: ls[:1] + ["p0,a,yes,A"] + ls[2:], "score 'yes' is not a number"),
    ],
)
def test_bad_scores_are_named(tmp_path, edit, match):
    folder = make(tmp_path)
    rewrite_scores(folder, edit)
    with pytest.raises(RoutingDataError, match=match):
        load_routing_data(folder)


def test_missing_file_and_column(tmp_path):
    folder = make(tmp_path)
    (folder / "models.csv").write_text("name,price\na,1\n")
    with pytest.raises(RoutingDataError, match=r"missing column\(s\) \['model', 'cost'\]"):
        load_routing_data(folder)
    (folder / "models.csv").unlink()
    with pytest.raises(RoutingDataError, match="has no models.csv"):
        load_routing_data(folder)
    with pytest.raises(RoutingDataError, match="does not exist"):
        load_routing_data(tmp_path / "absent")


def test_negative_cost(tmp_path):
    folder = make(tmp_path, costs=[1.0, -2.0])
    with pytest.raises(RoutingDataError, match="model 'b' has cost '-2.0'; expected a finite number >= 0"):
        load_routing_data(folder)


def test_reads_the_real_folder(mmlu_pro_path):
    d = load_routing_data(mmlu_pro_path)
    assert d.n_models >= 2 and d.n_prompts > 1000
    assert d.scores.shape == (d.n_prompts, d.n_models)
    assert np.all((d.scores >= 0) & (d.scores <= 1)) and np.all(d.costs > 0)
    assert d.references is not None and d.responses is not None
