"""Learning from served traffic: live evidence, forgetting and exploration (issue 14).

An observation is ``(x, member, score)``: the member answered prompt x and the answer was judged ``score`` ∈ [0, 1]
(a thumbs-up, a unit test, an LLM judge, a human label). It adds ``w·Φ(x)·score`` and ``w·Φ(x)`` to that member's
*live* sums (kept apart from the probe sums, see :mod:`uniroute_core.profile`), and Ψ is recomputed from probe +
live sums with the same shrinkage estimator. The update is representation-agnostic — it only needs Φ(x), whatever
cluster map produced it — and observing the probe data on a member with no probes reproduces the batch estimator.

:func:`apply_observations` builds a *new* :class:`~uniroute_core.profile.ModelProfile`; the router swaps a new state
holding it exactly as ``add_model`` does, so routing never takes a lock.

**Forgetting** (:class:`Forgetting`): exponential decay with a half-life counted in the member's own observation
weight (``unit="observations"``) or in seconds (``unit="seconds"``). Decay is applied when evidence arrives: the
member's existing live sums are multiplied by 2^(−Δ/h) and observation i enters with 2^(−(T−tᵢ)/h) relative to the
newest time T, so the result does not depend on how observations are batched. Routing reads the stored sums and
never decays on its own (a routing call stays a pure function of the snapshot).

*Default: off.* Without drift, decay only throws evidence away and makes Ψ noisier; with a known risk of drift
(a provider swapping model versions) a half-life of a few hundred observations per member is a reasonable start
(``benchmarks/feedback_drift.py`` measures it). *Probe evidence does not decay by default*: the probes are the
curated, labelled reference, and decaying them would let a handful of noisy feedback scores override them in every
cluster a member is rarely fed back on. ``Forgetting(decay_probes=True)`` decays it with the live evidence, for pools
whose members are known to change under the same name; the remaining share is the profile's ``probe_scale``.

**Change detection** (:class:`ChangeDetection`, default off). Forgetting only ever *weighs* old evidence less; it
cannot tell that a member has changed, so after a silent regression the ~25 probe answers per cluster keep
outvoting a trickle of negative feedback for hundreds of calls. A change detector tests each observation against
what the current Ψ predicts — q̂ = Φ(x)ᵀΨ — with a one-sided CUSUM of Bernoulli log-likelihood ratios

    ℓ = s·ln(q₁/q̂) + (1 − s)·ln((1 − q₁)/(1 − q̂)),   q₁ = q̂ − δ  (H1: the member got worse by δ),
    S ← max(0, S + w·ℓ),   alarm when S > h,

(valid for graded scores s ∈ [0, 1] too: E[e^ℓ] ≤ 1 when E[s] = q̂, by convexity). It runs per member × cluster
(increments Φ_k(x)·w·ℓ) and, to share strength across clusters, once per member over all its observations (a
provider-wide regression shows up there long before any single cluster has enough feedback). *Threshold from a
false-alarm rate*: under no change e^S is a non-negative supermartingale, so by Ville's inequality / Lorden's bound
each detector raises a false alarm at most once per e^h of its observations on average; with the member-level and
the per-cluster detectors h = ln(2 / rate) keeps the total at most ``false_alarm_rate`` false alarms per
observation of the member (for a hard cluster map, where each observation feeds one cluster; a soft map's
fractional increments only make its per-cluster detectors slower). The default rate, 1/1000 observations, means a
member fed back 1000 times a day raises at most about one false alarm a day, and a false alarm costs little (the
next bullet); δ defaults to 0.3, the size of a regression worth re-routing for (a member at 75 % correct falling to
45 %), large against the ~0.1 standard error of a 25-probe cluster estimate so that estimation error alone does not
drive the statistic up. For the same reason q̂ is taken at the *lower* end of what the evidence supports —
Φ(x)ᵀ(Ψ − u·σ) with σ_k = √(Ψ_k(1 − Ψ_k)/(d_k + 1)) the posterior standard deviation of cluster k (d_k its evidence
plus α, u = 1 by default): the bound above holds whenever the member's true quality is at least the null mean (ℓ
falls as the true quality rises), so a cluster whose Ψ is a little optimistic — 30 probes at 0.97 for a member that
is really at 0.9 — does not raise alarms on stationary traffic.

*The default test: a mixture over the size of the drop* (``method="mixture"``). The CUSUM above is built for one
drop δ and its threshold is Lorden's bound, which on stationary traffic proved ~15–20x conservative (measured: 5e-5
false alarms per observation for 1e-3 configured). The default instead runs, per detector, one Shiryaev–Roberts
statistic per assumed *relative* drop ρ_j ∈ ``drops`` (default 1/4, 1/2, 3/4 and 1 — "the answers turned wrong"),
q₁ = q̂·(1 − ρ_j):

    R_j ← (1 + R_j)·e^{w·ℓ_j}   (per cluster: (Φ_k + R_j)·e^{w·Φ_k·ℓ_j}),   alarm when mean_j R_j > A,

with A = families / ``false_alarm_rate`` (the same ``threshold`` = ln A). Under no change every R_j − (observations)
is a supermartingale, hence so is their mean, and the first alarm comes after at least A observations on average
(E[T] = E[R_T] ≥ A; after an alarm the statistics restart) — a bound that is tight up to the overshoot, so the
configured rate is (nearly) the actual rate, no simulation needed, and averaging over the drops costs nothing
(no Bonferroni factor). Large drops are caught after a few observations, small ones like the CUSUM at its δ.
The CUSUM at ``shift`` still runs alongside: the last time it was 0 is the estimated change point (what a detected
change keeps, below). ``method="cusum"`` alarms on the CUSUM itself (routers saved before the mixture test existed
load with it).

*What a detected change does.* The statistic was last 0 at the estimated change point; the evidence gathered since
then (the observations that drove the alarm) is kept whole. All *stale* evidence in the affected clusters — probe
evidence and live evidence from before the change point — is scaled down to ``keep`` pseudo-observations per cluster
(default: the router's shrinkage α, the weight it already gives a prior belief against a cluster's own data), so the
old Ψ becomes a prior of the same strength as the shrinkage toward the member's mean and the recent feedback
dominates. A cluster-level alarm does this in that cluster; a member-level alarm in every cluster (the member itself
changed: every stale estimate of it is suspect, and the clusters where it did not change get their evidence back from
the next feedback). Probe evidence is discounted through the per-cluster scale ρ_k of the profile; ``reset_feedback``
restores it. Every change is a :class:`~uniroute_core.profile.ChangeEvent` (``router.change_events``, saved with the
router, counted per member in ``ModelProfile.n_changes``) and a log line on the ``uniroute_core.feedback`` logger.
Detection needs observations in order; a batch is processed one observation at a time, each tested against the Ψ in
force (recomputed after an alarm).

**Exploration** (:class:`Exploration`): on a configurable small share of calls the member is chosen by Thompson
sampling — Ψ is drawn from each cluster's Beta posterior Beta(1 + num_k, 1 + den_k − num_k) with num_k = Ψ_k·den_k
and den_k the evidence behind it plus α — under the same policy, but only among members *no more expensive than the
one the point estimate chose*, so an exploratory call never costs more than the call it replaces and a budget
calibrated for the point estimates still holds. Such decisions say ``exploratory=True``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from .profile import ChangeEvent, DetectorState, ModelProfile, overall_mean, shrunk_quality

if TYPE_CHECKING:
    from .router import UniRouter

__all__ = [
    "ChangeDetection",
    "Forgetting",
    "Exploration",
    "FeedbackLog",
    "UnknownCallError",
    "apply_observations",
    "reset_live",
    "validate_feedback_score",
]

ForgettingUnit = Literal["observations", "seconds"]
DetectionMethod = Literal["mixture", "cusum"]
logger = logging.getLogger(__name__)
_MAX_EVENTS = 20
_EPS = 0.01  # predictions are clipped to [ε, 1 − ε] so one observation never moves a statistic by more than ~4.6 nats


@dataclass(frozen=True)
class Forgetting:
    """Exponential forgetting of live evidence (see the module docstring for what decays and why).

    Attributes:
        half_life: after this much newer evidence (observation weight, or seconds) old evidence counts half.
        unit: ``"observations"`` (the member's own observation weight) or ``"seconds"``.
        decay_probes: also decay the member's probe evidence (default ``False``: probes are kept whole).
    """

    half_life: float
    unit: ForgettingUnit = "observations"
    decay_probes: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.half_life, bool) or not isinstance(self.half_life, (int, float)):
            raise TypeError(f"Forgetting: half_life must be a number, got {self.half_life!r}")
        if not math.isfinite(self.half_life) or self.half_life <= 0:
            raise ValueError(f"Forgetting: half_life must be a finite number > 0, got {self.half_life!r}")
        if self.unit not in ("observations", "seconds"):
            raise ValueError(f"Forgetting: unit must be 'observations' or 'seconds', got {self.unit!r}")
        object.__setattr__(self, "half_life", float(self.half_life))

    def to_dict(self) -> dict[str, object]:
        """JSON form (saved with the router)."""
        return {"half_life": self.half_life, "unit": self.unit, "decay_probes": self.decay_probes}

    @classmethod
    def from_dict(cls, d: object) -> Forgetting:
        """Inverse of :meth:`to_dict` (a bad value is a ``ValueError`` naming it)."""
        if not isinstance(d, dict):
            raise ValueError(f"forgetting must be an object with half_life and unit, got {d!r}")
        try:
            return cls(half_life=d["half_life"], unit=d.get("unit", "observations"),
                       decay_probes=bool(d.get("decay_probes", False)))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"forgetting {d!r} is invalid: {exc}") from None


@dataclass(frozen=True)
class ChangeDetection:
    """Detect that a member's quality fell below what Ψ predicts, and let the recent feedback take over.

    See the module docstring for the test (one-sided Bernoulli CUSUM per member × cluster and per member), why the
    threshold is ``ln(2 / false_alarm_rate)``, and what a detected change does to the stale evidence.

    Attributes:
        false_alarm_rate: false alarms per feedback observation of a member allowed when nothing changed
            (default 0.001); the threshold is derived from it, never tuned.
        shift: δ, the CUSUM's assumed drop in expected quality (default 0.3): the alarm test of ``"cusum"``, and
            the change-point estimate of both methods.
        member_level: also run one detector per member over all its clusters (default ``True``).
        cluster_level: run one detector per member × cluster (default ``True``).
        keep: pseudo-observations per cluster the stale evidence is worth after a change (``None``: the router's
            shrinkage α, at least 1).
        uncertainty: the null hypothesis is Ψ less this many posterior standard deviations
            √(Ψ(1 − Ψ)/(d + 1)) (d: the cluster's evidence + α), so that the estimation error of a cluster known
            from a few dozen probes is not mistaken for a change (default 1; 0 tests against Ψ itself).
        method: ``"mixture"`` (default: Shiryaev–Roberts statistics averaged over ``drops``, false alarms close to
            the configured rate) or ``"cusum"`` (one CUSUM at ``shift``, Lorden's conservative bound).
        drops: the relative drops q₁ = q̂·(1 − ρ) the mixture averages over, each in (0, 1].
    """

    false_alarm_rate: float = 1e-3
    shift: float = 0.3
    member_level: bool = True
    cluster_level: bool = True
    keep: float | None = None
    uncertainty: float = 1.0
    method: DetectionMethod = "mixture"
    drops: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)

    def __post_init__(self) -> None:
        for name in ("false_alarm_rate", "shift"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TypeError(f"ChangeDetection: {name} must be a finite number, got {v!r}")
        if not 0.0 < self.false_alarm_rate < 1.0:
            raise ValueError(f"ChangeDetection: false_alarm_rate must lie in (0, 1), got {self.false_alarm_rate!r}")
        if not 0.0 < self.shift < 1.0:
            raise ValueError(f"ChangeDetection: shift must lie in (0, 1), got {self.shift!r}")
        if not (self.member_level or self.cluster_level):
            raise ValueError("ChangeDetection: at least one of member_level and cluster_level must be on")
        if self.keep is not None and (
            isinstance(self.keep, bool) or not isinstance(self.keep, (int, float)) or not math.isfinite(self.keep)
            or self.keep <= 0
        ):
            raise ValueError(f"ChangeDetection: keep must be None or a finite number > 0, got {self.keep!r}")
        u = self.uncertainty
        if isinstance(u, bool) or not isinstance(u, (int, float)) or not math.isfinite(u) or u < 0:
            raise ValueError(f"ChangeDetection: uncertainty must be a finite number >= 0, got {u!r}")
        object.__setattr__(self, "uncertainty", float(u))
        if self.method not in ("mixture", "cusum"):
            raise ValueError(f"ChangeDetection: method must be 'mixture' or 'cusum', got {self.method!r}")
        try:
            drops = tuple(float(v) for v in self.drops)
        except (TypeError, ValueError):
            raise TypeError(f"ChangeDetection: drops must be a sequence of numbers, got {self.drops!r}") from None
        if not drops or any(not (0.0 < v <= 1.0) for v in drops) or any(isinstance(v, bool) for v in self.drops):
            raise ValueError(f"ChangeDetection: drops must be numbers in (0, 1], at least one, got {self.drops!r}")
        object.__setattr__(self, "drops", drops)
        object.__setattr__(self, "false_alarm_rate", float(self.false_alarm_rate))
        object.__setattr__(self, "shift", float(self.shift))

    @property
    def threshold(self) -> float:
        """h = ln(number of detector families / false_alarm_rate), in nats (for ``"mixture"``: ln A, the
        Shiryaev–Roberts threshold A = families / rate)."""
        families = int(self.member_level) + int(self.cluster_level)
        return math.log(families / self.false_alarm_rate)

    def kept_weight(self, shrinkage: float) -> float:
        """Pseudo-observations per cluster the stale evidence keeps after a change."""
        return float(self.keep) if self.keep is not None else max(float(shrinkage), 1.0)

    def to_dict(self) -> dict[str, object]:
        """JSON form (saved with the router)."""
        return {"false_alarm_rate": self.false_alarm_rate, "shift": self.shift, "member_level": self.member_level,
                "cluster_level": self.cluster_level, "keep": self.keep, "uncertainty": self.uncertainty,
                "method": self.method, "drops": list(self.drops)}

    @classmethod
    def from_dict(cls, d: object) -> ChangeDetection:
        """Inverse of :meth:`to_dict` (a bad value is a ``ValueError`` naming it)."""
        if not isinstance(d, dict):
            raise ValueError(f"change_detection must be an object, got {d!r}")
        known = {"false_alarm_rate", "shift", "member_level", "cluster_level", "keep", "uncertainty", "method",
                 "drops"}
        extra = set(d) - known
        if extra:
            raise ValueError(f"change_detection has unknown fields {sorted(extra)}")
        d = dict(d)
        d.setdefault("method", "cusum")  # saved before the mixture test existed (format 4): keep its behaviour
        if "drops" in d:
            if not isinstance(d["drops"], list):
                raise ValueError(f"change_detection.drops must be a list of numbers, got {d['drops']!r}")
            d["drops"] = tuple(d["drops"])
        try:
            return cls(**d)
        except TypeError as exc:
            raise ValueError(f"change_detection {d!r} is invalid: {exc}") from None


def log_likelihood_ratio(scores: np.ndarray, predicted: np.ndarray, shift: float) -> np.ndarray:
    """ℓ = s·ln(q₁/q̂) + (1 − s)·ln((1 − q₁)/(1 − q̂)) with q̂ clipped to [ε, 1 − ε] and q₁ = max(q̂ − δ, ε/2).

    Positive when the score is lower than predicted by enough to favour "dropped by δ"; E[e^ℓ] ≤ 1 under q̂.
    """
    q0 = np.clip(np.asarray(predicted, dtype=float), _EPS, 1.0 - _EPS)
    q1 = np.maximum(q0 - shift, _EPS / 2)
    s = np.asarray(scores, dtype=float)
    return np.asarray(s * np.log(q1 / q0) + (1.0 - s) * np.log((1.0 - q1) / (1.0 - q0)))


def drop_log_likelihood_ratios(score: float, predicted: float, drops: np.ndarray) -> np.ndarray:
    """ℓ_j for each assumed relative drop ρ_j: q₁ = max(q̂·(1 − ρ_j), ε/2) (ρ = 1: the answers turned wrong).

    Each is a log-likelihood ratio with E[e^ℓ] ≤ 1 under q̂ (see :func:`log_likelihood_ratio`)."""
    q0 = min(max(float(predicted), _EPS), 1.0 - _EPS)
    q1 = np.maximum(q0 * (1.0 - drops), _EPS / 2)
    return np.asarray(score * np.log(q1 / q0) + (1.0 - score) * np.log((1.0 - q1) / (1.0 - q0)))


class Exploration:
    """Thompson-sampling exploration on a share of calls (see the module docstring).

    Args:
        share: fraction of calls in [0, 1] routed by a posterior sample (a small value such as 0.05).
        seed: seed of the sampler (``None``: fresh entropy). The sampler is shared by all snapshots of a router and
            guarded by its own lock, so concurrent routing calls stay safe.
    """

    def __init__(self, share: float, seed: int | None = None) -> None:
        if isinstance(share, bool) or not isinstance(share, (int, float)):
            raise TypeError(f"Exploration: share must be a number in [0, 1], got {share!r}")
        if not 0.0 <= float(share) <= 1.0:
            raise ValueError(f"Exploration: share must lie in [0, 1], got {share!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"Exploration: seed must be an int or None, got {seed!r}")
        self.share = float(share)
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Exploration(share={self.share}, seed={self.seed})"

    def to_dict(self) -> dict[str, object]:
        """JSON form (saved with the router)."""
        return {"share": self.share, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: object) -> Exploration:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(d, dict) or "share" not in d:
            raise ValueError(f"exploration must be an object with a share, got {d!r}")
        return cls(share=d["share"], seed=d.get("seed"))

    def draw(self, n: int) -> np.ndarray:
        """Which of ``n`` calls explore (boolean mask)."""
        if self.share <= 0 or n == 0:
            return np.zeros(n, dtype=bool)
        with self._lock:
            return self._rng.random(n) < self.share

    def sample_quality(self, quality: np.ndarray, evidence: np.ndarray, shrinkage: float, n: int) -> np.ndarray:
        """``n`` draws ``(n, M, K)`` of Ψ from Beta(1 + Ψ·d, 1 + (1 − Ψ)·d) with d = evidence + α."""
        d = np.asarray(evidence, dtype=float) + shrinkage
        a = 1.0 + quality * d
        b = 1.0 + (1.0 - quality) * d
        with self._lock:
            return self._rng.beta(a, b, size=(n, *quality.shape))


def validate_feedback_score(model: str, score: object) -> float:
    """A feedback score as a float in [0, 1] (error names the member and the value)."""
    if isinstance(score, bool):
        score = float(score)
    try:
        v = float(score)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(f"feedback for {model!r}: score must be a number in [0, 1], got {score!r}") from None
    if not 0.0 <= v <= 1.0:  # also refuses NaN
        raise ValueError(f"feedback for {model!r}: score must lie in [0, 1], got {score!r}")
    return v


def _decay(delta: np.ndarray | float, forgetting: Forgetting | None) -> np.ndarray | float:
    if forgetting is None:
        return np.ones_like(delta) if isinstance(delta, np.ndarray) else 1.0
    return np.exp2(-np.asarray(delta, dtype=float) / forgetting.half_life) if isinstance(delta, np.ndarray) else (
        2.0 ** (-float(delta) / forgetting.half_life)
    )


def apply_observations(
    profile: ModelProfile,
    phi: np.ndarray,
    scores: np.ndarray,
    weights: np.ndarray,
    probe_assign: np.ndarray,
    *,
    forgetting: Forgetting | None = None,
    times: np.ndarray | None = None,
    detection: ChangeDetection | None = None,
) -> ModelProfile:
    """A new profile with observations ``(phi (n, K), scores (n,), weights (n,))`` of this member applied.

    ``probe_assign`` is Φ of the probe prompts (to recompute the probe sums). ``times`` (seconds) are needed for
    ``Forgetting(unit="seconds")``; observations are applied in order for ``unit="observations"``. With
    ``detection`` each observation is first tested against the Ψ in force (see :class:`ChangeDetection`).
    """
    k = phi.shape[1]
    ls = np.zeros(k) if profile.live_sums is None else np.asarray(profile.live_sums, dtype=float)
    lc = np.zeros(k) if profile.live_counts is None else np.asarray(profile.live_counts, dtype=float)
    l_total, w_total = profile.live_score_sum, profile.live_weight
    probe_scale = profile.probe_scale
    updated_at = profile.live_updated_at
    if forgetting is None:
        old, each = 1.0, np.ones(len(scores))
    elif forgetting.unit == "observations":
        after = np.cumsum(weights[::-1])[::-1] - weights  # weight of the observations that come after each one
        old, each = float(_decay(float(weights.sum()), forgetting)), np.asarray(_decay(after, forgetting))
    else:
        if times is None:
            raise ValueError("forgetting with a half-life in seconds needs the observations' times")
        newest = float(times.max()) if updated_at is None else max(float(times.max()), updated_at)
        old = 1.0 if updated_at is None else float(_decay(newest - updated_at, forgetting))
        each = np.asarray(_decay(newest - times, forgetting))
        updated_at = newest
    if forgetting is not None and forgetting.decay_probes:
        probe_scale = max(probe_scale * old, 1e-12)  # kept > 0 (a saved file checks it)
    if times is not None and len(times):
        updated_at = float(times.max()) if updated_at is None else max(float(times.max()), updated_at)
    ew = each * weights
    n_obs = profile.n_observations + len(scores)
    if detection is not None:
        return _detect_and_apply(profile, phi, scores, weights, ew, probe_assign, detection, old=old,
                                 probe_scale=probe_scale, updated_at=updated_at, times=times)
    ls = ls * old + phi.T @ (ew * scores)
    lc = lc * old + phi.T @ ew
    l_total = l_total * old + float(ew @ scores)
    w_total = w_total * old + float(ew.sum())
    return _recomputed(profile, probe_assign, ls, lc, l_total, w_total, probe_scale,
                       n_obs=n_obs, updated_at=updated_at)


def _detect_and_apply(
    profile: ModelProfile,
    phi: np.ndarray,
    scores: np.ndarray,
    weights: np.ndarray,
    ew: np.ndarray,
    probe_assign: np.ndarray,
    detection: ChangeDetection,
    *,
    old: float,
    probe_scale: float,
    updated_at: float | None,
    times: np.ndarray | None,
) -> ModelProfile:
    """:func:`apply_observations` one observation at a time, with the CUSUM detectors and their resets."""
    k = phi.shape[1]
    ls = old * (np.zeros(k) if profile.live_sums is None else np.asarray(profile.live_sums, dtype=float))
    lc = old * (np.zeros(k) if profile.live_counts is None else np.asarray(profile.live_counts, dtype=float))
    l_total, w_total = profile.live_score_sum * old, profile.live_weight * old
    det = profile.detector if profile.detector is not None and len(profile.detector.stat) == k else (
        DetectorState.empty(k)
    )
    stat = det.stat.astype(float)
    since_s, since_c, since_n = det.since_sums * old, det.since_counts * old, det.since_n.astype(float)
    m_stat = float(det.member_stat)
    mixture = detection.method == "mixture"
    drops = np.asarray(detection.drops, dtype=float)
    n_drops = len(drops)
    sr = (np.asarray(det.sr, dtype=float).copy() if det.sr is not None and det.sr.shape == (k, n_drops)
          else np.zeros((k, n_drops)))
    m_sr = (np.asarray(det.member_sr, dtype=float).copy()
            if det.member_sr is not None and det.member_sr.shape == (n_drops,) else np.zeros(n_drops))
    m_s = old * (np.zeros(k) if det.member_since_sums is None else det.member_since_sums)
    m_c = old * (np.zeros(k) if det.member_since_counts is None else det.member_since_counts)
    m_n = det.member_since_n
    pcs = np.ones(k) if profile.probe_cluster_scale is None else np.asarray(profile.probe_cluster_scale, float)
    pcs_changed = profile.probe_cluster_scale is not None
    n_changes, events = det.n_changes, list(det.events)
    h = detection.threshold
    keep = detection.kept_weight(profile.shrinkage)
    counts = np.asarray(profile.cluster_counts, dtype=float)
    alpha = float(profile.shrinkage)

    def null_mean(psi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # the lower end of what the evidence supports: Ψ less `uncertainty` posterior standard deviations —
        # per cluster for the cluster detectors, of the pooled mean for the member detector
        d = probe_scale * pcs * counts + lc + alpha
        u = detection.uncertainty
        per_cluster = np.asarray(psi - u * np.sqrt(psi * (1.0 - psi) / (d + 1.0)))
        mean = float(np.clip((psi * d).sum() / d.sum(), 0.0, 1.0))
        return per_cluster, np.asarray(psi - u * np.sqrt(mean * (1.0 - mean) / (d.sum() + 1.0)))

    known = ~np.isnan(profile.probe_scores)
    probe_sums = probe_assign[known].T @ profile.probe_scores[known]
    prior = None if profile.prior_quality is None else (profile.prior_quality, profile.prior_weight)

    def probe_totals() -> tuple[float, float]:
        a, sc = probe_assign[known], profile.probe_scores[known]
        if not pcs_changed:
            return float(sc.sum()), float(known.sum())
        row = a.sum(axis=1)
        v = np.where(row > 0, (a @ pcs) / np.where(row > 0, row, 1.0), 1.0)
        return float(v @ sc), float(v.sum())

    totals = probe_totals()

    def current_psi() -> np.ndarray:
        # Ψ from the evidence so far (the same estimator as _recomputed), so that every observation is tested
        # against the prediction in force when it arrived, however the observations are batched
        m = overall_mean(totals[0], totals[1], _net_of_offsets(l_total, lc, profile.prior_offsets, w_total), w_total,
                         prior, probe_scale)
        return shrunk_quality(probe_sums, counts, m, alpha, probe_scale=probe_scale * pcs, live_sums=ls,
                              live_counts=lc, target_offsets=profile.prior_offsets)

    n0 = profile.n_observations
    for i in range(len(scores)):
        f, s, w, e = phi[i], float(scores[i]), float(weights[i]), float(ew[i])
        q_null, q_null_m = null_mean(current_psi())
        ls += e * s * f
        lc += e * f
        l_total += e * s
        w_total += e
        # the CUSUM at `shift` (its last zero estimates the change point, for both methods)
        llr = float(log_likelihood_ratio(np.asarray(s), np.asarray(f @ q_null), detection.shift))
        llr_m = float(log_likelihood_ratio(np.asarray(s), np.asarray(f @ q_null_m), detection.shift))
        if mixture:
            llr_j = drop_log_likelihood_ratios(s, float(f @ q_null), drops)
            llr_mj = drop_log_likelihood_ratios(s, float(f @ q_null_m), drops)
        if detection.cluster_level:
            touched = f > 0
            if mixture:
                # Shiryaev–Roberts per assumed drop: R ← (Φ_k + R)·e^{w·Φ_k·ℓ}; a new change point enters with
                # the observation's cluster weight, so the family's alarms stay ≤ one per A observations
                ft = f[touched][:, None]
                sr[touched] = (ft + sr[touched]) * np.exp(np.minimum(w * ft * llr_j[None, :], 700.0))
            stat[touched] += w * f[touched] * llr
            zero = touched & (stat <= 0.0)
            stat[zero] = 0.0
            since_s[zero] = since_c[zero] = since_n[zero] = 0.0
            grow = touched & ~zero
            since_s[grow] += e * s * f[grow]
            since_c[grow] += e * f[grow]
            since_n[grow] += 1
        if detection.member_level:
            if mixture:
                m_sr = (1.0 + m_sr) * np.exp(np.minimum(w * llr_mj, 700.0))
            m_stat += w * llr_m
            if m_stat <= 0.0:
                m_stat, m_n = 0.0, 0
                m_s, m_c = np.zeros(k), np.zeros(k)
            else:
                m_s, m_c, m_n = m_s + e * s * f, m_c + e * f, m_n + 1
        # the alarm statistics: the CUSUMs themselves, or ln of the mixture of Shiryaev–Roberts statistics
        m_alarm = math.log(max(float(m_sr.mean()), 1e-300)) if mixture else m_stat
        c_alarm = np.log(np.maximum(sr.mean(axis=1), 1e-300)) if mixture else stat
        member_fires = detection.member_level and m_alarm > h
        cluster_fires = detection.cluster_level and bool((c_alarm > h).any())
        if member_fires and cluster_fires and float(m_c[c_alarm <= h].sum()) <= 1e-12:
            member_fires = False  # all the evidence since the change point lies in the clusters that fired: the
            # narrower explanation (a change in those clusters) is the one acted on
        if member_fires:
            level, hit = "member", np.ones(k, dtype=bool)
            post_s, post_c, back, value = m_s, m_c, m_n, m_alarm
        elif cluster_fires:
            level, hit = "cluster", c_alarm > h
            post_s, post_c, back, value = since_s, since_c, int(since_n[hit].max()), float(c_alarm[hit].max())
        else:
            continue
        # a change: the stale evidence in the hit clusters is scaled down to `keep` pseudo-observations
        stale_s = np.clip(ls - post_s, 0.0, None)
        stale_c = np.clip(lc - post_c, 0.0, None)
        stale_w = probe_scale * pcs * counts + stale_c
        factor = np.where(hit & (stale_w > keep), keep / np.where(stale_w > 0, stale_w, 1.0), 1.0)
        pcs = np.maximum(pcs * factor, 1e-9)  # kept > 0 (a saved file checks it)
        pcs_changed = True
        ls = np.where(hit, stale_s * factor + np.minimum(post_s, ls), ls)
        lc = np.where(hit, stale_c * factor + np.minimum(post_c, lc), lc)
        w_total = max(w_total - float(((1.0 - factor) * stale_c).sum()), 0.0)
        l_total = min(max(l_total - float(((1.0 - factor) * stale_s).sum()), 0.0), w_total)
        event = ChangeEvent(
            member=profile.name, level=level, clusters=tuple(int(c) for c in np.flatnonzero(hit)),
            at_observation=n0 + i + 1, statistic=float(value), change_point=int(back),
            time=None if times is None else float(times[i]),
        )
        events = [*events, event][-_MAX_EVENTS:]
        n_changes += 1
        logger.warning(
            "change detected in member %r (%s level, clusters %s) at its observation %d: %s statistic %.2f > "
            "%.2f nats, change point %d observations back; stale evidence there kept as %.3g pseudo-observations",
            profile.name, level, list(event.clusters), event.at_observation,
            "mixture (Shiryaev-Roberts)" if mixture else "CUSUM", value, h, back, keep,
        )
        if level == "member":
            stat[:] = 0.0
            since_s[:] = since_c[:] = since_n[:] = 0.0
            m_stat, m_n, m_s, m_c = 0.0, 0, np.zeros(k), np.zeros(k)
            sr[:] = 0.0
            m_sr[:] = 0.0
        else:
            stat[hit] = 0.0
            since_s[hit] = since_c[hit] = since_n[hit] = 0.0
            sr[hit] = 0.0
        totals = probe_totals()
    detector = DetectorState(
        stat=stat, since_sums=since_s, since_counts=since_c, since_n=since_n, member_stat=m_stat,
        member_since_sums=m_s, member_since_counts=m_c, member_since_n=int(m_n), n_changes=n_changes,
        events=tuple(events), sr=sr if mixture else None, member_sr=m_sr if mixture else None,
    )
    return _recomputed(profile, probe_assign, ls, lc, l_total, w_total, probe_scale,
                       n_obs=n0 + len(scores), updated_at=updated_at,
                       probe_cluster_scale=pcs if pcs_changed else None, detector=detector)


def _net_of_offsets(score_sum: float, counts: np.ndarray | None, offsets: np.ndarray | None, weight: float) -> float:
    """The live score mass less the expected cluster offsets of where it was observed (Σ w·(s − o_k)), so that a
    cold member's mean m is its level net of the pool's cluster offsets: feedback from the clusters it is routed to
    (often the easy ones for it) does not raise its prediction everywhere. Kept within [0, weight]."""
    if offsets is None or counts is None:
        return score_sum
    return float(min(max(score_sum - float(np.asarray(offsets, dtype=float) @ counts), 0.0), weight))


_KEEP: object = object()


def _recomputed(
    profile: ModelProfile,
    probe_assign: np.ndarray,
    live_sums: np.ndarray | None,
    live_counts: np.ndarray | None,
    live_score_sum: float,
    live_weight: float,
    probe_scale: float,
    *,
    n_obs: int,
    updated_at: float | None,
    probe_cluster_scale: np.ndarray | None | object = _KEEP,
    detector: DetectorState | None | object = _KEEP,
) -> ModelProfile:
    pcs = profile.probe_cluster_scale if probe_cluster_scale is _KEEP else probe_cluster_scale
    det = profile.detector if detector is _KEEP else detector
    known = ~np.isnan(profile.probe_scores)
    s = profile.probe_scores[known]
    a = probe_assign[known]
    probe_sums = a.T @ s
    if pcs is None:
        probe_total, n_known = float(s.sum()), float(known.sum())
        scale: float | np.ndarray = probe_scale
    else:
        pcs = np.asarray(pcs, dtype=float)
        row = a.sum(axis=1)
        v = np.where(row > 0, (a @ pcs) / np.where(row > 0, row, 1.0), 1.0)  # each probe's Φ-weighted ρ_k
        probe_total, n_known = float(v @ s), float(v.sum())
        scale = probe_scale * pcs
    prior = None if profile.prior_quality is None else (profile.prior_quality, profile.prior_weight)
    m = overall_mean(probe_total, n_known,
                     _net_of_offsets(live_score_sum, live_counts, profile.prior_offsets, live_weight), live_weight,
                     prior, probe_scale)
    if math.isnan(m):  # no evidence and no prior: cannot happen for a validated member, kept as a guard
        raise ValueError(f"model {profile.name!r}: no evidence left to estimate its quality")
    psi = shrunk_quality(probe_sums, profile.cluster_counts, m, profile.shrinkage, probe_scale=scale,
                         live_sums=live_sums, live_counts=live_counts, target_offsets=profile.prior_offsets)
    return dataclasses.replace(
        profile, cluster_quality=psi, overall_quality=m, live_sums=live_sums, live_counts=live_counts,
        live_score_sum=float(live_score_sum), live_weight=float(live_weight), n_observations=n_obs,
        live_updated_at=updated_at, probe_scale=float(probe_scale),
        probe_cluster_scale=pcs,
        detector=det,  # type: ignore[arg-type]
    )


def reset_live(profile: ModelProfile, probe_assign: np.ndarray) -> ModelProfile:
    """The profile with all live evidence dropped (and probe evidence whole again): its probe-only Ψ.

    Also forgets the change detector's state (its statistics describe the evidence just dropped) but not the count
    of changes detected, nor their events."""
    det = profile.detector
    kept = None if det is None else dataclasses.replace(
        DetectorState.empty(len(det.stat)), n_changes=det.n_changes, events=det.events
    )
    return _recomputed(profile, probe_assign, None, None, 0.0, 0.0, 1.0, n_obs=0, updated_at=None,
                       probe_cluster_scale=None, detector=kept)


class UnknownCallError(KeyError):
    """Feedback names a call this adapter does not remember (never served here, or forgotten: the log is bounded)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "unknown call"


class FeedbackLog:
    """What feedback on a served call needs: call id → (routing embedding, member that answered), bounded LRU.

    Adapters remember each served call under its call id (in the response's ``uniroute`` metadata) and any alias
    such as LangChain's run id; :meth:`record` turns ``(call id, score)`` into :meth:`UniRouter.observe
    <uniroute_core.router.UniRouter.observe>` on the very embedding the call was routed on (no re-embedding). Only
    the ``max_calls`` most recent calls are kept (≈ 1.5 kB each for a 384-d embedding), so memory stays bounded in a
    long-running service; feedback on an older call is an :class:`UnknownCallError`. Thread-safe.
    """

    def __init__(self, max_calls: int = 10_000) -> None:
        if isinstance(max_calls, bool) or not isinstance(max_calls, int) or max_calls < 1:
            raise ValueError(f"max_calls must be an integer >= 1, got {max_calls!r}")
        self.max_calls = max_calls
        self._calls: OrderedDict[str, tuple[np.ndarray, str]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._calls)

    def remember(self, keys: list[str], embedding: np.ndarray, member: str) -> None:
        """Note that the call known under ``keys`` (call id, run id, ...) was routed on ``embedding`` and answered
        by ``member``."""
        entry = (np.asarray(embedding, dtype=float).reshape(-1), member)
        with self._lock:
            for key in keys:
                self._calls.pop(key, None)
                self._calls[key] = entry
            while len(self._calls) > self.max_calls:
                self._calls.popitem(last=False)

    def lookup(self, key: str) -> tuple[np.ndarray, str]:
        """``(embedding, member)`` of a remembered call; :class:`UnknownCallError` naming the id otherwise."""
        with self._lock:
            entry = self._calls.get(key)
        if entry is None:
            raise UnknownCallError(
                f"no served call with id {key!r} is known here: feedback needs the response itself, its "
                f"uniroute call_id or its run id, from a call this model served (the {self.max_calls} most recent "
                "calls are remembered)"
            )
        return entry

    def record(self, router: UniRouter, key: str, score: object, *, weight: float = 1.0) -> ModelProfile | None:
        """Feedback ``score`` in [0, 1] on the remembered call ``key``: :meth:`UniRouter.observe` of its member.

        The score is checked first (a ``ValueError`` / ``TypeError`` naming the member). Returns the member's new
        profile, or ``None`` when the member has left the pool since (ignored with a
        :class:`~uniroute_core.router.FeedbackWarning`).
        """
        embedding, member = self.lookup(key)
        value = validate_feedback_score(member, score)
        return router.observe(embedding, member, value, weight=weight)
