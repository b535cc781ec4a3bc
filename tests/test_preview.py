"""`uniroute replay` / preview_router: a saved router's cost, quality and share of calls on logged prompts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from uniroute_core import UniRouter, load_routing_data, write_routing_data
from uniroute_core.cli import build_parser, run_replay
from uniroute_core.evaluation.preview import (
    MissingMembersError,
    format_comparison,
    preview_router,
    summarise_calls,
)

MATH = ["math: add 2 and 3", "math: solve x + 1 = 4", "math: what is 7 times 6"]
LAW = ["law: define a tort", "law: what is habeas corpus", "law: what is a contract"]
PROBES = ["math: probe one", "math: probe two", "law: probe one", "law: probe two"]


def two_topic_embedder(texts):
    """Math prompts at (1, 0), law prompts at (0, 1): two clusters with no ambiguity."""
    return np.array([[1.0, 0.0] if t.startswith("math") else [0.0, 1.0] for t in texts])


def make_router() -> UniRouter:
    """calc (cost 1) knows math, lawyer (cost 2) knows law, big (cost 10) knows both (scores on the 4 probes)."""
    router = UniRouter(embedder=two_topic_embedder, n_clusters=2, shrinkage=0.0, show_progress=False)
    router.fit(MATH + LAW).set_probes(PROBES)
    router.add_model("calc", cost=1.0, scores=[1, 1, 0, 0])
    router.add_model("lawyer", cost=2.0, scores=[0, 0, 1, 1])
    router.add_model("big", cost=10.0, scores=[1, 1, 1, 1])
    return router


# logged scores of the 6 prompts (MATH + LAW) for calc, lawyer, big, and an extra model the router does not have
LOGGED = np.array(
    [
        # calc lawyer big  extra
        [1, 0, 1, 1],
        [1, 0, 1, 1],
        [0, 0, 1, 1],
        [0, 1, 1, 1],
        [0, 1, 1, 1],
        [0, 1, 0, 1],
    ],
    dtype=float,
)


@pytest.fixture
def logged_data(tmp_path):
    folder = write_routing_data(
        tmp_path / "logs", prompts=MATH + LAW, models=["calc", "lawyer", "big", "extra"], scores=LOGGED,
        costs=[1.0, 2.0, 10.0, 5.0],
    )
    return load_routing_data(folder)


def test_router_at_lambda_zero_sends_math_to_calc_and_law_to_lawyer(logged_data):
    result = preview_router(make_router(), logged_data)
    r = result.router
    assert result.n_prompts == 6 and result.lam == 0.0
    # math → calc (scores 1,1,0), law → lawyer (1,1,1): 5/6 correct; cost (3·1 + 3·2)/6 = 1.5
    assert r.mean_quality == pytest.approx(5 / 6)
    assert r.mean_cost == pytest.approx(1.5)
    assert r.share == {"lawyer": 0.5, "calc": 0.5}
    assert r.member_quality == {"lawyer": 1.0, "calc": pytest.approx(2 / 3)}
    # always the most accurate on these prompts: big (5/6 at cost 10); cheapest: calc (2/6 at cost 1)
    assert (result.most_accurate.name, result.most_accurate.mean_quality, result.most_accurate.mean_cost) == (
        "always big", pytest.approx(5 / 6), 10.0)
    assert (result.cheapest.name, result.cheapest.mean_quality, result.cheapest.mean_cost) == (
        "always calc", pytest.approx(2 / 6), 1.0)
    assert result.ignored_models == ("extra",)
    text = result.format()
    assert "0.8333" in text and "85.0% lower mean cost" in text and "+0.00 points" in text


def test_large_lambda_routes_every_call_to_the_cheapest_member(logged_data):
    result = preview_router(make_router(), logged_data, lam=100.0)
    assert result.router.share == {"calc": 1.0}
    assert result.router.mean_quality == pytest.approx(result.cheapest.mean_quality)


def test_budget_is_calibrated_on_the_probes(logged_data):
    # λ = 0 costs 1.5 per probe call; a budget of 1.0 only fits "always calc"
    assert preview_router(make_router(), logged_data, budget=1.5).router.mean_cost == pytest.approx(1.5)
    tight = preview_router(make_router(), logged_data, budget=1.0)
    assert tight.mode == "budget" and tight.router.share == {"calc": 1.0}


def test_probe_prompts_in_the_logs_are_left_out_unless_asked(tmp_path):
    prompts = MATH + LAW + [PROBES[0]]
    scores = np.vstack([LOGGED[:, :3], [[1, 0, 1]]])
    data = load_routing_data(write_routing_data(tmp_path / "d", prompts=prompts, models=["calc", "lawyer", "big"],
                                                scores=scores, costs=[1, 2, 10]))
    assert preview_router(make_router(), data).n_excluded_probes == 1
    kept = preview_router(make_router(), data, exclude_probes=False)
    assert (kept.n_prompts, kept.n_excluded_probes) == (7, 0)


def test_members_absent_from_the_data_are_named(tmp_path):
    data = load_routing_data(write_routing_data(tmp_path / "d", prompts=MATH + LAW, models=["calc"],
                                                scores=LOGGED[:, :1], costs=[1]))
    with pytest.raises(MissingMembersError, match=r"\['lawyer', 'big'\]"):
        preview_router(make_router(), data)


def test_lam_and_budget_together_are_refused(logged_data):
    with pytest.raises(ValueError, match="only one"):
        preview_router(make_router(), logged_data, lam=0.1, budget=2.0)


def test_summarise_calls_checks_its_input():
    with pytest.raises(ValueError, match="one member and one quality per call"):
        summarise_calls("p", ["a"], [1.0, 0.0], {"a": 1.0})
    with pytest.raises(ValueError, match=r"\['b'\] have no cost"):
        summarise_calls("p", ["a", "b"], [1.0, 0.0], {"a": 1.0})
    with pytest.raises(ValueError, match="no call"):
        summarise_calls("p", [], [], {"a": 1.0})


def test_format_comparison_shows_relative_cost_and_shares():
    routed = summarise_calls("router", ["a", "b", "b", "b"], [1, 1, 0, 1], {"a": 4.0, "b": 1.0})
    best = summarise_calls("always a", ["a"] * 4, [1, 1, 1, 1], {"a": 4.0})
    text = format_comparison([routed, best], reference=best)
    assert routed.mean_cost == pytest.approx(1.75)
    assert "43.8%" in text  # 1.75 / 4
    assert "75.0%" in text and "25.0%" in text  # shares of b and a


def _replay_args(argv):
    return build_parser().parse_args(["replay", *argv])


def test_cli_explains_a_router_saved_with_a_custom_embedder(tmp_path, capsys):
    data = write_routing_data(tmp_path / "d", prompts=MATH + LAW, models=["calc"], scores=LOGGED[:, :1], costs=[1])
    router = make_router()
    router.save(tmp_path / "router")
    # the router was saved with a custom callable embedder: the command line cannot rebuild it and says so
    assert run_replay(_replay_args(["--data", str(data), "--router", str(tmp_path / "router")])) == 2
    assert "custom embedder" in capsys.readouterr().err


def test_cli_lam_and_budget_are_mutually_exclusive():
    with pytest.raises(SystemExit):
        _replay_args(["--data", "d", "--router", "r", "--lam", "0.1", "--budget", "3"])


@pytest.mark.slow
def test_cli_replays_a_saved_default_embedder_router(tmp_path, capsys, monkeypatch):
    """End to end through the real packaged embedder: save, then `uniroute replay` prints the preview and JSON."""
    monkeypatch.setenv("UNIROUTE_CACHE", str(tmp_path / "cache"))
    prompts = ["Solve 3x + 5 = 20 for x.", "What is the derivative of x squared?", "Compute 17 times 23.",
               "What does the Fourth Amendment protect?", "Define tort law.", "What is a breach of contract?"]
    router = UniRouter(n_clusters=2, shrinkage=0.0, show_progress=False).fit(prompts)
    router.set_probes(prompts[:2] + prompts[3:5])
    router.add_model("calc", cost=1.0, scores=[1, 1, 0, 0])
    router.add_model("big", cost=10.0, scores=[1, 1, 1, 1])
    router.save(tmp_path / "router")
    folder = write_routing_data(tmp_path / "logs", prompts=prompts, models=["calc", "big"],
                                scores=LOGGED[:, [0, 2]], costs=[1, 10])
    assert run_replay(_replay_args(["--data", str(folder), "--router", str(tmp_path / "router"), "--json"])) == 0
    out = json.loads(capsys.readouterr().out)
    expected = preview_router(router, load_routing_data(folder)).to_dict()
    assert out == json.loads(json.dumps(expected))
    assert out["n_prompts"] == 2 and out["n_excluded_probes"] == 4
    bad = write_routing_data(tmp_path / "bad", prompts=prompts, models=["calc"], scores=LOGGED[:, :1], costs=[1])
    assert run_replay(_replay_args(["--data", str(bad), "--router", str(tmp_path / "router")])) == 2
    assert "['big']" in capsys.readouterr().err
