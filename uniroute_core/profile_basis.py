"""Low-rank shrinkage targets for Ψ: what the training LLMs say about how cluster qualities vary *together*.

UniRoute profiles a new LLM on the probes: Ψ_k = (Σ_{probes in k} s + α·t_k) / (n_k + α), shrunk towards a target
t. The paper's target is the member's own mean (t_k = m), which treats every cluster as unrelated to the others. But
LLMs' cluster profiles are far from arbitrary: a model good at one maths cluster is good at the other maths clusters,
a code-tuned model is strong on every code cluster, and so on. The training LLMs' per-cluster accuracies (``J × K``,
from the training matrix, precise because the training prompts are many) expose those patterns as a few directions.

:class:`ProfileBasis` keeps the top ``r`` of them (right singular vectors of the training LLMs' cluster means, each
model's mean removed). A member's target is then a smooth profile fitted to its *own* probe answers in that
``r``-dimensional family — weighted least squares of its per-cluster probe means on ``[1, V]`` with weights n_k (its
probe counts) and a small ridge — so the target already carries what the probes say about the member's strengths and
weaknesses, and each cluster's own evidence only corrects it. Shrinking hard towards such a target (α of tens to
hundreds) lets fine clusters be used without their per-cluster noise: on MMLU-Pro this is what lifts the product
above a tuned KNN (README, docs/results.md).

The property UniRoute relies on is kept: a new LLM is still added from its probe scores alone (the basis is fixed at
fit time; fitting a member's target is a ``(1 + r)``-variable least squares), and routing still costs O(K·M) — Ψ is
computed once per member, exactly as before. The rank (0 = the paper's flat target) and α are chosen by validation
on the training LLMs (:mod:`uniroute_core.autoselect`); the target is stored per member as its
:attr:`~uniroute_core.profile.ModelProfile.prior_offsets`, so feedback, forgetting and persistence treat it like a
cold member's pool offsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_RIDGE",
    "ProfileBasis",
    "basis_offsets",
    "cluster_means",
    "fit_profile_basis",
    "profile_components",
    "target_offsets",
]

DEFAULT_RIDGE = 1.0
"""Ridge on a member's ``r`` profile coefficients, in probe answers: it keeps a member with few answered probes (or
answers concentrated in a few clusters) from being fitted a wild profile, and is negligible against ~1,000 probes."""


@dataclass(frozen=True)
class ProfileBasis:
    """``r`` directions along which LLMs' cluster qualities vary, and how to fit a member's target in them.

    Attributes:
        components: ``(r, K)`` orthonormal rows (r ≥ 1), one weight per cluster of the router's map.
        ridge: ridge on the fitted coefficients, in probe answers (:data:`DEFAULT_RIDGE`).
    """

    components: np.ndarray
    ridge: float = DEFAULT_RIDGE

    def __post_init__(self) -> None:
        v = np.asarray(self.components, dtype=float)
        if v.ndim != 2 or v.shape[0] < 1 or v.shape[1] < 2:
            raise ValueError(f"profile basis components must be (r >= 1, K >= 2), got shape {v.shape}")
        if not np.isfinite(v).all():
            raise ValueError("profile basis components must be finite")
        if not (np.isfinite(self.ridge) and self.ridge >= 0):
            raise ValueError(f"profile basis ridge must be a finite number >= 0, got {self.ridge}")
        v = v.copy()
        v.setflags(write=False)
        object.__setattr__(self, "components", v)

    @property
    def rank(self) -> int:
        return int(self.components.shape[0])

    @property
    def n_clusters(self) -> int:
        return int(self.components.shape[1])

    def offsets(self, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """``(K,)`` a member's target offsets o_k (count-weighted mean 0) from its per-cluster probe sums and counts.

        The member's target is then m + o_k (:func:`~uniroute_core.profile.shrunk_quality` with ``target_offsets``).
        """
        return target_offsets(sums, counts, self.components, self.ridge)


def target_offsets(sums: np.ndarray, counts: np.ndarray, components: np.ndarray, ridge: float) -> np.ndarray:
    """The fit behind :meth:`ProfileBasis.offsets`, for one member or many at once.

    ``sums`` / ``counts``: ``(K,)`` or ``(m, K)`` probe sums and counts per cluster; ``components``: ``(r, K)``, or
    ``(m, r, K)`` one basis per member (the selection's leave-one-out bases). Weighted least squares of the cluster
    means on ``[1, components]`` (weights = counts, ridge on the component coefficients), returned as offsets from
    the count-weighted mean of the fit. r = 0, or a member with no answer, gives zeros.
    """
    sums = np.asarray(sums, dtype=float)
    n = np.asarray(counts, dtype=float)
    comps = np.asarray(components, dtype=float)
    single = sums.ndim == 1
    sums, n = np.atleast_2d(sums), np.atleast_2d(n)
    m, k = n.shape
    r = comps.shape[-2]
    out = np.zeros((m, k))
    total = n.sum(axis=1)
    live = total > 0
    if r == 0 or not live.any():
        return out[0] if single else out
    comps = np.broadcast_to(comps, (m, r, k))[live]
    design = np.concatenate([np.ones((len(comps), k, 1)), np.swapaxes(comps, 1, 2)], axis=2)  # (m', K, 1 + r)
    nl = n[live]
    gram = np.einsum("mkp,mk,mkq->mpq", design, nl, design)
    gram[:, 1:, 1:] += ridge * np.eye(r)
    rhs = np.einsum("mkp,mk->mp", design, sums[live])  # Σ_k n_k·mean_k·x_k = Σ_k sum_k·x_k
    try:
        coef = np.linalg.solve(gram, rhs[:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:  # ridge 0 and too few answered clusters: the minimum-norm fit
        coef = np.stack([np.linalg.lstsq(g, b, rcond=None)[0] for g, b in zip(gram, rhs)])
    fitted = np.einsum("mkp,mp->mk", design, coef)
    out[live] = fitted - (np.einsum("mk,mk->m", nl, fitted) / total[live])[:, None]
    return out[0] if single else out


def cluster_means(assign: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``(J, K)`` each model's mean score per cluster (Φ-weighted, NaN = unknown); a cluster where a model has no
    known score gets that model's overall mean (it says nothing about how the model varies across clusters)."""
    a = np.asarray(assign, dtype=float)
    s = np.asarray(scores, dtype=float)
    known = ~np.isnan(s)
    s0 = np.where(known, s, 0.0)
    counts = known.T.astype(float) @ a
    sums = s0.T @ a
    overall = s0.sum(axis=0) / np.maximum(known.sum(axis=0), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts > 0, sums / np.where(counts > 0, counts, 1.0), overall[:, None])


def profile_components(means: np.ndarray, rank: int) -> np.ndarray:
    """``(r', K)`` the top right singular vectors of the models' cluster means, each model's own mean removed
    (r' = min(rank, J, K − 1); ``(0, K)`` when nothing is left)."""
    m = np.asarray(means, dtype=float)
    r = int(min(rank, m.shape[0], m.shape[1] - 1))
    if r < 1:
        return np.zeros((0, m.shape[1]))
    centred = m - m.mean(axis=1, keepdims=True)
    vt = np.linalg.svd(centred, full_matrices=False)[2]
    return np.asarray(vt[:r])


def fit_profile_basis(
    assign: np.ndarray, scores: np.ndarray, rank: int, ridge: float = DEFAULT_RIDGE
) -> ProfileBasis | None:
    """The :class:`ProfileBasis` of rank ``rank`` of training LLMs' ``scores`` ``(n, J)`` on prompts with cluster
    assignments ``assign`` ``(n, K)``; ``None`` for rank 0 or when the data leave no direction (one cluster, ...)."""
    if not isinstance(rank, (int, np.integer)) or isinstance(rank, bool) or rank < 0:
        raise ValueError(f"profile rank must be an integer >= 0, got {rank!r}")
    if rank == 0:
        return None
    v = profile_components(cluster_means(assign, scores), int(rank))
    return ProfileBasis(v, ridge) if len(v) else None


def basis_offsets(basis: ProfileBasis | None, scores: np.ndarray, assign: np.ndarray | None) -> np.ndarray | None:
    """A member's target offsets from its probe ``scores`` ``(P,)`` (NaN = unanswered) and the probes' Φ
    ``(P, K)``; ``None`` without a basis or without an answered probe (a cold member keeps the pool's offsets)."""
    if basis is None or assign is None:
        return None
    s = np.asarray(scores, dtype=float)
    known = ~np.isnan(s)
    if not known.any():
        return None
    a = np.asarray(assign, dtype=float)[known]
    return basis.offsets(a.T @ s[known], a.sum(axis=0))
