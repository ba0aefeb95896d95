"""Harmony conversations → token ids, for completion and for training.

Conversations are openai-harmony's own `Conversation` / `Message` objects; every message is rendered
by openai-harmony (`HarmonyEncoding.render`), so the header layout, the system and developer
sections and the TypeScript-like `namespace functions { … }` tool rendering are exactly the
library's. Added here:
- conversation assembly: the chain-of-thought dropping rule and the "Calls to these tools must go
  to the commentary channel" flag are applied exactly as `HarmonyEncoding.render_conversation*`
  apply them, so the tokens are the library's (checked by the differential tests in
  tests/test_render.py);
- training masks (`render_for_training`);
- response formats (structured output), which openai-harmony 0.0.8 does not model: a
  `DeveloperContentWithFormats` appends, after the developer text the library renders,

      \\n\\n# Response Formats\\n\\n## {name}\\n\\n// {description line}\\n{schema as compact JSON}

  (one `## name` block per format, separated by a blank line; the description comment only when
  given; no leading blank line when the developer text is empty), the layout of harmony's format
  guide (`docs/format.md`, "Structured output"; the cookbook's corrected example). The whole
  developer text is then encoded in one piece, as the library encodes its own sections. Such
  content does not survive openai-harmony's `Conversation.to_json` / `from_json` round trip.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from openai_harmony import (
    Conversation,
    DeveloperContent,
    Message,
    ReasoningEffort,
    RenderOptions,
    ToolNamespaceConfig,
    Role,
    SystemContent,
    TextContent,
    ToolDescription,
)
from pydantic import BaseModel

from gptoss.harmony.tokenizer import MESSAGE, RETURN, START, load_harmony_encoding

DEFAULT_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
DEFAULT_KNOWLEDGE_CUTOFF = "2024-06"
ALL_CHANNELS = ("analysis", "commentary", "final")
BUILTIN_TOOLS = ("browser", "python")


class RenderError(ValueError):
    """A conversation that cannot be rendered (bad content, bad option value)."""


class ResponseFormat(BaseModel):
    """A structured-output format: rendered in the developer message under `# Response Formats`."""

    name: str
    json_schema: dict
    description: str | None = None


class DeveloperContentWithFormats(DeveloperContent):
    """openai-harmony's `DeveloperContent` plus response formats (rendered after the tools)."""

    response_formats: list[ResponseFormat] = []


# ---- building system and developer content ---------------------------------------------------
def parse_reasoning_effort(value: str | ReasoningEffort) -> ReasoningEffort:
    """'low' | 'medium' | 'high' (any case) or a `ReasoningEffort` → `ReasoningEffort`."""
    if isinstance(value, ReasoningEffort):
        return value
    if isinstance(value, str):
        for effort in ReasoningEffort:
            if value.strip().lower() == effort.value.lower():
                return effort
    raise RenderError(f"reasoning effort must be 'low', 'medium' or 'high', got {value!r}")


def system_content(
    *,
    model_identity: str | None = DEFAULT_IDENTITY,
    reasoning_effort: str | ReasoningEffort | None = ReasoningEffort.MEDIUM,
    knowledge_cutoff: str | None = DEFAULT_KNOWLEDGE_CUTOFF,
    current_date: str | None = None,
    builtin_tools: Iterable[str | ToolNamespaceConfig] = (),
    required_channels: Sequence[str] | None = ALL_CHANNELS,
) -> SystemContent:
    """The system message content. `None` leaves a line out (`current_date` is left out by default).

    `builtin_tools` may hold "browser" and/or "python" (harmony's own descriptions of the tools the
    model was trained with) or a tool's own `ToolNamespaceConfig` (`BuiltinTool.config()`,
    rendered as given); `required_channels` becomes "# Valid channels: …".
    """
    content = SystemContent(
        model_identity=model_identity,
        reasoning_effort=(None if reasoning_effort is None
                          else parse_reasoning_effort(reasoning_effort)),
        knowledge_cutoff=knowledge_cutoff,
        conversation_start_date=current_date,
        channel_config=None,
    )
    if required_channels is not None:
        content = content.with_required_channels(list(required_channels))
    for tool in builtin_tools:
        if isinstance(tool, ToolNamespaceConfig):
            content = content.with_tools(tool)
        elif tool == "browser":
            content = content.with_browser_tool()
        elif tool == "python":
            content = content.with_python_tool()
        else:
            raise RenderError(f"builtin tool must be one of {BUILTIN_TOOLS}, got {tool!r}")
    return content


