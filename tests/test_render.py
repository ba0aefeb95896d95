"""gptoss.harmony.render against its oracles.

1. Conformance: every rendering scenario of openai-harmony's public conformance vectors
   (`test-data/` of openai/harmony), with the expected prompt text written out here and encoded by
   tiktoken (special tokens allowed) as the oracle token ids.
2. Differential: hypothesis-generated conversations (nested JSON Schemas, all roles and channels,
   recipients, content types, multi-turn) rendered by us equal openai-harmony's own
   `render_conversation*` functions.
3. Training masks, response formats and errors.
"""
from __future__ import annotations

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
    RenderConversationConfig,
    Role,
    SystemContent,
    ToolDescription,
)

from gptoss.harmony import render as R
from gptoss.harmony.tokenizer import get_tokenizer, load_harmony_encoding

IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
ENC = load_harmony_encoding()
TOK = get_tokenizer()


def ids(text: str) -> list[int]:
    """The oracle: tiktoken's encoding of the expected text, special tokens allowed."""
    return TOK.encode(text, allowed_special="all")


def check(tokens: list[int], expected_text: str) -> None:
    assert TOK.decode(tokens) == expected_text
    assert tokens == ids(expected_text)


def system_text(effort="medium", *, cutoff="2024-06", date=None, tools=None,
                channels="analysis, commentary, final", functions=False) -> str:
    top = [IDENTITY, f"Knowledge cutoff: {cutoff}"] + ([f"Current date: {date}"] if date else [])
    sections = ["\n".join(top), f"Reasoning: {effort}"] + ([tools] if tools else [])
    valid = f"# Valid channels: {channels}. Channel must be included for every message."
    if functions:
        valid += "\nCalls to these tools must go to the commentary channel: 'functions'."
    return "<|start|>system<|message|>" + "\n\n".join(sections + [valid]) + "<|end|>"


def msg(role: Role, content, channel=None, recipient=None, content_type=None) -> Message:
    m = Message.from_role_and_content(role, content)
    return m.model_copy(update={"channel": channel, "recipient": recipient,
                                "content_type": content_type})


def user(text):
    return msg(Role.USER, text)


BROWSER = "\n".join([
    "## browser", "",
    "// Tool for browsing.",
    "// The `cursor` appears in brackets before each browsing display: `[{cursor}]`.",
    "// Cite information from the tool using the following format:",
    "// `【{cursor}†L{line_start}(-L{line_end})?】`, for example: `【6†L9-L11】` or `【8†L3】`.",
    "// Do not quote more than 10 words directly from the tool output.",
    "// sources=web (default: web)",
    "namespace browser {", "",
    "// Searches for information related to `query` and displays `topn` results.",
    "type search = (_: {", "query: string,", "topn?: number, // default: 10", "source?: string,",
    "}) => any;", "",
    "// Opens the link `id` from the page indicated by `cursor` starting at line number `loc`, "
    "showing `num_lines` lines.",
    "// Valid link ids are displayed with the formatting: `【{id}†.*】`.",
    "// If `cursor` is not provided, the most recent page is implied.",
    "// If `id` is a string, it is treated as a fully qualified URL associated with `source`.",
    "// If `loc` is not provided, the viewport will be positioned at the beginning of the document "
    "or centered on the most relevant passage, if available.",
    "// Use this function without `id` to scroll to a new location of an opened page.",
    "type open = (_: {", "id?: number | string, // default: -1", "cursor?: number, // default: -1",
    "loc?: number, // default: -1", "num_lines?: number, // default: -1",
    "view_source?: boolean, // default: false", "source?: string,", "}) => any;", "",
    "// Finds exact matches of `pattern` in the current page, or the page given by `cursor`.",
    "type find = (_: {", "pattern: string,", "cursor?: number, // default: -1", "}) => any;", "",
    "} // namespace browser",
])
PYTHON = (
    "## python\n\nUse this tool to execute Python code in your chain of thought. The code will not "
    "be shown to the user. This tool should be used for internal reasoning, but not for code that "
    "is intended to be visible to the user (e.g. when creating plots, tables, or files).\n\n"
    "When you send a message containing Python code to python, it will be executed in a stateful "
    "Jupyter notebook environment. python will respond with the output of the execution or time "
    "out after 120.0 seconds. The drive at '/mnt/data' can be used to save and persist user files. "
    "Internet access for this session is UNKNOWN. Depends on the cluster."
)
CAPITAL = "What is the capital of the largest country in the world?"
ROBOT = "Answer the user's questions like a robot."


