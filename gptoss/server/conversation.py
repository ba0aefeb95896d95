"""Responses API input items → chat-completions messages (which harmony/chat.py renders).

- `instructions` → a leading system message (harmony: developer `# Instructions`);
- a message item → a message of its role, its text parts joined;
- a reasoning item → the `reasoning_content` of the assistant turn that follows it;
- consecutive function_call items → one assistant message with `tool_calls` (id = call_id);
- a function_call_output → a `tool` message answering its call_id.
"""
from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from .protocol import InvalidRequest, UnsupportedFeature
from .responses_protocol import (
    BuiltinCallItem, ContentPart, FunctionCallItem, FunctionCallOutputItem, InputItem, ItemReference, MessageItem,
    ReasoningItem)

_ITEMS = TypeAdapter(list[InputItem])
_TEXT_PARTS = ("input_text", "output_text", "text", "reasoning_text", "summary_text")


def parse_items(raw: list[dict[str, Any]]) -> list[InputItem]:
    """Stored items (dicts) → input items; a store row that no longer parses is a 500-level bug,
    but a client's own items are validated by the request model already."""
    try:
        return _ITEMS.validate_python(raw)
    except ValidationError as exc:
        raise InvalidRequest(f"stored conversation items do not parse: {exc.errors()[0]['msg']}",
                             param="previous_response_id") from None


def _text(content: str | list[ContentPart], where: str) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.type not in _TEXT_PARTS:
            raise UnsupportedFeature(f"{where}: content of type {part.type!r} is not supported "
                                     "(gpt-oss reads text only)", param="input")
        texts.append(part.text or "")
    return "".join(texts)


def items_to_messages(items: list[InputItem], instructions: str | None) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    reasoning: list[str] = []
    for k, item in enumerate(items):
        where = f"input[{k}]"
        if isinstance(item, ItemReference):
            raise UnsupportedFeature(f"{where}: item references are not supported; send the item "
                                     "itself or use previous_response_id", param="input")
        if isinstance(item, ReasoningItem):
            reasoning.append(_text(item.content or [], where))
        elif isinstance(item, MessageItem):
            message = {"role": item.role, "content": _text(item.content, where)}
            if item.role == "assistant" and reasoning:
                message["reasoning_content"], reasoning = "".join(reasoning), []
            messages.append(message)
        elif isinstance(item, FunctionCallItem):
            _add_call(messages, item, reasoning)
            reasoning = []
        elif isinstance(item, BuiltinCallItem):
            continue
        elif isinstance(item, FunctionCallOutputItem):
            messages.append({"role": "tool", "tool_call_id": item.call_id,
                             "content": _text(item.output, where)})
    return messages


def _add_call(messages: list[dict[str, Any]], item: FunctionCallItem, reasoning: list[str]) -> None:
    call = {"id": item.call_id, "type": "function",
            "function": {"name": item.name, "arguments": item.arguments}}
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant" and last.get("tool_calls") and not reasoning:
        last["tool_calls"].append(call)
        return
    message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    messages.append(message)


def items_as_dicts(items: list[InputItem]) -> list[dict[str, Any]]:
    return [item.model_dump(exclude_none=True) for item in items]


def _listed(item: dict[str, Any]) -> dict[str, Any]:
    """An item as `input_items` lists it: a message's plain-string content as one text part."""
    if item.get("type", "message") == "message" and isinstance(item.get("content"), str):
        kind = "output_text" if item.get("role") == "assistant" else "input_text"
        item = {**item, "type": "message", "content": [{"type": kind, "text": item["content"]}]}
    return item


def items_page(items: list[dict[str, Any]], *, after: str | None, limit: int,
               order: str) -> dict[str, Any]:
    """One page of `GET /v1/responses/{id}/input_items`: `order` "desc" (the default, newest
    first) or "asc", the items after the one with id `after`, at most `limit`."""
    ordered = [_listed(i) for i in (items if order == "asc" else reversed(items))]
    if after is not None:
        ids = [i.get("id") for i in ordered]
        if after not in ids:
            raise InvalidRequest(f"after: no input item has id {after!r}", param="after")
        ordered = ordered[ids.index(after) + 1:]
    page = ordered[:limit]
    return {"object": "list", "data": page, "first_id": page[0].get("id") if page else None,
            "last_id": page[-1].get("id") if page else None, "has_more": len(ordered) > limit}
