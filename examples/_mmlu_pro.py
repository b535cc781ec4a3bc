"""What every example shares: find the MMLU-Pro routing folder, split it, and build a fitted router with probes.

The folder records what 29 real LLMs answered on 10,279 MMLU-Pro questions, so the examples replay real models
offline. It ships inside the package (``uniroute_core/datasets/mmlu_pro``, addressed by the name ``mmlu_pro``);
``--data DIR`` or the ``UNIROUTE_MMLU_PRO`` environment variable point the examples at another folder in the same
format. Prompts are embedded by the real default embedder (all-MiniLM-L6-v2, packaged, offline); its vectors for the
bundled prompts ship with the package too, so no example waits for the encoder.

The split is fixed by ``seed``: 6,000 unlabelled training prompts fit the K-Means cluster map, 500 probe prompts
(with their gold letters) profile each model, and the remaining ~3,600 unique questions are held out — no example
ever scores the router on a prompt it was fitted or profiled on.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uniroute_core import ProbeSet, RoutingData, UniRouter, load_routing_data
from uniroute_core.datasets import resolve_routing_data
from uniroute_core.embedding import CachedEmbedder, default_cache_dir, default_embedder
from uniroute_core.evaluation.preview import PolicyOutcome, format_comparison, single_model_outcome, summarise_calls
from uniroute_core.replay import ReplayBook

DATA_ENV = "UNIROUTE_MMLU_PRO"
DEFAULT_DATA = "mmlu_pro"  # the bundled data set (uniroute_core/datasets/mmlu_pro)

N_TRAIN = 6000
N_PROBES = 500

# Ten real LLMs spanning the cost range (cost = active parameters, billions): the examples' default pool.
POOL = [
    "gemini-1.5-pro-002",
    "Meta-Llama-3_1-70B-Instruct",
    "jamba-1.5-large",
    "Qwen1.5-72B-Chat",
    "DeepSeek-Coder-V2",
    "Mixtral-8x7B-Instruct-v0.1",
    "Meta-Llama-3_1-8B-Instruct",
    "gemini-1.5-flash-002",
    "mathstral-7B",
    "Phi-3-mini-4k-instruct",
]


def parse_args(description: str, extra: list[tuple[str, dict]] | None = None) -> argparse.Namespace:
    """Command-line options every example takes (``--data``, ``--seed``) plus its own ``extra`` ones."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--data", default=None, help=f"MMLU-Pro routing folder (default: ${DATA_ENV} or {DEFAULT_DATA})"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the train / probe / held-out split")
    for flag, kwargs in extra or []:
        parser.add_argument(flag, **kwargs)
    return parser.parse_args()


def quickstart_options(through: str) -> list[tuple[str, dict]]:
    """The quickstarts' own options (``--n`` held-out questions, ``--budgets``), with the same defaults in both so
    that the LangChain and LlamaIndex quickstarts answer the same questions at the same budgets."""
    return [
        ("--n", {"type": int, "default": 400, "help": f"held-out questions to run through {through}"}),
        ("--budgets", {"default": "20,80", "help": "two (or more) mean costs per call, comma-separated"}),
    ]


def data_folder(cli_value: str | None) -> Path:
    """The routing folder to use (the bundled ``mmlu_pro`` by default); exits with a clear message if it is missing."""
    spec = cli_value or os.environ.get(DATA_ENV) or DEFAULT_DATA
    try:
        folder = resolve_routing_data(spec)
    except FileNotFoundError as exc:
        sys.exit(f"MMLU-Pro routing data: {exc}")
    if not (folder / "scores.csv.gz").exists():
        sys.exit(
            f"MMLU-Pro routing data not found at {folder}: pass --data DIR or set {DATA_ENV} to a folder holding "
            "prompts.csv.gz, scores.csv.gz and models.csv"
        )
    return folder


def verdict(label: str, routed: PolicyOutcome, most_accurate: PolicyOutcome) -> str:
    """One line: the router's accuracy gap (points) and mean-cost saving vs always the most accurate member, judged
    against the quickstarts' claim "within 1 point of its accuracy at clearly (≥ 20 %) lower cost"."""
    gap = 100 * (routed.mean_quality - most_accurate.mean_quality)
    saving = 100 * (1 - routed.mean_cost / most_accurate.mean_cost)
    if gap < -1.0:
        judged = "NOT within 1 point of the most accurate member"
    elif saving < 20.0:
        judged = "within 1 point but the saving is small"
    else:
        judged = "within 1 point at clearly lower cost"
    return f"  {label}: {gap:+.2f} points at {saving:.1f}% lower cost — {judged}"


