"""The browser tool over a small local corpus: search -> open -> find, the page stack and its
cursors, line-numbered windows, link markers, bad calls answered as messages, and the namespace
rendered into the system message by openai-harmony (the oracle for the config and the replies)."""
from __future__ import annotations

import json
import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from browser_http import html, local_server
from openai.types.responses import ResponseFunctionWebSearch
from openai_harmony import (Author, Conversation, Message, Role, SystemContent, TextContent)

from gptoss.harmony.tokenizer import load_harmony_encoding
from gptoss.tools.base import BuiltinTool
from gptoss.tools.browser import BrowserTool, Fetcher, LocalBackend, LocalIndex, build_index

LONG_LINES = [f"line {i}: the {'quick ' if i % 7 else 'rare '}brown fox number {i}"
              for i in range(300)]


@pytest.fixture()
def corpus(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "moon.md").write_text(
        "# The Moon\n\nThe Moon is Earth's only natural satellite.\n"
        "Its mean radius is 1,737 km. See [tides](tides.html) and "
        "[NASA's page](https://science.nasa.gov/moon/).\n\nApollo 11 landed in 1969.\n")
    (root / "tides.html").write_text(
        "<html><head><title>Tides</title></head><body><p>Tides are caused by the "
        "<a href='moon.md'>Moon</a>'s gravity.</p><p>Spring tides follow a full moon.</p>"
        "</body></html>")
    (root / "long_file.txt").write_text("\n".join(LONG_LINES))
    build_index(root, base_url="https://corpus.test")
    return root


@pytest.fixture()
def tool(corpus):
    browser = BrowserTool(LocalBackend(LocalIndex.open(corpus)), view_chars=1000)
    yield browser
    browser.close()


def call(tool, function, args, channel="analysis"):
    text = args if isinstance(args, str) else json.dumps(args)
    message = Message.from_role_and_content(Role.ASSISTANT, text)
    message = message.with_recipient(f"browser.{function}").with_channel(channel)
    out = tool.run(message)
    assert len(out.messages) == 1
    if function in ("search", "open", "find"):  # the item parses as the openai client's type
        ResponseFunctionWebSearch.model_validate({"id": "ws_1", "type": "web_search_call",
                                                  "status": "completed", **out.item})
    reply = out.messages[0]
    assert reply.author.role == Role.TOOL and reply.recipient == "assistant"
    assert reply.channel == channel
    return reply, out


def numbered(text: str) -> dict[int, str]:
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^L(\d+): (.*)$", text, re.M)}


def test_is_a_builtin_tool(tool):
    assert isinstance(tool, BuiltinTool) and tool.name == "browser"


def test_search_open_find(tool):
    reply, out = call(tool, "search", {"query": "moon radius", "topn": 5})
    text = reply.content[0].text
    assert reply.author.name == "browser.search" and out.error is None
    assert out.item["action"]["type"] == "search"
    assert out.item["action"]["query"] == "moon radius"
    assert [s["url"] for s in out.item["action"]["sources"]] == \
        [tool.pages[0].links[i] for i in range(len(tool.pages[0].links))]
    assert text.startswith("[0] Search results for `moon radius`")
    first = re.search(r"【(\d+)†([^†】]+)†corpus.test】", text)
    assert first.group(2) == "The Moon"  # best BM25 match listed first
    reply, out = call(tool, "open", {"id": int(first.group(1))})
    text = reply.content[0].text
    assert reply.author.name == "browser.open"
    assert out.item == {"action": {"type": "open_page", "url": "https://corpus.test/moon.md"}}
    assert text.startswith("[1] The Moon (https://corpus.test/moon.md)")
    lines = numbered(text)
    source = (tool.pages[1].text).split("\n")
    assert [lines[i] for i in sorted(lines)] == source  # short lines kept verbatim
    assert "【0†tides】" in text and "【1†NASA's page†science.nasa.gov】" in text
    reply, out = call(tool, "find", {"pattern": "APOLLO"})
    text = reply.content[0].text
    assert reply.author.name == "browser.find"
    assert out.item == {"action": {"type": "find_in_page", "pattern": "APOLLO",
                                   "url": "https://corpus.test/moon.md"}}
    assert text.startswith("[2] Find results for text: `APOLLO` in `The Moon`")
    match_line = source.index("Apollo 11 landed in 1969.")
    assert f"【0†match at L{match_line}】" in text
    reply, _ = call(tool, "open", {"id": 0})  # a find result opens the page at the match
    assert reply.content[0].text.startswith("[3] The Moon")
    assert f"L{match_line}: Apollo 11 landed in 1969." in reply.content[0].text
    reply, _ = call(tool, "open", {"cursor": 1, "id": 0})  # a link on an older page
    assert reply.content[0].text.startswith("[4] Tides (https://corpus.test/tides.html)")
    assert [p.url for p in tool.pages] == ["", *["https://corpus.test/moon.md"] * 3,
                                           "https://corpus.test/tides.html"]


