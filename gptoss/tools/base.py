"""The one protocol every built-in tool follows.

A built-in tool owns a harmony namespace (`python`, `browser`). The model calls it by writing a
message whose recipient is the namespace (`to=python`) or a function inside it
(`to=browser.search`). The tool loop (LLM.chat, the console, the server) hands that message to
`run`, appends the returned tool messages to the conversation and keeps generating in the same
turn. A function tool (`functions.NAME`) is not a built-in tool: it ends the turn.

    tool.name            "python" | "browser": the namespace the model addresses
    tool.config()        harmony's ToolNamespaceConfig rendered into the system message
    tool.run(message)    the model's call (an openai_harmony Message) -> ToolOutput
    tool.close()         releases processes, folders, connections (idempotent)

`run` never raises for anything the model wrote: a bad call, a timeout or a sandbox violation is
a ToolOutput whose message tells the model what went wrong (`error` says the same for the server
and the console). ToolError is only for misconfiguration found before any call (say, no network
isolation and no explicit unsafe flag).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from openai_harmony import Message, ToolNamespaceConfig


class ToolError(RuntimeError):
    """A tool that cannot be set up as asked; raised before any call runs."""


@dataclass
class ToolOutput:
    """What one call produced.

    messages: tool messages to append, authored by the tool (role tool, name e.g. `python` or
        `browser.search`), addressed to the assistant, on the call's channel.
    item: what the server reports for the call (the Responses output item's details), e.g.
        python: {"code": ..., "outputs": [{"type": "logs", "logs": ...}]};
        browser: {"action": {"type": "search", "query": ...}} / {"type": "open_page", "url": ...}
        / {"type": "find_in_page", "pattern": ..., "url": ...} (the openai client's names).
    error: None, or a one-line reason the call failed (the messages already tell the model).
    """
    messages: list[Message]
    item: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@runtime_checkable
class BuiltinTool(Protocol):
    name: str

    def config(self) -> ToolNamespaceConfig: ...

    def run(self, message: Message) -> ToolOutput: ...

    def close(self) -> None: ...


def namespace_of(recipient: str | None) -> str | None:
    """`browser.search` -> `browser`, `python` -> `python`, `functions.f` -> `functions`."""
    if not recipient:
        return None
    return recipient.split(".", 1)[0].strip() or None