def function_tool(name: str, description: str = "",
                  parameters: dict | None = None) -> ToolDescription:
    """A function tool; `parameters` is its JSON Schema (an object schema), None for no arguments."""
    if not isinstance(name, str) or not name:
        raise RenderError(f"a function tool needs a non-empty string name, got {name!r}")
    if parameters is not None and not isinstance(parameters, dict):
        raise RenderError(f"tool {name!r}: parameters must be a JSON Schema object (dict), "
                          f"got {type(parameters).__name__}")
    return ToolDescription.new(name, description or "", parameters=parameters)


def developer_content(
    *,
    instructions: str | None = None,
    function_tools: Sequence[ToolDescription] = (),
    response_formats: Sequence[ResponseFormat] = (),
) -> DeveloperContent:
    """The developer message content: `# Instructions`, `# Tools` (namespace functions), formats."""
    if response_formats:
        content: DeveloperContent = DeveloperContentWithFormats(
            response_formats=list(response_formats))
    else:
        content = DeveloperContent()
    if instructions is not None:
        content = content.with_instructions(instructions)
    if function_tools:
        content = content.with_function_tools(list(function_tools))
    return content


def response_formats_text(formats: Sequence[ResponseFormat]) -> str:
    """The `# Response Formats` section (schemas as compact JSON, keys in their given order)."""
    blocks = ["# Response Formats"]
    for fmt in formats:
        lines = [f"## {fmt.name}", ""]
        if fmt.description:
            lines += [f"// {line}" for line in fmt.description.splitlines()]
        schema = json.dumps(fmt.json_schema, ensure_ascii=False, separators=(",", ":"))
        blocks.append("\n".join(lines + [schema]))
    return "\n\n".join(blocks)


# ---- rendering ----------------------------------------------------------------------------------
def _has_function_tools(messages: Sequence[Message]) -> bool:
    """harmony's rule: some developer content declares a non-empty `functions` namespace."""
    return any(isinstance(c, DeveloperContent) and c.tools and c.tools.get("functions")
               and c.tools["functions"].tools for m in messages for c in m.content)


def _kept(messages: Sequence[Message], auto_drop_analysis: bool) -> list[Message]:
    """harmony's chain-of-thought rule: when the last assistant message is on `final`, analysis
    messages before the first `final` message are dropped (later analysis is kept)."""
    last_assistant = next((m for m in reversed(messages) if m.author.role == Role.ASSISTANT), None)
    ends_final = last_assistant is not None and last_assistant.channel == "final"
    if not (auto_drop_analysis and ends_final):
        return list(messages)
    first_final = next((i for i, m in enumerate(messages) if m.channel == "final"), None)
    if first_final is None:
        return list(messages)
    return [m for i, m in enumerate(messages) if not (i < first_final and m.channel == "analysis")]


def _with_formats_as_text(message: Message) -> Message:
    """Replace a `DeveloperContentWithFormats` by the text harmony would render plus the formats."""
    content = []
    for part in message.content:
        if isinstance(part, DeveloperContentWithFormats) and part.response_formats:
            base = DeveloperContent(instructions=part.instructions, tools=part.tools)
            tokens = render_message(Message(author=message.author, content=[base]))
            text = load_harmony_encoding().decode_utf8(tokens[tokens.index(MESSAGE) + 1:-1])
            formats = response_formats_text(part.response_formats)
            part = TextContent(text=f"{text}\n\n{formats}" if text else formats)
        content.append(part)
    return message.model_copy(update={"content": content})


