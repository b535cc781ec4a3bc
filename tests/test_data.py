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


def test_a_one_megabyte_prompt_round_trips(tmp_path):
    huge = "word, \"quoted\"\nand a new line " * 35_000  # about 1.1 MB, past the csv module's 128 KiB default
    assert len(huge) > 1_000_000
    d = load_routing_data(make(tmp_path, prompts=[huge, "short", "plain"]))
    assert d.prompts[0] == huge and d.prompts[1:] == ["short", "plain"]
    from uniroute_core.probes import ProbeSet

    probes = ProbeSet.from_routing_data(tmp_path / "data")  # the probe reader is the same reader
    assert probes.prompts[0] == huge


def test_a_byte_order_mark_is_tolerated(tmp_path):
    folder = make(tmp_path)
    models = folder / "models.csv"
    models.write_bytes(b"\xef\xbb\xbf" + models.read_bytes())
    with gzip.open(folder / "prompts.csv.gz", "rb") as fh:
        raw = fh.read()
    with gzip.open(folder / "prompts.csv.gz", "wb") as fh:
        fh.write(b"\xef\xbb\xbf" + raw)
    d = load_routing_data(folder)
    assert d.models == ["a", "b"] and d.prompts == PROMPTS


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (
            "model,cost,cost_unit,source_of_cost\na,1,relative,given\nb,3.5\n",
            r"models.csv line 3: 2 field\(s\) where the header has 4",
        ),
        ("model,cost\na,1,extra\nb,2\n", r"models.csv line 2: 3 field\(s\) where the header has 2"),
        ("model,cost\na,1\n,2\n", "models.csv line 3: the model name is blank"),
        ("model,cost\na,1\na,2\n", "models.csv line 3: model 'a' is listed twice"),
        ("model,cost\na,inf\nb,2\n", r"models.csv line 2: model 'a' has cost 'inf'; expected a finite number >= 0"),
        ("model,cost\na,true\nb,2\n", "models.csv line 2: model 'a' has cost 'true', not a number"),
        ("model,cost\n", "models.csv lists no models"),
        ("", "models.csv is empty: expected a header row"),
        ("model,model\na,1\n", r"models.csv line 1: column\(s\) \['model'\] appear more than once"),
        ("model,cost\na,1\nb,\"2\n", "models.csv line 3: not readable as CSV"),
    ],
)
def test_bad_models_file_is_named_with_its_line(tmp_path, content, match):
    folder = make(tmp_path)
    (folder / "models.csv").write_text(content, encoding="utf-8")
    with pytest.raises(RoutingDataError, match=match):
        load_routing_data(folder)


def test_damaged_files_are_routing_data_errors(tmp_path):
    folder = make(tmp_path)
    prompts = folder / "prompts.csv.gz"
    good = prompts.read_bytes()
    prompts.write_bytes(b"prompt_id,prompt\np0,hello\n")  # plain text under a .gz name
    with pytest.raises(RoutingDataError, match="prompts.csv.gz is not a gzip file although its name ends in .gz"):
        load_routing_data(folder)
    prompts.write_bytes(good[: len(good) // 2])
    with pytest.raises(RoutingDataError, match="prompts.csv.gz near line 1: damaged or truncated"):
        load_routing_data(folder)
    with gzip.open(prompts, "wb") as fh:
        fh.write("prompt_id,prompt\np0,caf\u00e9\n".encode("latin-1"))
    with pytest.raises(RoutingDataError, match="prompts.csv.gz line 2: not UTF-8 text"):
        load_routing_data(folder)
    with gzip.open(prompts, "wt", encoding="utf-8") as fh:
        fh.write('prompt_id,prompt\np0,"fine"\np1,"  "\n')
    with pytest.raises(RoutingDataError, match=r"prompts.csv.gz line 3: prompt 'p1' is blank"):
        load_routing_data(folder)
    with gzip.open(prompts, "wt", encoding="utf-8") as fh:
        fh.write('prompt_id,prompt\np0,"two\nlines"\np0,again\n')
    with pytest.raises(RoutingDataError, match=r"prompts.csv.gz line 4: prompt_id 'p0' appears more than once"):
        load_routing_data(folder)
    (folder / "scores.csv.gz").unlink()
    (folder / "scores.csv.gz").mkdir()
    prompts.write_bytes(good)
    with pytest.raises(RoutingDataError, match="scores.csv.gz does not exist or is not a file"):
        load_routing_data(folder)


def test_sparse_folder_missing_rows_and_empty_scores_are_unknown(tmp_path):
    """Logs where each prompt was answered by one member: a missing row or an empty score is NaN, not wrong."""
    folder = make(tmp_path)
    rewrite_scores(folder, lambda ls: ls[:1] + ["p0,a,,A"] + ls[2:-1])  # (p0, a) empty; (p2, b) has no row
    d = load_routing_data(folder)
    assert np.isnan(d.scores[0, 0]) and np.isnan(d.scores[2, 1]) and not d.is_dense
    assert d.scores[1].tolist() == [0.5, 1.0] and d.scores[0, 1] == 0.0
    rewrite_scores(folder, lambda ls: ls + ["p0,a,,A"])  # an empty duplicate is still a duplicate
    with pytest.raises(RoutingDataError, match=r"\(p0, a\) is scored twice"):
        load_routing_data(folder)


def test_write_routing_data_writes_nan_as_empty_and_reads_it_back(tmp_path):
    scores = np.array([[1, np.nan], [np.nan, 0.25], [0, np.nan]])
    folder = make(tmp_path, scores=scores)
    with gzip.open(folder / "scores.csv.gz", "rt") as fh:
        assert "p0,b,,C" in fh.read().splitlines()
    d = load_routing_data(folder)
    np.testing.assert_array_equal(np.isnan(d.scores), np.isnan(scores))
    assert d.scores[1, 1] == 0.25
    with pytest.raises(ValueError, match=r"score 1.5 for prompt 0, model 'a' is outside \[0, 1\]"):
        make(tmp_path, scores=np.array([[1.5, 0], [0, 0], [0, 0]]))
