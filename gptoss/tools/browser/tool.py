"""The `browser` built-in tool: search, open and find over a stack of pages (gptoss.tools.base).

The model calls `browser.search {"query", "topn"}`, `browser.open {"id", "cursor", "loc",
"num_lines"}` and `browser.find {"pattern", "cursor"}` (harmony's `ToolNamespaceConfig.browser()`,
the text gpt-oss was trained with). Every call that shows something pushes a page; its index on
the stack is its cursor, which the model uses to open links (`【id†text】`) and to cite lines
(`【cursor†L3-L5】`, turned into url_citation annotations by `annotate`). One BrowserTool holds one
conversation's pages. A bad call answers with a message that says what was wrong, never raises.
"""
from __future__ import annotations

import json
import os
from typing import Any

from openai_harmony import Author, Message, Role, TextContent, ToolNamespaceConfig

from gptoss.tools.base import ToolOutput
from gptoss.tools.browser.backends import Backend, BackendError, make_backend
from gptoss.tools.browser.citations import CitedText, url_citations
from gptoss.tools.browser.fetch import Fetcher
from gptoss.tools.browser.page import Page, find_page, render_window, search_page

FUNCTIONS = ("search", "open", "find")
# the action reported when a call fails before it says more (the openai types' required fields)
DEFAULT_ACTIONS = {"search": {"type": "search"}, "open": {"type": "open_page"},
                   "find": {"type": "find_in_page", "pattern": "", "url": ""}}


class CallError(ValueError):
    """A call the tool cannot carry out; `str()` is what the model reads."""


def _integer(args: dict, name: str, default: int) -> int:
    value = args.get(name, default)
    if value is None:
        return default
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (isinstance(value, float) and not value.is_integer()):
        raise CallError(f"`{name}` must be an integer, not {json.dumps(value)}")
    return int(value)


def _arguments(message: Message) -> dict[str, Any]:
    text = "".join(c.text for c in message.content if isinstance(c, TextContent)).strip()
    if not text:
        return {}
    try:
        args = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CallError(f"the arguments are not valid JSON ({exc.msg} at character {exc.pos}); "
                        f"send a JSON object such as {{\"query\": \"...\"}}") from None
    if not isinstance(args, dict):
        raise CallError(f"the arguments must be a JSON object, not {type(args).__name__}")
    return args


