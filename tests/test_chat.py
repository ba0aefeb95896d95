"""gptoss.harmony.chat: chat-completions requests → harmony prompts.

Expected prompts are written out here (the published chat template's semantics, rendered in
harmony's exact format) and encoded by tiktoken; a hypothesis differential test compares
`render_chat` with openai-harmony's rendering of an oracle conversation that the test builds with
openai-harmony's own API, without our mapping code.
"""
from __future__ import annotations

import datetime
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai_harmony import (
    Author,
    Conversation,
    DeveloperContent,
    Message,
    ReasoningEffort,
    Role,
    SystemContent,
    ToolDescription,
)

from gptoss.harmony.chat import (
    ChatFormatError,
    ToolChoice,
    chat_to_conversation,
    parse_tool_choice,
    render_chat,
)
from gptoss.harmony.tokenizer import get_tokenizer, load_harmony_encoding

ENC = load_harmony_encoding()
TOK = get_tokenizer()
DATE = "2025-08-05"
IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."


def system(effort="medium", functions=False, identity=IDENTITY, tools=""):
    note = "\nCalls to these tools must go to the commentary channel: 'functions'." if functions else ""
    return (f"<|start|>system<|message|>{identity}\nKnowledge cutoff: 2024-06\nCurrent date: {DATE}"
            f"\n\nReasoning: {effort}\n\n{tools}# Valid channels: analysis, commentary, final. "
            f"Channel must be included for every message.{note}<|end|>")


def check(request: dict, expected: str) -> None:
    tokens = render_chat(current_date=DATE, **request)
    assert TOK.decode(tokens) == expected
    assert tokens == TOK.encode(expected, allowed_special="all")


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Gets the weather.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["c", "f"], "default": "c"}}, "required": ["city"]}}}
WEATHER_NS = ("# Tools\n\n## functions\n\nnamespace functions {\n\n// Gets the weather.\n"
              "type get_weather = (_: {\n// City name\ncity: string,\n"
              'unit?: "c" | "f", // default: c\n}) => any;\n\n} // namespace functions')
