"""What every endpoint shares: the engine, the served model names, metrics, the response store and
the grammar compiler; plus the request-independent steps of a generation (model check, token
limit, sampling parameters, constraints, cancelling on disconnect)."""
from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

from ..engine.constraints import ConstraintError, ConstraintSpec, GrammarCompiler, HarmonyConstraint
from ..engine.sampler import SamplingParams, SamplingParamsError
from .engine_client import EngineClient
from .metrics import Metrics
from .protocol import APIError, InvalidRequest
from .store import ResponseStore

T = TypeVar("T")
DISCONNECT_POLL_S = 0.25


@dataclass(frozen=True)
class ServerOptions:
    model_names: tuple[str, ...]            # names a request's `model` may use; the first is listed
    api_key: str | None = None              # when set, /v1/* needs `Authorization: Bearer KEY`
    db_path: str | Path = ":memory:"        # the response store (store.py); ":memory:" keeps nothing
    max_tokens_default: int | None = None   # output limit when a request gives none (None: context)

    def __post_init__(self) -> None:
        if not self.model_names or not all(isinstance(n, str) and n for n in self.model_names):
            raise ValueError("ServerOptions.model_names must hold at least one non-empty name")


def model_names_for(model: str | os.PathLike, served_name: str | None = None) -> tuple[str, ...]:
    """The names a model answers to: an explicit name, else the repo id or the folder name
    (plus the path as given)."""
    given = str(model)
    names = [served_name] if served_name else []
    names += [Path(given.rstrip("/")).name or given, given]
    return tuple(dict.fromkeys(names))


@dataclass
class ServerContext:
    engine: EngineClient
    options: ServerOptions
    metrics: Metrics = field(init=False)
    store: ResponseStore = field(init=False)
    _compiler: GrammarCompiler | None = None
    _compiler_lock: asyncio.Lock | None = None

    def __post_init__(self) -> None:
        self.metrics = Metrics(self.engine.gauges)
        self.store = ResponseStore(self.options.db_path)

    @property
    def model_name(self) -> str:
        return self.options.model_names[0]

    def check_model(self, model: str) -> None:
        if model not in self.options.model_names:
            raise APIError(404, f"The model `{model}` does not exist; this server serves "
                                f"`{self.model_name}`.", param="model", code="model_not_found")

    def token_limit(self, prompt_len: int, requested: int | None, param: str) -> int:
        """The output-token limit: the request's, else the default, else the context's room."""
        room = self.engine.context_length - prompt_len
        if room <= 0 or (requested is not None and requested > room):
            asked = f" + {requested} output tokens" if requested is not None else ""
            raise InvalidRequest(
                f"This model's maximum context length is {self.engine.context_length} tokens; the "
                f"prompt has {prompt_len} tokens{asked}.", param=param, code="context_length_exceeded")
        if requested is not None:
            return requested
        return min(room, self.options.max_tokens_default or room)

    @staticmethod
    def sampling(*, max_tokens: int, temperature: float | None, top_p: float | None,
                 seed: int | None = None, logprobs: int | None = None,
                 presence_penalty: float | None = None,
                 frequency_penalty: float | None = None) -> SamplingParams:
        try:
            return SamplingParams(
                temperature=1.0 if temperature is None else temperature,
                top_p=1.0 if top_p is None else top_p, seed=seed, max_tokens=max_tokens,
                logprobs=logprobs, presence_penalty=presence_penalty or 0.0,
                frequency_penalty=frequency_penalty or 0.0)
        except SamplingParamsError as exc:
            raise InvalidRequest(str(exc)) from None

    async def constraint(self, spec: ConstraintSpec | None, param: str) -> HarmonyConstraint | None:
        """A fresh constraint for `spec` (compiled off the event loop); None for none."""
        if spec is None:
            return None
        if self._compiler_lock is None:
            self._compiler_lock = asyncio.Lock()
        async with self._compiler_lock:
            if self._compiler is None:  # ~1.5 s once: llguidance's view of the vocabulary
                self._compiler = await asyncio.to_thread(GrammarCompiler, self.engine.tokenizer)
        try:
            return await asyncio.to_thread(self._compiler.compile, spec)
        except ConstraintError as exc:
            raise InvalidRequest(str(exc), param=param) from None

    @staticmethod
    async def until_disconnect(work: Awaitable[T], is_disconnected: Callable[[], Awaitable[bool]]) -> T:
        """Run `work`; cancel it (which cancels its engine requests) if the client goes away."""
        task = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
                if done:
                    return task.result()
                if await is_disconnected():
                    task.cancel()
                    raise APIError(499, "client closed the request", code="client_closed")
        finally:
            if not task.done():
                task.cancel()

    def close(self) -> None:
        self.store.close()
        self.engine.close()


def constraint_spec(*, max_tokens: int, tools: list[tuple[str, dict | None]], tool_choice: Any,
                    final_schema: dict | None,
                    max_reasoning_tokens: int | None) -> ConstraintSpec | None:
    """Which reply to enforce. `tool_choice`: "auto" | "none" | "required" | a function name.

    required → a call to one of `tools`; a name → a call to it; auto with a response format →
    the format or a call; a response format alone → the format; otherwise nothing is enforced.
    """
    from ..engine.constraints import ToolSchema

    if tool_choice == "none":
        tools = []
    if tool_choice not in ("auto", "none", "required"):
        tools = [t for t in tools if t[0] == tool_choice]
    schemas = tuple(ToolSchema(name, params) for name, params in tools)
    if tool_choice not in ("auto", "none") and schemas:
        return ConstraintSpec(max_tokens=max_tokens, tools=schemas,
                              max_reasoning_tokens=max_reasoning_tokens)
    if final_schema is not None:
        return ConstraintSpec(max_tokens=max_tokens, final_schema=final_schema, tools=schemas,
                              max_reasoning_tokens=max_reasoning_tokens)
    return None
