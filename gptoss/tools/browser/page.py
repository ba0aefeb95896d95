"""A page on the browser's stack and the line-numbered window the model reads.

Pages are wrapped into lines of at most 80 characters (a link marker is never split) and shown
as a window:

    [{cursor}] {title} ({url})
    **viewing lines [{first} - {last}] of {last line}**

    L{first}: ...

`kind` says what the page is: "page" (a document), "search" (a result list: every link is a
result) or "find" (matches in `source_url`'s page; link i opens the source page at its match).
"""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from urllib.parse import unquote

from gptoss.tools.browser.markup import domain_of

WRAP_WIDTH = 80
LINK_MARKER = re.compile(r"【(\d+)†([^†】]*)(?:†[^】]*)?】")
_PARTIAL_HEAD = re.compile(r"^[^【】]*】")         # a marker's tail left by wrapping
_PARTIAL_TAIL = re.compile(r"【[^】]*$")           # a marker's head left by a window cut
_KEEP_TOGETHER = "\x00"                            # stands for a space inside a marker


@dataclass
class Page:
    url: str
    title: str
    text: str
    links: dict[int, str] = field(default_factory=dict)
    kind: str = "page"
    source_url: str | None = None              # find pages: the page searched
    source_title: str = ""
    link_lines: dict[int, int] = field(default_factory=dict)  # link id -> line to open at
    _lines: list[str] | None = field(default=None, repr=False, compare=False)

    @property
    def lines(self) -> list[str]:
        if self._lines is None:
            self._lines = wrap_lines(self.text)
        return self._lines

    def cited(self, first: int, last: int) -> tuple[str, str] | None:
        """(url, title) a citation of lines first..last of this page points to, or None."""
        if self.kind == "find":
            return (self.source_url, self.source_title) if self.source_url else None
        if self.kind == "search":  # the first result shown in the cited lines
            for line in self.lines[max(first, 0):last + 1]:
                for match in LINK_MARKER.finditer(line):
                    url = self.links.get(int(match.group(1)))
                    if url:
                        return url, match.group(2)
            return None
        return (self.url, self.title) if self.url else None


def wrap_lines(text: str, width: int = WRAP_WIDTH) -> list[str]:
    """Split into lines of at most `width` characters (longer words and markers stay whole)."""
    glued = LINK_MARKER.sub(lambda m: m.group(0).replace(" ", _KEEP_TOGETHER), text)
    lines: list[str] = []
    for line in glued.split("\n"):
        if len(line) <= width:  # kept verbatim (indentation included)
            pieces = [line]
        else:
            pieces = textwrap.wrap(line, width=width, break_long_words=False,
                                   break_on_hyphens=False) or [""]
        lines.extend(p.replace(_KEEP_TOGETHER, " ") for p in pieces)
    return lines


def strip_links(line: str) -> str:
    """A line as read without link syntax: `【3†the page】` -> `the page`."""
    line = LINK_MARKER.sub(lambda m: m.group(2), line)
    return _PARTIAL_TAIL.sub("", _PARTIAL_HEAD.sub("", line))


def window_end(lines: list[str], loc: int, num_lines: int, view_chars: int) -> int:
    """The line after the window starting at `loc`: `num_lines` lines, or when num_lines <= 0 as
    many as fit in `view_chars` characters (at least one)."""
    if num_lines > 0:
        return min(loc + num_lines, len(lines))
    end, used = loc, 0
    while end < len(lines) and (end == loc or used + len(lines[end]) + 8 <= view_chars):
        used += len(lines[end]) + 8  # "L123: " and the newline
        end += 1
    return end


def render_window(page: Page, cursor: int, loc: int, num_lines: int, view_chars: int) -> str:
    """The text the model reads for `page` at `cursor`, lines from `loc` (must be in range)."""
    lines = page.lines
    end = window_end(lines, loc, num_lines, view_chars)
    shown = unquote(page.url) if page.url else ""
    header = f"[{cursor}] {page.title}" + (f" ({shown})" if shown else "")
    scroll = f"**viewing lines [{loc} - {end - 1}] of {len(lines) - 1}**"
    body = "\n".join(f"L{i}: {lines[i]}" for i in range(loc, end))
    return f"{header}\n{scroll}\n\n{body}"


@dataclass
class SearchResult:
    title: str
    url: str
    snippet: str = ""
    text: str | None = None  # the page's full text when the search API returned it


def search_page(query: str, results: list[SearchResult]) -> Page:
    """A result list: `* 【i†title†domain】` then the snippet, one block per result."""
    blocks, links = [], {}
    for i, result in enumerate(results):
        title = " ".join(result.title.replace("】", "〗").replace("†", "‡").split()) or result.url
        links[i] = result.url
        domain = domain_of(result.url)
        marker = f"【{i}†{title}†{domain}】" if domain else f"【{i}†{title}】"
        snippet = " ".join(result.snippet.replace("【", "〖").replace("】", "〗").split())
        blocks.append(f"* {marker}\n{snippet}" if snippet else f"* {marker}")
    text = "# Search Results\n\n" + "\n\n".join(blocks) if blocks else \
        f"No results found for `{query}`."
    return Page(url="", title=f"Search results for `{query}`", text=text, links=links,
                kind="search")


def find_page(page: Page, pattern: str, max_results: int = 50, shown_lines: int = 4) -> Page:
    """Case-insensitive matches of `pattern` in `page`'s lines (links read as their text)."""
    lines = [strip_links(line) for line in page.lines]
    needle, chunks, links, link_lines = pattern.lower(), [], {}, {}
    i = 0
    while i < len(lines) and len(chunks) < max_results:
        if needle not in lines[i].lower():
            i += 1
            continue
        n = len(chunks)
        chunks.append(f"# 【{n}†match at L{i}】\n" + "\n".join(lines[i:i + shown_lines]))
        links[n], link_lines[n] = page.url, i
        i += shown_lines
    text = "\n\n".join(chunks) if chunks else f"No `find` results for pattern: `{pattern}`"
    return Page(url=page.url, title=f"Find results for text: `{pattern}` in `{page.title}`",
                text=text, links=links, kind="find", source_url=page.url,
                source_title=page.title, link_lines=link_lines)