# ---- conformance: harmony's test-data scenarios -------------------------------------------------
def test_simple_conversation():
    convo = Conversation.from_messages([
        msg(Role.SYSTEM, R.system_content()), user("What is 2 + 2?")])
    check(R.render_for_completion(convo),
          system_text() + "<|start|>user<|message|>What is 2 + 2?<|end|><|start|>assistant")


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
@pytest.mark.parametrize("with_instructions", [True, False])
def test_each_reasoning_effort_with_and_without_instructions(effort, with_instructions):
    messages = [msg(Role.SYSTEM, R.system_content(reasoning_effort=effort))]
    expected = system_text(effort)
    if with_instructions:
        messages.append(msg(Role.DEVELOPER, R.developer_content(instructions=ROBOT)))
        expected += f"<|start|>developer<|message|># Instructions\n\n{ROBOT}<|end|>"
    messages.append(user(CAPITAL))
    expected += f"<|start|>user<|message|>{CAPITAL}<|end|><|start|>assistant"
    check(R.render_for_completion(Conversation.from_messages(messages)), expected)


@pytest.mark.parametrize("effort, cutoff, date, question", [
    ("medium", "2024-06", None, "What is 2 + 2?"),
    ("high", "2024-06", None, "What is the best place to eat candy in the world?"),
    ("medium", "2021-01", "2021-01-01", "What is 42 * pi?"),
])
def test_required_channels_and_dates(effort, cutoff, date, question):
    content = R.system_content(reasoning_effort=effort, knowledge_cutoff=cutoff, current_date=date,
                               required_channels=["analysis", "final"])
    convo = Conversation.from_messages([msg(Role.SYSTEM, content), user(question)])
    expected = system_text(effort, cutoff=cutoff, date=date, channels="analysis, final")
    check(R.render_for_completion(convo),
          expected + f"<|start|>user<|message|>{question}<|end|><|start|>assistant")


@pytest.mark.parametrize("builtin, tools_text", [
    ((), None),
    (("browser",), "# Tools\n\n" + BROWSER),
    (("python", "browser"), "# Tools\n\n" + BROWSER + "\n\n" + PYTHON),
])
def test_no_tools_and_builtin_tools(builtin, tools_text):
    content = R.system_content(current_date="2025-06-28", builtin_tools=builtin)
    convo = Conversation.from_messages([msg(Role.SYSTEM, content)])
    check(R.render_for_completion(convo),
          system_text(date="2025-06-28", tools=tools_text) + "<|start|>assistant")


WEATHER_DESCRIPTION = ("Use this tool to lookup the weather in a given location. Call it with the "
                       "parameter 'location', can be any textual description of a location.")


