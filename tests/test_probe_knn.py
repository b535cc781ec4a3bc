"""KNN over the probes as a cluster map, and the blend of two maps (issue 15): valid Φ, the KNN baseline reproduced
exactly at α = 0, new members from probe scores alone, save/load, tampered files, and the validation selection."""

from __future__ import annotations

import json

import numpy as np
import pytest

from uniroute_core import UniRouter
from uniroute_core.autoselect import FAMILIES_ALL, SearchSpace, Selection, select_representation
from uniroute_core.cluster_map import CLUSTER_MAPS, KMeansClusterMap
from uniroute_core.evaluation.baselines import cluster_quality, knn_neighbours, knn_quality
from uniroute_core.persistence import RouterFileError
from uniroute_core.probe_knn import BlendClusterMap, ProbeKNNClusterMap


class TableEmbedder:
    """Texts ``p<i>`` → row i of a fixed table."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = table

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.table[[int(t[1:]) for t in texts]]


def _texts(idx) -> list[str]:
    return [f"p{i}" for i in idx]


def blobs(seed: int = 0, n: int = 600, m: int = 5):
    """Three topics in 6-d; each LLM's accuracy depends on the topic."""
    rng = np.random.default_rng(seed)
    topic = rng.integers(3, size=n)
    centers = rng.normal(scale=3.0, size=(3, 6))
    x = (centers[topic] + rng.normal(size=(n, 6))).astype(np.float32)
    acc = rng.uniform(0.2, 0.9, size=(3, m))
    s = (rng.random((n, m)) < acc[topic]).astype(float)
    return x, s, np.linspace(1.0, 5.0, m)


def test_probe_knn_is_a_valid_map_and_reproduces_the_knn_baseline_at_alpha_zero():
    x, s, c = blobs()
    train, probes, test = np.arange(300), np.arange(300, 420), np.arange(420, 600)
    router = UniRouter(embedder=TableEmbedder(x), cluster_map=ProbeKNNClusterMap(n_neighbors=7), shrinkage=0.0,
                       show_progress=False)
    router.fit(_texts(train))
    with pytest.raises(RuntimeError, match="set_probes"):
        router.cluster_map.assign(x[:3])  # the cells are the probes: nothing to assign to yet
    router.set_probes(_texts(probes))
    phi = router.cluster_map.assign(x[test])
    assert phi.shape == (len(test), len(probes)) and (phi >= 0).all()
    np.testing.assert_allclose(phi.sum(axis=1), 1.0)
    assert ((phi > 0).sum(axis=1) == 7).all()
    np.testing.assert_array_equal(router.state.probe_assign, np.eye(len(probes)))  # each probe is its own cell
    for j in range(s.shape[1]):  # a new member is its probe scores, nothing else
        router.add_model(f"m{j}", float(c[j]), s[probes, j])
    got = router.expected_quality(_texts(test))
    want = knn_quality(knn_neighbours(x[probes], x[test], 7), s[probes], 7)
    np.testing.assert_allclose(got, want, atol=1e-12)
    # with shrinkage: each probe's score pulled toward the member's mean, Ψ_p = (s_p + α s̄) / (1 + α)
    shrunk = UniRouter(embedder=TableEmbedder(x), cluster_map=ProbeKNNClusterMap(n_neighbors=7), shrinkage=2.0,
                       show_progress=False).fit(_texts(train)).set_probes(_texts(probes))
    shrunk.add_model("m0", float(c[0]), s[probes, 0])
    psi = shrunk.state.cluster_quality[0]
    np.testing.assert_allclose(psi, (s[probes, 0] + 2.0 * s[probes, 0].mean()) / 3.0)


def test_probe_knn_caps_k_and_rebinds_to_a_new_probe_set():
    x, s, c = blobs(n=200)
    router = UniRouter(embedder=TableEmbedder(x), cluster_map="probe_knn", n_clusters=50, show_progress=False)
    router.fit(_texts(range(100))).set_probes(_texts(range(100, 120)))
    assert router.cluster_map.n_clusters_ == 20
    np.testing.assert_allclose(router.cluster_map.assign(x[150:152]), 1.0 / 20)  # k capped at the 20 probes
    router.set_probes(_texts(range(120, 150)))  # pool empty: a new probe set rebinds the cells
    assert router.cluster_map.n_clusters_ == 30
    with pytest.raises(ValueError, match="n_neighbors must be a positive integer"):
        ProbeKNNClusterMap(n_neighbors=0).fit(x)


