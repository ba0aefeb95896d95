"""The local corpus: text, Markdown and HTML files in one SQLite FTS5 index, ranked by BM25.

    build_index(DIR, out=None, base_url=None)  -> IndexReport   (`gptoss index DIR`)
    LocalIndex.open(DIR or FILE).search(query, topn) -> [Hit]; .document(url) -> Document | None

Tables: `docs(id, url, path, title, text, links)` holds each page as the browser shows it (link
markers in `text`, `links` a JSON id -> URL map); `fts(title, body)` (rowid = docs.id) holds the
same text without link syntax. Ranking is SQLite's own `bm25(fts, 2.0, 1.0)`: a title term
counts twice. A query is split into words and any word may match (`"a" OR "b"`), so the model's
free text never meets FTS5 query syntax.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from gptoss.tools.browser.markup import Document, to_text
from gptoss.tools.browser.page import LINK_MARKER

SCHEMA_VERSION = 1
DEFAULT_INDEX_NAME = ".gptoss-index.sqlite"
KINDS = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown",
         ".html": "html", ".htm": "html"}
COLUMN_WEIGHTS = (2.0, 1.0)  # title, body
MAX_FILE_BYTES = 20 * 1024 * 1024
_WORD = re.compile(r"\w+", re.UNICODE)


class CorpusIndexError(ValueError):
    """A missing, unreadable or foreign index file (a user error: printed as one line)."""


@dataclass
class Hit:
    url: str
    title: str
    snippet: str
    score: float  # bm25(): lower is better (SQLite's sign)


@dataclass
class IndexReport:
    path: Path
    documents: int
    skipped: list[str] = field(default_factory=list)  # "path (reason)"


def match_expression(query: str) -> str | None:
    """Free text -> an FTS5 query where any word may match; None when it has no words."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))
    return " OR ".join(f'"{w}"' for w in words) or None


def _document_url(path: Path, root: Path, base_url: str | None) -> str:
    if base_url is None:
        return path.resolve().as_uri()
    relative = path.relative_to(root).as_posix()
    return base_url.rstrip("/") + "/" + quote(relative)


def _corpus_files(root: Path, out: Path):
    """Files under root with a known extension, hidden names and the index itself left out."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            if name.startswith(".") or path.resolve() == out.resolve():
                continue
            if path.suffix.lower() in KINDS:
                yield path


def _create_schema(db: sqlite3.Connection) -> None:
    db.executescript("""
        CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
        CREATE TABLE docs(id INTEGER PRIMARY KEY, url TEXT UNIQUE, path TEXT, title TEXT,
                          text TEXT, links TEXT);
        CREATE VIRTUAL TABLE fts USING fts5(title, body);
    """)
    db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))


def _add_document(db: sqlite3.Connection, path: Path, root: Path, url: str) -> None:
    source = path.read_bytes().decode("utf-8", errors="replace")
    doc = to_text(source, KINDS[path.suffix.lower()], url)
    title = doc.title or path.stem.replace("_", " ").replace("-", " ")
    cursor = db.execute("INSERT INTO docs(url, path, title, text, links) VALUES (?,?,?,?,?)",
                        (url, path.relative_to(root).as_posix(), title, doc.text,
                         json.dumps({str(k): v for k, v in doc.links.items()})))
    body = LINK_MARKER.sub(lambda m: m.group(2), doc.text)
    db.execute("INSERT INTO fts(rowid, title, body) VALUES (?,?,?)",
               (cursor.lastrowid, title, body))


def build_index(root: str | os.PathLike, out: str | os.PathLike | None = None,
                base_url: str | None = None) -> IndexReport:
    """Index every .txt/.md/.html file under `root` into `out` (default ROOT/.gptoss-index.sqlite),
    replacing it atomically. Documents get `file://` URLs, or `base_url` + their relative path."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusIndexError(f"{root} is not a directory")
    out = Path(out) if out is not None else root / DEFAULT_INDEX_NAME
    partial = out.with_name(out.name + ".partial")
    partial.unlink(missing_ok=True)
    report = IndexReport(path=out, documents=0)
    db = sqlite3.connect(partial)
    try:
        _create_schema(db)
        for path in _corpus_files(root, out):
            if path.stat().st_size > MAX_FILE_BYTES:
                report.skipped.append(f"{path} (larger than {MAX_FILE_BYTES} bytes)")
                continue
            _add_document(db, path, root, _document_url(path, root, base_url))
            report.documents += 1
        db.execute("INSERT INTO fts(fts) VALUES ('optimize')")
        db.commit()
    finally:
        db.close()
    os.replace(partial, out)
    return report


class LocalIndex:
    """A built index, opened read-only; safe to share between threads."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise CorpusIndexError(f"no index at {self.path} (build one with `gptoss index DIR`)")
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                       check_same_thread=False)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise CorpusIndexError(f"{self.path} is not a gptoss index: {exc}") from None
        if row is None or row[0] != str(SCHEMA_VERSION):
            raise CorpusIndexError(f"{self.path} has index schema {row and row[0]}, expected "
                              f"{SCHEMA_VERSION}; rebuild it with `gptoss index`")

    @classmethod
    def open(cls, path: str | os.PathLike) -> LocalIndex:
        """A directory means the index `gptoss index DIR` wrote inside it."""
        path = Path(path)
        return cls(path / DEFAULT_INDEX_NAME if path.is_dir() else path)

    def search(self, query: str, topn: int) -> list[Hit]:
        expression = match_expression(query)
        if expression is None:
            return []
        weights = ", ".join(str(w) for w in COLUMN_WEIGHTS)
        sql = (f"SELECT docs.url, docs.title, snippet(fts, 1, '', '', '…', 24), "
               f"bm25(fts, {weights}) AS score FROM fts JOIN docs ON docs.id = fts.rowid "
               f"WHERE fts MATCH ? ORDER BY score, docs.id LIMIT ?")
        with self._lock:
            rows = self._db.execute(sql, (expression, int(topn))).fetchall()
        return [Hit(url=u, title=t, snippet=s, score=score) for u, t, s, score in rows]

    def document(self, url: str) -> Document | None:
        with self._lock:
            row = self._db.execute("SELECT title, text, links FROM docs WHERE url = ?",
                                   (url,)).fetchone()
        if row is None:
            return None
        title, text, links = row
        return Document(title=title, text=text, links={int(k): v for k, v in
                                                       json.loads(links).items()})

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM docs").fetchone()[0]

    def close(self) -> None:
        self._db.close()
