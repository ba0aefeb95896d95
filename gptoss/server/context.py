"""What every endpoint shares: the engine, the served model names, metrics and the response
store; plus the request-independent checks (model name, token limit) and cancelling on
disconnect. The request pipeline itself is pipeline.py."""
from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Mapping, TypeVar

from ..engine import ContextLengthError, output_limit
from ..tools.base import BuiltinTool
from .engine_client import EngineClient
from .metrics import Metrics
from .protocol import APIError, InvalidRequest
from .store import ResponseStore
from .tool_sessions import ToolSessions

T = TypeVar("T")
DISCONNECT_POLL_S = 0.25
MAX_REQUEST_BYTES = 8 * 2**20    # a whole 131k-token context as JSON text is well under 2 MiB
MAX_TOKENS_DEFAULT = 16384       # `gptoss serve`'s output cap for requests that set none


@dataclass(frozen=True)
class ServerOptions:
    model_names: tuple[str, ...]            # names a request's `model` may use
    listed: int = 1                         # how many of them (the first) /v1/models lists
    api_key: str | None = None              # when set, /v1/* needs `Authorization: Bearer KEY`
    db_path: str | Path = ":memory:"        # the response store (store.py); ":memory:" keeps nothing
    max_tokens_default: int | None = None   # output limit when a request gives none (None: context)
    # the engine's LoRA adapters, name -> folder: a request's `model` picks one by name
    lora: Mapping[str, str] = field(default_factory=dict)
    # built-in tools a Responses request may ask for: namespace ("python" | "browser") -> a
    # factory of a new BuiltinTool (one per response; closed when the response ends)
    builtin_tools: Mapping[str, Callable[[], BuiltinTool]] = field(default_factory=dict)

    max_request_bytes: int = MAX_REQUEST_BYTES  # larger bodies get a 413 before they are read

    @property
    def lora_names(self) -> tuple[str, ...]:
        return tuple(self.lora)

    def __post_init__(self) -> None:
        if not self.model_names or not all(isinstance(n, str) and n for n in self.model_names):
            raise ValueError("ServerOptions.model_names must hold at least one non-empty name")
        object.__setattr__(self, "lora", {n: str(f) for n, f in dict(self.lora).items()})
        clash = [n for n in self.lora_names if n in self.model_names]
        if clash:
            raise ValueError(f"LoRA adapter name {clash[0]!r} is also a name of the base model; "
                             "give the adapter another name")
        if not 1 <= self.listed <= len(self.model_names):
            raise ValueError("ServerOptions.listed must be between 1 and len(model_names)")
        if self.max_request_bytes < 1:
            raise ValueError("ServerOptions.max_request_bytes must be at least 1")


def model_names_for(model: str | os.PathLike,
                    served_names: str | list[str] | tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The names a model answers to: the explicit names, else the repo id or the folder name
    (plus the path as given, which /v1/models does not list)."""
    given = str(model)
    if isinstance(served_names, str):
        served_names = [served_names]
    names = [n for n in served_names or () if n]
    if not names:
        names = [Path(given.rstrip("/")).name or given, given]
    return tuple(dict.fromkeys(names))


@dataclass
class ServerContext:
    engine: EngineClient
    options: ServerOptions
    store: ResponseStore | None = None      # opened from options.db_path when not given
    metrics: Metrics = field(init=False)
    tool_sessions: ToolSessions = field(init=False)   # built-in tools between responses
    background: dict[str, asyncio.Task] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.metrics = Metrics(self.engine.stats)
        if self.store is None:
            self.store = ResponseStore(self.options.db_path)
        self.tool_sessions = ToolSessions()

    @property
    def model_name(self) -> str:
        return self.options.model_names[0]

    def check_model(self, model: str) -> str | None:
        """The LoRA adapter a request's `model` names (None: the base model); a 404 error for a
        name the server does not serve."""
        if model in self.options.lora_names:
            return model
        if model not in self.options.model_names:
            served = ", ".join(f"`{n}`" for n in self.options.model_names[:self.options.listed]
                               + self.options.lora_names)
            raise APIError(404, f"The model `{model}` does not exist; this server serves {served}.",
                           param="model", code="model_not_found")
        return None

    def token_limit(self, prompt_len: int, requested: int | None, param: str) -> int:
        """The output-token limit: the request's, else the default, else the context's room (the
        engine's rule, `engine.output_limit`, answered as OpenAI's error)."""
        try:
            room = output_limit(self.engine.context_length, prompt_len, requested)
        except ContextLengthError as exc:
            asked = f" + {requested} output tokens" if requested is not None else ""
            raise InvalidRequest(
                f"This model's maximum context length is {exc.context_length} tokens; the "
                f"prompt has {exc.prompt_tokens} tokens{asked}.", param=param,
                code="context_length_exceeded") from None
        if requested is not None:
            return requested
        return min(room, self.options.max_tokens_default or room)

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
        for task in list(self.background.values()):
            task.cancel()
        self.tool_sessions.close()
        self.store.close()
        self.engine.close()
