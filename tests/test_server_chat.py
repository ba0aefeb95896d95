"""/v1/chat/completions driven by the official `openai` client against a live server on a
scripted engine (gptoss.server.testing.StubEngine): sync and async, streaming and not."""
from __future__ import annotations

import asyncio
import json
import re

import jsonschema
import openai
import pytest

from gptoss.server.app import create_app
from gptoss.server.context import ServerOptions
from gptoss.server.testing import LiveServer, StubEngine, echo_reply

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                   "required": ["city"], "additionalProperties": False}}}
TIME_TOOL = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {
        "tz": {"type": "string", "enum": ["UTC", "CET"]}}, "required": ["tz"],
        "additionalProperties": False}}}
PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0},
    "pets": {"type": "array", "items": {"type": "string", "enum": ["cat", "dog"]}, "maxItems": 2}},
    "required": ["name", "age", "pets"], "additionalProperties": False}


def tool_loop_reply(prompt: str) -> str:
    """Calls get_weather after a user turn; answers with the tool's output after a tool turn."""
    result = re.search(r"<\|start\|>functions\.get_weather to=assistant<\|channel\|>commentary"
                       r"<\|message\|>([^<]*)<\|end\|><\|start\|>assistant$", prompt, flags=re.S)
    if result:
        return (f"<|channel|>analysis<|message|>Got it.<|end|><|start|>assistant<|channel|>final"
                f"<|message|>It is {result.group(1)}<|return|>")
    if "namespace functions" in prompt:
        return ("<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant"
                "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
                '{"city":"Paris"}<|call|>')
    return echo_reply(prompt)


@pytest.fixture(scope="module")
def served():
    engine = StubEngine(tool_loop_reply)
    with LiveServer(create_app(engine, ServerOptions(model_names=("tiny", "path/tiny")))) as server:
        yield server, engine


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served[0].base_url + "/v1", api_key="unused", max_retries=0)


def test_plain_completion_keeps_reasoning_out_of_content(client):
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi there"}])
    message = r.choices[0].message
    assert message.content == "Echo: hi there"
    assert message.reasoning_content == message.reasoning == "The user said: hi there"
    assert r.choices[0].finish_reason == "stop" and r.object == "chat.completion"
    u = r.usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens and u.prompt_tokens > 20
    assert u.completion_tokens_details.reasoning_tokens > 0
    assert u.completion_tokens > u.completion_tokens_details.reasoning_tokens


def test_streaming_matches_non_streaming(client):
    messages = [{"role": "user", "content": "stream me"}]
    whole = client.chat.completions.create(model="tiny", messages=messages)
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, stream=True,
                                                 stream_options={"include_usage": True}))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or ""
                        for c in chunks if c.choices)
    assert content == whole.choices[0].message.content
    assert reasoning == whole.choices[0].message.reasoning_content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_logprobs(client):
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}],
                                       logprobs=True, top_logprobs=3)
    lps = r.choices[0].logprobs.content
    assert "".join(lp.token for lp in lps) == r.choices[0].message.content
    assert all(len(lp.top_logprobs) == 3 and bytes(lp.bytes).decode() == lp.token for lp in lps)
    streamed = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}],
                                              logprobs=True, top_logprobs=1, stream=True)
    tokens = [lp.token for c in streamed if c.choices and c.choices[0].logprobs
              for lp in c.choices[0].logprobs.content]
    assert "".join(tokens) == r.choices[0].message.content


def test_n_choices_and_stop_strings(client):
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "a b c"}], n=3)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.message.content == "Echo: a b c" for c in r.choices)
    cut = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "a STOP b"}],
                                         stop=["STOP"])
    assert cut.choices[0].message.content == "Echo: a " and cut.choices[0].finish_reason == "stop"
    # stop strings apply to the answer, not to the chain of thought (which also holds "STOP")
    assert "STOP" in cut.choices[0].message.reasoning_content


def test_tool_call_auto_then_round_trip(client, served):
    messages = [{"role": "user", "content": "weather in Paris?"}]
    r = client.chat.completions.create(model="tiny", messages=messages, tools=[WEATHER_TOOL])
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id.startswith("call_")
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}]
    final = client.chat.completions.create(model="tiny", messages=messages, tools=[WEATHER_TOOL])
    assert final.choices[0].message.content == 'It is {"temp": 21}'
    prompt = served[1].tokenizer.decode(served[1].submitted[-1][0])
    assert ('<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>{"temp": 21}'
            '<|end|>') in prompt


def test_tool_call_streams_argument_deltas(client):
    chunks = list(client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER_TOOL], stream=True))
    deltas = [tc for c in chunks if c.choices and c.choices[0].delta.tool_calls
              for tc in c.choices[0].delta.tool_calls]
    assert deltas[0].id.startswith("call_") and deltas[0].function.name == "get_weather"
    assert all(d.index == 0 for d in deltas) and len(deltas) > 2
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"city": "Paris"}
    assert not any(c.choices[0].delta.content for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_time"}}])
def test_required_and_named_tool_choice_are_enforced(client, choice):
    # with a constraint the stub samples random logits through it: a random-weight model
    for seed in range(4):
        r = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hello"}], tools=[WEATHER_TOOL, TIME_TOOL],
            tool_choice=choice, max_tokens=80, seed=seed)
        call = r.choices[0].message.tool_calls[0]
        schema = {"get_weather": WEATHER_TOOL, "get_time": TIME_TOOL}[call.function.name]
        jsonschema.validate(json.loads(call.function.arguments), schema["function"]["parameters"])
        assert r.choices[0].finish_reason == "tool_calls" and r.usage.completion_tokens <= 80
        if isinstance(choice, dict):
            assert call.function.name == "get_time"


def test_json_schema_strict_validates_every_try(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    for seed in range(4):
        r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "who?"}],
                                           response_format=fmt, max_tokens=96, seed=seed)
        jsonschema.validate(json.loads(r.choices[0].message.content), PERSON)
        assert r.choices[0].finish_reason == "stop"
    chunks = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "who?"}],
                                            response_format=fmt, max_tokens=96, seed=9, stream=True)
    jsonschema.validate(json.loads("".join(c.choices[0].delta.content or "" for c in chunks if c.choices)), PERSON)
    obj = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "json"}],
                                         response_format={"type": "json_object"}, max_tokens=64, seed=1)
    assert isinstance(json.loads(obj.choices[0].message.content), dict)


def test_async_client_streaming_and_not(served):
    async def main():
        client = openai.AsyncOpenAI(base_url=served[0].base_url + "/v1", api_key="x", max_retries=0)
        whole = await client.chat.completions.create(model="path/tiny", messages=[{"role": "user", "content": "async"}])
        stream = await client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "async"}],
                                                      stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        models = await client.models.list()
        await client.close()
        return whole, text, models

    whole, text, models = asyncio.run(main())
    assert whole.choices[0].message.content == text == "Echo: async"
    assert [m.id for m in models.data] == ["tiny"]
