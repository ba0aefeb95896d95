"""The result of `LLM.chat`: the reply's reasoning, answer and tool calls (mapped from harmony by
`harmony.output`, as the server maps them) with the engine's finish reason and usage."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..harmony.output import FunctionCall, HarmonyOutput
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

    @classmethod
    def from_output(cls, output: HarmonyOutput, result: RequestOutput) -> "ChatOutput":
        """`output` closed after all of `result`'s tokens (a stop string may have ended it)."""
        finish = "stop" if output.stopped else result.finish_reason
        usage = Usage(len(result.prompt_token_ids), len(result.token_ids), result.num_cached_tokens)
        return cls(list(output.messages), output.reasoning, output.content,
                   list(output.tool_calls), finish, usage, list(result.token_ids),
                   list(output.warnings))
