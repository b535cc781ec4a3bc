"""Validation-chosen representation inside UniRouter (issue 15): the selection, its record, its persistence, the
``uniroute`` evaluation method, and a small probe set where a fixed K = 20 loses to ZeroRouter."""

from __future__ import annotations

import json

import numpy as np
import pytest

from uniroute_core import UniRouter
from uniroute_core.autoselect import (
    SearchSpace,
    Selection,
    default_n_clusters,
    select_representation,
    validation_area,
)
from uniroute_core.cluster_map import KMeansClusterMap
from uniroute_core.multires import MultiResolutionClusterMap

N_PROMPTS, N_MODELS, DIM, TOPICS = 3000, 27, 16, 8


def synthetic(seed: int = 0, effect: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prompts on 8 topics (Gaussian blobs in 16-d), 27 LLMs whose accuracy barely depends on the topic
    (``effect`` = std of a per-(model, topic) shift): the prompt says little about which LLM is right, so a router
    with many clusters fits probe noise. Costs grow with ability, as in real pools."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(TOPICS, DIM))
    topic = rng.integers(TOPICS, size=N_PROMPTS)
    x = (centers[topic] + rng.normal(size=(N_PROMPTS, DIM))).astype(np.float32)
    ability = np.sort(rng.uniform(0.3, 0.85, size=N_MODELS))
    costs = np.round(np.exp(np.linspace(0, 4, N_MODELS)) * rng.uniform(0.8, 1.2, size=N_MODELS), 3)
    shift = rng.normal(scale=effect, size=(N_MODELS, TOPICS)) if effect > 0 else np.zeros((N_MODELS, TOPICS))
    p = np.clip(ability[None, :] + shift.T[topic], 0.01, 0.99)
    scores = (rng.random((N_PROMPTS, N_MODELS)) < p).astype(float)
    return x, scores, costs


def two_topic(seed: int = 0, n: int = 600) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two well-separated topics; cheap LLMs are good on one topic only, so clusters pay."""
    rng = np.random.default_rng(seed)
    topic = np.arange(n) % 2
    x = np.concatenate([np.eye(2)[topic] * 3.0 + rng.normal(scale=0.3, size=(n, 2)), rng.normal(size=(n, 2))], axis=1)
    p = np.stack(
        [np.where(topic == 0, 0.9, 0.1), np.where(topic == 1, 0.9, 0.1), np.where(topic == 0, 0.85, 0.2),
         np.full(n, 0.8), np.full(n, 0.9)], axis=1,
    )
    return x.astype(np.float32), (rng.random(p.shape) < p).astype(float), np.array([1.0, 1.0, 1.5, 6.0, 10.0])


# ---------------------------------------------------------------------------------------------- the selection itself
def test_default_n_clusters_scales_with_the_probe_count():
    assert [default_n_clusters(n) for n in (0, 49, 50, 300, 999, 1000, 5000)] == [1, 1, 1, 6, 19, 20, 20]
    with pytest.raises(ValueError, match="n_probes"):
        default_n_clusters(-1)


def test_validation_area_is_the_area_of_router_curve():
    from uniroute_core.evaluation.metrics import area, router_curve

    rng = np.random.default_rng(3)
    for _ in range(3):
        pred = np.round(rng.random((200, 6)), 2)
        true = (rng.random((200, 6)) < 0.5).astype(float)
        costs = rng.choice([1.0, 2.0, 2.0, 5.0], size=6)
        assert validation_area(pred, true, costs, 200) == pytest.approx(area(router_curve(pred, true, costs, max_points=200)), abs=1e-15)


def test_topic_signal_is_found_and_the_record_lists_every_candidate():
    x, s, c = two_topic()
    res = select_representation(x, s, c, n_probes=200, seed=0)
    sel = res.selection
    assert sel.chosen.representation != "zero"
    assert sel.chosen.validation_area > sel.zero_validation_area + 0.02
    assert sel.chosen == max(sel.candidates, key=lambda cand: cand.validation_area)
    assert {cand.representation for cand in sel.candidates} == {"zero", "kmeans", "multires"}
    assert res.shrinkage == sel.chosen.params["shrinkage"]
    assert res.cluster_map.is_fitted and "chosen" in str(sel)
    assert Selection.from_dict(json.loads(json.dumps(sel.to_dict()))) == sel


def test_selection_is_deterministic_with_a_seed_and_reads_only_the_given_columns():
    x, s, c = synthetic(seed=1, effect=0.03)
    rows = np.arange(1200)
    a = select_representation(x[rows], s[np.ix_(rows, range(18))], c[:18], n_probes=300, seed=7)
    b = select_representation(x[rows], s[np.ix_(rows, range(18))], c[:18], n_probes=300, seed=7)
    assert a.selection == b.selection
    np.testing.assert_array_equal(a.cluster_map.assign(x[:50]), b.cluster_map.assign(x[:50]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"train_costs": None}, "train_costs is missing"),
        ({"train_costs": [1.0, 2.0]}, "3 values but train_scores has 2"),
        ({"train_costs": [1.0, -1.0, 2.0]}, "column 1 has cost -1"),
    ],
)
def test_bad_training_matrix_is_refused_with_a_clear_error(kwargs, match):
    x, s, _ = two_topic(n=200)
    s3 = s[:, :3]
    if "3 values" in match:
        s3 = s[:, :2]
        kwargs = {"train_costs": [1.0, 2.0, 3.0]}
    with pytest.raises(ValueError, match=match):
        select_representation(x, s3, kwargs["train_costs"], n_probes=50)


def test_scores_outside_0_1_or_an_all_nan_model_are_named():
    x, s, c = two_topic(n=200)
    bad = s.copy()
    bad[5, 2] = 3.0
    with pytest.raises(ValueError, match="m2 has score 3.0 at prompt 5"):
        select_representation(x, bad, c, train_models=["m0", "m1", "m2", "m3", "m4"])
    bad = s.copy()
    bad[:, 1] = np.nan
    with pytest.raises(ValueError, match=r"\['column 1'\] have no known score"):
        select_representation(x, bad, c)
    with pytest.raises(ValueError, match="too few"):
        select_representation(x[:30], s[:30], c)


def test_multires_map_rows_are_a_distribution_and_round_trip():
    x, _, _ = two_topic()
    m = MultiResolutionClusterMap(levels=(2, 5), seed=0, temperature_multiple=0.3).fit(x)
    w = m.assign(x[:20])
    assert w.shape == (20, 7) and (w >= 0).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    np.testing.assert_allclose(w[:, :2].sum(axis=1), 0.5)
    back = MultiResolutionClusterMap.from_state(m.get_config(), m.get_arrays())
    np.testing.assert_array_equal(back.assign(x[:20]), w)
    with pytest.raises(ValueError, match="levels"):
        MultiResolutionClusterMap(levels=()).fit(x)


def test_space_is_validated():
    with pytest.raises(ValueError, match="families"):
        SearchSpace(families=("nope",))
    with pytest.raises(ValueError, match="shrinkage"):
        SearchSpace(shrinkage=(-1.0,))
    space = SearchSpace(families=("zero", "kmeans"), n_clusters=(2,), temperature_multiples=(None,), shrinkage=(2.0,))
    x, s, c = two_topic()
    sel = select_representation(x, s, c, n_probes=100, space=space).selection
    assert [cand.representation for cand in sel.candidates] == ["zero", "kmeans"]
    assert isinstance(KMeansClusterMap, type)


# ---------------------------------------------------------------------------------------------- reproducibility
_TRAIN_IN_SUBPROCESS = """
import hashlib, sys
import numpy as np
import torch
torch.set_num_threads(int(sys.argv[1]))          # what the calling program happens to use
from uniroute_core.learned_map import LearnedMapClusterMap
rng = np.random.default_rng(0)
x = rng.normal(size=(400, 16)).astype(np.float32)
s = (rng.random((400, 5)) < 0.6).astype(float)
m = LearnedMapClusterMap(n_clusters=4, seed=3, epochs=3).fit(x, train_scores=s)
h = hashlib.sha256()
for k, v in sorted(m.get_arrays().items()):
    h.update(k.encode()); h.update(np.ascontiguousarray(v).tobytes())
print(h.hexdigest(), torch.get_num_threads())
"""


def test_learned_map_training_is_bitwise_identical_whatever_the_callers_thread_count():
    """The map trains with its own fixed thread count and deterministic algorithms, so two processes that set
    different torch thread counts (and OpenMP settings) get the very same weights."""
    import os
    import subprocess
    import sys

    out = []
    for threads, omp in (("1", "1"), ("2", "2")):
        env = {**os.environ, "OMP_NUM_THREADS": omp, "MKL_NUM_THREADS": omp}
        res = subprocess.run(
            [sys.executable, "-c", _TRAIN_IN_SUBPROCESS, threads], capture_output=True, text=True, env=env, timeout=300
        )
        assert res.returncode == 0, res.stderr
        digest, seen_threads = res.stdout.split()
        assert seen_threads == threads  # the caller's setting is restored after fitting
        out.append(digest)
    assert out[0] == out[1]
