"""`POST /v1/responses` (and GET / DELETE by id): the Responses API on the same generation core.

Harmony messages become output items: analysis → `reasoning`, final (or a commentary preamble)
→ `message`, a call → `function_call`; with built-in tools (`code_interpreter`, `web_search`,
enabled by the server's options) the tool loop runs in the turn (tool_turn.py) and their calls
become `code_interpreter_call` / `web_search_call` items (builtin_items.py). Streaming emits the
full event sequence, numbered by `sequence_number`. With `store` (the default) the response and
its turn's input items are written to the SQLite store, from which `previous_response_id`
continues. The write happens before the terminal event (`response.completed` / `.incomplete`) is
sent, so a response a client has seen end is stored; a write that fails does not discard the
generation: the response is answered with `store: false` (and the failure logged and counted in
/metrics).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

from . import pipeline
from .chat import token_logprob
from .context import ServerContext
from .conversation import items_as_dicts, items_to_messages, parse_items
from .generation import Finished, Generation, PartDelta, PartDone, PartStarted
from .pipeline import GenerationRequest
from .tool_turn import BuiltinCallDone, ToolTurn
from .builtin_items import BuiltinItems
from ..tools.base import ToolError, namespace_of
from ..tools.loop import ToolLoop
from .protocol import APIError, UnsupportedFeature, new_id
from .store import StoreError
from .responses_protocol import (
    BUILTIN_TOOL_NAMESPACES, IncompleteDetails, InputTokensDetails, MessageItem, OutputFunctionCall,
    OutputMessage, OutputReasoning, OutputText, OutputTokensDetails, ReasoningText,
    ResponseObject, ResponsesRequest, ResponseUsage)

ID_PREFIX = {"reasoning": "rs_", "text": "msg_", "tool_call": "fc_"}
INPUT_ID_PREFIX = {"message": "msg_", "reasoning": "rs_", "function_call": "fc_",
                   "function_call_output": "fco_"}
log = logging.getLogger(__name__)


def _tools(req: ResponsesRequest) -> tuple[list[dict[str, Any]], list[str]]:
    """The request's function tools (chat-completions shape) and built-in tool namespaces."""
    tools = []
    for k, tool in enumerate(req.tools or []):
        if tool.type in BUILTIN_TOOL_NAMESPACES:
            continue
        if tool.type != "function":
            raise UnsupportedFeature(f"tools[{k}]: tools of type {tool.type!r} are not supported",
                                     param=f"tools[{k}].type")
        tools.append({"type": "function", "function": {
            "name": tool.name, "description": tool.description, "parameters": tool.parameters}})
    return tools, builtin_namespaces(req)


def builtin_namespaces(req: ResponsesRequest) -> list[str]:
    """The built-in tool namespaces the request asks for, each once, in the order asked."""
    return list(dict.fromkeys(BUILTIN_TOOL_NAMESPACES[t.type] for t in req.tools or []
                              if t.type in BUILTIN_TOOL_NAMESPACES))


def _make_tools(ctx: ServerContext, req: ResponsesRequest, namespaces: list[str]) -> list:
    """This response's tools: those kept from `previous_response_id` (a python kernel keeps its
    state across the conversation), new ones for the rest."""
    flag = {"python": "--python", "browser": "--browser"}
    missing = [n for n in namespaces if n not in ctx.options.builtin_tools]
    if missing:
        k, tool = next((k, t) for k, t in enumerate(req.tools)
                       if BUILTIN_TOOL_NAMESPACES.get(t.type) == missing[0])
        raise UnsupportedFeature(f"tools[{k}]: the built-in tool {tool.type!r} is not enabled on "
                                 f"this server (start it with `gptoss serve {flag[missing[0]]}`)",
                                 param=f"tools[{k}].type")
    kept = ctx.tool_sessions.take(req.previous_response_id)  # the conversation's, if any
    for name in set(kept) - set(namespaces):
        kept.pop(name).close()
    made = []
    try:
        for namespace in namespaces:
            made.append(kept.pop(namespace, None) or ctx.options.builtin_tools[namespace]())
    except ToolError as exc:
        for tool in made + list(kept.values()):
            tool.close()
        raise APIError(503, f"the built-in tool cannot start: {exc}", type="server_error") from None
    return made


def _tool_choice(req: ResponsesRequest) -> str | dict[str, Any]:
    choice = req.tool_choice or "auto"
    if isinstance(choice, str):
        return choice
    return {"type": "function", "function": {"name": choice.name}}


def _format(req: ResponsesRequest) -> dict[str, Any] | None:
    """The chat-style response_format of `text.format`."""
    fmt = req.text.format if req.text else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    spec = {"name": fmt.name, "schema": fmt.schema_, "description": fmt.description}
    return {"type": "json_schema", "json_schema": spec}


def _own_items(req: ResponsesRequest) -> list:
    """This turn's input items, each with an id (kept in the store, listed by input_items)."""
    items = ([MessageItem(role="user", content=req.input)] if isinstance(req.input, str)
             else list(req.input))
    return [item if item.id is not None or item.type not in INPUT_ID_PREFIX
            else item.model_copy(update={"id": new_id(INPUT_ID_PREFIX[item.type])})
            for item in items]


