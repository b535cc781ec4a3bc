"""Ψ(h): a model's per-cluster expected quality, computed from its scores on the probe (representative) prompts.

    Ψ_k(h) = ( Σ_i Φ_k(x_i) s_i  +  α · s̄ ) / ( Σ_i Φ_k(x_i)  +  α )

s_i ∈ [0, 1] is the model's quality on probe i (NaN = not answered, ignored), s̄ its mean over all answered probes,
and α ≥ 0 the *shrinkage strength* in pseudo-probes: a cluster with n_k probes trusts its own mean with weight
n_k / (n_k + α) and the model's overall mean with weight α / (n_k + α). With α = 0 this is the method note's plain
per-cluster mean, with the overall mean as fallback for an empty cluster. With one cluster (K = 1) Ψ is the overall
mean for any α — exactly ZeroRouter. Adding a model is this one computation: no gradients, no retraining.

**Live evidence** (issue 14). Feedback on served calls is kept apart from the probe evidence, as two more sums per
cluster: L_k = Σ_obs w·Φ_k(x)·s and W_k = Σ_obs w·Φ_k(x) (optionally decayed, see :mod:`uniroute_core.feedback`).
The same estimator then reads

    Ψ_k(h) = ( ρ·P_k + L_k + α·m ) / ( ρ·C_k + W_k + α )

with P_k = Σ_i Φ_k(x_i) s_i and C_k = Σ_i Φ_k(x_i) the probe sums, ρ ∈ (0, 1] the probe evidence's decay scale (1
unless forgetting is told to decay probes too) and the overall mean

    m = ( ρ·Σ_i s_i + L + w₀·q₀ ) / ( ρ·n + W + w₀ )

over answered probes, live observations (totals L, W) and an optional prior quality q₀ of weight w₀ (pseudo-
observations; a prior of weight 0 only stands in while there is no evidence at all). With no live evidence and no
prior this is exactly the probe estimator above; with no probes, observing the probe data reproduces it exactly.

**After a detected change** (:class:`~uniroute_core.feedback.ChangeDetection`) the probe evidence of a member may be
down-weighted in some clusters only: ρ becomes ρ·ρ_k with a per-cluster scale ρ_k ∈ (0, 1]
(:attr:`ModelProfile.probe_cluster_scale`); in m each probe then counts with the Φ-weighted mean of ρ_k over its
clusters. With every ρ_k = 1 (or none recorded) the estimator is exactly the one above.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ModelProfile", "ChangeEvent", "DetectorState", "build_profile", "validate_scores", "validate_cost",
    "validate_prior", "shrunk_quality", "pool_cluster_offsets", "pool_prior_strength",
]


@dataclass(frozen=True)
class ChangeEvent:
    """A change detected in one member's quality (see :class:`~uniroute_core.feedback.ChangeDetection`).

    Attributes:
        member: the member's name.
        level: ``"member"`` (its detector over all clusters fired) or ``"cluster"`` (one cluster's detector fired).
        clusters: the clusters whose stale evidence was down-weighted (every cluster for a member-level change).
        at_observation: the member's observation count (:attr:`ModelProfile.n_observations`) when it fired.
        statistic: the statistic that crossed the threshold (nats: the CUSUM, or ln of the mixture of
            Shiryaev–Roberts statistics).
        change_point: observations back to the estimated change point (the last time the CUSUM was 0).
        time: the time given with the observation that fired it (``None`` when none was given).
    """

    member: str
    level: str
    clusters: tuple[int, ...]
    at_observation: int
    statistic: float
    change_point: int
    time: float | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON form (saved with the router)."""
        return {"member": self.member, "level": self.level, "clusters": list(self.clusters),
                "at_observation": self.at_observation, "statistic": self.statistic,
                "change_point": self.change_point, "time": self.time}


@dataclass(frozen=True)
class DetectorState:
    """One member's change-detector state (immutable; a new one per update).

    Attributes:
        stat: ``(K,)`` per-cluster one-sided CUSUM of the Φ-weighted log-likelihood ratios (nats, ≥ 0).
        since_sums / since_counts: ``(K,)`` the live evidence (score mass, weight) per cluster gathered since that
            cluster's statistic was last 0 — the evidence after the estimated change point, kept whole on a change.
        since_n: ``(K,)`` observations since that cluster's statistic was last 0.
        member_stat: the member-level CUSUM over all its observations (nats, ≥ 0).
        member_since_sums / member_since_counts: ``(K,)`` the live evidence since the member-level statistic was 0.
        member_since_n: observations since then.
        n_changes: changes detected so far (member-level and cluster-level).
        events: the most recent :class:`ChangeEvent` s (at most 20, oldest first).
        sr: ``(K, J)`` the mixture test's Shiryaev–Roberts statistics per cluster and assumed drop (``None``: the
            CUSUM test, or none yet); ``stat`` then holds ln of their mixture, floored at 0.
        member_sr: ``(J,)`` the same for the member-level detector (``member_stat`` holds ln of its mixture).
    """

    stat: np.ndarray = field(repr=False)
    since_sums: np.ndarray = field(repr=False)
    since_counts: np.ndarray = field(repr=False)
    since_n: np.ndarray = field(repr=False)
    member_stat: float = 0.0
    member_since_sums: np.ndarray | None = field(default=None, repr=False)
    member_since_counts: np.ndarray | None = field(default=None, repr=False)
    member_since_n: int = 0
    n_changes: int = 0
    events: tuple[ChangeEvent, ...] = ()
    sr: np.ndarray | None = field(default=None, repr=False)
    member_sr: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def empty(cls, k: int) -> DetectorState:
        """A fresh detector for ``k`` clusters."""
        return cls(stat=np.zeros(k), since_sums=np.zeros(k), since_counts=np.zeros(k), since_n=np.zeros(k),
                   member_since_sums=np.zeros(k), member_since_counts=np.zeros(k))


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
        live_sums: ``(K,)`` L_k, the (decayed) feedback score mass per cluster; ``None`` = no feedback yet.
        live_counts: ``(K,)`` W_k, the (decayed) feedback weight per cluster; ``None`` = no feedback yet.
        live_score_sum: L, the (decayed) total feedback score (for the overall mean m).
        live_weight: W, the (decayed) total feedback weight: how much of Ψ came from feedback.
        n_observations: feedback observations applied (raw count, never decayed).
        live_updated_at: time (seconds, any epoch) of the newest observation, for time-based forgetting.
        prior_quality: q₀, the prior overall quality given at ``add_model(prior=...)`` (``None`` = none).
        prior_weight: w₀, its weight in pseudo-observations.
        probe_scale: ρ, how much of the probe evidence is still counted (1 unless probes are forgotten too).
        probe_cluster_scale: ``(K,)`` ρ_k, a further per-cluster share of the probe evidence still counted, lowered
            when a change is detected in that cluster (``None`` = 1 everywhere).
        detector: the change detector's state (``None`` until feedback arrives with detection on).
        prior_offsets: ``(K,)`` how much easier or harder than its overall mean each cluster is expected to be
            for this member: for a member that joined with ``prior=`` and no probe answers, the pool's mean offset
            Ψ_k − m over its profiled members; for a member profiled on probes under a low-rank target
            (:mod:`uniroute_core.profile_basis`), its own profile fitted in the training LLMs' directions. The
            shrinkage target of cluster k is then m + o_k instead of m, and m is estimated net of the offsets of
            the clusters its feedback came from (``None``: m, the plain mean). Fixed once computed: feedback moves
            m and each cluster's evidence, not the offsets.
    """

    name: str
    cost: float
    cluster_quality: np.ndarray = field(repr=False)
    cluster_counts: np.ndarray = field(repr=False)
    overall_quality: float
    n_probes: int
    probe_scores: np.ndarray = field(repr=False)
    shrinkage: float
    live_sums: np.ndarray | None = field(default=None, repr=False)
    live_counts: np.ndarray | None = field(default=None, repr=False)
    live_score_sum: float = 0.0
    live_weight: float = 0.0
    n_observations: int = 0
    live_updated_at: float | None = None
    prior_quality: float | None = None
    prior_weight: float = 0.0
    probe_scale: float = 1.0
    probe_cluster_scale: np.ndarray | None = field(default=None, repr=False)
    detector: DetectorState | None = field(default=None, repr=False)
    prior_offsets: np.ndarray | None = field(default=None, repr=False)

    @property
    def cluster_probe_scale(self) -> np.ndarray:
        """``(K,)`` ρ·ρ_k: the share of each cluster's probe evidence Ψ still counts."""
        if self.probe_cluster_scale is None:
            return np.full(self.n_clusters, self.probe_scale)
        return self.probe_scale * np.asarray(self.probe_cluster_scale, dtype=float)

    @property
    def probe_weight(self) -> float:
        """How much probe evidence Ψ counts: ρ · (answered probes), less what detected changes discounted.
        Compare with :attr:`live_weight`."""
        if self.probe_cluster_scale is None:
            return self.probe_scale * self.n_probes
        return float(self.cluster_probe_scale @ np.asarray(self.cluster_counts, dtype=float))

    @property
    def n_changes(self) -> int:
        """Changes detected in this member so far (0 without change detection)."""
        return 0 if self.detector is None else self.detector.n_changes

    @property
    def evidence(self) -> np.ndarray:
        """``(K,)`` the evidence behind each cluster's Ψ: ρ·ρ_k·C_k + W_k (probe + live weight, before shrinkage)."""
        ev = self.cluster_probe_scale * np.asarray(self.cluster_counts, dtype=float)
        return ev if self.live_counts is None else ev + self.live_counts

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
            "probe_weight": self.probe_weight,
            "live_weight": self.live_weight,
            "n_observations": self.n_observations,
            "n_changes": self.n_changes,
            "prior": None if self.prior_quality is None else [self.prior_quality, self.prior_weight],
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


def validate_prior(name: str, prior: object) -> tuple[float, float]:
    """``prior=(quality, weight)``: a quality in [0, 1] and a finite weight >= 0 (pseudo-observations)."""
    try:
        pair = list(prior)  # type: ignore[call-overload]
        if len(pair) != 2:
            raise ValueError
        q, w = float(pair[0]), float(pair[1])
    except (TypeError, ValueError):
        raise TypeError(
            f"model {name!r}: prior must be a pair (quality in [0, 1], weight >= 0), got {prior!r}"
        ) from None
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"model {name!r}: prior quality must lie in [0, 1], got {q}")
    if not np.isfinite(w) or w < 0:
        raise ValueError(f"model {name!r}: prior weight must be a finite number >= 0, got {w}")
    return q, w


