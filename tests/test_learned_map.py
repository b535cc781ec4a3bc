"""LearnedMap: learns a useful soft clustering from the training LLMs, deterministic, saves and loads without pickle."""

from __future__ import annotations

import numpy as np
import pytest

from uniroute_core import UniRouter
from uniroute_core.cluster_map import CLUSTER_MAPS
from uniroute_core.evaluation.baselines import cluster_quality, zero_router_quality
from uniroute_core.evaluation.metrics import area, router_curve
from uniroute_core.learned_map import LearnedMapClusterMap


def _toy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two topics separable in an 8-d embedding; LLM "a" knows topic 0, "b" knows topic 1, "c" is mediocre on both.

    Returns embeddings (n, 8), topic (n,), scores (n, 3) of the three LLMs (0/1, noisy).
    """
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, 2, n)
    centers = np.zeros((2, 8))
    centers[0, 0], centers[1, 1] = 3.0, 3.0
    x = centers[topic] + rng.normal(size=(n, 8))
    p_correct = np.stack([np.where(topic == 0, 0.9, 0.1), np.where(topic == 1, 0.9, 0.1), np.full(n, 0.5)], axis=1)
    scores = (rng.random((n, 3)) < p_correct).astype(float)
    return x.astype(np.float32), topic, scores


def test_learned_map_beats_one_cluster_on_separable_topics():
    x_tr, _, s_tr = _toy(600, 0)
    x_pr, _, s_pr = _toy(120, 1)
    x_te, _, s_te = _toy(400, 2)
    # train on LLMs a and c; the unseen test pool is b and c (b never seen in training)
    cmap = LearnedMapClusterMap(n_clusters=2, seed=0).fit(
        x_tr, train_scores=s_tr[:, [0, 2]], train_models=["a", "c"], probe_embeddings=x_pr, probe_scores=s_pr[:, [0, 2]]
    )
    costs = np.array([1.0, 3.0])  # b cheap, c expensive
    learned = cluster_quality(cmap, x_pr, s_pr[:, [1, 2]], x_te, shrinkage=0.0)
    zero = zero_router_quality(s_pr[:, [1, 2]], len(x_te))
    a_learned = area(router_curve(learned, s_te[:, [1, 2]], costs))
    a_zero = area(router_curve(zero, s_te[:, [1, 2]], costs))
    assert a_learned > a_zero + 0.05
    # the map separates the topics: each topic's prompts mostly go to one cluster
    assign = cmap.assign(x_te).argmax(1)
    _, topic_te, _ = _toy(400, 2)
    purity = max(np.mean(assign == topic_te), np.mean(assign != topic_te))
    assert purity > 0.9
    assert cmap.loss_history_[-1] < cmap.loss_history_[0]


def test_assignments_are_distributions_and_fit_is_deterministic():
    x, _, s = _toy(200, 3)
    a = LearnedMapClusterMap(n_clusters=4, seed=7).fit(x, train_scores=s)
    b = LearnedMapClusterMap(n_clusters=4, seed=7).fit(x, train_scores=s)
    w = a.assign(x)
    assert w.shape == (200, 4)
    assert np.all(w >= 0) and np.allclose(w.sum(1), 1.0)
    np.testing.assert_array_equal(w, b.assign(x))  # same seed → identical weights
    # assignment uses eval-mode batch norm: a single prompt gets the same weights alone as in a batch
    np.testing.assert_allclose(a.assign(x[:1]), w[:1], rtol=1e-10)


def test_state_round_trip_and_registry():
    assert CLUSTER_MAPS["learned_map"] is LearnedMapClusterMap
    x, _, s = _toy(150, 4)
    a = LearnedMapClusterMap(n_clusters=3, seed=1).fit(x, train_scores=s, train_models=["a", "b", "c"])
    b = LearnedMapClusterMap.from_state(a.get_config(), a.get_arrays())
    np.testing.assert_array_equal(a.assign(x), b.assign(x))
    assert b.train_models_ == ["a", "b", "c"]
    arrays = a.get_arrays()
    arrays["fc3.weight"] = arrays["fc3.weight"][:2]
    with pytest.raises(ValueError, match="fc3.weight"):
        LearnedMapClusterMap.from_state(a.get_config(), arrays)


def test_clear_errors_for_missing_or_mismatched_supervision():
    x, _, s = _toy(60, 5)
    with pytest.raises(ValueError, match="train_scores is missing"):
        LearnedMapClusterMap(n_clusters=2).fit(x)
    with pytest.raises(ValueError, match="probe_scores is missing"):
        LearnedMapClusterMap(n_clusters=2).fit(x, train_scores=s, probe_embeddings=x[:10])
    with pytest.raises(ValueError, match="same training LLMs"):
        LearnedMapClusterMap(n_clusters=2).fit(x, train_scores=s, probe_embeddings=x[:10], probe_scores=s[:10, :2])
    with pytest.raises(ValueError, match="train_models names 2 models"):
        LearnedMapClusterMap(n_clusters=2).fit(x, train_scores=s, train_models=["a", "b"])
    with pytest.raises(ValueError, match="outside"):
        LearnedMapClusterMap(n_clusters=2).fit(x, train_scores=s * 2)


def test_unirouter_learned_map_fit_add_route_save_load(tmp_path, embedder):
    topics = {"math": "integral derivative algebra equation", "law": "court statute contract plaintiff"}
    rng = np.random.default_rng(0)
    prompts, scores = [], []
    for i in range(160):
        t = "math" if i % 2 == 0 else "law"
        words = topics[t].split()
        prompts.append(f"{t} question {i}: " + " ".join(rng.choice(words, 4)))
        scores.append([1.0 if t == "math" else 0.0, 1.0 if t == "law" else 0.0])
    scores_arr = np.array(scores)
    router = UniRouter(embedder=embedder, cluster_map="learned_map", n_clusters=2, shrinkage=0.0, show_progress=False)
    router.fit(prompts[:120], train_scores=scores_arr[:120], train_models=["math_whiz", "law_whiz"])
    router.set_probes(prompts[120:])
    # unseen LLMs profiled on the probes only: "cheap_math" knows math, "big_law" knows law
    router.add_model("cheap_math", cost=1.0, scores=scores_arr[120:, 0])
    router.add_model("big_law", cost=5.0, scores=scores_arr[120:, 1])
    picks = [
        d.model for d in router.route(["math question: integral equation", "law question: court contract"], lam=0.0)
    ]
    assert picks == ["cheap_math", "big_law"]
    router.save(tmp_path / "r")
    loaded = UniRouter.load(tmp_path / "r", embedder=embedder)
    assert loaded.cluster_map.kind == "learned_map"
    np.testing.assert_allclose(loaded.expected_quality(prompts[:10]), router.expected_quality(prompts[:10]))
    assert not list((tmp_path / "r").glob("*.pkl")) and not list((tmp_path / "r").glob("*.pt"))


def test_unirouter_learned_map_without_scores_says_what_is_missing(embedder):
    router = UniRouter(embedder=embedder, cluster_map="learned_map", n_clusters=2, show_progress=False)
    with pytest.raises(ValueError, match="train_scores"):
        router.fit(["math integral", "law court", "math algebra", "law contract"])


def test_early_stopping_keeps_the_best_epoch_and_round_trips():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    s = (rng.random((300, 4)) < 0.5).astype(float)  # no signal: the held-out loss soon stops improving
    m = LearnedMapClusterMap(n_clusters=3, seed=0, epochs=40, patience=2).fit(x, train_scores=s)
    assert len(m.val_loss_history_) == len(m.loss_history_) < 40  # stopped early
    assert m.best_epoch_ == int(np.argmin(m.val_loss_history_)) + 1
    assert len(m.val_loss_history_) - m.best_epoch_ == 2  # patience epochs past the best
    back = LearnedMapClusterMap.from_state(m.get_config(), m.get_arrays())
    np.testing.assert_array_equal(back.assign(x[:10]), m.assign(x[:10]))
    assert back.patience == 2 and back.best_epoch_ == m.best_epoch_
    # the paper's schedule is unchanged without patience
    plain = LearnedMapClusterMap(n_clusters=3, seed=0, epochs=3).fit(x, train_scores=s)
    assert len(plain.loss_history_) == 3 and plain.best_epoch_ is None
    with pytest.raises(ValueError, match="patience must be None or a positive integer"):
        LearnedMapClusterMap(n_clusters=3, patience=0).fit(x, train_scores=s)


def test_training_without_torchs_nan_fill_gives_the_same_weights(monkeypatch):
    """Deterministic mode makes torch fill every new tensor with NaN (a guard against reading uninitialised memory);
    the training turns that off for speed. Every tensor is written before it is read, so the weights must be
    bit-identical with the fill on — and the caller's own setting is restored afterwards."""
    import torch.utils.deterministic

    import uniroute_core.learned_map as lm

    x, _, s = _toy(300, 4)
    px, _, ps = _toy(120, 5)

    def fit() -> dict[str, np.ndarray]:
        m = LearnedMapClusterMap(n_clusters=4, seed=2, epochs=2, batch_size=50)
        return m.fit(x, train_scores=s, probe_embeddings=px, probe_scores=ps).get_arrays()

    fast = fit()
    assert torch.utils.deterministic.fill_uninitialized_memory is True  # restored (torch's default)
    monkeypatch.setattr(lm, "_FILL_UNINITIALIZED", True)
    guarded = fit()
    assert sorted(fast) == sorted(guarded)
    for name in fast:
        np.testing.assert_array_equal(fast[name], guarded[name], err_msg=name)
