"""`POST /v1/chat/completions`: a chat request → harmony prompt → engine → OpenAI chat objects.

The chain of thought goes to `reasoning_content` (mirrored in `reasoning`), never to `content`;
tool calls go to `tool_calls` (arguments streamed as deltas); `finish_reason` is `tool_calls`
when the turn ended in a call. `tool_choice` required/named and `response_format` are enforced
by the engine's structured output (engine/constraints.py); the steps in between are pipeline.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from ..engine import TokenLogprobs
from . import pipeline
from .context import ServerContext
from .generation import Finished, Generation, PartDelta, PartDone, PartStarted, merged
from .pipeline import GenerationRequest
from .protocol import (
    AssistantMessage, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Choice,
    ChoiceLogprobs, ChunkChoice, CompletionTokensDetails, Delta, DeltaFunction, DeltaToolCall,
    FunctionCall, PromptTokensDetails, TokenLogprob, ToolCall, TopLogprob, UnsupportedFeature,
    Usage, new_id, now)
from .responses_protocol import BUILTIN_TOOL_TYPES


def token_logprob(tokenizer, lp: TokenLogprobs) -> TokenLogprob:
    def top(token_id: int, logprob: float) -> TopLogprob:
        raw = tokenizer.token_bytes(token_id)
        return TopLogprob(token=raw.decode("utf-8", errors="replace"), logprob=logprob,
                          bytes=list(raw))

    chosen = top(lp.token_id, lp.logprob)
    return TokenLogprob(**chosen.model_dump(), top_logprobs=[top(t, v) for t, v in lp.top])


def _unsupported(req: ChatCompletionRequest) -> None:
    if req.audio is not None or (req.modalities and set(req.modalities) - {"text"}):
        raise UnsupportedFeature("audio output is not supported by gpt-oss", param="modalities")
    if req.logit_bias:
        raise UnsupportedFeature("logit_bias is not supported", param="logit_bias")
    for k, tool in enumerate(req.tools or []):
        if tool.type != "function":
            where = ("built-in tools run on /v1/responses only"
                     if tool.type in BUILTIN_TOOL_TYPES else "only function tools are supported")
            raise UnsupportedFeature(f"tools[{k}]: tools of type {tool.type!r} are not supported "
                                     f"by chat completions ({where})", param=f"tools[{k}].type")


def generation_request(req: ChatCompletionRequest) -> GenerationRequest:
    """The chat-completions wire request in the pipeline's terms."""
    _unsupported(req)
    choice = req.tool_choice.model_dump() if req.tool_choice and not isinstance(req.tool_choice, str) \
        else req.tool_choice
    fmt = (req.response_format.model_dump(by_alias=True, exclude_none=True)
           if req.response_format else None)
    return GenerationRequest(
        model=req.model, messages=[m.model_dump(exclude_none=True) for m in req.messages],
        tools=[t.model_dump(exclude_none=True) for t in req.tools or []], tool_choice=choice,
        response_format=fmt, reasoning_effort=req.reasoning_effort, max_tokens=req.token_limit,
        max_reasoning_tokens=req.max_reasoning_tokens, temperature=req.temperature,
        top_p=req.top_p, seed=req.seed, logprobs=(req.top_logprobs or 0) if req.logprobs else None,
        presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty,
        stop=req.stop_list, n=req.n)


async def start_generations(ctx: ServerContext, req: ChatCompletionRequest) -> list[Generation]:
    return await pipeline.start(ctx, generation_request(req))


@dataclass
class _ChoiceState:
    reasoning: list[str] = field(default_factory=list)
    content: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish: Finished | None = None


def _usage(finished: list[Finished]) -> Usage:
    prompt = finished[0].prompt_tokens
    completion = sum(f.completion_tokens for f in finished)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                 prompt_tokens_details=PromptTokensDetails(cached_tokens=finished[0].cached_tokens),
                 completion_tokens_details=CompletionTokensDetails(
                     reasoning_tokens=sum(f.reasoning_tokens for f in finished)))


