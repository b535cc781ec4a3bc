"""`uniroute eval` on a sparse routing folder (missing rows and empty scores): it runs, and a missing cell is
unknown, never a wrong answer."""

from __future__ import annotations

import json

import numpy as np
from test_cli import TOY_COSTS, TOY_MODELS, _run, toy_routing

from uniroute_core.data import load_routing_data, write_routing_data


def test_eval_on_a_sparse_folder_runs_and_treats_missing_cells_as_unknown(tmp_path):
    rng = np.random.default_rng(0)
    prompts, cats, scores = toy_routing(rng)  # test_cli's folder, before cells go missing
    dense_e = scores[:, 4].mean()
    scores[rng.random(scores.shape) < 0.15] = np.nan  # 15 % of the cells were never logged
    # member "e" is logged only when it answered right: as unknown its quality is 1.0, as wrong it would be < f's
    scores[scores[:, 4] == 0, 4] = np.nan
    folder = write_routing_data(tmp_path / "sparse", prompts=prompts, models=TOY_MODELS, scores=scores,
                                costs=TOY_COSTS, categories=cats)
    data = load_routing_data(folder)
    assert not data.is_dense and np.isnan(data.scores).sum() == np.isnan(scores).sum()
    out = tmp_path / "out"
    rc = _run(folder, out, tmp_path / "cache", "--trials", "2", "--seed", "1", "--jobs", "1",
              "--methods", "kmeans,knn,zero,clairvoyant,random")
    assert rc == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["best_single"]["model"] == "e" and doc["best_single"]["quality"] == 1.0 > dense_e
    for name, m in doc["methods"].items():
        assert len(m["area"]) == 2 and all(np.isfinite(a) and 0.0 <= a <= 1.0 for a in m["area"]), name
