"""Both adapters through the same scenarios: routing-setting bounds rejected at construction (declared on the fields,
one RoutingPolicy built once), and routing that stays correct while members are added and removed concurrently."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import pytest
from llamaindex_helpers import LAW, MATH, two_topic_router

from uniroute_core import delegation
from uniroute_core.policy import RoutingPolicy
from uniroute_core.state import RouterState

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from uniroute_langchain import ChatUniRoute  # noqa: E402
from uniroute_langchain.testing import FakeToolCallingChatModel  # noqa: E402
from uniroute_llamaindex import UniRouteLLM  # noqa: E402
from uniroute_llamaindex.testing import ScriptedLLM  # noqa: E402


class Adapter:
    """One adapter behind a common face: build it, call it on a prompt, name the member that answered."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def member(self, name: str) -> Any:
        if self.kind == "langchain":
            return FakeToolCallingChatModel(model_name=f"fake-{name}", reply=f"{name} answers")
        return ScriptedLLM(answer_fn=lambda prompt: f"{name} answers")

    def build(self, router: Any, **settings: Any) -> Any:
        members = {"small": self.member("small"), "big": self.member("big")}
        cls: Callable[..., Any] = ChatUniRoute if self.kind == "langchain" else UniRouteLLM
        return cls(router=router, members=members, **settings)

    def answered_by(self, pool: Any, prompt: str) -> str:
        if self.kind == "langchain":
            return pool.invoke(prompt).response_metadata["uniroute"]["member"]
        return pool.complete(prompt).additional_kwargs["uniroute"]["member"]


@pytest.fixture(params=["langchain", "llamaindex"])
def adapter(request: pytest.FixtureRequest) -> Adapter:
    return Adapter(request.param)


@pytest.fixture
def router(embedder):
    return two_topic_router(embedder)


# ============================================================================ bounds, at construction
@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"lam": -0.01}, r"lam\n.*greater than or equal to 0"),
        ({"lam": math.inf}, r"lam\n.*finite number"),
        ({"lam": math.nan}, r"lam\n.*finite number"),
        ({"budget": 0.0}, r"budget\n.*greater than 0"),
        ({"budget": -2.0}, r"budget\n.*greater than 0"),
        ({"budget": math.inf}, r"budget\n.*finite number"),
        ({"min_quality": -0.01}, r"min_quality\n.*greater than or equal to 0"),
        ({"min_quality": 1.01}, r"min_quality\n.*less than or equal to 1"),
        ({"lam": 0.3, "min_quality": 0.5}, r"only one of lam, budget, min_quality; got \['lam', 'min_quality'\]"),
    ],
)
def test_bad_routing_settings_are_refused_at_construction(adapter, router, settings, match):
    with pytest.raises(ValueError, match=match):
        adapter.build(router, **settings)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, RoutingPolicy()),
        ({"lam": 0.0}, RoutingPolicy(lam=0.0)),
        ({"budget": 1e-9}, RoutingPolicy(budget=1e-9)),
        ({"min_quality": 0.0}, RoutingPolicy(min_quality=0.0)),
        ({"min_quality": 1.0}, RoutingPolicy(min_quality=1.0)),
    ],
)
def test_boundary_settings_build_the_policy_once(adapter, router, settings, expected):
    pool = adapter.build(router, **settings)
    assert pool.policy == expected
    assert pool.policy is pool.policy  # built at construction, not per call


def test_the_policy_routes_the_calls(adapter, router):
    assert adapter.answered_by(adapter.build(router, lam=0.3), MATH) == "small"
    assert adapter.answered_by(adapter.build(router, lam=0.3), LAW) == "big"
    assert adapter.answered_by(adapter.build(router, lam=2.0), LAW) == "small"
    assert adapter.answered_by(adapter.build(router, min_quality=0.5), LAW) == "big"


def test_a_reassigned_setting_is_validated_again(adapter, router):
    pool = adapter.build(router, lam=0.3)
    pool.lam = 2.0
    assert pool.policy == RoutingPolicy(lam=2.0) and adapter.answered_by(pool, LAW) == "small"
    pool.budget = 1.0
    with pytest.raises(ValueError, match="only one of lam, budget, min_quality"):
        adapter.answered_by(pool, LAW)


# ============================================================================ the select/route race
def test_a_member_removed_while_a_call_is_being_routed(adapter, router, monkeypatch):
    """remove_model runs at the exact point between the selector's snapshot and its routing."""
    pool = adapter.build(router, lam=0.3)
    done: list[str] = []

    def remove_big_now(state: RouterState) -> None:
        if not done:
            done.append(pool.remove_model("big").name)

    monkeypatch.setattr(delegation, "_before_route_hook", remove_big_now)
    assert adapter.answered_by(pool, MATH) == "small"  # routed on the snapshot with both members
    assert done == ["big"] and router.models == ["small"] and list(pool.members) == ["small"]
    assert adapter.answered_by(pool, LAW) == "small"  # later calls see the new pool


def test_calls_never_fail_while_members_join_and_leave(adapter, router):
    pool = adapter.build(router, lam=0.3)
    stop = threading.Event()
    errors: list[BaseException] = []
    answered: set[str] = set()

    def churn() -> None:
        try:
            while not stop.is_set():
                pool.add_model("mid", adapter.member("mid"), cost=0.5, show_progress=False)
                pool.remove_model("mid")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def call() -> None:
        try:
            for i in range(40):
                answered.add(adapter.answered_by(pool, MATH if i % 2 else LAW))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    churner = threading.Thread(target=churn)
    callers = [threading.Thread(target=call) for _ in range(3)]
    churner.start()
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    stop.set()
    churner.join()
    assert errors == []
    assert answered <= {"small", "big", "mid"} and answered & {"small", "big"}
