"""The `gptoss chat` read-eval-print loop.

The history is kept as chat-completions messages and re-rendered as harmony each turn (earlier
reasoning is dropped by the renderer once answered; repeated prefixes come from the KV prefix
cache). Function tool calls are shown and the user types each result. Built-in tools
(`--python`, `--browser`) run inside the turn through the tool loop (gptoss/tools/loop.py): each
call is shown with a short view of its result and generation continues; the history then keeps
the turn's answer (the calls, like the reasoning, are not rendered again). The reply is read by
`harmony.output` (through the printer), so the history holds what the server would return.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO

from ..engine import FinishEvent, TokenEvent
from ..harmony.chat import render_chat
from ..harmony.output import HarmonyOutput
from ..tools.loop import ToolLoop, ToolStep
from .printer import DIM, RESET, HarmonyPrinter

HELP = ("commands: /reset (clear the history), /effort low|medium|high, "
        "/reasoning show|hide, /help, /quit")
MAX_TOOL_ROUNDS = 8
RESULT_VIEW_CHARS = 300   # how much of a built-in tool's result is shown


@dataclass
class Turn:
    """What one generation produced."""

    output: HarmonyOutput    # the reply: reasoning, content, tool_calls
    finish_reason: str
    tokens: int
    seconds: float           # first token to finish
    prompt_tokens: int
    cached_tokens: int
    token_ids: list[int] | None = None


class ChatSession:
    def __init__(self, engine, params, *, tools=None, response_format=None, instructions=(),
                 effort="medium", show_reasoning=True, model_identity=None, color=False,
                 inp: TextIO | None = None, out: TextIO | None = None, builtin_tools=()):
        self.engine, self.params, self.tools = engine, params, tools
        self.loop = ToolLoop(list(builtin_tools))   # the session's tools (kept across turns)
        self.response_format = response_format
        self.instructions, self.effort = list(instructions), effort
        self.show_reasoning, self.model_identity, self.color = show_reasoning, model_identity, color
        self.inp, self.out = inp or sys.stdin, out or sys.stdout
        self.history: list[dict] = []

    # ---- input -------------------------------------------------------------------------------
    def _read(self, prompt: str) -> str | None:
        if self.inp is sys.stdin and self.out is sys.stdout and sys.stdin.isatty():
            import readline  # noqa: F401  (line editing and history for input())
            try:
                return input(prompt)
            except EOFError:
                return None
        self.out.write(prompt)
        self.out.flush()
        line = self.inp.readline()
        return None if not line else line.rstrip("\n")

    def _say(self, text: str) -> None:
        self.out.write(f"{DIM}{text}{RESET}\n" if self.color else text + "\n")
        self.out.flush()

    def run(self) -> int:
        self._say(f"gptoss chat (reasoning effort {self.effort}). {HELP}")
        while True:
            line = self._read(">>> ")
            if line is None:
                self.out.write("\n")
                return 0
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if self.command(line) == "quit":
                    return 0
                continue
            self.history.append({"role": "user", "content": line})
            self.respond()

    def command(self, line: str) -> str | None:
        name, _, arg = line.partition(" ")
        arg = arg.strip().lower()
        if name in ("/quit", "/exit"):
            return "quit"
        if name == "/reset":
            self.history.clear()
            self._say("(history cleared)")
        elif name == "/effort" and arg in ("low", "medium", "high"):
            self.effort = arg
            self._say(f"(reasoning effort: {arg})")
        elif name == "/reasoning" and arg in ("show", "hide"):
            self.show_reasoning = arg == "show"
            self._say(f"(reasoning: {arg})")
        else:
            self._say(HELP)
        return None

    # ---- a reply, with tool rounds -----------------------------------------------------------
    def respond(self) -> None:
        prompt = self.prompt_ids()
        for _ in range(MAX_TOOL_ROUNDS):
            try:
                turn = self.generate(prompt)
            except KeyboardInterrupt:
                self._say("(interrupted)")
                return
            step = self.loop.after(turn.output) if turn.finish_reason == "stop" else None
            if step is not None:  # a built-in call: run it, show it, keep generating
                self._stats(turn)
                prompt = self.loop.continue_prompt(prompt, turn.token_ids, self._run(step))
                continue
            calls = self.record(turn)
            self._stats(turn)
            if not calls or turn.finish_reason != "stop":
                return
            for call in calls:
                fn = call["function"]
                result = self._read(f"result of {fn['name']}({fn['arguments']})> ")
                self.history.append({"role": "tool", "tool_call_id": call["id"],
                                     "content": result or ""})
            prompt = self.prompt_ids()
        self._say(f"(stopped after {MAX_TOOL_ROUNDS} tool rounds)")

    def _run(self, step: ToolStep):
        try:
            result = step.run()
        except KeyboardInterrupt:
            self._say("(tool interrupted)")
            raise
        text = "".join(getattr(c, "text", "") for m in result.messages for c in m.content)
        view = text.strip()
        if len(view) > RESULT_VIEW_CHARS:
            view = view[:RESULT_VIEW_CHARS] + f"... ({len(text)} characters)"
        status = f" error: {result.error}" if result.error else ""
        self._say(f"<- {step.recipient}{status}: {view}")
        return result

    def prompt_ids(self) -> list[int]:
        return render_chat(self.instructions + self.history, tools=self.tools,
                           reasoning_effort=self.effort, model_identity=self.model_identity,
                           response_format=self.response_format,
                           builtin_tools=self.loop.namespaces() or None)

    def generate(self, prompt: list[int] | None = None) -> Turn:
        printer = HarmonyPrinter(self.out, self.engine.tokenizer, color=self.color,
                                 show_reasoning=self.show_reasoning)
        stream = self.engine.submit(prompt or self.prompt_ids(), self.params)
        first, ids = None, []
        try:
            for event in stream:
                if isinstance(event, TokenEvent):
                    first = first or time.monotonic()
                    ids.append(event.token_id)
                    printer.handle(event)
                elif isinstance(event, FinishEvent):
                    printer.finish(event)
                    elapsed = time.monotonic() - first if first else 0.0
                    return Turn(printer.output, event.finish_reason, len(ids), elapsed,
                                event.usage.prompt_tokens, event.usage.cached_tokens, ids)
        except KeyboardInterrupt:
            stream.cancel()
            raise
        raise RuntimeError("the event stream ended without a FinishEvent")

    def record(self, turn: Turn) -> list[dict]:
        """Append the assistant's turn to the history (as the chat-completions API returns it);
        returns its tool calls."""
        reply = turn.output
        calls = [{"id": c.call_id, "type": "function",
                  "function": {"name": c.name, "arguments": c.arguments}} for c in reply.tool_calls]
        entry: dict = {"role": "assistant"}
        if reply.reasoning:
            entry["reasoning_content"] = reply.reasoning
        if calls:
            entry.update(content=reply.content or None, tool_calls=calls)
        else:
            entry["content"] = reply.content
        self.history.append(entry)
        return calls

    def close(self) -> None:
        self.loop.close()

    def _stats(self, turn: Turn) -> None:
        rate = (turn.tokens - 1) / turn.seconds if turn.tokens > 1 and turn.seconds > 0 else 0.0
        cut = "" if turn.finish_reason == "stop" else f", {turn.finish_reason}"
        self._say(f"[{turn.tokens} tokens, {rate:.1f} tok/s; prompt {turn.prompt_tokens} tokens, "
                  f"{turn.cached_tokens} cached{cut}]")
