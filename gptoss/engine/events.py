"""Per-request stream events: each sampled token, then the finish.

The engine emits token ids (and logprobs), not text and not harmony: each consumer decodes the
tokens it reads once (its own `harmony.output.HarmonyOutput`, or a `Detokenizer` for plain
text). A request's events are one `TokenEvent` per generated token and one `FinishEvent`.
"""
from __future__ import annotations

from dataclasses import dataclass

from .request import Request, Usage
from .sampler import TokenLogprobs


@dataclass
class TokenEvent:
    request_id: str
    token_id: int
    logprobs: TokenLogprobs | None = None


@dataclass
class FinishEvent:
    request_id: str
    finish_reason: str             # "stop" | "length" | "abort"
    usage: Usage
    error: str | None = None       # set when the engine failed (finish_reason "abort")


class EventBuilder:
    """Turns a request's progress into events; call `update()` after each engine step."""

    def __init__(self, request: Request):
        self.request, self._seen, self._done = request, 0, False

    def update(self) -> list:
        if self._done:
            return []
        request = self.request
        new = request.output_token_ids[self._seen:]
        logprobs = request.logprobs
        events: list = [TokenEvent(request.request_id, token_id,
                                   logprobs[k] if k < len(logprobs) else None)
                        for k, token_id in enumerate(new, self._seen)]
        self._seen += len(new)
        if request.finish_reason is not None:
            events += self.finish()
        return events

    def finish(self, error: str | None = None) -> list:
        """The closing event (also used when the engine fails or the request is aborted)."""
        if self._done:
            return []
        self._done = True
        request = self.request
        return [FinishEvent(request.request_id, request.finish_reason or "abort", request.usage(),
                            error)]
