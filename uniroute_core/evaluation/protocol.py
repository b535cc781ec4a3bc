"""The unseen-LLM evaluation protocol of the method note, on any routing data folder.

One *trial*:

1. split the prompts train / probe / test (default 60/10/30, stratified by category) and the LLMs training / test
   (default 2/3 vs 1/3);
2. fit each method using only the training prompts, the probe prompts, the *training* LLMs' scores, and the test
   LLMs' scores on the probe prompts (their "profiling") — the test LLMs' scores on train/test prompts are never
   used, except by the Clairvoyant upper bound, which is given their training-prompt scores on purpose;
3. route the test prompts among the test LLMs with the one rule
   (:func:`~uniroute_core.evaluation.metrics.router_curve`) and measure Area, Area(50%) and QNC.

Hyper-parameters (K and the shrinkage α for the cluster maps, the K-Means temperature τ, k for KNN) are chosen per
trial by *validation Area*: a sixth of the training prompts is held out, the maps are fitted on the rest, the training
LLMs are profiled on the probes, and the setting whose routing among the training LLMs has the best Area on the
held-out prompts wins (ties: the simpler setting). The map fitted in that search is the one used on the test LLMs —
nothing about the test LLMs enters the choice. ``n_clusters="auto"`` uses the grid of the method note, 3 … |S_val|/50.
For K-Means the search also tries soft assignments (:class:`~uniroute_core.cluster_map.KMeansClusterMap`
``temperature``) next to the hard one-hot map, τ on a grid scaled to the data: multiples of the median squared
distance from a training prompt to its nearest centroid.

Trials are compared with a two-sided sign test on per-trial Area (:func:`sign_test`).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data import RoutingData
from ..registry import UnknownNameError
from ._optional import import_optional
from .methods import (
    EVALUATION_METHODS,
    ClusterMapMethod,
    TrialContext,
    auto_cluster_grid,
    available_methods,
    get_method,
)
from .metrics import DeferralCurve, area, qnc

__all__ = [
    "METHODS",
    "ROUTER_METHODS",
    "EvaluationConfig",
    "TrialSplit",
    "TrialResult",
    "EvaluationResult",
    "split_prompts",
    "split_models",
    "make_trial_splits",
    "auto_cluster_grid",
    "curve_metrics",
    "sign_test",
    "run_trial",
    "run_method",
    "MethodRun",
    "evaluate",
    "format_table",
]

METHODS: tuple[str, ...] = EVALUATION_METHODS.names()
"""The built-in methods (registered in :mod:`.methods`), in report order: the default of
:attr:`EvaluationConfig.methods`. :func:`~.methods.available_methods` adds every other registered cluster-map kind."""

ROUTER_METHODS: tuple[str, ...] = tuple(n for n, m in EVALUATION_METHODS.items() if isinstance(m, ClusterMapMethod))
"""The built-in UniRoute variants (one per cluster-map kind with a method of its own)."""

CURVE_GRID = np.linspace(0.0, 1.0, 101)
"""Normalised cost points at which each trial's curve is sampled for the mean curve."""


