"""Evaluation protocol and metrics: hand-computed curves, the sign test, splits, baselines, no test-LLM leakage."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from uniroute_core.data import RoutingData
from uniroute_core.evaluation import (
    METHODS,
    EvaluationConfig,
    auto_cluster_grid,
    curve_metrics,
    evaluate,
    format_table,
    make_trial_splits,
    run_trial,
    sign_test,
    split_models,
    split_prompts,
)
from uniroute_core.evaluation.baselines import (
    clairvoyant_quality,
    knn_neighbours,
    knn_quality,
    random_router_curve,
    zero_router_quality,
)
from uniroute_core.evaluation.metrics import area, deferral_curve, qnc, router_curve


# ---------------------------------------------------------------- metrics on hand-computed curves
def test_area_of_known_piecewise_curve():
    # vertices (0, .4), (.5, .6), (1, .8) on cost range [0, 1]; a dominated point (0.7, 0.5) is dropped
    curve = deferral_curve(np.array([0.0, 0.5, 0.7, 1.0]), np.array([0.4, 0.6, 0.5, 0.8]), 0.0, 1.0)
    assert curve.cost.tolist() == [0.0, 0.5, 1.0]
    assert area(curve) == pytest.approx(0.5 * (0.4 + 0.6) / 2 + 0.5 * (0.6 + 0.8) / 2)  # 0.6
    assert area(curve, 0.5) == pytest.approx(0.5)  # mean of the line from .4 to .6


def test_area_of_step_curve_in_real_cost_units():
    # costs 2 and 10: a router at (2, 0.3) and (6, 0.7); flat at 0.7 beyond cost 6
    curve = deferral_curve(np.array([2.0, 6.0]), np.array([0.3, 0.7]), 2.0, 10.0)
    # normalised: (0, .3) → (.5, .7) then flat: 0.5 * 0.5 + 0.5 * 0.7
    assert area(curve) == pytest.approx(0.25 + 0.35)
    assert area(curve, 0.5) == pytest.approx(0.5)


def test_qnc_found_and_not_found():
    curve = deferral_curve(np.array([1.0, 3.0, 5.0]), np.array([0.4, 0.6, 0.8]), 1.0, 5.0)
    assert qnc(curve, 0.7, reference_cost=5.0) == pytest.approx(4.0 / 5.0)  # halfway between cost 3 and 5
    assert qnc(curve, 0.4, reference_cost=5.0) == pytest.approx(1.0 / 5.0)
    assert qnc(curve, 0.81, reference_cost=5.0) is None
    m = curve_metrics(curve, 0.81, 5.0)
    assert m["qnc"] is None and m["area"] == pytest.approx(area(curve))
    assert curve_metrics(curve, 0.5, 0.0)["qnc"] is None  # a free reference model: no meaningful ratio


def test_router_curve_by_hand():
    # two prompts, members cheap (cost 1) and dear (cost 4); the predictions send prompt 0 to dear first
    true = np.array([[0.0, 1.0], [1.0, 1.0]])
    pred = np.array([[0.2, 0.9], [0.8, 0.85]])
    curve = router_curve(pred, true, np.array([1.0, 4.0]))
    # λ=0: both dear (cost 4, q 1); middle: prompt 0 dear, prompt 1 cheap (2.5, 1); large λ: both cheap (1, .5)
    assert curve.cost.tolist() == [1.0, 2.5]
    assert curve.quality.tolist() == [0.5, 1.0]
    assert area(curve) == pytest.approx(0.5 * (0.5 + 1.0) / 2 + 0.5 * 1.0)


def _curve_by_brute_force(pred: np.ndarray, true: np.ndarray, costs: np.ndarray, max_points: int = 2000):
    """router_curve as it was written first: the rule applied λ by λ (the reference for the fast sweep)."""
    from uniroute_core.rule import choose_by_lambda, lambda_grid

    lams = lambda_grid(pred, costs, max_points=max_points)
    rows = np.arange(len(true))
    picks = [choose_by_lambda(pred, costs, float(lam)) for lam in lams]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-unknown column: NaN, as in the fast path
        q = np.array([np.nanmean(true[rows, p]) for p in picks])
    return lams, np.array(picks), np.array([costs[p].mean() for p in picks]), q


def _sweep_cases(seed: int = 0):
    """Predictions with the hard cases of the λ sweep: exact ties of quality, equal costs, a free member,
    several members on one line (three-way ties at one λ), hard-map-like repeated rows, NaN predictions."""
    rng = np.random.default_rng(seed)
    for i in range(120):
        n, m = int(rng.integers(1, 50)), int(rng.integers(1, 8))
        kind = i % 6
        costs = rng.choice([0.0, 1.0, 2.0, 2.0, 7.2, 7.2, 70.6], m) if kind < 2 else rng.random(m) * 10
        if kind == 1:
            costs = np.zeros(m)
        pred = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], (n, m)) if kind in (0, 2) else rng.random((n, m))
        if kind == 3:  # every member on one line per prompt: all tie at one λ
            c = costs / costs.max() if costs.max() > 0 else costs
            pred = rng.random(n)[:, None] - rng.random(n)[:, None] * c[None, :] * 0.3
        if kind == 4:  # a hard map: few distinct rows
            pred = rng.random((3, m))[rng.integers(0, 3, n)]
        if kind == 5:
            pred[rng.random(pred.shape) < 0.1] = np.nan
        true = rng.integers(0, 2, (n, m)).astype(float) if i % 2 else rng.random((n, m))
        true[rng.random(true.shape) < 0.15] = np.nan
        yield pred, true, costs


def test_lambda_path_chooses_exactly_what_the_rule_chooses_at_every_lambda():
    """LambdaPath (the λ sweep behind router_curve and the validation Area) equals choose_by_lambda at every λ:
    at the grid's λ and also exactly on every prompt's crossings, where ties go to the cheaper member."""
    from uniroute_core.rule import LambdaPath, choose_by_lambda, lambda_grid

    for pred, _, costs in _sweep_cases():
        c = costs / costs.max() if costs.max() > 0 else costs
        with np.errstate(all="ignore"):
            cross = ((1 - pred)[:, :, None] - (1 - pred)[:, None, :]) / (c[None, None, :] - c[None, :, None])
        cross = cross[np.isfinite(cross) & (cross >= 0)][:60]
        lams = np.concatenate([lambda_grid(pred, costs), cross, [0.0, 0.5, 3.0]])
        got = LambdaPath(pred, costs).choose(lams)
        want = np.stack([choose_by_lambda(pred, costs, float(lam)) for lam in lams])
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="finite number >= 0"):
        LambdaPath(np.ones((2, 2)), np.ones(2)).choose(np.array([-1.0]))


def test_router_curve_equals_the_rule_applied_lambda_by_lambda():
    """The fast router_curve traces the same points as applying the rule at each λ: the same λ grid, the same
    choices; mean quality equal (exactly for 0/1 scores), mean cost up to float rounding."""
    for i, (pred, true, costs) in enumerate(_sweep_cases(seed=1)):
        curve = router_curve(pred, true, costs)
        lams, _, c_ref, q_ref = _curve_by_brute_force(pred, true, costs)
        np.testing.assert_array_equal(curve.lams, lams)
        np.testing.assert_allclose(curve.raw_cost, c_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(curve.raw_quality, q_ref, rtol=0, atol=1e-12)
        if i % 2:  # 0/1 scores: integer sums, exact
            np.testing.assert_array_equal(curve.raw_quality, q_ref)
        ref = deferral_curve(c_ref, q_ref, costs.min(), costs.max()) if np.isfinite(q_ref).all() else None
        if ref is not None:
            assert area(curve) == pytest.approx(area(ref), abs=1e-12)


def _lambda_grid_reference(q: np.ndarray, costs: np.ndarray, allowed=None, max_points: int = 2000) -> np.ndarray:
    """lambda_grid as first written (all M x M differences, np.unique rows, np.quantile): the fast one must give
    the same λ values bit for bit, so that every curve samples the same points as before."""
    c = costs / costs.max() if costs.max() > 0 else np.zeros_like(costs)
    q = np.asarray(q, dtype=float)
    if allowed is not None:
        q, c = q[:, allowed], c[allowed]
    q = np.unique(np.round(q, 12), axis=0)
    dq = q[:, :, None] - q[:, None, :]
    dc = c[:, None] - c[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = dq / dc[None, :, :]
    cross = np.unique(lam[(dc[None, :, :] > 0) & (dq > 0)])
    if cross.size > max_points:
        cross = np.unique(np.quantile(cross, np.linspace(0, 1, max_points)))
    if cross.size == 0:
        return np.array([0.0])
    return np.concatenate([[0.0], (cross[:-1] + cross[1:]) / 2.0, [cross[-1] * 2.0 + 1.0]])


def test_lambda_grid_is_bit_for_bit_the_reference_grid():
    from uniroute_core.rule import _sorted_quantiles, lambda_grid

    rng = np.random.default_rng(3)
    for i in range(120):
        n, m = int(rng.integers(0, 200)), int(rng.integers(1, 12))
        costs = rng.choice([0.0, 1.0, 7.2, 7.2, 70.6, 3.8], m) if i % 2 else rng.random(m) * 100
        q = rng.random((n, m)) if i % 3 else rng.choice([0.0, 0.5, 1.0], (n, m))
        if i % 7 == 0 and n:  # a hard map: a few distinct rows, repeated
            q = rng.random((3, m))[rng.integers(0, 3, n)]
        if i % 5 == 0:
            q[rng.random(q.shape) < 0.1] = np.nan
        allowed = None if i % 4 else rng.random(m) < 0.7
        for max_points in (5, 200, 2000):
            np.testing.assert_array_equal(
                lambda_grid(q, costs, allowed, max_points), _lambda_grid_reference(q, costs, allowed, max_points)
            )
    for n in (1, 2, 7, 1000, 4321):
        values = np.sort(rng.random(n) * 10.0 ** rng.uniform(-3, 3))
        for k in (2, 7, 200, 2000):
            probs = np.linspace(0, 1, k)
            np.testing.assert_array_equal(_sorted_quantiles(values, probs), np.quantile(values, probs))


# ---------------------------------------------------------------- sign test
def test_sign_test_counts_and_p_value():
    t = sign_test([1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 6])
    assert (t["wins"], t["losses"], t["ties"]) == (5, 0, 1)
    assert t["p"] == pytest.approx(2 * 0.5**5)  # two-sided binomial, ties dropped
    t = sign_test([0, 0, 1], [1, 1, 0])
    assert (t["wins"], t["losses"]) == (1, 2) and t["p"] == pytest.approx(1.0)
    assert sign_test([1, 1], [1, 1])["p"] == 1.0
    with pytest.raises(ValueError, match="paired"):
        sign_test([1, 2], [1])


# ---------------------------------------------------------------- splits
def test_split_prompts_is_stratified_disjoint_and_complete():
    cats = ["a"] * 50 + ["b"] * 30 + [""] * 20
    tr, pr, te = split_prompts(cats, np.random.default_rng(0), (0.6, 0.1, 0.3))
    assert len(set(tr) | set(pr) | set(te)) == 100 and len(tr) + len(pr) + len(te) == 100
    cats_arr = np.array(cats)
    assert [int((cats_arr[tr] == c).sum()) for c in ("a", "b", "")] == [30, 18, 12]
    assert [int((cats_arr[pr] == c).sum()) for c in ("a", "b", "")] == [5, 3, 2]
    with pytest.raises(ValueError, match="too few"):
        split_prompts(["a"] * 5, np.random.default_rng(0))


def test_split_models_and_auto_grid():
    tr, te = split_models(29, np.random.default_rng(0))
    assert len(tr) == 19 and len(te) == 10 and not set(tr) & set(te)
    with pytest.raises(ValueError, match="at least 4 models"):
        split_models(3, np.random.default_rng(0))
    grid = auto_cluster_grid(n_probes=1028, n_train=5000)
    assert grid[0] == 3 and grid[-1] == 20 and grid == sorted(set(grid))
    assert auto_cluster_grid(n_probes=40, n_train=100) == [3]


# ---------------------------------------------------------------- baselines
def test_knn_and_zero_by_hand():
    probe_emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    probe_scores = np.array([[1.0, 0.0], [0.0, np.nan], [1.0, 1.0]])
    nb = knn_neighbours(probe_emb, np.array([[1.0, 0.05]]), 2)
    assert nb.tolist() == [[0, 1]]
    np.testing.assert_allclose(knn_quality(nb, probe_scores, 1), [[1.0, 0.0]])
    np.testing.assert_allclose(knn_quality(nb, probe_scores, 2), [[0.5, 0.0]])  # NaN skipped
    np.testing.assert_allclose(zero_router_quality(probe_scores, 2), [[2 / 3, 0.5], [2 / 3, 0.5]])


def test_random_router_ends_at_cheapest_and_best_members():
    rng = np.random.default_rng(0)
    true = rng.random((400, 3))
    true[:, 2] += 0.5  # member 2 best
    curve = random_router_curve(true, np.array([1.0, 2.0, 8.0]), true[:50], rng, n_points=11)
    assert curve.raw_cost[0] == 1.0 and curve.raw_cost[-1] == 8.0
    assert curve.raw_quality[-1] == pytest.approx(true[:, 2].mean())


def test_clairvoyant_learns_a_separable_member():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    s = np.stack([(x[:, 0] > 0).astype(float), np.full(300, 0.5)], axis=1)  # member 1: soft constant scores
    xq = np.array([[2.0, 0, 0, 0, 0], [-2.0, 0, 0, 0, 0]])
    q = clairvoyant_quality(x, s, xq)
    assert q[0, 0] > 0.8 and q[1, 0] < 0.2
    np.testing.assert_allclose(q[:, 1], 0.5, atol=0.05)


# ---------------------------------------------------------------- the protocol end to end on toy data
def _toy_data(seed: int = 0) -> tuple[RoutingData, np.ndarray]:
    """Two topics; among 6 LLMs the cheap ones are good on one topic only, so topic-aware routing pays."""
    rng = np.random.default_rng(seed)
    n, topic = 400, np.arange(400) % 2
    x = np.eye(2)[topic] * 2.0 + rng.normal(scale=0.5, size=(n, 2))
    x = np.concatenate([x, rng.normal(size=(n, 2))], axis=1).astype(np.float32)
    p = np.stack(
        [np.where(topic == 0, 0.9, 0.1), np.where(topic == 1, 0.9, 0.1), np.where(topic == 0, 0.85, 0.2),
         np.where(topic == 1, 0.85, 0.2), np.full(n, 0.8), np.full(n, 0.9)], axis=1,
    )
    scores = (rng.random(p.shape) < p).astype(float)
    data = RoutingData(
        name="toy", prompt_ids=[f"p{i}" for i in range(n)], prompts=[f"prompt {i}" for i in range(n)],
        categories=["t0" if t == 0 else "t1" for t in topic], split_hints=[""] * n,
        models=["a", "b", "c", "d", "e", "f"], scores=scores, costs=np.array([1.0, 1.0, 1.5, 1.5, 6.0, 10.0]),
    )
    return data, x


FAST = dict(trials=3, seed=0, shrinkage_grid=(0.0, 2.0), knn_grid=(5, 10))


def test_evaluate_on_toy_data_routers_beat_zero_and_report_everything():
    data, x = _toy_data()
    res = evaluate(data, x, EvaluationConfig(**FAST), embedder_name="toy", progress=False)
    doc = res.to_json()
    assert doc["trials"] == 3 and doc["n_prompts"] == 400 and doc["n_models"] == 6 and doc["embedder"] == "toy"
    for m in ("kmeans", "learned_map", "knn", "zero", "clairvoyant", "random"):
        entry = doc["methods"][m]
        assert len(entry["area"]) == 3 and entry["area_mean"] == pytest.approx(np.mean(entry["area"]))
        assert len(entry["qnc"]) == 3
    assert doc["methods"]["kmeans"]["area_mean"] > doc["methods"]["zero"]["area_mean"]
    assert doc["methods"]["learned_map"]["area_mean"] > doc["methods"]["zero"]["area_mean"]
    assert doc["methods"]["zero"]["area_mean"] > doc["methods"]["random"]["area_mean"] - 0.02
    assert set(doc["sign_test"]) >= {"kmeans_vs_knn", "kmeans_vs_zero", "learned_map_vs_knn", "learned_map_vs_zero"}
    assert doc["best_single"]["model"] == "f"
    assert "kmeans" in format_table(res) and "sign test" in format_table(res)


def test_trials_are_reproducible_and_independent_of_trial_count():
    data, x = _toy_data()
    cfg = dict(FAST, methods=("kmeans", "knn", "zero"))
    a = evaluate(data, x, EvaluationConfig(**cfg), progress=False)
    b = evaluate(data, x, EvaluationConfig(**dict(cfg, trials=2)), progress=False)
    assert a.values("kmeans", "area")[:2] == b.values("kmeans", "area")


def test_parallel_trials_give_the_same_results_in_the_same_order():
    """`jobs=2` runs (trial, method) pairs in worker processes, the expensive ones first; every metric, chosen
    parameter and curve of every default method (the torch-trained LearnedMap and Clairvoyant, the product's
    selection, the generator-consuming Random) is identical to `jobs=1`, in the same trial and method order."""
    data, x = _toy_data()
    config = EvaluationConfig(**dict(FAST, trials=2))
    serial = evaluate(data, x, config, progress=False)
    parallel = evaluate(data, x, config, progress=False, jobs=2)
    assert [list(t.metrics) for t in parallel.trials] == [list(config.methods)] * 2
    assert serial.jobs == 1 and parallel.jobs == 2 and 0 < parallel.utilisation <= 1
    for a, b in zip(serial.trials, parallel.trials):
        assert a.metrics == b.metrics and a.params == b.params and a.best_model == b.best_model
        for name in a.curves:
            np.testing.assert_array_equal(a.curves[name], b.curves[name])
    with pytest.raises(ValueError, match="jobs must be an integer >= 1"):
        evaluate(data, x, config, progress=False, jobs=0)


def test_a_methods_result_does_not_depend_on_the_other_methods_or_their_order():
    """Each method gets its own copy of the trial's generator (what makes (trial, method) pairs independent units of
    work): Random alone, or after every other method, or with the order reversed, gives the same trial."""
    data, x = _toy_data()
    alone = evaluate(data, x, EvaluationConfig(**dict(FAST, trials=2, methods=("random",))), progress=False)
    everything = EvaluationConfig(**dict(FAST, trials=2, methods=("zero", "knn", "kmeans", "random")))
    full = evaluate(data, x, everything, progress=False)
    rev = evaluate(data, x, EvaluationConfig(**dict(FAST, trials=2, methods=("random", "knn", "zero"))), progress=False)
    assert alone.values("random", "area") == full.values("random", "area") == rev.values("random", "area")
    assert full.values("knn", "area") == rev.values("knn", "area")
    split, rng = make_trial_splits(data, everything)[0]
    state = copy.deepcopy(rng.bit_generator.state)
    run_trial(x, data, split, rng, everything)
    assert rng.bit_generator.state == state  # the caller's generator is left as it was


def test_parallel_runs_are_handed_out_largest_first():
    """LPT order: every LearnedMap run before any product run, then Clairvoyant, K-Means, KNN, the rest; trial order
    within a method."""
    from uniroute_core.evaluation.protocol import _largest_first

    order = _largest_first([0, 1, 2], METHODS)
    assert len(order) == 3 * len(METHODS) and len(set(order)) == len(order)
    assert order[:6] == [(0, "learned_map"), (1, "learned_map"), (2, "learned_map"), (0, "uniroute"), (1, "uniroute"),
                         (2, "uniroute")]
    assert [m for _, m in order[6:15:3]] == ["clairvoyant", "kmeans", "knn"]


_ORPHAN_PARENT = """
import sys, time
import numpy as np
from uniroute_core.evaluation.protocol import _trial_pool

