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


@dataclass(frozen=True)
class ServerOptions:
    model_names: tuple[str, ...]            # names a request's `model` may use; the first is listed
    api_key: str | None = None              # when set, /v1/* needs `Authorization: Bearer KEY`
    db_path: str | Path = ":memory:"        # the response store (store.py); ":memory:" keeps nothing
    max_tokens_default: int | None = None   # output limit when a request gives none (None: context)
    # the engine's LoRA adapters, name -> folder: a request's `model` picks one by name
    lora: Mapping[str, str] = field(default_factory=dict)
    # built-in tools a Responses request may ask for: namespace ("python" | "browser") -> a
    # factory of a new BuiltinTool (one per response; closed when the response ends)
    builtin_tools: Mapping[str, Callable[[], BuiltinTool]] = field(default_factory=dict)

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
    tool_sessions: ToolSessions = field(init=False)   # built-in tools between responses

    def __post_init__(self) -> None:
        self.metrics = Metrics(self.engine.stats)
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
            served = ", ".join(f"`{n}`" for n in (self.model_name,) + self.options.lora_names)
            raise APIError(404, f"The model `{model}` does not exist; this server serves "
                                f"{served}.", param="model", code="model_not_found")
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
        self.tool_sessions.close()
        self.store.close()
        self.engine.close()
