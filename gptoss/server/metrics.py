"""Prometheus metrics in the text exposition format (version 0.0.4), without a client library.

Counters and histograms are updated by the handlers; gauges of the engine (queue depth, running
requests, KV-cache use: `engine.EngineStats`) are read from the engine when `/metrics` is scraped.
"""
from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass, field
from typing import Callable

from ..engine import EngineStats

PREFIX = "gptoss"
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(init=False)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        # counts[i] holds the observations in (buckets[i-1], buckets[i]]; made cumulative on render
        i = bisect.bisect_left(self.buckets, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip(self.buckets, self.counts):
            running += count
            out.append(f'{name}_bucket{{le="{_number(bound)}"}} {running}')
        out.append(f'{name}_bucket{{le="+Inf"}} {self.n}')
        out += [f"{name}_sum {_number(self.total)}", f"{name}_count {self.n}"]
        return out


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """Thread-safe counters and histograms; `render()` returns the exposition text."""

    def __init__(self, gauges: Callable[[], EngineStats] | None = None) -> None:
        self._gauges = gauges
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str], int] = {}
        self._builtin: dict[tuple[str, str], int] = {}   # (tool, "ok" | "error") -> calls
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.cancelled = 0
        self.store_errors = 0
        self.ttft = Histogram(TTFT_BUCKETS)
        self.latency = Histogram(LATENCY_BUCKETS)

    def request_done(self, endpoint: str, status: int | str) -> None:
        with self._lock:
            key = (endpoint, str(status))
            self._requests[key] = self._requests.get(key, 0) + 1

    def builtin_call(self, tool: str, ok: bool) -> None:
        """A built-in tool call ran (a Responses turn's python or browser call)."""
        with self._lock:
            key = (tool, "ok" if ok else "error")
            self._builtin[key] = self._builtin.get(key, 0) + 1

    def tokens(self, prompt: int, generated: int) -> None:
        with self._lock:
            self.prompt_tokens += prompt
            self.generation_tokens += generated

    def first_token(self, seconds: float) -> None:
        with self._lock:
            self.ttft.observe(seconds)

    def finished(self, seconds: float) -> None:
        with self._lock:
            self.latency.observe(seconds)

    def request_cancelled(self) -> None:
        with self._lock:
            self.cancelled += 1

    def store_failed(self) -> None:
        with self._lock:
            self.store_errors += 1

    def render(self) -> str:
        with self._lock:
            lines = self._counter_lines() + self._histogram_lines()
        if self._gauges is not None:
            lines += self._gauge_lines(self._gauges())
        return "\n".join(lines) + "\n"

    def _counter_lines(self) -> list[str]:
        name = f"{PREFIX}_requests_total"
        lines = [f"# HELP {name} HTTP requests answered, by endpoint and status code.",
                 f"# TYPE {name} counter"]
        for (endpoint, status), count in sorted(self._requests.items()):
            lines.append(f'{name}{{endpoint="{_label(endpoint)}",status="{_label(status)}"}} {count}')
        name = f"{PREFIX}_builtin_tool_calls_total"
        lines += [f"# HELP {name} Built-in tool calls run, by tool and outcome.",
                  f"# TYPE {name} counter"]
        for (tool, outcome), count in sorted(self._builtin.items()):
            lines.append(f'{name}{{tool="{_label(tool)}",outcome="{outcome}"}} {count}')
        for short, value, help_text in (
                ("prompt_tokens", self.prompt_tokens, "Prompt tokens processed."),
                ("generation_tokens", self.generation_tokens, "Tokens generated."),
                ("requests_cancelled", self.cancelled, "Generations cancelled before their end."),
                ("store_errors", self.store_errors, "Responses answered but not stored.")):
            lines += [f"# HELP {PREFIX}_{short}_total {help_text}",
                      f"# TYPE {PREFIX}_{short}_total counter", f"{PREFIX}_{short}_total {value}"]
        return lines

    def _histogram_lines(self) -> list[str]:
        lines = []
        for short, hist, help_text in (
                ("time_to_first_token_seconds", self.ttft, "Time from request to first token."),
                ("request_latency_seconds", self.latency, "Time from request to its last token.")):
            name = f"{PREFIX}_{short}"
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram", *hist.lines(name)]
        return lines

    @staticmethod
    def _gauge_lines(g: EngineStats) -> list[str]:
        lines = []
        for short, value, help_text in (
                ("queue_depth", g.waiting, "Requests waiting to be scheduled."),
                ("requests_running", g.running, "Requests being generated."),
                ("kv_cache_blocks_used", g.kv_blocks_used, "KV-cache blocks in use."),
                ("kv_cache_blocks_total", g.kv_blocks_total, "KV-cache blocks in all."),
                ("kv_cache_usage_ratio", g.kv_usage, "Fraction of KV-cache blocks in use.")):
            lines += [f"# HELP {PREFIX}_{short} {help_text}", f"# TYPE {PREFIX}_{short} gauge",
                      f"{PREFIX}_{short} {_number(value)}"]
        return lines
