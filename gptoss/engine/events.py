"""Per-request stream events: each sampled token, the harmony parser's events, the finish.

Per token the order is `TokenEvent`, then the parser events that token completes (harmony
`MessageStarted` / `TextDelta` / `MessageDone` / `ToolCall` from `gptoss.harmony.parser`); a
request ends with the parser's closing events and one `FinishEvent`.
"""
from __future__ import annotations

from dataclasses import dataclass

from .chat_output import Usage
from .request import Request
from .sampler import TokenLogprobs


@dataclass
class TokenEvent:
    request_id: str
    token_id: int
    text: str                      # newly decodable output text (may be "", see Detokenizer)
    logprobs: TokenLogprobs | None = None


@dataclass
class FinishEvent:
    request_id: str
    finish_reason: str             # "stop" | "length" | "abort"
    usage: Usage
    error: str | None = None       # set when the engine failed (finish_reason "abort")


class EventBuilder:
    """Turns a request's progress into events; call `update()` after each engine step."""

    def __init__(self, request: Request, *, harmony: bool = True, tokenizer=None):
        self.request, self._seen, self._done = request, 0, False
        self.parser = None
        if harmony:
            from ..harmony.parser import HarmonyStreamParser
            self.parser = HarmonyStreamParser(tokenizer)

    def update(self) -> list:
        if self._done:
            return []
        request, events = self.request, []
        new = request.output_token_ids[self._seen:]
        for i, token_id in enumerate(new):
            k = self._seen + i
            logprobs = request.logprobs[k] if k < len(request.logprobs) else None
            last = i == len(new) - 1
            text = request.detokenizer.delta() if last else ""
            events.append(TokenEvent(request.request_id, token_id, text, logprobs))
            if self.parser is not None:
                events += self.parser.feed(token_id)
        self._seen += len(new)
        if request.finish_reason is not None:
            events += self.finish()
        return events

    def finish(self, error: str | None = None) -> list:
        """The closing events (also used when the engine fails or the request is aborted)."""
        if self._done:
            return []
        self._done = True
        request = self.request
        events = self.parser.close() if self.parser is not None else []
        usage = Usage(len(request.prompt_token_ids), len(request.output_token_ids),
                      request.num_cached_tokens)
        return events + [FinishEvent(request.request_id, request.finish_reason or "abort", usage,
                                     error)]
