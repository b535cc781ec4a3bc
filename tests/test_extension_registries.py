"""One registry pattern for the four extension points: a new cluster-map kind is servable AND evaluable without
touching the harness; a registered grader comes back by name when a router is loaded; CLI commands and evaluation
methods are registered objects."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from conftest import topic_embedder

from tests.test_evaluation import FAST, _toy_data
from uniroute_core import ProbeSet, UniRouter
from uniroute_core.cli import COMMANDS, build_parser, command, main
from uniroute_core.cluster_map import CLUSTER_MAPS, ClusterMap, register_cluster_map
from uniroute_core.evaluation import (
    EVALUATION_METHODS,
    EvaluationConfig,
    EvaluationMethod,
    MethodOutcome,
    TrialContext,
    available_methods,
    evaluate,
    format_table,
    get_method,
    make_trial_splits,
    register_method,
    router_curve,
    run_trial,
)
from uniroute_core.evaluation._optional import MissingOptionalDependencyError
from uniroute_core.evaluation.plotting import plot_deferral_curves
from uniroute_core.grading import GRADERS, REFERENCE_CHECKS, register_grader, resolve_grader
from uniroute_core.registry import UnknownNameError


class NearestSeedPointsMap(ClusterMap):
    """A toy cluster-map kind: K training prompts drawn with ``seed`` are the centres; Φ = one-hot nearest."""

    kind = "toy_seed_points"

    def __init__(self, n_clusters: int = 2, seed: int = 0) -> None:
        self.n_clusters = n_clusters
        self.seed = seed

    def fit(self, embeddings: np.ndarray, **kwargs: Any) -> NearestSeedPointsMap:
        x = self._check_input(embeddings)
        pick = np.random.default_rng(self.seed).choice(len(x), size=self.n_clusters, replace=False)
        self.centers_ = x[np.sort(pick)]
        self.n_clusters_, self.dim_ = self.n_clusters, int(x.shape[1])
        return self

    def assign(self, embeddings: np.ndarray) -> np.ndarray:
        x = self._check_input(embeddings)
        d2 = ((x[:, None, :] - self.centers_[None, :, :]) ** 2).sum(-1)
        return np.eye(self.n_clusters_)[np.argmin(d2, axis=1)]

    def get_config(self) -> dict[str, Any]:
        return {"n_clusters": self.n_clusters_, "seed": self.seed, "dim": self.dim_}

    def get_arrays(self) -> dict[str, np.ndarray]:
        return {"centers": self.centers_}

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> NearestSeedPointsMap:
        obj = cls(n_clusters=int(config["n_clusters"]), seed=int(config["seed"]))
        obj.centers_ = np.asarray(arrays["centers"], dtype=np.float32)
        obj.n_clusters_, obj.dim_ = obj.n_clusters, int(config["dim"])
        return obj


@pytest.fixture
def toy_kind():
    register_cluster_map(NearestSeedPointsMap)
    yield NearestSeedPointsMap.kind
    CLUSTER_MAPS.unregister(NearestSeedPointsMap.kind)


TRAIN = [f"math question number {i}" for i in range(15)] + [f"law question number {i}" for i in range(15)]
PROBES = [f"math probe {i}" for i in range(6)] + [f"law probe {i}" for i in range(4)]


def test_a_registered_cluster_map_kind_is_servable_and_saved_by_name(toy_kind, tmp_path):
    router = UniRouter(embedder=topic_embedder, n_clusters=3, cluster_map=toy_kind, show_progress=False)
    router.fit(TRAIN).set_probes(PROBES)
    router.add_model("small", cost=1.0, scores=[1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    router.add_model("big", cost=10.0, scores=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0])
    prompts = ["math question number 99", "law question number 99"]
    decisions = [d.model for d in router.route(prompts, lam=0.05)]
    router.save(tmp_path / "r")
    loaded = UniRouter.load(tmp_path / "r", embedder=topic_embedder, show_progress=False)
    assert type(loaded.cluster_map) is NearestSeedPointsMap
    assert [d.model for d in loaded.route(prompts, lam=0.05)] == decisions


def test_an_unregistered_kind_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match="unknown cluster map kind 'no_such_kind'.*kmeans"):
        UniRouter(cluster_map="no_such_kind")
    with pytest.raises(UnknownNameError, match="known cluster map kinds: 'kmeans', .*'learned_map'"):
        CLUSTER_MAPS.get("no_such_kind")


def test_a_registered_cluster_map_kind_is_evaluable_through_the_registry(toy_kind, tmp_path):
    assert toy_kind in available_methods() and toy_kind not in EVALUATION_METHODS
    method = get_method(toy_kind)
    assert method.name == toy_kind and method.label == f"UniRoute {toy_kind}"
    data, x = _toy_data()
    config = EvaluationConfig(**dict(FAST, trials=1, methods=(toy_kind, "zero", "knn")))
    (split, rng), = make_trial_splits(data, config)
    trial = run_trial(x, data, split, rng, config)
    params = trial.params[toy_kind]
    assert params["n_clusters"] >= 1 and params["shrinkage"] in FAST["shrinkage_grid"]
    assert params["validation_area"] is not None and "temperature" not in params  # τ is K-Means' own search
    assert 0.0 < trial.metrics[toy_kind]["area"] <= 1.0
    # the whole run, the report and the plot take the new kind without any change to the harness
    result = evaluate(data, x, config, embedder_name="toy", progress=False)
    table = format_table(result)
    assert f"\n{toy_kind}" in table and "K median" in table.split(toy_kind)[1].splitlines()[0]
    assert f"{toy_kind}_vs_knn" in result.sign_tests() and f"{toy_kind}_vs_zero" in result.sign_tests()
    png = plot_deferral_curves(result, tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_fixed_k_runs_the_new_kind_with_that_k(toy_kind):
    data, x = _toy_data()
    config = EvaluationConfig(**dict(FAST, trials=1, n_clusters=4, methods=(toy_kind,)))
    (split, rng), = make_trial_splits(data, config)
    assert run_trial(x, data, split, rng, config).params[toy_kind] == {
        "n_clusters": 4, "shrinkage": 2.0, "validation_area": None,
    }


class _AlwaysCheapest(EvaluationMethod):
    name = "always_cheapest_test"
    label = "always the cheapest"

    def run(self, ctx: TrialContext) -> MethodOutcome:
        pred = np.tile(-ctx.test_costs, (len(ctx.split.test), 1))  # the rule then favours cheap members
        return MethodOutcome(router_curve(pred, ctx.test_true, ctx.test_costs), {"note": "fixed"})

    def describe_choice(self, params):
        return f"{len(params)} fixed"


def test_a_registered_evaluation_method_runs_reports_and_is_sign_tested():
    register_method(_AlwaysCheapest)
    try:
        data, x = _toy_data()
        config = EvaluationConfig(**dict(FAST, trials=2, methods=("zero", "always_cheapest_test")))
        result = evaluate(data, x, config, embedder_name="toy", progress=False)
        assert "always_cheapest_test_vs_zero" in result.sign_tests()
        row = next(r for r in format_table(result).splitlines() if r.startswith("always_cheapest_test"))
        assert row.endswith("2 fixed")
    finally:
        EVALUATION_METHODS.unregister("always_cheapest_test")
    with pytest.raises(ValueError, match="unknown methods"):
        EvaluationConfig(methods=("always_cheapest_test",))


def test_the_builtin_methods_are_registered_in_report_order():
    builtin = ("uniroute", "kmeans", "learned_map", "knn", "zero", "clairvoyant", "random")
    assert EVALUATION_METHODS.names()[:7] == builtin
    assert [m for m in EVALUATION_METHODS.names() if get_method(m).is_reference] == ["knn", "zero"]
    with pytest.raises(KeyError, match="unknown evaluation method 'nope'"):
        get_method("nope")


# --------------------------------------------------------------------------- graders


def _grade_yes(response: str, reference: str) -> float:
    return float(response.strip().lower() == "yes") if reference == "yes" else float(response.strip().lower() == "no")


def _check_yes_no(reference: str) -> None:
    if reference not in ("yes", "no"):
        raise ValueError(f"expected 'yes' or 'no', got {reference!r}")


@pytest.fixture
def yes_no_grader():
    register_grader("yes_no_test", _grade_yes, check_reference=_check_yes_no)
    yield "yes_no_test"
    GRADERS.unregister("yes_no_test")
    REFERENCE_CHECKS.unregister("yes_no_test")


def test_a_registered_grader_is_named_checked_and_saved_by_name(yes_no_grader):
    by_name = ProbeSet(prompts=["is it?", "is it not?"], references=["yes", "no"], grader=yes_no_grader)
    by_fn = ProbeSet(prompts=["is it?", "is it not?"], references=["yes", "no"], grader=_grade_yes)
    assert by_name.grader_name == by_fn.grader_name == "yes_no_test"
    assert by_name.to_dict()["grader"] == "yes_no_test" == by_fn.to_dict()["grader"]
    assert by_name.grade(0, "Yes") == 1.0 and by_name.grade(1, "yes") == 0.0
    with pytest.raises(ValueError, match="reference at index 0 cannot be graded by 'yes_no_test'"):
        ProbeSet(prompts=["q"], references=["maybe"], grader=yes_no_grader)
    assert repr(resolve_grader(_grade_yes)) == "<checked grader 'yes_no_test'>"


def test_a_router_saved_with_a_registered_grader_gets_it_back_by_name(yes_no_grader, tmp_path):
    router = UniRouter(embedder=topic_embedder, n_clusters=2, show_progress=False).fit(TRAIN)
    probes = ProbeSet(prompts=PROBES, references=["yes", "no"] * 5, grader=_grade_yes)
    router.set_probes(probes)
    router.save(tmp_path / "r")
    saved = json.loads((tmp_path / "r" / "router.json").read_text())
    assert saved["probes"]["grader"] == "yes_no_test"
    loaded = UniRouter.load(tmp_path / "r", embedder=topic_embedder, show_progress=False)
    assert loaded.probes.grader_name == "yes_no_test" and loaded.probes.grade(0, "yes") == 1.0


def test_a_grader_name_not_registered_at_load_routes_but_says_what_to_register(yes_no_grader, tmp_path):
    router = UniRouter(embedder=topic_embedder, n_clusters=2, show_progress=False).fit(TRAIN)
    router.set_probes(ProbeSet(prompts=PROBES, references=["yes", "no"] * 5, grader=yes_no_grader))
    router.add_model("m", cost=1.0, scores=[1.0] * 10)
    router.save(tmp_path / "r")
    GRADERS.unregister("yes_no_test")
    REFERENCE_CHECKS.unregister("yes_no_test")
    try:
        loaded = UniRouter.load(tmp_path / "r", embedder=topic_embedder, show_progress=False)
        assert loaded.route(["math question number 1"], lam=0.0)[0].model == "m"
        assert loaded.probes.grader_name == "yes_no_test"  # saving again keeps the name
        with pytest.raises(RuntimeError, match=r"'yes_no_test', which is not registered.*register_grader"):
            loaded.probes.grade(0, "yes")
    finally:
        register_grader("yes_no_test", _grade_yes, check_reference=_check_yes_no)


def test_unknown_grader_names_list_the_registered_ones():
    with pytest.raises(ValueError, match="unknown grader 'fuzzy'; registered names are 'multiple_choice', 'exact'"):
        resolve_grader("fuzzy")


# --------------------------------------------------------------------------- CLI commands and optional extras


def test_a_registered_cli_command_is_parsed_and_run(capsys):
    def arguments(p):
        p.add_argument("--name", required=True)

    @command("hello-test", help="say hello (test)", arguments=arguments)
    def run_hello(args) -> int:
        print(f"hello {args.name}")
        return 3

    try:
        assert "hello-test" in COMMANDS and COMMANDS.get("hello-test").run is run_hello
        assert main(["hello-test", "--name", "ada"]) == 3
        assert capsys.readouterr().out == "hello ada\n"
        assert "hello-test" in build_parser().format_help()
    finally:
        COMMANDS.unregister("hello-test")
    assert COMMANDS.names()[:2] == ("eval", "replay")


def test_missing_matplotlib_names_the_eval_extra(monkeypatch, tmp_path):
    data, x = _toy_data()
    result = evaluate(data, x, EvaluationConfig(**dict(FAST, trials=1, methods=("zero",))), progress=False)
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(MissingOptionalDependencyError, match=r"pip install 'uniroute\[eval\]'"):
        plot_deferral_curves(result, tmp_path / "x.png")


def test_uniroute_eval_without_the_eval_extra_fails_early_and_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(__import__("sys").modules, "scipy.stats", None)
    code = main(["eval", "--data", str(tmp_path / "whatever"), "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "uniroute eval" in err and "needs scipy" in err and "uniroute[eval]" in err
