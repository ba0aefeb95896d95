"""The engine interface the server depends on: `gptoss.engine.AsyncEngine`'s public face.

    stream = engine.submit(prompt_ids, params)   # raises ValueError (PromptError, …) early
    async for event in stream: ...   # engine.events: TokenEvent per token, then FinishEvent
    stream.cancel()                  # frees the request's KV blocks

plus `tokenizer`, `context_length`, `eos_token_ids` and `stats()` (for /metrics). Tests pass a stub with the same
members (server/testing.py).
"""
from __future__ import annotations

from typing import Any, AsyncIterator, Protocol

from ..engine import EngineStats, SamplingParams


class EventStream(Protocol):
    request_id: str

    def __aiter__(self) -> AsyncIterator[Any]: ...

    def cancel(self) -> None: ...


class EngineClient(Protocol):
    tokenizer: Any            # gptoss.harmony.tokenizer.Tokenizer
    context_length: int       # prompt + output tokens of one request, at most
    eos_token_ids: tuple[int, ...]  # the tokens that end a request by default

    def submit(self, prompt: list[int], params: SamplingParams) -> EventStream: ...

    def stats(self) -> EngineStats: ...

    def close(self) -> None: ...
