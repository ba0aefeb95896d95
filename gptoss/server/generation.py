"""One engine request seen as the OpenAI APIs see it: the part events of `harmony.output`.

The engine streams token ids; a `Generation` owns the request's `HarmonyOutput`, which turns them
into reasoning, text and tool-call parts (the same mapping `LLM.chat` and the console use). Both
endpoints (chat.py, responses.py) render these parts in their own wire format.

Stop strings apply to the text parts (as in the OpenAI API), not to the chain of thought: the
engine gets none, and a match cuts the text and cancels the request.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import AsyncIterator, Literal

from ..engine import FinishEvent, TokenEvent
from ..harmony.output import HarmonyOutput, PartDelta, PartDone, PartStarted
from .engine_client import EventStream
from .metrics import Metrics
from .protocol import APIError

__all__ = ["Finished", "Generation", "PartDelta", "PartDone", "PartStarted", "merged"]


@dataclass
class Finished:
    reason: Literal["stop", "length", "tool_calls"]
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cached_tokens: int


PartEvent = PartStarted | PartDelta | PartDone | Finished


class Generation:
    """Yields one submitted request's part events; cancels the engine request when the consumer
    stops early (client gone) or a stop string matched."""

    def __init__(self, stream: EventStream, output: HarmonyOutput, prompt_tokens: int, *,
                 metrics: Metrics | None = None, arrival: float | None = None,
                 prompt: list[int] | None = None, params=None) -> None:
        self.stream, self.output, self.prompt_tokens = stream, output, prompt_tokens
        self.prompt, self.params = prompt, params   # what was submitted (a tool loop resubmits)
        self.token_ids: list[int] = []
        self.metrics, self.arrival = metrics, arrival or time.monotonic()
        self._tokens = 0
        self._finished = False

    async def events(self) -> AsyncIterator[PartEvent]:
        try:
            async for event in self.stream:
                for out in self._translate(event):
                    yield out
                    if isinstance(out, Finished):
                        return
                if self.output.stopped:  # its parts are closed already
                    self.stream.cancel()
                    yield self._finish("stop", None)
                    return
        finally:
            if not self._finished:
                self.stream.cancel()
                if self.metrics is not None:
                    self.metrics.request_cancelled()

    def _translate(self, event) -> list[PartEvent]:
        if isinstance(event, TokenEvent):
            if self._tokens == 0 and self.metrics is not None:
                self.metrics.first_token(time.monotonic() - self.arrival)
            self._tokens += 1
            self.token_ids.append(event.token_id)
            return self.output.feed(event.token_id, event.logprobs)
        if isinstance(event, FinishEvent):
            return self.output.close() + [self._finish(event.finish_reason, event)]
        return []

    def _finish(self, reason: str, event: FinishEvent | None) -> Finished:
        self._finished = True
        if event is not None and event.error:
            raise APIError(500, f"the engine failed: {event.error}", type="server_error")
        if reason == "abort":
            raise APIError(500, "the generation was aborted", type="server_error")
        final = "tool_calls" if self.output.called and reason == "stop" else reason
        usage = event.usage if event is not None else None
        completion = usage.completion_tokens if usage else self._tokens
        if self.metrics is not None:
            self.metrics.tokens(self.prompt_tokens, completion)
            self.metrics.finished(time.monotonic() - self.arrival)
        return Finished(final, self.prompt_tokens, completion, self.output.reasoning_tokens,
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