def test_blend_predicts_the_weighted_blend_of_its_parts():
    x, s, c = blobs(seed=1)
    train, probes, test = np.arange(300), np.arange(300, 420), np.arange(420, 600)
    km = KMeansClusterMap(n_clusters=3, seed=0).fit(x[train])
    knn = ProbeKNNClusterMap(n_neighbors=9).fit(x[train])
    blend = BlendClusterMap.from_parts([knn, km], [0.3, 0.7])
    bound = blend.bind_probes(x[probes])
    assert bound is not blend and blend.parts_[0].n_clusters_ == 0  # binding never changes the map it is called on
    phi = bound.assign(x[test])
    assert phi.shape == (len(test), len(probes) + 3)
    np.testing.assert_allclose(phi.sum(axis=1), 1.0)
    np.testing.assert_allclose(phi[:, len(probes):].sum(axis=1), 0.7)
    # α = 0: the blend's prediction is 0.3 × KNN's + 0.7 × K-Means'
    got = cluster_quality(blend, x[probes], s[probes], x[test], 0.0)
    want = 0.3 * cluster_quality(knn, x[probes], s[probes], x[test], 0.0) + 0.7 * cluster_quality(
        km, x[probes], s[probes], x[test], 0.0
    )
    np.testing.assert_allclose(got, want, atol=1e-12)
    with pytest.raises(ValueError, match="weights must be finite numbers > 0"):
        BlendClusterMap(weights=[1.0, 0.0]).fit(x)
    # built from one size like any registered kind
    assert CLUSTER_MAPS["blend"](n_clusters=4, seed=0).fit(x[train]).parts_[0].n_clusters_ == 4


@pytest.mark.parametrize("kind", ["probe_knn", "blend"])
def test_save_load_routes_the_same_and_adds_members_after_loading(tmp_path, kind):
    x, s, c = blobs(seed=2)
    train, probes, test = np.arange(300), np.arange(300, 420), np.arange(420, 600)
    router = UniRouter(embedder=TableEmbedder(x), cluster_map=kind, n_clusters=5, show_progress=False)
    router.fit(_texts(train)).set_probes(_texts(probes))
    for j in range(3):
        router.add_model(f"m{j}", float(c[j]), s[probes, j])
    before = router.expected_quality(_texts(test))
    router.save(tmp_path / "r")
    back = UniRouter.load(tmp_path / "r", embedder=TableEmbedder(x))
    assert back.cluster_map.kind == kind
    np.testing.assert_array_equal(back.expected_quality(_texts(test)), before)
    back.add_model("m3", float(c[3]), s[probes, 3])  # a new LLM from its probe scores alone, after loading
    router.add_model("m3", float(c[3]), s[probes, 3])
    np.testing.assert_array_equal(back.expected_quality(_texts(test)), router.expected_quality(_texts(test)))
    # a router saved before set_probes (an unbound probe map) loads and binds later
    fresh = UniRouter(embedder=TableEmbedder(x), cluster_map=kind, n_clusters=5, show_progress=False)
    fresh.fit(_texts(train)).save(tmp_path / "unbound")
    again = UniRouter.load(tmp_path / "unbound", embedder=TableEmbedder(x)).set_probes(_texts(probes))
    again.add_model("m0", float(c[0]), s[probes, 0])
    fresh.set_probes(_texts(probes)).add_model("m0", float(c[0]), s[probes, 0])
    np.testing.assert_array_equal(again.expected_quality(_texts(test)), fresh.expected_quality(_texts(test)))


def test_a_tampered_anchor_array_is_refused(tmp_path):
    x, s, c = blobs(seed=3)
    router = UniRouter(embedder=TableEmbedder(x), cluster_map="probe_knn", show_progress=False)
    router.fit(_texts(range(300))).set_probes(_texts(range(300, 420)))
    router.add_model("m0", float(c[0]), s[300:420, 0])
    router.save(tmp_path / "r")
    meta = json.loads((tmp_path / "r" / "router.json").read_text())
    meta["cluster_map"]["config"]["n_probes"] = 50
    (tmp_path / "r" / "router.json").write_text(json.dumps(meta))
    with pytest.raises(RouterFileError, match="anchors have shape"):
        UniRouter.load(tmp_path / "r", embedder=TableEmbedder(x))


