"""Profiling a member through ChatUniRoute.add_model reproduces a real model's recorded scores (real data, slow).

A ReplayChatModel answers each MMLU-Pro probe with the letter a real LLM answered (the folder's ``response``
column). Profiling it through the whole LangChain path — invoke, message text, multiple-choice grading, NaN
handling, router profile — must give exactly that model's recorded scores on the probes.
"""

from __future__ import annotations

import numpy as np
import pytest

from uniroute_core import ProbeSet, UniRouter
from uniroute_core.replay import ReplayBook
from uniroute_langchain import ChatUniRoute, aprofile_model
from uniroute_langchain.testing import ReplayChatModel

N_PROBES = 300


@pytest.fixture(scope="module")
def book(mmlu_pro_path) -> ReplayBook:
    return ReplayBook.from_routing_data(mmlu_pro_path)


@pytest.fixture(scope="module")
def probes(mmlu_pro_path, book) -> ProbeSet:
    drawn = ProbeSet.from_routing_data(mmlu_pro_path, n=N_PROBES, seed=0)
    # A few texts occur twice in the folder with different recorded answers; a replay can only give one of them,
    # so those probes are left out (the rest must match exactly).
    keep = [i for i, p in enumerate(drawn.prompts) if p not in book.ambiguous_prompts]
    assert len(keep) > 0.9 * N_PROBES
    return ProbeSet(
        prompts=[drawn.prompts[i] for i in keep],
        references=[drawn.references[i] for i in keep],
        grader=drawn.grader,
        prompt_ids=[drawn.prompt_ids[i] for i in keep],
    )


@pytest.mark.slow
def test_add_model_of_a_replay_member_yields_its_recorded_scores(book, probes, embedder):
    router = UniRouter(embedder=embedder, n_clusters=4, show_progress=False).fit(list(probes.prompts))
    router.set_probes(probes)
    chat = ChatUniRoute(router=router, members={}, lam=0.1)
    recorded_means = []
    for model in (book.models[0], book.models[-1]):
        member = ReplayChatModel(book=book, model=model)
        profile = chat.add_model(model, member, cost=book.cost(model), show_progress=False)
        recorded = book.recorded_scores(model, probes.prompts)
        np.testing.assert_array_equal(profile.probe_scores, recorded)
        recorded_means.append(float(np.nanmean(recorded)))
    assert recorded_means[0] != recorded_means[1]  # two different models, so the check is not vacuous
    assert _answered(chat, probes.prompts[0]) in book.models


def _answered(chat: ChatUniRoute, prompt: str) -> str:
    return chat.invoke(prompt).response_metadata["uniroute"]["member"]


@pytest.mark.slow
async def test_aprofile_model_of_a_replay_member_yields_its_recorded_scores(book, probes):
    model = book.models[len(book.models) // 2]
    scores = await aprofile_model(ReplayChatModel(book=book, model=model), probes, show_progress=False)
    np.testing.assert_array_equal(scores, book.recorded_scores(model, probes.prompts))
