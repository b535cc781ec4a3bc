"""The deferral-curve figure of an evaluation run (matplotlib, headless Agg backend).

x = cost normalised to [0, 1] between the cheapest and the most expensive test LLM of each trial (the range Area is
computed on), y = mean quality on the test prompts. One line per method (mean over trials of its upper-envelope
curve), one dot per single model (its mean position over the trials where it was a test LLM), the best single
model marked with a star and named.
"""

from __future__ import annotations

import os
from pathlib import Path

from .evaluation import CURVE_GRID, EvaluationResult

__all__ = ["METHOD_STYLE", "plot_deferral_curves"]

METHOD_STYLE: dict[str, dict[str, object]] = {
    "kmeans": {"label": "UniRoute K-Means", "color": "#1f77b4", "lw": 2.4, "ls": "-"},
    "learned_map": {"label": "UniRoute LearnedMap", "color": "#d62728", "lw": 2.4, "ls": "-"},
    "knn": {"label": "KNN", "color": "#2ca02c", "lw": 1.8, "ls": "--"},
    "zero": {"label": "ZeroRouter (K=1)", "color": "#7f7f7f", "lw": 1.8, "ls": "--"},
    "clairvoyant": {"label": "Clairvoyant (upper bound)", "color": "#9467bd", "lw": 1.6, "ls": ":"},
    "random": {"label": "Random (matched cost)", "color": "#bcbd22", "lw": 1.4, "ls": "-."},
}
"""Label, colour and line style per method."""


def plot_deferral_curves(result: EvaluationResult, path: str | os.PathLike[str]) -> Path:
    """Write the figure to ``path`` (PNG) and return it."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 6.0), dpi=120)
    singles = result.single_model_summary()
    if singles:
        xs = [v["norm_cost"] for v in singles.values()]
        ys = [v["quality"] for v in singles.values()]
        ax.scatter(xs, ys, s=18, color="#444444", alpha=0.55, zorder=3, label="single models (mean over trials tested)")
        best_name = result.best_single()["model"]
        if best_name in singles:
            b = singles[best_name]
            ax.scatter([b["norm_cost"]], [b["quality"]], marker="*", s=260, color="#ff7f0e", edgecolor="black",
                       zorder=5, label=f"best single: {best_name}")
    for m in result.config.methods:
        style = METHOD_STYLE.get(m, {"label": m})
        mean_area = sum(result.values(m, "area")) / len(result.trials)
        ax.plot(
            CURVE_GRID, result.mean_curve(m), color=style.get("color"), lw=style.get("lw", 1.5), ls=style.get("ls", "-"),
            label=f"{style['label']}  (Area {mean_area:.3f})", zorder=4,
        )
    ax.set_xlabel("cost, normalised between the cheapest and the most expensive test LLM")
    ax.set_ylabel("mean quality on test prompts (accuracy)")
    ax.set_title(
        f"Deferral curves on {result.data.name} — unseen test LLMs, mean of {len(result.trials)} trials\n"
        f"({result.data.n_prompts} prompts, {result.data.n_models} LLMs, embedder {result.embedder})",
        fontsize=10,
    )
    ax.set_xlim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
