"""Ψ(h): a model's per-cluster expected quality, computed from its scores on the probe (representative) prompts.

    Ψ_k(h) = ( Σ_i Φ_k(x_i) s_i  +  α · s̄ ) / ( Σ_i Φ_k(x_i)  +  α )

s_i ∈ [0, 1] is the model's quality on probe i (NaN = not answered, ignored), s̄ its mean over all answered probes,
and α ≥ 0 the *shrinkage strength* in pseudo-probes: a cluster with n_k probes trusts its own mean with weight
n_k / (n_k + α) and the model's overall mean with weight α / (n_k + α). With α = 0 this is the method note's plain
per-cluster mean, with the overall mean as fallback for an empty cluster. With one cluster (K = 1) Ψ is the overall
mean for any α — exactly ZeroRouter. Adding a model is this one computation: no gradients, no retraining.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ModelProfile", "build_profile", "validate_scores", "validate_cost"]


@dataclass(frozen=True)
class ModelProfile:
    """What the router knows about one pool member.

    Attributes:
        name: member name.
        cost: per-call cost in the user's unit (only ratios matter).
        cluster_quality: ``(K,)`` Ψ as expected quality (1 − expected loss) per cluster, after shrinkage.
        cluster_counts: ``(K,)`` probe weight per cluster (the number of answered probes for hard clusters).
        overall_quality: mean score over answered probes (s̄).
        n_probes: answered probes.
        probe_scores: ``(P,)`` the raw probe scores as given (NaN = unknown); kept so the profile can be rebuilt
            if the cluster map or the shrinkage changes.
        shrinkage: α used.
    """

    name: str
    cost: float
    cluster_quality: np.ndarray = field(repr=False)
    cluster_counts: np.ndarray = field(repr=False)
    overall_quality: float
    n_probes: int
    probe_scores: np.ndarray = field(repr=False)
    shrinkage: float

    @property
    def n_clusters(self) -> int:
        """K."""
        return int(self.cluster_quality.shape[0])

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly summary (no arrays of probe scores)."""
        return {
            "name": self.name,
            "cost": self.cost,
            "overall_quality": self.overall_quality,
            "n_probes": self.n_probes,
            "cluster_quality": [float(v) for v in self.cluster_quality],
            "cluster_counts": [float(v) for v in self.cluster_counts],
            "shrinkage": self.shrinkage,
        }


def validate_cost(name: str, cost: float) -> float:
    """A finite, non-negative number (error names the model)."""
    try:
        c = float(cost)
    except (TypeError, ValueError):
        raise TypeError(f"model {name!r}: cost must be a number, got {cost!r}") from None
    if not np.isfinite(c) or c < 0:
        raise ValueError(f"model {name!r}: cost must be a finite number >= 0, got {cost!r}")
    return c


def validate_scores(name: str, scores: object, n_probes: int) -> np.ndarray:
    """Probe scores as a float array of length ``n_probes`` in [0, 1] (NaN allowed, not all NaN)."""
    try:
        s = np.asarray(scores, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"model {name!r}: scores must be numbers in [0, 1] (NaN = unknown)") from None
    if s.ndim != 1:
        raise ValueError(f"model {name!r}: scores must be 1-D (one per probe prompt), got shape {s.shape}")
    if len(s) != n_probes:
        raise ValueError(f"model {name!r}: got {len(s)} scores but the router has {n_probes} probe prompts")
    known = ~np.isnan(s)
    if not known.any():
        raise ValueError(f"model {name!r}: every score is NaN; at least one answered probe is needed to profile it")
    bad = known & ((s < 0) | (s > 1) | ~np.isfinite(s))
    if bad.any():
        i = int(np.nonzero(bad)[0][0])
        raise ValueError(f"model {name!r}: score {s[i]} at probe {i} is outside [0, 1] ({int(bad.sum())} such scores)")
    return s


def build_profile(
    name: str, cost: float, scores: np.ndarray, assignments: np.ndarray, shrinkage: float
) -> ModelProfile:
    """Compute Ψ for one model from validated probe ``scores`` ``(P,)`` and probe ``assignments`` Φ ``(P, K)``."""
    if shrinkage < 0 or not np.isfinite(shrinkage):
        raise ValueError(f"shrinkage must be a finite number >= 0, got {shrinkage}")
    known = ~np.isnan(scores)
    a = assignments[known]
    s = scores[known]
    overall = float(s.mean())
    counts = a.sum(axis=0)
    sums = a.T @ s
    denom = counts + shrinkage
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(denom > 0, (sums + shrinkage * overall) / np.where(denom > 0, denom, 1.0), overall)
    return ModelProfile(
        name=name,
        cost=float(cost),
        cluster_quality=np.clip(q, 0.0, 1.0),
        cluster_counts=counts,
        overall_quality=overall,
        n_probes=int(known.sum()),
        probe_scores=np.asarray(scores, dtype=float).copy(),
        shrinkage=float(shrinkage),
    )