def test_windows_and_scrolling(tool):
    call(tool, "search", {"query": "brown fox"})
    reply, _ = call(tool, "open", {"id": 0, "loc": 100, "num_lines": 5})
    text = reply.content[0].text
    assert "**viewing lines [100 - 104] of 299**" in text
    assert numbered(text) == {i: LONG_LINES[i] for i in range(100, 105)}
    reply, out = call(tool, "open", {"loc": 298})  # scroll the current page; default window
    assert out.item["action"]["url"] == "https://corpus.test/long_file.txt"
    assert numbered(reply.content[0].text) == {298: LONG_LINES[298], 299: LONG_LINES[299]}
    reply, _ = call(tool, "open", {"cursor": 1, "loc": 0})  # default window: about view_chars
    shown = numbered(reply.content[0].text)
    assert 10 < len(shown) < 40 and shown == {i: LONG_LINES[i] for i in range(len(shown))}
    assert len(reply.content[0].text) < 1000 + 200
    reply, _ = call(tool, "find", {"pattern": "rare", "cursor": 1})
    assert "【0†match at L0】" in reply.content[0].text
    matches = re.findall(r"【(\d+)†match at L(\d+)】", tool.pages[-1].text)  # the whole page
    assert [int(line) for _, line in matches] == [i for i in range(300) if i % 7 == 0][:50]
    assert [int(i) for i, _ in matches] == list(range(43))