def validate_scores(name: str, scores: object, n_probes: int, *, allow_all_nan: bool = False) -> np.ndarray:
    """Probe scores as a float array of length ``n_probes`` in [0, 1] (NaN allowed, not all NaN).

    ``allow_all_nan`` accepts a member with no answered probe (it must then join with a prior).
    """
    try:
        s = np.asarray(scores, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"model {name!r}: scores must be numbers in [0, 1] (NaN = unknown)") from None
    if s.ndim != 1:
        raise ValueError(f"model {name!r}: scores must be 1-D (one per probe prompt), got shape {s.shape}")
    if len(s) != n_probes:
        raise ValueError(f"model {name!r}: got {len(s)} scores but the router has {n_probes} probe prompts")
    known = ~np.isnan(s)
    if not known.any() and not allow_all_nan:
        raise ValueError(f"model {name!r}: every score is NaN; at least one answered probe is needed to profile it")
    bad = known & ((s < 0) | (s > 1) | ~np.isfinite(s))
    if bad.any():
        i = int(np.nonzero(bad)[0][0])
        raise ValueError(f"model {name!r}: score {s[i]} at probe {i} is outside [0, 1] ({int(bad.sum())} such scores)")
    return s


def shrunk_quality(
    probe_sums: np.ndarray,
    probe_counts: np.ndarray,
    overall: float,
    shrinkage: float,
    *,
    probe_scale: float | np.ndarray = 1.0,
    live_sums: np.ndarray | None = None,
    live_counts: np.ndarray | None = None,
    target_offsets: np.ndarray | None = None,
) -> np.ndarray:
    """Ψ ``(K,)`` = (ρ·P + L + α·t) / (ρ·C + W + α), clipped to [0, 1]; t where the denominator is 0.

    t is the shrinkage target: the overall mean m, or m + o_k clipped to [0, 1] with ``target_offsets`` o (a cold
    member's expected cluster offsets, see :attr:`ModelProfile.prior_offsets`). ``probe_scale`` is ρ, or ``(K,)``
    per-cluster scales ρ·ρ_k."""
    num = probe_scale * np.asarray(probe_sums, dtype=float)
    den = probe_scale * np.asarray(probe_counts, dtype=float)
    if live_sums is not None and live_counts is not None:
        num = num + live_sums
        den = den + live_counts
    target: float | np.ndarray = overall
    if target_offsets is not None:
        target = np.clip(overall + np.asarray(target_offsets, dtype=float), 0.0, 1.0)
    num = num + shrinkage * target
    den = den + shrinkage
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(den > 0, num / np.where(den > 0, den, 1.0), target)
    return np.asarray(np.clip(q, 0.0, 1.0))


