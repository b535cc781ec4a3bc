"""Baseline routers of the method note, as predicted-quality matrices fed to the one routing rule.

Every baseline except the random router produces a ``(n_prompts, M)`` matrix of predicted quality (1 − expected
loss) for the pool being routed; :func:`~uniroute_core.evaluation.metrics.router_curve` then applies the rule of
:mod:`uniroute_core.rule` over every λ, so all methods are compared under the same rule:

* :func:`cluster_quality` — UniRoute itself: Φ(x)ᵀΨ(h) for any fitted cluster map (K-Means, LearnedMap).
* :func:`zero_router_quality` — ZeroRouter (K = 1): each member's mean probe score, the same for every prompt.
* :func:`knn_quality` — KNN: mean score of each member over the k probe prompts nearest to the prompt (cosine).
* :func:`clairvoyant_quality` — the upper bound: a per-member logistic regression on embeddings trained with that
  member's scores on the full training prompts (information an unseen LLM does not give us).
* :func:`random_router_curve` — sanity check: each prompt goes at random to the cheapest member or to the member
  most accurate on the probes, the share sent to the latter swept from 0 to 1 (every cost level matched).
* :func:`single_model_points` — each member alone: a (cost, quality) point.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..cluster_map import ClusterMap
from ..profile import build_profile
from .metrics import DeferralCurve, deferral_curve

__all__ = [
    "probe_quality_matrix",
    "cluster_quality",
    "zero_router_quality",
    "knn_neighbours",
    "knn_quality",
    "clairvoyant_quality",
    "random_router_curve",
    "single_model_points",
]


def probe_quality_matrix(probe_assign: np.ndarray, probe_scores: np.ndarray, shrinkage: float) -> np.ndarray:
    """Ψ of every member as an ``(M, K)`` quality matrix, via :func:`~uniroute_core.profile.build_profile`.

    ``probe_assign`` is Φ on the probe prompts ``(P, K)``; ``probe_scores`` the members' scores there ``(P, M)``.
    """
    return np.stack(
        [
            build_profile(str(j), 0.0, probe_scores[:, j], probe_assign, shrinkage).cluster_quality
            for j in range(probe_scores.shape[1])
        ]
    )


def cluster_quality(
    cluster_map: ClusterMap,
    probe_embeddings: np.ndarray,
    probe_scores: np.ndarray,
    query_embeddings: np.ndarray,
    shrinkage: float,
) -> np.ndarray:
    """UniRoute's prediction Φ(x)ᵀΨ(h) ``(n, M)``: members profiled on the probes only, no training on them.

    The map is bound to the probes first, as ``UniRouter.set_probes`` does (a no-op except for maps whose cells are
    the probes)."""
    bound = cluster_map.bind_probes(probe_embeddings)
    psi = probe_quality_matrix(bound.assign_probes(probe_embeddings), probe_scores, shrinkage)
    return bound.assign(query_embeddings) @ psi.T


def zero_router_quality(probe_scores: np.ndarray, n_queries: int) -> np.ndarray:
    """ZeroRouter: every prompt gets each member's mean probe score (NaN-aware) — the prompt is ignored."""
    return np.repeat(np.nanmean(np.asarray(probe_scores, dtype=float), axis=0)[None, :], n_queries, axis=0)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def knn_neighbours(probe_embeddings: np.ndarray, query_embeddings: np.ndarray, k_max: int) -> np.ndarray:
    """Indices ``(n, k_max)`` of each query's nearest probe prompts by cosine similarity, nearest first."""
    k_max = int(min(k_max, len(probe_embeddings)))
    if k_max < 1:
        raise ValueError("k must be at least 1 and there must be at least one probe prompt")
    sim = _unit_rows(query_embeddings) @ _unit_rows(probe_embeddings).T
    part = np.argpartition(-sim, k_max - 1, axis=1)[:, :k_max]
    order = np.argsort(-np.take_along_axis(sim, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def knn_quality(neighbours: np.ndarray, probe_scores: np.ndarray, k: int) -> np.ndarray:
    """KNN prediction ``(n, M)``: each member's mean score over the ``k`` nearest probes (NaN scores skipped).

    ``neighbours`` comes from :func:`knn_neighbours` (computed once for the largest k of a grid).
    """
    if k < 1 or k > neighbours.shape[1]:
        raise ValueError(f"k={k} must be between 1 and the {neighbours.shape[1]} neighbours computed")
    s = np.asarray(probe_scores, dtype=float)[neighbours[:, :k]]  # (n, k, M)
    known = ~np.isnan(s)
    total = np.where(known, s, 0.0).sum(axis=1)
    count = known.sum(axis=1)
    fallback = np.nanmean(probe_scores, axis=0)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), fallback)


