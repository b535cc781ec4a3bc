"""LangChain's standard chat-model suites (unit + integration) run against ChatUniRoute over offline fake members.

The pool: two tool-calling fakes ("cheap" and "strong") profiled so that "cheap" is adequate on math and not on law.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from conftest import topic_embedder
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from uniroute_core import ProbeSet, UniRouter
from uniroute_langchain import ChatUniRoute
from uniroute_langchain.testing import FakeToolCallingChatModel


@lru_cache(maxsize=1)
def _router() -> UniRouter:
    math = [f"math problem number {i}" for i in range(10)]
    law = [f"law case number {i}" for i in range(10)]
    router = UniRouter(embedder=topic_embedder, n_clusters=2, show_progress=False).fit(math + law)
    router.set_probes(ProbeSet(prompts=math + law, references=["A"] * 20))
    router.add_model("cheap", 1.0, [1.0] * 10 + [0.0] * 10)
    router.add_model("strong", 10.0, [1.0] * 20)
    return router


def _params() -> dict[str, Any]:
    return {
        "router": _router(),
        "members": {
            "cheap": FakeToolCallingChatModel(model_name="fake-cheap"),
            "strong": FakeToolCallingChatModel(model_name="fake-strong"),
        },
        "lam": 0.3,
    }


# ChatUniRoute has no connection of its own: api_key / timeout / max_retries belong to each member, and ChatUniRoute
# rejects them with an error saying so (rather than silently ignoring them). The remaining standard parameters
# (temperature, max_tokens, stop) are ChatUniRoute fields forwarded to the member.
_STANDARD_PARAMS = {"temperature": 0, "max_tokens": 100, "stop": []}


class _ChatUniRouteSetup:
    """What both standard suites need to build a ChatUniRoute."""

    @property
    def chat_model_class(self) -> type[ChatUniRoute]:
        return ChatUniRoute

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return _params()

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        return dict(_STANDARD_PARAMS)

    @property
    def model_override_value(self) -> str:
        return "strong"


class TestChatUniRouteUnit(_ChatUniRouteSetup, ChatModelUnitTests):
    pass


class TestChatUniRouteIntegration(_ChatUniRouteSetup, ChatModelIntegrationTests):
    pass