def test_browser_and_function_tool():
    weather = R.function_tool("lookup_weather", WEATHER_DESCRIPTION, {
        "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]})
    convo = Conversation.from_messages([
        msg(Role.SYSTEM, R.system_content(current_date="2025-06-28", builtin_tools=["browser"])),
        msg(Role.DEVELOPER, R.developer_content(function_tools=[weather]))])
    developer = ("<|start|>developer<|message|># Tools\n\n## functions\n\nnamespace functions {\n\n"
                 f"// {WEATHER_DESCRIPTION}\ntype lookup_weather = (_: {{\nlocation: string,\n"
                 "}) => any;\n\n} // namespace functions<|end|>")
    expected = system_text(date="2025-06-28", tools="# Tools\n\n" + BROWSER, functions=True)
    check(R.render_for_completion(convo), expected + developer + "<|start|>assistant")


UNITS = {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"}
KITCHENSINK = {
    "description": "params object", "type": "object",
    "properties": {
        "string": {"type": "string", "title": "STRING", "description": "A string",
                   "examples": ["hello", "world"]},
        "string_nullable": {"type": "string", "nullable": True, "description": "A nullable string",
                            "default": "the default"},
        "string_enum": {"type": "string", "enum": ["a", "b", "c"]},
        "oneof_string_or_number": {
            "oneOf": [{"type": "string", "default": "default_string_in_oneof"},
                      {"type": "number", "description": "numbers can happen too"}],
            "description": "a oneof", "default": 20},
    },
}


def test_functions_with_parameters():
    tools = [
        R.function_tool("get_location", "Gets the location of the user."),
        R.function_tool("get_current_weather", "Gets the current weather in the provided location.", {
            "type": "object", "required": ["location"], "properties": {
                "location": {"type": "string",
                             "description": "The city and state, e.g. San Francisco, CA"},
                "format": UNITS}}),
        R.function_tool("get_multiple_weathers",
                        "Gets the current weather in the provided list of locations.", {
            "type": "object", "required": ["locations"], "properties": {
                "locations": {"type": "array", "items": {"type": "string"}, "description":
                              'List of city and state, e.g. ["San Francisco, CA", "New York, NY"]'},
                "format": UNITS}}),
        R.function_tool("kitchensink", "A function with various complex schemas.", KITCHENSINK),
    ]
    convo = Conversation.from_messages([
        msg(Role.SYSTEM, R.system_content(reasoning_effort="high", current_date="2025-06-28")),
        msg(Role.DEVELOPER, R.developer_content(instructions="Always respond in riddles",
                                                function_tools=tools)),
        user("What is the weather like in SF?")])
    units = 'format?: "celsius" | "fahrenheit", // default: celsius\n'
    functions = (
        "// Gets the location of the user.\ntype get_location = () => any;\n\n"
        "// Gets the current weather in the provided location.\ntype get_current_weather = (_: {\n"
        "// The city and state, e.g. San Francisco, CA\nlocation: string,\n" + units + "}) => any;\n\n"
        "// Gets the current weather in the provided list of locations.\n"
        "type get_multiple_weathers = (_: {\n"
        '// List of city and state, e.g. ["San Francisco, CA", "New York, NY"]\n'
        "locations: string[],\n" + units + "}) => any;\n\n"
        "// A function with various complex schemas.\ntype kitchensink = (_: // params object\n{\n"
        '// STRING\n//\n// A string\n// Examples:\n// - "hello"\n// - "world"\nstring?: string,\n'
        '// A nullable string\nstring_nullable?: string | null, // default: "the default"\n'
        'string_enum?: "a" | "b" | "c",\n'
        "// a oneof\n// default: 20\noneof_string_or_number?:\n"
        ' | string // default: "default_string_in_oneof"\n | number // numbers can happen too\n,\n'
        "}) => any;\n\n"
    )
    expected = (system_text("high", date="2025-06-28", functions=True)
                + "<|start|>developer<|message|># Instructions\n\nAlways respond in riddles\n\n"
                + "# Tools\n\n## functions\n\nnamespace functions {\n\n" + functions
                + "} // namespace functions<|end|>"
                + "<|start|>user<|message|>What is the weather like in SF?<|end|><|start|>assistant")
    check(R.render_for_completion(convo), expected)


def _two_turns(analysis: str, answer: str) -> list[Message]:
    return [user("What is 2 + 2?"), msg(Role.ASSISTANT, analysis, "analysis"),
            msg(Role.ASSISTANT, answer, "final"), user("What about 9 / 2?")]


def test_dropping_cot_by_default():
    convo = Conversation.from_messages(_two_turns("User asks: “What is 2 + 2?” Simple.", "2 + 2 equals 4."))
    check(R.render_for_completion(convo),
          "<|start|>user<|message|>What is 2 + 2?<|end|>"
          "<|start|>assistant<|channel|>final<|message|>2 + 2 equals 4.<|end|>"
          "<|start|>user<|message|>What about 9 / 2?<|end|><|start|>assistant")


def test_preserving_cot_when_asked():
    convo = Conversation.from_messages(_two_turns("The answer: 4.", "2 + 2 equals 4."))
    check(R.render_for_completion(convo, auto_drop_analysis=False),
          "<|start|>user<|message|>What is 2 + 2?<|end|>"
          "<|start|>assistant<|channel|>analysis<|message|>The answer: 4.<|end|>"
          "<|start|>assistant<|channel|>final<|message|>2 + 2 equals 4.<|end|>"
          "<|start|>user<|message|>What about 9 / 2?<|end|><|start|>assistant")


def test_keep_analysis_between_finals():
    convo = Conversation.from_messages([
        user("What is 2 + 2?"), msg(Role.ASSISTANT, "thinking 2+2", "analysis"),
        msg(Role.ASSISTANT, "4", "final"), user("What is 3 + 5?"),
        msg(Role.ASSISTANT, "thinking 3+5", "analysis"), msg(Role.ASSISTANT, "8", "final")])
    check(R.render_conversation(convo),
          "<|start|>user<|message|>What is 2 + 2?<|end|>"
          "<|start|>assistant<|channel|>final<|message|>4<|end|>"
          "<|start|>user<|message|>What is 3 + 5?<|end|>"
          "<|start|>assistant<|channel|>analysis<|message|>thinking 3+5<|end|>"
          "<|start|>assistant<|channel|>final<|message|>8<|end|>")


def test_does_not_drop_if_ongoing_analysis():
    convo = Conversation.from_messages([
        user("What is the weather in SF?"),
        msg(Role.ASSISTANT, "We need to use lookup_weather tool.", "analysis"),
        msg(Role.ASSISTANT, '{"location": "San Francisco"}', "commentary",
            "functions.lookup_weather", "<|constrain|>json"),
        Message.from_author_and_content(Author.new(Role.TOOL, "functions.lookup_weather"),
                                        '{"temperature": 20, "description": "sunny"}')])
    tokens = R.render_for_completion(convo)
    check(tokens,
          "<|start|>user<|message|>What is the weather in SF?<|end|>"
          "<|start|>assistant<|channel|>analysis<|message|>We need to use lookup_weather tool.<|end|>"
          "<|start|>assistant to=functions.lookup_weather<|channel|>commentary <|constrain|>json"
          '<|message|>{"location": "San Francisco"}<|call|>'
          '<|start|>functions.lookup_weather<|message|>{"temperature": 20, "description": "sunny"}'
          "<|end|><|start|>assistant")
    assert 200003 in tokens  # <|constrain|> is the special token, not its text


def test_tool_call_response_on_commentary():
    result = Message.from_author_and_content(Author.new(Role.TOOL, "browser.search"),
                                             '{"result": "https://openai.com/"}')
    result = result.with_channel("commentary").with_recipient("assistant")
    check(R.render_message(result), '<|start|>browser.search to=assistant<|channel|>commentary'
                                    '<|message|>{"result": "https://openai.com/"}<|end|>')


# ---- training ----------------------------------------------------------------------------------
def test_training_final_answer_ends_with_return_and_masks_the_generated_tokens():
    analysis = 'User asks: "What is 2 + 2?" Simple arithmetic. Provide answer.'
    prompt = [user("What is 2 + 2?")]
    reply = [msg(Role.ASSISTANT, analysis, "analysis"), msg(Role.ASSISTANT, "2 + 2 = 4.", "final")]
    tokens, mask = R.render_for_training(Conversation.from_messages(prompt + reply))
    prompt_ids = R.render_for_completion(Conversation.from_messages(prompt))
    generated = ids(f"<|channel|>analysis<|message|>{analysis}<|end|>"
                    "<|start|>assistant<|channel|>final<|message|>2 + 2 = 4.<|return|>")
    assert tokens == prompt_ids + generated  # what the model generates after the prompt
    assert mask == [0] * len(prompt_ids) + [1] * len(generated)


def test_training_builtin_tool_call_on_analysis():
    analysis = 'User asks: "What is the weather in Tokyo?" We need to use lookup_weather tool.'
    prompt = [user("What is the weather in Tokyo?")]
    reply = [msg(Role.ASSISTANT, analysis, "analysis"),
             msg(Role.ASSISTANT, '{"location": "Tokyo"}', "analysis", "lookup_weather", "code")]
    tokens, mask = R.render_for_training(Conversation.from_messages(prompt + reply))
    prompt_ids = R.render_for_completion(Conversation.from_messages(prompt))
    generated = ids(f"<|channel|>analysis<|message|>{analysis}<|end|><|start|>assistant "
                    'to=lookup_weather<|channel|>analysis code<|message|>{"location": "Tokyo"}<|call|>')
    assert tokens == prompt_ids + generated
    assert mask == [0] * len(prompt_ids) + [1] * len(generated)


def test_training_tool_round_trip_masks_only_assistant_output():
    call = msg(Role.ASSISTANT, '{"x": 1}', "commentary", "functions.f", "<|constrain|>json")
    result = Message.from_author_and_content(Author.new(Role.TOOL, "functions.f"), "2")
    result = result.with_channel("commentary").with_recipient("assistant")
    convo = Conversation.from_messages([
        msg(Role.SYSTEM, R.system_content()), user("hi"),
        msg(Role.ASSISTANT, "use f", "analysis"), call, result,
        msg(Role.ASSISTANT, "done", "final")])
    tokens, mask = R.render_for_training(convo, auto_drop_analysis=False)
    text = [TOK.decode([t]) for t, m in zip(tokens, mask) if m]
    learned = "".join(text)
    assert learned == ("<|channel|>analysis<|message|>use f<|end|>"
                       "<|start|>assistant to=functions.f<|channel|>commentary <|constrain|>json"
                       '<|message|>{"x": 1}<|call|><|channel|>final<|message|>done<|return|>')
    assert tokens == ENC.render_conversation_for_training(
        convo, RenderConversationConfig(auto_drop_analysis=False))


@pytest.mark.parametrize("auto_drop", [True, False])
def test_training_without_an_assistant_reply_renders_plainly_as_harmony(auto_drop):
    """(It used to raise.) openai-harmony renders such a conversation as it is; nothing is learnt."""
    for messages in ([user("hi")], [msg(Role.SYSTEM, R.system_content()), user("hi")],
                     [user("hi"), msg(Role.ASSISTANT, "a", "analysis"),
                      msg(Role.ASSISTANT, "b", "final"), user("again")]):
        convo = Conversation.from_messages(messages)
        tokens, mask = R.render_for_training(convo, auto_drop_analysis=auto_drop)
        config = RenderConversationConfig(auto_drop_analysis=auto_drop)
        assert tokens == ENC.render_conversation_for_training(convo, config)
        assert mask == [0] * len(tokens)


# ---- response formats ----------------------------------------------------------------------------
SHOPPING = {"properties": {"items": {"type": "array", "description": "entries on the shopping list",
                                     "items": {"type": "string"}}}, "type": "object"}


def test_response_format_after_instructions():
    dev = R.developer_content(instructions="You are a helpful shopping assistant",
                              response_formats=[R.ResponseFormat(name="shopping_list",
                                                                 json_schema=SHOPPING)])
    convo = Conversation.from_messages([msg(Role.DEVELOPER, dev),
                                        user("I need to buy coffee, soda and eggs")])
    check(R.render_for_completion(convo),
          "<|start|>developer<|message|># Instructions\n\nYou are a helpful shopping assistant\n\n"
          "# Response Formats\n\n## shopping_list\n\n"
          '{"properties":{"items":{"type":"array","description":"entries on the shopping list",'
          '"items":{"type":"string"}}},"type":"object"}<|end|>'
          "<|start|>user<|message|>I need to buy coffee, soda and eggs<|end|><|start|>assistant")


def test_response_format_after_tools_keeps_the_functions_note():
    fmt = R.ResponseFormat(name="answer", description="The answer, as JSON.",
                           json_schema={"type": "object", "title": "é"})
    dev = R.developer_content(function_tools=[R.function_tool("ping", "Ping.")],
                              response_formats=[fmt])
    convo = Conversation.from_messages([msg(Role.SYSTEM, R.system_content()),
                                        msg(Role.DEVELOPER, dev)])
    check(R.render_for_completion(convo),
          system_text(functions=True)
          + "<|start|>developer<|message|># Tools\n\n## functions\n\nnamespace functions {\n\n"
          "// Ping.\ntype ping = () => any;\n\n} // namespace functions\n\n"
          "# Response Formats\n\n## answer\n\n// The answer, as JSON.\n"
          '{"type":"object","title":"é"}<|end|><|start|>assistant')


def test_response_format_alone():
    dev = R.developer_content(response_formats=[R.ResponseFormat(name="a", json_schema={}),
                                                R.ResponseFormat(name="b", json_schema={"type": "array"})])
    check(R.render_message(Message.from_role_and_content(Role.DEVELOPER, dev)),
          "<|start|>developer<|message|># Response Formats\n\n## a\n\n{}\n\n## b\n\n"
          '{"type":"array"}<|end|>')


# ---- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, match", [
    (lambda: R.system_content(reasoning_effort="extreme"), "reasoning effort"),
    (lambda: R.system_content(builtin_tools=["shell"]), "builtin tool"),
    (lambda: R.function_tool("", "x"), "non-empty string name"),
    (lambda: R.function_tool("f", "x", parameters=["not", "a", "dict"]), "parameters"),
    (lambda: R.render_message(Message.from_role_and_content(Role.TOOL, "no name")), "tool message"),
    (lambda: R.render_message(Message.from_role_and_content(Role.USER, SystemContent.new())),
     "user message"),
])
def test_errors_are_render_errors(call, match):
    with pytest.raises(R.RenderError, match=match):
        call()


def test_reasoning_effort_spellings():
    assert R.parse_reasoning_effort("HIGH") is ReasoningEffort.HIGH
    assert R.parse_reasoning_effort(ReasoningEffort.LOW) is ReasoningEffort.LOW


# ---- differential: hypothesis conversations against openai-harmony ------------------------------
WORDS = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)
LINE = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=20)
IDENT = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)
JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), LINE)