Q = "<|start|>user<|message|>Weather in Paris?<|end|>"
CALL = {"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
CALL_TEXT = ("<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json"
             '<|message|>{"city": "Paris"}<|call|>')
RESULT_TEXT = ('<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>'
               '{"temp": 21}<|end|>')


# ---- each message kind ---------------------------------------------------------------------------
def test_user_only_prompt():
    check({"messages": [{"role": "user", "content": "Hi"}]},
          system() + "<|start|>user<|message|>Hi<|end|><|start|>assistant")


@pytest.mark.parametrize("role", ["system", "developer"])
def test_leading_system_or_developer_message_becomes_instructions(role):
    check({"messages": [{"role": role, "content": "Be terse."},
                        {"role": "user", "content": [{"type": "text", "text": "Hi "},
                                                     {"type": "text", "text": "there"}]}]},
          system() + "<|start|>developer<|message|># Instructions\n\nBe terse.<|end|>"
          "<|start|>user<|message|>Hi there<|end|><|start|>assistant")


def test_several_leading_instructions_and_a_later_system_message():
    check({"messages": [{"role": "system", "content": "A."}, {"role": "developer", "content": "B."},
                        {"role": "user", "content": "Hi"}, {"role": "system", "content": "C."}]},
          system() + "<|start|>developer<|message|># Instructions\n\nA.\n\nB.<|end|>"
          "<|start|>user<|message|>Hi<|end|>"
          "<|start|>developer<|message|># Instructions\n\nC.<|end|><|start|>assistant")


def test_options_effort_identity_builtin_tools():
    check({"messages": [{"role": "user", "content": "Hi"}], "reasoning_effort": "HIGH",
           "model_identity": "You are a pirate.", "builtin_tools": ["python"]},
          system("high", identity="You are a pirate.", tools="# Tools\n\n## python\n\nUse this tool "
                 "to execute Python code in your chain of thought. The code will not be shown to "
                 "the user. This tool should be used for internal reasoning, but not for code that "
                 "is intended to be visible to the user (e.g. when creating plots, tables, or "
                 "files).\n\nWhen you send a message containing Python code to python, it will be "
                 "executed in a stateful Jupyter notebook environment. python will respond with the "
                 "output of the execution or time out after 120.0 seconds. The drive at "
                 "'/mnt/data' can be used to save and persist user files. Internet access for this "
                 "session is UNKNOWN. Depends on the cluster.\n\n")
          + "<|start|>user<|message|>Hi<|end|><|start|>assistant")
    low = render_chat([{"role": "user", "content": "x"}], reasoning_effort="minimal",
                      current_date=datetime.date(2025, 8, 5))
    assert "Reasoning: low" in TOK.decode(low) and f"Current date: {DATE}" in TOK.decode(low)


def test_default_date_is_today():
    text = TOK.decode(render_chat([{"role": "user", "content": "x"}]))
    assert f"Current date: {datetime.date.today().isoformat()}\n" in text


def test_earlier_reasoning_is_dropped_after_a_final_answer():
    check({"messages": [{"role": "user", "content": "1+1?"},
                        {"role": "assistant", "content": "2", "reasoning_content": "easy"},
                        {"role": "user", "content": "2+2?"}]},
          system() + "<|start|>user<|message|>1+1?<|end|>"
          "<|start|>assistant<|channel|>final<|message|>2<|end|>"
          "<|start|>user<|message|>2+2?<|end|><|start|>assistant")


def test_tool_round_trip_keeps_the_ongoing_reasoning():
    check({"tools": [WEATHER_TOOL], "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "reasoning": "Need the tool.", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'}]},
          system(functions=True) + f"<|start|>developer<|message|>{WEATHER_NS}<|end|>" + Q
          + "<|start|>assistant<|channel|>analysis<|message|>Need the tool.<|end|>"
          + CALL_TEXT + RESULT_TEXT + "<|start|>assistant")


def test_tool_loop_reasoning_is_dropped_once_answered_but_the_preamble_stays():
    check({"tools": [WEATHER_TOOL], "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Checking.", "reasoning_content": "Need the tool.",
         "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text",
                                                                "text": '{"temp": 21}'}]},
        {"role": "assistant", "content": "21 degrees.", "reasoning_content": "Say it."},
        {"role": "user", "content": "Thanks"}]},
          system(functions=True) + f"<|start|>developer<|message|>{WEATHER_NS}<|end|>" + Q
          + "<|start|>assistant<|channel|>commentary<|message|>Checking.<|end|>" + CALL_TEXT
          + RESULT_TEXT + "<|start|>assistant<|channel|>final<|message|>21 degrees.<|end|>"
          + "<|start|>user<|message|>Thanks<|end|><|start|>assistant")


