"""Printing a request's event stream on a terminal (or as JSON lines).

Each printer takes the engine's events (`handle(TokenEvent)`, then `finish(FinishEvent)`) and
decodes the tokens once itself. `HarmonyPrinter` reads them through its own
`harmony.output.HarmonyOutput` (the mapping the server and `LLM.chat` use) and shows the parts:
reasoning dimmed (or under an `[analysis]` label without colour), the answer plainly, each
finished tool call as `-> RECIPIENT(ARGS)`. `RawPrinter` shows a plain completion's text;
`JsonPrinter` prints every event as a JSON line (debugging: tokens with their text, the harmony
parser's events, the finish).
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import TextIO

from ..engine import FinishEvent, TokenEvent
from ..engine.detokenizer import Detokenizer
from ..harmony.output import HarmonyOutput, PartDelta, PartDone, PartStarted
from ..harmony.parser import HarmonyStreamParser

DIM, RESET = "\x1b[2m", "\x1b[0m"


def event_json(event, **extra) -> str:
    """One event as a JSON object with a snake_case `type` (e.g. "text_delta", "finish")."""
    name = type(event).__name__.removesuffix("Event") or type(event).__name__
    kind = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    return json.dumps({"type": kind, **dataclasses.asdict(event), **extra}, ensure_ascii=False)


class HarmonyPrinter:
    """`output` holds the reply read so far (reasoning, content, tool_calls)."""

    def __init__(self, out: TextIO, tokenizer, *, color: bool, show_reasoning: bool = True):
        self.out, self.color, self.show_reasoning = out, color, show_reasoning
        self.output = HarmonyOutput(tokenizer)
        self._at_line_start = True
        self._dim = False  # the terminal is currently dimmed

    def handle(self, event) -> None:
        if isinstance(event, TokenEvent):
            for part in self.output.feed(event.token_id, event.logprobs):
                self.show(part)

    def show(self, event) -> None:
        """Show one part event (harmony.output)."""
        if isinstance(event, PartStarted):
            if event.kind == "reasoning" and self.show_reasoning and not self.color:
                self._write("[analysis] ", dim=False)
        elif isinstance(event, PartDelta) and event.kind != "tool_call":
            if event.kind == "text" or self.show_reasoning:
                self._write(event.text, dim=event.kind == "reasoning")
        elif isinstance(event, PartDone):
            self._done(event)
        self.out.flush()

    def _done(self, event: PartDone) -> None:
        if event.kind == "tool_call":
            if event.complete:
                self._line(f"-> {event.recipient}({event.text})", dim=False)
            return
        if event.kind == "reasoning" and not self.show_reasoning:
            return
        if not self._at_line_start:
            self._write("\n", dim=False)
        if event.kind == "reasoning":
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
        for part in self.output.close():
            self.show(part)
        if not self._at_line_start:
            self._write("\n", dim=False)
        if self._dim:
            self.out.write(RESET)
            self._dim = False
        self.out.flush()


class RawPrinter:
    """Prints a plain completion's decoded text as it streams (no harmony parsing); the stop
    token that ends it is not text."""

    def __init__(self, out: TextIO, tokenizer, stop_token_ids=()):
        self.out, self.stop_token_ids = out, frozenset(stop_token_ids)
        self.text = Detokenizer(tokenizer)

    def handle(self, event) -> None:
        if isinstance(event, TokenEvent) and event.token_id not in self.stop_token_ids:
            self.text.feed(event.token_id)
            self._show()

    def finish(self, event: FinishEvent) -> None:
        self.text.finish()
        self._show()
        self.out.write("\n")
        self.out.flush()

    def _show(self) -> None:
        delta = self.text.delta()
        if delta:
            self.out.write(delta)
            self.out.flush()


class JsonPrinter:
    """Every event as a JSON line: each token (with its decoded text; the stop token has none),
    the harmony parser's events it completes, then the finish."""

    def __init__(self, out: TextIO, tokenizer, stop_token_ids=()):
        self.out, self.stop_token_ids = out, frozenset(stop_token_ids)
        self.text = Detokenizer(tokenizer)
        self.parser = HarmonyStreamParser(tokenizer)

    def handle(self, event) -> None:
        if not isinstance(event, TokenEvent):
            return
        if event.token_id not in self.stop_token_ids:
            self.text.feed(event.token_id)
        self._print(event, text=self.text.delta())
        for parsed in self.parser.feed(event.token_id):
            self._print(parsed)

    def finish(self, event: FinishEvent) -> None:
        for parsed in self.parser.close():
            self._print(parsed)
        self._print(event)

    def _print(self, event, **extra) -> None:
        print(event_json(event, **extra), file=self.out, flush=True)
