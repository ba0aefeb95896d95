"""The result of `LLM.chat`: the reply's reasoning, answer and tool calls (mapped from harmony by
`harmony.output`, as the server maps them) with the engine's finish reason and usage."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..harmony.output import FunctionCall, HarmonyOutput
from ..tools.base import namespace_of
from ..tools.loop import ToolStep, as_parsed
from .request import RequestOutput, Usage

__all__ = ["ChatOutput", "FunctionCall", "Usage"]


@dataclass
class ChatOutput:
    messages: list          # gptoss.harmony.parser.ParsedMessage, in order
    reasoning: str          # the reasoning parts (analysis channel), joined
    content: str            # the text parts (final channel, commentary preambles), joined
    tool_calls: list[FunctionCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None
    token_ids: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    builtin_calls: list[ToolStep] = field(default_factory=list)  # each with its ToolOutput

    @classmethod
    def from_output(cls, output: HarmonyOutput, result: RequestOutput) -> "ChatOutput":
        """`output` closed after all of `result`'s tokens (a stop string may have ended it)."""
        finish = "stop" if output.stopped else result.finish_reason
        usage = Usage(len(result.prompt_token_ids), len(result.token_ids), result.num_cached_tokens)
        return cls(list(output.messages), output.reasoning, output.content,
                   list(output.tool_calls), finish, usage, list(result.token_ids),
                   list(output.warnings))

    @classmethod
    def from_turn(cls, segments: list[tuple[HarmonyOutput, RequestOutput]], steps: list[ToolStep],
                  token_ids: list[int], builtin: set[str]) -> "ChatOutput":
        """A tool loop's turn: each segment's output and result, with the built-in call that
        ended each but the last. Messages include the tools' replies; `tool_calls` only the
        function calls; usage sums the turn's engine requests; `token_ids` are every token
        after the first prompt (tool replies included)."""
        if len(segments) == 1 and not steps:
            return cls.from_output(*segments[0])
        out = cls.from_output(*segments[-1])
        messages, reasoning, content, warnings = [], [], [], []
        for k, (output, _) in enumerate(segments):
            messages += output.messages
            if k < len(steps) and steps[k].output is not None:
                messages += [as_parsed(m) for m in steps[k].output.messages]
            reasoning.append(output.reasoning)
            content.append(output.content)
            warnings += output.warnings
        results = [r for _, r in segments]
        usage = Usage(sum(len(r.prompt_token_ids) for r in results),
                      sum(len(r.token_ids) for r in results),
                      sum(r.num_cached_tokens for r in results))
        calls = [c for c in out.tool_calls if namespace_of(c.recipient) not in builtin]
        return cls(messages, "".join(reasoning), "".join(content), calls, out.finish_reason,
                   usage, token_ids, warnings, list(steps))