def _fit_logistic(x: np.ndarray, y: np.ndarray, known: np.ndarray, l2: float, max_iter: int = 100) -> tuple[Any, Any]:
    """Per-column logistic regression with soft targets (columns are independent: the loss is a sum over them)."""
    import torch

    torch.manual_seed(0)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    tk = torch.from_numpy(known.astype(np.float32))
    w = torch.zeros(x.shape[1], y.shape[1], requires_grad=True)
    b = torch.zeros(y.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")
    n_known = tk.sum(0).clamp_min(1.0)

    def closure() -> Any:
        opt.zero_grad()
        bce = torch.nn.functional.binary_cross_entropy_with_logits(tx @ w + b, ty, reduction="none")
        loss = ((bce * tk).sum(0) / n_known).sum() + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def clairvoyant_quality(
    train_embeddings: np.ndarray,
    train_scores: np.ndarray,
    query_embeddings: np.ndarray,
    *,
    l2_grid: Sequence[float] = (0.03, 0.1, 0.3, 1.0, 3.0),
    validation_fraction: float = 0.2,
    seed: int = 0,
) -> np.ndarray:
    """Upper bound ``(n, M)``: a logistic regression per member on standardised embeddings, trained with that member's
    own scores on the training prompts (soft scores are soft BCE targets; NaN = unknown, skipped).

    The L2 strength is chosen from ``l2_grid`` by held-out BCE on a ``validation_fraction`` of the training prompts,
    then the model is refitted on all of them. The members' regressions are independent (the loss is a sum over
    members), so they are fitted together in one LBFGS run for speed.
    """
    import torch

    x = np.asarray(train_embeddings, dtype=np.float32)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xs = ((x - mu) / sd).astype(np.float32)
    xq = ((np.asarray(query_embeddings, dtype=np.float32) - mu) / sd).astype(np.float32)
    s = np.asarray(train_scores, dtype=np.float64)
    known = ~np.isnan(s)
    if not known.any(axis=0).all():
        raise ValueError(
            f"clairvoyant: member columns {np.nonzero(~known.any(axis=0))[0].tolist()} have no known score"
        )
    y = np.where(known, s, 0.0).astype(np.float32)
    perm = np.random.default_rng(seed).permutation(len(xs))
    n_val = int(round(validation_fraction * len(xs)))
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        best_l2 = l2_grid[0]
        if len(l2_grid) > 1 and n_val >= 2:
            va, tr = perm[:n_val], perm[n_val:]
            losses = []
            for l2 in l2_grid:
                w, b = _fit_logistic(xs[tr], y[tr], known[tr], l2)
                logits = torch.from_numpy(xs[va]) @ w + b
                bce = torch.nn.functional.binary_cross_entropy_with_logits(
                    logits, torch.from_numpy(y[va]), reduction="none"
                )
                kv = torch.from_numpy(known[va].astype(np.float32))
                losses.append(float((bce * kv).sum() / kv.sum().clamp_min(1.0)))
            best_l2 = l2_grid[int(np.argmin(losses))]
        w, b = _fit_logistic(xs, y, known, best_l2)
        return torch.sigmoid(torch.from_numpy(xq) @ w + b).numpy().astype(np.float64)
    finally:
        torch.set_num_threads(prev)


def random_router_curve(
    true_quality: np.ndarray,
    costs: np.ndarray,
    probe_scores: np.ndarray,
    rng: np.random.Generator,
    n_points: int = 21,
) -> DeferralCurve:
    """Random routing at every cost level: each prompt goes to the member most accurate on the probes with
    probability t, else to the cheapest member, for t on an even grid of ``n_points`` in [0, 1].

    The point at t has mean cost ≈ (1 − t)·c_cheap + t·c_best: a prompt-blind mix any router should beat.
    """
    true_quality = np.asarray(true_quality, dtype=float)
    costs = np.asarray(costs, dtype=float)
    cheap = int(np.argmin(costs))
    best = int(np.nanargmax(np.nanmean(probe_scores, axis=0)))
    n = len(true_quality)
    pts_c, pts_q = [], []
    for t in np.linspace(0.0, 1.0, n_points):
        to_best = rng.random(n) < t
        pick = np.where(to_best, best, cheap)
        pts_c.append(costs[pick].mean())
        pts_q.append(float(np.nanmean(true_quality[np.arange(n), pick])))  # NaN = unknown
    return deferral_curve(np.array(pts_c), np.array(pts_q), costs.min(), costs.max())


def single_model_points(true_quality: np.ndarray, costs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each member alone: its cost and its mean quality on these prompts (``(M,)`` each)."""
    return np.asarray(costs, dtype=float), np.nanmean(np.asarray(true_quality, dtype=float), axis=0)
