"""Where the browser's searches and pages come from.

    LocalBackend   the SQLite FTS5 corpus built by `gptoss index` (offline; the default)
    ExaBackend     POST https://api.exa.ai/search, key from EXA_API_KEY
    YouBackend     GET https://api.ydc-index.io/v1/search, key from YDC_API_KEY

`search(query, topn) -> [SearchResult]`, `fetch(url) -> Page`; both raise BackendError (shown to
the model). Opening a URL that is not in the local corpus, and every page a web search found,
goes through one address-checked `Fetcher`. A missing key is a ToolError when the backend is
built, before any call.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Protocol

from gptoss.tools.base import ToolError
from gptoss.tools.browser.fetch import FetchError, Fetcher
from gptoss.tools.browser.index import LocalIndex
from gptoss.tools.browser.markup import Document
from gptoss.tools.browser.page import Page, SearchResult


class BackendError(RuntimeError):
    """A search or fetch that failed; the message is shown to the model."""


class Backend(Protocol):
    source: str

    def search(self, query: str, topn: int) -> list[SearchResult]: ...

    def fetch(self, url: str) -> Page: ...

    def close(self) -> None: ...


def document_page(url: str, document: Document) -> Page:
    return Page(url=url, title=document.title or url, text=document.text, links=document.links)


class _WebFetch:
    """fetch() through the address-checked Fetcher (None: this backend opens no URLs)."""
    fetcher: Fetcher | None

    def fetch(self, url: str) -> Page:
        if self.fetcher is None:
            raise BackendError(f"`{url}` is not in the local corpus and fetching URLs is off")
        try:
            fetched = self.fetcher.fetch(url)
        except FetchError as exc:
            raise BackendError(str(exc)) from None
        return document_page(fetched.url, fetched.document)

    def close(self) -> None:
        pass


class LocalBackend(_WebFetch):
    source = "web"  # what the model was trained with; the corpus stands in for the web

    def __init__(self, index: LocalIndex, fetcher: Fetcher | None = None):
        self.index, self.fetcher = index, fetcher

    def search(self, query: str, topn: int) -> list[SearchResult]:
        return [SearchResult(title=h.title, url=h.url, snippet=h.snippet)
                for h in self.index.search(query, topn)]

    def fetch(self, url: str) -> Page:
        document = self.index.document(url)
        if document is not None:
            return document_page(url, document)
        return super().fetch(url)

    def close(self) -> None:
        self.index.close()


def _api_key(variable: str, service: str) -> str:
    key = os.environ.get(variable, "").strip()
    if not key:
        raise ToolError(f"the {service} browser backend needs an API key: set {variable} "
                        f"(or use the local backend, built with `gptoss index DIR`)")
    return key


def request_json(method: str, url: str, headers: dict[str, str], body: Any = None,
                 timeout: float = 20.0, service: str = "search API") -> Any:
    """One JSON request to a search API; any failure is a BackendError naming the service."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        **headers, "Accept": "application/json", **({"Content-Type": "application/json"}
                                                      if data is not None else {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode("utf-8", errors="replace").strip()
        raise BackendError(f"{service} answered HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise BackendError(f"{service} could not be reached: {getattr(exc, 'reason', exc)}") \
            from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BackendError(f"{service} answered something that is not JSON: {exc}") from None


def _results(data: Any, path: tuple[str, ...], service: str) -> list[dict]:
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    if data is None:
        return []
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise BackendError(f"{service} answered an unexpected shape at {'.'.join(path)}")
    return data


class ExaBackend(_WebFetch):
    source = "web"
    base_url = "https://api.exa.ai"

    def __init__(self, fetcher: Fetcher | None = None, *, base_url: str | None = None,
                 text_chars: int = 20_000, timeout: float = 20.0):
        self.key = _api_key("EXA_API_KEY", "Exa")
        self.fetcher, self.text_chars, self.timeout = fetcher, text_chars, timeout
        self.base_url = (base_url or self.base_url).rstrip("/")

    def search(self, query: str, topn: int) -> list[SearchResult]:
        body = {"query": query, "numResults": topn,
                "contents": {"text": {"maxCharacters": self.text_chars}}}
        data = request_json("POST", f"{self.base_url}/search", {"x-api-key": self.key}, body,
                            self.timeout, service="Exa")
        return [SearchResult(title=_str(r, "title"), url=_str(r, "url"),
                             snippet=_snippet(_str(r, "summary") or _str(r, "text")),
                             text=_str(r, "text") or None)
                for r in _results(data, ("results",), "Exa") if _str(r, "url")]


class YouBackend(_WebFetch):
    source = "web"
    base_url = "https://api.ydc-index.io"

    def __init__(self, fetcher: Fetcher | None = None, *, base_url: str | None = None,
                 timeout: float = 20.0):
        self.key = _api_key("YDC_API_KEY", "You.com")
        self.fetcher, self.timeout = fetcher, timeout
        self.base_url = (base_url or self.base_url).rstrip("/")

    def search(self, query: str, topn: int) -> list[SearchResult]:
        url = f"{self.base_url}/v1/search?" + urllib.parse.urlencode({"query": query,
                                                                     "count": topn})
        data = request_json("GET", url, {"X-API-Key": self.key}, None, self.timeout,
                            service="You.com")
        hits = _results(data, ("results", "web"), "You.com") + \
            _results(data, ("results", "news"), "You.com")
        return [SearchResult(title=_str(h, "title"), url=_str(h, "url"),
                             snippet=_snippet(" ".join(s for s in h.get("snippets") or []
                                                       if isinstance(s, str))
                                              or _str(h, "description")))
                for h in hits if _str(h, "url")][:topn]


def _str(record: dict, key: str) -> str:
    """A string field of an API record ("" when missing or not a string)."""
    value = record.get(key)
    return value if isinstance(value, str) else ""


def _snippet(text: str | None, limit: int = 300) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"


BACKENDS = ("local", "exa", "you")


def make_backend(kind: str = "local", *, index: str | os.PathLike | None = None,
                 fetcher: Fetcher | None = None) -> Backend:
    """The backend named by `kind` ("local" needs `index`: a directory or index file)."""
    if kind == "local":
        if index is None:
            raise ToolError("the local browser backend needs an index: build one with "
                            "`gptoss index DIR` and pass DIR")
        try:
            return LocalBackend(LocalIndex.open(index), fetcher)
        except ValueError as exc:
            raise ToolError(str(exc)) from None
    if kind == "exa":
        return ExaBackend(fetcher)
    if kind == "you":
        return YouBackend(fetcher)
    raise ToolError(f"unknown browser backend {kind!r} (expected one of {', '.join(BACKENDS)})")
