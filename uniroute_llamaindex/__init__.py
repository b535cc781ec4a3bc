"""UniRoute for LlamaIndex: :class:`UniRouteLLM`, a pool of LLMs behind one ``FunctionCallingLLM``.

Test and offline members (a replayed real model, a failing member, a sized mock) live in
:mod:`uniroute_llamaindex.testing`.
"""

from .base import UNIROUTE_KEY, ToolRequest, UniRouteLLM
from .judge import as_judge

__all__ = ["UniRouteLLM", "ToolRequest", "UNIROUTE_KEY", "as_judge"]
