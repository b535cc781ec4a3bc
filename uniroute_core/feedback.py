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

**Exploration** (:class:`Exploration`): on a configurable small share of calls the member is chosen by Thompson
sampling — Ψ is drawn from each cluster's Beta posterior Beta(1 + num_k, 1 + den_k − num_k) with num_k = Ψ_k·den_k
and den_k the evidence behind it plus α — under the same policy, but only among members *no more expensive than the
one the point estimate chose*, so an exploratory call never costs more than the call it replaces and a budget
calibrated for the point estimates still holds. Such decisions say ``exploratory=True``.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from .profile import ModelProfile, overall_mean, shrunk_quality

if TYPE_CHECKING:
    from .router import UniRouter

__all__ = [
    "Forgetting",
    "Exploration",
    "FeedbackLog",
    "UnknownCallError",
    "apply_observations",
    "reset_live",
    "validate_feedback_score",
]

ForgettingUnit = Literal["observations", "seconds"]


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
) -> ModelProfile:
    """A new profile with observations ``(phi (n, K), scores (n,), weights (n,))`` of this member applied.

    ``probe_assign`` is Φ of the probe prompts (to recompute the probe sums). ``times`` (seconds) are needed for
    ``Forgetting(unit="seconds")``; observations are applied in order for ``unit="observations"``.
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
    ls = ls * old + phi.T @ (ew * scores)
    lc = lc * old + phi.T @ ew
    l_total = l_total * old + float(ew @ scores)
    w_total = w_total * old + float(ew.sum())
    return _recomputed(profile, probe_assign, ls, lc, l_total, w_total, probe_scale,
                       n_obs=profile.n_observations + len(scores), updated_at=updated_at)


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
) -> ModelProfile:
    known = ~np.isnan(profile.probe_scores)
    s = profile.probe_scores[known]
    probe_sums = probe_assign[known].T @ s
    prior = None if profile.prior_quality is None else (profile.prior_quality, profile.prior_weight)
    m = overall_mean(float(s.sum()), float(known.sum()), live_score_sum, live_weight, prior, probe_scale)
    if math.isnan(m):  # no evidence and no prior: cannot happen for a validated member, kept as a guard
        raise ValueError(f"model {profile.name!r}: no evidence left to estimate its quality")
    psi = shrunk_quality(probe_sums, profile.cluster_counts, m, profile.shrinkage, probe_scale=probe_scale,
                         live_sums=live_sums, live_counts=live_counts)
    return dataclasses.replace(
        profile, cluster_quality=psi, overall_quality=m, live_sums=live_sums, live_counts=live_counts,
        live_score_sum=float(live_score_sum), live_weight=float(live_weight), n_observations=n_obs,
        live_updated_at=updated_at, probe_scale=float(probe_scale),
    )


def reset_live(profile: ModelProfile, probe_assign: np.ndarray) -> ModelProfile:
    """The profile with all live evidence dropped (and probe evidence whole again): its probe-only Ψ."""
    return _recomputed(profile, probe_assign, None, None, 0.0, 0.0, 1.0, n_obs=0, updated_at=None)


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
