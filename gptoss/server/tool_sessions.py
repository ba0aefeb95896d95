"""Built-in tools kept between the responses of one conversation: a response that continues
`previous_response_id` takes that response's tools (so a python kernel keeps its variables), and
hands them on under its own id when it ends. Each entry is taken once (a second follow-up to the
same response gets new tools); entries idle longer than `idle_s`, or beyond `max_sessions`, are
closed."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict

from ..tools.base import BuiltinTool


class ToolSessions:
    def __init__(self, *, max_sessions: int = 16, idle_s: float = 900.0) -> None:
        self.max_sessions, self.idle_s = max_sessions, idle_s
        self._lock = threading.Lock()
        self._kept: OrderedDict[str, tuple[float, list[BuiltinTool]]] = OrderedDict()

    def take(self, response_id: str | None) -> dict[str, BuiltinTool]:
        """The tools kept for `response_id` by namespace (removed from here); {} if none."""
        with self._lock:
            entry = self._kept.pop(response_id, None) if response_id else None
            stale = self._expired()
        _close(stale)
        return {t.name: t for t in entry[1]} if entry else {}

    def keep(self, response_id: str, tools: list[BuiltinTool]) -> None:
        if not tools:
            return
        with self._lock:
            self._kept[response_id] = (time.monotonic(), list(tools))
            stale = self._expired()
            while len(self._kept) > self.max_sessions:
                stale += self._kept.popitem(last=False)[1][1]
        _close(stale)

    def _expired(self) -> list[BuiltinTool]:
        now, stale = time.monotonic(), []
        for key in [k for k, (t, _) in self._kept.items() if now - t > self.idle_s]:
            stale += self._kept.pop(key)[1]
        return stale

    def close(self) -> None:
        with self._lock:
            tools = [t for _, ts in self._kept.values() for t in ts]
            self._kept.clear()
        _close(tools)


def _close(tools: list[BuiltinTool]) -> None:
    for tool in tools:
        tool.close()
