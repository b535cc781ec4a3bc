"""UniRoute core: make a pool of LLMs look like one model by routing each prompt to the cheapest member likely to
answer well (Jitkrittum et al., "Universal Model Routing for Efficient LLM Inference", arXiv 2502.08773).

No LangChain or LlamaIndex import lives here; the adapters ``uniroute_langchain`` and ``uniroute_llamaindex`` are thin
layers over this package. The evaluation side (:mod:`uniroute_core.evaluation`) is a subpackage that the serving
modules never import; its curve helpers are re-exported here lazily, so ``import uniroute_core`` loads neither it nor
torch, scikit-learn, scipy or matplotlib (see ``ARCHITECTURE.md``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .autoselect import SearchSpace, Selection, select_representation
from .cluster_map import ClusterMap, KMeansClusterMap
from .data import RoutingData, RoutingDataError, load_routing_data, write_routing_data
from .embedding import CachedEmbedder, CallableEmbedder, Embedder, SentenceTransformerEmbedder, default_embedder
from .feedback import ChangeDetection, Exploration, Forgetting
from .grading import grade_exact, grade_multiple_choice, grade_numeric, make_llm_judge, resolve_grader
from .learned_map import LearnedMapClusterMap
from .multires import MultiResolutionClusterMap
from .persistence import RouterFileError
from .policy import RoutingPolicy
from .probe_knn import BlendClusterMap, ProbeKNNClusterMap
from .probes import ProbeSet
from .profile import ChangeEvent, ModelProfile
from .profile_basis import ProfileBasis
from .profiling import ProfilingError, ProfilingResult, aprofile_answers, profile_answers
from .router import FeedbackWarning, UniRouter
from .rule import Calibration, calibrate_lambda
from .state import NotFittedError, RouteDecision, RouterState, UnreachableBudgetWarning

if TYPE_CHECKING:
    from .evaluation.metrics import DeferralCurve, area, deferral_curve, qnc, router_curve

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    name: ".evaluation.metrics" for name in ("DeferralCurve", "deferral_curve", "router_curve", "area", "qnc")
}
"""Names exported here but defined on the evaluation side, imported on first use."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "UniRouter",
    "Forgetting",
    "ChangeDetection",
    "ChangeEvent",
    "Exploration",
    "FeedbackWarning",
    "RouterState",
    "RoutingPolicy",
    "ModelProfile",
    "ProfileBasis",
    "RouteDecision",
    "RoutingData",
    "RoutingDataError",
    "load_routing_data",
    "write_routing_data",
    "ProbeSet",
    "ProfilingError",
    "ProfilingResult",
    "profile_answers",
    "aprofile_answers",
    "grade_multiple_choice",
    "grade_exact",
    "grade_numeric",
    "make_llm_judge",
    "resolve_grader",
    "ClusterMap",
    "KMeansClusterMap",
    "LearnedMapClusterMap",
    "MultiResolutionClusterMap",
    "ProbeKNNClusterMap",
    "BlendClusterMap",
    "SearchSpace",
    "Selection",
    "select_representation",
    "Embedder",
    "SentenceTransformerEmbedder",
    "CallableEmbedder",
    "CachedEmbedder",
    "default_embedder",
    "DeferralCurve",
    "deferral_curve",
    "router_curve",
    "area",
    "qnc",
    "Calibration",
    "calibrate_lambda",
    "NotFittedError",
    "UnreachableBudgetWarning",
    "RouterFileError",
    "__version__",
]