def _schema_leaf():
    common = {"description": LINE, "title": LINE, "nullable": st.booleans()}
    string = st.fixed_dictionaries({"type": st.just("string")}, optional={
        **common, "enum": st.lists(LINE, min_size=1, max_size=4), "default": LINE,
        "examples": st.lists(LINE, max_size=3)})
    other = st.fixed_dictionaries({"type": st.sampled_from(["number", "integer", "boolean"])},
                                  optional={**common, "default": JSON_SCALAR})
    return st.one_of(string, other)


def _schema_node(inner):
    obj = st.dictionaries(IDENT, inner, max_size=4).flatmap(lambda props: st.fixed_dictionaries(
        {"type": st.just("object"), "properties": st.just(props)},
        optional={"required": st.lists(st.sampled_from(sorted(props) or ["x"]), unique=True),
                  "description": LINE}))
    array = st.fixed_dictionaries({"type": st.just("array")}, optional={"items": inner,
                                                                        "description": LINE})
    one_of = st.fixed_dictionaries({"oneOf": st.lists(inner, min_size=1, max_size=3)},
                                   optional={"description": LINE, "default": JSON_SCALAR})
    multi = st.fixed_dictionaries({"type": st.lists(st.sampled_from(
        ["string", "number", "integer", "null"]), min_size=1, max_size=3, unique=True)})
    return st.one_of(obj, array, one_of, multi)


