"""Your own pool of three chat models, routed from day one with no data of your own.

    python examples/your_own_pool.py [--n 200] [--budget 30]

``ChatUniRoute.from_models`` starts from the pretrained router shipped with the package (``UniRouter.pretrained()``:
a cluster map and 300 graded knowledge/reasoning probes), profiles the three members concurrently on its probes
(one progress bar), and returns a routed chat model. The user code is the block marked below: ten lines.

The three members stand in for your API chat models: real LLMs replayed offline from their recorded answers to the
bundled MMLU-Pro questions (``uniroute_langchain.testing.ReplayChatModel``), so this runs with no network and no key.
Replace them by ``ChatOpenAI(...)``, ``ChatAnthropic(...)``... and the rest is unchanged.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from uniroute_core import load_routing_data
from uniroute_core.grading import grade_multiple_choice
from uniroute_core.replay import ReplayBook
from uniroute_langchain.testing import ReplayChatModel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="questions to send through the chain (default 200)")
    ap.add_argument("--budget", type=float, default=30.0, help="mean cost per call, in billions of active parameters")
    args = ap.parse_args()
    t0 = time.perf_counter()

    # Stand-ins for your three API chat models (offline replays of real LLMs).
    book = ReplayBook.from_routing_data(load_routing_data("mmlu_pro"))
    gemini_pro = ReplayChatModel(book=book, model="gemini-1.5-pro-002")
    llama_70b = ReplayChatModel(book=book, model="Meta-Llama-3_1-70B-Instruct")
    phi3_mini = ReplayChatModel(book=book, model="Phi-3-mini-4k-instruct")

    # ---------------------------------------------------------------- user code: a routed pool in ten lines
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    from uniroute_langchain import ChatUniRoute

    chat = ChatUniRoute.from_models(
        {
            "gemini-1.5-pro-002": (gemini_pro, 135.5),
            "Meta-Llama-3_1-70B-Instruct": (llama_70b, 70.6),
            "Phi-3-mini-4k-instruct": (phi3_mini, 3.8),
        },
        budget=args.budget,
    )
    chain = ChatPromptTemplate.from_messages([("human", "{question}")]) | chat | StrOutputParser()
    # ------------------------------------------------------------------------------------------------------

    print(
        f"[pool] {chat.router.models} profiled on {len(chat.router.probes)} pretrained probes "
        f"(failures: {dict(chat.pool_report.failures) or 'none'}) in {time.perf_counter() - t0:.1f}s"
    )
    for name, profile in chat.router.profiles.items():
        print(f"  {name:<30} cost {profile.cost:>6g}  probe accuracy {profile.overall_quality:.3f}")

    data = book.data
    probe_ids = set(chat.router.probes.prompt_ids or ())
    seen: set[str] = set()
    held_out = []
    for i, pid in enumerate(data.prompt_ids):  # questions the router was not profiled on, in file order
        if pid not in probe_ids and data.prompts[i] not in seen and data.prompts[i] not in book.ambiguous_prompts:
            seen.add(data.prompts[i])
            held_out.append(i)
    step = max(1, len(held_out) // args.n)
    sample = held_out[::step][: args.n]

    answers = chain.batch([{"question": data.prompts[i]} for i in sample])
    routed = [chat.invoke(data.prompts[i]).response_metadata["uniroute"]["member"] for i in sample]
    correct = [grade_multiple_choice(a, data.references[i]) for a, i in zip(answers, sample)]  # type: ignore[index]
    costs = chat.router.costs
    mean_cost = sum(costs[m] for m in routed) / len(routed)
    big = data.model_index("gemini-1.5-pro-002")
    print(f"\n== {len(sample)} held-out questions through prompt | ChatUniRoute | parser, budget {args.budget:g} ==")
    print(f"example answer: {answers[0]!r}")
    print(f"routed      accuracy {sum(correct) / len(correct):.3f}  mean cost {mean_cost:.1f}")
    print(
        f"always gemini-1.5-pro-002  accuracy {data.scores[sample, big].mean():.3f}  "
        f"mean cost {costs['gemini-1.5-pro-002']:.1f}"
    )
    print("share of calls:")
    for name, count in Counter(routed).most_common():
        print(f"  {name:<30} {100 * count / len(routed):5.1f}%")
    print(f"(total {time.perf_counter() - t0:.1f}s)")


if __name__ == "__main__":
    main()
