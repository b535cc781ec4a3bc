"""Preview a pool change on logged traffic: what a saved router would have cost and scored on prompts with known scores.

``uniroute replay --data DIR --router PATH`` answers "if this router had served these prompts, how often would each
member have been called, what would a call have cost on average, and how good would the answers have been?" — with
no model call at all, because the data folder already records every member's score on every prompt. The same
numbers are given for two single-model policies a user would otherwise pick: *always the most accurate member* (the
member with the best mean score on these prompts) and *always the cheapest member*.

The summary helpers (:func:`summarise_calls`, :func:`format_comparison`) are also what the examples use to print
their tables, so every "accuracy / cost / share of calls" figure in the project is computed one way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data import RoutingData
from ..policy import RoutingPolicy
from ..router import UniRouter

__all__ = [
    "MissingMembersError",
    "PolicyOutcome",
    "ReplayPreview",
    "summarise_calls",
    "single_model_outcome",
    "format_comparison",
    "preview_router",
    "load_router_cached",
]


class MissingMembersError(ValueError):
    """Members of the router have no logged scores in the data folder, so their calls cannot be scored."""


@dataclass(frozen=True)
class PolicyOutcome:
    """What a policy (a router, or "always member X") did on a set of calls.

    Attributes:
        name: the policy's label, e.g. ``"UniRoute (λ=0.12)"`` or ``"always gemini-1.5-pro-002"``.
        n_calls: number of calls.
        mean_quality: mean score (accuracy for 0/1 scores) of the answers whose score is known.
        mean_cost: mean per-call cost, in the members' cost unit.
        share: member → fraction of calls it served (members with no call are omitted), dearest first.
        member_quality: member → mean score on the calls it served (known scores; NaN if none is known).
        n_unscored: calls whose answer has no logged score (a sparse folder): they count in the costs and shares,
            and are left out of the quality means — unknown, never wrong.
    """

    name: str
    n_calls: int
    mean_quality: float
    mean_cost: float
    share: dict[str, float]
    member_quality: dict[str, float]
    n_unscored: int = 0

    @property
    def total_cost(self) -> float:
        """Sum of the calls' costs."""
        return self.mean_cost * self.n_calls


def summarise_calls(
    name: str, members: Sequence[str], qualities: Sequence[float] | np.ndarray, costs: dict[str, float]
) -> PolicyOutcome:
    """Summarise calls where call ``i`` went to ``members[i]`` and scored ``qualities[i]``; ``costs`` is per member.

    A NaN quality is an unscored call (not observed in the logs): excluded from the quality means, counted in
    :attr:`PolicyOutcome.n_unscored`. Raises ``ValueError`` when the lengths differ, there is no call, or a member
    has no cost.
    """
    q = np.asarray(qualities, dtype=float)
    if len(members) != len(q):
        raise ValueError(f"{len(members)} members for {len(q)} qualities: give one member and one quality per call")
    if len(q) == 0:
        raise ValueError(f"policy {name!r} made no call: nothing to summarise")
    unknown = sorted(set(members) - set(costs))
    if unknown:
        raise ValueError(f"members {unknown} have no cost (costs are known for {sorted(costs)})")
    m = np.asarray(members, dtype=object)
    used = sorted(set(members), key=lambda x: (-costs[x], x))
    return PolicyOutcome(
        name=name,
        n_calls=len(q),
        mean_quality=_known_mean(q),
        mean_cost=float(np.mean([costs[x] for x in members])),
        share={x: float((m == x).mean()) for x in used},
        member_quality={x: _known_mean(q[m == x]) for x in used},
        n_unscored=int(np.isnan(q).sum()),
    )


def _known_mean(q: np.ndarray) -> float:
    """Mean of the known (non-NaN) values; NaN when none is known."""
    known = q[~np.isnan(q)]
    return float(known.mean()) if known.size else float("nan")


def single_model_outcome(label: str, member: str, qualities: np.ndarray, cost: float) -> PolicyOutcome:
    """The outcome of sending every call to ``member`` (``qualities`` = its score on each call)."""
    return summarise_calls(label, [member] * len(qualities), qualities, {member: cost})


