"""Citations in the model's answer -> Responses `url_citation` annotations.

gpt-oss cites what it read as `【{cursor}†L{first}(-L{last})?】`, where cursor is a page on the
browser's stack. `url_citations(text, pages)` replaces each citation it can resolve by a short
Markdown link `([domain](url))` (a space before it unless the text already has one, as OpenAI's
reference server and its hosted web search write them) and returns one annotation per link:

    {"type": "url_citation", "start_index": s, "end_index": e, "url": url, "title": title}

`text[s:e]` is exactly the inserted `([domain](url))`. Indices count Python characters (code
points) of the returned text. A citation that resolves to nothing (unknown cursor, a search
page's lines holding no result) is removed: the client never sees raw `【…】` markers.
Which URL: a page's own URL; for find results the page searched; for search results the first
result listed in the cited lines.

`split_pending(text)` cuts an unfinished citation off the end of streamed text, so a stream can
hold it back until the next delta completes it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence
from urllib.parse import urlsplit

from gptoss.tools.browser.page import Page

CITATION = re.compile(r"【(\d+)†L(\d+)(?:-L(\d+))?】")
_PENDING = re.compile(r"【[^】]{0,40}$")


@dataclass
class CitedText:
    text: str
    annotations: list[dict[str, Any]] = field(default_factory=list)


def _target(match: re.Match, pages: Sequence[Page]) -> tuple[str, str] | None:
    cursor, first = int(match.group(1)), int(match.group(2))
    last = int(match.group(3)) if match.group(3) else first
    if cursor >= len(pages):
        return None
    return pages[cursor].cited(first, last)


def _label(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc or parts.path.rsplit("/", 1)[-1] or url


def url_citations(text: str, pages: Sequence[Page]) -> CitedText:
    """`text` with its citations resolved against the page stack `pages` (cursor i = pages[i])."""
    out: list[str] = []
    length, last_end, tail = 0, 0, ""  # tail: the last character written so far
    annotations = []
    for match in CITATION.finditer(text):
        before = text[last_end:match.start()]
        out.append(before)
        length, tail = length + len(before), before[-1:] or tail
        last_end = match.end()
        target = _target(match, pages)
        if target is None:
            continue
        url, title = target
        if tail and not tail.isspace():
            out.append(" ")
            length += 1
        link = f"([{_label(url)}]({url}))"
        tail = ")"
        annotations.append({"type": "url_citation", "start_index": length,
                            "end_index": length + len(link), "url": url, "title": title or url})
        out.append(link)
        length += len(link)
    out.append(text[last_end:])
    return CitedText(text="".join(out), annotations=annotations)


def split_pending(text: str) -> tuple[str, str]:
    """(ready, pending): `pending` is an unfinished `【…` at the end that may become a citation."""
    match = _PENDING.search(text)
    if match is None:
        return text, ""
    return text[:match.start()], text[match.start():]
