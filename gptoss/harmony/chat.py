"""OpenAI chat-completions requests → harmony conversations.

The semantics are those of the model's published chat template (`chat_template.jinja` of
openai/gpt-oss-20b), rendered by openai-harmony (gptoss.harmony.render):
- The system message is harmony's: model identity, `Knowledge cutoff: 2024-06`, `Current date:`
  (today unless `current_date` is given), `Reasoning: low|medium|high` (default medium; `none` and `minimal`
  are accepted as low), built-in tools (`builtin_tools`: "browser", "python"), the three channels.
- Leading `system` / `developer` messages become the developer message's `# Instructions`
  (several are joined by a blank line); `tools` become its `# Tools` / `namespace functions`
  section; a `json_schema` response format becomes its `# Response Formats` section. A system or
  developer message later in the conversation becomes a developer message `# Instructions` in
  place (the template silently drops it).
- `user` → a user message. Content is a string or a list of text parts (joined with no separator);
  other part types are rejected (the model reads text only).
- `assistant` without `tool_calls` → its reasoning (`reasoning_content`, `reasoning` or
  `thinking`) on `analysis`, then its content on `final`.
- `assistant` with `tool_calls` → reasoning on `analysis`, content (if any) as a `commentary`
  preamble, then one `commentary` message per call: recipient `functions.NAME`, content type
  `<|constrain|>json`, the arguments string verbatim (an object is serialised with json.dumps).
  The template rejects content together with reasoning and reads content alone as reasoning;
  here content is always the user-visible preamble, as the chat-completions API defines it.
- `tool` → `functions.NAME to=assistant` on `commentary`, NAME taken from the assistant call
  whose id equals `tool_call_id`; the content verbatim (the template JSON-quotes it).
- Reasoning is dropped from every assistant turn that a later final answer follows (the
  template's rule); reasoning since the last final answer (an ongoing tool loop) is kept.
- `tool_choice`: "auto" (default), "required", "none" (tools are then not rendered at all) or
  {"type": "function", "function": {"name": …}}; enforcing it is the sampler's job.
- `response_format`: "text" and "json_object" add nothing to the prompt; "json_schema" adds the
  schema under `# Response Formats` (`## name`, `// description`, compact JSON).
Invalid input raises ChatFormatError naming the message index or request field.
"""
from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from openai_harmony import Author, Conversation, Message, ReasoningEffort, Role, ToolDescription

from gptoss.harmony.render import (
    DEFAULT_IDENTITY,
    RenderError,
    ResponseFormat,
    developer_content,
    parse_reasoning_effort as parse_effort,
    render_for_completion,
    system_content,
)

TOOL_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
CHOICE_MODES = ("auto", "none", "required")
REASONING_FIELDS = ("reasoning_content", "reasoning", "thinking")  # first non-empty one is used


class ChatFormatError(ValueError):
    """A chat-completions request that cannot be mapped to harmony."""


@dataclass(frozen=True)
class ToolChoice:
    """The normalised `tool_choice`: mode "auto" | "none" | "required" | "function" (+ its name)."""

    mode: str
    name: str | None = None


def _as_dict(value, where: str) -> dict:
    if hasattr(value, "model_dump"):  # pydantic models from the HTTP layer
        value = value.model_dump(exclude_none=True)
    if not isinstance(value, Mapping):
        raise ChatFormatError(f"{where}: expected an object, got {type(value).__name__}")
    return dict(value)


def _text(content, where: str) -> str | None:
    """A string, or a list of text parts joined together; None stays None."""
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ChatFormatError(f"{where}: expected a string or a list of text parts, "
                              f"got {type(content).__name__}")
    texts = []
    for k, part in enumerate(content):
        part = _as_dict(part, f"{where}[{k}]")
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise ChatFormatError(f"{where}[{k}]: only text parts are supported, "
                                  f"got type {part.get('type')!r}")
        texts.append(part["text"])
    return "".join(texts)


