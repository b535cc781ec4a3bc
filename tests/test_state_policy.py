"""The serving core's shape (issue 10): snapshots that a later fit cannot change, one constructor from a state,
persistence that knows only settings and states, one validated routing policy, and one snapshot per selection."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import topic_embedder
from tests.test_router import PROBES, SMALL, TRAIN, two_topic_router
from uniroute_core import UniRouter, delegation
from uniroute_core.cluster_map import KMeansClusterMap
from uniroute_core.delegation import MemberSelector
from uniroute_core.learned_map import LearnedMapClusterMap
from uniroute_core.persistence import load_state, read_saved_embedder
from uniroute_core.policy import RoutingPolicy
from uniroute_core.rule import calibrate_lambda
from uniroute_core.state import NotFittedError, RouterState

DATA = Path(__file__).parent / "data"
CORE = Path(__file__).resolve().parents[1] / "uniroute_core"

OTHER_TRAIN = [f"code snippet {i} python" for i in range(15)] + [f"history essay {i} rome" for i in range(15)]


# ============================================================ 1. a second fit leaves old snapshots alone
def test_second_fit_does_not_change_the_first_snapshot_nor_the_users_map():
    template = KMeansClusterMap(n_clusters=2, seed=0)
    router = UniRouter(embedder=topic_embedder, cluster_map=template, show_progress=False).fit(TRAIN)
    first = router.state
    centers = first.cluster_map.cluster_centers_.copy()
    router.fit(OTHER_TRAIN)  # different prompts: the new centroids differ
    second = router.state
    assert second.cluster_map is not first.cluster_map
    assert not np.allclose(second.cluster_map.cluster_centers_, centers)
    np.testing.assert_array_equal(first.cluster_map.cluster_centers_, centers)  # the old snapshot is untouched
    assert not template.is_fitted and not hasattr(template, "cluster_centers_")  # the user's object never fitted
    assert router.get_params()["cluster_map"] is template


def test_fit_embeddings_also_fits_a_clone():
    template = KMeansClusterMap(n_clusters=2, seed=0)
    router = UniRouter(embedder=topic_embedder, cluster_map=template, show_progress=False)
    router.fit_embeddings(topic_embedder(TRAIN))
    assert router.cluster_map is not template and not template.is_fitted


def test_clone_keeps_parameters_and_drops_learned_state():
    fitted = KMeansClusterMap(n_clusters=2, seed=3, n_init=1, temperature=0.5).fit(topic_embedder(TRAIN))
    twin = fitted.clone()
    assert type(twin) is KMeansClusterMap and twin.get_params() == fitted.get_params()
    assert twin.get_params() == {"n_clusters": 2, "seed": 3, "n_init": 1, "temperature": 0.5}
    assert not twin.is_fitted
    learned = LearnedMapClusterMap(n_clusters=3, epochs=2, lr=0.01).clone()
    assert learned.get_params()["epochs"] == 2 and learned.get_params()["lr"] == 0.01


def test_cluster_map_takes_a_kind_name_and_method_is_a_deprecated_alias():
    assert UniRouter(cluster_map="learned_map").cluster_map_kind == "learned_map"
    with pytest.warns(DeprecationWarning, match="method=.* is deprecated"):
        old = UniRouter(method="learned_map")
    assert old.cluster_map_kind == "learned_map" and old.get_params()["cluster_map"] == "learned_map"
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="disagree"):
        UniRouter(method="kmeans", cluster_map=KMeansClusterMap(n_clusters=2))
    with pytest.raises(ValueError, match="unknown cluster map kind 'nope'; known: .*kmeans"):
        UniRouter(cluster_map="nope")
    with pytest.raises(TypeError, match="cluster_map must be a kind name"):
        UniRouter(cluster_map=3)  # type: ignore[arg-type]


# ============================================================================ 2. one constructor from a state
def test_from_state_routes_exactly_like_the_router_it_came_from(embedder):
    router = two_topic_router(embedder, shrinkage=1.5)
    twin = UniRouter.from_state(router.state, embedder=embedder, shrinkage=1.5, show_progress=False)
    prompts = ["math homework", "law contract", "something else"]
    for kw in ({"lam": 0.0}, {"lam": 0.3}, {"budget": 4.0}, {"min_quality": 0.8}):
        assert twin.route(prompts, **kw) == router.route(prompts, **kw)
    assert twin.state is router.state
    twin.add_model("late", 0.5, SMALL)  # the new router swaps its own states; the source is untouched
    assert "late" in twin.models and "late" not in router.models
    with pytest.raises(TypeError, match="state must be a RouterState"):
        UniRouter.from_state({"cluster_map": None})  # type: ignore[arg-type]


def test_update_state_swaps_a_derived_state_atomically(embedder):
    router = two_topic_router(embedder)
    before = router.state
    cheaper = [dataclasses.replace(p, cost=p.cost / 2) for p in before.profiles]
    after = router.update_state(lambda state: state.with_profiles(cheaper))
    assert router.state is after and router.costs == {"small": 0.5, "big": 5.0}
    assert before.cost_by_name == {"small": 1.0, "big": 10.0}  # the old snapshot is untouched
    with pytest.raises(TypeError, match="update must return a RouterState, got NoneType"):
        router.update_state(lambda state: None)  # type: ignore[arg-type,return-value]
    assert router.state is after


def test_state_routes_on_its_own_snapshot(embedder):
    router = two_topic_router(embedder)
    state = router.state
    emb = router.embed(["math homework", "law contract"])
    assert state.route(emb, RoutingPolicy(lam=0.3)) == router.route(["math homework", "law contract"], lam=0.3)
    router.remove_model("big")
    assert [d.model for d in state.route(emb, RoutingPolicy())] == ["small", "big"]  # the old pool, whole
    assert state.cluster_quality.shape == (2, 2)
    with pytest.raises(NotFittedError, match="route: the router is not fitted"):
        RouterState().route(emb)


# ============================================================================ persistence knows settings and states
@pytest.mark.parametrize("folder", ["router_v1_kmeans", "router_v2_kmeans"])
def test_a_router_saved_by_the_previous_version_loads_with_identical_decisions(folder):
    """tests/data/router_v1_kmeans was written by UniRouter.save before issue 10 (format v1); router_v2_kmeans is
    the same router saved by the format-2 code (before issue 14's live evidence): both route as recorded."""
    expected = json.loads((DATA / "router_v1_kmeans_decisions.json").read_text())
    loaded = UniRouter.load(DATA / folder, embedder=topic_embedder, show_progress=False)
    assert all(p.live_weight == 0 and p.prior_quality is None for p in loaded.profiles.values())
    assert loaded.models == ["small", "big", "mid"] and loaded.shrinkage == 1.5
    kwargs = {"lam0": {"lam": 0.0}, "lam03": {"lam": 0.3}, "lam2": {"lam": 2.0}, "budget4": {"budget": 4.0},
              "minq08": {"min_quality": 0.8}}
    for name, kw in kwargs.items():
        got = [{"model": d.model, "ranking": list(d.ranking), "expected_quality": d.expected_quality}
               for d in loaded.route(expected["prompts"], **kw)]
        assert got == expected["decisions"][name], name
    assert loaded.probes.grade(2, "The answer is (C).") == 1.0  # the grader saved by name came back


def test_settings_and_a_user_template_survive_save_and_load(tmp_path, embedder):
    template = KMeansClusterMap(n_clusters=2, seed=4, n_init=2, temperature=0.25)
    router = UniRouter(embedder=embedder, cluster_map=template, seed=7, shrinkage=0.5, show_progress=False)
    router.fit(TRAIN).set_probes(PROBES)
    router.add_model("small", 1.0, SMALL)
    router.save(tmp_path)
    saved = load_state(tmp_path, embedder=embedder)
    assert saved.settings["seed"] == 7 and saved.settings["shrinkage"] == 0.5
    reloaded_template = saved.settings["cluster_map"]
    assert isinstance(reloaded_template, KMeansClusterMap) and not reloaded_template.is_fitted
    assert reloaded_template.get_params() == template.get_params()
    loaded = UniRouter.load(tmp_path, embedder=embedder)
    assert loaded.route(["math q", "law q"]) == router.route(["math q", "law q"])
    assert read_saved_embedder(tmp_path).is_callable and read_saved_embedder(tmp_path).dimension == 16


def _imports(module: Path) -> set[str]:
    """Every module a file imports (top level or inside functions), relative imports resolved in uniroute_core."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            found.add(("uniroute_core." if node.level else "") + (node.module or ""))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_state_and_persistence_never_import_the_router():
    for name in ("state.py", "persistence.py", "policy.py"):
        assert "uniroute_core.router" not in _imports(CORE / name), name
    assert "._state" not in (CORE / "persistence.py").read_text(encoding="utf-8")


# ============================================================================ 3. one frozen, validated policy
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lam": -0.01}, ValueError, r"lam must be a finite number >= 0, got -0\.01"),
        ({"lam": math.nan}, ValueError, r"lam must be a finite number >= 0, got nan"),
        ({"lam": math.inf}, ValueError, r"lam must be a finite number >= 0, got inf"),
        ({"budget": 0.0}, ValueError, r"budget must be a finite number > 0 .*got 0\.0"),
        ({"budget": -1}, ValueError, r"budget must be a finite number > 0 .*got -1"),
        ({"budget": math.inf}, ValueError, r"budget must be a finite number > 0 .*got inf"),
        ({"min_quality": -0.01}, ValueError, r"min_quality must lie in \[0, 1\], got -0\.01"),
        ({"min_quality": 1.01}, ValueError, r"min_quality must lie in \[0, 1\], got 1\.01"),
        ({"min_quality": math.nan}, ValueError, r"min_quality must lie in \[0, 1\], got nan"),
        ({"lam": 0.3, "budget": 2.0}, ValueError, r"only one of lam, budget, min_quality; got \['lam', 'budget'\]"),
        ({"lam": True}, TypeError, r"lam must be a number, got the boolean True"),
        ({"budget": "2"}, TypeError, r"budget must be a number, got '2'"),
    ],
)
def test_policy_refuses_bad_values_naming_field_and_value(kwargs, error, match):
    with pytest.raises(error, match=match):
        RoutingPolicy(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "mode"),
    [({}, "lam"), ({"lam": 0}, "lam"), ({"lam": 1e9}, "lam"), ({"budget": 1e-9}, "budget"),
     ({"min_quality": 0}, "min_quality"), ({"min_quality": 1}, "min_quality")],
)
def test_policy_accepts_its_boundaries(kwargs, mode):
    policy = RoutingPolicy(**kwargs)
    assert policy.mode == mode
    with pytest.raises(AttributeError):
        policy.lam = 1.0  # type: ignore[misc]  # frozen


def test_route_takes_a_policy_or_the_loose_values_not_both(embedder):
    router = two_topic_router(embedder)
    assert router.route(["law q"], policy=RoutingPolicy(lam=2.0)) == router.route(["law q"], lam=2.0)
    with pytest.raises(ValueError, match=r"give either policy= or \['lam'\], not both"):
        router.route(["law q"], 0.3, policy=RoutingPolicy(lam=2.0))
    with pytest.raises(ValueError, match="budget must be a finite number > 0"):
        router.route(["law q"], budget=0.0)
    with pytest.raises(ValueError, match="min_quality must lie in"):
        router.route(["law q"], min_quality=1.5)


def test_a_zero_budget_is_refused_everywhere(embedder):
    with pytest.raises(ValueError, match="budget must be a finite number > 0"):
        calibrate_lambda(np.ones((2, 2)), np.array([1.0, 2.0]), 0.0)
    with pytest.raises(ValueError, match="budget must be a finite number > 0"):
        two_topic_router(embedder).calibrate(0.0)


def test_calibration_takes_no_state_argument(embedder):
    import inspect

    assert "state" not in inspect.signature(UniRouter.calibration).parameters


# ============================================================================ 4. one snapshot per selection
def test_a_member_removed_between_reading_costs_and_routing_cannot_break_select(embedder, monkeypatch):
    """Forces the interleaving of issue 10: remove_model runs right after select took its snapshot."""
    router = two_topic_router(embedder)
    removed: list[str] = []

    def remove_big_now(state: RouterState) -> None:
        if not removed:
            removed.append(router.remove_model("big").name)

    monkeypatch.setattr(delegation, "_before_route_hook", remove_big_now)
    choice = MemberSelector(router, policy=RoutingPolicy(lam=0.3)).select("law question", allowed=["small", "big"])
    assert removed == ["big"] and router.models == ["small"]
    # the whole choice is of the snapshot taken before the removal: costs, candidates and decision agree
    assert set(choice.costs) == {"small", "big"} and choice.member == "big"
    assert set(choice.order) == {"small", "big"}


def test_select_under_concurrent_pool_changes_never_raises(embedder):
    router = two_topic_router(embedder)
    selector = MemberSelector(router, policy=RoutingPolicy(lam=0.3))
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        while not stop.is_set():
            router.add_model("mid", 0.5, SMALL, replace=True)
            router.remove_model("mid")

    def select() -> None:
        try:
            for i in range(150):
                choice = selector.select(f"math question {i}", allowed=["small", "big", "mid"])
                assert choice.member in choice.costs and set(choice.order) <= set(choice.costs)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    churner = threading.Thread(target=churn)
    callers = [threading.Thread(target=select) for _ in range(3)]
    churner.start()
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    stop.set()
    churner.join()
    assert errors == []


def test_no_warning_in_normal_use_of_the_new_names(embedder, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        router = UniRouter(embedder=embedder, cluster_map="kmeans", n_clusters=2, show_progress=False).fit(TRAIN)
        router.set_probes(PROBES).add_model("small", 1.0, SMALL)
        router.save(tmp_path)
        UniRouter.load(tmp_path, embedder=embedder).route(["math q"], policy=RoutingPolicy(budget=1.0))
        repr(router)
