"""The deferral-curve figure of an evaluation run (matplotlib, headless Agg backend).

x = cost normalised to [0, 1] between the cheapest and the most expensive test LLM of each trial (the range Area is
computed on), y = mean quality on the test prompts. One line per method (mean over trials of its upper-envelope
curve), one dot per single model (its mean position over the trials where it was a test LLM), the best single
model marked with a star and named.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ._optional import import_optional
from .protocol import EvaluationResult

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


def plot_deferral_curves(results: EvaluationResult | dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the figure to ``path`` (PNG) and return it.

    ``results`` is an :class:`~uniroute_core.evaluation.EvaluationResult` or the ``results.json`` document it
    produces (so a saved run can be re-plotted without re-running it). The lower panel shows each method's mean
    quality minus ZeroRouter's at the same cost, where the routers' differences are visible.
    """
    matplotlib = import_optional("matplotlib", "plotting deferral curves")
    matplotlib.use("Agg", force=True)
    plt = import_optional("matplotlib.pyplot", "plotting deferral curves")

    doc = results.to_json() if isinstance(results, EvaluationResult) else results
    methods: dict[str, Any] = doc["methods"]
    has_zero = "zero" in methods
    if has_zero:
        fig, (ax, ax_gain) = plt.subplots(
            2, 1, figsize=(8.5, 8.5), dpi=120, sharex=True, gridspec_kw={"height_ratios": [2.2, 1.0]}
        )
    else:
        fig, ax = plt.subplots(figsize=(8.5, 6.0), dpi=120)
    singles: dict[str, Any] = doc.get("single_models", {})
    if singles:
        xs = [v["norm_cost"] for v in singles.values()]
        ys = [v["quality"] for v in singles.values()]
        ax.scatter(xs, ys, s=18, color="#444444", alpha=0.55, zorder=3, label="single models (mean over trials tested)")
        best_name = doc.get("best_single", {}).get("model")
        if best_name in singles:
            b = singles[best_name]
            ax.scatter([b["norm_cost"]], [b["quality"]], marker="*", s=260, color="#ff7f0e", edgecolor="black",
                       zorder=5, label=f"best single: {best_name}")
    zero_q = np.asarray(methods["zero"]["mean_curve"]["quality"]) if has_zero else None
    for m, entry in methods.items():
        style = METHOD_STYLE.get(m, {"label": m})
        x = np.asarray(entry["mean_curve"]["norm_cost"])
        y = np.asarray(entry["mean_curve"]["quality"])
        kw = dict(color=style.get("color"), lw=style.get("lw", 1.5), ls=style.get("ls", "-"), zorder=4)
        ax.plot(x, y, label=f"{style['label']}  (Area {entry['area_mean']:.3f})", **kw)
        if zero_q is not None and m != "random":
            ax_gain.plot(x, y - zero_q, **kw)
    ax.set_ylabel("mean quality on test prompts (accuracy)")
    ax.set_title(
        f"Deferral curves on {doc['data']} — unseen test LLMs, mean of {doc['trials']} trials\n"
        f"({doc['n_prompts']} prompts, {doc['n_models']} LLMs, embedder {doc['embedder']})",
        fontsize=10,
    )
    ax.set_xlim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    bottom = ax
    if zero_q is not None:
        ax_gain.axhline(0.0, color="#7f7f7f", lw=1.0, ls="--")
        ax_gain.set_ylabel("quality − ZeroRouter's")
        ax_gain.grid(True, alpha=0.3)
        bottom = ax_gain
    bottom.set_xlabel("cost, normalised between the cheapest and the most expensive test LLM")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