# ---- request fields -----------------------------------------------------------------------------
def parse_reasoning_effort(value) -> ReasoningEffort:
    """None → medium; 'none' | 'minimal' | 'low' | 'medium' | 'high' (any case) →
    ReasoningEffort, where 'none' and 'minimal' (OpenAI's names below low) are low: gpt-oss's
    template knows low, medium and high only."""
    if value is None:
        return ReasoningEffort.MEDIUM
    if isinstance(value, str) and value.strip().lower() in ("none", "minimal"):
        return ReasoningEffort.LOW
    try:
        return parse_effort(value)
    except RenderError:
        raise ChatFormatError(f"reasoning_effort: expected 'none', 'minimal', 'low', 'medium' or "
                              f"'high', got {value!r}") from None


def _parameters(params, where: str) -> dict | None:
    """An object JSON Schema; None when the function takes no arguments (`() => any`)."""
    if params is None:
        return None
    if not isinstance(params, Mapping):
        raise ChatFormatError(f"{where}: expected a JSON Schema object, "
                              f"got {type(params).__name__}")
    if params.get("type", "object") != "object":
        raise ChatFormatError(f"{where}: the parameters schema must have type 'object', "
                              f"got {params.get('type')!r}")
    properties = params.get("properties")
    if properties is not None and not isinstance(properties, Mapping):
        raise ChatFormatError(f"{where}.properties: expected an object")
    if not properties:  # no arguments: rendered as `() => any`, as the chat template does
        return None
    return {"type": "object", **params}