async def _history(ctx: ServerContext, req: ResponsesRequest) -> list:
    """The items of the conversation `previous_response_id` continues (none without it)."""
    if req.previous_response_id is None:
        return []
    stored = await asyncio.to_thread(ctx.store.get, req.previous_response_id)
    if stored is None:
        raise APIError(404, f"Previous response with id '{req.previous_response_id}' not found.",
                       param="previous_response_id", code="previous_response_not_found")
    return parse_items(stored.conversation)


async def start(ctx: ServerContext, req: ResponsesRequest) -> tuple[Generation | ToolTurn, list]:
    """The Responses wire request in the pipeline's terms, started; also this turn's own input
    items (what the store keeps for it). With built-in tools the generation is a ToolTurn (the
    tool loop, server/tool_turn.py)."""
    ctx.check_model(req.model)
    tools, namespaces = _tools(req)
    own = _own_items(req)
    items = await _history(ctx, req) + own
    builtin = await asyncio.to_thread(_make_tools, ctx, req, namespaces) if namespaces else []
    greq = GenerationRequest(
        model=req.model, messages=items_to_messages(items, req.instructions), tools=tools,
        tool_choice=_tool_choice(req), response_format=_format(req),
        reasoning_effort=req.reasoning.effort if req.reasoning else None,
        max_tokens=req.max_output_tokens, max_reasoning_tokens=req.max_reasoning_tokens,
        temperature=req.temperature, top_p=req.top_p, logprobs=req.top_logprobs,
        messages_param="input", max_tokens_param="max_output_tokens", format_param="text.format",
        api="responses", builtin_tools=[t.config() for t in builtin])
    try:
        (generation,) = await pipeline.start(ctx, greq)
    except BaseException:
        for tool in builtin:
            tool.close()
        raise
    if builtin:
        generation = ToolTurn(ctx, greq, generation, ToolLoop(builtin))
    return generation, own


