"""Printing a request's event stream on a terminal (or as JSON lines).

`HarmonyPrinter` shows the chain of thought (analysis channel) dimmed, or under an `[analysis]`
label without colour, the answer (final channel) plainly, and tool calls as `-> NAME(ARGS)`.
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import TextIO

from .events import FinishEvent, TokenEvent

DIM, RESET = "\x1b[2m", "\x1b[0m"


def event_json(event) -> str:
    """One event as a JSON object with a snake_case `type` (e.g. "text_delta", "finish")."""
    name = type(event).__name__.removesuffix("Event") or type(event).__name__
    kind = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    return json.dumps({"type": kind, **dataclasses.asdict(event)}, ensure_ascii=False)


class HarmonyPrinter:
    def __init__(self, out: TextIO, *, color: bool, show_reasoning: bool = True):
        self.out, self.color, self.show_reasoning = out, color, show_reasoning
        self._channel: str | None = None
        self._at_line_start = True
        self._dim = False  # the terminal is currently dimmed

    def handle(self, event) -> None:
        kind = type(event).__name__
        if kind == "MessageStarted":
            self._start(event.channel, event.recipient)
        elif kind == "TextDelta" and event.recipient is None:
            if event.channel != "analysis" or self.show_reasoning:
                self._write(event.text, dim=event.channel == "analysis")
        elif kind == "MessageDone":
            self._end(event.message)
        elif kind == "ToolCall":
            self._line(f"-> {event.recipient}({event.arguments})", dim=False)
        self.out.flush()

    def _start(self, channel: str | None, recipient: str | None) -> None:
        self._channel = channel
        if recipient is None and channel == "analysis" and self.show_reasoning and not self.color:
            self._write("[analysis] ", dim=False)

    def _end(self, message) -> None:
        shown = message.recipient is None and (message.channel != "analysis" or self.show_reasoning)
        if shown and not self._at_line_start:
            self._write("\n", dim=False)
        if shown and message.channel == "analysis":
            self._write("\n", dim=False)  # a blank line between the thoughts and the answer

    def _line(self, text: str, *, dim: bool) -> None:
        if not self._at_line_start:
            self._write("\n", dim=False)
        self._write(text + "\n", dim=dim)

    def _write(self, text: str, *, dim: bool) -> None:
        if not text:
            return
        if self.color and dim != self._dim:  # switch styles only when they change
            self.out.write(DIM if dim else RESET)
            self._dim = dim
        self.out.write(text)
        self._at_line_start = text.endswith("\n")

    def finish(self, event: FinishEvent) -> None:
        if not self._at_line_start:
            self._write("\n", dim=False)
        if self._dim:
            self.out.write(RESET)
            self._dim = False
        self.out.flush()


class RawPrinter:
    """Prints the decoded output text as it streams (no harmony parsing)."""

    def __init__(self, out: TextIO):
        self.out = out

    def handle(self, event) -> None:
        if isinstance(event, TokenEvent) and event.text:
            self.out.write(event.text)
            self.out.flush()

    def finish(self, event: FinishEvent) -> None:
        self.out.write("\n")
        self.out.flush()