def test_long_lines_wrap_without_splitting_markers(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    words = " ".join(f"word{i}" for i in range(60))
    (root / "wide.md").write_text(f"{words} [a link with several words](other.md) {words}\n")
    build_index(root)
    tool = BrowserTool(LocalBackend(LocalIndex.open(root)))
    call(tool, "search", {"query": "word7"})
    text = call(tool, "open", {"id": 0})[0].content[0].text
    lines = [lines for _, lines in sorted(numbered(text).items())]
    assert all(len(line) <= 80 for line in lines)
    assert " ".join(lines).split() == f"{words} 【0†a link with several words】 {words}".split()
    assert any("【0†a link with several words】" in line for line in lines)


BAD_CALLS = [
    ("search", "{not json", "not valid JSON"),
    ("search", "[1, 2]", "must be a JSON object"),
    ("search", {}, "`query` must be a non-empty string"),
    ("search", {"query": "moon", "topn": "many"}, "`topn` must be an integer"),
    ("open", {"id": 0}, "no page is open yet"),
    ("find", {"pattern": "x"}, "no page is open yet"),
    ("teleport", {}, "unknown function `browser.teleport`"),
]


@pytest.mark.parametrize("function,args,expected", BAD_CALLS)
def test_bad_calls_before_any_page(tool, function, args, expected):
    reply, out = call(tool, function, args)
    assert reply.content[0].text.startswith("Error: ") and expected in reply.content[0].text
    assert out.error and expected in out.error and tool.pages == []


def test_bad_calls_on_the_stack(tool):
    call(tool, "search", {"query": "moon"})
    call(tool, "open", {"id": 0})
    for args, expected in [({"cursor": 7}, "cursor 7 is out of range: the open pages are [0] to "
                                           "[1]"),
                           ({"id": 99}, "link id 99 is not on this page"),
                           ({"loc": 10_000}, "past the end of the page"),
                           ({"id": 1.5}, "`id` must be an integer"),
                           ({"id": "https://corpus.test/none.md"}, "could not open")]:
        reply, _ = call(tool, "open", args)
        assert expected in reply.content[0].text, args
    reply, _ = call(tool, "find", {"pattern": "moon", "cursor": 0})
    assert "not search results" in reply.content[0].text
    assert len(tool.pages) == 2  # failed calls push nothing


def test_open_url_is_address_checked(corpus):
    page = "<html><head><title>Served</title></head><body><p>served text</p></body></html>"
    with local_server({"/p": html(page)}) as (base, requests):
        refused = BrowserTool(LocalBackend(LocalIndex.open(corpus), Fetcher()))
        reply, out = call(refused, "open", {"id": f"{base}/p"})
        assert "non-public address 127.0.0.1" in reply.content[0].text and requests == []
        assert out.item == {"action": {"type": "open_page", "url": f"{base}/p"}}
        allowed = BrowserTool.create("local", index=corpus, allow_private=True)
        reply, out = call(allowed, "open", {"id": f"{base}/p"})
        assert out.error is None and reply.content[0].text.startswith(f"[0] Served ({base}/p)")
        assert "L0: served text" in reply.content[0].text
        assert call(allowed, "open", {"id": "https://corpus.test/moon.md"})[0].content[0].text \
            .startswith("[1] The Moon")  # indexed URLs never touch the network


def test_config_renders_through_harmony(tool):
    encoding = load_harmony_encoding()
    user = Message.from_role_and_content(Role.USER, "hi")

    def rendered(system: SystemContent) -> str:
        conversation = Conversation.from_messages(
            [Message.from_role_and_content(Role.SYSTEM, system), user])
        return encoding.decode(encoding.render_conversation_for_completion(
            conversation, Role.ASSISTANT))

    text = rendered(SystemContent.new().with_tools(tool.config()))
    assert text == rendered(SystemContent.new().with_browser_tool())
    assert "namespace browser {" in text
    for function in ("type search = ", "type open = ", "type find = "):
        assert function in text
    for argument in ("query: string", "topn?: number", "cursor?: number", "loc?: number",
                     "num_lines?: number", "pattern: string", "id?: number | string"):
        assert argument in text
    assert "【{cursor}†L{line_start}(-L{line_end})?】" in text


def test_replies_render_as_harmony_tool_messages(tool):
    reply, _ = call(tool, "search", {"query": "tides"})
    encoding = load_harmony_encoding()
    text = encoding.decode(encoding.render(reply))
    assert text.startswith("<|start|>browser.search to=assistant<|channel|>analysis<|message|>"
                           "[0] Search results for `tides`")
    parsed = encoding.parse_messages_from_completion_tokens(encoding.render(reply), role=None)
    assert parsed[0].author == Author.new(Role.TOOL, "browser.search")
    assert isinstance(parsed[0].content[0], TextContent)


VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
                   st.sampled_from(["http://[::1", "https://", "file:///etc/passwd", "0", "-1",
                                    "http://169.254.169.254/", "【0†x】", "ftp://x"]),
                   st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3),
                                                                        st.integers(), max_size=2))
CALL_ARGS = st.dictionaries(st.sampled_from(["query", "topn", "id", "cursor", "loc", "num_lines",
                                             "pattern", "source", "view_source"]),
                            VALUES, max_size=4)


@settings(max_examples=int(os.environ.get("BROWSER_FUZZ_EXAMPLES", 60)), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                               HealthCheck.function_scoped_fixture])
@given(calls=st.lists(st.tuples(st.sampled_from(["search", "open", "find", "x"]), CALL_ARGS),
                      min_size=1, max_size=5))
def test_any_arguments_get_an_answer_never_an_exception(corpus, calls):
    tool = BrowserTool(LocalBackend(LocalIndex.open(corpus), Fetcher(resolver=lambda h, p:
                                                                     ["10.0.0.1"])))
    tool.run(Message.from_role_and_content(Role.ASSISTANT, '{"query": "moon"}')
             .with_recipient("browser.search"))
    for function, args in calls:
        before = len(tool.pages)
        out = tool.run(Message.from_role_and_content(Role.ASSISTANT, json.dumps(args))
                       .with_recipient(f"browser.{function}"))
        assert len(out.messages) == 1 and out.messages[0].content[0].text
        if function != "x":
            ResponseFunctionWebSearch.model_validate({"id": "ws", "type": "web_search_call",
                                                      "status": "failed", **out.item})
        assert (out.error is None) == (len(tool.pages) == before + 1)
        tool.annotate("x【0†L1】【5†L2-L3】")
    tool.close()
