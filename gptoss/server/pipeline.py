"""The one request pipeline both endpoints share.

chat.py and responses.py translate their wire format into a `GenerationRequest` (chat-completions
terms: messages, tools, tool_choice, response_format) and `start` does the rest, in order:
check the model (the base, or a LoRA adapter by name) → render the harmony prompt → the output-token limit (the engine's context rule)
→ the structured output to enforce (`engine.StructuredOutput`) → sampling parameters → submit one
engine request per choice, each with its own `HarmonyOutput` (`generation.Generation`).
Each failure is an OpenAI error naming the request field (`*_param`) it came from.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from openai_harmony import ToolNamespaceConfig

from ..engine import ConstraintError, SamplingParams, SamplingParamsError, StructuredOutput
from ..harmony.chat import ChatFormatError, render_chat
from ..harmony.output import HarmonyOutput
from .context import ServerContext
from .generation import Generation
from .protocol import InvalidRequest


@dataclass
class GenerationRequest:
    """What an endpoint asks the engine for, in chat-completions terms."""

    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = None                   # "auto" | "none" | "required" | {"type": "function", …}
    response_format: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    max_tokens: int | None = None
    max_reasoning_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    logprobs: int | None = None               # top-n logprobs per token; None: none
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: list[str] = field(default_factory=list)
    n: int = 1
    builtin_tools: list[ToolNamespaceConfig] = field(default_factory=list)  # rendered in system
    # the wire fields errors name
    messages_param: str = "messages"
    max_tokens_param: str = "max_completion_tokens"
    format_param: str = "response_format"


async def start(ctx: ServerContext, req: GenerationRequest) -> list[Generation]:
    """Submit `req.n` generations (choice i seeded `seed + i`); raises APIError before any
    token is generated when the request cannot run."""
    lora = ctx.check_model(req.model)
    prompt = await _render(req)
    limit = ctx.token_limit(len(prompt), req.max_tokens, req.max_tokens_param)
    structured = StructuredOutput.for_chat(
        tools=req.tools, tool_choice=req.tool_choice, response_format=req.response_format,
        max_reasoning_tokens=req.max_reasoning_tokens)
    arrival, generations = time.monotonic(), []
    try:
        for i in range(req.n):
            params = _sampling(req, limit, None if req.seed is None else req.seed + i, structured,
                               lora)
            generations.append(await _submit(ctx, req, prompt, params, arrival))
    except BaseException:
        for g in generations:
            g.stream.cancel()
        raise
    return generations


async def _render(req: GenerationRequest) -> list[int]:
    try:
        return await asyncio.to_thread(
            render_chat, req.messages, tools=req.tools or None, tool_choice=req.tool_choice,
            reasoning_effort=req.reasoning_effort, response_format=req.response_format,
            builtin_tools=req.builtin_tools or None)
    except ChatFormatError as exc:
        raise InvalidRequest(str(exc), param=req.messages_param) from None


def _sampling(req: GenerationRequest, limit: int, seed: int | None,
              structured: StructuredOutput | None, lora: str | None) -> SamplingParams:
    try:
        return SamplingParams(
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p, seed=seed, max_tokens=limit,
            logprobs=req.logprobs, presence_penalty=req.presence_penalty or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0, structured_output=structured,
            lora=lora)
    except SamplingParamsError as exc:
        raise InvalidRequest(str(exc)) from None


async def _submit(ctx: ServerContext, req: GenerationRequest, prompt: list[int],
                  params: SamplingParams, arrival: float, first_part: int = 0) -> Generation:
    """One engine request. A structured output is compiled by the engine inside `submit` (about
    1.5 s the first time), so that submit runs off the event loop. A built-in tool loop submits
    each later segment of a turn here too (`first_part` numbers its parts on)."""
    try:
        if params.structured_output is not None:
            stream = await asyncio.to_thread(ctx.engine.submit, prompt, params)
        else:
            stream = ctx.engine.submit(prompt, params)
    except ConstraintError as exc:
        param = "tool_choice" if params.structured_output.json_schema is None else req.format_param
        raise InvalidRequest(str(exc), param=param) from None
    except ValueError as exc:  # PromptError / SamplingParamsError from the engine
        raise InvalidRequest(str(exc)) from None
    output = HarmonyOutput(ctx.engine.tokenizer, stop=req.stop, first_part=first_part)
    return Generation(stream, output, len(prompt), metrics=ctx.metrics, arrival=arrival,
                      prompt=prompt, params=params)


async def submit_segment(ctx: ServerContext, req: GenerationRequest, prompt: list[int],
                         params: SamplingParams, first_part: int,
                         max_tokens: int | None) -> Generation:
    """A tool loop's next segment of a turn (see server/tool_turn.py): `max_tokens` is what is
    left of the request's limit (None: the context's room)."""
    limit = ctx.token_limit(len(prompt), max_tokens, req.max_tokens_param)
    return await _submit(ctx, req, prompt, dataclasses.replace(params, max_tokens=limit),
                         time.monotonic(), first_part)