class BrowserTool:
    name = "browser"

    def __init__(self, backend: Backend, *, max_results: int = 10, view_chars: int = 4000):
        self.backend, self.max_results, self.view_chars = backend, max_results, view_chars
        self.pages: list[Page] = []         # the stack: cursor i is pages[i]
        self._cache: dict[str, Page] = {}   # url -> page, for links opened again

    @classmethod
    def create(cls, backend: str = "local", *, index: str | os.PathLike | None = None,
               allow_private: bool = False, fetch_urls: bool = True, **options) -> BrowserTool:
        """A browser over backend "local" (`index`: a DIR given to `gptoss index`, or the index
        file), "exa" or "you"; URLs are fetched with private addresses refused unless
        `allow_private`. Raises ToolError for a missing index or API key."""
        fetcher = Fetcher(allow_private=allow_private) if fetch_urls else None
        return cls(make_backend(backend, index=index, fetcher=fetcher), **options)

    def config(self) -> ToolNamespaceConfig:
        return ToolNamespaceConfig.browser()

    def run(self, message: Message) -> ToolOutput:
        function = (message.recipient or "").partition(".")[2]
        action: dict[str, Any] = dict(DEFAULT_ACTIONS.get(function, {}))
        try:
            if function not in FUNCTIONS:
                raise CallError(f"unknown function `{message.recipient}`; the browser has "
                                + ", ".join(f"`browser.{f}`" for f in FUNCTIONS))
            args = _arguments(message)
            text = getattr(self, f"_{function}")(args, action)
        except (CallError, BackendError) as exc:
            return ToolOutput([self._reply(message, function, f"Error: {exc}")],
                              item={"action": action} if action else {}, error=str(exc))
        return ToolOutput([self._reply(message, function, text)], item={"action": action})

    def annotate(self, text: str) -> CitedText:
        """The final answer with its `【cursor†Lx-Ly】` citations as url_citation annotations."""
        return url_citations(text, self.pages)

    def cite(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        """(text, annotations): what the server's tool loop asks of a tool that cites."""
        cited = self.annotate(text)
        return cited.text, cited.annotations

    def close(self) -> None:
        self.pages.clear()
        self._cache.clear()
        self.backend.close()

    def _reply(self, call: Message, function: str, text: str) -> Message:
        name = f"browser.{function}" if function in FUNCTIONS else "browser"
        reply = Message.from_author_and_content(Author.new(Role.TOOL, name), text)
        reply = reply.with_recipient("assistant")
        return reply.with_channel(call.channel) if call.channel else reply

    # the three functions: each fills `action` (the Responses web_search_call action: search,
    # open_page, find_in_page as the openai client types name them) before it can fail
    def _search(self, args: dict, action: dict) -> str:
        query = args.get("query")
        if not isinstance(query, str) or not query.strip():
            raise CallError("`query` must be a non-empty string")
        action.update(type="search", query=query)
        topn = min(max(_integer(args, "topn", self.max_results), 1), self.max_results)
        try:
            results = self.backend.search(query, topn)
        except BackendError as exc:
            raise CallError(f"search for `{query}` failed: {exc}") from None
        for result in results:
            if result.text:
                self._cache.setdefault(result.url, Page(url=result.url, title=result.title,
                                                        text=result.text))
        action["sources"] = [{"type": "url", "url": r.url} for r in results]
        return self._show(search_page(query, results), loc=0, num_lines=-1)

    def _open(self, args: dict, action: dict) -> str:
        link = args.get("id", -1)
        loc, num_lines = _integer(args, "loc", -1), _integer(args, "num_lines", -1)
        if isinstance(link, str) and not link.strip().lstrip("-").isdigit():
            action.update(type="open_page", url=link)
            return self._show(self._fetch(link.strip(), refresh=True), loc, num_lines)
        link = _integer(args, "id", -1)
        current = self._page(_integer(args, "cursor", -1))
        if link < 0:  # scroll the page at cursor
            action.update(type="open_page", url=current.url)
            return self._show(current, loc, num_lines)
        url = current.links.get(link)
        if url is None:
            raise CallError(self._no_link(link, current))
        action.update(type="open_page", url=url)
        line = current.link_lines.get(link)
        if loc < 0 and line is not None:
            loc = max(line - 4, 0)
        return self._show(self._fetch(url), loc, num_lines)

    def _find(self, args: dict, action: dict) -> str:
        pattern = args.get("pattern")
        if not isinstance(pattern, str) or not pattern:
            raise CallError("`pattern` must be a non-empty string")
        page = self._page(_integer(args, "cursor", -1))
        action.update(type="find_in_page", pattern=pattern, url=page.url)
        if page.kind != "page":
            raise CallError(f"`find` searches a page, not {page.kind} results; open a page first")
        return self._show(find_page(page, pattern), loc=0, num_lines=-1)

    # the stack
    def _page(self, cursor: int) -> Page:
        if not self.pages:
            raise CallError("no page is open yet: call `browser.search` or open a URL first")
        if cursor == -1:
            return self.pages[-1]
        if not 0 <= cursor < len(self.pages):
            raise CallError(f"cursor {cursor} is out of range: the open pages are "
                            f"[0] to [{len(self.pages) - 1}]")
        return self.pages[cursor]

    def _fetch(self, url: str, refresh: bool = False) -> Page:
        if not refresh and url in self._cache:
            return self._cache[url]
        try:
            page = self.backend.fetch(url)
        except BackendError as exc:
            raise CallError(f"could not open `{url}`: {exc}") from None
        self._cache[url] = self._cache[page.url] = page
        return page

    def _show(self, page: Page, loc: int, num_lines: int) -> str:
        loc = max(loc, 0)
        if loc >= max(len(page.lines), 1):
            raise CallError(f"`loc` {loc} is past the end of the page (its last line is "
                            f"L{len(page.lines) - 1})")
        self.pages.append(page)
        return render_window(page, len(self.pages) - 1, loc, num_lines, self.view_chars)

    @staticmethod
    def _no_link(link: int, page: Page) -> str:
        if not page.links:
            return f"link id {link} does not exist: the page has no links"
        return (f"link id {link} is not on this page; its link ids run from "
                f"{min(page.links)} to {max(page.links)}")
