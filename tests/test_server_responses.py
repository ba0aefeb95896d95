"""/v1/responses driven by the official `openai` client: items, the streamed event sequence,
function calling round trips (through function_call_output and previous_response_id), the
SQLite store behind GET / DELETE, structured output."""
from __future__ import annotations

import asyncio
import json

import jsonschema
import openai
import pytest

from gptoss.server.app import create_app
from gptoss.server.context import ServerOptions
from gptoss.server.testing import LiveServer, StubEngine

from test_server_chat import PERSON, tool_loop_reply

TOOL = {"type": "function", "name": "get_weather", "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                       "required": ["city"], "additionalProperties": False}}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    engine = StubEngine(tool_loop_reply)
    db = tmp_path_factory.mktemp("store") / "responses.sqlite3"
    with LiveServer(create_app(engine, ServerOptions(model_names=("tiny",), db_path=db))) as server:
        yield server, engine


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served[0].base_url + "/v1", api_key="unused", max_retries=0)


def test_text_response_with_reasoning_item_and_usage(client):
    r = client.responses.create(model="tiny", input="hello", instructions="Be brief.")
    assert [item.type for item in r.output] == ["reasoning", "message"]
    assert r.output[0].content[0].text == "The user said: hello"
    assert r.output_text == "Echo: hello" and r.status == "completed"
    assert r.usage.output_tokens_details.reasoning_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens


def test_stream_event_sequence(client):
    events = list(client.responses.create(model="tiny", input="hi", stream=True))
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    for needed in ("response.output_item.added", "response.content_part.added", "response.output_text.delta",
                   "response.reasoning_text.delta", "response.output_text.done", "response.output_item.done"):
        assert needed in types
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert text == final.output_text == "Echo: hi"
    assert len([t for t in types if t == "response.output_item.added"]) == len(final.output) == 2


def test_function_call_round_trip_with_function_call_output(client, served):
    first = client.responses.create(model="tiny", input="weather?", tools=[TOOL], store=False)
    call = next(item for item in first.output if item.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    follow = client.responses.create(model="tiny", tools=[TOOL], store=False, input=[
        {"role": "user", "content": "weather?"}, *[i.model_dump(exclude_none=True) for i in first.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 5}'}])
    assert follow.output_text == 'It is {"temp": 5}'
    with pytest.raises(openai.NotFoundError):  # store=False: nothing kept
        client.responses.retrieve(first.id)


def test_function_call_round_trip_with_previous_response_id(client):
    first = client.responses.create(model="tiny", input="weather?", tools=[TOOL])
    call = next(item for item in first.output if item.type == "function_call")
    follow = client.responses.create(model="tiny", tools=[TOOL], previous_response_id=first.id, input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 7}'}])
    assert follow.output_text == 'It is {"temp": 7}' and follow.previous_response_id == first.id
    third = client.responses.create(model="tiny", previous_response_id=follow.id, input="thanks")
    assert third.output_text == "Echo: thanks"


def test_streamed_function_call_events(client):
    events = list(client.responses.create(model="tiny", input="weather?", tools=[TOOL], stream=True))
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert json.loads(deltas) == {"city": "Paris"} and done[0].arguments == deltas


def test_store_get_and_delete(client):
    r = client.responses.create(model="tiny", input="keep me")
    again = client.responses.retrieve(r.id)
    assert again.output_text == "Echo: keep me" and again.id == r.id
    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="tiny", input="x", previous_response_id=r.id)


def test_required_tool_and_json_schema(client):
    for seed in range(3):
        r = client.responses.create(model="tiny", input="x", tools=[TOOL], tool_choice="required",
                                    max_output_tokens=80, temperature=0.5, store=False)
        call = [i for i in r.output if i.type == "function_call"][0]
        jsonschema.validate(json.loads(call.arguments), TOOL["parameters"])
    fmt = {"format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}}
    for _ in range(3):
        r = client.responses.create(model="tiny", input="who?", text=fmt, max_output_tokens=96, store=False)
        jsonschema.validate(json.loads(r.output_text), PERSON)


def test_length_limit_is_incomplete(client):
    r = client.responses.create(model="tiny", input="a long one", max_output_tokens=3)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 3


def test_async_client(served):
    async def main():
        client = openai.AsyncOpenAI(base_url=served[0].base_url + "/v1", api_key="x", max_retries=0)
        r = await client.responses.create(model="tiny", input="async")
        stream = await client.responses.create(model="tiny", input="async", stream=True)
        types = [e.type async for e in stream]
        await client.close()
        return r, types

    r, types = asyncio.run(main())
    assert r.output_text == "Echo: async" and types[-1] == "response.completed"
