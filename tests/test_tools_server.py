"""Built-in tools in /v1/responses, driven by the official `openai` client: the tool loop runs
inside the turn (a python call, then the answer that reads its output), the items and stream
events carry OpenAI's names and parse with the client's own types, the stored response has the
items, /metrics counts the calls, and chat completions refuses built-in tool types.

The engine is the stub (server/testing.py), whose reply is a function of the prompt text: it
calls python until the prompt holds a python result, then answers with that result. So the answer
can only be right if the tool really ran and its output reached the next prompt. The python tool
is the real sandboxed one; the browser is a fake BuiltinTool (the real one is issue 11 part B).
"""
from __future__ import annotations

import json
import re
import urllib.request

import openai
import pytest
from openai.types.responses import (
    ResponseCodeInterpreterToolCall, ResponseFunctionWebSearch, ResponseStreamEvent)
from openai_harmony import Author, Message, Role, ToolNamespaceConfig
from pydantic import TypeAdapter

from gptoss.server.app import create_app
from gptoss.server.context import ServerOptions
from gptoss.server.testing import LiveServer, StubEngine
from gptoss.tools import ToolOutput
from gptoss.tools.python import PythonTool
from gptoss.tools.sandbox import SandboxConfig

CODE = "print(sum(range(10)) * 7)"
RESULT = re.compile(r"<\|start\|>python to=assistant<\|channel\|>analysis<\|message\|>(.*?)<\|end\|>",
                    re.S)
SEARCH = re.compile(r"<\|start\|>browser\.search to=assistant.*?<\|message\|>(.*?)<\|end\|>", re.S)


def reply(prompt: str) -> str:
    """The stub model: python first (or search, when asked to), then an answer quoting the tool."""
    if "## browser" in prompt:
        found = SEARCH.findall(prompt)
        if not found:
            return ('<|channel|>analysis to=browser.search <|constrain|>json<|message|>'
                    '{"query": "gpt-oss"}<|call|>')
        return f"<|channel|>final<|message|>Found: {found[-1].strip()}【0†L1-L1】<|return|>"
    results = RESULT.findall(prompt)
    if not results:
        return (f"<|channel|>analysis<|message|>Let me compute.<|end|><|start|>assistant"
                f"<|channel|>analysis to=python code<|message|>{CODE}<|call|>")
    return f"<|channel|>final<|message|>The answer is {results[-1].strip()}.<|return|>"


class FakeBrowser:
    """A BuiltinTool with the browser's namespace; answers every search with one line."""

    name = "browser"
    calls: list[str] = []

    def config(self) -> ToolNamespaceConfig:
        return ToolNamespaceConfig(name="browser", description="Search the web. search: find pages",
                                   tools=[])

    def run(self, message: Message) -> ToolOutput:
        query = json.loads(message.content[0].text)["query"]
        FakeBrowser.calls.append(query)
        out = Message.from_author_and_content(Author.new(Role.TOOL, "browser.search"),
                                              f"[0] gpt-oss home (https://example.org/{query})")
        return ToolOutput([out.with_recipient("assistant").with_channel(message.channel)],
                          {"action": {"type": "search", "query": query}})

    def cite(self, text: str):
        """The browser's optional citation hook: `【0†L1-L1】` -> a url_citation annotation."""
        marker = "【0†L1-L1】"
        if marker not in text:
            return text, []
        start = text.index(marker)
        text = text.replace(marker, "")
        return text, [{"type": "url_citation", "start_index": start, "end_index": start,
                       "url": "https://example.org/gpt-oss", "title": "gpt-oss home"}]

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def served():
    tools = {"python": lambda: PythonTool(SandboxConfig(timeout_s=20), stateless=True),
             "browser": FakeBrowser}
    engine = StubEngine(reply)
    options = ServerOptions(model_names=("tiny",), builtin_tools=tools)
    with LiveServer(create_app(engine, options)) as server:
        yield server, engine


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served[0].base_url + "/v1", api_key="x", max_retries=0)


def test_code_interpreter_runs_inside_the_turn(client, served):
    r = client.responses.create(model="tiny", input="What is 45*7?",
                                tools=[{"type": "code_interpreter", "container": {"type": "auto"}}])
    assert r.status == "completed"
    assert [item.type for item in r.output] == ["reasoning", "code_interpreter_call", "message"]
    call = r.output[1]
    assert isinstance(call, ResponseCodeInterpreterToolCall)
    assert call.code == CODE and call.status == "completed"
    assert call.outputs[0].type == "logs" and call.outputs[0].logs.strip() == "315"
    assert r.output[2].content[0].text == "The answer is 315."   # read from the tool's result
    second_prompt = served[1].submitted[-1][0]
    assert served[1].tokenizer.decode(second_prompt).count("<|start|>python to=assistant") == 1
    stored = client.responses.retrieve(r.id)
    assert [item.type for item in stored.output] == [item.type for item in r.output]
    # the system message described the tool (its own config)
    first_prompt = served[1].tokenizer.decode(served[1].submitted[-2][0])
    assert "## python" in first_prompt and "Internet access is disabled" in first_prompt


