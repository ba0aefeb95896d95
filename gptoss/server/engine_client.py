"""The narrow engine interface the server depends on, and its adapter to the real engine.

    stream = engine.submit(prompt_ids, params, logits_processor=None)   # raises ValueError early
    async for event in stream: ...   # engine.events: TokenEvent, harmony parser events, FinishEvent
    stream.cancel()                  # frees the request's KV blocks

plus `tokenizer`, `context_length` and `gauges()` (for /metrics). `LocalEngine` adapts
`gptoss.engine.stream.AsyncEngine`; tests may pass any object with the same members.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator, Protocol

from ..engine.sampler import LogitsProcessor, SamplingParams
from .metrics import EngineGauges


class EventStream(Protocol):
    request_id: str

    def __aiter__(self) -> AsyncIterator[Any]: ...

    def cancel(self) -> None: ...


class EngineClient(Protocol):
    tokenizer: Any            # gptoss.harmony.tokenizer.Tokenizer
    context_length: int       # prompt + output tokens of one request, at most

    def submit(self, prompt: list[int], params: SamplingParams, *,
               logits_processor: LogitsProcessor | None = None) -> EventStream: ...

    def gauges(self) -> EngineGauges: ...

    def close(self) -> None: ...


class LocalEngine:
    """The in-process engine: an `LLM` stepped by `AsyncEngine`'s background thread."""

    def __init__(self, model: str | Path, **engine_options: Any) -> None:
        from ..engine.llm import LLM
        from ..engine.stream import AsyncEngine

        self.llm = LLM(model, **engine_options)
        self.tokenizer = self.llm.tokenizer
        self.context_length = self.llm.context_length
        self._engine = AsyncEngine(self.llm)

    def submit(self, prompt: list[int], params: SamplingParams, *,
               logits_processor: LogitsProcessor | None = None) -> EventStream:
        return self._engine.submit(prompt, params, harmony=True, logits_processor=logits_processor)

    def gauges(self) -> EngineGauges:
        stats = self.llm.stats()
        return EngineGauges(waiting=stats.waiting, running=stats.running,
                            kv_blocks_used=stats.kv_blocks_used, kv_blocks_total=stats.kv_blocks_total)

    def close(self) -> None:
        self._engine.close()
