"""Output items and stream events of built-in tool calls, named as OpenAI's Responses API names
them (openai.types.responses: ResponseCodeInterpreterToolCall, ResponseFunctionWebSearch).

python (`to=python`), a `code_interpreter_call` item:
    output_item.added (in_progress) → code_interpreter_call.in_progress →
    code_interpreter_call_code.delta… → code_interpreter_call_code.done →
    code_interpreter_call.interpreting → [the code runs] → code_interpreter_call.completed →
    output_item.done (completed, or failed when the sandbox reported an error; `outputs` logs)
browser (`to=browser.search|open|find`), a `web_search_call` item:
    output_item.added (in_progress) → web_search_call.in_progress → web_search_call.searching →
    [the tool runs] → web_search_call.completed → output_item.done (completed, its `action`)
A call the turn never ran (cut off, or past the call limit) ends `incomplete`.

Citations: a tool of the turn may offer `cite(text) -> (text, annotations)` (the browser turns its
`【cursor†Lx-Ly】` markers into `url_citation` annotations); each answer text part goes through
it before `output_text.done`, and each annotation is announced by
`response.output_text.annotation.added`.
"""
from __future__ import annotations

import json
from typing import Any, Callable

from ..harmony.output import PartDelta, PartDone, PartStarted
from ..tools.base import namespace_of
from .protocol import new_id
from .responses_protocol import OutputCodeInterpreterCall, OutputWebSearchCall
from .tool_turn import BuiltinCallDone

Event = dict[str, Any]


def web_action(recipient: str, arguments: str, reported: dict[str, Any]) -> dict[str, Any]:
    """The web_search_call `action`: the tool's own report (ToolOutput.item["action"]), else
    read from the call (`browser.search` {query}, `browser.open` {url}, `browser.find`
    {pattern}). The browser's "find" is the API's "find_in_page"."""
    action = dict(reported.get("action") or {})
    if not action:
        try:
            args = json.loads(arguments or "{}")
        except ValueError:
            args = {}
        args = args if isinstance(args, dict) else {}
        verb = recipient.split(".", 1)[1] if "." in recipient else "search"
        if verb == "open":
            url = args.get("id") if isinstance(args.get("id"), str) else None
            action = {"type": "open_page", "url": url}
        elif verb == "find":
            action = {"type": "find_in_page", "pattern": str(args.get("pattern", "")), "url": ""}
        else:
            action = {"type": "search", "query": args.get("query")}
    if action.get("type") == "find":
        action["type"] = "find_in_page"
    return action


class BuiltinItems:
    """The built-in calls of one response; `event` numbers events, `append` adds an item."""

    def __init__(self, event: Callable[..., Event], append: Callable[[Any], None]) -> None:
        self.event, self.append = event, append
        self.container_id = new_id("cntr_")
        self._items: dict[int, Any] = {}
        self.citers: list[Any] = []     # the turn's tools that offer `cite(text)`

    def cite(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        notes: list[dict[str, Any]] = []
        for tool in self.citers:
            text, found = tool.cite(text)
            notes += list(found)
        return text, notes

    def owns(self, part: int) -> bool:
        return part in self._items

    def _where(self, part: int) -> dict[str, Any]:
        return {"item_id": self._items[part].id, "output_index": part}

    def started(self, e: PartStarted) -> list[Event]:
        if namespace_of(e.recipient) == "python":
            item = OutputCodeInterpreterCall(id=new_id("ci_"), code="", status="in_progress",
                                             container_id=self.container_id)
            kind = "response.code_interpreter_call.in_progress"
        else:
            item = OutputWebSearchCall(id=new_id("ws_"), status="in_progress",
                                       action={"type": "search"})
            kind = "response.web_search_call.in_progress"
        self._items[e.part] = item
        self.append(item)
        return [self.event("response.output_item.added", output_index=e.part,
                           item=item.model_dump(exclude_none=True)),
                self.event(kind, **self._where(e.part))]

    def delta(self, e: PartDelta) -> list[Event]:
        item = self._items[e.part]
        if isinstance(item, OutputCodeInterpreterCall):
            item.code += e.text
            return [self.event("response.code_interpreter_call_code.delta", delta=e.text,
                               **self._where(e.part))]
        return []

    def done(self, e: PartDone) -> list[Event]:
        item = self._items[e.part]
        if isinstance(item, OutputCodeInterpreterCall):
            item.code, item.status = e.text, "interpreting"
            return [self.event("response.code_interpreter_call_code.done", code=e.text,
                               **self._where(e.part)),
                    self.event("response.code_interpreter_call.interpreting",
                               **self._where(e.part))]
        item.status = "searching"
        return [self.event("response.web_search_call.searching", **self._where(e.part))]

    def ran(self, e: BuiltinCallDone) -> list[Event]:
        item = self._items.pop(e.part)
        if isinstance(item, OutputCodeInterpreterCall):
            logs = e.output.item.get("outputs") or [
                {"type": "logs", "logs": "".join(getattr(c, "text", "") for m in e.output.messages
                                                 for c in m.content)}]
            item.outputs, item.status = logs, "failed" if e.output.error else "completed"
            kind = "response.code_interpreter_call.completed"
        else:
            item.action = web_action(e.recipient, e.arguments, e.output.item)
            item.status = "failed" if e.output.error else "completed"
            kind = "response.web_search_call.completed"
        return [self.event(kind, **{"item_id": item.id, "output_index": e.part}),
                self.event("response.output_item.done", output_index=e.part,
                           item=item.model_dump(exclude_none=True))]

    def unfinished(self) -> list[Event]:
        """Calls that never ran end `incomplete` (their items were added already)."""
        out = []
        for part, item in sorted(self._items.items()):
            item.status = "incomplete"
            out.append(self.event("response.output_item.done", output_index=part,
                                  item=item.model_dump(exclude_none=True)))
        self._items.clear()
        return out
