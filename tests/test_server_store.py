"""The SQLite response store: round trips, persistence across connections, concurrency."""
from __future__ import annotations

import sqlite3
import threading

import pytest

from gptoss.server.store import ResponseStore, StoreError, default_db_path


def _response(i: int, previous: str | None = None) -> dict:
    return {"id": f"resp_{i}", "created_at": 100 + i, "model": "m", "previous_response_id": previous,
            "output": [{"type": "message", "id": f"msg_{i}", "content": [{"type": "output_text", "text": "é🙂"}]}]}


def test_round_trip_and_conversation(tmp_path):
    store = ResponseStore(tmp_path / "r.sqlite3")
    context = [{"type": "message", "role": "user", "content": "hi"}]
    store.put(_response(1), context)
    got = store.get("resp_1")
    assert got.response == _response(1) and got.context == context
    assert got.conversation == context + _response(1)["output"]
    assert store.get("resp_2") is None
    store.close()
    # an independent reader (sqlite3 itself) sees the row, and a new store reads it back
    raw = sqlite3.connect(tmp_path / "r.sqlite3").execute("SELECT id, model FROM responses").fetchall()
    assert raw == [("resp_1", "m")]
    again = ResponseStore(tmp_path / "r.sqlite3")
    assert again.get("resp_1").response["output"][0]["content"][0]["text"] == "é🙂"
    assert again.delete("resp_1") and not again.delete("resp_1")
    assert again.get("resp_1") is None and len(again) == 0


def test_concurrent_writers(tmp_path):
    store = ResponseStore(tmp_path / "c.sqlite3")

    def write(base):
        for i in range(base, base + 25):
            store.put(_response(i), [])

    threads = [threading.Thread(target=write, args=(k * 100,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store) == 100


def test_memory_store_and_errors(tmp_path):
    store = ResponseStore(":memory:")
    store.put(_response(3, previous="resp_2"), [])
    assert store.get("resp_3").response["previous_response_id"] == "resp_2"
    bad = tmp_path / "not-a-db"
    bad.write_bytes(b"garbage" * 1000)
    with pytest.raises(StoreError, match="not-a-db"):
        ResponseStore(bad)


def test_default_path_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GPTOSS_DATA_DIR", str(tmp_path))
    assert default_db_path() == tmp_path / "responses.sqlite3"
    monkeypatch.delenv("GPTOSS_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_db_path() == tmp_path / "xdg" / "gptoss" / "responses.sqlite3"
