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
import re
import time
from dataclasses import dataclass, field
from typing import Any

import jsonschema
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
    api: str = "chat"                         # "responses": errors name its fields


# a sampling parameter's error → the wire field it came from (max_tokens: the request's own)
SAMPLING_PARAMS = {"temperature": "temperature", "top_p": "top_p", "seed": "seed",
                   "logprobs": "top_logprobs", "presence_penalty": "presence_penalty",
                   "frequency_penalty": "frequency_penalty"}
SEED_MODULUS = 2**63


def wire_param(path: str, req: GenerationRequest) -> str:
    """A chat-terms path (`tools[0].function.name`, `messages[2].content`) in the request's own
    wire terms (Responses: `tools[0].name`, `input`, `text.format`)."""
    if req.api != "responses":
        return path
    path = re.sub(r"^tools\[(\d+)\]\.function", r"tools[\1]", path)
    if path.startswith("messages"):
        return req.messages_param
    if path.startswith("response_format"):
        return req.format_param
    if path.startswith("tool_choice.function"):
        return "tool_choice"
    return path


def _error_param(message: str, req: GenerationRequest) -> str:
    """The field an error message names first (`tools[0].function.name: ...`), in wire terms."""
    head = re.match(r"([A-Za-z_][\w.\[\]]*):", message)
    return wire_param(head.group(1) if head else "messages", req)


def check_schemas(req: GenerationRequest) -> None:
    """Each tool's parameters and the response format's schema must be valid JSON Schemas (a
    400 naming the field), enforced or not."""
    for k, tool in enumerate(req.tools):
        _check_schema(tool.get("function", {}).get("parameters"),
                      wire_param(f"tools[{k}].function.parameters", req))
    fmt = req.response_format or {}
    if fmt.get("type") == "json_schema":
        where = "schema" if req.api == "responses" else "json_schema.schema"
        _check_schema((fmt.get("json_schema") or {}).get("schema"), f"{req.format_param}.{where}")


def _check_schema(schema: Any, param: str) -> None:
    if not isinstance(schema, dict):
        return  # absent, or refused by the harmony mapping with its own message
    try:
        jsonschema.validators.validator_for(schema, jsonschema.Draft202012Validator).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise InvalidRequest(f"{param}: not a valid JSON Schema: {exc.message}"
                             + (f" (at {where})" if where else ""), param=param) from None


async def start(ctx: ServerContext, req: GenerationRequest) -> list[Generation]:
    """Submit `req.n` generations (choice i seeded `seed + i`); raises APIError before any
    token is generated when the request cannot run."""
    lora = ctx.check_model(req.model)
    check_schemas(req)
    prompt = await _render(req)
    limit = ctx.token_limit(len(prompt), req.max_tokens, req.max_tokens_param)
    structured = StructuredOutput.for_chat(
        tools=req.tools, tool_choice=req.tool_choice, response_format=req.response_format,
        max_reasoning_tokens=req.max_reasoning_tokens)
    arrival, generations = time.monotonic(), []
    try:
        for i in range(req.n):
            seed = None if req.seed is None else (req.seed + i) % SEED_MODULUS
            params = _sampling(req, limit, seed, structured, lora)
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
        raise InvalidRequest(str(exc), param=_error_param(str(exc), req)) from None


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
        name = re.match(r"SamplingParams\.(\w+)", str(exc))
        field_name = name.group(1) if name else ""
        param = req.max_tokens_param if field_name == "max_tokens" else SAMPLING_PARAMS.get(field_name)
        raise InvalidRequest(str(exc), param=param) from None


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
