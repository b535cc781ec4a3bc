"""LangChain adapter for UniRoute: :class:`ChatUniRoute`, one chat model over a routed pool of chat models.

The routing math lives in :mod:`uniroute_core`; this package turns messages into the text to route and delegates to
the chosen member. Offline test members are in :mod:`uniroute_langchain.testing`.
"""

from .chat_models import ChatUniRoute, supports_tool_calling
from .profiling import aprofile_model, as_judge, profile_model

__all__ = ["ChatUniRoute", "profile_model", "aprofile_model", "supports_tool_calling", "as_judge"]
