"""LangChain quickstart: ten real LLMs behind one chat model, in a `prompt | ChatUniRoute | parser` chain, offline.

1. Fit the router's cluster map on 6,000 unlabelled MMLU-Pro training prompts and set 500 graded probe prompts.
2. Add ten real LLMs with ONE ``add_model`` call each: every member answers the probes, the answers are graded against
   the gold letters, and its per-cluster quality is computed. The members are ``ReplayChatModel`` — LangChain chat
   models that answer exactly as the real LLM did (its recorded MMLU-Pro answers), so this runs with no network.
3. Run ``ChatPromptTemplate | ChatUniRoute | parser`` over a few hundred held-out questions at two budgets and grade
   the answers. Print accuracy, cost and share of calls per member against "always the most accurate member" and
   "always the cheapest member", and say whether the router comes within 1 point of the most accurate member's
   accuracy at a clearly lower cost.

    python examples/langchain_quickstart.py [--data DIR] [--n 400] [--budgets 20,80]
"""

from __future__ import annotations

import time

from _mmlu_pro import POOL, build, data_folder, parse_args
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel

from uniroute_core.grading import grade_multiple_choice
from uniroute_core.preview import format_comparison, single_model_outcome, summarise_calls
from uniroute_langchain import ChatUniRoute
from uniroute_langchain.testing import ReplayChatModel


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        [("--n", {"type": int, "default": 400, "help": "held-out questions to run through the chain"}),
         ("--budgets", {"default": "20,80", "help": "two (or more) mean costs per call, comma-separated"})],
    )
    setup = build(data_folder(args.data), seed=args.seed)
    data, book = setup.data, setup.book

    chat = ChatUniRoute(router=setup.router, members={})
    t0 = time.perf_counter()
    for name in POOL:
        chat.add_model(name, ReplayChatModel(book=book, model=name), cost=book.cost(name), show_progress=False)
    print(f"[pool] {len(POOL)} members added with one add_model call each ({time.perf_counter() - t0:.1f}s)")

    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    answer_and_member = RunnableParallel(
        answer=StrOutputParser(), member=RunnableLambda(lambda msg: msg.response_metadata["uniroute"]["member"])
    )
    held = setup.held_out_sample(args.n)
    questions = [{"question": data.prompts[i]} for i in held]
    gold = [data.references[i] for i in held]  # type: ignore[index]
    costs = chat.router.costs

    # baselines on the same questions, from the recorded scores of each member
    logged = data.subset(held, POOL)
    acc = logged.scores.mean(axis=0)
    best = max(range(len(POOL)), key=lambda j: (acc[j], -costs[POOL[j]]))
    cheap = min(range(len(POOL)), key=lambda j: (costs[POOL[j]], -acc[j]))
    most_accurate = single_model_outcome(f"always {POOL[best]}", POOL[best], logged.scores[:, best], costs[POOL[best]])
    cheapest = single_model_outcome(f"always {POOL[cheap]}", POOL[cheap], logged.scores[:, cheap], costs[POOL[cheap]])

    verdicts = []
    for budget in [float(b) for b in args.budgets.split(",")]:
        routed_chat = chat.model_copy(update={"budget": budget})
        chain = prompt | routed_chat | answer_and_member
        t0 = time.perf_counter()
        outputs = chain.batch(questions, config={"max_concurrency": 8})
        took = time.perf_counter() - t0
        scores = [grade_multiple_choice(o["answer"], g) for o, g in zip(outputs, gold)]
        routed = summarise_calls(f"ChatUniRoute budget={budget:g}", [o["member"] for o in outputs], scores, costs)
        lam = chat.router.calibrate(budget, warn=False)
        print(f"\n== budget {budget:g} per call (λ={lam:.4f}): {len(questions)} held-out questions through "
              f"prompt | ChatUniRoute | parser in {took:.1f}s ==")
        print(format_comparison([routed, most_accurate, cheapest], reference=most_accurate, unit=data.cost_unit))
        gap = 100 * (routed.mean_quality - most_accurate.mean_quality)
        saving = 100 * (1 - routed.mean_cost / most_accurate.mean_cost)
        verdicts.append((budget, gap, saving))

    print("\nVerdict (accuracy in points vs always the most accurate member, and mean-cost saving):")
    for budget, gap, saving in verdicts:
        ok = gap >= -1.0 and saving >= 20.0
        print(f"  budget {budget:g}: {gap:+.2f} points at {saving:.1f}% lower cost — "
              + ("within 1 point at clearly lower cost" if ok else "NOT within 1 point of the most accurate member"
                 if gap < -1.0 else "within 1 point but the saving is small"))


if __name__ == "__main__":
    main()