def pool_prior_strength(profiles: list[ModelProfile]) -> float | None:
    """How many pseudo-observations a cold member's cluster target m + o_k is worth, from the pool's own spread.

    For each member profiled on probes, the residual r_k = Ψ_k − m − o_k (o from the *other* profiled members) says
    how far a member's cluster quality strays from what its mean and the pool's offsets predict; with v the
    count-weighted mean of r² over members and clusters and q̄ their mean quality, a Beta prior of that spread has
    strength q̄(1 − q̄)/v − 1 (method of moments). v still holds the probe estimates' own noise, so this
    under-states the strength (it never trusts the target more than the pool supports). ``None`` with fewer than
    two profiled members."""
    known = [p for p in profiles if p.n_probes > 0]
    if len(known) < 2:
        return None
    resid, quality = [], []
    for p in known:
        off = pool_cluster_offsets([q for q in known if q is not p])
        assert off is not None
        counts = np.asarray(p.cluster_counts, dtype=float)
        if counts.sum() <= 0:
            continue
        r = np.asarray(p.cluster_quality, dtype=float) - p.overall_quality - off
        resid.append(float(counts @ r**2 / counts.sum()))
        quality.append(p.overall_quality)
    if not resid:
        return None
    v = max(float(np.mean(resid)), 1e-6)
    q = float(np.mean(quality))
    return max(q * (1.0 - q) / v - 1.0, 0.0)


