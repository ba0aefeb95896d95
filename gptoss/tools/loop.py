"""The built-in tool loop, written once for LLM.chat, the console and the server.

A turn is a run of segments. Each segment is one engine request; when its last message is a
finished call (`<|call|>`) addressed to a built-in tool's namespace (`to=python`,
`to=browser.search`), the tool runs and the next segment's prompt is

    previous prompt + the segment's generated tokens + the tool's messages + `<|start|>assistant`

(the engine's prefix cache makes that cheap). A `functions.*` call, an answer or a cut-off
segment ends the turn. The drivers only move tokens:

    loop = ToolLoop(tools)
    prompt = ...rendered with loop.namespaces() in the system message...
    while True:
        output = HarmonyOutput(..., first_part=loop.parts)   # one per segment
        generated = <run the engine on `prompt`, feeding `output`>
        step = loop.after(output)
        if step is None: break
        prompt = loop.continue_prompt(prompt, generated, step.run())
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

from openai_harmony import Author, Message, Role, ToolNamespaceConfig

from ..harmony.output import HarmonyOutput
from ..harmony.parser import ParsedMessage
from ..harmony.render import render_message
from ..harmony.tokenizer import START, load_harmony_encoding
from .base import BuiltinTool, ToolError, ToolOutput, namespace_of

MAX_CALLS = 32
log = logging.getLogger(__name__)


def as_harmony(parsed: ParsedMessage) -> Message:
    """The parser's message as an openai-harmony Message (what tools receive)."""
    author = Author.new(Role(parsed.role), parsed.name) if parsed.name else Author(role=Role(parsed.role))
    message = Message.from_author_and_content(author, parsed.text)
    if parsed.channel:
        message = message.with_channel(parsed.channel)
    if parsed.recipient:
        message = message.with_recipient(parsed.recipient)
    if parsed.content_type:
        message = message.with_content_type(parsed.content_type)
    return message


def as_parsed(message: Message) -> ParsedMessage:
    """A tool's reply as the parser's message type (for ChatOutput.messages)."""
    text = "".join(getattr(c, "text", "") for c in message.content)
    return ParsedMessage(message.author.role.value, message.channel, message.recipient,
                         message.content_type, text, "<|end|>", message.author.name)


@dataclass
class ToolStep:
    """One built-in call the model finished: run it (never raises) to get its ToolOutput."""

    tool: BuiltinTool
    call: ParsedMessage
    part: int                  # the call's part index (HarmonyOutput numbering)
    call_id: str | None
    output: ToolOutput | None = None

    @property
    def recipient(self) -> str:
        return self.call.recipient or self.tool.name

    def run(self) -> ToolOutput:
        try:
            self.output = self.tool.run(as_harmony(self.call))
        except Exception as exc:  # a tool's bug must not end the turn: the model is told
            log.exception("built-in tool %s failed", self.tool.name)
            reason = f"{type(exc).__name__}: {exc}"
            reply = Message.from_author_and_content(Author.new(Role.TOOL, self.recipient),
                                                    f"[the tool failed: {reason}]")
            self.output = ToolOutput([reply.with_recipient("assistant")
                                      .with_channel(self.call.channel or "analysis")], {}, reason)
        return self.output


@dataclass
class ToolLoop:
    """The built-in tools of one conversation, by namespace, and the loop's bookkeeping."""

    tools: Sequence[BuiltinTool] = ()
    max_calls: int = MAX_CALLS
    steps: list[ToolStep] = field(default_factory=list)
    parts: int = 0                 # parts numbered so far, across the turn's segments

    def __post_init__(self) -> None:
        names = [t.name for t in self.tools]
        if len(set(names)) != len(names):
            raise ToolError(f"two built-in tools share a namespace: {names}")
        if "functions" in names:
            raise ToolError("'functions' is the namespace of function tools, not a built-in tool")
        self.by_name = {t.name: t for t in self.tools}

    def namespaces(self) -> list[ToolNamespaceConfig]:
        return [t.config() for t in self.tools]

    def after(self, output: HarmonyOutput) -> ToolStep | None:
        """The built-in call that ended this (closed) segment, if the loop should continue."""
        self.parts = output.parts
        last = output.messages[-1] if output.messages else None
        if last is None or last.end_token != "<|call|>" or output.stopped:
            return None
        tool = self.by_name.get(namespace_of(last.recipient))
        if tool is None or len(self.steps) >= self.max_calls:
            return None
        call = output.tool_calls[-1] if output.tool_calls else None
        step = ToolStep(tool, last, self.parts - 1, call.call_id if call else None)
        self.steps.append(step)
        return step

    def continue_prompt(self, prompt: Sequence[int], generated: Sequence[int],
                        result: ToolOutput) -> list[int]:
        tail = [t for m in result.messages for t in render_message(m)]
        assistant = load_harmony_encoding().encode(Role.ASSISTANT.value)
        return list(prompt) + list(generated) + tail + [START] + assistant

    def close(self) -> None:
        for tool in self.tools:
            tool.close()


def make_tools(spec: Sequence[BuiltinTool | str] | None, **options) -> list[BuiltinTool]:
    """Tool objects from objects or names: "python" (PythonTool(**options['python']) or
    defaults) and "browser" (gptoss.tools.browser.BrowserTool.create(**options['browser']))."""
    tools: list[BuiltinTool] = []
    for item in spec or ():
        if isinstance(item, BuiltinTool):
            tools.append(item)
        elif item == "python":
            from .python import PythonTool
            tools.append(PythonTool(**options.get("python", {})))
        elif item == "browser":
            tools.append(_browser(**options.get("browser", {})))
        else:
            raise ToolError(f"a built-in tool is a BuiltinTool or 'python' / 'browser', "
                            f"got {item!r}")
    return tools


def _browser(**options) -> BuiltinTool:
    try:
        from .browser import BrowserTool
    except ImportError as exc:
        raise ToolError(f"the browser tool is not available: {exc}") from None
    return BrowserTool.create(**options)
