"""The server on the real engine with a tiny random-weight checkpoint, driven by the official
`openai` client: constrained outputs hold even for a random model, tool round trips, 32
concurrent streams, disconnects free the KV cache, and `gptoss serve` as a program."""
from __future__ import annotations

import asyncio
import time
import json
import os
import subprocess
import sys

import jsonschema
import openai
import pytest

from gptoss.config import ModelConfig
from gptoss.server.app import create_app
from gptoss.server.context import ServerOptions
from gptoss.engine import AsyncEngine
from gptoss.server.testing import LiveServer, free_port, healthy
from gptoss.weights.writer import write_random_checkpoint

from test_server_chat import PERSON, TIME_TOOL, WEATHER_TOOL
from test_server_load import gauges, wait_for

USER = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_random_checkpoint(ModelConfig.preset("tiny"), tmp_path_factory.mktemp("tiny") / "tiny",
                                   seed=0, progress=False)


@pytest.fixture(scope="module")
def served(checkpoint, tmp_path_factory):
    engine = AsyncEngine.from_model(checkpoint, kv_cache_tokens=8192, max_num_seqs=16)
    db = tmp_path_factory.mktemp("db") / "r.sqlite3"
    app = create_app(engine, ServerOptions(model_names=("tiny",), db_path=db))
    with LiveServer(app) as live:
        yield live
    engine.close()


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.base_url + "/v1", api_key="x", max_retries=0, timeout=120)


def test_chat_stream_and_usage(client):
    # the prompt once first: every request compared below then finds it in the prefix cache (a
    # cold prompt's tail goes through other kernels than a cached one's, and on a random model
    # the last-bit difference can change a sampled token; test_gptoss_serve_command checks
    # --no-prefix-cache)
    client.chat.completions.create(model="tiny", messages=USER, max_tokens=1)
    whole = client.chat.completions.create(model="tiny", messages=USER, max_tokens=12, seed=3,
                                           logprobs=True, top_logprobs=2)
    assert whole.choices[0].finish_reason in ("stop", "length")
    assert 0 < whole.usage.completion_tokens <= 12 and whole.usage.prompt_tokens > 20
    chunks = list(client.chat.completions.create(model="tiny", messages=USER, max_tokens=12, seed=3,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # same seed
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == (whole.choices[0].message.content or "")


def test_strict_schema_and_required_tools_hold_for_a_random_model(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    for seed in range(3):
        r = client.chat.completions.create(model="tiny", messages=USER, response_format=fmt,
                                           max_tokens=64, seed=seed)
        jsonschema.validate(json.loads(r.choices[0].message.content), PERSON)
        assert r.usage.completion_tokens <= 64
    for choice in ("required", {"type": "function", "function": {"name": "get_time"}}):
        r = client.chat.completions.create(model="tiny", messages=USER, tools=[WEATHER_TOOL, TIME_TOOL],
                                           tool_choice=choice, max_tokens=64, seed=1)
        call = r.choices[0].message.tool_calls[0]
        tool = {"get_weather": WEATHER_TOOL, "get_time": TIME_TOOL}[call.function.name]
        jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])
        assert r.choices[0].finish_reason == "tool_calls"


def test_responses_tool_round_trip_through_previous_response_id(client):
    tool = {"type": "function", **WEATHER_TOOL["function"]}
    first = client.responses.create(model="tiny", input="weather?", tools=[tool], tool_choice="required",
                                    max_output_tokens=64)
    call = next(i for i in first.output if i.type == "function_call")
    follow = client.responses.create(model="tiny", previous_response_id=first.id, tools=[tool],
                                     max_output_tokens=8, input=[{"type": "function_call_output",
                                                                  "call_id": call.call_id, "output": "21C"}])
    assert follow.status in ("completed", "incomplete") and follow.usage.input_tokens > first.usage.input_tokens
    assert client.responses.retrieve(follow.id).id == follow.id


def test_32_concurrent_streams(served):
    async def one(client, i):
        stream = await client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": f"client {i}"}], max_tokens=6,
            stream=True, stream_options={"include_usage": True})
        chunks = [c async for c in stream]
        return chunks[-1].usage.completion_tokens, [c.choices[0].finish_reason for c in chunks if c.choices]

    async def main():
        client = openai.AsyncOpenAI(base_url=served.base_url + "/v1", api_key="x", max_retries=0)
        try:
            return await asyncio.wait_for(asyncio.gather(*(one(client, i) for i in range(32))), 300)
        finally:
            await client.close()

    results = asyncio.run(main())
    assert len(results) == 32
    for tokens, finishes in results:
        assert 0 < tokens <= 6 and finishes[-1] in ("stop", "length")
    assert wait_for(lambda: gauges(served.base_url)["gptoss_kv_cache_blocks_used"] == 0)


