"""Text of LangChain messages, for routing and for profiling (one place for both)."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

__all__ = ["message_text", "last_human_text", "conversation_text"]


def message_text(message: BaseMessage) -> str:
    """The plain text of a message: its string content, or its text blocks joined (images, tool calls dropped)."""
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
    return "".join(parts)


def last_human_text(messages: Sequence[BaseMessage]) -> str:
    """Text of the last human message that has text (empty string when there is none)."""
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            text = message_text(message)
            if text.strip():
                return text
    return ""


def conversation_text(messages: Sequence[BaseMessage], *, include_system: bool = False) -> str:
    """The texts of the conversation's messages, one per line (system messages left out unless asked)."""
    return "\n".join(
        text
        for m in messages
        if include_system or not isinstance(m, SystemMessage)
        if (text := message_text(m)).strip()
    )
