"""harmony.output (the one harmony -> reasoning / text / tool-call mapping) against openai-harmony's
own parser, and the consumers that use it (server, LLM.chat, the console) agreeing on one reply.
Also structured outputs through SamplingParams offline (LLM.generate, LLM.chat, the CLI), checked
with jsonschema."""
from __future__ import annotations

import io
import json

import jsonschema
import openai
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from openai_harmony import Role, StreamableParser

from gptoss.config import ModelConfig
from gptoss.harmony.output import HarmonyOutput, PartDelta, PartDone, PartStarted
from gptoss.harmony.stop import StopMatcher
from gptoss.harmony.tokenizer import get_tokenizer, load_harmony_encoding
from test_parser import well_formed

TOK = get_tokenizer()
BYTE_IDS = [TOK.encoding.encode_single_token(bytes([b])) for b in range(256)]
# analysis, a commentary preamble, then a tool call: the case the copies used to disagree on
SCRIPT_TEXT = ("<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant"
               "<|channel|>commentary<|message|>Let me check.<|end|><|start|>assistant"
               "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
               '{"city":"Paris"}<|call|>')
SCRIPT = TOK.encode(SCRIPT_TEXT, allowed_special="all")
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 20}}, "required": ["city"],
        "additionalProperties": False}}}]
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "age": {"type": "integer", "minimum": 0}},
          "required": ["name", "age"], "additionalProperties": False}


def run(ids, **kw):
    output = HarmonyOutput(TOK, **kw)
    events = output.feed_many(ids) + output.close()
    return output, events


def expected_from_harmony(ids):
    """The documented mapping applied to openai-harmony's messages."""
    parser = StreamableParser(load_harmony_encoding(), role=Role.ASSISTANT)
    for t in ids:
        parser.process(t)
    parser.process_eos()
    reasoning, content, calls = [], [], []
    for m in parser.messages:
        text = m.content[0].text if m.content else ""
        if m.recipient:
            calls.append((m.recipient.removeprefix("functions."), text))
        elif m.channel == "analysis":
            reasoning.append(text)
        else:
            content.append(text)
    return "".join(reasoning), "".join(content), calls


def test_parts_of_a_reply_with_a_preamble_and_a_call():
    output, events = run(SCRIPT)
    started = [(e.kind, e.name) for e in events if isinstance(e, PartStarted)]
    assert started == [("reasoning", None), ("text", None), ("tool_call", "get_weather")]
    done = [e for e in events if isinstance(e, PartDone)]
    assert [(e.kind, e.text, e.complete) for e in done] == [
        ("reasoning", "Need the weather.", True), ("text", "Let me check.", True),
        ("tool_call", '{"city":"Paris"}', True)]
    assert done[2].recipient == "functions.get_weather" and done[2].content_type == "<|constrain|>json"
    args = "".join(e.text for e in events if isinstance(e, PartDelta) and e.kind == "tool_call")
    assert args == '{"city":"Paris"}'  # the arguments stream as deltas
    assert output.reasoning == "Need the weather." and output.content == "Let me check."
    assert [(c.name, c.arguments) for c in output.tool_calls] == [("get_weather", '{"city":"Paris"}')]
    assert output.called and output.reasoning_tokens == len(TOK.encode("Need the weather.")) + 1


def test_logprobs_go_to_text_tokens_only():
    ids = TOK.encode("<|channel|>analysis<|message|>hm<|end|><|start|>assistant<|channel|>final"
                     "<|message|>ab cd<|return|>", allowed_special="all")
    output = HarmonyOutput(TOK)
    events = [e for i, t in enumerate(ids) for e in output.feed(t, logprobs=("lp", i))]
    events += output.close()
    text_ids = TOK.encode("ab cd")
    got = [lp for e in events if isinstance(e, PartDelta) for lp in e.logprobs]
    first = len(ids) - 1 - len(text_ids)
    assert got == [("lp", i) for i in range(first, first + len(text_ids))]
    assert all(not e.logprobs for e in events if isinstance(e, PartDelta) and e.kind != "text")


def test_stop_strings_cut_the_answer_not_the_reasoning():
    ids = TOK.encode("<|channel|>analysis<|message|>say STOP now<|end|><|start|>assistant"
                     "<|channel|>final<|message|>one two STOP three<|return|>",
                     allowed_special="all")
    output, events = run(ids, stop=["STOP"])
    assert output.stopped
    assert output.reasoning == "say STOP now" and output.content == "one two "
    assert [e.complete for e in events if isinstance(e, PartDone)] == [True, False]
    assert output.feed(TOK.encode(" more")[0]) == []  # later tokens are ignored


def test_cut_off_call_is_incomplete():
    ids = TOK.encode("<|channel|>commentary to=functions.f <|constrain|>json<|message|>{\"a\":",
                     allowed_special="all")
    output, events = run(ids)
    done = [e for e in events if isinstance(e, PartDone)]
    assert [(e.kind, e.text, e.complete) for e in done] == [("tool_call", '{"a":', False)]