SCHEMAS = st.recursive(_schema_leaf(), _schema_node, max_leaves=10)
PARAMETERS = st.one_of(st.none(), st.dictionaries(IDENT, SCHEMAS, max_size=4).map(
    lambda props: {"type": "object", "properties": props}))
TOOLS = st.lists(st.builds(ToolDescription.new, IDENT, WORDS, PARAMETERS), max_size=3)


@st.composite
def system_messages(draw):
    content = SystemContent.new()
    if draw(st.booleans()):
        content = content.with_reasoning_effort(draw(st.sampled_from(list(ReasoningEffort))))
    if draw(st.booleans()):
        content = content.with_conversation_start_date(draw(LINE))
    if draw(st.booleans()):
        content = content.with_required_channels(draw(st.lists(IDENT, min_size=1, max_size=3)))
    if draw(st.booleans()):
        content = content.with_browser_tool()
    if draw(st.booleans()):
        content = content.with_python_tool()
    return Message.from_role_and_content(Role.SYSTEM, content)


@st.composite
def developer_messages(draw):
    content = DeveloperContent.new()
    if draw(st.booleans()):
        content = content.with_instructions(draw(WORDS))
    tools = draw(TOOLS)
    if tools:
        content = content.with_function_tools(tools)
    return Message.from_role_and_content(Role.DEVELOPER, content)


