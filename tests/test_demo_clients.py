"""Issue 13's client checks: `gptoss serve` with no `--model` serves the shipped demo model, and
real clients (openai-agents over the Responses API, the `openai` SDK's `responses.stream()` and
`chat.completions.parse`, langchain's `bind_tools`) complete normally: the model ends its turns
by itself, calls the tool it is given and answers after the result. (The values in its answers
are not checked: the shipped model learned the forms, not copying; see its model card.) Greedy
decoding keeps them deterministic: sampled at temperature 1, 95.8 % of its replies are
well-formed (held-out)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import openai
import pytest
from pydantic import BaseModel

from gptoss.demo.shipped import DEMO_NAME, NOTICE, packaged_model
from gptoss.server.testing import free_port, healthy

pytestmark = pytest.mark.skipif(packaged_model() is None,
                                reason="this install has no trained demo package")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`gptoss serve` as a user starts it, without --model."""
    port = free_port()
    home = tmp_path_factory.mktemp("home")
    log = open(home / "serve.log", "wb")
    cmd = [sys.executable, "-m", "gptoss.cli", "serve", "--port", str(port),
           "--db", str(home / "db.sqlite3"), "--log-level", "warning"]
    # the expanded checkpoint is cached under XDG_CACHE_HOME: a fresh cache proves the expansion
    env = {**os.environ, "XDG_CACHE_HOME": str(home / "cache")}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not healthy(url):
            assert proc.poll() is None and time.monotonic() < deadline, \
                (home / "serve.log").read_text(errors="replace")
            time.sleep(0.5)
        yield url, home / "serve.log"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="x", max_retries=0, timeout=120)


def test_serves_the_demo_model_and_says_so_once(server, client):
    assert [m.id for m in client.models.list().data] == [DEMO_NAME]
    assert server[1].read_text(errors="replace").count(NOTICE) == 1


def test_chat_reasons_and_stops_by_itself(client):
    for effort in ("low", "medium", "high"):
        r = client.chat.completions.create(model=DEMO_NAME, reasoning_effort=effort, max_tokens=256,
                                           messages=[{"role": "user", "content": "What is 47 + 38?"}])
        choice = r.choices[0]
        assert choice.finish_reason == "stop"
        assert choice.message.content.strip() and choice.message.reasoning_content.strip()


def test_responses_stream_helper_completes(client):
    deltas = []
    with client.responses.stream(model=DEMO_NAME, input="Hello!", max_output_tokens=256,
                                 temperature=0) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert final.status == "completed"
    assert "".join(deltas) == final.output_text and final.output_text.strip()


class Person(BaseModel):
    name: str
    age: int
    city: str


def test_chat_completions_parse_with_a_pydantic_model(client):
    r = client.chat.completions.parse(
        model=DEMO_NAME, response_format=Person, max_tokens=256,
        messages=[{"role": "user", "content": "Extract the person: Alice is 31 years old and lives in Oslo."}])
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(r.choices[0].message.parsed, Person)


def test_openai_agents_runner_with_a_function_tool(server):
    agents = pytest.importorskip("agents")
    calls = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        calls.append(city)
        return json.dumps({"city": city, "temperature": 21, "unit": "celsius", "condition": "sunny"})

    model = agents.OpenAIResponsesModel(
        model=DEMO_NAME, openai_client=openai.AsyncOpenAI(base_url=server[0] + "/v1", api_key="x",
                                                          max_retries=0, timeout=120))
    agent = agents.Agent(name="demo", instructions="You are a helpful assistant.", model=model,
                         tools=[get_weather], model_settings=agents.ModelSettings(max_tokens=256, temperature=0))
    result = agents.Runner.run_sync(agent, "What's the weather in Paris?",
                                    run_config=agents.RunConfig(tracing_disabled=True))
    assert len(calls) == 1 and isinstance(calls[0], str)
    assert result.final_output.strip()
    sync = openai.OpenAI(base_url=server[0] + "/v1", api_key="x", max_retries=0)
    assert sync.responses.retrieve(result.last_response_id).status == "completed"


def test_langchain_bind_tools_round_trip(server):
    lc_openai = pytest.importorskip("langchain_openai")
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        return json.dumps({"city": city, "temperature": 12, "unit": "celsius", "condition": "rainy"})

    llm = lc_openai.ChatOpenAI(model=DEMO_NAME, base_url=server[0] + "/v1", api_key="x",
                               max_retries=0, max_tokens=256, timeout=120, temperature=0)
    bound = llm.bind_tools([get_weather])
    question = HumanMessage("What's the weather in London?")
    first = bound.invoke([question])
    assert first.response_metadata["finish_reason"] == "tool_calls"
    [call] = first.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"].get("city"), str)
    answer = bound.invoke([question, first, ToolMessage(get_weather.invoke(call["args"]),
                                                        tool_call_id=call["id"])])
    assert answer.response_metadata["finish_reason"] == "stop"
    assert answer.content.strip() and not answer.tool_calls