async def complete(ctx: ServerContext, req: ChatCompletionRequest,
                   generations: list[Generation]) -> dict[str, Any]:
    """Run every choice to the end; the `chat.completion` object."""
    states = [_ChoiceState() for _ in generations]
    async for i, event in merged(generations):
        state = states[i]
        if isinstance(event, PartDelta) and event.kind == "reasoning":
            state.reasoning.append(event.text)
        elif isinstance(event, PartDelta) and event.kind == "text":
            state.content.append(event.text)
            state.logprobs += [token_logprob(ctx.engine.tokenizer, lp) for lp in event.logprobs]
        elif isinstance(event, PartDone) and event.kind == "tool_call":
            state.calls.append(ToolCall(id=event.call_id, function=FunctionCall(
                name=event.name, arguments=event.text)))
        elif isinstance(event, Finished):
            state.finish = event
    choices = []
    for i, s in enumerate(states):
        reasoning, content = "".join(s.reasoning) or None, "".join(s.content)
        message = AssistantMessage(content=content if content or not s.calls else None,
                                   reasoning_content=reasoning, reasoning=reasoning,
                                   tool_calls=s.calls or None)
        choices.append(Choice(index=i, message=message, finish_reason=s.finish.reason,
                              logprobs=ChoiceLogprobs(content=s.logprobs) if req.logprobs else None))
    result = ChatCompletion(id=new_id("chatcmpl-"), model=req.model, choices=choices,
                            usage=_usage([s.finish for s in states]))
    return result.model_dump(exclude_none=True)


async def stream_chunks(ctx: ServerContext, req: ChatCompletionRequest,
                        generations: list[Generation]) -> AsyncIterator[dict[str, Any]]:
    """The `chat.completion.chunk` objects of a streamed completion, in order."""
    cid, created = new_id("chatcmpl-"), now()

    def chunk(i: int, delta: Delta, finish=None, logprobs=None) -> dict[str, Any]:
        return ChatCompletionChunk(id=cid, created=created, model=req.model, choices=[
            ChunkChoice(index=i, delta=delta, finish_reason=finish, logprobs=logprobs)]
        ).model_dump(exclude_none=True)

    for i in range(len(generations)):
        yield chunk(i, Delta(role="assistant", content=""))
    calls = [0] * len(generations)
    finished: list[Finished] = []
    async for i, event in merged(generations):
        if isinstance(event, PartStarted) and event.kind == "tool_call":
            yield chunk(i, Delta(tool_calls=[DeltaToolCall(
                index=calls[i], id=event.call_id, type="function",
                function=DeltaFunction(name=event.name, arguments=""))]))
        elif isinstance(event, PartDone) and event.kind == "tool_call":
            calls[i] += 1
        elif isinstance(event, PartDelta):
            yield chunk(i, *_delta_of(ctx, req, event, calls[i]))
        elif isinstance(event, Finished):
            finished.append(event)
            yield chunk(i, Delta(), finish=event.reason)
    if req.stream_options and req.stream_options.include_usage:
        yield ChatCompletionChunk(id=cid, created=created, model=req.model, choices=[],
                                  usage=_usage(finished)).model_dump(exclude_none=True)


def _delta_of(ctx: ServerContext, req: ChatCompletionRequest, event: PartDelta, call: int):
    if event.kind == "reasoning":
        return Delta(reasoning_content=event.text, reasoning=event.text), None, None
    if event.kind == "tool_call":
        return Delta(tool_calls=[DeltaToolCall(index=call, function=DeltaFunction(
            arguments=event.text))]), None, None
    logprobs = None
    if req.logprobs:
        logprobs = ChoiceLogprobs(content=[token_logprob(ctx.engine.tokenizer, lp)
                                           for lp in event.logprobs])
    return Delta(content=event.text), None, logprobs
