"""Learning from served traffic (issue 14): observe = batch estimator, forgetting, cold start + exploration,
persistence of live evidence, concurrent feedback and routing."""

from __future__ import annotations

import json
import threading
import warnings

import numpy as np
import pytest
from conftest import run_readers_and_writers, topic_embedder

from uniroute_core import UniRouter
from uniroute_core.cluster_map import KMeansClusterMap
from uniroute_core.feedback import Exploration, Forgetting
from uniroute_core.persistence import JSON_FILE
from uniroute_core.profile import build_profile, pool_cluster_offsets, pool_prior_strength
from uniroute_core.router import FeedbackWarning

DIM, K, P = 16, 4, 120


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors around K well-separated centres, and each one's topic."""
    rng = np.random.default_rng(seed)
    centres = np.eye(DIM)[:K] * 3
    topic = rng.integers(0, K, n)
    x = centres[topic] + rng.normal(scale=0.3, size=(n, DIM))
    return x / np.linalg.norm(x, axis=1, keepdims=True), topic


def make_router(cluster_map: object = "kmeans", **kw: object) -> tuple[UniRouter, np.ndarray, np.ndarray]:
    train, _ = blobs(400, 0)
    probes, topic = blobs(P, 1)
    router = UniRouter(
        embedder=topic_embedder, n_clusters=K, shrinkage=2.0, cluster_map=cluster_map, show_progress=False, **kw
    )
    router.fit_embeddings(train)
    router.set_probes([f"probe {i}" for i in range(P)], embeddings=probes)
    return router, probes, topic