def test_the_selection_tries_probe_knn_and_the_blend_and_returns_an_unbound_map():
    x, s, c = blobs(seed=4, n=900)
    space = SearchSpace(families=FAMILIES_ALL, knn_neighbors=(5, 20), blend_weights=(0.5,),
                        temperature_multiples=(None, 0.1))
    res = select_representation(x, s, c, n_probes=300, seed=0, space=space)
    sel = res.selection
    reps = [cand.representation for cand in sel.candidates]
    assert {"zero", "kmeans", "multires", "probe_knn", "blend"} <= set(reps)
    assert reps.index("blend") > reps.index("probe_knn")  # the blend is built from the best candidates before it
    knn_params = [cand.params["n_neighbors"] for cand in sel.candidates if cand.representation == "probe_knn"]
    assert sorted(set(knn_params)) == [5, 20]
    again = select_representation(x, s, c, n_probes=300, seed=0, space=space)
    assert again.selection == sel  # deterministic with a seed
    # a probe-anchored winner (routing O(P·d)) must beat the best fixed map on fresh draws by more than one SE
    top = max(sel.candidates, key=lambda cand: cand.validation_area)
    if top.representation in ("probe_knn", "blend"):
        assert sel.gain_over_fixed is not None and sel.gain_over_fixed_se is not None
        kept = sel.chosen.representation in ("probe_knn", "blend")
        assert kept == (sel.gain_over_fixed > sel.gain_over_fixed_se)
    else:
        assert sel.gain_over_fixed is None
    assert Selection.from_dict(json.loads(json.dumps(sel.to_dict()))) == sel
    # whatever won, the router gets a map it can bind to the real probes and route with
    bound = res.cluster_map.bind_probes(x[:300])
    phi = bound.assign(x[400:410])
    np.testing.assert_allclose(phi.sum(axis=1), 1.0)
    # the chosen probe KNN / blend is what the product path uses
    forced = select_representation(x, s, c, n_probes=120, seed=0, n_check=0,
                                   space=SearchSpace(families=("probe_knn",), knn_neighbors=(20,)))
    assert isinstance(forced.cluster_map, ProbeKNNClusterMap) and forced.cluster_map.n_clusters_ == 0
    assert forced.selection.chosen.params["n_neighbors"] == 20
    with pytest.raises(ValueError, match="blend_weights"):
        SearchSpace(blend_weights=(1.0,))
    with pytest.raises(ValueError, match="knn_neighbors"):
        SearchSpace(knn_neighbors=())


def test_a_probe_anchored_winner_must_beat_the_best_fixed_map_on_fresh_draws():
    """Where KNN over the probes is really better (each prompt's best LLM depends on a fine, local structure that a
    few clusters cannot follow), the check keeps it; its record says by how much."""
    rng = np.random.default_rng(5)
    n = 1500
    x = rng.normal(size=(n, 2)).astype(np.float32)
    good = (np.sin(3 * x[:, 0]) * np.cos(3 * x[:, 1]) > 0).astype(float)  # a checkerboard-like pattern
    p = np.stack([0.1 + 0.8 * good, 0.9 - 0.8 * good, np.full(n, 0.7)], axis=1)
    s = (rng.random(p.shape) < p).astype(float)
    space = SearchSpace(families=("zero", "kmeans", "probe_knn"), n_clusters=(3,), knn_neighbors=(10,),
                        temperature_multiples=(None,), shrinkage=(0.0,))
    sel = select_representation(x, s, np.array([1.0, 1.0, 5.0]), n_probes=400, seed=0, space=space).selection
    assert sel.chosen.representation == "probe_knn"
    assert sel.gain_over_fixed > sel.gain_over_fixed_se > 0


def test_combining_maps_refuses_unfitted_or_mismatched_parts():
    from uniroute_core.multires import MultiResolutionClusterMap

    rng = np.random.default_rng(0)
    a = KMeansClusterMap(n_clusters=2, seed=0).fit(rng.normal(size=(40, 4)))
    b = KMeansClusterMap(n_clusters=2, seed=0).fit(rng.normal(size=(40, 6)))
    with pytest.raises(ValueError, match="from_parts needs at least one fitted ClusterMap"):
        BlendClusterMap.from_parts([a, KMeansClusterMap(n_clusters=2)], [0.5, 0.5])
    with pytest.raises(ValueError, match=r"the parts were fitted on different embedding dimensions \[4, 6\]"):
        BlendClusterMap.from_parts([a, b], [0.5, 0.5])
    with pytest.raises(ValueError, match="from_levels needs at least one fitted KMeansClusterMap"):
        MultiResolutionClusterMap.from_levels([])
    with pytest.raises(ValueError, match=r"the levels were fitted on different embedding dimensions \[4, 6\]"):
        MultiResolutionClusterMap.from_levels([a, b])
