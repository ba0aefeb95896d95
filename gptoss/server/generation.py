"""One engine request seen as the OpenAI APIs see it: reasoning, text and tool-call parts.

Harmony messages map to parts: `analysis` → reasoning; `final` and recipient-less `commentary`
(a preamble) → text; a message with a recipient (`to=functions.NAME`) → a tool call whose
arguments are its text. Both endpoints (chat.py, responses.py) render these parts in their own
wire format, so the harmony → OpenAI semantics live here only.

Stop strings apply to the text parts (as in the OpenAI API), not to the chain of thought: the
engine gets none, and a match here cuts the text and cancels the request.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Literal

from ..engine.events import FinishEvent, TokenEvent
from ..engine.sampler import SamplingParams, TokenLogprobs
from ..harmony.parser import MessageDone, MessageStarted, TextDelta
from ..harmony.tokenizer import NUM_RANKS
from .engine_client import EngineClient
from .metrics import Metrics
from .protocol import APIError, new_id

log = logging.getLogger(__name__)
PartKind = Literal["reasoning", "text", "tool_call"]


@dataclass
class PartStarted:
    part: int
    kind: PartKind
    name: str | None = None       # tool calls: the function name
    call_id: str | None = None


@dataclass
class PartDelta:
    part: int
    kind: PartKind
    text: str
    logprobs: list[TokenLogprobs] = field(default_factory=list)  # text parts only


@dataclass
class PartDone:
    part: int
    kind: PartKind
    text: str
    name: str | None = None
    call_id: str | None = None


@dataclass
class Finished:
    reason: Literal["stop", "length", "tool_calls"]
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cached_tokens: int


PartEvent = PartStarted | PartDelta | PartDone | Finished


def part_kind(channel: str | None, recipient: str | None) -> PartKind:
    if recipient:
        return "tool_call"
    return "reasoning" if channel == "analysis" else "text"


class StopText:
    """Cuts streamed text at the first stop string; holds back a possible prefix of one."""

    def __init__(self, stop: list[str]) -> None:
        self.stop, self.held, self.hit = stop, "", False
        self.keep = max(map(len, stop)) - 1 if stop else 0

    def feed(self, text: str) -> str:
        self.held += text
        found = [i for i in (self.held.find(s) for s in self.stop) if i >= 0]
        if found:
            self.hit, out, self.held = True, self.held[:min(found)], ""
            return out
        cut = max(0, len(self.held) - self.keep)
        out, self.held = self.held[:cut], self.held[cut:]
        return out

    def flush(self) -> str:
        out, self.held = self.held, ""
        return out


class Generation:
    """Submits one request and yields its part events; cancels the engine request when the
    consumer stops early (client gone) or a stop string matched."""

    def __init__(self, engine: EngineClient, prompt: list[int], params: SamplingParams, *,
                 processor=None, stop: list[str] | None = None, metrics: Metrics | None = None,
                 arrival: float | None = None) -> None:
        self.engine, self.prompt, self.params, self.processor = engine, prompt, params, processor
        self.metrics, self.arrival = metrics, arrival or time.monotonic()
        self.stop = StopText(stop or [])
        self.stream = engine.submit(prompt, params, logits_processor=processor)  # may raise
        self._parts: dict[int, tuple[int, PartKind, str | None, str | None]] = {}  # msg → part
        self._texts: dict[int, list[str]] = {}
        self._pending: list[TokenLogprobs] = []
        self._current: int | None = None      # message index being generated
        self._reasoning = self._tokens = 0
        self._called = self._finished = False

    async def events(self) -> AsyncIterator[PartEvent]:
        try:
            async for event in self.stream:
                for out in self._translate(event):
                    yield out
                    if isinstance(out, Finished):
                        return
                if self.stop.hit:
                    self.stream.cancel()
                    for out in self._close_parts():
                        yield out
                    yield self._finish("stop", None)
                    return
        finally:
            if not self._finished:
                self.stream.cancel()
                if self.metrics is not None:
                    self.metrics.request_cancelled()

    def _translate(self, event) -> list[PartEvent]:
        if isinstance(event, TokenEvent):
            return self._token(event)
        if isinstance(event, MessageStarted):
            return self._started(event)
        if isinstance(event, TextDelta):
            return self._delta(event)
        if isinstance(event, MessageDone):
            return self._done(event.index)
        if isinstance(event, FinishEvent):
            return self._close_parts() + [self._finish(event.finish_reason, event)]
        return []  # ToolCall: the MessageDone of the same message carries it

    def _token(self, event: TokenEvent) -> list[PartEvent]:
        if self._tokens == 0 and self.metrics is not None:
            self.metrics.first_token(time.monotonic() - self.arrival)
        self._tokens += 1
        part = self._parts.get(self._current) if self._current is not None else None
        if part is not None and part[1] == "reasoning":
            self._reasoning += 1
        text_token = event.token_id < NUM_RANKS  # not the message's end token
        if part is not None and part[1] == "text" and event.logprobs is not None and text_token:
            self._pending.append(event.logprobs)
        return []

    def _started(self, event: MessageStarted) -> list[PartEvent]:
        kind = part_kind(event.channel, event.recipient)
        name = call_id = None
        if kind == "tool_call":
            name, call_id = event.recipient.removeprefix("functions."), new_id("call_")
        self._parts[event.index] = (len(self._parts), kind, name, call_id)
        self._texts[event.index] = []
        self._current, self._pending = event.index, []
        return [PartStarted(self._parts[event.index][0], kind, name, call_id)]

    def _delta(self, event: TextDelta) -> list[PartEvent]:
        if event.index not in self._parts:
            return []
        part, kind, _, _ = self._parts[event.index]
        text = self.stop.feed(event.text) if kind == "text" else event.text
        if not text:
            return []
        self._texts[event.index].append(text)
        logprobs = []
        if kind == "text":
            logprobs, self._pending = self._pending, []
        return [PartDelta(part, kind, text, logprobs)]

    def _done(self, index: int) -> list[PartEvent]:
        if index not in self._parts or self._texts.get(index) is None:
            return []
        part, kind, name, call_id = self._parts[index]
        out: list[PartEvent] = []
        rest = self.stop.flush() if kind == "text" else ""
        if rest or (kind == "text" and self._pending):
            out.append(PartDelta(part, kind, rest, self._pending))
            self._texts[index].append(rest)
        self._called |= kind == "tool_call"
        text = "".join(self._texts.pop(index))
        self._texts[index] = None  # done; later events for it are ignored
        self._current, self._pending = None, []
        return out + [PartDone(part, kind, text, name, call_id)]

    def _close_parts(self) -> list[PartEvent]:
        open_ = [i for i, texts in self._texts.items() if texts is not None]
        return [e for i in open_ for e in self._done(i)]

    def _finish(self, reason: str, event: FinishEvent | None) -> Finished:
        self._finished = True
        if event is not None and event.error:
            raise APIError(500, f"the engine failed: {event.error}", type="server_error")
        if reason == "abort":
            raise APIError(500, "the generation was aborted", type="server_error")
        if self.processor is not None and getattr(self.processor, "error", None):
            log.warning("constraint left its grammar: %s", self.processor.error)
        final = "tool_calls" if self._called and reason == "stop" else reason
        usage = event.usage if event is not None else None
        completion = usage.completion_tokens if usage else self._tokens
        if self.metrics is not None:
            self.metrics.tokens(len(self.prompt), completion)
            self.metrics.finished(time.monotonic() - self.arrival)
        return Finished(final, len(self.prompt), completion, self._reasoning,
                        usage.cached_tokens if usage else 0)


async def merged(generations: list[Generation]) -> AsyncIterator[tuple[int, PartEvent]]:
    """The events of several generations (choices of one request) as they come, tagged by index."""
    if len(generations) == 1:
        async for event in generations[0].events():
            yield 0, event
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, gen: Generation) -> None:
        try:
            async for event in gen.events():
                await queue.put((i, event))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            await queue.put((i, exc))
        finally:
            await queue.put((i, None))

    tasks = [asyncio.create_task(pump(i, g)) for i, g in enumerate(generations)]
    try:
        live = len(tasks)
        while live:
            i, item = await queue.get()
            if item is None:
                live -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for task in tasks:
            task.cancel()
