"""The browser through the one tool loop, end to end on a tiny random checkpoint: search ->
open -> find -> an answer citing the opened page, in `LLM.chat`, `gptoss chat --browser` over a
pipe, and /v1/responses (web_search_call items, a url_citation annotation with the right URL).

A random model cannot be asked to browse, so its output is forced through the engine's logits
hook (test_tools_loop.Segments: the turn's k-th engine request emits the k-th script). What is
proven is the loop's side: each call reaches the real BrowserTool over a real local index, its
page is rendered into the next prompt (read back with openai-harmony) and the citation resolves
to the page the model opened.
"""
from __future__ import annotations

import json

import pytest
from openai.types.responses import ResponseFunctionWebSearch, ResponseStreamEvent
from pydantic import TypeAdapter

from gptoss.tools.browser import BrowserTool
from gptoss.tools.browser.index import build_index
from test_tools_loop import ForcingEngine, Segments, harmony, llm, tail_messages  # noqa: F401 (llm: a fixture)

MOON_URL = "https://corpus.test/moon.md"


def browse(function: str, args: dict) -> list[int]:
    return harmony(f"<|channel|>analysis to=browser.{function} code<|message|>"
                   f"{json.dumps(args)}<|call|>")


SCRIPTS = [browse("search", {"query": "Apollo landing"}),
           browse("open", {"cursor": 0, "id": 0}),
           browse("find", {"pattern": "Apollo"}),
           harmony("<|channel|>final<|message|>Apollo 11 landed in 1969 【1†L2-L4】.<|return|>")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    (root / "moon.md").write_text(
        "# The Moon\n\nThe Moon is Earth's only natural satellite.\n"
        "Its mean radius is 1,737 km.\n\nApollo 11 landed in 1969.\n")
    (root / "tides.html").write_text(
        "<html><head><title>Tides</title></head><body><p>Tides are caused by the "
        "Moon's gravity.</p></body></html>")
    build_index(root, base_url="https://corpus.test")
    return root


def test_llm_chat_searches_opens_finds_and_answers(llm, corpus):
    from gptoss.engine import SamplingParams
    seen, original = [], llm.add_request

    def add_request(prompt, *args, **kwargs):
        seen.append(list(prompt))
        return original(prompt, *args, **kwargs)

    llm.add_request = add_request
    browser = BrowserTool.create("local", index=corpus)
    try:
        out = llm.chat([{"role": "user", "content": "When did Apollo 11 land?"}],
                       SamplingParams(max_tokens=200), logits_processor=Segments(SCRIPTS),
                       builtin_tools=[browser])
        assert [s.recipient for s in out.builtin_calls] == \
            ["browser.search", "browser.open", "browser.find"]
        assert [s.output.error for s in out.builtin_calls] == [None] * 3
        assert [s.output.item["action"]["type"] for s in out.builtin_calls] == \
            ["search", "open_page", "find_in_page"]
        assert out.content.startswith("Apollo 11 landed in 1969")
        text, notes = browser.cite(out.content)
        assert [n["url"] for n in notes] == [MOON_URL]
        assert MOON_URL in text[notes[0]["start_index"]:notes[0]["end_index"]]
    finally:
        del llm.add_request
        browser.close()
    assert len(seen) == 4
    # each later prompt = the one before + the call + the page, as openai-harmony reads it
    for before, after in zip(seen, seen[1:]):
        assert after[:len(before)] == before
    *_, call, page = tail_messages(seen[2])
    assert call.recipient == "browser.open" and page.author.name == "browser.open"
    assert page.content[0].text.startswith(f"[1] The Moon ({MOON_URL})")
    assert "## browser" in llm.tokenizer.decode(seen[0])


def test_gptoss_chat_browser_over_a_pipe(tmp_path, corpus, harmony_tiny_checkpoint):
    from test_engine_cli import run_cli
    proc, prompts = run_cli(tmp_path, ["chat", "--model", str(harmony_tiny_checkpoint),
                                       "--browser-index", str(corpus), "--max-tokens", "200"],
                            SCRIPTS, "When did Apollo 11 land?\n/quit\n")
    assert proc.returncode == 0, proc.stderr
    assert "-> browser.search(" in proc.stdout and "<- browser.find:" in proc.stdout
    assert "Apollo 11 landed in 1969" in proc.stdout
    assert len(prompts) == 4


def test_responses_web_search_with_a_citation(llm, corpus):
    import openai

    from gptoss.engine import AsyncEngine
    from gptoss.server.app import create_app
    from gptoss.server.context import ServerOptions
    from gptoss.server.testing import LiveServer

    engine = ForcingEngine(AsyncEngine(llm), Segments(SCRIPTS))
    options = ServerOptions(model_names=("tiny",), builtin_tools={
        "browser": lambda: BrowserTool.create("local", index=corpus)})
    try:
        with LiveServer(create_app(engine, options)) as server:
            client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
            events = list(client.responses.create(
                model="tiny", input="When did Apollo 11 land?", max_output_tokens=200,
                stream=True, tools=[{"type": "web_search_preview"}]))
            stored = client.responses.retrieve(events[-1].response.id)
    finally:
        engine.engine.close()
    adapter = TypeAdapter(ResponseStreamEvent)
    for e in events:
        adapter.validate_python(e.model_dump())
    kinds = [e.type for e in events]
    assert kinds.count("response.web_search_call.completed") == 3
    assert "response.output_text.annotation.added" in kinds
    assert kinds.index("response.output_text.annotation.added") < kinds.index("response.completed")
    calls = [item for item in stored.output if item.type == "web_search_call"]
    assert all(isinstance(c, ResponseFunctionWebSearch) for c in calls)
    assert [c.action.type for c in calls] == ["search", "open_page", "find_in_page"]
    assert calls[1].action.url == MOON_URL
    message = stored.output[-1]
    text = message.content[0].text
    (note,) = message.content[0].annotations
    assert note.type == "url_citation" and note.url == MOON_URL
    assert MOON_URL in text[note.start_index:note.end_index]
    assert "【" not in text