def scores_for(topic: np.ndarray, good: set[int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = np.where(np.isin(topic, list(good)), 0.9, 0.3)
    return (rng.random(len(topic)) < p).astype(float)


@pytest.mark.parametrize("cluster_map", ["kmeans", KMeansClusterMap(n_clusters=K, temperature=0.5)])
def test_observing_the_probe_data_reproduces_the_batch_estimator(cluster_map):
    router, probes, topic = make_router(cluster_map)
    s = scores_for(topic, {0, 1}, 2)
    s[::7] = np.nan  # unanswered probes are skipped by both
    batch = router.add_model("batch", cost=1.0, scores=s)
    # a weight-0 prior only stands in until evidence; no pool offsets: the identity is the plain estimator's
    router.add_model("online", cost=1.0, prior=(0.5, 0.0), pool_offsets=False)
    known = ~np.isnan(s)
    router.observe_many(probes[known], ["online"] * int(known.sum()), s[known])
    online = router.profiles["online"]
    np.testing.assert_allclose(online.cluster_quality, batch.cluster_quality, atol=1e-12)
    assert online.overall_quality == pytest.approx(batch.overall_quality)
    np.testing.assert_allclose(online.live_counts, batch.cluster_counts)
    assert online.live_weight == pytest.approx(known.sum()) and online.probe_weight == 0
    assert batch.live_weight == 0 and batch.probe_weight == known.sum()
    # one by one gives the same as the batch
    router.add_model("single", cost=1.0, prior=(0.5, 0.0), pool_offsets=False)
    for xi, si in zip(probes[known], s[known]):
        router.observe(xi, "single", si)
    np.testing.assert_allclose(router.profiles["single"].cluster_quality, batch.cluster_quality, atol=1e-12)


def test_probe_and_live_evidence_combine_and_reset():
    router, probes, topic = make_router()
    s = scores_for(topic, {0}, 3)
    router.add_model("m", cost=1.0, scores=s)
    before = router.profiles["m"].cluster_quality.copy()
    router.observe_many(probes[:30], ["m"] * 30, np.zeros(30))
    p = router.profiles["m"]
    assert (p.cluster_quality <= before + 1e-12).all() and (p.cluster_quality < before - 0.01).any()
    # the same estimator on the union of the data: probes plus the observations as extra probes
    both = build_profile(
        "u", 1.0, np.concatenate([s, np.zeros(30)]), np.vstack([router.state.probe_assign,
                                                               router.cluster_map.assign(probes[:30])]), 2.0
    )
    np.testing.assert_allclose(p.cluster_quality, both.cluster_quality, atol=1e-12)
    router.reset_feedback("m")
    np.testing.assert_allclose(router.profiles["m"].cluster_quality, before)
    assert router.profiles["m"].live_weight == 0 and router.profiles["m"].n_observations == 0


def test_bad_feedback_is_refused_and_removed_members_are_ignored():
    router, probes, topic = make_router()
    router.add_model("m", cost=1.0, scores=scores_for(topic, {0}, 3))
    router.add_model("gone", cost=2.0, scores=scores_for(topic, {1}, 4))
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"feedback for 'm': score must lie in \[0, 1\]"):
            router.observe(probes[0], "m", bad)
    with pytest.raises(TypeError, match="score must be a number"):
        router.observe(probes[0], "m", "good")
    state = router.state
    router.remove_model("gone")
    with pytest.warns(FeedbackWarning, match=r"\['gone'\] ignored: not in the pool"):
        assert router.observe(probes[0], "gone", 1.0) is None
    assert router.state is not state and router.profiles["m"].n_observations == 0
    with pytest.raises(ValueError, match="2 scores for 1 members"):
        router.observe_many(probes[:1], ["m"], [1.0, 0.0])


def test_forgetting_in_observations_halves_old_evidence():
    router, probes, _ = make_router(forgetting=Forgetting(half_life=10))
    router.add_model("m", cost=1.0, prior=(0.5, 0.0))
    x = np.repeat(probes[:1], 10, axis=0)
    router.observe_many(x, ["m"] * 10, np.ones(10))
    w10 = router.profiles["m"].live_weight
    assert w10 == pytest.approx(sum(0.5 ** (i / 10) for i in range(10)))
    router.observe_many(x, ["m"] * 10, np.zeros(10))
    p = router.profiles["m"]
    assert p.live_weight == pytest.approx(w10 * 1.5)  # old half + new batch
    assert p.live_score_sum == pytest.approx(w10 * 0.5)  # the ones now count half
    # batching does not matter: one at a time gives the same sums
    r2, _, _ = make_router(forgetting=Forgetting(half_life=10))
    r2.add_model("m", cost=1.0, prior=(0.5, 0.0))
    for v in [1.0] * 10 + [0.0] * 10:
        r2.observe(probes[0], "m", v)
    assert r2.profiles["m"].live_score_sum == pytest.approx(p.live_score_sum)
    np.testing.assert_allclose(r2.profiles["m"].cluster_quality, p.cluster_quality)


def test_forgetting_in_seconds_and_probe_decay():
    router, probes, topic = make_router(forgetting=Forgetting(half_life=60, unit="seconds", decay_probes=True))
    router.add_model("m", cost=1.0, scores=scores_for(topic, {0}, 5))
    router.observe(probes[0], "m", 1.0, time=1000.0)
    router.observe(probes[0], "m", 0.0, time=1060.0)  # one half-life later
    p = router.profiles["m"]
    assert p.live_weight == pytest.approx(1.5) and p.live_score_sum == pytest.approx(0.5)
    assert p.probe_scale == pytest.approx(0.5) and p.probe_weight == pytest.approx(0.5 * P)
    with pytest.raises(ValueError, match="half_life must be a finite number > 0"):
        Forgetting(half_life=0)
    with pytest.raises(ValueError, match="unit must be"):
        Forgetting(half_life=3, unit="days")  # type: ignore[arg-type]


def test_drift_is_followed_faster_with_forgetting():
    """A member good on topic 0 regresses there: with forgetting its Ψ falls below a steady rival sooner."""
    results = {}
    for name, forgetting in (("keep", None), ("forget", Forgetting(half_life=20))):
        router, probes, topic = make_router(forgetting=forgetting)
        t0 = probes[topic == 0]
        router.add_model("a", cost=1.0, prior=(0.5, 0.0))
        router.observe_many(np.repeat(t0, 10, axis=0)[:200], ["a"] * 200, np.ones(200))  # good for a long time
        n = 0
        while router.profiles["a"].cluster_quality.max() > 0.5 and n < 1000:
            router.observe(t0[n % len(t0)], "a", 0.0)
            n += 1
        results[name] = n
    assert results["forget"] < results["keep"] / 3


def test_cold_start_prior_and_exploration_within_budget():
    router, probes, topic = make_router(exploration=Exploration(share=0.5, seed=0))
    router.add_model("cheap", cost=1.0, scores=scores_for(topic, {0}, 6))
    router.add_model("mid", cost=3.0, scores=scores_for(topic, {0, 1, 2}, 7))
    router.add_model("dear", cost=10.0, scores=scores_for(topic, {0, 1, 2, 3}, 8))
    flat = router.add_model("flat", cost=2.0, prior=(0.2, 2.0), pool_offsets=False)
    assert flat.n_probes == 0 and np.allclose(flat.cluster_quality, 0.2) and flat.prior_quality == 0.2
    router.remove_model("flat")
    new = router.add_model("new", cost=2.0, prior=(0.2, 2.0))  # the pool's cluster offsets around the prior
    assert new.n_probes == 0 and new.prior_quality == 0.2 and new.prior_offsets is not None
    with pytest.raises(ValueError, match="give its probe scores, or prior="):
        router.add_model("nothing", cost=1.0)
    with pytest.raises(ValueError, match="prior quality must lie in"):
        router.add_model("bad", cost=1.0, prior=(1.2, 1.0))
    x, _ = blobs(2000, 9)
    budget = 3.0
    greedy = UniRouter.from_state(router.state, embedder=topic_embedder, exploration=None)
    plain = greedy.route(["q"] * len(x), budget=budget, embeddings=x)
    routed = router.route(["q"] * len(x), budget=budget, embeddings=x)
    explored = [d for d in routed if d.exploratory]
    assert 0.4 < len(explored) / len(x) < 0.6
    # each exploratory call costs at most what the point estimate chose: the mean cost never exceeds it
    assert all(e.cost <= g.cost for e, g in zip(routed, plain))
    assert np.mean([d.cost for d in routed]) <= np.mean([d.cost for d in plain]) + 1e-12
    assert sum(d.model == "new" for d in routed) > sum(d.model == "new" for d in plain)
    assert not any(d.exploratory for d in plain)
    # candidates still restrict exploration
    some = router.route(["q"] * 200, embeddings=x[:200], candidates=["cheap", "dear"])
    assert {d.model for d in some} <= {"cheap", "dear"}


def test_persistence_round_trip_of_live_evidence(tmp_path):
    router, probes, topic = make_router(forgetting=Forgetting(half_life=50), exploration=Exploration(0.1, seed=3))
    router.add_model("a", cost=1.0, scores=scores_for(topic, {0}, 10))
    router.add_model("cold", cost=2.0, prior=(0.7, 3.0))
    router.observe_many(probes[:40], ["cold"] * 20 + ["a"] * 20, scores_for(topic[:40], {1}, 11))
    router.save(tmp_path)
    meta = json.loads((tmp_path / JSON_FILE).read_text())
    assert meta["format_version"] == 6 and meta["forgetting"]["half_life"] == 50
    loaded = UniRouter.load(tmp_path, embedder=topic_embedder, show_progress=False)
    assert loaded.forgetting == router.forgetting and loaded.exploration.share == 0.1
    cold = loaded.profiles["cold"]
    np.testing.assert_array_equal(cold.prior_offsets, router.profiles["cold"].prior_offsets)
    assert cold.shrinkage == router.profiles["cold"].shrinkage and loaded.profiles["a"].prior_offsets is None
    for name in ("a", "cold"):
        a, b = router.profiles[name], loaded.profiles[name]
        np.testing.assert_array_equal(a.cluster_quality, b.cluster_quality)
        np.testing.assert_array_equal(a.live_sums, b.live_sums)
        assert (a.live_weight, a.probe_weight, a.n_observations, a.prior_quality, a.overall_quality) == (
            b.live_weight, b.probe_weight, b.n_observations, b.prior_quality, b.overall_quality
        )
    cold = loaded.profiles["cold"]  # 20 observations, half-life 50: weight Σ 2^(-i/50)
    assert cold.probe_weight == 0 and cold.live_weight == pytest.approx(sum(0.5 ** (i / 50) for i in range(20)))
    # learning goes on after loading exactly as it would have before
    router.observe(probes[50], "a", 0.0)
    loaded.observe(probes[50], "a", 0.0)
    np.testing.assert_allclose(router.profiles["a"].cluster_quality, loaded.profiles["a"].cluster_quality)
    # tampered feedback fields are a clear error
    meta["models"][0]["live"]["probe_scale"] = 7
    (tmp_path / JSON_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"field 'models\[0\].live.probe_scale' = 7.0: expected a number in \(0, 1\]"):
        UniRouter.load(tmp_path, embedder=topic_embedder, show_progress=False)


def test_update_from_logs_rows_and_sparse_folder(tmp_path):
    from uniroute_core.data import write_routing_data

    router, probes, topic = make_router()
    router.add_model("a", cost=1.0, scores=scores_for(topic, {0}, 12))
    router.add_model("b", cost=2.0, scores=scores_for(topic, {1}, 13))
    logged = np.full((6, 3), np.nan)
    logged[0, 0], logged[1, 1], logged[2, 0], logged[3, 2] = 1.0, 0.0, 0.5, 1.0  # one member per prompt
    write_routing_data(tmp_path, prompts=[f"log {i}" for i in range(6)], models=["a", "b", "old"],
                       scores=logged, costs=[1, 2, 3])
    emb = probes[:6]
    with pytest.warns(FeedbackWarning, match=r"\['old'\] ignored"):
        done = router.update_from_logs(tmp_path, embeddings=emb)
    assert done["a"].n_observations == 2 and done["b"].n_observations == 1
    twin, _, _ = make_router()
    twin.add_model("a", cost=1.0, scores=scores_for(topic, {0}, 12))
    twin.add_model("b", cost=2.0, scores=scores_for(topic, {1}, 13))
    twin.update_from_logs([("x", "a", 1.0), ("y", "b", 0.0), ("z", "a", 0.5)], embeddings=emb[[0, 1, 2]])
    np.testing.assert_allclose(twin.profiles["a"].cluster_quality, router.profiles["a"].cluster_quality)
    with pytest.raises(ValueError, match="log row 0 must be"):
        twin.update_from_logs([("x", "a")])  # type: ignore[list-item]


def test_concurrent_feedback_and_routing():
    """Writers are serialised (no update lost); readers see whole states and never fail."""
    router, probes, topic = make_router()
    router.add_model("a", cost=1.0, scores=scores_for(topic, {0}, 14))
    router.add_model("b", cost=5.0, scores=scores_for(topic, {0, 1, 2, 3}, 15))
    x, _ = blobs(64, 16)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                state = router.state
                d = router.route(["q"] * len(x), embeddings=x, lam=0.2)
                assert len(d) == len(x)
                assert state.cluster_quality.shape == (len(state.pool), K)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def writer(member: str, n: int) -> None:
        try:
            for i in range(n):
                router.observe(probes[i % P], member, float(i % 2))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(m, 150)) for m in ("a", "b", "a", "b")]
    run_readers_and_writers(readers, writers, stop)
    assert not errors, errors
    assert router.profiles["a"].n_observations == 300 and router.profiles["b"].n_observations == 300