def pool_cluster_offsets(profiles: list[ModelProfile]) -> np.ndarray | None:
    """``(K,)`` the mean of Ψ_k − m over the members profiled on probes (``None`` when there is none).

    Clusters that are hard for the pool are hard for a newcomer too: a member that joins with ``prior=`` only
    shrinks towards m + o_k rather than a flat m, so a cluster it rarely serves is predicted from how the pool
    does there, not as average."""
    known = [p for p in profiles if p.n_probes > 0]
    if not known:
        return None
    return np.mean([np.asarray(p.cluster_quality, dtype=float) - p.overall_quality for p in known], axis=0)


def overall_mean(
    probe_total: float, n_probes: float, live_score_sum: float, live_weight: float,
    prior: tuple[float, float] | None, probe_scale: float = 1.0,
) -> float:
    """m = (ρ·Σs + L + w₀·q₀) / (ρ·n + W + w₀); the prior quality (or NaN) when all weights are 0."""
    q0, w0 = prior if prior is not None else (float("nan"), 0.0)
    num = probe_scale * probe_total + live_score_sum + w0 * (q0 if w0 > 0 else 0.0)
    den = probe_scale * n_probes + live_weight + w0
    return float(num / den) if den > 0 else float(q0)


def build_profile(
    name: str,
    cost: float,
    scores: np.ndarray,
    assignments: np.ndarray,
    shrinkage: float,
    *,
    prior: tuple[float, float] | None = None,
    prior_offsets: np.ndarray | None = None,
) -> ModelProfile:
    """Compute Ψ for one model from validated probe ``scores`` ``(P,)`` and probe ``assignments`` Φ ``(P, K)``.

    ``prior=(quality, weight)`` adds pseudo-observations to the overall mean m; a member with no answered probe
    needs one (its Ψ is then the prior quality in every cluster — plus ``prior_offsets`` when given — until feedback
    arrives).
    """
    if shrinkage < 0 or not np.isfinite(shrinkage):
        raise ValueError(f"shrinkage must be a finite number >= 0, got {shrinkage}")
    known = ~np.isnan(scores)
    if not known.any() and prior is None:
        raise ValueError(f"model {name!r}: no answered probe and no prior; give scores or prior=(quality, weight)")
    a = assignments[known]
    s = scores[known]
    overall = overall_mean(float(s.sum()), float(known.sum()), 0.0, 0.0, prior)
    counts = a.sum(axis=0)
    sums = a.T @ s
    return ModelProfile(
        name=name,
        cost=float(cost),
        cluster_quality=shrunk_quality(sums, counts, overall, shrinkage, target_offsets=prior_offsets),
        cluster_counts=counts,
        overall_quality=overall,
        n_probes=int(known.sum()),
        probe_scores=np.asarray(scores, dtype=float).copy(),
        shrinkage=float(shrinkage),
        prior_quality=None if prior is None else prior[0],
        prior_weight=0.0 if prior is None else prior[1],
        prior_offsets=None if prior_offsets is None else np.asarray(prior_offsets, dtype=float).copy(),
    )
