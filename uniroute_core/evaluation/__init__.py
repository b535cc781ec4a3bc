"""The research side of UniRoute: the unseen-LLM evaluation protocol, its baselines, metrics, plots and replay.

Nothing in the serving core (:mod:`uniroute_core.router` and the modules it uses) imports this subpackage; it builds
on the core — cluster maps, profiles and the routing rule — to measure routers:

* :mod:`.protocol` — :func:`evaluate` / :func:`run_trial` (train/probe/test prompt splits, unseen test LLMs,
  validation-chosen hyper-parameters) and :class:`EvaluationResult` (``results.json``, :func:`format_table`);
* :mod:`.methods` — the registry of evaluated methods (UniRoute with every registered cluster-map kind, KNN,
  ZeroRouter, Clairvoyant, Random);
* :mod:`.baselines` — the baseline routers as predicted-quality matrices;
* :mod:`.metrics` — deferral curves, Area, QNC;
* :mod:`.plotting` — the deferral-curve figure (needs the ``eval`` extra: matplotlib);
* :mod:`.preview` — a saved router replayed on logged prompts (``uniroute replay``).

matplotlib and scipy are the optional ``eval`` extra (``pip install 'uniroute[eval]'``), imported only when a plot
or a sign test is made.
"""

from .methods import (
    EVALUATION_METHODS,
    ClusterMapMethod,
    EvaluationMethod,
    MethodOutcome,
    TrialContext,
    available_methods,
    get_method,
    register_method,
)
from .metrics import DeferralCurve, area, area_up_to, deferral_curve, qnc, router_curve
from .plotting import plot_deferral_curves
from .preview import MissingMembersError, PolicyOutcome, ReplayPreview, format_comparison, preview_router
from .protocol import (
    METHODS,
    ROUTER_METHODS,
    EvaluationConfig,
    EvaluationResult,
    TrialResult,
    TrialSplit,
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

__all__ = [
    "EVALUATION_METHODS",
    "ClusterMapMethod",
    "EvaluationMethod",
    "MethodOutcome",
    "TrialContext",
    "available_methods",
    "get_method",
    "register_method",
    "METHODS",
    "ROUTER_METHODS",
    "EvaluationConfig",
    "EvaluationResult",
    "TrialResult",
    "TrialSplit",
    "auto_cluster_grid",
    "curve_metrics",
    "evaluate",
    "format_table",
    "make_trial_splits",
    "run_trial",
    "sign_test",
    "split_models",
    "split_prompts",
    "DeferralCurve",
    "area",
    "area_up_to",
    "deferral_curve",
    "qnc",
    "router_curve",
    "plot_deferral_curves",
    "MissingMembersError",
    "PolicyOutcome",
    "ReplayPreview",
    "format_comparison",
    "preview_router",
]