def test_replay_preview_treats_unlogged_cells_as_unknown(tmp_path):
    """``uniroute replay`` on sparse logs: a routed call with no logged score is left out of quality, not wrong."""
    from uniroute_core.data import load_routing_data, write_routing_data
    from uniroute_core.evaluation.preview import preview_router

    router, probes, topic = make_router()
    router.add_model("a", cost=1.0, scores=scores_for(topic, {0, 1}, 17))
    router.add_model("b", cost=4.0, scores=scores_for(topic, {0, 1, 2, 3}, 18))
    x, t = blobs(60, 19)
    logged = np.where(np.isin(t, [0, 1]), 1.0, 0.0)[:, None] * np.ones((1, 2))
    logged[::3, :] = np.nan  # a third of the prompts have no logged score at all
    folder = write_routing_data(tmp_path / "logs", prompts=[f"q{i}" for i in range(60)], models=["a", "b"],
                                scores=logged, costs=[1.0, 4.0])
    preview = preview_router(router, load_routing_data(folder), lam=0.0, embeddings=x)
    assert preview.router.n_unscored == 20
    decisions = router.route([f"q{i}" for i in range(60)], lam=0.0, embeddings=x)
    col = {"a": 0, "b": 1}
    q = np.array([logged[i, col[d.model]] for i, d in enumerate(decisions)])
    assert preview.router.mean_quality == pytest.approx(np.nanmean(q))


