"""The parsed result of `LLM.chat`: harmony messages split into reasoning, answer and tool calls."""
from __future__ import annotations

from dataclasses import dataclass, field

from .request import RequestOutput


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens served from the prefix cache

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class FunctionCall:
    """A tool call the model made: `name` is the recipient without `functions.` for function
    tools (`recipient` keeps the full `to=` value, e.g. `browser.search`)."""

    name: str
    arguments: str
    recipient: str
    content_type: str | None = None


@dataclass
class ChatOutput:
    messages: list          # gptoss.harmony.parser.ParsedMessage, in order
    reasoning: str          # the analysis channel's text, joined
    content: str            # the final channel's text, joined
    tool_calls: list[FunctionCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None
    token_ids: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_output(cls, output: RequestOutput, tokenizer=None) -> "ChatOutput":
        from ..harmony.parser import HarmonyStreamParser
        parser = HarmonyStreamParser(tokenizer)
        parser.feed_many(output.token_ids)
        parser.close()
        return cls.from_messages(parser.messages, output, parser.warnings)

    @classmethod
    def from_messages(cls, messages: list, output: RequestOutput,
                      warnings: list[str] = ()) -> "ChatOutput":
        reasoning = "".join(m.text for m in messages if m.channel == "analysis" and not m.recipient)
        content = "".join(m.text for m in messages if m.channel == "final" and not m.recipient)
        calls = [FunctionCall(m.recipient.removeprefix("functions."), m.text, m.recipient,
                              m.content_type)
                 for m in messages if m.recipient and m.role == "assistant" and m.end_token]
        usage = Usage(len(output.prompt_token_ids), len(output.token_ids), output.num_cached_tokens)
        return cls(list(messages), reasoning, content, calls, output.finish_reason, usage,
                   list(output.token_ids), list(warnings))
