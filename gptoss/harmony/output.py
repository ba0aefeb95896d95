"""A completion's harmony output as the OpenAI APIs see it: reasoning, text and tool-call parts.

The one mapping from harmony messages to parts, used by the server (both endpoints), `LLM.chat`,
`gptoss generate` and `gptoss chat`, so that all of them agree:
- a message with a recipient (`to=functions.NAME`, `to=browser.search`) is a tool call whose
  arguments are its text (streamed as they come); `name` drops the `functions.` prefix;
- otherwise the `analysis` channel is reasoning, and everything else (`final`, a recipient-less
  `commentary` preamble) is text: the answer.

`HarmonyOutput` owns a `HarmonyStreamParser` (one per engine request; a built-in tool loop starts
the next segment's at `first_part`, gptoss/tools/loop.py): feed it every generated token id (with its logprobs,
if any) in order and `close()` it at the end; each call returns the part events it completes.
Stop strings apply to the text parts only (as in the OpenAI API): once one matches, `stopped` is
set, the text is cut before it and later tokens are ignored (the caller ends the generation).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

from .parser import HarmonyStreamParser, MessageDone, MessageStarted, TextDelta
from .stop import StopMatcher
from .tokenizer import NUM_RANKS

PartKind = Literal["reasoning", "text", "tool_call"]


def part_kind(channel: str | None, recipient: str | None) -> PartKind:
    if recipient:
        return "tool_call"
    return "reasoning" if channel == "analysis" else "text"


def new_call_id() -> str:
    """An OpenAI-style tool call id: `call_` + 24 hex digits."""
    return f"call_{secrets.token_hex(12)}"


@dataclass
class PartStarted:
    part: int                     # parts are numbered from 0 in the order they start
    kind: PartKind
    name: str | None = None       # tool calls: the function name (recipient without `functions.`)
    call_id: str | None = None
    recipient: str | None = None  # tool calls: the full `to=` value


@dataclass
class PartDelta:
    part: int
    kind: PartKind
    text: str
    logprobs: list[Any] = field(default_factory=list)  # text parts: one per text token


@dataclass
class PartDone:
    part: int
    kind: PartKind
    text: str
    name: str | None = None
    call_id: str | None = None
    recipient: str | None = None
    content_type: str | None = None
    complete: bool = True         # False: cut off (no end token), or cut by a stop string


PartEvent = PartStarted | PartDelta | PartDone


@dataclass
class FunctionCall:
    """A tool call the model made: `name` is the recipient without `functions.` (`recipient`
    keeps the full `to=` value, e.g. `browser.search`)."""

    name: str
    arguments: str
    recipient: str
    content_type: str | None = None
    call_id: str | None = None


@dataclass
class _Open:
    kind: PartKind
    started: PartStarted
    content_type: str | None
    texts: list[str] = field(default_factory=list)


class HarmonyOutput:
    """Parses one completion's tokens into part events; see the module docstring.

    After `close()`, `reasoning`, `content` and `tool_calls` summarise the whole reply;
    `reasoning_tokens` counts the tokens generated inside reasoning parts.
    """

    def __init__(self, tokenizer=None, *, stop: Sequence[str] = (),
                 call_id: Callable[[], str] = new_call_id, first_part: int = 0) -> None:
        self.parser = HarmonyStreamParser(tokenizer)
        self.stop = StopMatcher(stop)
        self._call_id = call_id
        self._open: dict[int, _Open] = {}    # message index -> its part, while generated
        self._pending: list[Any] = []        # logprobs of text tokens not yet in a delta
        self._parts = first_part             # a tool loop's later segments number on
        self.reasoning_parts: list[str] = []
        self.text_parts: list[str] = []
        self.tool_calls: list[FunctionCall] = []
        self.reasoning_tokens = 0
        self.called = False                  # a tool-call part ended (finish reason tool_calls)

    @property
    def stopped(self) -> bool:
        return self.stop.hit

    @property
    def parts(self) -> int:
        """The number of the next part (parts started so far, plus `first_part`)."""
        return self._parts

    @property
    def reasoning(self) -> str:
        return "".join(self.reasoning_parts)

    @property
    def content(self) -> str:
        return "".join(self.text_parts)

    @property
    def messages(self) -> list:
        return self.parser.messages

    @property
    def warnings(self) -> list[str]:
        return self.parser.warnings

    def feed(self, token_id: int, logprobs: Any = None) -> list[PartEvent]:
        if self.stopped:
            return []
        current = self._open.get(len(self.parser.messages))  # the message being generated
        if current is not None and current.kind == "reasoning":
            self.reasoning_tokens += 1
        if current is not None and current.kind == "text" and logprobs is not None \
                and 0 <= token_id < NUM_RANKS:  # not the message's end token
            self._pending.append(logprobs)
        out: list[PartEvent] = []
        for event in self.parser.feed(token_id):
            out += self._translate(event)
            if self.stopped:
                return out + self._close_all()
        return out

    def feed_many(self, token_ids: Sequence[int]) -> list[PartEvent]:
        out: list[PartEvent] = []
        for token_id in token_ids:
            out += self.feed(token_id)
        return out

    def close(self) -> list[PartEvent]:
        """End of the completion: open parts are completed (a cut-off one as incomplete)."""
        if self.stopped:
            return self._close_all()
        out: list[PartEvent] = []
        for event in self.parser.close():
            out += self._translate(event)
        return out + self._close_all()

    # ---- parser events -> parts --------------------------------------------------------------
    def _translate(self, event) -> list[PartEvent]:
        if isinstance(event, MessageStarted):
            return self._started(event)
        if isinstance(event, TextDelta):
            return self._delta(event)
        if isinstance(event, MessageDone):
            return self._done(event.index, event.message.end_token is not None)
        return []  # ToolCall: the MessageDone of the same message carries it

    def _started(self, event: MessageStarted) -> list[PartEvent]:
        kind = part_kind(event.channel, event.recipient)
        name = call_id = None
        if kind == "tool_call":
            name, call_id = event.recipient.removeprefix("functions."), self._call_id()
        started = PartStarted(self._parts, kind, name, call_id, event.recipient)
        self._open[event.index] = _Open(kind, started, event.content_type)
        self._parts += 1
        self._pending = []
        return [started]

    def _delta(self, event: TextDelta) -> list[PartEvent]:
        part = self._open.get(event.index)
        if part is None:
            return []
        text = self.stop.feed(event.text) if part.kind == "text" else event.text
        if not text:
            return []
        part.texts.append(text)
        logprobs = []
        if part.kind == "text":
            logprobs, self._pending = self._pending, []
        return [PartDelta(part.started.part, part.kind, text, logprobs)]

    def _done(self, index: int, complete: bool) -> list[PartEvent]:
        part = self._open.pop(index, None)
        if part is None:
            return []
        s, out = part.started, []
        if part.kind == "text":
            rest = self.stop.flush()
            if rest or self._pending:
                out.append(PartDelta(s.part, part.kind, rest, self._pending))
                part.texts.append(rest)
        self._pending = []
        text = "".join(part.texts)
        if part.kind == "reasoning":
            self.reasoning_parts.append(text)
        elif part.kind == "text":
            self.text_parts.append(text)
        else:
            self.called = True
            self.tool_calls.append(FunctionCall(s.name, text, s.recipient, part.content_type,
                                                s.call_id))
        return out + [PartDone(s.part, part.kind, text, s.name, s.call_id, s.recipient,
                               part.content_type, complete and not self.stopped)]

    def _close_all(self) -> list[PartEvent]:
        return [e for index in list(self._open) for e in self._done(index, False)]