def test_several_calls_in_one_message_and_object_arguments():
    second = {"id": "call_2", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}}
    check({"tools": [WEATHER_TOOL], "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "tool_calls": [CALL, second]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "call_2", "content": "hot"}]},
          system(functions=True) + f"<|start|>developer<|message|>{WEATHER_NS}<|end|>" + Q
          + CALL_TEXT + "<|start|>assistant to=functions.get_weather<|channel|>commentary "
          '<|constrain|>json<|message|>{"city": "Rome"}<|call|>' + RESULT_TEXT
          + "<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>hot<|end|>"
          + "<|start|>assistant")


def test_tools_without_parameters_and_tool_choice_none():
    ping = {"type": "function", "function": {"name": "ping", "parameters": {
        "type": "object", "properties": {}}}}
    check({"messages": [{"role": "user", "content": "Hi"}], "tools": [ping, WEATHER_TOOL],
           "tool_choice": "required"},
          system(functions=True) + "<|start|>developer<|message|># Tools\n\n## functions\n\n"
          "namespace functions {\n\ntype ping = () => any;\n\n"
          + WEATHER_NS[len("# Tools\n\n## functions\n\nnamespace functions {\n\n"):]
          + "<|end|><|start|>user<|message|>Hi<|end|><|start|>assistant")
    check({"messages": [{"role": "user", "content": "Hi"}], "tools": [ping], "tool_choice": "none"},
          system() + "<|start|>user<|message|>Hi<|end|><|start|>assistant")


def test_response_formats():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    check({"messages": [{"role": "user", "content": "Hi"}], "response_format": {
        "type": "json_schema", "json_schema": {"name": "num", "description": "A number.",
                                               "schema": schema, "strict": True}}},
          system() + "<|start|>developer<|message|># Response Formats\n\n## num\n\n"
          '// A number.\n{"type":"object","properties":{"n":{"type":"integer"}}}<|end|>'
          "<|start|>user<|message|>Hi<|end|><|start|>assistant")
    for kind in ("json_object", "text"):
        check({"messages": [{"role": "user", "content": "Hi"}], "response_format": {"type": kind}},
              system() + "<|start|>user<|message|>Hi<|end|><|start|>assistant")


def test_tool_choice_normalisation():
    assert parse_tool_choice(None, ["f"]) == ToolChoice("auto")
    assert parse_tool_choice("none", []) == ToolChoice("none")
    assert parse_tool_choice({"type": "function", "function": {"name": "f"}}, ["f"]) == \
        ToolChoice("function", "f")


# ---- errors ------------------------------------------------------------------------------------
USER = {"role": "user", "content": "Hi"}


@pytest.mark.parametrize("request_, match", [
    ({"messages": []}, r"messages: expected a non-empty list"),
    ({"messages": [USER, {"role": "bot", "content": "x"}]}, r"messages\[1\]\.role: unknown role"),
    ({"messages": [USER, {"role": "tool", "tool_call_id": "nope", "content": "x"}]},
     r"messages\[1\]\.tool_call_id: no earlier assistant tool call has id 'nope'"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     r"messages\[0\]\.content\[0\]: only text parts"),
    ({"messages": [USER, {"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}]},
     r"messages\[1\]\.tool_calls\[0\]\.function\.name"),
    ({"messages": [USER], "tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "string"}}}]},
     r"tools\[0\]\.function\.parameters: the parameters schema must have type 'object'"),
    ({"messages": [USER], "tools": [{"type": "function", "function": {
        "name": "f", "parameters": ["x"]}}]}, r"tools\[0\]\.function\.parameters: expected"),
    ({"messages": [USER], "tools": [{"type": "code_interpreter"}]}, r"tools\[0\]\.type"),
    ({"messages": [USER], "tools": [WEATHER_TOOL, WEATHER_TOOL]}, r"tools\[1\].*duplicate"),
    ({"messages": [USER], "tool_choice": "sometimes"}, r"tool_choice: expected one of"),
    ({"messages": [USER], "tool_choice": "required"}, r"tool_choice: 'required' needs"),
    ({"messages": [USER], "tools": [WEATHER_TOOL],
      "tool_choice": {"type": "function", "function": {"name": "other"}}},
     r"tool_choice\.function\.name: 'other' is not one of"),
    ({"messages": [USER], "reasoning_effort": "max"}, r"reasoning_effort: expected"),
    ({"messages": [USER], "response_format": {"type": "yaml"}}, r"response_format\.type"),
    ({"messages": [USER], "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
     r"response_format\.json_schema\.schema"),
    ({"messages": [USER], "builtin_tools": ["shell"]}, r"builtin_tools: builtin tool must be"),
])
def test_invalid_requests_raise_chat_format_errors(request_, match):
    with pytest.raises(ChatFormatError, match=match):
        chat_to_conversation(current_date=DATE, **request_)
    assert issubclass(ChatFormatError, ValueError)


# ---- differential: hypothesis requests against an oracle built with openai-harmony's API ---------
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=16)
NAME = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
LEAF = st.fixed_dictionaries({"type": st.sampled_from(["string", "number", "integer", "boolean"])},
                             optional={"description": TEXT, "default": st.integers(0, 9)})
ENUM = st.fixed_dictionaries({"type": st.just("string"), "enum": st.lists(NAME, min_size=1,
                                                                          max_size=3)})
SCHEMA = st.recursive(st.one_of(LEAF, ENUM), lambda inner: st.one_of(
    st.fixed_dictionaries({"type": st.just("array"), "items": inner}),
    st.fixed_dictionaries({"oneOf": st.lists(inner, min_size=1, max_size=2)},
                          optional={"description": TEXT}),
    st.dictionaries(NAME, inner, min_size=1, max_size=3).map(
        lambda p: {"type": "object", "properties": p, "required": sorted(p)[:1]})), max_leaves=6)
PARAMS = st.dictionaries(NAME, SCHEMA, max_size=3).map(
    lambda p: {"type": "object", "properties": p})
TOOL_DEFS = st.lists(st.tuples(NAME, TEXT, PARAMS), max_size=3, unique_by=lambda t: t[0])


@st.composite
def chat_requests(draw):
    tools = draw(TOOL_DEFS)
    names = [n for n, _, _ in tools] or ["fallback"]
    messages = [{"role": "system", "content": draw(TEXT)}] if draw(st.booleans()) else []
    for turn in range(draw(st.integers(1, 4))):
        messages.append({"role": "user", "content": draw(TEXT)})
        for k in range(draw(st.integers(0, 2))):  # tool round trips
            calls = [{"id": f"c{turn}_{k}_{j}", "type": "function", "function": {
                "name": draw(st.sampled_from(names)), "arguments": json.dumps({"q": draw(TEXT)})}}
                for j in range(draw(st.integers(1, 2)))]
            messages.append({"role": "assistant", "content": draw(st.one_of(st.none(), TEXT)),
                             "reasoning_content": draw(st.one_of(st.none(), TEXT)),
                             "tool_calls": calls})
            messages += [{"role": "tool", "tool_call_id": c["id"], "content": draw(TEXT)}
                         for c in calls]
        if draw(st.booleans()) or turn < 1:
            messages.append({"role": "assistant", "content": draw(TEXT),
                             "reasoning": draw(st.one_of(st.none(), TEXT))})
    effort = draw(st.sampled_from([None, "low", "medium", "high"]))
    choice = draw(st.sampled_from([None, "auto", "none"] + (["required"] if tools else [])))
    return {"messages": messages, "reasoning_effort": effort, "tool_choice": choice,
            "tools": [{"type": "function", "function": {"name": n, "description": d,
                                                        "parameters": p}} for n, d, p in tools]}


def oracle(request) -> Conversation:
    """The expected conversation, built directly with openai-harmony's API."""
    effort = {None: ReasoningEffort.MEDIUM, "low": ReasoningEffort.LOW,
              "medium": ReasoningEffort.MEDIUM, "high": ReasoningEffort.HIGH}
    head = [Message.from_role_and_content(Role.SYSTEM, SystemContent.new().with_reasoning_effort(
        effort[request["reasoning_effort"]]).with_conversation_start_date(DATE))]
    dev, messages = DeveloperContent.new(), request["messages"]
    if messages[0]["role"] == "system":
        if messages[0]["content"]:
            dev = dev.with_instructions(messages[0]["content"])
        messages = messages[1:]
    if request["tools"] and request["tool_choice"] != "none":
        dev = dev.with_function_tools([ToolDescription.new(
            t["function"]["name"], t["function"]["description"],
            parameters=t["function"]["parameters"] if t["function"]["parameters"]["properties"]
            else None) for t in request["tools"]])
    if dev.instructions is not None or dev.tools:
        head.append(Message.from_role_and_content(Role.DEVELOPER, dev))
    # the last final answer (an assistant message without tool calls): the template renders no
    # reasoning of a final answer, nor of a tool call that such an answer follows
    answered = max((i for i, m in enumerate(messages)
                    if m["role"] == "assistant" and not m.get("tool_calls")), default=-1)
    body, names = [], {}
    for i, m in enumerate(messages):
        if m["role"] == "user":
            body.append(Message.from_role_and_content(Role.USER, m["content"]))
        elif m["role"] == "tool":
            body.append(Message.from_author_and_content(
                Author.new(Role.TOOL, "functions." + names[m["tool_call_id"]]), m["content"])
                .with_channel("commentary").with_recipient("assistant"))
        else:
            thought = m.get("reasoning_content") or m.get("reasoning")
            if thought and m.get("tool_calls") and i > answered:
                body.append(Message.from_role_and_content(Role.ASSISTANT, thought)
                            .with_channel("analysis"))
            if not m.get("tool_calls"):
                body.append(Message.from_role_and_content(Role.ASSISTANT, m["content"])
                            .with_channel("final"))
                continue
            if m["content"]:
                body.append(Message.from_role_and_content(Role.ASSISTANT, m["content"])
                            .with_channel("commentary"))
            for call in m["tool_calls"]:
                names[call["id"]] = call["function"]["name"]
                body.append(Message.from_role_and_content(Role.ASSISTANT, call["function"][
                    "arguments"]).with_channel("commentary").with_recipient(
                    "functions." + call["function"]["name"]).with_content_type("<|constrain|>json"))
    return Conversation.from_messages(head + body)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chat_requests())
def test_render_chat_equals_harmony_on_the_oracle_conversation(request):
    expected = ENC.render_conversation_for_completion(oracle(request), Role.ASSISTANT)
    assert render_chat(current_date=DATE, **request) == expected
