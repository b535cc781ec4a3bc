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

from _mmlu_pro import POOL, build, data_folder, parse_args, print_verdicts, quickstart_options
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel

from uniroute_core.grading import grade_multiple_choice
from uniroute_langchain import ChatUniRoute
from uniroute_langchain.testing import ReplayChatModel


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], quickstart_options("the chain"))
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
    most_accurate, cheapest = setup.single_member_policies(held, POOL, chat.router.costs)

    verdicts = []
    for budget in [float(b) for b in args.budgets.split(",")]:
        routed_chat = chat.model_copy(update={"budget": budget})
        chain = prompt | routed_chat | answer_and_member
        t0 = time.perf_counter()
        outputs = chain.batch(questions, config={"max_concurrency": 8})
        took = time.perf_counter() - t0
        scores = [grade_multiple_choice(o["answer"], g) for o, g in zip(outputs, gold)]
        members = [o["member"] for o in outputs]
        verdicts.append(setup.report_budget("ChatUniRoute", budget, members, scores, (most_accurate, cheapest),
                                            f"prompt | ChatUniRoute | parser in {took:.1f}s"))
    print_verdicts(verdicts)


if __name__ == "__main__":
    main()