CHANNELS = st.sampled_from([None, "analysis", "commentary", "final"])
RECIPIENTS = st.sampled_from([None, "functions.get_weather", "browser.search", "python", "all"])
CONTENT_TYPES = st.sampled_from([None, "<|constrain|>json", "json", "code"])


@st.composite
def turn_messages(draw):
    kind = draw(st.sampled_from(["user", "assistant", "assistant", "tool", "developer"]))
    if kind == "user":
        return Message.from_role_and_content(Role.USER, draw(WORDS))
    if kind == "developer":
        return Message.from_role_and_content(Role.DEVELOPER, draw(WORDS))
    if kind == "tool":
        m = Message.from_author_and_content(Author.new(Role.TOOL, draw(st.sampled_from(
            ["functions.get_weather", "browser.search", "python"]))), draw(WORDS))
        return m.model_copy(update={"channel": draw(CHANNELS), "recipient": draw(
            st.sampled_from([None, "assistant"]))})
    return msg(Role.ASSISTANT, draw(WORDS), draw(CHANNELS), draw(RECIPIENTS), draw(CONTENT_TYPES))


@st.composite
def chat_turns(draw):
    """A realistic turn: user, then analysis / tool round trips / a final answer, each optional."""
    turn = [Message.from_role_and_content(Role.USER, draw(WORDS))]
    for _ in range(draw(st.integers(0, 2))):
        if draw(st.booleans()):
            turn.append(msg(Role.ASSISTANT, draw(WORDS), "analysis"))
        turn.append(msg(Role.ASSISTANT, "{}", "commentary", "functions.f", "<|constrain|>json"))
        turn.append(Message.from_author_and_content(Author.new(Role.TOOL, "functions.f"), "1")
                    .with_channel("commentary").with_recipient("assistant"))
    if draw(st.booleans()):
        turn.append(msg(Role.ASSISTANT, draw(WORDS), "analysis"))
    if draw(st.booleans()):
        turn.append(msg(Role.ASSISTANT, draw(WORDS), "final"))
    return turn


