"""Build a ready router from a routing-data folder or from a list of prompts (``uniroute build`` and the pretrained
router's build script use this).

From routing data (prompts × models with scores): a stratified probe set is drawn (with the folder's reference
answers and a grader when there are any), K and the shrinkage α are chosen by validation (the recorded models are
profiled on the probes and route held-out prompts; the (K, α) with the best mean Area under the deferral curve
wins, ZeroRouter K = 1 included), the cluster map is fitted on every non-probe prompt, and the recorded models can be
added as members from their recorded probe scores.

From prompts alone (no scores): K cannot be validated, so it is the method note's rule of thumb — about one cluster
per 50 probes (between 1 and 20) unless given — and the probe set has no references: profile members on it with a
judge (``ProbeSet.from_prompts``) or add them with known scores.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cluster_map import KMeansClusterMap
from .data import RoutingData
from .embedding import Embedder, resolve_embedder, validate_texts
from .evaluation.metrics import area, router_curve
from .probes import ProbeSet, _stratified_sample
from .profile import build_profile
from .router import UniRouter

__all__ = [
    "default_budgets",
    "read_prompts_file",
    "describe_router",
    "BuildReport",
    "K_GRID",
    "ALPHA_GRID",
    "select_clusters",
    "build_from_routing_data",
    "build_from_prompts",
    "rule_of_thumb_k",
]

K_GRID = (1, 2, 3, 4, 6, 8, 12, 16, 20)
"""K candidates for validation (those leaving fewer than ~15 probes per cluster on average are skipped)."""
ALPHA_GRID = (0.0, 2.0, 10.0)
"""Shrinkage candidates (pseudo-probes toward a member's overall accuracy)."""
MIN_PROBES_PER_CLUSTER = 15


@dataclass
class BuildReport:
    """How a router was built: the chosen K and α and, when validated, the mean Area of every candidate."""

    n_clusters: int
    shrinkage: float
    n_probes: int
    n_fit: int
    validation: dict[tuple[int, float], float] = field(default_factory=dict)
    wins_over_zero: int | None = None
    repeats: int = 0
    members: list[str] = field(default_factory=list)

    def table(self) -> str:
        """The validation table in Markdown (empty when K was not validated)."""
        if not self.validation:
            return ""
        ks = sorted({k for k, _ in self.validation})
        alphas = sorted({a for _, a in self.validation})
        lines = ["| K | " + " | ".join(f"α={a:g}" for a in alphas) + " |", "|---|" + "---|" * len(alphas)]
        for k in ks:
            lines.append(f"| {k} | " + " | ".join(f"{self.validation[(k, a)]:.4f}" for a in alphas) + " |")
        return "\n".join(lines)


def rule_of_thumb_k(n_probes: int) -> int:
    """About one cluster per 50 probes, between 1 and 20 (the method note's upper end of the K range)."""
    return int(min(20, max(1, n_probes // 50)))


def select_clusters(
    embeddings: np.ndarray,
    scores: np.ndarray,
    costs: np.ndarray,
    probe_rows: np.ndarray,
    candidate_rows: np.ndarray,
    *,
    k_grid: Sequence[int] = K_GRID,
    alpha_grid: Sequence[float] = ALPHA_GRID,
    repeats: int = 10,
    pool_size: int = 10,
    seed: int = 0,
) -> tuple[int, float, dict[tuple[int, float], float], int]:
    """Choose (K, α) by validation: each repeat splits ``candidate_rows`` 80/20 into fit / validation prompts, draws a
    random pool of ``pool_size`` recorded models, profiles them on the probes from their recorded ``scores``, routes
    the validation prompts over every λ, and measures the Area. Returns (K, α, mean Area per candidate, wins of the
    chosen candidate over the best K = 1 in the repeats). Ties go to the smaller K, then the smaller α."""
    n_probes = len(probe_rows)
    ks = [k for k in k_grid if k == 1 or n_probes / k >= MIN_PROBES_PER_CLUSTER]
    rng = np.random.default_rng(seed)
    m = scores.shape[1]
    results: dict[tuple[int, float], list[float]] = {(k, a): [] for k in ks for a in alpha_grid}
    probe_scores = scores[probe_rows]
    for _ in range(repeats):
        perm = rng.permutation(candidate_rows)
        n_fit = int(0.8 * len(perm))
        fit_rows, val_rows = perm[:n_fit], perm[n_fit:]
        pool = sorted(rng.choice(m, size=min(pool_size, m), replace=False).tolist())
        for k in ks:
            cmap = KMeansClusterMap(n_clusters=k, seed=seed).fit(embeddings[fit_rows])
            probe_phi, val_phi = cmap.assign(embeddings[probe_rows]), cmap.assign(embeddings[val_rows])
            for a in alpha_grid:
                psi = np.stack(
                    [
                        build_profile(str(j), float(costs[j]), probe_scores[:, j], probe_phi, a).cluster_quality
                        for j in pool
                    ]
                )
                curve = router_curve(val_phi @ psi.T, scores[np.ix_(val_rows, pool)], costs[pool])
                results[(k, a)].append(area(curve))
    means = {key: float(np.mean(v)) for key, v in results.items()}
    best = max(means, key=lambda key: (round(means[key], 6), -key[0], -key[1]))
    zero = np.max([results[(1, a)] for a in alpha_grid], axis=0) if 1 in ks else np.full(repeats, -np.inf)
    wins = int(sum(x > z for x, z in zip(results[best], zero)))
    return best[0], float(best[1]), means, wins


def _unique_rows(prompts: Sequence[str]) -> np.ndarray:
    first: dict[str, int] = {}
    for i, p in enumerate(prompts):
        first.setdefault(p, i)
    return np.array(sorted(first.values()), dtype=np.int64)


def build_from_routing_data(
    data: RoutingData,
    *,
    embedder: Any = None,
    n_clusters: int | str = "auto",
    shrinkage: float | None = None,
    n_probes: int = 300,
    members: str | Sequence[str] = "all",
    grader: str = "multiple_choice",
    repeats: int = 10,
    seed: int = 0,
    show_progress: bool = True,
) -> tuple[UniRouter, BuildReport]:
    """A router from a routing-data folder: probes drawn by category, (K, α) by validation unless given, map fitted
    on the other prompts, and ``members`` (``"all"``, ``"none"`` or names) added from their recorded probe scores.

    The probe set keeps the folder's reference answers and ``grader`` when the folder has a reference column, so new
    members can be profiled on it; otherwise it holds prompts only.
    """
    emb_obj: Embedder = resolve_embedder(embedder)
    unique = _unique_rows(data.prompts)
    if n_probes < 2 or n_probes >= len(unique):
        raise ValueError(f"n_probes must be between 2 and {len(unique) - 1} (distinct prompts), got {n_probes}")
    has_refs = data.references is not None and all((data.references[i] or "").strip() for i in unique)
    probe_rows = unique[_stratified_sample([data.categories[i] for i in unique], n_probes, seed)]
    probe_texts = {data.prompts[i] for i in probe_rows}
    rest = np.array([i for i in unique if data.prompts[i] not in probe_texts], dtype=np.int64)
    refs = data.references
    probes = ProbeSet(
        prompts=tuple(data.prompts[i] for i in probe_rows),
        references=tuple(refs[i] for i in probe_rows) if has_refs and refs is not None else None,
        grader=grader,
        prompt_ids=tuple(data.prompt_ids[i] for i in probe_rows),
    )
    needed = np.concatenate([probe_rows, rest])
    vecs = emb_obj.embed([data.prompts[i] for i in needed], show_progress=show_progress)
    embeddings = np.zeros((data.n_prompts, vecs.shape[1]), dtype=np.float32)
    embeddings[needed] = vecs

    validation: dict[tuple[int, float], float] = {}
    wins = None
    if n_clusters == "auto":
        if data.n_models < 2:
            k, alpha = rule_of_thumb_k(n_probes), 2.0 if shrinkage is None else shrinkage
        else:
            alphas = ALPHA_GRID if shrinkage is None else (float(shrinkage),)
            k, alpha, validation, wins = select_clusters(
                embeddings, data.scores, data.costs, probe_rows, rest, alpha_grid=alphas, repeats=repeats, seed=seed
            )
    else:
        if isinstance(n_clusters, bool) or not isinstance(n_clusters, int) or n_clusters < 1:
            raise ValueError(f"n_clusters must be 'auto' or a positive integer, got {n_clusters!r}")
        k, alpha = n_clusters, 2.0 if shrinkage is None else float(shrinkage)

    router = UniRouter(embedder=emb_obj, n_clusters=k, seed=seed, shrinkage=alpha, show_progress=show_progress)
    router.fit_embeddings(embeddings[rest])
    router.set_probes(probes, embeddings=embeddings[probe_rows])
    names = list(data.models) if members == "all" else [] if members == "none" else list(members)
    for name in names:
        j = data.model_index(name)
        router.add_model(name, float(data.costs[j]), data.scores[probe_rows, j])
    report = BuildReport(
        n_clusters=k,
        shrinkage=alpha,
        n_probes=n_probes,
        n_fit=len(rest),
        validation=validation,
        wins_over_zero=wins,
        repeats=repeats if validation else 0,
        members=names,
    )
    return router, report


def build_from_prompts(
    prompts: Sequence[str],
    *,
    embedder: Any = None,
    n_clusters: int | str = "auto",
    shrinkage: float = 2.0,
    n_probes: int = 300,
    seed: int = 0,
    show_progress: bool = True,
) -> tuple[UniRouter, BuildReport]:
    """A router from unlabelled prompts: ``n_probes`` of them drawn at random as the probe set (no references), the
    cluster map fitted on the rest, K by :func:`rule_of_thumb_k` unless given. No members."""
    texts = validate_texts(prompts)
    unique = _unique_rows(texts)
    if len(unique) < 3:
        raise ValueError(f"need at least 3 distinct prompts to build a router, got {len(unique)}")
    n_probes = min(n_probes, len(unique) - 1)
    rng = np.random.default_rng(seed)
    probe_rows = np.sort(rng.choice(unique, size=n_probes, replace=False))
    probe_set = set(probe_rows.tolist())
    rest = np.array([i for i in unique if i not in probe_set], dtype=np.int64)
    k = rule_of_thumb_k(n_probes) if n_clusters == "auto" else n_clusters
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"n_clusters must be 'auto' or a positive integer, got {n_clusters!r}")
    if k > len(rest):
        raise ValueError(f"cannot fit {k} clusters on {len(rest)} non-probe prompts; lower --n-clusters")
    router = UniRouter(embedder=embedder, n_clusters=k, seed=seed, shrinkage=shrinkage, show_progress=show_progress)
    router.fit([texts[i] for i in rest])
    router.set_probes(ProbeSet(prompts=tuple(texts[i] for i in probe_rows)))
    return router, BuildReport(n_clusters=k, shrinkage=shrinkage, n_probes=n_probes, n_fit=len(rest))


def read_prompts_file(path: Path) -> list[str]:
    """Prompts from a file: ``.txt`` (one per line, blank lines skipped), ``.jsonl`` (a ``prompt`` field per line) or
    ``.csv`` / ``.csv.gz`` (a ``prompt`` column). ``ValueError`` naming the file and line otherwise."""
    name = path.name.lower()
    if not path.is_file():
        raise ValueError(f"prompts file {str(path)!r} does not exist")
    if name.endswith((".csv", ".csv.gz")):
        opener: Any = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            if "prompt" not in (reader.fieldnames or []):
                raise ValueError(f"{path} has no 'prompt' column (columns: {reader.fieldnames})")
            prompts = [row["prompt"] for row in reader if (row["prompt"] or "").strip()]
    elif name.endswith(".jsonl"):
        prompts = []
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} line {line_no} is not JSON: {exc}") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
                raise ValueError(f"{path} line {line_no} has no string 'prompt' field")
            if obj["prompt"].strip():
                prompts.append(obj["prompt"])
    else:
        prompts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"{path} holds no prompts")
    return prompts


def describe_router(router: Any, budgets: list[float]) -> str:
    """A plain-text summary: settings, probes, members (cost, overall quality), per-cluster quality, λ per budget."""
    state = router.state
    cmap = state.cluster_map
    probes = router.probes
    k = cmap.n_clusters_
    lines = [
        f"embedder      {router.embedder.name}",
        f"cluster map   {cmap.kind}, K = {k}, shrinkage {router.shrinkage_:g}",
    ]
    basis = getattr(router, "profile_basis_", None)
    lines.append("Ψ target      " + (
        f"low-rank, rank {basis.rank} (each member's own profile in the training LLMs' directions)"
        if basis is not None else "each member's own mean (the paper's)"
    ))
    if probes is None:
        lines.append("probes        none")
    else:
        grader = "judge" if getattr(probes, "judged", False) else (probes.grader_name or "custom")
        refs = "with references" if probes.references is not None else "no references"
        counts = np.asarray(state.probe_assign).sum(axis=0)
        lines.append(f"probes        {len(probes)} ({refs}, grader {grader}); per cluster: "
                     + " ".join(f"{c:.0f}" for c in counts))
    profiles = router.profiles
    if not profiles:
        lines.append("members       none (add them with add_model, or an adapter's from_models)")
        return "\n".join(lines)
    name_w = max(6, *(len(n) for n in profiles))
    lines += ["", f"{'member':<{name_w}}  {'cost':>9}  {'quality':>7}  probes"]
    for name, p in profiles.items():
        lines.append(f"{name:<{name_w}}  {p.cost:>9g}  {p.overall_quality:>7.3f}  {p.n_probes}")
    lines += ["", "per-cluster quality Ψ (rows: members, columns: clusters 0..K-1)"]
    lines.append(f"{'':<{name_w}}  " + " ".join(f"{c:>5d}" for c in range(k)))
    for name, p in profiles.items():
        lines.append(f"{name:<{name_w}}  " + " ".join(f"{q:>5.2f}" for q in p.cluster_quality))
    best = np.array([p.cluster_quality for p in profiles.values()]).argmax(axis=0)
    names = list(profiles)
    lines.append(f"{'best':<{name_w}}  " + " ".join(f"{names[b][:5]:>5}" for b in best))
    lines += ["", "budget (mean cost per call) → λ, expected on the probe prompts"]
    for b in budgets:
        cal = router.calibration(b, warn=False)
        note = "" if cal.reachable else "  (below the cheapest member: all calls go to it)"
        lines.append(f"  budget {b:>8g}  λ = {cal.lam:.4f}{note}")
    return "\n".join(lines)


def default_budgets(router: Any) -> list[float]:
    """Four budgets spread geometrically between just above the cheapest and just below the dearest member."""
    if not router.models:
        return []
    costs = np.array(list(router.costs.values()), dtype=float)
    low, high = max(costs.min() * 1.1, 1e-9), max(costs.max() * 0.9, costs.min() * 1.1 + 1e-9)
    return sorted({float(f"{c:.3g}") for c in np.geomspace(low, high, 4)})
