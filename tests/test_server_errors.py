"""Bad input → the right 4xx with an OpenAI error object, and the server keeps answering;
the API key. Error objects are read back by the official `openai` client where it can send the
request, by plain urllib where it cannot (malformed JSON, wrong methods)."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import openai
import pytest

from gptoss.server.app import create_app
from gptoss.server.context import ServerOptions
from gptoss.server.testing import LiveServer, StubEngine

USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server():
    engine = StubEngine(context_length=512)
    with LiveServer(create_app(engine, ServerOptions(model_names=("tiny",)))) as live:
        yield live


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)


def raw(server, method: str, path: str, body: bytes | None = None,
        content_type: str = "application/json", headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(server.base_url + path, data=body, method=method,
                                     headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


RAW_CASES = [
    ("POST", "/v1/chat/completions", b'{"model": "tiny", "messages": [', 400),
    ("POST", "/v1/chat/completions", b"[1, 2, 3]", 400),
    ("POST", "/v1/chat/completions", b'{"model": "tiny"}', 400),
    ("POST", "/v1/chat/completions", b"\xff\xfe garbage", 400),
    ("POST", "/v1/responses", b'{"model": "tiny", "input": 5}', 400),
    ("POST", "/v1/responses", b'{"input": "x"}', 400),
    ("GET", "/v1/chat/completions", None, 405),
    ("GET", "/v1/nothing-here", None, 404),
    ("GET", "/v1/responses/resp_missing", None, 404),
    ("DELETE", "/v1/responses/resp_missing", None, 404),
    ("GET", "/v1/models/other-model", None, 404),
]


@pytest.mark.parametrize("method,path,body,status", RAW_CASES)
def test_raw_bad_requests(server, method, path, body, status):
    got, payload = raw(server, method, path, body)
    assert got == status
    assert set(payload["error"]) == {"message", "type", "param", "code"} and payload["error"]["message"]


CLIENT_CASES = [
    (openai.NotFoundError, dict(model="no-such-model")),
    (openai.BadRequestError, dict(temperature=5)),
    (openai.BadRequestError, dict(n=0)),
    (openai.BadRequestError, dict(messages=[{"role": "wizard", "content": "x"}])),
    (openai.BadRequestError, dict(messages=[{"role": "tool", "tool_call_id": "nope", "content": "x"}])),
    (openai.BadRequestError, dict(messages=[{"role": "user", "content": "word " * 2000}])),
    (openai.BadRequestError, dict(max_tokens=100000)),
    (openai.BadRequestError, dict(response_format={"type": "json_schema"})),
    (openai.BadRequestError, dict(tools=[{"type": "function", "function": {"name": "f"}}],
                                  tool_choice={"type": "function", "function": {"name": "g"}})),
    (openai.BadRequestError, dict(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:,"}}]}])),
    (openai.BadRequestError, dict(modalities=["audio"], audio={"voice": "x", "format": "wav"})),
    (openai.BadRequestError, dict(logit_bias={"15": 5})),
    (openai.BadRequestError, dict(top_logprobs=3)),
    (openai.BadRequestError, dict(stop=["a", "b", "c", "d", "e"])),
    (openai.BadRequestError, dict(response_format={"type": "json_object"}, max_tokens=2)),
    (openai.BadRequestError, dict(response_format={"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "required": 7}}}, max_tokens=50)),
]


@pytest.mark.parametrize("error,kwargs", CLIENT_CASES)
def test_chat_bad_requests(client, error, kwargs):
    with pytest.raises(error) as info:
        client.chat.completions.create(**{"model": "tiny", "messages": USER, **kwargs})
    assert info.value.body["message"]


RESPONSES_CASES = [
    (openai.BadRequestError, dict(tools=[{"type": "web_search"}])),
    (openai.BadRequestError, dict(tools=[{"type": "code_interpreter", "container": {"type": "auto"}}])),
    (openai.NotFoundError, dict(previous_response_id="resp_nope")),
    (openai.BadRequestError, dict(input=[{"type": "item_reference", "id": "msg_1"}])),
    (openai.BadRequestError, dict(text={"format": {"type": "json_schema", "name": "x"}})),
    (openai.BadRequestError, dict(input=[{"role": "user", "content": [
        {"type": "input_image", "image_url": "data:,"}]}])),
    (openai.BadRequestError, dict(max_output_tokens=100000)),
    (openai.BadRequestError, dict(background=True, store=False)),  # background needs the store
    (openai.BadRequestError, dict(background=True, stream=True)),
]


@pytest.mark.parametrize("error,kwargs", RESPONSES_CASES)
def test_responses_bad_requests(client, error, kwargs):
    with pytest.raises(error):
        client.responses.create(**{"model": "tiny", "input": "hi", **kwargs})


def test_server_still_answers_and_counts_errors(server, client):
    for method, path, body, _ in RAW_CASES:
        raw(server, method, path, body)
    r = client.chat.completions.create(model="tiny", messages=USER)
    assert r.choices[0].message.content == "Echo: hi"
    assert raw(server, "GET", "/health")[1] == {"status": "ok"}
    with urllib.request.urlopen(server.base_url + "/metrics") as response:
        text = response.read().decode()
    assert 'gptoss_requests_total{endpoint="/v1/chat/completions",status="400"}' in text


def test_api_key():
    with LiveServer(create_app(StubEngine(), ServerOptions(model_names=("tiny",), api_key="sekret"))) as live:
        bad = openai.OpenAI(base_url=live.base_url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            bad.chat.completions.create(model="tiny", messages=USER)
        assert info.value.status_code == 401 and info.value.body["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        status, _ = raw(live, "POST", "/v1/responses", b'{"model":"tiny","input":"x"}')
        assert status == 401  # no Authorization header at all
        good = openai.OpenAI(base_url=live.base_url + "/v1", api_key="sekret", max_retries=0)
        assert good.chat.completions.create(model="tiny", messages=USER).choices[0].message.content == "Echo: hi"
        assert raw(live, "GET", "/health")[0] == 200  # health and metrics stay open
