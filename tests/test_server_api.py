"""The routes and behaviours clients expect beyond chat and responses, on the stub engine:
`/v1/completions` and `responses.input_items.list` through the official `openai` client,
background responses and cancel, /tokenize and /detokenize (against openai-harmony's encoding),
several served names, the model checked before the fields, reasoning efforts none / minimal,
error `param`s in wire terms, strict integers, invalid tool schemas, a recursive nullable schema,
the default output cap."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import jsonschema
import openai
import pytest

from gptoss.harmony.tokenizer import load_harmony_encoding
from gptoss.server.app import create_app
from gptoss.server.context import ServerOptions
from gptoss.server.testing import LiveServer, StubEngine, echo_reply

from test_server_load import gauges, wait_for

CONTINUATION = " and so the story ends. THE END, really.<|return|>"
SLOW_WORDS = "<|channel|>final<|message|>" + "word " * 2000 + "<|return|>"


def reply(prompt_text: str) -> str:
    """Harmony prompts get the echo reply; raw text a fixed continuation; `slow` a long answer."""
    if "slow" in prompt_text:
        return SLOW_WORDS
    return echo_reply(prompt_text) if "<|start|>user" in prompt_text else CONTINUATION


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    engine = StubEngine(reply, delay=0.001)
    options = ServerOptions(model_names=("gpt-oss-20b", "local"), listed=2,
                            db_path=tmp_path_factory.mktemp("api") / "r.sqlite3",
                            max_tokens_default=300)
    with LiveServer(create_app(engine, options)) as live:
        yield live, engine


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served[0].base_url + "/v1", api_key="x", max_retries=0)


def post(server, path: str, body: dict | bytes) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(server.base_url + path, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


TEXT = CONTINUATION.removesuffix("<|return|>")


# ---- /v1/completions ------------------------------------------------------------------------------
def test_completions_through_the_openai_client(client):
    r = client.completions.create(model="gpt-oss-20b", prompt="Once upon a time", max_tokens=50)
    assert r.object == "text_completion" and r.choices[0].text == TEXT
    assert r.choices[0].finish_reason == "stop" and r.usage.prompt_tokens == 4
    cut = client.completions.create(model="local", prompt="Once", max_tokens=50, stop=["THE END"])
    assert cut.choices[0].text == TEXT.split("THE END")[0] and cut.choices[0].finish_reason == "stop"
    short = client.completions.create(model="local", prompt="Once", max_tokens=3)
    assert short.choices[0].finish_reason == "length" and TEXT.startswith(short.choices[0].text)
    echo = client.completions.create(model="local", prompt="Once", max_tokens=50, echo=True)
    assert echo.choices[0].text == "Once" + TEXT


def test_completions_streaming_several_prompts_and_logprobs(client):
    chunks = list(client.completions.create(model="local", prompt=["A", "B"], n=2, max_tokens=50,
                                            stream=True, stream_options={"include_usage": True}))
    texts: dict[int, str] = {}
    finishes = {}
    for c in chunks[:-1]:
        (choice,) = c.choices
        texts[choice.index] = texts.get(choice.index, "") + choice.text
        finishes[choice.index] = choice.finish_reason or finishes.get(choice.index)
    assert texts == {i: TEXT for i in range(4)} and set(finishes.values()) == {"stop"}
    assert chunks[-1].usage.prompt_tokens == 2 and chunks[-1].usage.completion_tokens > 4 * 8
    r = client.completions.create(model="local", prompt=[9906, 1917], max_tokens=50, logprobs=2)
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == TEXT and len(lp.token_logprobs) == len(lp.tokens)
    assert all(len(top) <= 2 for top in lp.top_logprobs)
    assert lp.text_offset[0] == 0 and lp.text_offset[1] == len(lp.tokens[0])


@pytest.mark.parametrize("kwargs", [dict(echo=True, logprobs=1), dict(suffix="x"), dict(best_of=3),
                                    dict(prompt=[]), dict(logprobs=9), dict(max_tokens=100000)])
def test_completions_bad_requests(client, kwargs):
    with pytest.raises(openai.BadRequestError):
        client.completions.create(**{"model": "local", "prompt": "x", **kwargs})


# ---- input_items, background, cancel --------------------------------------------------------------
def test_input_items_through_the_openai_client(client):
    first = client.responses.create(model="local", input="first question", max_output_tokens=40)
    second = client.responses.create(model="local", previous_response_id=first.id, max_output_tokens=40,
                                     input=[{"role": "user", "content": "second question"}])
    items = client.responses.input_items.list(second.id)  # newest first
    kinds = [(i.type, getattr(i, "role", None)) for i in items.data]
    assert kinds == [("message", "user"), ("message", "assistant"), ("reasoning", None),
                     ("message", "user")]
    assert items.data[0].content[0].text == "second question"
    assert items.data[-1].content[0].text == "first question"
    assert all(i.id for i in items.data)
    page = client.responses.input_items.list(second.id, order="asc", limit=2)
    assert [i.id for i in page.data] == [i.id for i in reversed(items.data)][:2] and page.has_more
    rest = client.responses.input_items.list(second.id, order="asc", after=page.data[-1].id)
    assert len(rest.data) == 2 and not rest.has_more
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list("resp_missing")


def test_background_response_and_cancel(served, client):
    live, engine = served
    done = client.responses.create(model="local", input="quick", background=True)
    assert done.status == "queued" and done.background
    assert wait_for(lambda: client.responses.retrieve(done.id).status == "completed", timeout=20)
    assert client.responses.retrieve(done.id).output[-1].content[0].text == "Echo: quick"
    slow = client.responses.create(model="local", input="slow", background=True)
    assert wait_for(lambda: client.responses.retrieve(slow.id).status == "in_progress", timeout=10)
    assert gauges(live.base_url)["gptoss_requests_running"] == 1
    cancelled = client.responses.cancel(slow.id)
    assert cancelled.status == "cancelled" and client.responses.retrieve(slow.id).status == "cancelled"
    assert wait_for(lambda: gauges(live.base_url)["gptoss_requests_running"] == 0)
    assert client.responses.cancel(done.id).status == "completed"  # already ended: unchanged
    normal = client.responses.create(model="local", input="x", max_output_tokens=5)
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(normal.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel("resp_missing")


# ---- /tokenize and /detokenize --------------------------------------------------------------------
def test_tokenize_and_detokenize_agree_with_openai_harmony(served, client):
    live, _ = served
    text = "Hello <|start|>user<|message|>héllo 🙂"
    oracle = load_harmony_encoding().encode(text, allowed_special="all")
    status, out = post(live, "/tokenize", {"model": "local", "prompt": text, "return_token_strs": True})
    assert status == 200 and out["tokens"] == oracle and out["count"] == len(oracle)
    assert out["max_model_len"] == 4096 and len(out["token_strs"]) == len(oracle)
    status, back = post(live, "/detokenize", {"tokens": oracle})
    assert status == 200 and back["prompt"] == load_harmony_encoding().decode(oracle) == text
    messages = [{"role": "user", "content": "count me"}]
    status, chat = post(live, "/tokenize", {"messages": messages})
    usage = client.chat.completions.create(model="local", messages=messages).usage
    assert status == 200 and chat["count"] == usage.prompt_tokens
    assert post(live, "/detokenize", {"tokens": [10**9]})[0] == 400
    assert post(live, "/tokenize", {"model": "other", "prompt": "x"})[0] == 404
    assert post(live, "/tokenize", {"prompt": "x", "messages": messages})[0] == 400


# ---- names, efforts, errors -----------------------------------------------------------------------
def test_served_names_and_the_model_checked_first(served, client):
    assert [m.id for m in client.models.list().data] == ["gpt-oss-20b", "local"]
    for name in ("gpt-oss-20b", "local"):
        assert client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}]).model == name
    live, _ = served
    for path, body in (("/v1/responses", {"model": "gpt-5", "input": "x", "reasoning": {"effort": "max"}}),
                       ("/v1/chat/completions", {"model": "gpt-5", "messages": [], "n": 0}),
                       ("/v1/completions", {"model": "gpt-5", "prompt": 5})):
        status, payload = post(live, path, body)
        assert status == 404 and payload["error"]["code"] == "model_not_found", payload


def test_reasoning_effort_none_and_minimal_render_as_low_in_both_apis(served, client):
    _, engine = served
    tokenizer = engine.tokenizer
    for effort in ("none", "minimal", "low"):
        client.chat.completions.create(model="local", messages=[{"role": "user", "content": "hi"}],
                                       reasoning_effort=effort)
        assert "Reasoning: low" in tokenizer.decode(engine.submitted[-1][0])
        client.responses.create(model="local", input="hi", reasoning={"effort": effort})
        assert "Reasoning: low" in tokenizer.decode(engine.submitted[-1][0])
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="local", messages=[{"role": "user", "content": "hi"}],
                                       reasoning_effort="max")
    assert "'none'" in info.value.body["message"] and "'high'" in info.value.body["message"]


BAD_TOOL = {"type": "function", "function": {"name": "f", "parameters": {
    "type": "object", "properties": {"a": {"type": "nonsense"}}}}}
PARAM_CASES = [
    ("/v1/chat/completions", {"tools": [BAD_TOOL]}, "tools[0].function.parameters"),
    ("/v1/responses", {"tools": [{"type": "function", "name": "f", **BAD_TOOL["function"]}]},
     "tools[0].parameters"),
    ("/v1/chat/completions", {"tools": [BAD_TOOL | {"function": {"name": "f"}}],
                              "tool_choice": {"type": "function", "function": {"name": "g"}}},
     "tool_choice.function.name"),
    ("/v1/responses", {"tools": [{"type": "function", "name": "f"}],
                       "tool_choice": {"type": "function", "name": "g"}}, "tool_choice"),
    ("/v1/chat/completions", {"tool_choice": "required"}, "tool_choice"),
    ("/v1/chat/completions", {"seed": 2**70}, "seed"),
    ("/v1/chat/completions", {"max_tokens": True}, "max_tokens"),
    ("/v1/responses", {"max_output_tokens": 2.5}, "max_output_tokens"),
    ("/v1/completions", {"max_tokens": True}, "max_tokens"),
    ("/v1/chat/completions", {"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "minProperties": -1}}}},
     "response_format.json_schema.schema"),
]


@pytest.mark.parametrize("path,fields,param", PARAM_CASES)
def test_errors_name_the_wire_field(served, path, fields, param):
    base = {"/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}]},
            "/v1/responses": {"input": "hi"}, "/v1/completions": {"prompt": "hi"}}[path]
    status, payload = post(served[0], path, {"model": "local", **base, **fields})
    assert status == 400 and payload["error"]["param"] == param, payload


def test_nan_top_p_is_named_not_finite(served):
    body = b'{"model": "local", "messages": [{"role": "user", "content": "hi"}], "top_p": NaN}'
    status, payload = post(served[0], "/v1/chat/completions", body)
    assert status == 400 and payload["error"]["param"] == "top_p"
    assert "finite" in payload["error"]["message"] and "<=" not in payload["error"]["message"]


def test_a_recursive_nullable_schema_gets_valid_json(client):
    node = {"type": "object", "properties": {"value": {"type": "integer"},
                                             "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}},
            "required": ["value", "next"], "additionalProperties": False}
    schema = {"type": "object", "$defs": {"node": node}, "properties": {"head": {"$ref": "#/$defs/node"}},
              "required": ["head"], "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "list", "schema": schema, "strict": True}}
    for seed in range(3):
        r = client.chat.completions.create(model="local", messages=[{"role": "user", "content": "list"}],
                                           response_format=fmt, max_tokens=120, seed=seed)
        jsonschema.validate(json.loads(r.choices[0].message.content), schema)


def test_the_default_output_cap_applies_when_a_request_sets_none(served, client):
    _, engine = served
    client.chat.completions.create(model="local", messages=[{"role": "user", "content": "hi"}])
    assert engine.submitted[-1][1].max_tokens == 300
    client.chat.completions.create(model="local", messages=[{"role": "user", "content": "hi"}],
                                   max_tokens=1000)
    assert engine.submitted[-1][1].max_tokens == 1000


def test_served_model_names_from_the_command_line():
    import argparse

    from gptoss.server import commands
    from gptoss.server.context import model_names_for

    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    args = parser.parse_args(["serve", "--model", "/ckpt/gpt-oss-20b", "--served-model-name", "gpt-oss-20b",
                              "--served-model-name", "local"])
    assert model_names_for(args.model, args.served_model_name) == ("gpt-oss-20b", "local")
    assert model_names_for("/ckpt/tiny/") == ("tiny", "/ckpt/tiny/")
    assert args.max_tokens_default == 16384 and args.max_request_bytes == 8 * 2**20
    help_text = parser._subparsers._group_actions[0].choices["serve"].format_help()
    assert "default: 16384" in help_text and "--max-request-bytes" in help_text
