"""Through the real default embedder (packaged all-MiniLM-L6-v2, offline) and on real routing data."""

from __future__ import annotations

import numpy as np
import pytest

from uniroute_core import UniRouter, area, router_curve
from uniroute_core.embedding import DEFAULT_EMBEDDER_NAME


def test_default_embedder_is_packaged_and_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    train = [
        "Solve for x: 3x + 5 = 20.", "What is the derivative of x squared?", "Integrate sin(x) from 0 to pi.",
        "Compute 17 times 23.", "Is 97 a prime number?", "Find the area of a circle of radius 2.",
        "What does the Fourth Amendment protect?", "Define tort law.", "What is a breach of contract?",
        "Explain the doctrine of precedent.", "What is habeas corpus?", "Who can file a patent?",
    ]
    router = UniRouter(n_clusters=2, shrinkage=0.0, show_progress=False).fit(train)
    assert router.embedder.name == DEFAULT_EMBEDDER_NAME
    assert router.cluster_map.dim_ == 384
    router.set_probes(train)
    router.add_model("calculator", cost=1.0, scores=[1] * 6 + [0] * 6)
    router.add_model("lawyer", cost=1.0, scores=[0] * 6 + [1] * 6)
    math, law = router.route(["What is 12 divided by 4?", "Can a minor sign a binding contract?"], lam=0.1)
    assert (math.model, law.model) == ("calculator", "lawyer")


def unseen_llm_trial(data, embeddings, seed: int, n_test_models: int = 10) -> dict[int, float]:
    """One trial of the protocol: 60/10/30 prompt split, random test LLMs profiled on the probes only."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(data.n_prompts)
    n = data.n_prompts
    train, probe, test = perm[: int(0.6 * n)], perm[int(0.6 * n) : int(0.7 * n)], perm[int(0.7 * n) :]
    models = rng.permutation(data.n_models)[:n_test_models]
    out = {}
    for k in (1, 10):
        router = UniRouter(embedder=lambda t: None, n_clusters=k, seed=seed, show_progress=False)
        router.fit_embeddings(embeddings[train])
        router.set_probes([data.prompts[i] for i in probe], embeddings=embeddings[probe])
        for j in models:
            router.add_model(data.models[j], data.costs[j], data.scores[probe, j])
        q = router.expected_quality([], embeddings=embeddings[test])
        out[k] = area(router_curve(q, data.scores[np.ix_(test, models)], data.costs[models]))
    return out


@pytest.mark.slow
def test_kmeans_routing_beats_zero_router_on_mmlu_pro(mmlu_pro_data, real_embedder):
    embeddings = real_embedder.embed(mmlu_pro_data.prompts)
    trials = [unseen_llm_trial(mmlu_pro_data, embeddings, seed) for seed in range(5)]
    kmeans = np.array([t[10] for t in trials])
    zero = np.array([t[1] for t in trials])
    print(f"\nK-Means(10) Area {kmeans.mean():.4f} vs ZeroRouter {zero.mean():.4f} over {len(trials)} splits")
    assert kmeans.mean() > zero.mean()
    assert (kmeans > zero).sum() >= 4