def format_comparison(
    policies: Sequence[PolicyOutcome], *, reference: PolicyOutcome | None = None, unit: str = ""
) -> str:
    """A plain-text table: mean quality, mean and total cost per policy, and cost relative to ``reference``.

    Below it, the share of calls per member of the first policy (the router), with each member's quality on its calls.
    """
    unit_note = f" ({unit})" if unit else ""
    width = max(len(p.name) for p in policies) + 2
    lines = [f"{'policy':<{width}}{'quality':>9}{'mean cost' + unit_note:>{12 + len(unit_note)}}{'total cost':>13}"
             + ("   cost vs " + reference.name if reference is not None else "")]
    for p in policies:
        rel = ""
        if reference is not None and reference.mean_cost > 0:
            rel = f"   {100.0 * p.mean_cost / reference.mean_cost:6.1f}%"
        lines.append(
            f"{p.name:<{width}}{p.mean_quality:>9.4f}{p.mean_cost:>{12 + len(unit_note)}.3f}{p.total_cost:>13.1f}{rel}"
        )
    first = policies[0]
    lines.append(f"share of calls of {first.name} ({first.n_calls} calls), dearest member first:")
    mw = max(len(x) for x in first.share) + 2
    for member, share in first.share.items():
        lines.append(f"  {member:<{mw}}{100.0 * share:6.1f}%   quality on its calls {first.member_quality[member]:.4f}")
    unscored = [p for p in policies if p.n_unscored]
    if unscored:
        lines.append(
            "calls with no logged score (left out of the quality means, not counted as wrong): "
            + ", ".join(f"{p.name} {p.n_unscored}" for p in unscored)
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class ReplayPreview:
    """The result of :func:`preview_router`.

    Attributes:
        data_name: the data folder's name.
        n_prompts: prompts replayed.
        n_excluded_probes: prompts left out because they are the router's probe prompts (its profiles saw them).
        lam: the λ used; ``mode``: ``"lam"`` or ``"budget"`` (as in :class:`~uniroute_core.router.RouteDecision`).
        budget: the budget asked for, if any.
        router: the router's outcome; ``most_accurate`` / ``cheapest``: the single-member policies.
        ignored_models: models of the data folder that are not in the router (not used).
        cost_unit: the data folder's cost unit (informational; the router's own costs are used).
    """

    data_name: str
    n_prompts: int
    n_excluded_probes: int
    lam: float | None
    mode: str
    budget: float | None
    router: PolicyOutcome
    most_accurate: PolicyOutcome
    cheapest: PolicyOutcome
    ignored_models: tuple[str, ...] = ()
    cost_unit: str = ""

    def format(self) -> str:
        """The human-readable report printed by ``uniroute replay``."""
        how = f"λ={self.lam:.4g}" if self.lam is not None else self.mode
        if self.budget is not None:
            how += f" (calibrated on the probes for a budget of {self.budget:g} per call)"
        head = [
            f"Replay on {self.data_name!r}: {self.n_prompts} logged prompts"
            + (f" ({self.n_excluded_probes} probe prompts left out)" if self.n_excluded_probes else "")
            + f", routing at {how}",
        ]
        if self.ignored_models:
            head.append(f"data models not in the router (ignored): {len(self.ignored_models)}")
        dq = 100.0 * (self.router.mean_quality - self.most_accurate.mean_quality)
        saving = (
            100.0 * (1.0 - self.router.mean_cost / self.most_accurate.mean_cost)
            if self.most_accurate.mean_cost
            else 0.0
        )
        table = format_comparison([self.router, self.most_accurate, self.cheapest], reference=self.most_accurate,
                                  unit=self.cost_unit)
        tail = f"vs always the most accurate: quality {dq:+.2f} points at {saving:.1f}% lower mean cost"
        return "\n".join(head + [table, tail])

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``uniroute replay --json``)."""
        def pol(p: PolicyOutcome) -> dict[str, Any]:
            return {"name": p.name, "n_calls": p.n_calls, "mean_quality": p.mean_quality, "mean_cost": p.mean_cost,
                    "share": p.share, "member_quality": p.member_quality}

        return {"data": self.data_name, "n_prompts": self.n_prompts, "n_excluded_probes": self.n_excluded_probes,
                "lam": self.lam, "mode": self.mode, "budget": self.budget, "router": pol(self.router),
                "most_accurate": pol(self.most_accurate), "cheapest": pol(self.cheapest),
                "ignored_models": list(self.ignored_models)}


def preview_router(
    router: UniRouter,
    data: RoutingData,
    *,
    lam: float | None = None,
    budget: float | None = None,
    policy: RoutingPolicy | None = None,
    exclude_probes: bool = True,
    embeddings: np.ndarray | None = None,
) -> ReplayPreview:
    """Route ``data``'s prompts with ``router`` and score each decision with the logged score of the chosen member.

    Args:
        router: a fitted router with a pool (e.g. ``UniRouter.load(path)``); its members' costs are used.
        data: logged prompts with every member's score (a routing data folder).
        lam / budget: at most one; neither routes as the router does by default (λ = 0, the most accurate
            predicted member). ``budget`` is calibrated on the router's probes, as in :meth:`UniRouter.route`.
        policy: a ready :class:`~uniroute_core.policy.RoutingPolicy` instead of ``lam`` / ``budget`` (it may also
            be "cheapest adequate", ``min_quality``).
        exclude_probes: leave out prompts that are the router's probe prompts (profiles were computed on them,
            so scoring on them would flatter the router).
        embeddings: the prompts' embeddings in ``data`` order (all rows), when already computed.

    Raises:
        MissingMembersError: a member of the router has no scores in ``data`` (the message names them).
        ValueError: ``lam`` and ``budget`` both given, or no prompt left to replay.
    """
    policy = RoutingPolicy.coerce(policy, lam=lam, budget=budget)
    members = router.models
    if not members:
        raise ValueError("the router's pool is empty: add models before previewing it")
    missing = [m for m in members if m not in data.models]
    if missing:
        raise MissingMembersError(
            f"the router's members {missing} have no logged scores in data folder {data.name!r}, so their calls "
            f"cannot be scored; the folder has models {data.models}. Remove them from the router "
            "(router.remove_model(name)) or use a folder that logs them"
        )
    if embeddings is not None and len(embeddings) != data.n_prompts:
        raise ValueError(f"embeddings has {len(embeddings)} rows for {data.n_prompts} prompts in {data.name!r}")
    probe_texts = set(router.probes.prompts) if (exclude_probes and router.probes is not None) else set()
    keep = np.array([i for i, p in enumerate(data.prompts) if p not in probe_texts], dtype=np.int64)
    if keep.size == 0:
        raise ValueError(
            f"no prompt of {data.name!r} is left to replay: all {data.n_prompts} are the router's probe prompts "
            "(pass exclude_probes=False / --include-probes to score on them anyway)"
        )
    logged = data.subset(keep, members)
    emb = None if embeddings is None else np.asarray(embeddings)[keep]
    decisions = router.route(logged.prompts, policy=policy, embeddings=emb)
    costs = router.costs
    col = {m: j for j, m in enumerate(members)}
    chosen = [d.model for d in decisions]
    rows = np.arange(len(chosen))
    quality = logged.scores[rows, [col[m] for m in chosen]]
    lam_used = decisions[0].lam
    mode = decisions[0].mode
    label = f"UniRoute (λ={lam_used:.4g})" if lam_used is not None else "UniRoute"
    routed = summarise_calls(label, chosen, quality, costs)

    with np.errstate(invalid="ignore"):
        mean_scores = np.array([_known_mean(logged.scores[:, j]) for j in range(len(members))])
    mean_scores = np.nan_to_num(mean_scores, nan=-1.0)  # a member with no known score is never "most accurate"
    cost_arr = np.array([costs[m] for m in members])
    best = min(range(len(members)), key=lambda j: (-mean_scores[j], cost_arr[j]))
    cheap = min(range(len(members)), key=lambda j: (cost_arr[j], -mean_scores[j]))
    return ReplayPreview(
        data_name=data.name,
        n_prompts=len(keep),
        n_excluded_probes=data.n_prompts - len(keep),
        lam=lam_used,
        mode=mode,
        budget=policy.budget,
        router=routed,
        most_accurate=single_model_outcome(
            f"always {members[best]}", members[best], logged.scores[:, best], cost_arr[best]
        ),
        cheapest=single_model_outcome(
            f"always {members[cheap]}", members[cheap], logged.scores[:, cheap], cost_arr[cheap]
        ),
        ignored_models=tuple(m for m in data.models if m not in col),
        cost_unit=data.cost_unit,
    )


def load_router_cached(path: str | os.PathLike[str], *, cache: bool = True, show_progress: bool = True) -> UniRouter:
    """``UniRouter.load(path)``, with the saved sentence-transformers embedder behind the on-disk embedding cache.

    Logged prompts are replayed again and again while a pool is tuned; the cache makes every run after the first
    skip the encoder. Routers saved with a custom callable embedder cannot be loaded from the command line (the
    loader says so).
    """
    from ..embedding import CachedEmbedder, default_cache_dir
    from ..persistence import RouterFileError, read_saved_embedder

    folder = Path(path)
    embedder = None
    if cache:
        try:
            saved = read_saved_embedder(folder)
        except RouterFileError:
            saved = None  # let the loader report what is wrong with the directory
        # saved.resolve() follows UniRouter.load's rules: a name read from a file never loads code from elsewhere
        if saved is not None and not saved.is_callable:
            embedder = CachedEmbedder(saved.resolve(), default_cache_dir())
    return UniRouter.load(folder, embedder=embedder, show_progress=show_progress)
