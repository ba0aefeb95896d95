"""The engine loop: an `LLM` stepped by one background thread, for many concurrent clients.

The public engine face the server and the console depend on (a stub with the same members can
stand in for tests, see server/testing.py):

    engine = AsyncEngine.from_model("openai/gpt-oss-20b")   # or AsyncEngine(llm); close() ends it
    engine.tokenizer, engine.context_length, engine.eos_token_ids, engine.stats()
    stream = engine.submit(prompt_ids, params, logits_processor=None)
    async for event in stream: ...             # or `for event in stream:` from plain threads
    stream.cancel()                            # or engine.cancel(stream.request_id)

`submit` validates at once (raising `PromptError` / `SamplingParamsError` in the caller). Events
are one `events.TokenEvent` per generated token (id and logprobs) and a final
`events.FinishEvent` (`finish_reason` "stop" | "length" | "abort"; `error` set if the engine
itself failed): the engine neither decodes nor parses; each consumer owns its
`harmony.output.HarmonyOutput`. Cancelling frees the request's KV blocks before the next step.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
from pathlib import Path
from typing import Any

import torch

from .events import EventBuilder, FinishEvent
from .llm import LLM, EngineStats, Prompt, PromptError
from .sampler import LogitsProcessor, SamplingParams

_END = object()
log = logging.getLogger(__name__)


class RequestStream:
    """Events of one request, iterable with `async for` or plain `for` (blocking)."""

    def __init__(self, engine: "AsyncEngine", request_id: str):
        self.engine, self.request_id = engine, request_id
        self._items: queue.SimpleQueue = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None
        self._finished = False

    # called on the engine thread
    def _push(self, events: list) -> None:
        for event in events:
            self._items.put(event)
            if isinstance(event, FinishEvent):
                self._items.put(_END)
        loop = self._loop
        if loop is not None and events:
            loop.call_soon_threadsafe(self._ready.set)

    def cancel(self) -> None:
        if not self._finished:
            self.engine.cancel(self.request_id)

    def __iter__(self):
        while True:
            item = self._items.get()
            if item is _END:
                self._finished = True
                return
            yield item

    def __aiter__(self):
        return self

    async def __anext__(self) -> Any:
        if self._loop is None:
            self._loop, self._ready = asyncio.get_running_loop(), asyncio.Event()
        while True:
            try:
                item = self._items.get_nowait()
            except queue.Empty:
                self._ready.clear()
                try:  # re-check after clear: a push before this point is already queued
                    item = self._items.get_nowait()
                except queue.Empty:
                    await self._ready.wait()
                    continue
            if item is _END:
                self._finished = True
                raise StopAsyncIteration
            return item


class AsyncEngine:
    """`AsyncEngine(llm)` drives `llm` from its own thread (started unless `start=False`)."""

    def __init__(self, llm: LLM, *, start: bool = True):
        self.llm = llm
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._streams: dict[str, tuple[RequestStream, EventBuilder]] = {}
        self._active: set[str] = set()  # ids submitted and not yet finished
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="gptoss-engine", daemon=True)
        if start:
            self._thread.start()

    @classmethod
    def from_model(cls, model: str | Path | torch.nn.Module, **llm_options: Any) -> "AsyncEngine":
        """An engine over `LLM(model, **llm_options)` (a checkpoint folder or repo id)."""
        return cls(LLM(model, **llm_options))

    @property
    def tokenizer(self):
        return self.llm.tokenizer

    @property
    def context_length(self) -> int:
        """Prompt + output tokens of one request, at most."""
        return self.llm.context_length

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """The tokens that end a request whose SamplingParams name none (the checkpoint's)."""
        return tuple(self.llm.eos_token_ids)

    def stats(self) -> EngineStats:
        """Queue and KV-cache occupancy; safe to call from any thread."""
        return self.llm.stats()

    def submit(self, prompt: Prompt, params: SamplingParams | None = None, *,
               logits_processor: LogitsProcessor | None = None,
               request_id: str | None = None) -> RequestStream:
        if request_id is not None and request_id in self._active:
            raise PromptError(f"request id {request_id!r} is already in use")
        request = self.llm.make_request(prompt, params, request_id=request_id,
                                        logits_processor=logits_processor)
        self._active.add(request.request_id)
        stream = RequestStream(self, request.request_id)
        builder = EventBuilder(request)
        self._inbox.put(("add", request, stream, builder))
        self._wake.set()
        return stream

    def cancel(self, request_id: str) -> None:
        self._inbox.put(("abort", request_id))
        self._wake.set()

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> "AsyncEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the engine thread -------------------------------------------------------------------
    def _loop(self) -> None:
        """Take new and cancelled requests, step, publish each updated request's events."""
        while not self._stop:
            try:
                self._drain_inbox()
                if not self.llm.has_unfinished():
                    self._wake.wait()
                    self._wake.clear()
                    continue
                for request in self.llm.step():
                    self._publish(request.request_id)
            except Exception as exc:  # a failed step: end every stream with the error
                log.exception("engine step failed; aborting %d requests", len(self._streams))
                self._fail_all(f"{type(exc).__name__}: {exc}")

    def _drain_inbox(self) -> None:
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if item[0] == "add":
                _, request, stream, builder = item
                self._streams[request.request_id] = (stream, builder)
                self.llm.add_request(request)
            elif self.llm.abort(item[1]) is not None:
                self._publish(item[1])

    def _publish(self, request_id: str) -> None:
        if request_id not in self._streams:  # added to the LLM directly, not through submit
            return
        stream, builder = self._streams[request_id]
        stream._push(builder.update())
        if builder.request.finished:
            del self._streams[request_id]
            self._active.discard(request_id)

    def _fail_all(self, error: str) -> None:
        for request_id, (stream, builder) in list(self._streams.items()):
            self.llm.abort(request_id)
            stream._push(builder.finish(error))
            self._active.discard(request_id)
        self._streams.clear()