pool = _trial_pool(2, np.zeros((2, 2), dtype=np.float32), None, None)
futures = [pool.submit(time.sleep, 120) for _ in range(2)]  # workers busy, as in a long trial
time.sleep(1.0)
print(" ".join(str(pid) for pid in pool._processes), flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to see whether a worker is alive")
def test_trial_workers_exit_when_the_parent_is_killed():
    """Fault injection: SIGKILL the process running `evaluate(jobs=2)`; its spawn workers (busy in a trial) must
    exit by themselves instead of computing on for nobody (they were left orphaned before the watchdog)."""
    parent = subprocess.Popen([sys.executable, "-c", _ORPHAN_PARENT], stdout=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        assert parent.stdout is not None
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(p) for p in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in workers), f"orphaned workers still running: {workers}"
    finally:
        parent.kill()
        for p in workers:
            if _alive(p):
                os.kill(p, signal.SIGKILL)


_FIRST_TRIAL_THREADS = """
import numpy as np
from threadpoolctl import threadpool_info
from uniroute_core.data import RoutingData
from uniroute_core.evaluation import EvaluationConfig, make_trial_splits, run_trial
from uniroute_core.evaluation.methods import EvaluationMethod, MethodOutcome, register_method
from uniroute_core.evaluation.metrics import router_curve

seen = []


@register_method
class ThreadProbe(EvaluationMethod):
    name = "thread_probe"
    label = "thread probe"

    def run(self, ctx):
        import sklearn.cluster  # loaded lazily, as K-Means does on first use

        seen.append(sorted({i["num_threads"] for i in threadpool_info()}))
        pred = np.tile(np.nanmean(ctx.probe_test_scores, axis=0), (len(ctx.split.test), 1))
        return MethodOutcome(router_curve(pred, ctx.test_true, ctx.test_costs), {})


rng = np.random.default_rng(0)
n, m = 60, 6
data = RoutingData(name="toy", prompt_ids=[f"p{i}" for i in range(n)], prompts=[f"p{i}" for i in range(n)],
                   categories=["a"] * n, split_hints=[""] * n, models=[f"m{j}" for j in range(m)],
                   scores=(rng.random((n, m)) < 0.6).astype(float), costs=np.arange(1.0, m + 1))
config = EvaluationConfig(trials=2, methods=("thread_probe",))
for split, trial_rng in make_trial_splits(data, config):
    run_trial(rng.random((n, 4)).astype(np.float32), data, split, trial_rng, config)
print(seen)
"""


_LEARNED_MAP_TRIAL = """
import sys
import numpy as np
import torch
torch.set_num_threads(int(sys.argv[1]))  # whatever the calling program uses
from uniroute_core.data import RoutingData
from uniroute_core.evaluation import EvaluationConfig, make_trial_splits
from uniroute_core.evaluation.protocol import _single_threaded, run_method

rng = np.random.default_rng(0)
n, m = 240, 8
topic = np.arange(n) % 3
x = (np.eye(3)[topic] * 2 + rng.normal(scale=0.6, size=(n, 3))).astype(np.float32)
p = np.clip(0.3 + 0.5 * (topic[:, None] == (np.arange(m) % 3)[None, :]), 0, 1)
data = RoutingData(name="toy", prompt_ids=[f"p{i}" for i in range(n)], prompts=[f"p{i}" for i in range(n)],
                   categories=[str(t) for t in topic], split_hints=[""] * n, models=[f"m{j}" for j in range(m)],
                   scores=(rng.random((n, m)) < p).astype(float), costs=np.arange(1.0, m + 1))
config = EvaluationConfig(trials=2, methods=("learned_map",), shrinkage_grid=(0.0, 2.0))
splits = make_trial_splits(data, config)
order = [int(t) for t in sys.argv[2].split(",")]
with _single_threaded():
    areas = {t: run_method(x, data, *splits[t], config, "learned_map").metrics["area"] for t in order}
print(repr(areas[1]))
"""


def test_a_learned_map_trial_is_bit_identical_whatever_the_threads_and_the_process_history():
    """Issue 15 item 4: the same LearnedMap run (trial 1) in fresh processes that differ in their thread settings
    (torch, OpenMP, MKL) and in what ran before it (trial 1 first, or after trial 0) gives the same Area, bit for
    bit."""
    seen = set()
    for threads, order in (("1", "1"), ("2", "0,1")):  # differ in both: if either mattered, the Areas would differ
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        out = subprocess.run(
            [sys.executable, "-c", _LEARNED_MAP_TRIAL, threads, order], capture_output=True, text=True, env=env,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        seen.add(out.stdout.strip().splitlines()[-1])
    assert len(seen) == 1, seen


def test_every_trial_of_a_fresh_process_runs_single_threaded():
    """The first trial of a fresh process (a --jobs worker) must see the same single-threaded BLAS/OpenMP pools as
    later ones: threadpoolctl only limits libraries already loaded, so scikit-learn's are loaded first."""
    out = subprocess.run([sys.executable, "-c", _FIRST_TRIAL_THREADS], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[[1], [1]]"


def test_test_llms_scores_outside_the_probes_are_never_used():
    """Only Clairvoyant may see the test LLMs' train-prompt scores; no method sees their test-prompt scores
    except to measure the curve. Scrambling those scores must leave every unseen-LLM method unchanged."""
    data, x = _toy_data()
    cfg = EvaluationConfig(**dict(FAST, trials=1, methods=("kmeans", "learned_map", "knn", "zero")))
    from uniroute_core.evaluation import make_trial_splits, run_trial

    (split, _), = make_trial_splits(data, cfg)
    base = run_trial(x, data, split, np.random.default_rng(1), cfg)
    scrambled = data.scores.copy()
    rows = split.train
    scrambled[np.ix_(rows, split.test_models)] = 1.0 - scrambled[np.ix_(rows, split.test_models)]
    other = RoutingData(**{**data.__dict__, "scores": scrambled})
    again = run_trial(x, other, split, np.random.default_rng(1), cfg)
    for m in cfg.methods:
        assert again.metrics[m] == base.metrics[m], m


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="unknown methods"):
        EvaluationConfig(methods=("kmeans", "bogus"))
    with pytest.raises(ValueError, match="prompt_fractions"):
        EvaluationConfig(prompt_fractions=(0.5, 0.1, 0.1))
    with pytest.raises(ValueError, match="n_clusters"):
        EvaluationConfig(n_clusters="many")
    data, x = _toy_data()
    with pytest.raises(ValueError, match="embeddings must be"):
        evaluate(data, x[:10], EvaluationConfig(trials=1), progress=False)


def test_fixed_n_clusters_is_used_as_given():
    data, x = _toy_data()
    res = evaluate(
        data, x, EvaluationConfig(**dict(FAST, trials=1, n_clusters=2, methods=("kmeans", "zero"))), progress=False
    )
    assert res.to_json()["methods"]["kmeans"]["n_clusters"] == [2]


# ---------------------------------------------------------------- real data
@pytest.mark.slow
def test_mmlu_pro_unseen_llms_routers_beat_zero_router(mmlu_pro_path):
    """Three trials of the real protocol on MMLU-Pro (embeddings from the shared on-disk cache)."""
    from uniroute_core.data import load_routing_data
    from uniroute_core.embedding import CachedEmbedder, default_cache_dir, default_embedder

    data = load_routing_data(mmlu_pro_path)
    emb = CachedEmbedder(default_embedder(), default_cache_dir())
    x = emb.embed(data.prompts, show_progress=False)
    cfg = EvaluationConfig(trials=3, seed=0, methods=("kmeans", "learned_map", "knn", "zero"))
    doc = evaluate(data, x, cfg, embedder_name=emb.name, progress=False).to_json()
    zero = doc["methods"]["zero"]["area_mean"]
    assert doc["methods"]["kmeans"]["area_mean"] > zero
    assert doc["methods"]["learned_map"]["area_mean"] > zero
    assert doc["sign_test"]["learned_map_vs_zero"]["wins"] >= 2