@dataclass(frozen=True)
class EvaluationConfig:
    """Settings of one evaluation run.

    Attributes:
        trials: number of random splits.
        seed: master seed; trial t uses an independent child seed, so trial t is the same whatever ``trials`` is.
        methods: names of the methods to run, in report order: registered methods (:data:`METHODS` by default) or
            any registered cluster-map kind (see :func:`~.methods.get_method`).
        prompt_fractions: train / probe / test shares of the prompts.
        train_model_fraction: share of the LLMs used as training LLMs (the rest are the unseen test pool).
        n_clusters: ``"auto"`` (validation over :func:`auto_cluster_grid`) or a fixed K for both cluster maps.
        shrinkage_grid: α values tried on validation with each K (see :mod:`uniroute_core.profile`).
        knn_grid: k values tried on validation for KNN.
        validation_fraction: share of the training prompts held out to choose K / α / k.
        kmeans_grid_size / learned_map_grid_size: how many K values of the auto grid each map tries (LearnedMap
            training dominates the run time, so it gets a coarser grid over the same range).
        validation_curve_points: λ values per validation curve (test curves use ``router_curve``'s default).
        kmeans_temperature_grid: soft K-Means temperatures tried on validation with ``n_clusters="auto"``, as
            multiples of the median squared distance from a fitting prompt to its nearest centroid; the hard map
            (τ = None) is always tried first and wins ties. Empty = hard only.
    """

    trials: int = 20
    seed: int = 0
    methods: tuple[str, ...] = METHODS
    prompt_fractions: tuple[float, float, float] = (0.6, 0.1, 0.3)
    train_model_fraction: float = 2 / 3
    n_clusters: int | str = "auto"
    shrinkage_grid: tuple[float, ...] = (0.0, 2.0, 10.0)
    knn_grid: tuple[int, ...] = (5, 10, 20, 40, 80, 160)
    validation_fraction: float = 1 / 6
    kmeans_grid_size: int = 5
    learned_map_grid_size: int = 3
    validation_curve_points: int = 200
    kmeans_temperature_grid: tuple[float, ...] = (0.03, 0.1, 0.3)

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if not _is_method(m)]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; known: {list(available_methods())}")
        if not self.methods:
            raise ValueError("methods is empty: name at least one of " + ", ".join(available_methods()))
        if self.trials < 1:
            raise ValueError(f"trials must be >= 1, got {self.trials}")
        fr = self.prompt_fractions
        if len(fr) != 3 or min(fr) <= 0 or abs(sum(fr) - 1.0) > 1e-6:
            raise ValueError(f"prompt_fractions must be three positive shares summing to 1, got {fr}")
        if not (0 < self.train_model_fraction < 1):
            raise ValueError(f"train_model_fraction must be in (0, 1), got {self.train_model_fraction}")
        if self.n_clusters != "auto" and (not isinstance(self.n_clusters, int) or self.n_clusters < 1):
            raise ValueError(f"n_clusters must be 'auto' or a positive integer, got {self.n_clusters!r}")
        bad_t = [
            t for t in self.kmeans_temperature_grid if not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0)
        ]
        if bad_t:
            raise ValueError(f"kmeans_temperature_grid must hold finite numbers > 0, got {bad_t}")


@dataclass(frozen=True)
class TrialSplit:
    """Indices of one trial: prompts (rows of the data) and models (columns)."""

    train: np.ndarray
    probe: np.ndarray
    test: np.ndarray
    train_models: np.ndarray
    test_models: np.ndarray


