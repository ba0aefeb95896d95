"""Documents (HTML, Markdown, plain text) -> the browser's plain text with `【id†text】` link markers.

The model was trained to read pages as plain text in which every link is written
`【{id}†{anchor text}】` (same site) or `【{id}†{anchor text}†{domain}】` (another site) and to open
a link by its id. `to_text(source, kind, url)` returns that text, the id -> absolute URL map and
the title. Only the standard library is used (html.parser), so the index builds offline.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

# the brackets and dagger are the markers' syntax: page text must not forge them
_RESERVED = str.maketrans({"【": "〖", "】": "〗", "†": "‡", "\u200b": None})
_SKIP_TAGS = {"script", "style", "noscript", "template", "svg", "math"}
_BLOCK_TAGS = {"p", "div", "section", "article", "header", "footer", "main", "nav", "aside",
               "blockquote", "pre", "table", "tr", "ul", "ol", "dl", "dt", "dd", "form",
               "figure", "figcaption", "hr", "br", "h1", "h2", "h3", "h4", "h5", "h6", "li"}
_PARAGRAPH_TAGS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "dl", "table", "pre",
                   "blockquote", "hr", "figure"}  # set off by a blank line
_ITEM_TAGS = {"li", "dt", "dd", "tr", "br"}  # the next item starts its own line
_MD_LINK = re.compile(r"(!?)\[([^\]\n]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_MD_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


@dataclass
class Document:
    """A page as the browser shows it: `text` with link markers, `links` id -> absolute URL."""
    title: str
    text: str
    links: dict[int, str] = field(default_factory=dict)


def domain_of(url: str) -> str:
    """`https://docs.python.org/3/x` -> `docs.python.org`; a file URL (a local corpus) -> ""."""
    try:
        return urlsplit(url).netloc
    except ValueError:
        return ""


class _Links:
    """Numbers each distinct absolute URL once and writes its marker."""

    def __init__(self, base_url: str):
        self.base_url, self.base_domain = base_url, domain_of(base_url)
        self.by_url: dict[str, int] = {}

    def marker(self, href: str, text: str) -> str | None:
        href = href.strip()
        text = " ".join(text.translate(_RESERVED).split())
        if not text or not href or href.startswith(("#", "mailto:", "javascript:", "data:")):
            return None
        try:
            url = urljoin(self.base_url, href) if self.base_url else href
            if urlsplit(url).scheme not in ("http", "https", "file"):
                return None
        except ValueError:  # e.g. "http://[bad": not a link anyone can open
            return None
        link_id = self.by_url.setdefault(url, len(self.by_url))
        domain = domain_of(url)
        if domain and domain != self.base_domain:
            return f"【{link_id}†{text}†{domain}】"
        return f"【{link_id}†{text}】"

    def table(self) -> dict[int, str]:
        return {i: url for url, i in self.by_url.items()}


class _HtmlText(HTMLParser):
    """Collects visible text; block tags start lines, `<a href>` becomes a link marker."""

    def __init__(self, links: _Links):
        super().__init__(convert_charrefs=True)
        self.links, self.out, self.skip, self.in_head = links, [], 0, False
        self.anchor: tuple[str, list[str]] | None = None  # (href, text pieces) inside <a>
        self.title: list[str] | None = None
        self.titles: list[str] = []
        self.h1: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("head", "body"):  # <body> also ends a <head> left open
            self.in_head = tag == "head"
        elif tag in _SKIP_TAGS:
            self.skip += 1
        elif tag == "title":
            self.title = []
        elif tag == "a" and attrs.get("href") and self.anchor is None:
            self.anchor = (attrs["href"], [])
        elif tag == "img" and not self.skip:
            alt = (attrs.get("alt") or attrs.get("title") or "").strip()
            self._emit(f"[Image: {alt}]" if alt else "[Image]")
        elif tag in ("td", "th"):
            self._emit(" ")
        elif tag in _BLOCK_TAGS:
            self._newline("* " if tag == "li" else "# " if tag in ("h1", "h2", "h3") else "",
                          blank=tag in _PARAGRAPH_TAGS)

    def handle_endtag(self, tag):
        if tag == "head":
            self.in_head = False
        elif tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
        elif tag == "title" and self.title is not None:
            self.titles.append(" ".join("".join(self.title).split()))
            self.title = None
        elif tag == "a" and self.anchor is not None:
            href, pieces = self.anchor
            self.anchor = None
            text = "".join(pieces)
            self.out.append(self.links.marker(href, text) or " ".join(text.split()))
        elif tag in _BLOCK_TAGS and tag not in _ITEM_TAGS:
            self._newline("", blank=tag in _PARAGRAPH_TAGS)

    def handle_data(self, data):
        if self.title is not None:
            self.title.append(data)
        elif not self.skip and not self.in_head:
            self._emit(data)

    def _emit(self, text: str):
        text = text.translate(_RESERVED)
        (self.anchor[1] if self.anchor is not None else self.out).append(text)

    def _newline(self, prefix: str, blank: bool = False):
        self.out.append(("\n\n" if blank else "\n") + prefix)


def _tidy(text: str) -> str:
    """Spaces merged within lines, at most one blank line in a row, no blank lines at the ends."""
    lines = [" ".join(line.split()) for line in text.split("\n")]
    kept: list[str] = []
    for line in lines:
        if line in ("", "*", "#") and (not kept or kept[-1] == ""):
            continue
        kept.append("" if line in ("*", "#") else line)
    return "\n".join(kept).strip("\n")


def html_to_text(source: str, url: str) -> Document:
    links = _Links(url)
    parser = _HtmlText(links)
    parser.feed(source)
    parser.close()
    text = _tidy("".join(parser.out))
    title = next((t for t in parser.titles if t), "")
    if not title:
        heading = next((ln[2:] for ln in text.split("\n") if ln.startswith("# ")), "")
        title = re.sub(r"【\d+†([^†】]*)(?:†[^】]*)?】", r"\1", heading)
    return Document(title=title, text=text, links=links.table())


def markdown_to_text(source: str, url: str) -> Document:
    """Markdown stays as written but for links (`[t](u)` -> a marker) and images (`![a](u)` ->
    `[Image: a]`)."""
    links = _Links(url)

    def replace(match: re.Match) -> str:
        bang, text, href = match.groups()
        if bang:
            return f"[Image: {text}]" if text else "[Image]"
        return links.marker(href, text) or text

    text = _MD_LINK.sub(replace, source.translate(_RESERVED))
    heading = _MD_HEADING.search(source)
    title = _MD_LINK.sub(lambda m: m.group(2), heading.group(1)) if heading else ""
    return Document(title=title.translate(_RESERVED), text=text.strip("\n"),
                    links=links.table())


def plain_to_text(source: str, url: str) -> Document:
    return Document(title="", text=source.translate(_RESERVED).strip("\n"))


CONVERTERS = {"html": html_to_text, "markdown": markdown_to_text, "text": plain_to_text}


def to_text(source: str, kind: str, url: str) -> Document:
    """`kind` is "html", "markdown" or "text"; `url` resolves relative links."""
    if kind not in CONVERTERS:
        raise ValueError(f"unknown document kind {kind!r} (expected one of {sorted(CONVERTERS)})")
    return CONVERTERS[kind](source, url)