def test_a_cold_member_follows_the_pool_cluster_offsets():
    """Clusters hard for the pool are hard for a newcomer: a member joining with prior= only shrinks towards its mean
    plus the pool's offset per cluster, its mean is learnt net of the offsets of where its feedback came from, and
    the prior strength comes from the pool's spread around such predictions (at least the router's α)."""
    router, probes, topic = make_router()
    for j, seed in enumerate((20, 21, 22)):  # every member strong on topic 0 only
        router.add_model(f"p{j}", cost=1.0, scores=scores_for(topic, {0}, seed))
    pool = [router.profiles[f"p{j}"] for j in range(3)]
    offsets, strength = pool_cluster_offsets(pool), pool_prior_strength(pool)
    assert offsets is not None and strength is not None
    k0 = int(np.argmax(offsets))  # the topic-0 cluster
    new = router.add_model("new", cost=1.0, prior=(0.5, 2.0))
    np.testing.assert_allclose(new.prior_offsets, offsets)
    assert new.shrinkage == pytest.approx(max(2.0, strength)) and new.shrinkage >= 2.0
    assert new.cluster_quality[k0] == new.cluster_quality.max() > 0.5 > new.cluster_quality.min()
    flat = router.add_model("flat", cost=1.0, prior=(0.5, 2.0), pool_offsets=False)
    assert flat.prior_offsets is None and flat.shrinkage == 2.0
    # both are fed back only where they are strong (topic 0, right 90 % of the time): the flat member's mean takes
    # that rate for its level everywhere; the offset member's level stays net of topic 0's offset
    x0 = np.repeat(probes[topic == 0], 8, axis=0)[:200]
    s0 = (np.random.default_rng(23).random(len(x0)) < 0.9).astype(float)
    for name in ("new", "flat"):
        router.observe_many(x0, [name] * len(x0), s0)
    other = [k for k in range(K) if k != k0]
    assert router.profiles["flat"].cluster_quality[other].min() > 0.7
    assert router.profiles["new"].cluster_quality[other].max() < 0.6
    with pytest.raises(TypeError, match="pool_offsets"):
        router.add_model("bad", cost=1.0, prior=(0.5, 1.0), pool_offsets="yes")  # type: ignore[arg-type]
    # a pool with one profiled member gives offsets but no strength: the router's α
    r1, _, t1 = make_router()
    r1.add_model("only", cost=1.0, scores=scores_for(t1, {0}, 24))
    assert r1.add_model("new", cost=1.0, prior=(0.5, 2.0)).shrinkage == 2.0


def test_a_refit_recomputes_a_cold_member_offsets_on_the_new_map():
    router, probes, topic = make_router()
    for j, seed in enumerate((30, 31)):
        router.add_model(f"p{j}", cost=1.0, scores=scores_for(topic, {j}, seed))
    router.add_model("new", cost=1.0, prior=(0.5, 2.0))
    router.add_model("flat", cost=1.0, prior=(0.5, 2.0), pool_offsets=False)
    before = router.profiles["new"].prior_offsets.copy()
    train, _ = blobs(300, 40)
    router.n_clusters = K + 2  # a refit on a finer map (constructor params are plain attributes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FeedbackWarning)
        router.fit_embeddings(train)
    pool = [router.profiles["p0"], router.profiles["p1"]]
    new = router.profiles["new"]
    assert new.prior_offsets.shape == (K + 2,) != before.shape
    np.testing.assert_allclose(new.prior_offsets, pool_cluster_offsets(pool))
    assert new.shrinkage == pytest.approx(max(2.0, pool_prior_strength(pool)))
    assert router.profiles["flat"].prior_offsets is None and router.profiles["flat"].shrinkage == 2.0