def split_prompts(
    categories: Sequence[str], rng: np.random.Generator, fractions: tuple[float, float, float] = (0.6, 0.1, 0.3)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified train / probe / test split: each category (blank = one group) is split in the given shares."""
    cats = np.asarray(list(categories), dtype=object)
    train, probe, test = [], [], []
    for c in sorted(set(cats.tolist())):
        idx = rng.permutation(np.nonzero(cats == c)[0])
        n_train = int(round(fractions[0] * len(idx)))
        n_probe = int(round(fractions[1] * len(idx)))
        train.append(idx[:n_train])
        probe.append(idx[n_train : n_train + n_probe])
        test.append(idx[n_train + n_probe :])
    out = (_joined(train), _joined(probe), _joined(test))
    for name, part in zip(("train", "probe", "test"), out):
        if len(part) < 2:
            raise ValueError(
                f"the {name} split has {len(part)} prompts; the data has {len(cats)} prompts, "
                f"too few for shares {fractions}"
            )
    return out


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """The per-category index arrays of one split part as one sorted int64 array."""
    return np.sort(np.concatenate(parts)).astype(np.int64)


def split_models(
    n_models: int, rng: np.random.Generator, train_fraction: float = 2 / 3
) -> tuple[np.ndarray, np.ndarray]:
    """Random training / test LLM split (at least 2 of each: a pool of one has nothing to route between)."""
    if n_models < 4:
        raise ValueError(
            f"the unseen-LLM protocol needs at least 4 models (2 training, 2 test); the data has {n_models}"
        )
    n_train = min(max(int(round(train_fraction * n_models)), 2), n_models - 2)
    perm = rng.permutation(n_models)
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])


def make_trial_splits(data: RoutingData, config: EvaluationConfig) -> list[tuple[TrialSplit, np.random.Generator]]:
    """One (split, generator) per trial; the generator seeds everything random inside that trial."""
    out = []
    for child in np.random.SeedSequence(config.seed).spawn(config.trials):
        rng = np.random.default_rng(child)
        train, probe, test = split_prompts(data.categories, rng, config.prompt_fractions)
        tr_m, te_m = split_models(data.n_models, rng, config.train_model_fraction)
        out.append((TrialSplit(train, probe, test, tr_m, te_m), rng))
    return out


def curve_metrics(curve: DeferralCurve, target_quality: float, reference_cost: float) -> dict[str, Any]:
    """Area, Area(50%) and QNC of one curve (QNC ``None`` when the target quality is never reached, or when the
    reference model is free so that a cost ratio means nothing)."""
    q = qnc(curve, target_quality, reference_cost)
    return {"area": area(curve), "area50": area(curve, 0.5), "qnc": q if q is not None and math.isfinite(q) else None}


def sign_test(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Two-sided sign test of paired per-trial values: wins (a > b), losses (a < b), ties dropped, binomial p."""
    binomtest = import_optional("scipy.stats", "the sign test of `uniroute eval`").binomtest

    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"sign_test needs paired values, got {a_arr.shape} and {b_arr.shape}")
    wins, losses = int((a_arr > b_arr).sum()), int((a_arr < b_arr).sum())
    n = wins + losses
    p = float(binomtest(wins, n, 0.5, alternative="two-sided").pvalue) if n else 1.0
    return {"wins": wins, "losses": losses, "ties": int(len(a_arr) - n), "p": p}


@dataclass
class TrialResult:
    """One trial's outcome: per method its metrics, chosen hyper-parameters and curve samples."""

    split: TrialSplit
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    single_norm_cost: np.ndarray = field(default_factory=lambda: np.zeros(0))
    single_quality: np.ndarray = field(default_factory=lambda: np.zeros(0))
    best_model: int = -1
    seconds: dict[str, float] = field(default_factory=dict)


def _sample_curve(curve: DeferralCurve) -> np.ndarray:
    return np.interp(CURVE_GRID, curve.normalised(curve.cost), curve.quality)


def _is_method(name: object) -> bool:
    if not isinstance(name, str):
        return False
    try:
        get_method(name)
    except UnknownNameError:
        return False
    return True


def run_trial(
    x: np.ndarray, data: RoutingData, split: TrialSplit, rng: np.random.Generator, config: EvaluationConfig
) -> TrialResult:
    """Run every configured method on one split (``x`` = embeddings of all the data's prompts).

    Each method is looked up with :func:`~.methods.get_method` and given a :class:`~.methods.TrialContext` built
    the same way for every method (:func:`run_method`); this function knows no method by name. ``rng`` is left
    untouched: the trial works on a copy of it.

    The trial runs with one thread in the BLAS and OpenMP pools (K-Means, matrix products; the torch-based
    methods fix their own thread count): the result then does not depend on the machine's core count or on
    ``jobs``, and parallel trials do not oversubscribe the cores (two 2-thread BLAS pools on 2 cores made K-Means
    many times slower on a loaded machine).
    """
    result = _trial_skeleton(data, split)
    with _single_threaded():
        for name in config.methods:
            _store(result, name, run_method(x, data, split, rng, config, name))
    return result