class ResponseBuilder:
    """Turns part events into output items, the stream's events and the final response."""

    def __init__(self, ctx: ServerContext, req: ResponsesRequest) -> None:
        self.ctx, self.req, self.seq = ctx, req, 0
        self.response = ResponseObject(
            id=new_id("resp_"), status="in_progress", model=req.model,
            instructions=req.instructions, max_output_tokens=req.max_output_tokens,
            previous_response_id=req.previous_response_id, reasoning=req.reasoning, text=req.text,
            tools=[t.model_dump(exclude_none=True) for t in req.tools or []],
            tool_choice=req.tool_choice.model_dump() if hasattr(req.tool_choice, "model_dump")
            else (req.tool_choice or "auto"),
            parallel_tool_calls=req.parallel_tool_calls is not False,
            temperature=req.temperature, top_p=req.top_p, store=req.store,
            background=bool(req.background), metadata=req.metadata or {})
        self._items: dict[int, Any] = {}
        self._logprobs: dict[int, list] = {}
        self.builtin = builtin_namespaces(req)
        self.calls = BuiltinItems(self.event, self.response.output.append)

    def event(self, type_: str, **fields: Any) -> dict[str, Any]:
        self.seq += 1
        return {"type": type_, "sequence_number": self.seq - 1, **fields}

    def snapshot(self) -> dict[str, Any]:
        return self.response.model_dump(by_alias=True)

    def opening(self) -> list[dict[str, Any]]:
        return [self.event("response.created", response=self.snapshot()),
                self.event("response.in_progress", response=self.snapshot())]

    def feed(self, event) -> list[dict[str, Any]]:
        if isinstance(event, BuiltinCallDone):
            return self.calls.ran(event)
        part = getattr(event, "part", None)
        if isinstance(event, PartStarted) and namespace_of(event.recipient) in self.builtin:
            return self.calls.started(event)
        if isinstance(event, PartDelta) and self.calls.owns(part):
            return self.calls.delta(event)
        if isinstance(event, PartDone) and self.calls.owns(part):
            return self.calls.done(event)
        if isinstance(event, PartStarted):
            return self._started(event)
        if isinstance(event, PartDelta):
            return self._delta(event)
        if isinstance(event, PartDone):
            return self._done(event)
        return []

    def _started(self, e: PartStarted) -> list[dict[str, Any]]:
        item_id = new_id(ID_PREFIX[e.kind])
        if e.kind == "reasoning":
            item = OutputReasoning(id=item_id, content=[], status="in_progress")
            part = ReasoningText(text="")
        elif e.kind == "text":
            item = OutputMessage(id=item_id, content=[], status="in_progress")
            part = OutputText(text="")
        else:
            item, part = OutputFunctionCall(id=item_id, call_id=e.call_id, name=e.name, arguments="",
                                            status="in_progress"), None
        self._items[e.part] = item
        self.response.output.append(item)
        out = [self.event("response.output_item.added", output_index=e.part, item=item.model_dump())]
        if part is not None:
            out.append(self.event("response.content_part.added", item_id=item_id,
                                  output_index=e.part, content_index=0, part=part.model_dump()))
        return out

    def _delta(self, e: PartDelta) -> list[dict[str, Any]]:
        item = self._items[e.part]
        where = dict(item_id=item.id, output_index=e.part)
        if e.kind == "reasoning":
            return [self.event("response.reasoning_text.delta", content_index=0, delta=e.text, **where)]
        if e.kind == "tool_call":
            return [self.event("response.function_call_arguments.delta", delta=e.text, **where)]
        logprobs = [token_logprob(self.ctx.engine.tokenizer, lp) for lp in e.logprobs]
        self._logprobs.setdefault(e.part, []).extend(logprobs)
        return [self.event("response.output_text.delta", content_index=0, delta=e.text,
                           logprobs=[lp.model_dump() for lp in logprobs], **where)]

    def _done(self, e: PartDone) -> list[dict[str, Any]]:
        item = self._items[e.part]
        where = dict(item_id=item.id, output_index=e.part)
        out = []
        if e.kind == "reasoning":
            item.content = [ReasoningText(text=e.text)]
            out += [self.event("response.reasoning_text.done", content_index=0, text=e.text, **where),
                    self.event("response.content_part.done", content_index=0,
                               part=item.content[0].model_dump(), **where)]
        elif e.kind == "text":
            logprobs = self._logprobs.pop(e.part, [])
            wanted = self.req.top_logprobs is not None
            text, notes = self.calls.cite(e.text)
            item.content = [OutputText(text=text, annotations=notes,
                                       logprobs=logprobs if wanted else None)]
            out += [self.event("response.output_text.done", content_index=0, text=text,
                               logprobs=[lp.model_dump() for lp in logprobs], **where)]
            out += [self.event("response.output_text.annotation.added", content_index=0,
                               annotation_index=k, annotation=note, **where)
                    for k, note in enumerate(notes)]
            out.append(self.event("response.content_part.done", content_index=0,
                                  part=item.content[0].model_dump(exclude_none=True), **where))
        else:
            item.arguments = e.text
            out.append(self.event("response.function_call_arguments.done", arguments=e.text,
                                  name=item.name, **where))
        item.status = "completed"
        done = self.event("response.output_item.done", output_index=e.part, item=item.model_dump())
        return out + [done]

    def settle(self, e: Finished) -> list[dict[str, Any]]:
        """The final status and usage (before the response is stored and its end is sent); the
        events that end built-in calls left open."""
        out = self.calls.unfinished()
        r = self.response
        r.usage = ResponseUsage(
            input_tokens=e.prompt_tokens, output_tokens=e.completion_tokens,
            total_tokens=e.prompt_tokens + e.completion_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=e.cached_tokens),
            output_tokens_details=OutputTokensDetails(reasoning_tokens=e.reasoning_tokens))
        if e.reason == "length":
            r.status, r.incomplete_details = "incomplete", IncompleteDetails(reason="max_output_tokens")
        else:
            r.status = "completed"
        return out

    def terminal(self) -> list[dict[str, Any]]:
        kind = "response.incomplete" if self.response.status == "incomplete" else "response.completed"
        return [self.event(kind, response=self.snapshot())]


async def save(ctx: ServerContext, builder: ResponseBuilder, items: list) -> bool:
    """Write the response as it stands with its turn's input items; False (logged, counted, and
    the response marked `store: false`) when the write fails."""
    try:
        await asyncio.shield(asyncio.to_thread(ctx.store.put, builder.snapshot(),
                                               items_as_dicts(items)))
        return True
    except StoreError as exc:
        log.error("response %s was not stored: %s", builder.response.id, exc)
        ctx.metrics.store_failed()
        builder.response.store = False
        return False


async def run(ctx: ServerContext, req: ResponsesRequest, generation: Generation, items: list,
              builder: ResponseBuilder) -> AsyncIterator[dict[str, Any]]:
    """The stream events; with `store`, the response is stored before its terminal event, and
    its built-in tools kept for a follow-up (closed otherwise)."""
    tools = generation.loop.tools if isinstance(generation, ToolTurn) else []
    builder.calls.citers = [t for t in tools if callable(getattr(t, "cite", None))]
    kept = False
    try:
        for event in builder.opening():
            yield event
        async for part in generation.events():
            if isinstance(part, Finished):
                closing = builder.settle(part)
                if req.store:
                    kept = await save(ctx, builder, items)
                for event in closing + builder.terminal():
                    yield event
                return
            for event in builder.feed(part):
                yield event
    finally:
        if kept:  # a follow-up response continues with the same tools
            ctx.tool_sessions.keep(builder.response.id, tools)
        else:
            for tool in tools:
                tool.close()


def error_event(builder: ResponseBuilder, exc: APIError) -> dict[str, Any]:
    return builder.event("error", code=exc.code or exc.type, message=exc.message, param=exc.param)
