"""The CLI fails early and in one line: exit status 2 for bad input before any trial runs (or anything is embedded),
1 for an internal error, and a traceback only with ``--debug``."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from uniroute_core.cli import main
from uniroute_core.data import write_routing_data

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    words = ["math", "law", "bio", "code"]
    prompts = [f"{words[i % 4]} question {i} " + " ".join(rng.choice(words, 3)) for i in range(120)]
    scores = (rng.random((120, 4)) < [0.3, 0.5, 0.7, 0.9]).astype(float)
    return write_routing_data(
        tmp_path / "data", prompts=prompts, models=list("abcd"), scores=scores, costs=[1, 2, 4, 8]
    )


@pytest.fixture
def embedded(monkeypatch):
    """Texts the CLI's embedder was asked for (empty = the CLI stopped before any work)."""
    seen: list[str] = []
    real = sys.modules["conftest"].topic_embedder

    def counting(texts):
        seen.extend(texts)
        return real(texts)

    monkeypatch.setattr(sys.modules["conftest"], "topic_embedder", counting)
    return seen


def run_eval(folder, out, tmp_path, *extra):
    return main(["eval", "--data", str(folder), "--out", str(out), "--cache", str(tmp_path / "cache"), "--embedder",
                 "conftest:topic_embedder", "--quiet", "--trials", "1", "--methods", "zero,random", *extra])


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def rewrite_prompts(folder: Path, text: str | bytes) -> None:
    data = text.encode("utf-8") if isinstance(text, str) else text
    with gzip.open(folder / "prompts.csv.gz", "wb") as fh:
        fh.write(data)


def test_out_is_a_file(folder, tmp_path, capsys, embedded):
    (tmp_path / "taken").write_text("x")
    assert run_eval(folder, tmp_path / "taken", tmp_path) == 2
    one_line_error(capsys, "--out", "is a file")
    assert embedded == []
    assert main(["build", "--data", str(folder), "--out", str(tmp_path / "taken"), "--quiet",
                 "--embedder", "conftest:topic_embedder"]) == 2
    one_line_error(capsys, "--out", "is a file")
    assert embedded == []


def test_out_under_a_file(folder, tmp_path, capsys, embedded):
    (tmp_path / "taken").write_text("x")
    assert run_eval(folder, tmp_path / "taken" / "sub" / "out", tmp_path) == 2
    one_line_error(capsys, "cannot be created")
    assert embedded == []


def test_cache_is_a_file(folder, tmp_path, capsys, embedded):
    (tmp_path / "cache").write_text("x")
    assert run_eval(folder, tmp_path / "out", tmp_path) == 2
    one_line_error(capsys, "--cache", "is a file")


def test_gz_that_is_not_gzip(folder, tmp_path, capsys, embedded):
    (folder / "scores.csv.gz").write_text("prompt_id,model,score\n")
    assert run_eval(folder, tmp_path / "out", tmp_path) == 2
    one_line_error(capsys, "scores.csv.gz is not a gzip file")
    assert embedded == [] and not (tmp_path / "out").exists()


def test_invalid_utf8(folder, tmp_path, capsys, embedded):
    rewrite_prompts(folder, "prompt_id,category,split_hint,prompt\np0,,,caf\u00e9\n".encode("latin-1"))
    assert run_eval(folder, tmp_path / "out", tmp_path) == 2
    one_line_error(capsys, "prompts.csv.gz line 2: not UTF-8")
    assert embedded == []


def test_blank_prompt(folder, tmp_path, capsys, embedded):
    rewrite_prompts(folder, 'prompt_id,category,split_hint,prompt\np0,,,real words\np1,,,"  \n  "\n')
    assert run_eval(folder, tmp_path / "out", tmp_path) == 2
    one_line_error(capsys, "prompts.csv.gz line 3: prompt 'p1' is blank")
    assert embedded == []


def test_truncated_gzip(folder, tmp_path, capsys, embedded):
    raw = (folder / "scores.csv.gz").read_bytes()
    (folder / "scores.csv.gz").write_bytes(raw[: len(raw) // 2])
    assert run_eval(folder, tmp_path / "out", tmp_path) == 2
    one_line_error(capsys, "scores.csv.gz", "truncated")
    assert embedded == []


def test_a_byte_order_mark_and_a_200_kb_prompt_are_accepted(folder, tmp_path, capsys, embedded):
    with gzip.open(folder / "prompts.csv.gz", "rt", encoding="utf-8") as fh:
        text = fh.read()
    long_prompt = "math " * 40_000  # 200 KB: accepted (the embedder reads as many tokens as it takes)
    rewrite_prompts(folder, "\ufeff" + text.replace("math question 0", long_prompt, 1))
    assert run_eval(folder, tmp_path / "out", tmp_path) == 0
    assert (tmp_path / "out" / "results.json").is_file()
    assert any(len(t) > 200_000 for t in embedded)


def test_an_unknown_embedder_module_is_one_line(folder, tmp_path, capsys, embedded):
    code = main(["eval", "--data", str(folder), "--out", str(tmp_path / "o"), "--embedder", "no_such_module:fn"])
    assert code == 2
    one_line_error(capsys, "cannot import module 'no_such_module'")


def test_a_damaged_router_for_replay_and_show(folder, tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "router.json").write_text("[1, 2]")
    assert main(["replay", "--data", str(folder), "--router", str(tmp_path / "r")]) == 2
    one_line_error(capsys, "not a UniRoute router file")
    assert main(["show", str(tmp_path / "r")]) == 2
    one_line_error(capsys, "not a UniRoute router file")


def test_internal_errors_are_one_line_and_debug_shows_the_traceback(folder, tmp_path, capsys, monkeypatch):
    import uniroute_core.evaluation.protocol as protocol

    def broken(*args, **kwargs):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(protocol, "evaluate", broken)
    assert run_eval(folder, tmp_path / "out", tmp_path) == 1
    one_line_error(capsys, "internal error: ZeroDivisionError: boom", "--debug")
    with pytest.raises(ZeroDivisionError):
        run_eval(folder, tmp_path / "out", tmp_path, "--debug")
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "eval", "--data", str(folder), "--out", str(tmp_path / "o"), "--embedder",
              "conftest:topic_embedder", "--quiet", "--cache", str(tmp_path / "cache")])


def test_the_console_script_prints_one_line_and_exits_2(folder, tmp_path):
    (tmp_path / "taken").write_text("x")
    (folder / "models.csv").write_text("model,cost\na,1\nb\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "uniroute_core.cli", "eval", "--data", str(folder), "--out", str(tmp_path / "o")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "models.csv line 3" in done.stderr
    debug = subprocess.run(cmd + ["--debug"], capture_output=True, text=True, env=env, timeout=300)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "RoutingDataError" in debug.stderr