def test_disconnect_frees_kv_cache(served, client):
    cancelled = gauges(served.base_url)["gptoss_requests_cancelled_total"]
    stream = client.chat.completions.create(model="tiny", messages=USER, max_tokens=2000, stream=True)
    for _, _ in zip(range(4), stream):
        pass
    assert gauges(served.base_url)["gptoss_kv_cache_blocks_used"] > 0
    stream.close()
    assert wait_for(lambda: gauges(served.base_url)["gptoss_kv_cache_blocks_used"] == 0, timeout=20)
    g = gauges(served.base_url)
    assert g["gptoss_requests_running"] == 0 and g["gptoss_requests_cancelled_total"] == cancelled + 1


def test_gptoss_serve_command(checkpoint, tmp_path):
    port = free_port()
    cmd = [sys.executable, "-m", "gptoss.cli", "serve", "--model", str(checkpoint), "--port", str(port),
           "--api-key", "k", "--db", str(tmp_path / "db.sqlite3"), "--kv-cache-tokens", "4096",
           "--log-level", "warning", "--no-prefix-cache"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_for(lambda: healthy(url), timeout=120), proc.stdout.read1().decode()
        client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["tiny"]
        r = client.responses.create(model="tiny", input="hi", max_output_tokens=4)
        assert r.usage.output_tokens <= 4 and (tmp_path / "db.sqlite3").exists()
        # --no-prefix-cache: a prompt sent again is recomputed, and its seeded reply is the same
        # bit for bit (with the cache, the tail of a cached prompt takes other kernels)
        twice = [client.chat.completions.create(model="tiny", messages=USER, max_tokens=12, seed=3)
                 for _ in range(2)]
        assert twice[1].usage.prompt_tokens_details.cached_tokens == 0
        assert twice[0].choices[0].message.content == twice[1].choices[0].message.content
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_completions_and_input_items_on_the_real_engine(client):
    r = client.completions.create(model="tiny", prompt="Hello there", max_tokens=6, seed=1, logprobs=1)
    assert r.usage.completion_tokens <= 6 and r.choices[0].finish_reason in ("stop", "length")
    assert len(r.choices[0].logprobs.tokens) == r.usage.completion_tokens - (r.choices[0].finish_reason == "stop")
    streamed = list(client.completions.create(model="tiny", prompt="Hello there", max_tokens=6, seed=1,
                                              stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == r.choices[0].text
    resp = client.responses.create(model="tiny", input="hi", max_output_tokens=4)
    items = client.responses.input_items.list(resp.id)
    assert [(i.type, i.role) for i in items.data] == [("message", "user")]


@pytest.mark.parametrize("read_bytes", [0, 1, 400, 4000])
def test_client_leaving_at_any_stage_frees_the_real_engine(served, read_bytes):
    import socket
    body = json.dumps({"model": "tiny", "stream": True, "max_output_tokens": 2000, "input": "go"}).encode()
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        read = 0
        while read < read_bytes:
            chunk = sock.recv(4096)
            if not chunk:
                break
            read += len(chunk)
    def idle():
        g = gauges(served.base_url)
        return g["gptoss_requests_running"] == 0 and g["gptoss_kv_cache_blocks_used"] == 0
    time.sleep(0.3)  # (a request the server had not read yet starts now)
    assert wait_for(idle, timeout=30), gauges(served.base_url)