def test_code_interpreter_stream_events_in_order(client):
    events = list(client.responses.create(model="tiny", input="What is 45*7?", stream=True,
                                          tools=[{"type": "code_interpreter",
                                                  "container": {"type": "auto"}}]))
    adapter = TypeAdapter(ResponseStreamEvent)
    for e in events:   # every event parses as one of the client's event types
        adapter.validate_python(e.model_dump())
    kinds = [e.type for e in events]
    ci = [k for k in kinds if "code_interpreter" in k]
    assert ci[0] == "response.code_interpreter_call.in_progress"
    assert ci[-3:] == ["response.code_interpreter_call_code.done",
                       "response.code_interpreter_call.interpreting",
                       "response.code_interpreter_call.completed"]
    assert set(ci[1:-3]) == {"response.code_interpreter_call_code.delta"}
    code = "".join(e.delta for e in events if e.type == "response.code_interpreter_call_code.delta")
    assert code == CODE
    added = [e.output_index for e in events if e.type == "response.output_item.added"]
    done = [e.output_index for e in events if e.type == "response.output_item.done"]
    assert added == done == [0, 1, 2]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert kinds[-1] == "response.completed"
    final = events[-1].response
    assert final.output[2].content[0].text == "The answer is 315."
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0


def test_web_search_wiring_with_a_fake_browser(client):
    r = client.responses.create(model="tiny", input="find gpt-oss", tools=[{"type": "web_search"}])
    assert [item.type for item in r.output] == ["web_search_call", "message"]
    call = r.output[0]
    assert isinstance(call, ResponseFunctionWebSearch)
    assert call.action.type == "search" and call.action.query == "gpt-oss"
    text = r.output[1].content[0]
    assert text.text == "Found: [0] gpt-oss home (https://example.org/gpt-oss)"
    (note,) = text.annotations
    assert note.type == "url_citation" and note.url == "https://example.org/gpt-oss"
    assert note.start_index == len(text.text)
    events = list(client.responses.create(model="tiny", input="find gpt-oss", stream=True,
                                          tools=[{"type": "web_search_preview"}]))
    ws = [e.type for e in events if "web_search" in e.type]
    assert ws == ["response.web_search_call.in_progress", "response.web_search_call.searching",
                  "response.web_search_call.completed"]
    adapter = TypeAdapter(ResponseStreamEvent)
    for e in events:
        adapter.validate_python(e.model_dump())
    added = [e for e in events if e.type == "response.output_text.annotation.added"]
    assert len(added) == 1 and added[0].annotation.url == "https://example.org/gpt-oss"


def test_follow_up_turn_reads_back_builtin_items(client):
    r = client.responses.create(model="tiny", input="What is 45*7?",
                                tools=[{"type": "code_interpreter", "container": {"type": "auto"}}])
    again = client.responses.create(model="tiny", input="and again?", previous_response_id=r.id)
    assert again.status == "completed"


def test_metrics_count_builtin_calls(client, served):
    client.responses.create(model="tiny", input="What is 45*7?",
                            tools=[{"type": "code_interpreter", "container": {"type": "auto"}}])
    text = urllib.request.urlopen(served[0].base_url + "/metrics").read().decode()
    line = next(l for l in text.splitlines()
                if l.startswith('gptoss_builtin_tool_calls_total{tool="python",outcome="ok"}'))
    assert int(line.split()[-1]) >= 1


def test_disabled_tool_and_chat_completions_refuse_builtin_types(served):
    server, _ = served
    plain = create_app(StubEngine(reply), ServerOptions(model_names=("tiny",)))
    with LiveServer(plain) as other:
        c = openai.OpenAI(base_url=other.base_url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.BadRequestError) as err:
            c.responses.create(model="tiny", input="hi", tools=[{"type": "code_interpreter",
                                                                 "container": {"type": "auto"}}])
        assert "--python" in err.value.message and err.value.body["param"] == "tools[0].type"
    c = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                  tools=[{"type": "code_interpreter"}])
    assert "/v1/responses" in err.value.message and err.value.body["param"] == "tools[0].type"


def test_a_follow_up_response_keeps_the_python_kernel():
    """previous_response_id continues the conversation's kernel: a variable set in the first
    response is read in the second (a stateful PythonTool kept by server/tool_sessions.py)."""
    def stateful_reply(prompt: str) -> str:
        results = RESULT.findall(prompt.rsplit("<|start|>user", 1)[1])
        if results:
            return f"<|channel|>final<|message|>Got {results[-1].strip()}.<|return|>"
        code = "x = 41\nprint('set')" if prompt.count("<|start|>user") == 1 else "print(x + 1)"
        return f"<|channel|>analysis to=python code<|message|>{code}<|call|>"

    tools = {"python": lambda: PythonTool(SandboxConfig(timeout_s=20))}
    options = ServerOptions(model_names=("tiny",), builtin_tools=tools)
    with LiveServer(create_app(StubEngine(stateful_reply), options)) as server:
        c = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
        ci = [{"type": "code_interpreter", "container": {"type": "auto"}}]
        first = c.responses.create(model="tiny", input="set x", tools=ci)
        assert first.output[-1].content[0].text == "Got set."
        second = c.responses.create(model="tiny", input="x + 1?", tools=ci,
                                    previous_response_id=first.id)
        assert second.output[-1].content[0].text == "Got 42."
        fresh = c.responses.create(model="tiny", input="x + 1?", tools=ci,
                                   previous_response_id=first.id)   # first's kernel is taken
        assert "NameError" in fresh.output[0].outputs[0].logs
