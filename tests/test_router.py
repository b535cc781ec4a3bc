"""UniRouter behaviour on tiny hand-checkable data: Ψ, shrinkage, the rule, calibration, errors, concurrency."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest

from uniroute_core import NotFittedError, UniRouter, UnreachableBudgetWarning
from uniroute_core.cluster_map import KMeansClusterMap
from uniroute_core.profile import build_profile
from uniroute_core.rule import (
    adequacy_keys,
    calibrate_lambda,
    choose_by_lambda,
    choose_cheapest_adequate,
    lambda_keys,
    normalised_costs,
    rank,
)

TRAIN = [f"math question number {i}" for i in range(15)] + [f"law question number {i}" for i in range(15)]
PROBES = [f"math probe {i}" for i in range(6)] + [f"law probe {i}" for i in range(4)]
# small: right on every math probe, wrong on law; big: right everywhere but one law probe
SMALL = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
BIG = [1, 1, 1, 1, 1, 1, 1, 1, 1, 0]


def two_topic_router(embedder, shrinkage: float = 0.0, n_clusters: int = 2) -> UniRouter:
    router = UniRouter(embedder=embedder, n_clusters=n_clusters, shrinkage=shrinkage, show_progress=False)
    router.fit(TRAIN).set_probes(PROBES)
    router.add_model("small", cost=1.0, scores=SMALL)
    router.add_model("big", cost=10.0, scores=BIG)
    return router


def cluster_of(router: UniRouter, text: str) -> int:
    return int(router.cluster_map.predict(router.embed([text]))[0])


def test_profile_is_per_cluster_mean_quality(embedder):
    router = two_topic_router(embedder)
    math_k, law_k = cluster_of(router, "math probe 0"), cluster_of(router, "law probe 0")
    assert math_k != law_k
    small, big = router.profiles["small"], router.profiles["big"]
    assert small.cluster_quality[math_k] == pytest.approx(1.0)
    assert small.cluster_quality[law_k] == pytest.approx(0.0)
    assert big.cluster_quality[law_k] == pytest.approx(3 / 4)
    assert small.cluster_counts[math_k] == 6 and small.cluster_counts[law_k] == 4
    assert small.overall_quality == pytest.approx(0.6) and small.n_probes == 10


def test_shrinkage_pulls_toward_overall_mean_by_pseudo_counts(embedder):
    router = two_topic_router(embedder, shrinkage=2.0)
    law_k = cluster_of(router, "law probe 0")
    # (sum of law scores + α·overall) / (n_law + α) = (0 + 2·0.6) / (4 + 2)
    assert router.profiles["small"].cluster_quality[law_k] == pytest.approx(1.2 / 6)
    assert router.profiles["big"].cluster_quality[law_k] == pytest.approx((3 + 2 * 0.9) / 6)


def test_empty_cluster_falls_back_to_overall_mean():
    a = np.array([[1.0, 0.0], [1.0, 0.0]])  # no probe in cluster 1
    p = build_profile("m", 1.0, np.array([1.0, 0.0]), a, shrinkage=0.0)
    np.testing.assert_allclose(p.cluster_quality, [0.5, 0.5])


def test_nan_scores_are_ignored(embedder):
    router = two_topic_router(embedder)
    law_k = cluster_of(router, "law probe 0")
    p = router.add_model("partial", cost=2.0, scores=[np.nan] * 6 + [1, 0, np.nan, 1])
    assert p.n_probes == 3
    assert p.cluster_quality[law_k] == pytest.approx(2 / 3)
    assert p.cluster_counts[law_k] == 3


def test_routing_picks_cheap_member_when_adequate(embedder):
    router = two_topic_router(embedder)
    math, law = router.route(["math homework help", "law contract question"], lam=0.5)
    assert math.model == "small" and law.model == "big"
    assert math.ranking == ("small", "big") and law.ranking == ("big", "small")
    assert math.expected_quality == {"small": 1.0, "big": 1.0}
    assert math.cost == 1.0 and math.lam == 0.5


def test_lambda_moves_traffic_to_cheap_member(embedder):
    router = two_topic_router(embedder)
    # law: small loses 0.75 in quality and saves 0.9 in normalised cost → switches once λ > 0.75/0.9 ≈ 0.833
    assert router.route_one("law contract question", lam=0.8).model == "big"
    assert router.route_one("law contract question", lam=0.87).model == "small"


def test_rule_by_hand():
    q = np.array([[0.9, 0.5, 0.4]])
    costs = np.array([10.0, 2.0, 1.0])
    np.testing.assert_allclose(normalised_costs(costs), [1.0, 0.2, 0.1])
    # objectives at λ=0.5: 0.1+0.5, 0.5+0.1, 0.6+0.05 → tie 0.6/0.6 goes to the cheaper member (index 1)
    assert choose_by_lambda(q, costs, 0.5)[0] == 1
    assert list(rank(lambda_keys(q, costs, 0.5)[0], costs)) == [1, 0, 2]
    assert choose_by_lambda(q, costs, 0.0)[0] == 0
    assert choose_by_lambda(q, costs, 100.0)[0] == 2
    assert choose_cheapest_adequate(q, costs, 0.45)[0] == 1
    assert list(rank(adequacy_keys(q, costs, 0.45)[0], costs)) == [1, 0, 2]  # adequate by cost, then by quality
    assert choose_cheapest_adequate(q, costs, 0.95)[0] == 0  # none adequate → the best
    assert list(rank(lambda_keys(q, costs, 0.5, allowed=np.array([True, False, True]))[0], costs)) == [0, 2]


def test_cost_unit_does_not_change_decisions(embedder):
    router = two_topic_router(embedder)
    before = [d.model for d in router.route(["law a", "math b"], lam=0.8)]
    assert before == ["big", "small"]
    router.add_model("small", cost=1000.0, scores=SMALL, replace=True)
    router.add_model("big", cost=10000.0, scores=BIG, replace=True)
    assert [d.model for d in router.route(["law a", "math b"], lam=0.8)] == before
    assert router.models == ["small", "big"]  # replace keeps the position


def test_k1_reproduces_zero_router(embedder):
    router = two_topic_router(embedder, shrinkage=5.0, n_clusters=1)
    for name, scores in (("small", SMALL), ("big", BIG)):
        np.testing.assert_allclose(router.profiles[name].cluster_quality, [np.mean(scores)])
    q = router.expected_quality(["math x", "law y", "anything at all"])
    np.testing.assert_allclose(q, np.tile([0.6, 0.9], (3, 1)))
    # prompt-independent: every prompt goes to the same member at every λ
    for lam in (0.0, 0.2, 0.5, 1.0):
        assert len({d.model for d in router.route(["math x", "law y", "other"], lam=lam)}) == 1


def test_min_quality_cheapest_adequate(embedder):
    router = two_topic_router(embedder)
    math, law = router.route(["math x", "law y"], min_quality=0.7)
    assert (math.model, law.model) == ("small", "big")
    assert math.lam is None and math.mode == "min_quality"
    assert router.route_one("law y", min_quality=0.99).model == "big"  # nobody adequate → best


def test_calibrated_budget_is_met_on_probes_and_monotone(embedder):
    router = two_topic_router(embedder)
    # probes: 6 math (small adequate) + 4 law; routing law to big costs (6·1 + 4·10)/10 = 4.6
    lam = router.calibrate(budget=4.6)
    picks = router.route(PROBES, lam=lam)
    assert np.mean([d.cost for d in picks]) <= 4.6
    assert [d.model for d in picks] == ["small"] * 6 + ["big"] * 4
    assert router.calibrate(budget=4.5) > lam  # less money → larger λ
    decisions = router.route(["law z"], budget=3.0)
    assert decisions[0].model == "small" and decisions[0].mode == "budget"


def test_routed_cost_never_rises_with_lambda():
    rng = np.random.default_rng(0)
    q = rng.uniform(size=(200, 6))
    costs = rng.uniform(0.5, 20, size=6)
    spent = [costs[choose_by_lambda(q, costs, lam)].mean() for lam in np.linspace(0, 3, 61)]
    assert all(b <= a + 1e-12 for a, b in zip(spent, spent[1:]))
    for budget in (costs.min(), np.median(costs), costs.max()):
        cal = calibrate_lambda(q, costs, budget)
        assert cal.reachable and cal.expected_cost <= budget + 1e-9
        assert costs[choose_by_lambda(q, costs, cal.lam)].mean() == pytest.approx(cal.expected_cost)


def test_unreachable_budget_warns_and_routes_to_cheapest(embedder):
    router = two_topic_router(embedder)
    with pytest.warns(UnreachableBudgetWarning, match="below the cheapest member"):
        decisions = router.route(["law x", "math y"], budget=0.5)
    assert {d.model for d in decisions} == {"small"}


def test_candidates_restrict_choice(embedder):
    router = two_topic_router(embedder)
    d = router.route_one("law question", lam=0.0, candidates=["small"])
    assert d.model == "small" and d.ranking == ("small",) and set(d.expected_quality) == {"small"}
    with pytest.raises(KeyError, match="not in the pool"):
        router.route_one("law", candidates=["nope"])


def test_adding_a_model_changes_decisions(embedder):
    router = two_topic_router(embedder)
    assert router.route_one("law question", lam=0.5).model == "big"
    router.add_model("cheap-lawyer", cost=2.0, scores=[0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    assert router.route_one("law question", lam=0.5).model == "cheap-lawyer"
    router.remove_model("cheap-lawyer")
    assert router.route_one("law question", lam=0.5).model == "big"
    assert router.models == ["small", "big"]


def test_refit_keeps_models_and_reprofiles(embedder):
    router = two_topic_router(embedder)
    router.fit(TRAIN[::-1])
    assert router.models == ["small", "big"]
    assert router.route_one("math x", lam=0.5).model == "small"


# ---------------------------------------------------------------- errors


def test_route_before_fit_or_probes_or_models(embedder):
    router = UniRouter(embedder=embedder, n_clusters=2, show_progress=False)
    with pytest.raises(NotFittedError, match="not fitted"):
        router.route(["x"])
    with pytest.raises(NotFittedError, match="fit"):
        router.set_probes(PROBES)
    router.fit(TRAIN)
    with pytest.raises(NotFittedError, match="no probe prompts"):
        router.route(["x"])
    with pytest.raises(NotFittedError, match="set_probes"):
        router.add_model("m", 1.0, SMALL)
    router.set_probes(PROBES)
    with pytest.raises(NotFittedError, match="pool is empty"):
        router.route(["x"])


@pytest.mark.parametrize(
    ("scores", "match"),
    [
        ([1, 0, 1], "got 3 scores but the router has 10 probe prompts"),
        ([1.5] + [0] * 9, r"score 1.5 at probe 0 is outside \[0, 1\]"),
        ([-0.1] + [0] * 9, "outside"),
        ([np.nan] * 10, "every score is NaN"),
        ([[1] * 10], "must be 1-D"),
    ],
)
def test_bad_scores(embedder, scores, match):
    router = two_topic_router(embedder)
    with pytest.raises(ValueError, match=match) as err:
        router.add_model("newbie", 1.0, scores)
    assert "'newbie'" in str(err.value)


@pytest.mark.parametrize("cost", [-1.0, float("nan"), float("inf")])
def test_bad_cost(embedder, cost):
    router = two_topic_router(embedder)
    with pytest.raises(ValueError, match="model 'newbie': cost must be a finite number >= 0"):
        router.add_model("newbie", cost, SMALL)


def test_duplicate_name_needs_replace(embedder):
    router = two_topic_router(embedder)
    with pytest.raises(ValueError, match="already in the pool; pass replace=True"):
        router.add_model("small", 1.0, SMALL)
    router.add_model("small", 3.0, SMALL, replace=True)
    assert router.costs["small"] == 3.0


def test_unknown_model_removal(embedder):
    router = two_topic_router(embedder)
    with pytest.raises(KeyError, match="'ghost' is not in the pool"):
        router.remove_model("ghost")


def test_lam_and_budget_together(embedder):
    router = two_topic_router(embedder)
    with pytest.raises(ValueError, match="only one of lam, budget, min_quality"):
        router.route(["x"], lam=0.1, budget=3.0)


def test_empty_prompt_text(embedder):
    router = two_topic_router(embedder)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        router.route(["fine", "   "])
    with pytest.raises(TypeError, match="single string"):
        router.route("not a list")


def test_probes_cannot_change_under_a_pool(embedder):
    router = two_topic_router(embedder)
    with pytest.raises(ValueError, match="remove them first"):
        router.set_probes(PROBES[:5])


def test_too_few_training_prompts(embedder):
    with pytest.raises(ValueError, match="cannot fit 50 clusters on 30 training prompts"):
        UniRouter(embedder=embedder, n_clusters=50, show_progress=False).fit(TRAIN)


def test_embedder_dimension_mismatch_is_reported(embedder):
    cmap = KMeansClusterMap(n_clusters=2).fit(embedder(TRAIN))
    with pytest.raises(ValueError, match="dimension 3 but the cluster map was fitted on dimension 16"):
        cmap.assign(np.zeros((1, 3)))


# ---------------------------------------------------------------- concurrency


def test_concurrent_routes_never_see_half_a_pool(embedder):
    router = two_topic_router(embedder)
    seen: list[tuple[set[str], set[str], float]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                for d in router.route(["law b"], lam=0.3):
                    seen.append((set(d.expected_quality), set(d.ranking), d.expected_quality["small"]))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(40):
        router.add_model("extra", 2.0, BIG)
        router.add_model("small", 1.0, SMALL if i % 2 else BIG, replace=True)
        router.remove_model("extra")
    stop.set()
    for t in threads:
        t.join()
    assert not errors and seen
    for names, ranked, small_quality in seen:
        assert names in ({"small", "big"}, {"small", "big", "extra"})
        assert ranked == names  # one decision is computed from one snapshot
        assert small_quality in (0.0, 0.75)  # small's law quality under either profile, never a mix


def test_warning_free_normal_use(embedder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        router = two_topic_router(embedder)
        router.route(["math q"], budget=5.0)