@st.composite
def conversations(draw):
    head = [draw(system_messages())] if draw(st.booleans()) else []
    head += [draw(developer_messages())] if draw(st.booleans()) else []
    parts = draw(st.lists(st.one_of(turn_messages().map(lambda m: [m]), chat_turns()), max_size=6))
    return Conversation.from_messages(head + [m for part in parts for m in part])


DIFF = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@DIFF
@given(conversations(), st.booleans())
def test_completion_and_plain_rendering_equal_harmony(convo, auto_drop):
    config = RenderConversationConfig(auto_drop_analysis=auto_drop)
    assert R.render_for_completion(convo, auto_drop_analysis=auto_drop) == \
        ENC.render_conversation_for_completion(convo, Role.ASSISTANT, config)
    assert R.render_conversation(convo, auto_drop_analysis=auto_drop) == \
        ENC.render_conversation(convo, config)


def _split(convo):
    roles = (Role.SYSTEM, Role.DEVELOPER, Role.USER)
    first = 1 + max((i for i, m in enumerate(convo.messages) if m.author.role in roles), default=-1)
    return convo.messages[:first], convo.messages[first:]


@DIFF
@given(conversations(), st.lists(turn_messages(), max_size=3),
       st.sampled_from(["analysis", "commentary", "final"]))
