"""The response store: an embedded SQLite database behind `store` and `previous_response_id`.

Each row keeps one response object as answered (JSON) and the input items of its own turn only;
a follow-up turn rebuilds the conversation by walking the `previous_response_id` column back (one
recursive query), so storage grows linearly along a chain, and a DELETE removes a turn's content
from every conversation that continued from it (they keep the turns before it: its children are
linked to its parent).

The database is opened, checked (schema, `PRAGMA quick_check`) and written to once when the store
is built, so an unusable file is refused at startup (`StoreError`), not per request. Files are
created readable by their owner only (0600; SQLite gives the -wal/-shm files the same mode).
Thread-safe: one connection guarded by a lock (handlers call it through `asyncio.to_thread`).
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
COLUMNS = ("id", "created_at", "model", "previous_response_id", "response", "input")
SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    model TEXT NOT NULL,
    previous_response_id TEXT,
    response TEXT NOT NULL,   -- the response object (JSON)
    input TEXT NOT NULL       -- this turn's input items (JSON list); earlier turns have their rows
)
"""
CHAIN = """
WITH RECURSIVE chain(id, prev, response, input, depth) AS (
    SELECT id, previous_response_id, response, input, 0 FROM responses WHERE id = ?
    UNION ALL
    SELECT r.id, r.previous_response_id, r.response, r.input, chain.depth + 1
    FROM responses r JOIN chain ON r.id = chain.prev
)
SELECT response, input FROM chain ORDER BY depth DESC
"""
UNFINISHED = ("queued", "in_progress")
BUSY_TIMEOUT_S = 5.0


class StoreError(ValueError):
    """The database cannot be opened or written, or holds something that is not a response store."""


def default_db_path() -> Path:
    """`$GPTOSS_DATA_DIR/responses.sqlite3`, else `$XDG_DATA_HOME/gptoss/responses.sqlite3`,
    else `~/.local/share/gptoss/responses.sqlite3`."""
    if os.environ.get("GPTOSS_DATA_DIR"):
        base = Path(os.environ["GPTOSS_DATA_DIR"])
    else:
        home_data = os.path.join(os.path.expanduser("~"), ".local", "share")
        xdg = os.environ.get("XDG_DATA_HOME") or home_data
        base = Path(xdg) / "gptoss"
    return base / "responses.sqlite3"


@dataclass(frozen=True)
class StoredResponse:
    id: str
    response: dict[str, Any]
    input: list[dict[str, Any]]      # this turn's input items
    history: list[dict[str, Any]]    # the earlier turns still stored: their inputs and outputs

    @property
    def context(self) -> list[dict[str, Any]]:
        """The input items this response was generated from."""
        return self.history + self.input

    @property
    def conversation(self) -> list[dict[str, Any]]:
        """What a follow-up turn continues from: the context, then this response's output items."""
        return self.context + list(self.response.get("output", []))


def _create_private(path: Path) -> None:
    """Create the file (and its folder) for its owner only, before SQLite opens it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


class ResponseStore:
    """`put` / `get` / `delete` of responses by id. `path=":memory:"` keeps nothing on disk.
    Raises StoreError when the file cannot serve as a writable response store. A write waits up
    to `busy_timeout` seconds for a lock another process holds."""

    def __init__(self, path: str | Path, busy_timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        try:
            if self.path != ":memory:":
                _create_private(Path(self.path))
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=busy_timeout)
            self._open()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"response store {self.path}: {exc}") from None

    def _open(self) -> None:
        db = self._db
        if self.path != ":memory:":
            db.execute("PRAGMA journal_mode=WAL")
        problems = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError(f"the database is damaged: {'; '.join(problems[:3])}")
        db.execute(SCHEMA)
        columns = tuple(row[1] for row in db.execute("PRAGMA table_info(responses)"))
        if columns != COLUMNS:
            raise sqlite3.DatabaseError(
                f"its 'responses' table has columns {', '.join(columns)}, not those of a gptoss "
                f"response store (schema {SCHEMA_VERSION}: {', '.join(COLUMNS)}); move the file "
                "aside or pass another --db")
        # the startup write: a read-only file or a lock held by another process fails here
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._fail_unfinished()
        db.commit()

    def _fail_unfinished(self) -> None:
        """Background responses a previous server left running end as failed."""
        error = json.dumps({"code": "server_error",
                            "message": "the server stopped before this response finished"})
        self._db.execute(
            "UPDATE responses SET response = json_set(response, '$.status', 'failed', "
            "'$.error', json(?)) WHERE json_extract(response, '$.status') IN (?, ?)",
            (error, *UNFINISHED))

    def put(self, response: dict[str, Any], input_items: list[dict[str, Any]]) -> None:
        """Insert (or replace) a response with its turn's input items; `response` must carry
        `id`, `created_at` and `model`. Raises StoreError when the write fails."""
        row = (response["id"], int(response["created_at"]), response["model"],
               response.get("previous_response_id"), json.dumps(response), json.dumps(input_items))
        self._write("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?)", row)

    def _write(self, sql: str, args: tuple) -> int:
        """Run one statement and commit; the changed rows. StoreError when it fails."""
        with self._lock:
            try:
                cursor = self._db.execute(sql, args)
                self._db.commit()
                return cursor.rowcount
            except sqlite3.Error as exc:
                self._db.rollback()
                raise StoreError(f"response store {self.path}: {exc}") from None

    def set_status(self, response_id: str, status: str, only_from: tuple[str, ...]) -> bool:
        """Set a stored response's `status` if it is one of `only_from`; whether it was."""
        marks = ", ".join("?" for _ in only_from)
        return self._write(
            f"UPDATE responses SET response = json_set(response, '$.status', ?) WHERE id = ? "
            f"AND json_extract(response, '$.status') IN ({marks})",
            (status, response_id, *only_from)) > 0

    def get(self, response_id: str) -> StoredResponse | None:
        with self._lock:
            try:
                rows = self._db.execute(CHAIN, (response_id,)).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"response store {self.path}: {exc}") from None
        if not rows:
            return None
        history: list[dict[str, Any]] = []
        for response, items in rows[:-1]:
            history += json.loads(items) + json.loads(response).get("output", [])
        return StoredResponse(response_id, json.loads(rows[-1][0]), json.loads(rows[-1][1]), history)

    def delete(self, response_id: str) -> bool:
        """Remove a response; False when there was none with that id. The turns that continued
        from it are linked to its own previous response, so their conversations keep the turns
        before it and lose only its input and output."""
        with self._lock:
            try:
                self._db.execute("UPDATE responses SET previous_response_id = (SELECT "
                                 "previous_response_id FROM responses WHERE id = ?) "
                                 "WHERE previous_response_id = ?", (response_id, response_id))
                cursor = self._db.execute("DELETE FROM responses WHERE id = ?", (response_id,))
                self._db.commit()
            except sqlite3.Error as exc:
                self._db.rollback()
                raise StoreError(f"response store {self.path}: {exc}") from None
        return cursor.rowcount > 0

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
