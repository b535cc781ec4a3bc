"""The methods the evaluation protocol compares, each a registered :class:`EvaluationMethod`.

A method is one object that knows its name, its table/plot label and style, how it chooses its hyper-parameters
on validation (its grid), and how to produce a deferral curve for one trial. :func:`~.protocol.run_trial`,
:func:`~.protocol.format_table` and :mod:`.plotting` only iterate this registry; none of them names a method.

Registered here, in report order: ``uniroute`` (the product: ``UniRouter.fit`` with a training matrix, see
:mod:`.product`), ``kmeans`` and ``learned_map`` (UniRoute with that cluster map), ``knn``,
``zero`` (ZeroRouter), ``clairvoyant`` (upper bound) and ``random``. Any other kind registered in
:data:`uniroute_core.cluster_map.CLUSTER_MAPS` is evaluable by name too: :func:`get_method` gives it a
:class:`ClusterMapMethod` (validation over K and α, as for K-Means) without any change here.

To add a method that is not a cluster map, subclass :class:`EvaluationMethod` and register an instance::

    @register_method
    class MyBaseline(EvaluationMethod):
        name = "mine"
        label = "My baseline"

        def run(self, ctx: TrialContext) -> MethodOutcome:
            pred = ...  # (n_test, M_test) predicted quality of each test LLM on each test prompt
            return MethodOutcome(router_curve(pred, ctx.test_true, ctx.test_costs), {})
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..cluster_map import CLUSTER_MAPS, ClusterMap, KMeansClusterMap
from ..data import RoutingData
from ..registry import Registry, UnknownNameError
from .baselines import (
    clairvoyant_quality,
    cluster_quality,
    knn_neighbours,
    knn_quality,
    random_router_curve,
    zero_router_quality,
)
from .metrics import DeferralCurve, area, router_curve

if TYPE_CHECKING:  # only for annotations: protocol imports this module
    from .protocol import EvaluationConfig, TrialSplit

__all__ = [
    "EVALUATION_METHODS",
    "EvaluationMethod",
    "MethodOutcome",
    "TrialContext",
    "ClusterMapMethod",
    "UniRouteProductMethod",
    "KNNMethod",
    "ZeroRouterMethod",
    "ClairvoyantMethod",
    "RandomMethod",
    "register_method",
    "get_method",
    "available_methods",
    "auto_cluster_grid",
]


@dataclass(frozen=True)
class TrialContext:
    """What one trial gives every method (``x`` = embeddings of all the data's prompts; indices are rows of it).

    Test LLMs are only seen through ``probe_test_scores`` (their profiling) — except by methods that say otherwise
    (the Clairvoyant upper bound). ``fit_idx`` / ``val_idx`` split the training prompts for hyper-parameter choice.
    ``rng`` is the trial's generator after the draws of ``val_idx`` and ``seed``; every method gets its own copy in
    that state (a method's result does not depend on which other methods run, in which order or in which process).
    ``seed`` is an integer drawn from it once.
    """

    x: np.ndarray
    data: RoutingData
    split: TrialSplit
    config: EvaluationConfig
    rng: np.random.Generator
    seed: int
    fit_idx: np.ndarray
    val_idx: np.ndarray
    scores: np.ndarray
    costs: np.ndarray
    test_true: np.ndarray
    test_costs: np.ndarray
    probe_test_scores: np.ndarray


@dataclass(frozen=True)
class MethodOutcome:
    """A method's result on one trial: its deferral curve on the test prompts and its chosen hyper-parameters."""

    curve: DeferralCurve
    params: dict[str, Any] = field(default_factory=dict)


class EvaluationMethod(ABC):
    """One compared method.

    Attributes:
        name: registry name (``--methods`` on the command line, keys of ``results.json``).
        label: human-readable name for the plot legend.
        style: matplotlib line style (``color``, ``lw``, ``ls``) for the plot.
        is_reference: every method is sign-tested against each reference method.
        is_gain_baseline: the plot's lower panel shows every method's quality minus this one's.
        plot_gain: whether the method gets a line in that lower panel.
        cost_hint: the method's typical run time per trial relative to the others (seconds of one MMLU-Pro trial
            on one core, measured); only used to hand the expensive runs out first when ``jobs`` > 1 — it never
            changes a result.
    """

    name: str
    label: str
    style: dict[str, Any] = {}  # read-only class default; instances may set their own
    is_reference: ClassVar[bool] = False
    is_gain_baseline: ClassVar[bool] = False
    plot_gain: ClassVar[bool] = True
    cost_hint: float = 1.0

    @abstractmethod
    def run(self, ctx: TrialContext) -> MethodOutcome:
        """Choose hyper-parameters on validation (training LLMs only) and return the test curve."""

    def describe_choice(self, params: Sequence[dict[str, Any]]) -> str:
        """The "chosen" column of the report table, from the per-trial ``params`` (empty: nothing chosen)."""
        return ""


EVALUATION_METHODS: Registry[EvaluationMethod] = Registry("evaluation method")
"""The registered methods, in report order."""


def register_method(cls: type[EvaluationMethod]) -> type[EvaluationMethod]:
    """Class decorator: register one instance of ``cls`` under ``cls.name``."""
    EVALUATION_METHODS.register(cls.name, cls())
    return cls


def get_method(name: str) -> EvaluationMethod:
    """The method called ``name``: a registered one, or the generic :class:`ClusterMapMethod` for a kind registered
    in :data:`~uniroute_core.cluster_map.CLUSTER_MAPS`. Raises :class:`~uniroute_core.registry.UnknownNameError`
    (a ``KeyError``) listing :func:`available_methods` otherwise."""
    if name in EVALUATION_METHODS:
        return EVALUATION_METHODS.get(name)
    if name in CLUSTER_MAPS:
        return ClusterMapMethod(name)
    known = available_methods()
    raise UnknownNameError(
        f"unknown evaluation method {name!r}; known methods: {', '.join(repr(n) for n in known)}", str(name), known
    )


def available_methods() -> tuple[str, ...]:
    """Registered methods, then cluster-map kinds that have no method of their own."""
    names = EVALUATION_METHODS.names()
    return names + tuple(k for k in CLUSTER_MAPS.names() if k not in names)


def auto_cluster_grid(n_probes: int, n_train: int, n_values: int = 5) -> list[int]:
    """The method note's K grid: about ``n_values`` geometric steps from 3 to |S_val|/50 (at least [3])."""
    top = max(3, n_probes // 50)
    grid = sorted({int(round(v)) for v in np.geomspace(3, top, n_values)}) if top > 3 else [3]
    return [k for k in grid if k <= n_train] or [1]


# --------------------------------------------------------------------------- UniRoute with a cluster map

Variant = tuple[ClusterMap, dict[str, Any]]
"""A fitted map to try on validation and the extra parameters it stands for (e.g. a soft K-Means temperature)."""


class ClusterMapMethod(EvaluationMethod):
    """UniRoute with one cluster-map kind: Φ fitted on the training prompts, test LLMs profiled on the probes.

    K (over :func:`auto_cluster_grid`) and the shrinkage α are chosen by validation Area among the training LLMs;
    ties go to the smaller K, then the earlier variant, then the smaller α. The map is built as
    ``CLUSTER_MAPS[kind](n_clusters=K, seed=seed, **map_params)`` and fitted with the supervision the protocol
    allows (``train_scores``/``train_models`` of the training LLMs on the fitting prompts, ``probe_embeddings`` and
    ``probe_scores``); unsupervised maps ignore it. A fixed ``config.n_clusters`` skips the search (fit on all
    training prompts, α = 2 when in the grid).

    Args:
        kind: the cluster-map kind.
        label: plot label (default ``"UniRoute <kind>"``).
        style: plot style.
        map_params: extra constructor arguments.
        grid_size: how many K of the auto grid to try, from the config (default ``config.kmeans_grid_size``).
    """

    def __init__(
        self,
        kind: str,
        *,
        label: str | None = None,
        style: dict[str, Any] | None = None,
        map_params: dict[str, Any] | None = None,
        grid_size: Callable[[EvaluationConfig], int] | None = None,
    ) -> None:
        self.name = kind
        self.kind = kind
        self.label = label or f"UniRoute {kind}"
        self.style = dict(style or {})
        self.map_params = dict(map_params or {})
        self._grid_size = grid_size

    def grid_size(self, config: EvaluationConfig) -> int:
        return self._grid_size(config) if self._grid_size is not None else config.kmeans_grid_size

    def make_map(self, k: int, seed: int) -> ClusterMap:
        factory: Callable[..., ClusterMap] = CLUSTER_MAPS.get(self.kind)  # a subclass, whose __init__ takes these
        return factory(n_clusters=k, seed=seed, **self.map_params)

    def fit_kwargs(self, ctx: TrialContext, idx: np.ndarray) -> dict[str, Any]:
        tr_m, probe = ctx.split.train_models, ctx.split.probe
        return {
            "train_scores": ctx.scores[np.ix_(idx, tr_m)],
            "train_models": [ctx.data.models[j] for j in tr_m],
            "probe_embeddings": ctx.x[probe],
            "probe_scores": ctx.scores[np.ix_(probe, tr_m)],
        }

    def hard_params(self) -> dict[str, Any]:
        """Extra parameters recorded for the plain fitted map (the first variant)."""
        return {}

    def variants(self, cmap: ClusterMap, fit_x: np.ndarray, config: EvaluationConfig) -> list[Variant]:
        """The maps to try for one fitted map (the map itself first)."""
        return [(cmap, self.hard_params())]

    def select(self, ctx: TrialContext) -> tuple[ClusterMap, float, dict[str, Any]]:
        """The (map, α, chosen parameters) by validation Area, or the fixed-K map."""
        config, split, x = ctx.config, ctx.split, ctx.x
        tr_m = split.train_models
        probe_x, probe_s = x[split.probe], ctx.scores[np.ix_(split.probe, tr_m)]
        if config.n_clusters != "auto":
            k = int(config.n_clusters)
            cmap = self.make_map(k, ctx.seed).fit(x[split.train], **self.fit_kwargs(ctx, split.train))
            alpha = 2.0 if 2.0 in config.shrinkage_grid else config.shrinkage_grid[0]
            return cmap, alpha, {"n_clusters": k, "shrinkage": alpha, **self.hard_params(), "validation_area": None}
        val_true, val_costs = ctx.scores[np.ix_(ctx.val_idx, tr_m)], ctx.costs[tr_m]
        best: tuple[float, ClusterMap, float, dict[str, Any]] | None = None
        for k in auto_cluster_grid(len(split.probe), len(ctx.fit_idx), self.grid_size(config)):
            fitted = self.make_map(k, ctx.seed).fit(x[ctx.fit_idx], **self.fit_kwargs(ctx, ctx.fit_idx))
            for cmap, extra in self.variants(fitted, x[ctx.fit_idx], config):
                for alpha in config.shrinkage_grid:
                    pred = cluster_quality(cmap, probe_x, probe_s, x[ctx.val_idx], alpha)
                    a = area(router_curve(pred, val_true, val_costs, max_points=config.validation_curve_points))
                    if best is None or a > best[0] + 1e-12:
                        best = (a, cmap, alpha, {"n_clusters": k, "shrinkage": alpha, **extra})
        if best is None:  # the grid is never empty (auto_cluster_grid returns at least one K)
            raise RuntimeError(f"{self.name}: no cluster-map setting was tried")
        return best[1], best[2], {**best[3], "validation_area": best[0]}

    def run(self, ctx: TrialContext) -> MethodOutcome:
        cmap, alpha, params = self.select(ctx)
        pred = cluster_quality(cmap, ctx.x[ctx.split.probe], ctx.probe_test_scores, ctx.x[ctx.split.test], alpha)
        return MethodOutcome(router_curve(pred, ctx.test_true, ctx.test_costs), params)

    def describe_choice(self, params: Sequence[dict[str, Any]]) -> str:
        if not params or "n_clusters" not in params[0]:
            return ""
        chosen = f"K median {int(np.median([p['n_clusters'] for p in params]))}"
        if "shrinkage" in params[0]:
            chosen += f", alpha median {np.median([p['shrinkage'] for p in params]):g}"
        if all("temperature" in p for p in params):
            chosen += f", soft in {sum(p['temperature'] is not None for p in params)}/{len(params)}"
        return chosen


class KMeansMethod(ClusterMapMethod):
    """UniRoute with K-Means; the validation search also tries soft assignments.

    For each fitted K > 1 the soft copies use τ = multiple × the median squared distance of a fitting prompt to its
    nearest centroid, one per ``config.kmeans_temperature_grid`` multiple (hard first, so it wins ties).
    """

    def __init__(self) -> None:
        super().__init__(
            "kmeans",
            label="UniRoute K-Means",
            style={"color": "#1f77b4", "lw": 2.4, "ls": "-"},
            map_params={"n_init": 1},
            grid_size=lambda config: config.kmeans_grid_size,
        )
        self.cost_hint = 1.7

    def hard_params(self) -> dict[str, Any]:
        return {"temperature": None, "temperature_multiple": None}

    def variants(self, cmap: ClusterMap, fit_x: np.ndarray, config: EvaluationConfig) -> list[Variant]:
        out = super().variants(cmap, fit_x, config)
        multiples = config.kmeans_temperature_grid
        if isinstance(cmap, KMeansClusterMap) and cmap.temperature is None and cmap.n_clusters_ > 1 and multiples:
            scale = float(np.median(np.maximum(cmap.squared_distances(fit_x).min(axis=1), 0.0)))
            if scale > 0:
                out += [
                    (cmap.with_temperature(m * scale), {"temperature": m * scale, "temperature_multiple": float(m)})
                    for m in multiples
                ]
        return out


class LearnedMapMethod(ClusterMapMethod):
    """UniRoute with the supervised LearnedMap (its training dominates the run time: a coarser K grid)."""

    def __init__(self) -> None:
        super().__init__(
            "learned_map",
            label="UniRoute LearnedMap",
            style={"color": "#d62728", "lw": 2.4, "ls": "-"},
            grid_size=lambda config: config.learned_map_grid_size,
        )
        self.cost_hint = 19.0  # three network trainings: by far the longest run of a trial


class UniRouteProductMethod(EvaluationMethod):
    """``uniroute``: the product path — ``UniRouter.fit`` with the training LLMs' scores, exactly as a user calls it
    (:mod:`.product`): the representation and α are chosen inside by validation on the training LLMs only, the test
    LLMs are added from their probe scores, and the router's own ``expected_quality`` is traced over λ."""

    name = "uniroute"
    label = "UniRoute (product, auto)"
    style = {"color": "#000000", "lw": 2.6, "ls": "-"}
    cost_hint = 4.4

    def run(self, ctx: TrialContext) -> MethodOutcome:
        from .product import uniroute_predictions

        split = ctx.split
        pred, params = uniroute_predictions(
            ctx.x, ctx.data, split.train, split.probe, split.test, split.train_models, split.test_models, ctx.seed
        )
        return MethodOutcome(router_curve(pred, ctx.test_true, ctx.test_costs), params)

    def describe_choice(self, params: Sequence[dict[str, Any]]) -> str:
        """How often each representation was chosen, e.g. ``blend 12/20 (KNN weight median 0.5), multires 8/20``."""
        if not params or "representation" not in params[0]:
            return ""
        out = []
        for rep in sorted({p["representation"] for p in params}):
            picked = [p for p in params if p["representation"] == rep]
            part = f"{rep} {len(picked)}/{len(params)}"
            if rep == "kmeans":
                part += f" (K median {int(np.median([p['n_clusters'] for p in picked]))})"
            elif rep == "probe_knn":
                part += f" (k median {int(np.median([p['n_neighbors'] for p in picked]))})"
            elif rep == "blend":
                part += f" (KNN weight median {np.median([p['knn_weight'] for p in picked]):g})"
            out.append(part)
        alphas = [p["shrinkage"] for p in params if "shrinkage" in p]
        return ", ".join(out) + (f"; alpha median {np.median(alphas):g}" if alphas else "")


EVALUATION_METHODS.register("uniroute", UniRouteProductMethod())
EVALUATION_METHODS.register("kmeans", KMeansMethod())
EVALUATION_METHODS.register("learned_map", LearnedMapMethod())


# --------------------------------------------------------------------------- baselines


@register_method
class KNNMethod(EvaluationMethod):
    """KNN over the probe prompts (cosine); k chosen by validation Area among the training LLMs (ties: smaller k)."""

    name = "knn"
    label = "KNN"
    style = {"color": "#2ca02c", "lw": 1.8, "ls": "--"}
    is_reference = True
    cost_hint = 0.55

    def run(self, ctx: TrialContext) -> MethodOutcome:
        split, config, x = ctx.split, ctx.config, ctx.x
        tr_m = split.train_models
        grid = [k for k in config.knn_grid if k <= len(split.probe)] or [len(split.probe)]
        val_nb = knn_neighbours(x[split.probe], x[ctx.val_idx], max(grid))
        probe_train_s = ctx.scores[np.ix_(split.probe, tr_m)]
        val_true = ctx.scores[np.ix_(ctx.val_idx, tr_m)]
        val_area = {
            k: area(
                router_curve(
                    knn_quality(val_nb, probe_train_s, k), val_true, ctx.costs[tr_m], config.validation_curve_points
                )
            )
            for k in grid
        }
        k_best = max(grid, key=lambda k: (val_area[k], -k))
        nb = knn_neighbours(x[split.probe], x[split.test], k_best)
        pred = knn_quality(nb, ctx.probe_test_scores, k_best)
        return MethodOutcome(
            router_curve(pred, ctx.test_true, ctx.test_costs), {"k": k_best, "validation_area": val_area[k_best]}
        )

    def describe_choice(self, params: Sequence[dict[str, Any]]) -> str:
        return f"k median {int(np.median([p['k'] for p in params]))}" if params and "k" in params[0] else ""


@register_method
class ZeroRouterMethod(EvaluationMethod):
    """ZeroRouter (K = 1): each test LLM's mean probe score, the same for every prompt."""

    name = "zero"
    label = "ZeroRouter (K=1)"
    style = {"color": "#7f7f7f", "lw": 1.8, "ls": "--"}
    is_reference = True
    is_gain_baseline = True
    cost_hint = 0.01

    def run(self, ctx: TrialContext) -> MethodOutcome:
        pred = zero_router_quality(ctx.probe_test_scores, len(ctx.split.test))
        return MethodOutcome(router_curve(pred, ctx.test_true, ctx.test_costs), {"n_clusters": 1})


@register_method
class ClairvoyantMethod(EvaluationMethod):
    """The upper bound: per-LLM logistic regressions trained on the test LLMs' training-prompt scores."""

    name = "clairvoyant"
    label = "Clairvoyant (upper bound)"
    style = {"color": "#9467bd", "lw": 1.6, "ls": ":"}
    cost_hint = 3.1

    def run(self, ctx: TrialContext) -> MethodOutcome:
        split = ctx.split
        pred = clairvoyant_quality(
            ctx.x[split.train], ctx.scores[np.ix_(split.train, split.test_models)], ctx.x[split.test], seed=ctx.seed
        )
        return MethodOutcome(router_curve(pred, ctx.test_true, ctx.test_costs), {})


@register_method
class RandomMethod(EvaluationMethod):
    """Sanity check: at random to the cheapest or the probe-best test LLM, at every matched cost."""

    name = "random"
    label = "Random (matched cost)"
    style = {"color": "#bcbd22", "lw": 1.4, "ls": "-."}
    plot_gain = False
    cost_hint = 0.01

    def run(self, ctx: TrialContext) -> MethodOutcome:
        return MethodOutcome(random_router_curve(ctx.test_true, ctx.test_costs, ctx.probe_test_scores, ctx.rng), {})
