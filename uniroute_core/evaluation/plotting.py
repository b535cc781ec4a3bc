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

from ..registry import UnknownNameError
from ._optional import import_optional
from .methods import EvaluationMethod, get_method
from .protocol import EvaluationResult

__all__ = ["plot_deferral_curves"]


def _method(name: str) -> EvaluationMethod | None:
    """The registered method ``name`` (a saved results.json may name one this process does not know: None)."""
    try:
        return get_method(name)
    except UnknownNameError:
        return None


def plot_deferral_curves(results: EvaluationResult | dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the figure to ``path`` (PNG) and return it.

    ``results`` is an :class:`~uniroute_core.evaluation.EvaluationResult` or the ``results.json`` document it
    produces (so a saved run can be re-plotted without re-running it). The lower panel shows each method's mean
    quality minus the gain baseline's (the method with ``is_gain_baseline``: ZeroRouter) at the same cost, where the
    routers' differences are visible. Labels and styles come from the method registry (:mod:`.methods`).
    """
    matplotlib = import_optional("matplotlib", "plotting deferral curves")
    matplotlib.use("Agg", force=True)
    plt = import_optional("matplotlib.pyplot", "plotting deferral curves")

    doc = results.to_json() if isinstance(results, EvaluationResult) else results
    methods: dict[str, Any] = doc["methods"]
    known = {m: _method(m) for m in methods}
    baseline = next((m for m, method in known.items() if method is not None and method.is_gain_baseline), None)
    if baseline is not None:
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
    base_q = np.asarray(methods[baseline]["mean_curve"]["quality"]) if baseline is not None else None
    for m, entry in methods.items():
        method = known[m]
        style = method.style if method is not None else {}
        label = method.label if method is not None else m
        x = np.asarray(entry["mean_curve"]["norm_cost"])
        y = np.asarray(entry["mean_curve"]["quality"])
        kw = dict(color=style.get("color"), lw=style.get("lw", 1.5), ls=style.get("ls", "-"), zorder=4)
        ax.plot(x, y, label=f"{label}  (Area {entry['area_mean']:.3f})", **kw)
        if base_q is not None and (method is None or method.plot_gain):
            ax_gain.plot(x, y - base_q, **kw)
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
    if base_q is not None and baseline is not None:
        ax_gain.axhline(0.0, color="#7f7f7f", lw=1.0, ls="--")
        base_method = known[baseline]
        ax_gain.set_ylabel(f"quality − {base_method.label if base_method is not None else baseline}'s")
        ax_gain.grid(True, alpha=0.3)
        bottom = ax_gain
    bottom.set_xlabel("cost, normalised between the cheapest and the most expensive test LLM")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
