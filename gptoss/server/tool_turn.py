"""One Responses turn with built-in tools: the segments of gptoss/tools/loop.py as one stream.

`ToolTurn.events()` yields what a `Generation` yields (part events, one `Finished` at the end)
plus a `BuiltinCallDone` after each built-in call ran. Between segments the tool runs off the
event loop; its ToolOutput's messages extend the prompt and the next segment is submitted through
the same pipeline (its part numbers follow on). The turn's tools belong to its caller
(responses.py keeps them for a follow-up response, or closes them).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import AsyncIterator

from ..tools.base import ToolOutput, namespace_of
from ..tools.loop import ToolLoop
from . import pipeline
from .context import ServerContext
from .generation import Finished, Generation
from .pipeline import GenerationRequest


@dataclass
class BuiltinCallDone:
    part: int               # the call's part (its output item's index)
    namespace: str          # "python" | "browser"
    recipient: str          # the call's `to=` (e.g. `browser.search`)
    arguments: str          # what the model wrote (the code; the JSON arguments)
    output: ToolOutput


class ToolTurn:
    def __init__(self, ctx: ServerContext, req: GenerationRequest, first: Generation,
                 loop: ToolLoop) -> None:
        self.ctx, self.req, self.first, self.loop = ctx, req, first, loop
        self.stream = first.stream   # the current segment's (cancelled with the turn)

    async def events(self) -> AsyncIterator:
        gen, totals = self.first, []
        budget = gen.params.max_tokens if self.req.max_tokens is not None else None
        while True:
            self.stream = gen.stream
            finished = None
            async for event in gen.events():
                if isinstance(event, Finished):
                    finished = event
                else:
                    yield event
            totals.append(finished)
            if budget is not None:
                budget -= finished.completion_tokens
            step = self.loop.after(gen.output)
            if step is None or finished.reason == "length" or budget == 0:
                yield _total(totals, self._ends_on_builtin(gen))
                return
            result = await asyncio.to_thread(step.run)
            self.ctx.metrics.builtin_call(step.tool.name, result.error is None)
            yield BuiltinCallDone(step.part, step.tool.name, step.recipient, step.call.text,
                                  result)
            prompt = self.loop.continue_prompt(gen.prompt, gen.token_ids, result)
            gen = await pipeline.submit_segment(self.ctx, self.req, prompt, gen.params,
                                                self.loop.parts, budget)

    def _ends_on_builtin(self, gen: Generation) -> bool:
        calls = gen.output.tool_calls
        return bool(calls) and namespace_of(calls[-1].recipient) in self.loop.by_name


def _total(parts: list[Finished], ended_on_builtin: bool) -> Finished:
    """The turn's finish: the last segment's reason (a built-in call left unanswered at the call
    limit is a plain stop), usage summed over the segments."""
    last = parts[-1]
    reason = "stop" if ended_on_builtin and last.reason == "tool_calls" else last.reason
    return Finished(reason, sum(p.prompt_tokens for p in parts),
                    sum(p.completion_tokens for p in parts),
                    sum(p.reasoning_tokens for p in parts), sum(p.cached_tokens for p in parts))
