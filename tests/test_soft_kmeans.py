"""Soft K-Means assignments: Φ_k(x) ∝ exp(−‖x − μ_k‖² / τ), persistence of τ, and τ chosen on validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_cli import _run, folder  # noqa: F401 (fixture)
from tests.test_evaluation import FAST, _toy_data
from tests.test_router import BIG, PROBES, SMALL, TRAIN
from uniroute_core import UniRouter
from uniroute_core.cluster_map import KMeansClusterMap
from uniroute_core.evaluation import EvaluationConfig, evaluate, make_trial_splits, run_trial
from uniroute_core.persistence import JSON_FILE

PROMPTS = ["math homework", "law contract", "math proof", "law tort", "something else entirely"]


def line_map(temperature: float | None) -> KMeansClusterMap:
    """Two centroids on a line, at 0 and 2 (1-D embeddings)."""
    config = {"n_clusters": 2, "dim": 1, "temperature": temperature}
    return KMeansClusterMap.from_state(config, {"cluster_centers": np.array([[0.0], [2.0]])})


def test_soft_weights_by_hand_and_rows_sum_to_one():
    cmap = line_map(temperature=1.0)
    w = cmap.assign(np.array([[0.0], [1.0], [2.0], [3.0]]))
    # squared distances to (0, 2): (0, 4), (1, 1), (4, 0), (9, 1)
    e4 = np.exp(-4.0)
    e8 = np.exp(-8.0)
    expected = np.array(
        [[1 / (1 + e4), e4 / (1 + e4)], [0.5, 0.5], [e4 / (1 + e4), 1 / (1 + e4)], [e8 / (1 + e8), 1 / (1 + e8)]]
    )
    np.testing.assert_allclose(w, expected, rtol=1e-6)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    # far from both centroids the exponentials would underflow without the per-row shift: still a distribution
    far = cmap.with_temperature(1e-3).assign(np.array([[1000.0]]))
    np.testing.assert_allclose(far, [[0.0, 1.0]], atol=1e-12)


def test_hard_is_the_default_and_soft_rows_are_per_prompt():
    hard = line_map(temperature=None)
    assert hard.temperature is None
    idx, table = hard.assign_compact(np.array([[0.1], [1.9], [0.2]]))
    np.testing.assert_array_equal(idx, [0, 1, 0])
    np.testing.assert_array_equal(table, np.eye(2))
    soft = hard.with_temperature(0.5)
    x = np.array([[0.1], [1.9], [0.2]])
    idx, table = soft.assign_compact(x)
    np.testing.assert_array_equal(idx, [0, 1, 2])
    np.testing.assert_allclose(table, soft.assign(x))
    np.testing.assert_array_equal(soft.cluster_centers_, hard.cluster_centers_)
    assert hard.temperature is None  # with_temperature copies, it does not change the original


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature_is_rejected(bad):
    with pytest.raises(ValueError, match="temperature"):
        KMeansClusterMap(temperature=bad)
    with pytest.raises(TypeError, match="temperature"):
        KMeansClusterMap(temperature="warm")  # type: ignore[arg-type]


def soft_router(embedder, temperature: float | None) -> UniRouter:
    template = KMeansClusterMap(n_clusters=2, seed=0, temperature=temperature)
    router = UniRouter(embedder=embedder, cluster_map=template, shrinkage=0.0, show_progress=False)
    router.fit(TRAIN).set_probes(PROBES)
    router.add_model("small", cost=1.0, scores=SMALL)
    router.add_model("big", cost=10.0, scores=BIG)
    return router


def decisions(router: UniRouter, **kw):
    return [(d.model, d.ranking, d.expected_quality) for d in router.route(PROMPTS, **kw)]


def test_tiny_temperature_reproduces_hard_routing(embedder):
    hard, soft = soft_router(embedder, None), soft_router(embedder, 1e-6)
    # τ → 0 is the hard map wherever a prompt has one nearest centroid (an exact tie is split evenly when soft)
    d2 = np.sort(hard.cluster_map.squared_distances(hard.embed(PROMPTS)), axis=1)
    clear = [p for p, row in zip(PROMPTS, d2) if row[1] - row[0] > 1e-3]
    assert len(clear) >= 4
    for lam in (0.0, 0.05, 0.3, 2.0):
        got = [(d.model, d.ranking, d.expected_quality) for d in soft.route(clear, lam=lam)]
        want = [(d.model, d.ranking, d.expected_quality) for d in hard.route(clear, lam=lam)]
        assert [g[:2] for g in got] == [w[:2] for w in want]
        for g, w in zip(got, want):
            assert g[2] == pytest.approx(w[2], abs=1e-9)


def test_soft_routing_follows_phi_psi_per_prompt(embedder):
    router = soft_router(embedder, 0.5)
    emb = router.embed(PROMPTS)
    q = router.cluster_map.assign(emb) @ np.stack([router.profiles[m].cluster_quality for m in router.models]).T
    np.testing.assert_allclose(router.expected_quality(PROMPTS), q)
    for d, row in zip(router.route(PROMPTS, lam=0.0), q):
        assert d.expected_quality == pytest.approx(dict(zip(router.models, row)))
    # soft Ψ: each probe counts towards every cluster by its weight, so the counts are fractional but sum to P
    counts = router.profiles["small"].cluster_counts
    assert counts.sum() == pytest.approx(len(PROBES))


def test_save_load_keeps_temperature_and_old_files_load_hard(embedder, tmp_path):
    router = soft_router(embedder, 0.5)
    router.save(tmp_path / "r")
    loaded = UniRouter.load(tmp_path / "r", embedder=embedder)
    assert loaded.cluster_map.temperature == 0.5
    assert decisions(loaded, lam=0.1) == decisions(router, lam=0.1)
    # a file written before soft assignments existed has no "temperature" key: it loads as the hard map
    hard = soft_router(embedder, None)
    hard.save(tmp_path / "h")
    meta = json.loads((tmp_path / "h" / JSON_FILE).read_text())
    assert meta["cluster_map"]["config"].pop("temperature") is None
    (tmp_path / "h" / JSON_FILE).write_text(json.dumps(meta))
    old = UniRouter.load(tmp_path / "h", embedder=embedder)
    assert old.cluster_map.temperature is None
    assert decisions(old, lam=0.1) == decisions(hard, lam=0.1)


def test_validation_chooses_temperature_from_the_scaled_grid():
    data, x = _toy_data()
    cfg = EvaluationConfig(**dict(FAST, methods=("kmeans", "zero")))
    doc = evaluate(data, x, cfg, progress=False).to_json()
    entry = doc["methods"]["kmeans"]
    assert len(entry["temperature"]) == 3 and len(entry["temperature_multiple"]) == 3
    for tau, mult in zip(entry["temperature"], entry["temperature_multiple"]):
        assert (tau is None) == (mult is None)
        assert mult is None or (mult in cfg.kmeans_temperature_grid and tau > 0)
    assert doc["protocol"]["kmeans_temperature_grid"] == list(cfg.kmeans_temperature_grid)
    # the scale is the median squared distance of the fitting prompts to their nearest centroid, so the chosen τ
    # divided by its multiple is the same kind of number in every trial: positive and below the data's spread
    spread = float(((x - x.mean(0)) ** 2).sum(1).mean())
    for tau, mult in zip(entry["temperature"], entry["temperature_multiple"]):
        if tau is not None:
            assert 0 < tau / mult < spread


def test_empty_temperature_grid_is_the_hard_search():
    data, x = _toy_data()
    cfg = EvaluationConfig(**dict(FAST, trials=1, methods=("kmeans",)))
    hard_cfg = EvaluationConfig(**dict(FAST, trials=1, methods=("kmeans",), kmeans_temperature_grid=()))
    (split, _), = make_trial_splits(data, cfg)
    hard = run_trial(x, data, split, np.random.default_rng(1), hard_cfg)
    assert hard.params["kmeans"]["temperature"] is None
    both = run_trial(x, data, split, np.random.default_rng(1), cfg)
    # adding soft candidates can only keep or raise the validation Area of the chosen setting
    assert both.params["kmeans"]["validation_area"] >= hard.params["kmeans"]["validation_area"] - 1e-12
    with pytest.raises(ValueError, match="kmeans_temperature_grid"):
        EvaluationConfig(kmeans_temperature_grid=(0.1, 0.0))


def test_cli_results_keep_the_schema_and_report_the_chosen_temperature(folder, tmp_path):
    out = tmp_path / "out"
    assert _run(folder, out, tmp_path / "cache", "--trials", "2", "--methods", "kmeans,knn,zero") == 0
    doc = json.loads((out / "results.json").read_text())
    kmeans = doc["methods"]["kmeans"]
    for key in ("area", "area_mean", "area50_mean", "qnc", "qnc_mean", "n_clusters", "shrinkage"):
        assert key in kmeans, key
    assert len(kmeans["temperature"]) == 2 and "temperature" not in doc["methods"]["knn"]
    assert set(doc["sign_test"]) >= {"kmeans_vs_knn", "kmeans_vs_zero"}
    assert (out / "deferral_curve.png").exists()
