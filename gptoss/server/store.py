"""The response store: an embedded SQLite database behind `store` and `previous_response_id`.

Each stored response keeps the response object as answered (JSON) and its context: the input
items the model saw (the previous responses' context and output, then this request's input),
so a follow-up turn rebuilds the whole conversation from one row. Thread-safe: one connection,
guarded by a lock (handlers call it through `asyncio.to_thread`).
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    model TEXT NOT NULL,
    previous_response_id TEXT,
    response TEXT NOT NULL,   -- the response object (JSON)
    context TEXT NOT NULL     -- the input items this response was generated from (JSON list)
)
"""


class StoreError(ValueError):
    """The database file cannot be opened or holds something that is not a response store."""


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
    context: list[dict[str, Any]]

    @property
    def conversation(self) -> list[dict[str, Any]]:
        """What a follow-up turn continues from: the context, then this response's output items."""
        return self.context + list(self.response.get("output", []))


class ResponseStore:
    """`put` / `get` / `delete` of responses by id. `path=":memory:"` keeps nothing on disk."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(SCHEMA)
            self._db.commit()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"response store {self.path}: {exc}") from None

    def put(self, response: dict[str, Any], context: list[dict[str, Any]]) -> None:
        """Insert (or replace) a response; `response` must carry `id`, `created_at` and `model`."""
        row = (response["id"], int(response["created_at"]), response["model"],
               response.get("previous_response_id"), json.dumps(response), json.dumps(context))
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?)", row)
            self._db.commit()

    def get(self, response_id: str) -> StoredResponse | None:
        with self._lock:
            row = self._db.execute("SELECT response, context FROM responses WHERE id = ?",
                                   (response_id,)).fetchone()
        if row is None:
            return None
        return StoredResponse(response_id, json.loads(row[0]), json.loads(row[1]))

    def delete(self, response_id: str) -> bool:
        """Remove a response; False when there was none with that id."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM responses WHERE id = ?", (response_id,))
            self._db.commit()
        return cursor.rowcount > 0

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