@dataclass
class Setup:
    """The data, its replay book, the split, and a fitted router with probes but no members yet."""

    data: RoutingData
    book: ReplayBook
    router: UniRouter
    embeddings: np.ndarray
    train: np.ndarray
    probes: np.ndarray
    held_out: np.ndarray

    def held_out_sample(self, n: int, seed: int = 1) -> np.ndarray:
        """``n`` held-out prompt positions, drawn at random (fixed by ``seed``)."""
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(self.held_out, size=min(n, len(self.held_out)), replace=False))

    def answer_fn(self, model: str):
        """``prompt -> recorded answer sentence`` of a real model (for :func:`add_profiled_model`)."""
        return lambda prompt: self.book.answer(model, prompt)

    def single_member_policies(
        self, prompts: np.ndarray, members: list[str], costs: dict[str, float]
    ) -> tuple[PolicyOutcome, PolicyOutcome]:
        """"Always the most accurate member" and "always the cheapest member" on ``prompts``, from recorded scores.

        The most accurate member is picked on these very prompts (ties: the cheaper one), i.e. the best single
        choice in hindsight: the hardest baseline a router can be compared with.
        """
        logged = self.data.subset(prompts, members)
        acc = logged.scores.mean(axis=0)
        best = max(range(len(members)), key=lambda j: (acc[j], -costs[members[j]]))
        cheap = min(range(len(members)), key=lambda j: (costs[members[j]], -acc[j]))
        return tuple(  # type: ignore[return-value]
            single_model_outcome(f"always {members[j]}", members[j], logged.scores[:, j], costs[members[j]])
            for j in (best, cheap)
        )

    def report_budget(
        self,
        policy: str,
        budget: float,
        members: list[str],
        scores: list[float],
        baselines: tuple[PolicyOutcome, PolicyOutcome],
        through: str,
    ) -> str:
        """Print one budget's table — the router (call ``i`` went to ``members[i]`` and scored ``scores[i]``) against
        ``baselines`` = (always the most accurate, always the cheapest) — and return its :func:`verdict` line."""
        routed = summarise_calls(f"{policy} budget={budget:g}", members, scores, self.router.costs)
        lam = self.router.calibrate(budget, warn=False)
        print(f"\n== budget {budget:g} per call (λ={lam:.4f}): {len(members)} held-out questions through {through} ==")
        print(format_comparison([routed, *baselines], reference=baselines[0], unit=self.data.cost_unit))
        return verdict(f"budget {budget:g}", routed, baselines[0])


def print_verdicts(verdicts: list[str]) -> None:
    """The quickstarts' closing lines: one :func:`verdict` per budget."""
    print("\nVerdict (accuracy in points vs always the most accurate member, and mean-cost saving):")
    print("\n".join(verdicts))


def build(folder: Path, seed: int = 0, n_clusters: int = 20, router_embedder: Any = None) -> Setup:
    """Load the folder, embed its prompts once (cached), split them, fit K-Means and set the graded probe set.

    The router embeds new prompts through the same cache unless ``router_embedder`` is given (benchmarks pass the
    bare default embedder so that routing pays for real encoding).
    """
    t0 = time.perf_counter()
    data = load_routing_data(folder)
    book = ReplayBook.from_routing_data(data)
    embedder = CachedEmbedder(default_embedder(), default_cache_dir())
    # Duplicate prompt texts (a few ids share a text) would leak between splits: split unique texts only.
    first = {}
    for i, p in enumerate(data.prompts):
        first.setdefault(p, i)
    unique = np.array(sorted(first.values()))
    order = np.random.default_rng(seed).permutation(unique)
    train, probes, held_out = order[:N_TRAIN], order[N_TRAIN : N_TRAIN + N_PROBES], order[N_TRAIN + N_PROBES :]
    embeddings = embedder.embed(data.prompts)
    router = UniRouter(embedder=router_embedder or embedder, n_clusters=n_clusters, seed=seed, show_progress=False)
    router.fit_embeddings(embeddings[train])
    probe_set = ProbeSet(
        prompts=[data.prompts[i] for i in probes],
        references=[data.references[i] for i in probes],  # type: ignore[index]
        grader="multiple_choice",
        prompt_ids=[data.prompt_ids[i] for i in probes],
    )
    router.set_probes(probe_set, embeddings=embeddings[probes])
    print(
        f"[setup] {data.n_prompts} MMLU-Pro prompts × {data.n_models} LLMs from {folder}; K-Means K={n_clusters} on "
        f"{len(train)} training prompts, {len(probes)} probes, {len(held_out)} held out "
        f"({time.perf_counter() - t0:.1f}s)"
    )
    return Setup(data, book, router, embeddings, train, probes, held_out)