def test_stop_matcher_holds_back_a_prefix():
    m = StopMatcher(["END"])
    # the last len("END") - 1 characters wait until they cannot begin a match
    assert m.feed("abcE") == "ab" and m.feed("N") == "c" and m.feed("x") == "E"
    assert m.feed("yEND tail") == "Nxy" and m.hit and m.feed("more") == ""
    m = StopMatcher(["END"])
    assert m.feed("xE") == "" and m.flush() == "xE"
    assert StopMatcher().feed("anything") == "anything"


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_well_formed_streams_map_as_harmony_parses_them(data):
    ids = data.draw(well_formed(TOK, BYTE_IDS))
    output, events = run(ids)
    reasoning, content, calls = expected_from_harmony(ids)
    assert output.reasoning == reasoning and output.content == content
    assert [(c.name, c.arguments) for c in output.tool_calls] == calls
    # every part starts, streams and ends in order
    parts = {}
    for e in events:
        if isinstance(e, PartStarted):
            parts[e.part] = []
        elif isinstance(e, PartDelta):
            parts[e.part].append(e.text)
        else:
            assert "".join(parts.pop(e.part)) == e.text
    assert not parts


# ---- the consumers agree ---------------------------------------------------------------------
class ForceTokens:
    """Test-only logits processor: makes a random model emit `script`."""

    def __init__(self, script):
        self.script = list(script)

    def __call__(self, generated, logits):
        forced = torch.full_like(logits, float("-inf"))
        forced[self.script[min(len(generated), len(self.script) - 1)]] = 0.0
        return forced


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from gptoss.weights.writer import write_random_checkpoint
    return write_random_checkpoint(ModelConfig.preset("tiny"), tmp_path_factory.mktemp("tiny"),
                                   seed=0, layout="hf-mxfp4", overwrite=True, progress=False)


@pytest.fixture(scope="module")
def llm(checkpoint):
    from gptoss.engine import LLM
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield LLM(checkpoint, dtype=torch.float32, dequantize=True)
    torch.set_num_threads(threads)


def test_server_llm_chat_and_console_agree_on_a_preamble_and_a_call(llm):
    from gptoss.console.repl import ChatSession, Turn
    from gptoss.engine import SamplingParams
    from gptoss.server.app import create_app
    from gptoss.server.context import ServerOptions
    from gptoss.server.testing import LiveServer, StubEngine

    messages = [{"role": "user", "content": "Weather in Paris?"}]
    offline = llm.chat(messages, SamplingParams(max_tokens=80), tools=TOOLS,
                       logits_processor=ForceTokens(SCRIPT))
    with LiveServer(create_app(StubEngine(lambda _: SCRIPT_TEXT),
                               ServerOptions(model_names=("tiny",)))) as server:
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
        served = client.chat.completions.create(model="tiny", messages=messages, tools=TOOLS)
    session = ChatSession(None, None, out=io.StringIO())
    output, _ = run(SCRIPT)
    calls = session.record(Turn(output, "stop", len(SCRIPT), 1.0, 10, 0))
    console = session.history[-1]

    message = served.choices[0].message
    assert offline.content == message.content == console["content"] == "Let me check."
    assert offline.reasoning == message.reasoning_content == console["reasoning_content"]
    want = [("get_weather", '{"city":"Paris"}')]
    assert [(c.name, c.arguments) for c in offline.tool_calls] == want
    assert [(c.function.name, c.function.arguments) for c in message.tool_calls] == want
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == want


# ---- structured outputs offline ----------------------------------------------------------------
def test_generate_with_a_json_schema(llm):
    from gptoss.engine import SamplingParams, StructuredOutput
    from gptoss.harmony.chat import render_chat

    prompt = render_chat([{"role": "user", "content": "A person?"}])
    params = SamplingParams(max_tokens=80, seed=1, structured_output=StructuredOutput(
        json_schema=PERSON, max_reasoning_tokens=4))
    out = llm.generate([prompt], params)[0]
    output, _ = run(out.token_ids)
    jsonschema.validate(json.loads(output.content), PERSON)
    assert out.finish_reason == "stop"


def test_chat_enforces_response_format_and_tool_choice(llm):
    from gptoss.engine import SamplingParams

    messages = [{"role": "user", "content": "A person?"}]
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    reply = llm.chat(messages, SamplingParams(max_tokens=80, seed=2), response_format=fmt)
    jsonschema.validate(json.loads(reply.content), PERSON)
    reply = llm.chat(messages, SamplingParams(max_tokens=80, seed=3), tools=TOOLS,
                     tool_choice="required")
    assert [c.name for c in reply.tool_calls] == ["get_weather"]
    jsonschema.validate(json.loads(reply.tool_calls[0].arguments),
                        TOOLS[0]["function"]["parameters"])
    assert reply.finish_reason == "stop"


def test_cli_generate_json_schema(tmp_path, checkpoint):
    import os
    import subprocess
    import sys

    schema = tmp_path / "person.json"
    schema.write_text(json.dumps(PERSON))
    env = dict(os.environ, NO_COLOR="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "gptoss.cli", "generate", "--model",
                           str(checkpoint), "A person?", "--json-schema", str(schema),
                           "--max-tokens", "80", "--seed", "4", "--color", "never"],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr
    answer = proc.stdout.strip().splitlines()[-1]  # the reasoning (if any) comes first
    jsonschema.validate(json.loads(answer), PERSON)
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    proc = subprocess.run([sys.executable, "-m", "gptoss.cli", "generate", "--model",
                           str(checkpoint), "x", "--json-schema", str(bad)],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 2 and "JSON schema" in proc.stderr and "Traceback" not in proc.stderr
