"""UniRoute core: make a pool of LLMs look like one model by routing each prompt to the cheapest member likely to
answer well (Jitkrittum et al., "Universal Model Routing for Efficient LLM Inference", arXiv 2502.08773).

No LangChain or LlamaIndex import lives here; the adapters ``uniroute_langchain`` and ``uniroute_llamaindex`` are thin
layers over this package.
"""

from .cluster_map import ClusterMap, KMeansClusterMap
from .data import RoutingData, RoutingDataError, load_routing_data, write_routing_data
from .embedding import CachedEmbedder, CallableEmbedder, Embedder, SentenceTransformerEmbedder, default_embedder
from .grading import grade_exact, grade_multiple_choice, grade_numeric, make_llm_judge, resolve_grader
from .learned_map import LearnedMapClusterMap
from .metrics import DeferralCurve, area, deferral_curve, qnc, router_curve
from .persistence import RouterFileError
from .probes import ProbeSet
from .profile import ModelProfile
from .profiling import ProfilingError, ProfilingResult, aprofile_answers, profile_answers
from .router import NotFittedError, RouteDecision, UniRouter, UnreachableBudgetWarning
from .rule import Calibration, calibrate_lambda

__version__ = "0.1.0"

__all__ = [
    "UniRouter",
    "ModelProfile",
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