def render_message(message: Message, *, has_function_tools: bool = False) -> list[int]:
    """One message: `<|start|>` … `<|end|>` (`<|call|>` for an assistant message with a recipient)."""
    if any(isinstance(c, DeveloperContentWithFormats) and c.response_formats
           for c in message.content):
        message = _with_formats_as_text(message)
    options = RenderOptions(conversation_has_function_tools=has_function_tools)
    try:
        return load_harmony_encoding().render(message, options)
    except RuntimeError as exc:  # openai-harmony reports its errors as RuntimeError (HarmonyError)
        raise RenderError(f"cannot render a {message.author.role.value} message: {exc}") from None


def render_conversation(conversation: Conversation, *,
                        auto_drop_analysis: bool = True) -> list[int]:
    """All messages, nothing appended (openai-harmony's `render_conversation`)."""
    messages = list(conversation.messages)
    flag = _has_function_tools(messages)
    return [t for m in _kept(messages, auto_drop_analysis)
            for t in render_message(m, has_function_tools=flag)]


def render_for_completion(conversation: Conversation, *,
                          auto_drop_analysis: bool = True) -> list[int]:
    """The prompt: all messages (chain-of-thought dropping applied), then `<|start|>assistant`."""
    encoding = load_harmony_encoding()
    return (render_conversation(conversation, auto_drop_analysis=auto_drop_analysis)
            + [START] + encoding.encode(Role.ASSISTANT.value))


def render_for_training(conversation: Conversation, *,
                        auto_drop_analysis: bool = True) -> tuple[list[int], list[int]]:
    """Token ids and a loss mask (1 = learn this token) for supervised fine-tuning.

    The conversation splits at its last system, developer or user message: the prompt is
    everything up to it, the reply everything after it.
    Tokens are exactly the prompt as `render_for_completion` renders it (chain-of-thought dropping
    applied to the prompt only; its closing `<|start|>assistant` opens the reply's first message)
    followed by what the model generates: the reply's messages in full,
    analysis included, the last one ending with `<|return|>` when it is an assistant message on
    `final` (as openai-harmony's `render_conversation_for_training` ends it). With
    `auto_drop_analysis=False` the tokens equal openai-harmony's
    `render_conversation_for_training(..., auto_drop_analysis=False)`.
    Mask: 0 over the prompt and over tool results in the reply; over each assistant message of
    the reply, 1 from the token after its `<|start|>assistant` header prefix (what the prompt
    supplies) through its stop token (`<|end|>`, `<|call|>` or `<|return|>`), and 1 over that
    prefix too when the message directly follows an assistant message that ended with `<|end|>` on
    a non-final channel (the model generates the next header itself).
    A conversation with no assistant message in its reply renders plainly, as openai-harmony
    renders it, with nothing to learn (an all-zero mask).
    """
    messages = list(conversation.messages)
    flag = _has_function_tools(messages)
    prompt_roles = (Role.SYSTEM, Role.DEVELOPER, Role.USER)
    first = 1 + max((i for i, m in enumerate(messages) if m.author.role in prompt_roles),
                    default=-1)
    reply = messages[first:]
    tokens = [t for m in _kept(messages[:first], auto_drop_analysis)
              for t in render_message(m, has_function_tools=flag)]
    mask = [0] * len(tokens)
    header = 1 + len(load_harmony_encoding().encode(Role.ASSISTANT.value))  # <|start|>assistant
    previous: Message | None = None
    for message in reply:
        ids = render_message(message, has_function_tools=flag)
        tokens += ids
        if message.author.role != Role.ASSISTANT:
            mask += [0] * len(ids)
        else:
            continues = (previous is not None and previous.author.role == Role.ASSISTANT
                         and previous.recipient is None and previous.channel != "final")
            skip = 0 if continues else header
            mask += [0] * skip + [1] * (len(ids) - skip)
        previous = message
    if reply and reply[-1].author.role == Role.ASSISTANT and reply[-1].channel == "final":
        tokens[-1] = RETURN
    return tokens, mask
