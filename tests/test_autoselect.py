"""Validation-chosen representation inside UniRouter (issue 15): the selection, its record, its persistence, the
``uniroute`` evaluation method, and a small probe set where a fixed K = 20 loses to ZeroRouter."""

from __future__ import annotations

import json

import numpy as np
import pytest

from uniroute_core import UniRouter
from uniroute_core.autoselect import (
    FAMILIES_ALL,
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
        expected = area(router_curve(pred, true, costs, max_points=200))
        assert validation_area(pred, true, costs, 200) == pytest.approx(expected, abs=1e-15)


def test_topic_signal_is_found_and_the_record_lists_every_candidate():
    x, s, c = two_topic()
    res = select_representation(x, s, c, n_probes=200, seed=0)
    sel = res.selection
    assert sel.chosen.representation != "zero"
    assert sel.chosen.validation_area > sel.zero_validation_area + 0.02
    assert sel.chosen == max(sel.candidates, key=lambda cand: cand.validation_area)
    assert sel.gain_over_zero > sel.gain_over_zero_se > 0
    # the default candidates are the maps that route in O(K·d) per prompt, like the paper's K-Means
    assert {cand.representation for cand in sel.candidates} == {"zero", "kmeans", "multires"}
    assert res.shrinkage == sel.chosen.params["shrinkage"]
    assert res.cluster_map.is_fitted and "chosen" in str(sel)
    assert Selection.from_dict(json.loads(json.dumps(sel.to_dict()))) == sel
    wide = select_representation(x, s, c, n_probes=200, seed=0, space=SearchSpace(families=FAMILIES_ALL)).selection
    assert {cand.representation for cand in wide.candidates} == set(FAMILIES_ALL)  # probe-anchored ones opt in


def test_the_router_searches_the_bounded_space_by_default_and_a_given_one_when_asked():
    x, s, c = two_topic()
    texts = [f"prompt {i}" for i in range(len(x))]
    lookup = dict(zip(texts, x))

    def embed(batch: list[str]) -> np.ndarray:
        return np.stack([lookup[t] for t in batch])

    probes = texts[:200]
    default = UniRouter(embedder=embed, seed=0, show_progress=False)
    default.fit(texts[200:], train_scores=s[200:], train_costs=c, n_probes=len(probes))
    assert {cand.representation for cand in default.selection_.candidates} <= {"zero", "kmeans", "multires"}
    wide = UniRouter(embedder=embed, seed=0, show_progress=False, search_space=SearchSpace(families=FAMILIES_ALL))
    wide.fit(texts[200:], train_scores=s[200:], train_costs=c, n_probes=len(probes))
    assert {"probe_knn", "blend"} <= {cand.representation for cand in wide.selection_.candidates}
    assert wide.get_params()["search_space"] == SearchSpace(families=FAMILIES_ALL)
    with pytest.raises(TypeError, match="search_space must be a SearchSpace"):
        UniRouter(search_space={"families": ["zero"]})  # type: ignore[arg-type]


def test_selection_is_deterministic_with_a_seed_and_reads_only_the_given_columns():
    x, s, c = synthetic(seed=1, effect=0.03)
    rows = np.arange(700)
    a = select_representation(x[rows], s[np.ix_(rows, range(18))], c[:18], n_probes=150, seed=7)
    b = select_representation(x[rows], s[np.ix_(rows, range(18))], c[:18], n_probes=150, seed=7)
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
    # routing computes every level's distances in one product: the same weights as each level on its own
    np.testing.assert_allclose(w, np.concatenate([lv.assign(x[:20]) / 2 for lv in m.levels_], axis=1), atol=1e-6)
    back = MultiResolutionClusterMap.from_state(m.get_config(), m.get_arrays())
    np.testing.assert_array_equal(back.assign(x[:20]), w)
    with pytest.raises(ValueError, match="levels"):
        MultiResolutionClusterMap(levels=()).fit(x)
    # built from a single K like any kind (so `uniroute eval --methods multires` works through the registry)
    assert [lv.n_clusters_ for lv in MultiResolutionClusterMap(n_clusters=20).fit(x).levels_] == [3, 6, 11, 20]
    assert MultiResolutionClusterMap(n_clusters=1).fit(x).n_clusters_ == 1


def test_space_is_validated():
    with pytest.raises(ValueError, match="families"):
        SearchSpace(families=("nope",))
    with pytest.raises(ValueError, match="shrinkage"):
        SearchSpace(shrinkage=(-1.0,))
    space = SearchSpace(
        families=("zero", "kmeans"), n_clusters=(2,), temperature_multiples=(None,), shrinkage=(2.0,),
        profile_ranks=(0,),
    )
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


@pytest.mark.slow
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


# ---------------------------------------------------------------------------------------------- inside UniRouter
def _texts(n: int, prefix: str = "p") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


class TableEmbedder:
    """Texts ``p<i>`` → row i of a fixed table (the synthetic prompts' vectors), as a callable embedder."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = table

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.table[[int(t[1:]) for t in texts]]


def test_fit_with_a_training_matrix_chooses_records_and_saves_the_choice(tmp_path):
    x, s, c = two_topic(n=600)
    router = UniRouter(embedder=TableEmbedder(x), seed=0, show_progress=False)
    train, probes, test = np.arange(0, 400), np.arange(400, 500), np.arange(500, 600)
    # training LLMs: columns 0, 3 and 4; the routed members are new (columns 1 and 2, profiled on the probes only)
    router.fit(_texts(400), s[np.ix_(train, [0, 3, 4])], train_costs=c[[0, 3, 4]], train_models=["a", "d", "e"])
    sel = router.selection_
    assert sel is not None and sel.chosen.representation != "zero" and sel.n_models == 3
    assert sel.n_pseudo_probes == round(400 / 7)  # no probe count known yet: a seventh of the training prompts
    assert router.shrinkage_ == sel.chosen.params["shrinkage"]
    assert router.get_params()["cluster_map"] == "auto" and router.get_params()["n_clusters"] == "auto"
    router.set_probes([f"p{i}" for i in probes])
    router.add_model("b", 1.0, s[probes, 1])
    router.add_model("c", 1.5, s[probes, 2])
    assert all(p.shrinkage == router.shrinkage_ for p in router.profiles.values())
    before = router.route([f"p{i}" for i in test], lam=0.0)
    router.save(tmp_path / "r")
    meta = json.loads((tmp_path / "r" / "router.json").read_text())
    assert meta["selection"]["chosen"] == sel.chosen.to_dict() and meta["fitted_shrinkage"] == router.shrinkage_
    back = UniRouter.load(tmp_path / "r", embedder=TableEmbedder(x))
    assert back.selection_ == sel and back.shrinkage_ == router.shrinkage_
    assert back.get_params()["cluster_map"] == "auto" and back.get_params()["n_clusters"] == "auto"
    assert back.route([f"p{i}" for i in test], lam=0.0) == before
    back.add_model("a", 1.0, s[probes, 0])  # a member added after loading uses the chosen α too
    assert back.profiles["a"].shrinkage == router.shrinkage_


def test_a_file_without_a_selection_loads_with_none(tmp_path):
    x, s, c = two_topic(n=300)
    router = UniRouter(embedder=TableEmbedder(x), n_clusters=2, cluster_map="kmeans", show_progress=False)
    router.fit(_texts(200)).set_probes(_texts(100, "p")[:100])
    router.add_model("a", 1.0, s[:100, 0])
    router.save(tmp_path / "r")
    meta = json.loads((tmp_path / "r" / "router.json").read_text())
    del meta["selection"], meta["fitted_shrinkage"]  # as written before issue 15
    (tmp_path / "r" / "router.json").write_text(json.dumps(meta))
    back = UniRouter.load(tmp_path / "r", embedder=TableEmbedder(x))
    assert back.selection_ is None and back.shrinkage_ == 2.0
    meta["selection"] = {"chosen": {}}
    (tmp_path / "r" / "router.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="selection record is malformed"):
        UniRouter.load(tmp_path / "r", embedder=TableEmbedder(x))


def test_without_a_training_matrix_k_follows_the_probe_count():
    x, s, _ = synthetic(seed=0)
    emb = TableEmbedder(x)
    router = UniRouter(embedder=emb, show_progress=False).fit(_texts(1800))
    assert router.cluster_map.n_clusters_ == 20  # probe count not known yet
    router.set_probes([f"p{i}" for i in range(1800, 2100)])  # 300 probes → K = 6, refitted here
    assert router.cluster_map.n_clusters_ == 6 and router.selection_ is None and router.shrinkage_ == 2.0
    router.add_model("m0", 1.0, s[1800:2100, 0])
    assert router.state.cluster_quality.shape == (1, 6)
    # a known probe count at fit gives K directly; an explicit K is kept
    assert UniRouter(embedder=emb, show_progress=False).fit(_texts(600), n_probes=120).cluster_map.n_clusters_ == 2
    fixed = UniRouter(embedder=emb, n_clusters=20, show_progress=False).fit(_texts(600))
    fixed.set_probes([f"p{i}" for i in range(1800, 2100)])
    assert fixed.cluster_map.n_clusters_ == 20
    with pytest.raises(ValueError, match="n_clusters must be 'auto' or a positive integer"):
        UniRouter(n_clusters=0)
    with pytest.raises(ValueError, match="unknown cluster map kind 'nope'"):
        UniRouter(cluster_map="nope")


def test_the_uniroute_method_never_reads_the_routed_members_scores_outside_the_probes():
    """The evaluation method is the product path: permuting the *test* LLMs' scores on the train and test prompts
    (everything but their probe scores) leaves the choice exactly as it was."""
    from uniroute_core.data import RoutingData
    from uniroute_core.evaluation.product import uniroute_predictions

    x, s, c = synthetic(seed=2, effect=0.05)
    n = 1500
    x, s = x[:n], s[:n]
    rng = np.random.default_rng(0)
    perm = rng.permutation(n)
    train, probe, test = np.sort(perm[:900]), np.sort(perm[900:1050]), np.sort(perm[1050:])
    tr_m, te_m = np.arange(0, 27, 3), np.setdiff1d(np.arange(27), np.arange(0, 27, 3))

    def data(scores: np.ndarray) -> RoutingData:
        return RoutingData(
            name="synthetic", prompt_ids=_texts(n), prompts=_texts(n), categories=[""] * n, split_hints=[""] * n,
            models=[f"m{j}" for j in range(27)], scores=scores, costs=c,
        )

    pred, params = uniroute_predictions(x, data(s), train, probe, test, tr_m, te_m, seed=5)
    shuffled = s.copy()
    rows = np.concatenate([train, test])
    shuffled[np.ix_(rows, te_m)] = shuffled[np.ix_(rng.permutation(rows), te_m)]
    pred2, params2 = uniroute_predictions(x, data(shuffled), train, probe, test, tr_m, te_m, seed=5)
    assert params2 == params
    np.testing.assert_array_equal(pred2, pred)
    assert pred.shape == (len(test), len(te_m))
    # while the training LLMs' scores do drive it
    other = s.copy()
    other[np.ix_(train, tr_m)] = 1.0 - other[np.ix_(train, tr_m)]
    assert uniroute_predictions(x, data(other), train, probe, test, tr_m, te_m, seed=5)[1] != params


@pytest.mark.slow
def test_small_probe_set_fixed_k20_loses_to_zero_router_and_the_auto_path_does_not(tmp_path):
    """A routing folder with 3,000 prompts (60/10/30 → 300 probes) and 27 models whose accuracy does not depend on
    the prompt: K = 20 fixed (hard, α = 2) fits probe noise and loses to ZeroRouter; the product path chooses by
    validation on the training LLMs and does not."""
    from uniroute_core import load_routing_data, write_routing_data
    from uniroute_core.evaluation.protocol import EvaluationConfig, evaluate

    x, s, c = synthetic(seed=0, effect=0.0)
    folder = write_routing_data(
        tmp_path / "small", prompts=_texts(N_PROMPTS), models=[f"m{j}" for j in range(N_MODELS)], scores=s, costs=c,
    )
    data = load_routing_data(folder)
    emb = TableEmbedder(x)(list(data.prompts))
    cfg = EvaluationConfig(trials=2, seed=0, methods=("uniroute", "kmeans", "zero"), n_clusters=20)
    res = evaluate(data, emb, cfg, progress=False)
    assert [len(t.split.probe) for t in res.trials] == [300, 300] and len(res.trials[0].split.test_models) == 9
    k20, zero, auto = (np.array(res.values(m, "area")) for m in ("kmeans", "zero", "uniroute"))
    assert (k20 < zero).all()
    assert (auto >= zero).all()


def test_a_fixed_k_is_kept_and_only_temperature_and_alpha_are_chosen():
    x, s, c = two_topic(n=400)
    router = UniRouter(embedder=TableEmbedder(x), n_clusters=3, show_progress=False)
    router.fit(_texts(400), s, train_costs=c, n_probes=80)
    assert router.cluster_map.n_clusters_ == 3
    assert {cand.representation for cand in router.selection_.candidates} == {"kmeans"}
    assert {cand.params["n_clusters"] for cand in router.selection_.candidates} == {3}