@contextlib.contextmanager
def _single_threaded() -> Iterator[None]:
    """One thread in every BLAS/OpenMP pool for the duration (see :func:`run_trial`)."""
    # threadpoolctl limits only the libraries loaded when the limit is set: load scikit-learn's OpenMP runtime and
    # SciPy's BLAS first, or the first trial of a fresh process (a --jobs worker) would run them with every core
    # and give other results than a later trial of the same process (seen: trial 1 of seed 0 moved by 2.4e-6)
    import sklearn.cluster  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def _test_pool(data: RoutingData, split: TrialSplit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The trial's test pool: true scores on the test prompts ``(n, M)``, costs ``(M,)`` and each single model's
    mean quality ``(M,)`` (an unobserved cell is left out of its model's mean)."""
    test_true = data.scores[np.ix_(split.test, split.test_models)]
    test_costs = np.asarray(data.costs, dtype=float)[split.test_models]
    return test_true, test_costs, np.nanmean(test_true, axis=0)


def _trial_skeleton(data: RoutingData, split: TrialSplit) -> TrialResult:
    """A trial's result before any method ran: the test pool's single models (no method, no randomness)."""
    _, test_costs, single_q = _test_pool(data, split)
    span = test_costs.max() - test_costs.min()
    return TrialResult(
        split=split,
        single_norm_cost=(test_costs - test_costs.min()) / span if span > 0 else np.zeros_like(test_costs),
        single_quality=single_q,
        best_model=int(split.test_models[int(np.argmax(single_q))]),
    )


@dataclass(frozen=True)
class MethodRun:
    """One method's outcome on one trial (what :func:`run_method` returns; a worker sends it back whole)."""

    metrics: dict[str, Any]
    params: dict[str, Any]
    curve: np.ndarray
    seconds: float


def _store(result: TrialResult, name: str, run: MethodRun) -> None:
    result.metrics[name] = run.metrics
    result.params[name] = run.params
    result.curves[name] = run.curve
    result.seconds[name] = run.seconds


def run_method(
    x: np.ndarray,
    data: RoutingData,
    split: TrialSplit,
    rng: np.random.Generator,
    config: EvaluationConfig,
    name: str,
) -> MethodRun:
    """One method on one trial: the unit of work of :func:`evaluate` (``jobs`` > 1 runs them in parallel).

    The trial's context (the held-out validation slice of the training prompts, the trial's integer seed) is drawn
    from a COPY of ``rng``, the same draws for every method, and the method gets its own copy of the generator in the
    state that follows. So a method's result depends only on (trial, method, config) — not on which other methods
    run, in which order, or in which process. Call it inside :func:`_single_threaded` (as :func:`run_trial` and the
    workers do) for results independent of the core count.
    """
    rng = copy.deepcopy(rng)
    scores, costs = data.scores, np.asarray(data.costs, dtype=float)
    test_true, test_costs, single_q = _test_pool(data, split)
    best = int(np.argmax(single_q))
    target, ref_cost = float(single_q[best]), float(test_costs[best])
    perm = rng.permutation(split.train)
    n_val = max(1, int(round(config.validation_fraction * len(perm))))
    val_idx, fit_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    seed = int(rng.integers(2**31 - 1))
    ctx = TrialContext(
        x=x,
        data=data,
        split=split,
        config=config,
        rng=rng,
        seed=seed,
        fit_idx=fit_idx,
        val_idx=val_idx,
        scores=scores,
        costs=costs,
        test_true=test_true,
        test_costs=test_costs,
        probe_test_scores=scores[np.ix_(split.probe, split.test_models)],
    )
    t0 = time.perf_counter()
    outcome = get_method(name).run(ctx)
    seconds = time.perf_counter() - t0
    return MethodRun(
        metrics=curve_metrics(outcome.curve, target, ref_cost),
        params=outcome.params,
        curve=_sample_curve(outcome.curve),
        seconds=seconds,
    )


@dataclass
class EvaluationResult:
    """All trials of one run plus what is needed to report them (see :meth:`to_json`)."""

    data: RoutingData
    config: EvaluationConfig
    embedder: str
    trials: list[TrialResult]
    seconds: float = 0.0
    jobs: int = 1

    @property
    def busy_seconds(self) -> float:
        """Seconds spent inside the methods' runs, summed over trials and methods (in every process)."""
        return float(sum(sum(t.seconds.values()) for t in self.trials))

    @property
    def utilisation(self) -> float:
        """:attr:`busy_seconds` / (``jobs`` × wall :attr:`seconds`): the share of the processes' time spent in method
        runs (the rest: start-up of the worker processes, waiting for the last run, the machine's other work)."""
        return self.busy_seconds / (max(1, self.jobs) * self.seconds) if self.seconds > 0 else 0.0

    def values(self, method: str, metric: str) -> list[Any]:
        """Per-trial values of one metric (``"area"``, ``"area50"``, ``"qnc"``) for one method."""
        return [t.metrics[method][metric] for t in self.trials]

    def mean_curve(self, method: str) -> np.ndarray:
        """Mean over trials of the method's curve sampled at :data:`CURVE_GRID` (normalised cost)."""
        return np.mean([t.curves[method] for t in self.trials], axis=0)

    def single_model_summary(self) -> dict[str, dict[str, float]]:
        """Per model, over the trials where it was a test LLM: mean normalised cost, mean test quality, count."""
        acc: dict[int, list[tuple[float, float]]] = {}
        for t in self.trials:
            for j, m in enumerate(t.split.test_models):
                acc.setdefault(int(m), []).append((float(t.single_norm_cost[j]), float(t.single_quality[j])))
        return {
            self.data.models[m]: {
                "norm_cost": float(np.mean([c for c, _ in v])),
                "quality": float(np.mean([q for _, q in v])),
                "cost": float(self.data.costs[m]),
                "n_trials": len(v),
            }
            for m, v in sorted(acc.items())
        }

    def best_single(self) -> dict[str, Any]:
        """The single model with the highest mean quality over all prompts of the data, and its cost."""
        q = np.nanmean(self.data.scores, axis=0)
        j = int(np.argmax(q))
        return {"model": self.data.models[j], "quality": float(q[j]), "cost": float(self.data.costs[j])}

    def sign_tests(self) -> dict[str, dict[str, Any]]:
        """Every method against each reference method that ran (KNN, ZeroRouter: ``is_reference``), on per-trial
        Area; references in registry order."""
        out = {}
        refs = [n for n in available_methods() if n in self.config.methods and get_method(n).is_reference]
        for ref in refs:
            for m in self.config.methods:
                if m != ref:
                    out[f"{m}_vs_{ref}"] = sign_test(self.values(m, "area"), self.values(ref, "area"))
        return out

    def method_summary(self, method: str) -> dict[str, Any]:
        """The ``methods[<name>]`` entry of results.json."""
        areas = self.values(method, "area")
        area50 = self.values(method, "area50")
        qncs = self.values(method, "qnc")
        reached = [q for q in qncs if q is not None]
        params = [t.params[method] for t in self.trials]
        out: dict[str, Any] = {
            "area": areas,
            "area_mean": float(np.mean(areas)),
            "area_std": float(np.std(areas)),
            "area50": area50,
            "area50_mean": float(np.mean(area50)),
            "area50_std": float(np.std(area50)),
            "qnc": qncs,
            "qnc_mean": float(np.mean(reached)) if reached else None,
            "qnc_reached": len(reached),
            "seconds_mean": float(np.mean([t.seconds[method] for t in self.trials])),
            "mean_curve": {"norm_cost": CURVE_GRID.round(4).tolist(), "quality": self.mean_curve(method).tolist()},
        }
        for key in ("representation", "n_clusters", "levels", "shrinkage", "temperature", "temperature_multiple", "k"):
            if all(key in p for p in params):
                out[key] = [p[key] for p in params]
        out["chosen"] = [_jsonable(p) for p in params]  # every trial's full choice (keys differ between trials)
        return out

    def to_json(self) -> dict[str, Any]:
        """The results.json document (schema of issue 4, plus extra keys)."""
        return {
            "data": self.data.name,
            "n_prompts": self.data.n_prompts,
            "n_models": self.data.n_models,
            "trials": self.config.trials,
            "seed": self.config.seed,
            "embedder": self.embedder,
            "methods": {m: self.method_summary(m) for m in self.config.methods},
            "best_single": self.best_single(),
            "single_models": self.single_model_summary(),
            "sign_test": self.sign_tests(),
            "protocol": {
                "prompt_fractions": list(self.config.prompt_fractions),
                "train_model_fraction": self.config.train_model_fraction,
                "n_clusters": self.config.n_clusters,
                "shrinkage_grid": list(self.config.shrinkage_grid),
                "knn_grid": list(self.config.knn_grid),
                "kmeans_temperature_grid": list(self.config.kmeans_temperature_grid),
                "validation_fraction": self.config.validation_fraction,
                "cost_unit": self.data.cost_unit,
            },
            "seconds": self.seconds,
            "jobs": self.jobs,
            "busy_seconds": self.busy_seconds,
        }


_WORKER: dict[str, Any] = {}

WATCHDOG_INTERVAL = 0.5
"""Seconds between a trial worker's checks that the process that started it is still alive."""


def _exit_when_orphaned(parent_pid: int, interval: float) -> None:
    """Worker-side watchdog: end this process at once when its parent is gone (it was re-parented).

    A parent killed by a signal (SIGKILL, an OOM kill, a SIGTERM that skips clean-up) cannot shut its pool down;
    without this its spawn workers would keep computing trials nobody will collect. ``os._exit`` because the
    worker's main thread may be deep inside a trial.
    """
    while True:
        time.sleep(interval)
        if os.getppid() != parent_pid:
            os._exit(1)


def _init_trial_worker(
    x: np.ndarray, data: RoutingData, config: EvaluationConfig, parent_pid: int | None = None
) -> None:
    """Keep the embeddings, data and config in a worker process (sent once, not once per trial), and start the
    parent-death watchdog (:func:`_exit_when_orphaned`)."""
    _WORKER.update(x=x, data=data, config=config)
    if parent_pid is not None:
        threading.Thread(
            target=_exit_when_orphaned, args=(parent_pid, WATCHDOG_INTERVAL), name="uniroute-parent-watchdog",
            daemon=True,
        ).start()


def _trial_pool(n_workers: int, x: np.ndarray, data: RoutingData, config: EvaluationConfig) -> Any:
    """The ``spawn`` process pool of :func:`evaluate` (``jobs`` > 1); its workers exit when this process dies."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(
        max_workers=n_workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_trial_worker,
        initargs=(x, data, config, os.getpid()),
    )


def _run_method_in_worker(split: TrialSplit, rng: np.random.Generator, name: str) -> MethodRun:
    """A worker's unit of work: one method on one trial, single-threaded (see :func:`run_trial`)."""
    with _single_threaded():
        return run_method(_WORKER["x"], _WORKER["data"], split, rng, _WORKER["config"], name)


def _largest_first(splits: Sequence[object], methods: Sequence[str]) -> list[tuple[int, str]]:
    """Every (trial, method) pair, the expensive methods first (``EvaluationMethod.cost_hint``), then trial order.

    Handing the longest runs out first (LPT list scheduling) keeps every worker busy to the end: the last runs
    to start are the short ones, so no worker sits idle while another finishes a long LearnedMap training.
    """
    hint = {name: float(get_method(name).cost_hint) for name in methods}
    pairs = [(t, name) for t in range(len(splits)) for name in methods]
    return sorted(pairs, key=lambda p: (-hint[p[1]], p[0], methods.index(p[1])))


def evaluate(
    data: RoutingData,
    embeddings: np.ndarray,
    config: EvaluationConfig | None = None,
    *,
    embedder_name: str = "",
    progress: bool = True,
    jobs: int = 1,
) -> EvaluationResult:
    """Run ``config.trials`` trials of the unseen-LLM protocol; ``embeddings`` ``(n_prompts, d)`` are computed once
    by the caller (row i = prompt i of ``data``) and sliced per split.

    ``jobs`` > 1 runs the (trial, method) pairs in that many worker processes, the expensive methods first
    (:func:`_largest_first`), so that the workers stay busy to the end. Every trial's split and random generator are
    drawn up front from ``config.seed``, and a method's result depends only on its trial and its own copy of that
    generator (:func:`run_method`), so the results are the same as with ``jobs=1``, in the same order (only the
    per-method ``seconds`` differ). Workers are started with ``spawn``; evaluation methods registered at run time
    by your own code (not at import of a module) are only known with ``jobs=1``.
    """
    from tqdm.auto import tqdm

    config = config or EvaluationConfig()
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) != data.n_prompts:
        raise ValueError(f"embeddings must be ({data.n_prompts}, d) for {data.n_prompts} prompts, got {x.shape}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    started = time.perf_counter()
    splits = make_trial_splits(data, config)
    n_runs = len(splits) * len(config.methods)
    trials: list[TrialResult] = []
    if jobs == 1 or n_runs == 1:
        for split, rng in tqdm(splits, desc="trials", disable=not progress, unit="trial"):
            trials.append(run_trial(x, data, split, rng, config))
    else:
        trials = [_trial_skeleton(data, split) for split, _ in splits]
        order = _largest_first(splits, config.methods)
        # the bar counts trials: each finished run adds its share of its trial's expected cost
        hint = {name: max(float(get_method(name).cost_hint), 1e-6) for name in config.methods}
        share = {name: hint[name] / sum(hint.values()) for name in config.methods}
        with (
            _trial_pool(min(jobs, n_runs), x, data, config) as pool,
            tqdm(
                total=len(splits), desc="trials", disable=not progress, unit="trial",
                bar_format="{l_bar}{bar}| {n:.1f}/{total} [{elapsed}<{remaining}]",
            ) as bar,
        ):
            futures = {pool.submit(_run_method_in_worker, *splits[t], name): (t, name) for t, name in order}
            done = 0.0
            try:
                for future in as_completed(futures):
                    t, name = futures[future]
                    _store(trials[t], name, future.result())
                    done += share[name]
                    bar.update(min(done, len(splits)) - bar.n)  # float shares: never past the total
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)  # one failed run: do not wait for all the others
                raise
        for trial in trials:  # report order = config order, whatever order the runs finished in
            trial.metrics = {m: trial.metrics[m] for m in config.methods}
            trial.params = {m: trial.params[m] for m in config.methods}
            trial.curves = {m: trial.curves[m] for m in config.methods}
            trial.seconds = {m: trial.seconds[m] for m in config.methods}
    return EvaluationResult(
        data=data, config=config, embedder=embedder_name, trials=trials, seconds=time.perf_counter() - started,
        jobs=1 if jobs == 1 or n_runs == 1 else min(jobs, n_runs),
    )


def _jsonable(value: Any) -> Any:
    """``value`` with NumPy scalars and arrays turned into plain Python (for results.json)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _fmt(values: Sequence[float | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "never"
    s = f"{np.mean(vals):.4f} ± {np.std(vals):.4f}"
    return s if len(vals) == len(values) else f"{s} ({len(vals)}/{len(values)})"


def format_table(result: EvaluationResult) -> str:
    """A plain-text report: mean ± std of Area, Area(50%), QNC per method, then the sign tests."""
    header = f"{'method':<13} {'Area':>17} {'Area(50%)':>17} {'QNC':>24}  chosen"
    lines = [
        f"{result.data.name}: {result.data.n_prompts} prompts x {result.data.n_models} models, "
        f"{result.config.trials} trials, "
        f"seed {result.config.seed}, embedder {result.embedder}",
        header,
        "-" * len(header),
    ]
    for m in result.config.methods:
        chosen = get_method(m).describe_choice([t.params[m] for t in result.trials])
        lines.append(
            f"{m:<13} {_fmt(result.values(m, 'area')):>17} {_fmt(result.values(m, 'area50')):>17} "
            f"{_fmt(result.values(m, 'qnc')):>24}  {chosen}"
        )
    b = result.best_single()
    lines.append(f"best single model: {b['model']} (quality {b['quality']:.4f} on all prompts, cost {b['cost']:g})")
    tests = result.sign_tests()
    if tests:
        lines.append("sign test on per-trial Area (wins / losses / ties, two-sided p):")
        for key, t in tests.items():
            lines.append(f"  {key:<26} {t['wins']:>3} / {t['losses']:>3} / {t['ties']:>3}   p = {t['p']:.3g}")
    lines.append(
        f"wall time {result.seconds:.1f} s ({result.seconds / max(1, len(result.trials)):.1f} s per trial); "
        f"method runs {result.busy_seconds:.1f} s in {result.jobs} process(es), {100 * result.utilisation:.0f} % busy"
    )
    return "\n".join(lines)
