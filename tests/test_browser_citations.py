"""Citations `【cursor†Lx-Ly】` -> url_citation annotations. Each annotation is checked by slicing
the returned text with its indices, reading the Markdown link found there and comparing it with
the URL of the page at that cursor; the shape is checked with the official `openai` types."""
from __future__ import annotations

import json
import re

import pytest
from openai.types.responses import ResponseOutputText
from openai_harmony import Message, Role

from gptoss.tools.browser import (BrowserTool, LocalBackend, LocalIndex, Page, SearchResult,
                                  build_index, split_pending, url_citations)
from gptoss.tools.browser.page import search_page

MARKDOWN_LINK = re.compile(r"^\(\[([^\]]+)\]\(([^)\s]+)\)\)$")


def check(cited, pages_for):
    """Every annotation's span is `([label](url))` with url == the expected page's URL."""
    ResponseOutputText.model_validate({"type": "output_text", "text": cited.text,
                                       "annotations": cited.annotations})
    for annotation, expected_url in zip(cited.annotations, pages_for, strict=True):
        span = cited.text[annotation["start_index"]:annotation["end_index"]]
        match = MARKDOWN_LINK.match(span)
        assert match, span
        assert match.group(2) == annotation["url"] == expected_url
        assert annotation["type"] == "url_citation"


@pytest.fixture()
def tool(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    (root / "alpha.md").write_text("# Alpha\n\nAlpha particles are helium nuclei.\n")
    (root / "beta.md").write_text("# Beta\n\nBeta particles are electrons. Café ☕ 🚀.\n")
    build_index(root, base_url="https://physics.test/notes")
    browser = BrowserTool(LocalBackend(LocalIndex.open(root)))
    for function, args in [("search", {"query": "particles"}), ("open", {"id": 0}),
                           ("open", {"cursor": 0, "id": 1}), ("find", {"pattern": "electrons"})]:
        message = Message.from_role_and_content(Role.ASSISTANT, json.dumps(args))
        assert browser.run(message.with_recipient(f"browser.{function}")).error is None
    return browser


def test_citations_resolve_to_the_cited_pages(tool):
    pages = tool.pages
    assert [p.kind for p in pages] == ["search", "page", "page", "find"]
    answer = ("Alpha particles are helium nuclei【1†L2】, beta particles are electrons "
              "【2†L2-L2】 (café ☕ 🚀)【3†L0-L1】.【0†L4-L5】")
    cited = tool.annotate(answer)
    check(cited, [pages[1].url, pages[2].url, pages[2].url, pages[0].links[1]])
    assert "【" not in cited.text
    assert cited.text.startswith("Alpha particles are helium nuclei ([physics.test](")
    # the words around the citations are untouched and spaced once
    assert re.sub(r" ?\(\[[^\]]+\]\([^)]+\)\)", "", cited.text) == \
        "Alpha particles are helium nuclei, beta particles are electrons (café ☕ 🚀)."
    second_result = re.search(r"【1†([^†】]+)", pages[0].text).group(1)
    assert [a["title"] for a in cited.annotations] == ["Alpha", "Beta", "Beta", second_result]


def test_search_page_lines_pick_the_result_cited():
    results = [SearchResult(title=f"Result {i}", url=f"https://site{i}.test/page",
                            snippet=f"snippet number {i}") for i in range(3)]
    page = search_page("q", results)
    lines = page.lines
    line_of = {i: next(n for n, line in enumerate(lines) if f"Result {i}" in line)
               for i in range(3)}
    text = "".join(f"fact {i}【0†L{line_of[i]}-L{line_of[i] + 1}】. " for i in range(3))
    cited = url_citations(text, [page])
    check(cited, [r.url for r in results])
    assert [a["title"] for a in cited.annotations] == ["Result 0", "Result 1", "Result 2"]
    # lines with no result in them (the heading) cite nothing
    assert url_citations("x【0†L0】", [page]).text == "x"


def test_unresolvable_and_other_markers():
    page = Page(url="https://a.test/x", title="A", text="one\ntwo")
    cited = url_citations("start【0†L0】 unknown【5†L1】 not a citation【0†foo】", [page])
    check(cited, ["https://a.test/x"])
    assert cited.text == "start ([a.test](https://a.test/x)) unknown not a citation【0†foo】"
    at_start = url_citations("【0†L1】 opens the text", [page])
    assert at_start.text.startswith("([a.test]") and at_start.annotations[0]["start_index"] == 0
    assert url_citations("no citations", []).text == "no citations"
    assert url_citations("nothing open【0†L1】", []).text == "nothing open"


def test_split_pending_holds_back_an_unfinished_citation():
    assert split_pending("some text【3†L1") == ("some text", "【3†L1")
    assert split_pending("some text【") == ("some text", "【")
    assert split_pending("done【3†L1】") == ("done【3†L1】", "")
    assert split_pending("plain") == ("plain", "")
