"""`POST /tokenize` and `POST /detokenize`, with vLLM's request and response shapes.

    /tokenize   {"model"?, "prompt": "text", "add_special_tokens"?, "return_token_strs"?}
                {"model"?, "messages": [...], "tools"?, "add_generation_prompt"?, ...}
                → {"count", "max_model_len", "tokens", "token_strs"}
    /detokenize {"model"?, "tokens": [ids]} → {"prompt": "text"}

A prompt's special-token text (`<|start|>`) is read as special tokens, as /v1/completions reads
it; messages are rendered as /v1/chat/completions renders them (the harmony prompt up to the
assistant's turn). `model`, when given, must be a served name.
"""
from __future__ import annotations

import asyncio
from typing import Any

from pydantic import Field, model_validator

from ..harmony.chat import ChatFormatError, render_chat
from .context import ServerContext
from .protocol import ChatMessage, ChatTool, Int, InvalidRequest, ReasoningEffortName, RequestBody


class TokenizeRequest(RequestBody):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    tools: list[ChatTool] | None = None
    reasoning_effort: ReasoningEffortName | None = None
    add_generation_prompt: bool = True
    add_special_tokens: bool = True
    return_token_strs: bool = False

    @model_validator(mode="after")
    def _one_input(self) -> "TokenizeRequest":
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give either 'prompt' or 'messages'")
        return self


class DetokenizeRequest(RequestBody):
    model: str | None = None
    tokens: list[Int] = Field(max_length=1 << 20)


async def tokenize(ctx: ServerContext, req: TokenizeRequest) -> dict[str, Any]:
    if req.model is not None:
        ctx.check_model(req.model)
    tokenizer = ctx.engine.tokenizer
    if req.prompt is not None:
        ids = tokenizer.encode(req.prompt, allowed_special="all")
    else:
        ids = await _render(tokenizer, req)
    out: dict[str, Any] = {"count": len(ids), "max_model_len": ctx.engine.context_length,
                           "tokens": ids, "token_strs": None}
    if req.return_token_strs:
        out["token_strs"] = [tokenizer.token_bytes(t).decode("utf-8", errors="replace") for t in ids]
    return out


async def _render(tokenizer, req: TokenizeRequest) -> list[int]:
    messages = [m.model_dump(exclude_none=True) for m in req.messages or []]
    tools = [t.model_dump(exclude_none=True) for t in req.tools or []] or None
    try:
        ids = await asyncio.to_thread(render_chat, messages, tools=tools,
                                      reasoning_effort=req.reasoning_effort)
    except ChatFormatError as exc:
        raise InvalidRequest(str(exc), param="messages") from None
    if not req.add_generation_prompt:
        return _without_generation_prompt(tokenizer, ids)
    return ids


def _without_generation_prompt(tokenizer, ids: list[int]) -> list[int]:
    """The rendering without its trailing `<|start|>assistant` (the generation prompt)."""
    tail = tokenizer.encode("<|start|>assistant", allowed_special="all")
    return ids[:-len(tail)] if ids[-len(tail):] == tail else ids


def detokenize(ctx: ServerContext, req: DetokenizeRequest) -> dict[str, Any]:
    if req.model is not None:
        ctx.check_model(req.model)
    tokenizer = ctx.engine.tokenizer
    pieces = []
    for k, token in enumerate(req.tokens):
        try:
            pieces.append(tokenizer.token_bytes(token))
        except (KeyError, ValueError, OverflowError):
            raise InvalidRequest(f"tokens[{k}]: {token} is not a token id of this model",
                                 param=f"tokens[{k}]") from None
    return {"prompt": b"".join(pieces).decode("utf-8", errors="replace")}