def parse_tools(tools) -> list[ToolDescription]:
    """`tools` (type "function" with JSON Schema parameters) → harmony tool descriptions."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise ChatFormatError(f"tools: expected a list, got {type(tools).__name__}")
    out: list[ToolDescription] = []
    for k, tool in enumerate(tools):
        tool = _as_dict(tool, f"tools[{k}]")
        if tool.get("type", "function") != "function":
            raise ChatFormatError(f"tools[{k}].type: only 'function' tools are supported, "
                                  f"got {tool.get('type')!r}")
        fn = _as_dict(tool.get("function"), f"tools[{k}].function")
        name, description = fn.get("name"), fn.get("description") or ""
        if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
            raise ChatFormatError(f"tools[{k}].function.name: expected 1-64 letters, digits, "
                                  f"'_', '-' or '.', got {name!r}")
        if any(t.name == name for t in out):
            raise ChatFormatError(f"tools[{k}].function.name: duplicate tool name {name!r}")
        if not isinstance(description, str):
            raise ChatFormatError(f"tools[{k}].function.description: expected a string")
        params = _parameters(fn.get("parameters"), f"tools[{k}].function.parameters")
        out.append(ToolDescription.new(name, description, parameters=params))
    return out


def parse_tool_choice(tool_choice, tool_names: Sequence[str]) -> ToolChoice:
    """Validate `tool_choice` against the declared tool names."""
    if tool_choice is None:
        return ToolChoice("auto")
    if isinstance(tool_choice, str):
        if tool_choice not in CHOICE_MODES:
            raise ChatFormatError(f"tool_choice: expected one of {CHOICE_MODES} or a function "
                                  f"choice, got {tool_choice!r}")
        if tool_choice == "required" and not tool_names:
            raise ChatFormatError("tool_choice: 'required' needs at least one tool in 'tools'")
        return ToolChoice(tool_choice)
    choice = _as_dict(tool_choice, "tool_choice")
    name = (choice.get("function") or {}).get("name") if isinstance(
        choice.get("function"), Mapping) else None
    if choice.get("type") != "function" or not isinstance(name, str):
        raise ChatFormatError("tool_choice: expected {'type': 'function', 'function': "
                              f"{{'name': ...}}}}, got {tool_choice!r}")
    if name not in tool_names:
        raise ChatFormatError(f"tool_choice.function.name: {name!r} is not one of the tools "
                              f"{list(tool_names)}")
    return ToolChoice("function", name)


def parse_response_format(response_format) -> list[ResponseFormat]:
    """`response_format` → the formats to render (none for text and json_object)."""
    if response_format is None:
        return []
    fmt = _as_dict(response_format, "response_format")
    kind = fmt.get("type")
    if kind in ("text", "json_object"):
        return []
    if kind != "json_schema":
        raise ChatFormatError("response_format.type: expected 'text', 'json_object' or "
                              f"'json_schema', got {kind!r}")
    spec = _as_dict(fmt.get("json_schema"), "response_format.json_schema")
    name, schema, description = spec.get("name"), spec.get("schema"), spec.get("description")
    if not isinstance(name, str) or not name:
        raise ChatFormatError("response_format.json_schema.name: expected a non-empty string")
    if not isinstance(schema, Mapping):
        raise ChatFormatError("response_format.json_schema.schema: expected a JSON Schema object")
    if description is not None and not isinstance(description, str):
        raise ChatFormatError("response_format.json_schema.description: expected a string")
    return [ResponseFormat(name=name, json_schema=dict(schema), description=description)]


# ---- messages -----------------------------------------------------------------------------------
def _tool_call(call, where: str) -> tuple[str, str, str | None]:
    """One entry of `tool_calls` → (name, arguments text, id)."""
    call = _as_dict(call, where)
    if call.get("type", "function") != "function":
        raise ChatFormatError(f"{where}.type: only 'function' calls are supported")
    fn = _as_dict(call.get("function"), f"{where}.function")
    name, args = fn.get("name"), fn.get("arguments")
    if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
        raise ChatFormatError(f"{where}.function.name: expected a tool name, got {name!r}")
    if args is None or args == "":
        args = "{}"
    elif isinstance(args, (Mapping, list)):
        args = json.dumps(args, ensure_ascii=False)
    elif not isinstance(args, str):
        raise ChatFormatError(f"{where}.function.arguments: expected a JSON string")
    call_id = call.get("id")
    if call_id is not None and not isinstance(call_id, str):
        raise ChatFormatError(f"{where}.id: expected a string")
    return name, args, call_id


def _assistant(m: dict, where: str, calls: dict[str, str]) -> list[Message]:
    content = _text(m.get("content"), f"{where}.content")
    reasoning = next((m[k] for k in REASONING_FIELDS if m.get(k)), None)
    if reasoning is not None and not isinstance(reasoning, str):
        raise ChatFormatError(f"{where}.reasoning_content: expected a string")
    tool_calls = m.get("tool_calls") or []
    if not isinstance(tool_calls, list):
        raise ChatFormatError(f"{where}.tool_calls: expected a list")
    out = [_assistant_text(reasoning, "analysis")] if reasoning else []
    if not tool_calls:
        return out + [_assistant_text(content or "", "final")]
    if content:
        out.append(_assistant_text(content, "commentary"))
    for j, raw in enumerate(tool_calls):
        name, args, call_id = _tool_call(raw, f"{where}.tool_calls[{j}]")
        if call_id is not None:
            calls[call_id] = name
        out.append(_assistant_text(args, "commentary").with_recipient(f"functions.{name}")
                   .with_content_type("<|constrain|>json"))
    return out


def _assistant_text(text: str, channel: str) -> Message:
    return Message.from_role_and_content(Role.ASSISTANT, text).with_channel(channel)


def _tool_result(m: dict, where: str, calls: dict[str, str]) -> Message:
    call_id = m.get("tool_call_id")
    if not isinstance(call_id, str) or call_id not in calls:
        raise ChatFormatError(f"{where}.tool_call_id: no earlier assistant tool call has id "
                              f"{call_id!r}")
    content = _text(m.get("content"), f"{where}.content") or ""
    author = Author.new(Role.TOOL, f"functions.{calls[call_id]}")
    return (Message.from_author_and_content(author, content).with_channel("commentary")
            .with_recipient("assistant"))


def _map_messages(messages) -> tuple[list[str], list[Message]]:
    """→ (leading instructions, the conversation's other messages in order)."""
    if not isinstance(messages, list) or not messages:
        raise ChatFormatError("messages: expected a non-empty list")
    instructions: list[str] = []
    body: list[Message] = []
    calls: dict[str, str] = {}  # tool call id → function name
    for i, raw in enumerate(messages):
        where = f"messages[{i}]"
        m = _as_dict(raw, where)
        role = m.get("role")
        if role in ("system", "developer"):
            text = _text(m.get("content"), f"{where}.content") or ""
            if not body:
                instructions.append(text)
            else:
                body.append(Message.from_role_and_content(
                    Role.DEVELOPER, developer_content(instructions=text)))
        elif role == "user":
            body.append(Message.from_role_and_content(
                Role.USER, _text(m.get("content"), f"{where}.content") or ""))
        elif role == "assistant":
            body += _assistant(m, where, calls)
        elif role == "tool":
            body.append(_tool_result(m, where, calls))
        else:
            raise ChatFormatError(f"{where}.role: unknown role {role!r} (expected system, "
                                  "developer, user, assistant or tool)")
    return instructions, body


def _drop_answered_reasoning(messages: list[Message]) -> list[Message]:
    """The template's rule: analysis followed by a later final answer is dropped."""
    last_final = max((i for i, m in enumerate(messages)
                      if m.author.role == Role.ASSISTANT and m.channel == "final"), default=-1)
    return [m for i, m in enumerate(messages) if not (i < last_final and m.channel == "analysis")]


def _date(current_date) -> str:
    if current_date is None:
        return datetime.date.today().isoformat()
    if isinstance(current_date, datetime.datetime):
        return current_date.date().isoformat()
    if isinstance(current_date, datetime.date):
        return current_date.isoformat()
    if isinstance(current_date, str) and current_date:
        return current_date
    raise ChatFormatError(f"current_date: expected a date or 'YYYY-MM-DD', got {current_date!r}")


def chat_to_conversation(messages, *, tools=None, tool_choice=None, reasoning_effort=None,
                         response_format=None, model_identity=None, current_date=None,
                         builtin_tools=None) -> Conversation:
    """A chat-completions request → the harmony conversation to render (see the module doc)."""
    functions = parse_tools(tools)
    choice = parse_tool_choice(tool_choice, [t.name for t in functions])
    formats = parse_response_format(response_format)
    if model_identity is not None and not isinstance(model_identity, str):
        raise ChatFormatError("model_identity: expected a string")
    if builtin_tools is not None and not isinstance(builtin_tools, (list, tuple)):
        raise ChatFormatError("builtin_tools: expected a list of 'browser' and/or 'python'")
    try:
        system = system_content(model_identity=model_identity or DEFAULT_IDENTITY,
                                reasoning_effort=parse_reasoning_effort(reasoning_effort),
                                current_date=_date(current_date), builtin_tools=builtin_tools or ())
    except RenderError as exc:
        raise ChatFormatError(f"builtin_tools: {exc}") from None
    instructions, body = _map_messages(messages)
    text = "\n\n".join(t for t in instructions if t) or None
    if choice.mode == "none":
        functions = []
    head = [Message.from_role_and_content(Role.SYSTEM, system)]
    if text is not None or functions or formats:
        head.append(Message.from_role_and_content(Role.DEVELOPER, developer_content(
            instructions=text, function_tools=functions, response_formats=formats)))
    return Conversation.from_messages(head + _drop_answered_reasoning(body))


def render_chat(messages, *, tools=None, tool_choice=None, reasoning_effort=None,
                response_format=None, model_identity=None, current_date=None,
                builtin_tools=None) -> list[int]:
    """A chat-completions request → prompt token ids ending with `<|start|>assistant`."""
    return render_for_completion(chat_to_conversation(
        messages, tools=tools, tool_choice=tool_choice, reasoning_effort=reasoning_effort,
        response_format=response_format, model_identity=model_identity,
        current_date=current_date, builtin_tools=builtin_tools))
