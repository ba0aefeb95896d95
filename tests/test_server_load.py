"""Many concurrent streaming clients, and disconnects that free the KV cache (seen in /metrics)."""
from __future__ import annotations

import asyncio
import time
import urllib.request

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gptoss.server.app import create_app
from gptoss.server.context import ServerOptions
from gptoss.server.testing import LiveServer, StubEngine

CLIENTS = 32


def long_reply(prompt: str) -> str:
    return "<|channel|>final<|message|>" + "word " * 3000 + "<|return|>"  # 60 s at 20 ms a token


def gauges(base_url: str) -> dict[str, float]:
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def server():
    engine = StubEngine(delay=0.002)
    with LiveServer(create_app(engine, ServerOptions(model_names=("tiny",)))) as live:
        yield live, engine


def test_32_concurrent_streaming_clients_all_complete(server):
    live, _ = server

    async def one(client, i: int) -> tuple[str, str | None]:
        stream = await client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": f"client {i}"}], stream=True)
        text, finish = [], None
        async for chunk in stream:
            if chunk.choices:
                text.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
        return "".join(text), finish

    async def main():
        client = openai.AsyncOpenAI(base_url=live.base_url + "/v1", api_key="x", max_retries=0)
        try:
            return await asyncio.wait_for(asyncio.gather(*(one(client, i) for i in range(CLIENTS))), 120)
        finally:
            await client.close()

    results = asyncio.run(main())
    assert results == [(f"Echo: client {i}", "stop") for i in range(CLIENTS)]
    g = gauges(live.base_url)
    assert g['gptoss_requests_total'] >= CLIENTS and g["gptoss_requests_running"] == 0
    assert g["gptoss_time_to_first_token_seconds_count"] >= CLIENTS


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_disconnect_mid_stream_frees_kv_cache(server, api):
    live, engine = server
    engine.reply, engine.delay = long_reply, 0.02
    client = openai.OpenAI(base_url=live.base_url + "/v1", api_key="x", max_retries=0)
    if api == "chat":
        stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "go"}],
                                                stream=True)
    else:
        stream = client.responses.create(model="tiny", input="go", stream=True)
    for _, _ in zip(range(5), stream):
        pass
    assert gauges(live.base_url)["gptoss_kv_cache_blocks_used"] > 0
    stream.close()  # the client goes away mid-generation
    assert wait_for(lambda: gauges(live.base_url)["gptoss_kv_cache_blocks_used"] == 0)
    g = gauges(live.base_url)
    assert g["gptoss_requests_running"] == 0 and g["gptoss_requests_cancelled_total"] >= 1


def test_disconnect_during_non_streaming_request_cancels_it(server):
    live, engine = server
    engine.reply, engine.delay = long_reply, 0.02
    client = openai.OpenAI(base_url=live.base_url + "/v1", api_key="x", max_retries=0, timeout=0.5)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "go"}])
    assert wait_for(lambda: gauges(live.base_url)["gptoss_requests_running"] == 0)
    assert gauges(live.base_url)["gptoss_kv_cache_blocks_used"] == 0
