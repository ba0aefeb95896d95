"""Training data: JSONL conversations -> token ids and a loss mask, with bad records reported.

One JSON object per line, in either form:
  chat-completions  {"messages": [...], "tools": [...]?, "reasoning_effort": "low"?,
                     "current_date": "2025-01-01"?, "model_identity": "..."?}
                    (assistant `reasoning_content` / `tool_calls`, `tool` results; mapped by
                    `gptoss.harmony.chat`, so exactly what the server renders for a request)
  harmony           {"harmony": [{"role": "assistant", "channel": "final", "content": "..."}, ...]}
                    (openai-harmony `Message` dicts, rendered as given)
Rendering is `gptoss.harmony.render.render_for_training`: the reply after the last
system/developer/user message is learned (mask 1), the prompt and tool results are not. The
chat-completions form has no `Current date:` line unless the record gives `current_date` (the
default, today's date, would make the data change from day to day).
`train_on="final"` keeps the mask only on final-channel messages; `"all"` (default) also learns
the analysis and the commentary (tool calls, preambles).

A record that cannot be used (invalid JSON, unknown form, nothing to learn, longer than
`max_length`) is a `BadRecord` with its line number: `load_jsonl` skips and reports it, or with
`on_error="raise"` refuses the file with a `DataError` that names the line.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from openai_harmony import Conversation, Message, Role

from ..harmony.chat import ChatFormatError, chat_to_conversation
from ..harmony.chat import _map_messages as map_chat_messages
from ..harmony.render import RenderError, render_for_training
from ..harmony.tokenizer import MESSAGE, START, load_harmony_encoding

TRAIN_ON = ("all", "final")
ON_ERROR = ("skip", "raise")
_PROMPT_ROLES = (Role.SYSTEM, Role.DEVELOPER, Role.USER)
_CHAT_OPTIONS = ("tools", "tool_choice", "reasoning_effort", "response_format",
                 "model_identity", "builtin_tools")


class DataError(ValueError):
    """A data file that cannot be used (unreadable, or a bad record with on_error='raise')."""


@dataclass(frozen=True)
class Example:
    """One rendered conversation: `tokens` and `mask` (1 = predict this token), same length."""
    tokens: tuple[int, ...]
    mask: tuple[int, ...]
    line: int

    @property
    def target_count(self) -> int:
        return sum(self.mask[1:])


@dataclass(frozen=True)
class BadRecord:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class Dataset:
    path: str
    examples: list[Example]
    bad: list[BadRecord] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples)

    def summary(self) -> str:
        tokens = sum(len(e.tokens) for e in self.examples)
        targets = sum(e.target_count for e in self.examples)
        text = (f"{self.path}: {len(self.examples)} conversations, {tokens} tokens, "
                f"{targets} learned")
        return text + (f"; skipped {len(self.bad)} bad records" if self.bad else "")


def _conversation(record) -> Conversation:
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object, got {type(record).__name__}")
    if "harmony" in record:
        messages = record["harmony"]
        if not isinstance(messages, list) or not messages:
            raise DataError("'harmony' must be a non-empty list of messages")
        try:
            return Conversation.from_messages([Message.from_dict(m) for m in messages])
        except Exception as exc:  # openai-harmony raises pydantic/Key/Type errors for bad dicts
            raise DataError(f"not a harmony message list ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if "messages" in record:
        options = {k: record[k] for k in _CHAT_OPTIONS if k in record}
        conversation = chat_to_conversation(record["messages"], current_date="-", **options)
        return _without_date(_with_reply_reasoning(conversation, record["messages"]),
                             record.get("current_date"))
    raise DataError("expected a 'messages' (chat-completions) or 'harmony' (harmony messages) "
                    "field")


def _last_prompt(messages: list[Message]) -> int:
    return max((i for i, m in enumerate(messages) if m.author.role in _PROMPT_ROLES), default=-1)


def _with_reply_reasoning(conversation: Conversation, chat_messages) -> Conversation:
    """Put back the reply's reasoning, which the chat mapping drops once a final answer follows
    (right for a prompt, wrong for a training target): the reply after the last
    system/developer/user message is taken from the undropped mapping."""
    _, body = map_chat_messages(chat_messages)
    head = list(conversation.messages)
    return Conversation.from_messages(head[:_last_prompt(head) + 1]
                                      + body[_last_prompt(body) + 1:])


def _without_date(conversation: Conversation, date) -> Conversation:
    """Set (or drop, for None) the system message's `Current date:`."""
    if date is not None and not isinstance(date, str):
        raise DataError("current_date: expected a 'YYYY-MM-DD' string")
    first = conversation.messages[0]
    content = first.content[0].model_copy(update={"conversation_start_date": date})
    head = first.model_copy(update={"content": [content]})
    return Conversation.from_messages([head, *conversation.messages[1:]])


def final_only(tokens: list[int], mask: list[int]) -> list[int]:
    """The mask with every non-final message zeroed (a message runs from its `<|start|>`)."""
    encoding = load_harmony_encoding()
    out = list(mask)
    starts = [i for i, t in enumerate(tokens) if t == START] + [len(tokens)]
    for begin, end in zip(starts, starts[1:]):
        header_end = next((i for i in range(begin, end) if tokens[i] == MESSAGE), end)
        header = encoding.decode(tokens[begin + 1:header_end])
        if "<|channel|>final" not in header:
            out[begin:end] = [0] * (end - begin)
    # the first reply message's `<|start|>assistant` belongs to the prompt; its mask is 0 anyway
    return out


def render_record(record, *, train_on: str = "all", max_length: int | None = None
                  ) -> tuple[list[int], list[int]]:
    """One JSON record -> (tokens, mask); raises DataError with the reason."""
    try:
        tokens, mask = render_for_training(_conversation(record))
    except (ChatFormatError, RenderError) as exc:
        raise DataError(str(exc)) from None
    if train_on == "final":
        mask = final_only(tokens, mask)
    if sum(mask[1:]) == 0:
        raise DataError("nothing to learn (no assistant tokens"
                        + (" on the final channel)" if train_on == "final" else ")"))
    if max_length is not None and len(tokens) > max_length:
        raise DataError(f"{len(tokens)} tokens, longer than max_length {max_length}")
    return tokens, mask


def load_jsonl(path: str | Path, *, train_on: str = "all", max_length: int | None = None,
               on_error: str = "skip") -> Dataset:
    """Read and render a JSONL file (see the module doc). Blank lines are ignored."""
    if train_on not in TRAIN_ON:
        raise DataError(f"train_on must be one of {TRAIN_ON}, got {train_on!r}")
    if on_error not in ON_ERROR:
        raise DataError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    data = Dataset(str(path), [])
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"invalid JSON ({exc.msg} at column {exc.colno})") from None
            tokens, mask = render_record(record, train_on=train_on, max_length=max_length)
        except DataError as exc:
            if on_error == "raise":
                raise DataError(f"{path}: line {number}: {exc}") from None
            data.bad.append(BadRecord(number, str(exc)))
            continue
        data.examples.append(Example(tuple(tokens), tuple(mask), number))
    if not data.examples:
        reasons = "; ".join(str(b) for b in data.bad[:3])
        raise DataError(f"{path}: no usable conversations" + (f" ({reasons})" if reasons else ""))
    return data
