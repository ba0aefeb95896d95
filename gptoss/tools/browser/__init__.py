"""The `browser` built-in tool: search / open / find over a page stack, citations as
url_citation annotations, and its backends (a local SQLite FTS5 corpus, Exa, You.com)."""
from gptoss.tools.browser.backends import (BACKENDS, Backend, BackendError, ExaBackend,
                                           LocalBackend, YouBackend, make_backend)
from gptoss.tools.browser.citations import CitedText, split_pending, url_citations
from gptoss.tools.browser.fetch import FetchError, Fetcher
from gptoss.tools.browser.index import LocalIndex, build_index
from gptoss.tools.browser.page import Page, SearchResult
from gptoss.tools.browser.tool import BrowserTool

__all__ = ["BACKENDS", "Backend", "BackendError", "BrowserTool", "CitedText", "ExaBackend",
           "FetchError", "Fetcher", "LocalBackend", "LocalIndex", "Page", "SearchResult",
           "YouBackend", "build_index", "make_backend", "split_pending", "url_citations"]
