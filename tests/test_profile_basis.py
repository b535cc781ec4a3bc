"""The low-rank shrinkage target (issue 15): a member's Ψ shrinks towards its own profile fitted in the directions
the training LLMs vary along. Checked: the fit itself, that the selection's vectorised Ψ is the product's Ψ, that a
validated LLM never sees itself in its basis, that the selection finds the target where it pays, and that the
router uses, saves, reloads and refits it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_persistence import rewrite_arrays
from uniroute_core import ProfileBasis, RouterFileError, UniRouter
from uniroute_core.autoselect import (
    SearchSpace,
    _Draw,
    _FixedMap,
    _leave_one_out_components,
    _psi,
    select_representation,
)
from uniroute_core.build import describe_router
from uniroute_core.cluster_map import KMeansClusterMap
from uniroute_core.persistence import JSON_FILE
from uniroute_core.profile import build_profile
from uniroute_core.profile_basis import (
    basis_offsets,
    cluster_means,
    fit_profile_basis,
    profile_components,
    target_offsets,
)

TOPICS, DIM = 12, 16


def low_rank_world(
    seed: int = 0, n: int = 3600, n_models: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Prompts on 12 topics; each LLM's accuracy on a topic is its level plus two shared factors (say "maths-ness"
    and "code-ness" of the topic) times its own loadings: cluster profiles vary along two directions, as real LLMs'
    do. Returns embeddings, Bernoulli scores, costs and the true per-prompt accuracies."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(TOPICS, DIM)) * 3.0
    topic = rng.integers(TOPICS, size=n)
    x = (centers[topic] + rng.normal(size=(n, DIM))).astype(np.float32)
    factors = rng.normal(size=(2, TOPICS))
    loadings = rng.normal(scale=0.12, size=(n_models, 2))
    level = rng.uniform(0.45, 0.7, size=n_models)
    acc = np.clip(level[:, None] + loadings @ factors, 0.03, 0.97)  # (models, topics)
    p = acc.T[topic]  # (n, models)
    scores = (rng.random(p.shape) < p).astype(float)
    costs = np.round(np.exp(np.linspace(0, 3, n_models)), 3)
    return x, scores, costs, p


# ---------------------------------------------------------------------------------------------- the fit
def test_offsets_have_zero_weighted_mean_and_reproduce_a_profile_in_the_span():
    rng = np.random.default_rng(0)
    comps = profile_components(rng.normal(size=(6, 10)), 3)
    assert comps.shape == (3, 10)
    np.testing.assert_allclose(comps @ comps.T, np.eye(3), atol=1e-12)  # orthonormal rows
    counts = rng.integers(1, 40, size=10).astype(float)
    truth = 0.6 + comps.T @ np.array([0.1, -0.05, 0.08])  # a cluster profile exactly in the span
    off = target_offsets(truth * counts, counts, comps, ridge=0.0)
    assert counts @ off == pytest.approx(0.0, abs=1e-12)
    mean = counts @ truth / counts.sum()
    np.testing.assert_allclose(mean + off, truth, atol=1e-12)
    # a cluster without probes is predicted from the fitted profile, not left at the mean
    counts[4] = 0.0
    off = target_offsets(truth * counts, counts, comps, ridge=0.0)
    assert off[4] == pytest.approx(truth[4] - counts @ truth / counts.sum(), abs=1e-12)
    # the ridge pulls the fitted profile towards flat; no components or no answers give zeros
    flat = target_offsets(truth * counts, counts, comps, ridge=1e9)
    assert np.abs(flat).max() < 1e-6
    assert not target_offsets(truth * counts, counts, comps[:0], 1.0).any()
    assert not target_offsets(np.zeros(10), np.zeros(10), comps, 1.0).any()
    # many members at once (the selection's path), each with its own basis, = one at a time (the router's path)
    sums = rng.random((5, 10)) * 20
    many_counts = np.vstack([rng.integers(0, 30, size=(4, 10)), np.zeros((1, 10))]).astype(float)
    bases = np.stack([profile_components(rng.normal(size=(6, 10)), 3) for _ in range(5)])
    batched = target_offsets(sums, many_counts, bases, 1.0)
    for j in range(5):
        np.testing.assert_allclose(batched[j], target_offsets(sums[j], many_counts[j], bases[j], 1.0), atol=1e-12)
    assert not batched[4].any()  # no answers: no offsets


def test_basis_is_validated_and_rank_zero_means_the_flat_target():
    x, s, _, _ = low_rank_world(n=600)
    assign = KMeansClusterMap(n_clusters=6, seed=0).fit(x).assign(x)
    assert fit_profile_basis(assign, s, 0) is None
    basis = fit_profile_basis(assign, s, 50)  # capped: K − 1 directions at most
    assert basis is not None and basis.rank == 5 and basis.n_clusters == 6
    with pytest.raises(ValueError, match="profile rank"):
        fit_profile_basis(assign, s, -1)
    with pytest.raises(ValueError, match="finite"):
        ProfileBasis(np.full((1, 4), np.nan))
    with pytest.raises(ValueError, match="shape"):
        ProfileBasis(np.ones(4))
    with pytest.raises(ValueError, match="ridge"):
        ProfileBasis(np.ones((1, 4)), ridge=-1.0)
    with pytest.raises(ValueError):  # immutable: a served state's basis cannot be edited in place
        basis.components[0, 0] = 1.0
    s_nan = s.copy()
    s_nan[:300, 0] = np.nan  # unknown scores are left out of the cluster means, never read as wrong
    means = cluster_means(assign, s_nan)
    known = ~np.isnan(s_nan[:, 0])
    k0 = assign[known, 0] > 0
    assert means[0, 0] == pytest.approx(s_nan[known, 0][k0].mean())


def test_the_selections_psi_is_the_products_psi():
    """The selection scores a candidate with a vectorised Ψ; a member added to the router gets build_profile's Ψ.
    With a low-rank target the two must be the same numbers, or validation would measure another router."""
    x, s, _, _ = low_rank_world(n=900)
    assign = KMeansClusterMap(n_clusters=9, seed=0).fit(x).assign(x)
    basis = fit_profile_basis(assign[:600], s[:600, :10], 3)
    probes, probe_scores = assign[600:], s[600:, 10:].copy()
    probe_scores[::7, 2] = np.nan
    offsets = np.stack([basis_offsets(basis, probe_scores[:, j], probes) for j in range(probe_scores.shape[1])])
    fast = _psi(probes, probe_scores, 30.0, offsets)
    for j in range(probe_scores.shape[1]):
        slow = build_profile(str(j), 1.0, probe_scores[:, j], probes, 30.0, prior_offsets=offsets[j])
        np.testing.assert_allclose(fast[j], slow.cluster_quality, atol=1e-12)


def test_a_validated_llm_never_sees_itself_in_its_basis():
    x, s, _, _ = low_rank_world(n=900)
    rep = _FixedMap(KMeansClusterMap(n_clusters=8, seed=0).fit(x))
    draw = _Draw(np.arange(100, 250), np.arange(0, 100))
    comps = _leave_one_out_components(rep, x, draw, s, 3)
    changed = s.copy()
    changed[100:, 0] = 1.0  # LLM 0's answers outside the validation slice, all made right
    again = _leave_one_out_components(rep, x, _Draw(draw.probe_idx, draw.val_idx), changed, 3)
    np.testing.assert_array_equal(again[0], comps[0])  # its own basis does not move
    assert not np.allclose(np.abs(again[1]), np.abs(comps[1]))  # the others' do: they see LLM 0
    changed_val = s.copy()
    changed_val[:100] = 1.0 - changed_val[:100]  # any LLM's scores on the validation prompts
    assert all(np.array_equal(a, b) for a, b in zip(
        _leave_one_out_components(rep, x, _Draw(draw.probe_idx, draw.val_idx), changed_val, 3), comps))


# ---------------------------------------------------------------------------------------------- selection and router
def test_the_target_makes_new_llms_profiles_closer_to_the_truth():
    x, s, c, p = low_rank_world(seed=1)
    train, probes = np.arange(0, 3000), np.arange(3000, 3240)  # 20 probes a topic
    cmap = KMeansClusterMap(n_clusters=TOPICS, seed=0).fit(x[train])
    basis = fit_profile_basis(cmap.assign(x[train]), s[np.ix_(train, range(10))], 2)
    pa = cmap.assign(x[probes])
    truth = np.stack([(cmap.assign(x) * p[:, [j]]).sum(0) / cmap.assign(x).sum(0) for j in range(10, 16)])
    err_flat = err_rank = 0.0
    for j in range(10, 16):
        flat = build_profile("m", 1.0, s[probes, j], pa, 2.0).cluster_quality
        ranked = build_profile("m", 1.0, s[probes, j], pa, 30.0,
                               prior_offsets=basis_offsets(basis, s[probes, j], pa)).cluster_quality
        err_flat += float(np.mean((flat - truth[j - 10]) ** 2))
        err_rank += float(np.mean((ranked - truth[j - 10]) ** 2))
    assert err_rank < 0.5 * err_flat


def test_the_router_chooses_uses_saves_and_reloads_the_target(tmp_path):
    x, s, c, _ = low_rank_world(seed=2)
    texts = [f"p{i}" for i in range(len(x))]

    def embed(batch: list[str]) -> np.ndarray:
        return x[[int(t[1:]) for t in batch]]

    train, probes, test = np.arange(0, 3000), np.arange(3000, 3240), np.arange(3240, 3600)
    router = UniRouter(embedder=embed, seed=0, show_progress=False)
    router.fit([texts[i] for i in train], s[np.ix_(train, range(10))], train_costs=c[:10], n_probes=len(probes))
    chosen = router.selection_.chosen
    assert chosen.params.get("profile_rank", 0) > 0  # two shared factors and 20 probes a topic: it pays
    assert any(cand.params.get("profile_rank", 0) == 0 for cand in router.selection_.candidates)
    basis = router.profile_basis_
    assert basis is not None and basis.rank == chosen.params["profile_rank"]
    assert basis.n_clusters == router.cluster_map.n_clusters_
    router.set_probes([texts[i] for i in probes])
    for j in range(10, 14):
        router.add_model(f"m{j}", float(c[j]), s[probes, j])
    member = router.profiles["m10"]
    np.testing.assert_allclose(member.prior_offsets, basis_offsets(basis, s[probes, 10], router.state.probe_assign))
    before = router.route([texts[i] for i in test], lam=0.3)
    router.save(tmp_path / "r")
    meta = json.loads((tmp_path / "r" / JSON_FILE).read_text())
    assert meta["format_version"] == 6 and meta["profile_basis"]["rank"] == basis.rank
    back = UniRouter.load(tmp_path / "r", embedder=embed)
    np.testing.assert_array_equal(back.profile_basis_.components, basis.components)
    assert f"low-rank, rank {basis.rank}" in describe_router(back, [5.0])  # `uniroute show` says which target
    assert back.route([texts[i] for i in test], lam=0.3) == before
    router.add_model("late", float(c[14]), s[probes, 14])  # a member added after loading gets the same Ψ
    back.add_model("late", float(c[14]), s[probes, 14])
    np.testing.assert_array_equal(back.profiles["late"].cluster_quality, router.profiles["late"].cluster_quality)
    # feedback moves a member's Ψ on top of its target
    psi0 = back.profiles["m10"].cluster_quality.copy()
    k = int(np.argmax(psi0))
    prompt = texts[int(test[np.argmax(back.cluster_map.assign(x[test])[:, k])])]
    for _ in range(30):
        back.observe(prompt, "m10", 0.0)
    assert back.profiles["m10"].cluster_quality[k] < psi0[k] - 0.05
    # a refit chooses again and re-profiles every member on the new map and target
    router.fit([texts[i] for i in train[:2400]], s[np.ix_(train[:2400], range(10))], train_costs=c[:10])
    new_basis = router.profile_basis_
    for name in ("m10", "late"):
        want = basis_offsets(new_basis, router.profiles[name].probe_scores, router.state.probe_assign)
        got = router.profiles[name].prior_offsets
        assert (want is None and got is None) or np.allclose(got, want)


def test_a_damaged_basis_is_refused_and_a_format_5_file_loads_without_one(tmp_path):
    x, s, c, _ = low_rank_world(seed=2, n=1500)
    texts = [f"p{i}" for i in range(len(x))]

    def embed(batch: list[str]) -> np.ndarray:
        return x[[int(t[1:]) for t in batch]]

    router = UniRouter(embedder=embed, seed=0, show_progress=False,
                       search_space=SearchSpace(families=("kmeans",), n_clusters=(8,), profile_ranks=(2,)))
    router.fit(texts[:1200], s[:1200, :10], train_costs=c[:10], n_probes=300)
    assert router.profile_basis_ is not None and router.profile_basis_.rank == 2
    router.set_probes(texts[1200:1500])
    router.add_model("m", 1.0, s[1200:1500, 12])
    router.save(tmp_path / "r")
    meta_path = tmp_path / "r" / JSON_FILE
    good = json.loads(meta_path.read_text())

    meta = json.loads(json.dumps(good))
    meta["profile_basis"]["rank"] = 3  # the array holds 2 rows
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(RouterFileError, match="profile_basis"):
        UniRouter.load(tmp_path / "r", embedder=embed)
    meta["profile_basis"] = {"rank": True, "ridge": 1.0}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(RouterFileError, match="profile_basis.rank"):
        UniRouter.load(tmp_path / "r", embedder=embed)
    meta_path.write_text(json.dumps(good))
    rewrite_arrays(tmp_path / "r", lambda a: {**a, "profile_basis": np.full_like(a["profile_basis"], np.inf)})
    with pytest.raises(RouterFileError, match="profile_basis"):
        UniRouter.load(tmp_path / "r", embedder=embed)

    router.save(tmp_path / "v5")
    meta = json.loads((tmp_path / "v5" / JSON_FILE).read_text())
    meta["format_version"] = 5  # as written before format 6: no basis entry
    del meta["profile_basis"]
    (tmp_path / "v5" / JSON_FILE).write_text(json.dumps(meta))
    old = UniRouter.load(tmp_path / "v5", embedder=embed)
    assert old.profile_basis_ is None
    np.testing.assert_array_equal(old.profiles["m"].cluster_quality, router.profiles["m"].cluster_quality)


def test_selection_with_ranks_is_deterministic_and_records_the_rank():
    x, s, c, _ = low_rank_world(seed=3, n=1400)
    space = SearchSpace(families=("zero", "kmeans"), n_clusters=(6, 12))
    a = select_representation(x, s[:, :10], c[:10], n_probes=240, seed=5, space=space)
    b = select_representation(x, s[:, :10], c[:10], n_probes=240, seed=5, space=space)
    assert a.selection == b.selection
    ranks = {cand.params.get("profile_rank", 0) for cand in a.selection.candidates if cand.representation == "kmeans"}
    assert ranks == {0, 2, 4, 8}
    rank = a.selection.chosen.params.get("profile_rank", 0)
    assert (a.profile_basis is None) == (rank == 0)
    if a.profile_basis is not None:
        np.testing.assert_array_equal(a.profile_basis.components, b.profile_basis.components)
    with pytest.raises(ValueError, match="profile_ranks"):
        SearchSpace(profile_ranks=(-1,))
    with pytest.raises(ValueError, match="profile_shrinkage"):
        SearchSpace(profile_shrinkage=(float("nan"),))
