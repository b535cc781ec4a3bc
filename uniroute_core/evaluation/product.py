"""The evaluation method ``uniroute``: exactly what a user gets from ``UniRouter`` with a training matrix.

Per trial, the router is built and used through its public API only, as a user would:

1. ``UniRouter(seed=...)`` with the default settings (``cluster_map="auto"``, ``n_clusters="auto"``);
2. ``fit_embeddings(train ∪ probe prompts, train_scores=<training LLMs' scores>, train_costs=..., n_probes=|probes|)``
   — :meth:`~uniroute_core.router.UniRouter.fit` on prompts already embedded; the representation and α are chosen
   inside by :func:`~uniroute_core.autoselect.select_representation` on the training LLMs only;
3. ``set_probes(probe prompts)``, then ``add_model`` for every *test* LLM with its probe scores alone;
4. ``expected_quality`` on the test prompts, traced over every λ by the harness like every other method.

The test LLMs' scores outside the probe prompts are never given to the router, so they cannot enter the choice
(``tests/test_autoselect.py`` permutes them and checks the choice does not move).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data import RoutingData

__all__ = ["uniroute_predictions"]


def _precomputed_only(texts: list[str]) -> np.ndarray:
    """The harness hands the router embeddings computed once per run; it never needs to embed a text itself."""
    raise RuntimeError("the evaluation passes precomputed embeddings; the router should not embed here")


def uniroute_predictions(
    x: np.ndarray,
    data: RoutingData,
    train: np.ndarray,
    probe: np.ndarray,
    test: np.ndarray,
    train_models: np.ndarray,
    test_models: np.ndarray,
    seed: int,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Predicted quality ``(len(test), len(test_models))`` of the product router, and what it chose.

    ``x`` holds the embeddings of all the data's prompts; the index arrays are one trial's split.
    """
    from ..router import UniRouter

    scores, costs = data.scores, np.asarray(data.costs, dtype=float)
    fit_rows = np.sort(np.concatenate([train, probe]))
    router = UniRouter(embedder=_precomputed_only, seed=seed, show_progress=False)
    router.fit_embeddings(
        x[fit_rows],
        train_scores=scores[np.ix_(fit_rows, train_models)],
        train_costs=costs[train_models],
        train_models=[data.models[j] for j in train_models],
        n_probes=len(probe),
    )
    router.set_probes([data.prompts[i] for i in probe], embeddings=x[probe])
    for j in test_models:
        router.add_model(data.models[j], cost=float(costs[j]), scores=scores[probe, j])
    pred = router.expected_quality([data.prompts[i] for i in test], embeddings=x[test])
    selection = router.selection_
    assert selection is not None  # fitted with a training matrix
    chosen = selection.chosen
    params: dict[str, Any] = {
        "representation": chosen.representation,
        **chosen.params,
        "validation_area": chosen.validation_area,
        "best_by_representation": {
            rep: {"params": c.params, "validation_area": c.validation_area}
            for rep, c in selection.best_by_representation().items()
        },
    }
    return pred, params
