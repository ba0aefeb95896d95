"""Exa and You.com backends against recorded responses (tests/data/browser/, written in the shapes
their API documentation gives), served from 127.0.0.1: no network. The requests they send are
checked against the documented endpoints, headers and parameters."""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from browser_http import local_server
from openai_harmony import Message, Role

from gptoss.tools.base import ToolError
from gptoss.tools.browser import BrowserTool, ExaBackend, YouBackend, make_backend

DATA = Path(__file__).parent / "data" / "browser"


def recorded(name: str, status: int = 200):
    body = (DATA / name).read_bytes()
    return lambda handler: (status, {"Content-Type": "application/json"}, body)


def call(tool, function: str, args) -> tuple[str, dict, str | None]:
    message = Message.from_role_and_content(Role.ASSISTANT, json.dumps(args))
    out = tool.run(message.with_recipient(f"browser.{function}").with_channel("analysis"))
    return out.messages[0].content[0].text, out.item, out.error


def test_exa_search_then_open_a_result_from_its_text(monkeypatch):
    monkeypatch.setenv("EXA_API_KEY", "exa-test-key")
    with local_server({"/search": recorded("exa_search.json")}) as (base, requests):
        tool = BrowserTool(ExaBackend(base_url=base))  # no fetcher: opening must use the text
        text, item, error = call(tool, "search", {"query": "artemis moon", "topn": 3})
        request = requests[0]
        assert request["method"] == "POST" and request["path"] == "/search"
        assert request["headers"]["x-api-key"] == "exa-test-key"
        body = json.loads(request["body"])
        assert body["query"] == "artemis moon" and body["numResults"] == 3
        assert "text" in body["contents"]
    assert error is None and item == {"action": {"type": "search", "query": "artemis moon",
                                                 "sources": [
        {"type": "url", "url": "https://www.nasa.gov/missions/artemis/"},
        {"type": "url", "url": "https://en.wikipedia.org/wiki/Artemis_program"}]}}
    assert "【0†Artemis - NASA†www.nasa.gov】" in text
    assert "【1†Artemis program - Wikipedia†en.wikipedia.org】" in text
    text, item, error = call(tool, "open", {"id": 1})
    assert error is None
    assert item == {"action": {"type": "open_page",
                               "url": "https://en.wikipedia.org/wiki/Artemis_program"}}
    assert "Moon exploration program" in text and text.startswith("[1] Artemis program")


def test_you_search_lists_web_then_news(monkeypatch):
    monkeypatch.setenv("YDC_API_KEY", "ydc-test-key")
    with local_server({"/v1/search": recorded("you_search.json")}) as (base, requests):
        tool = BrowserTool(YouBackend(base_url=base))
        text, item, error = call(tool, "search", {"query": "global birth rate trends"})
        request = requests[0]
    assert request["method"] == "GET" and request["headers"]["x-api-key"] == "ydc-test-key"
    query = parse_qs(urlsplit(request["path"]).query)
    assert query == {"query": ["global birth rate trends"], "count": ["10"]}
    assert error is None
    order = [text.index(t) for t in ("Population | World Bank", "Fertility Rate - Our World",
                                     "Birth rates fall again")]
    assert order == sorted(order)
    assert "Global fertility rates have declined" in text      # snippets first
    assert "How have fertility rates changed" in text          # else the description
    assert tool.pages[0].links[2] == "https://news.example.com/2025/birth-rates"


def test_api_errors_reach_the_model_as_messages(monkeypatch):
    monkeypatch.setenv("EXA_API_KEY", "wrong")
    with local_server({"/search": recorded("exa_unauthorized.json", status=401)}) as (base, _):
        text, item, error = call(BrowserTool(ExaBackend(base_url=base)), "search",
                                 {"query": "x"})
    assert text.startswith("Error: search for `x` failed: Exa answered HTTP 401")
    assert "Invalid API key" in text and error and item["action"]["query"] == "x"
    with local_server({"/search": lambda h: (200, {}, b"<html>not json")}) as (base, _):
        text, _, _ = call(BrowserTool(ExaBackend(base_url=base)), "search", {"query": "x"})
    assert "not JSON" in text
    with local_server({}) as (base, _):
        pass  # the server is gone: connection refused
    text, _, _ = call(BrowserTool(ExaBackend(base_url=base)), "search", {"query": "x"})
    assert "Exa could not be reached" in text


@pytest.mark.parametrize("kind,variable", [("exa", "EXA_API_KEY"), ("you", "YDC_API_KEY")])
def test_missing_key_is_a_clear_setup_error(monkeypatch, kind, variable):
    monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ToolError, match=f"set {variable}"):
        make_backend(kind)
    with pytest.raises(ToolError, match=variable):
        BrowserTool.create(kind)


def test_unknown_backend_and_missing_index(tmp_path):
    with pytest.raises(ToolError, match="unknown browser backend 'bing'"):
        make_backend("bing")
    with pytest.raises(ToolError, match="gptoss index"):
        make_backend("local")
    with pytest.raises(ToolError, match="gptoss index"):
        BrowserTool.create("local", index=tmp_path)


def test_odd_records_are_skipped_not_fatal(monkeypatch):
    monkeypatch.setenv("EXA_API_KEY", "k")
    odd = {"results": [{"url": 5, "title": "number url"}, {"title": "no url"},
                       {"url": "https://ok.test/", "title": ["not", "a string"], "text": None},
                       "not a record"]}
    with local_server({"/search": lambda h: (200, {}, json.dumps(odd).encode())}) as (base, _):
        text, _, error = call(BrowserTool(ExaBackend(base_url=base)), "search", {"query": "q"})
    assert "unexpected shape" in text and error  # a list with a non-record in it
    odd["results"].pop()
    with local_server({"/search": lambda h: (200, {}, json.dumps(odd).encode())}) as (base, _):
        tool = BrowserTool(ExaBackend(base_url=base))
        text, _, error = call(tool, "search", {"query": "q"})
    assert error is None and tool.pages[0].links == {0: "https://ok.test/"}