def test_training_equals_harmony(convo, more, last_channel):
    reply = [m for m in more if m.author.role in (Role.ASSISTANT, Role.TOOL)]
    convo = Conversation.from_messages(
        convo.messages + reply + [msg(Role.ASSISTANT, "last", last_channel)])
    tokens, mask = R.render_for_training(convo, auto_drop_analysis=False)
    no_drop = RenderConversationConfig(auto_drop_analysis=False)
    assert tokens == ENC.render_conversation_for_training(convo, no_drop)
    prompt, reply = _split(convo)
    # with dropping: the completion prompt, then the reply rendered in full
    expected = (ENC.render_conversation_for_completion(Conversation.from_messages(prompt),
                                                       Role.ASSISTANT)[:-2]
                + ENC.render_conversation_for_training(Conversation.from_messages(reply), no_drop))
    tokens, mask = R.render_for_training(convo)
    assert tokens == expected and len(mask) == len(tokens)
    assert not any(mask[:len(expected) - len(ENC.render_conversation(
        Conversation.from_messages(reply), no_drop))])
    assert mask[-1] == 1


@settings(max_examples=30, deadline=None)
@given(st.one_of(st.none(), WORDS), TOOLS, st.lists(st.tuples(IDENT, SCHEMAS, st.one_of(
    st.none(), LINE)), min_size=1, max_size=2))
def test_response_formats_extend_harmony_developer_text(instructions, tools, formats):
    plain = DeveloperContent.new()
    if instructions is not None:
        plain = plain.with_instructions(instructions)
    if tools:
        plain = plain.with_function_tools(tools)
    base = ENC.decode_utf8(ENC.render(Message.from_role_and_content(Role.DEVELOPER, plain)))
    blocks = []
    for name, schema, description in formats:
        comment = "".join(f"// {line}\n" for line in (description or "").splitlines())
        blocks.append(f"## {name}\n\n{comment}"
                      + json.dumps(schema, ensure_ascii=False, separators=(",", ":")))
    section = "# Response Formats\n\n" + "\n\n".join(blocks)
    body = base[len("<|start|>developer<|message|>"):-len("<|end|>")]
    text = (body + "\n\n" if body else "") + section
    dev = R.developer_content(instructions=instructions, function_tools=tools, response_formats=[
        R.ResponseFormat(name=n, json_schema=s, description=d) for n, s, d in formats])
    # the text may spell special tokens: it is encoded as plain text between the header tokens
    assert R.render_message(Message.from_role_and_content(Role.DEVELOPER, dev)) == \
        ids("<|start|>developer<|message|>") + TOK.encode(text) + ids("<|end|>")
