"""Fault injection and bad input: nothing lost, nothing orphaned.

Lone surrogates anywhere in a request, a client leaving at every stage of a stream (afterwards
/metrics shows 0 running and 0 KV blocks), stored responses written before their terminal event,
failed store writes (a lock held by another connection), unusable databases refused at open
(truncated, corrupt, wrong schema, locked, read-only), oversized bodies (413 at once), a server
killed with SIGKILL during stored streaming and restarted (every acknowledged response there,
`PRAGMA integrity_check` ok). Oracles: sqlite3 itself, the OS (file modes, signals), raw sockets
and the official `openai` client.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest

from gptoss.server.app import create_app
from gptoss.server.context import ServerOptions
from gptoss.server.store import ResponseStore, StoreError
from gptoss.server.testing import LiveServer, StubEngine, free_port, healthy

from test_server_load import gauges, wait_for

WORDS = " ".join(f"word{k}" for k in range(150))


def reply(prompt_text: str) -> str:
    """A reasoning part then a long answer (about 450 tokens, 1 s at 2 ms a token)."""
    return (f"<|channel|>analysis<|message|>Let me think about it.<|end|><|start|>assistant"
            f"<|channel|>final<|message|>{WORDS}<|return|>")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    engine = StubEngine(reply, delay=0.002)
    db = tmp_path_factory.mktemp("faults") / "r.sqlite3"
    app = create_app(engine, ServerOptions(model_names=("tiny",), db_path=db,
                                           max_request_bytes=1 << 20))
    with LiveServer(app) as live:
        yield live, engine, app.state.ctx, db


def post(base_url: str, path: str, body: bytes, timeout: float = 30) -> tuple[int, dict]:
    request = urllib.request.Request(base_url + path, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def idle(base_url: str, timeout: float = 10) -> bool:
    """No generation left: 0 running requests and 0 KV blocks used (as /metrics says)."""
    def check():
        g = gauges(base_url)
        return g["gptoss_requests_running"] == 0 and g["gptoss_kv_cache_blocks_used"] == 0
    return wait_for(check, timeout=timeout)


# ---- lone surrogates ------------------------------------------------------------------------------
SURROGATE = "\\ud800"  # as JSON text: json.loads gives a lone surrogate, not valid Unicode
SURROGATE_CASES = [
    ("/v1/responses", f'{{"model":"tiny","input":"hi","metadata":{{"k":"{SURROGATE}"}}}}', "metadata.k"),
    ("/v1/responses", f'{{"model":"tiny","input":"hi","stream":true,"metadata":{{"k":"{SURROGATE}"}}}}',
     "metadata.k"),
    ("/v1/responses", f'{{"model":"tiny","input":[{{"role":"user","content":"a{SURROGATE}"}}]}}',
     "input[0].content"),
    ("/v1/responses", f'{{"model":"tiny","input":"hi","instructions":"{SURROGATE}"}}', "instructions"),
    ("/v1/chat/completions", f'{{"model":"tiny","messages":[{{"role":"user","content":"{SURROGATE}"}}]}}',
     "messages[0].content"),
    ("/v1/chat/completions", f'{{"model":"tiny","stream":true,"messages":[{{"role":"user","content":"x"}}],'
                             f'"tools":[{{"type":"function","function":{{"name":"f","description":"{SURROGATE}"}}}}]}}',
     "tools[0].function.description"),
    ("/v1/chat/completions", f'{{"model":"tiny","messages":[{{"role":"user","content":"x"}}],'
                             f'"stop":["{SURROGATE}"]}}', "stop[0]"),
    ("/v1/completions", f'{{"model":"tiny","prompt":"{SURROGATE}"}}', "prompt"),
    ("/v1/responses", f'{{"model":"tiny","input":"hi","metadata":{{"{SURROGATE}":"v"}}}}', None),
    ("/tokenize", f'{{"prompt":"{SURROGATE}"}}', "prompt"),
]


@pytest.mark.parametrize("path,body,param", SURROGATE_CASES)
def test_lone_surrogates_are_a_400_before_any_generation(served, path, body, param):
    live, engine, _, _ = served
    submitted = len(engine.submitted)
    status, payload = post(live.base_url, path, body.encode())
    assert status == 400, payload
    assert "surrogate" in payload["error"]["message"]
    if param is not None:
        assert payload["error"]["param"] == param
    assert len(engine.submitted) == submitted and idle(live.base_url)


# ---- disconnects at every stage -------------------------------------------------------------------
STREAMS = {
    "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "go"}]}),
    "responses": ("/v1/responses", {"input": "go"}),
    "completions": ("/v1/completions", {"prompt": "go", "max_tokens": 600}),
}
STAGES = {  # bytes of the response to read before the client goes away
    "request sent": 0, "headers": 1, "first event": 300, "mid stream": 3000, "near the end": 40000,
}


def _request_bytes(path: str, body: dict) -> bytes:
    data = json.dumps({"model": "tiny", "stream": True, **body}).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    return head + data


@pytest.mark.parametrize("api", list(STREAMS))
@pytest.mark.parametrize("stage", list(STAGES))
def test_client_leaving_at_any_stage_orphans_nothing(served, api, stage):
    live, engine, _, _ = served
    path, body = STREAMS[api]
    submitted = len(engine.submitted)
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(_request_bytes(path, body))
        read = 0
        while read < STAGES[stage]:
            chunk = sock.recv(4096)
            if not chunk:
                break
            read += len(chunk)
    wait_for(lambda: len(engine.submitted) > submitted, timeout=2)  # (it may never start)
    assert wait_for(lambda: not engine.active, timeout=10), engine.active
    assert idle(live.base_url), gauges(live.base_url)


def test_non_streamed_client_leaving_orphans_nothing(served):
    live, engine, _, _ = served
    for path, body in STREAMS.values():
        data = json.dumps({"model": "tiny", **body}).encode()
        with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
            time.sleep(0.05)
        assert idle(live.base_url)


# ---- stored responses -----------------------------------------------------------------------------
def test_a_stored_stream_is_in_the_database_when_its_terminal_event_arrives(served, monkeypatch):
    live, _, ctx, db = served
    put = ctx.store.put

    def slow_put(*args):  # a slow disk: the write takes a while
        time.sleep(0.3)
        put(*args)

    monkeypatch.setattr(ctx.store, "put", slow_put)
    client = openai.OpenAI(base_url=live.base_url + "/v1", api_key="x", max_retries=0)
    with client.responses.create(model="tiny", input="hi", stream=True) as stream:
        for event in stream:
            if event.type == "response.completed":
                # read by another connection at once; then the client leaves
                row = sqlite3.connect(db).execute("SELECT response FROM responses WHERE id = ?",
                                                  (event.response.id,)).fetchone()
                assert row is not None and json.loads(row[0])["status"] == "completed"
                break


def test_a_failed_store_write_still_answers_the_generation(served):
    live, _, ctx, db = served
    client = openai.OpenAI(base_url=live.base_url + "/v1", api_key="x", max_retries=0)
    before = gauges(live.base_url)["gptoss_store_errors_total"]
    original = ctx.store
    ctx.store = ResponseStore(db, busy_timeout=0.2)
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
    try:
        r = client.responses.create(model="tiny", input="hi")
        assert r.status == "completed" and r.output[-1].content[0].text == WORDS
        assert r.store is False
        events = list(client.responses.create(model="tiny", input="hi", stream=True))
        assert [e.type for e in events][-1] == "response.completed"
        assert events[-1].response.store is False and "error" not in [e.type for e in events]
    finally:
        locker.execute("ROLLBACK")
        locker.close()
        ctx.store.close()
        ctx.store = original
    assert gauges(live.base_url)["gptoss_store_errors_total"] == before + 2
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)


def _rows(db) -> list[str]:
    with sqlite3.connect(db) as con:
        return [" ".join(map(str, row)) for row in con.execute("SELECT * FROM responses")]


def test_delete_leaves_no_copy_and_storage_is_linear(served):
    live, _, _, db = served
    client = openai.OpenAI(base_url=live.base_url + "/v1", api_key="x", max_retries=0)
    ids, previous = [], None
    for k in range(6):
        r = client.responses.create(model="tiny", input=f"secret-{k}", previous_response_id=previous,
                                    max_output_tokens=8)
        ids.append(r.id)
        previous = r.id
    sizes = [len(row) for row in _rows(db) if any(i in row.split()[0] for i in ids)]
    assert max(sizes) < 2 * min(sizes)  # each row holds its own turn, not the whole chain
    follow = client.responses.create(model="tiny", input="again", previous_response_id=ids[-1],
                                     max_output_tokens=4)
    assert follow.usage.input_tokens > 6 * 5  # the whole chain was in the prompt
    client.responses.delete(ids[2])
    assert not any("secret-2" in row for row in _rows(db))
    items = client.responses.input_items.list(ids[-1], order="asc", limit=100)
    texts = [part.text for item in items.data if item.type == "message" for part in item.content]
    assert "secret-1" in texts and "secret-3" in texts and "secret-2" not in texts


# ---- unusable databases, refused at open ----------------------------------------------------------
def _valid_db(path) -> None:
    store = ResponseStore(path)
    for k in range(200):
        store.put({"id": f"resp_{k}", "created_at": k, "model": "m", "output": []},
                  [{"type": "message", "role": "user", "content": "x" * 500}])
    store.close()


def _unwritable(path) -> bool:
    """Make `path` unwritable even for root (chattr +i) where possible; whether it worked."""
    os.chmod(path, 0o444)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    try:
        with open(path, "ab"):
            return False
    except OSError:
        return True


def test_unusable_databases_are_refused_at_open(tmp_path):
    truncated = tmp_path / "truncated.sqlite3"
    _valid_db(truncated)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"truncated.sqlite3{suffix}").unlink(missing_ok=True)
    with open(truncated, "r+b") as f:
        f.truncate(os.path.getsize(truncated) // 2)
    corrupt = tmp_path / "corrupt.sqlite3"
    corrupt.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    wrong = tmp_path / "wrong.sqlite3"
    sqlite3.connect(wrong).execute("CREATE TABLE responses (id TEXT, body TEXT)").connection.commit()
    for path, words in ((truncated, "damaged|malformed"), (corrupt, "not a database|malformed"),
                        (wrong, "columns id, body")):
        with pytest.raises(StoreError, match=words):
            ResponseStore(path)
    locked = tmp_path / "locked.sqlite3"
    ResponseStore(locked).close()
    holder = sqlite3.connect(locked, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="locked"):
            ResponseStore(locked, busy_timeout=0.1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_read_only_database_is_refused_at_open(tmp_path):
    path = tmp_path / "ro.sqlite3"
    ResponseStore(path).close()
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"ro.sqlite3{suffix}").unlink(missing_ok=True)
    if not _unwritable(path):
        pytest.skip("cannot make a file read-only here")
    try:
        with pytest.raises(StoreError, match="readonly|read-only|unable to open"):
            ResponseStore(path)
    finally:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


def test_gptoss_serve_refuses_a_bad_database_before_loading_the_model(tmp_path):
    bad = tmp_path / "bad.sqlite3"
    bad.write_bytes(b"garbage" * 100)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "gptoss.cli", "serve", "--model", str(tmp_path / "none"),
                           "--db", str(bad)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "bad.sqlite3" in done.stderr and "not a database" in done.stderr
    assert "Traceback" not in done.stderr and time.monotonic() - started < 60


def test_database_files_are_private(tmp_path):
    store = ResponseStore(tmp_path / "new" / "r.sqlite3")
    store.put({"id": "resp_1", "created_at": 1, "model": "m", "output": []}, [])
    for name in ("r.sqlite3", "r.sqlite3-wal"):
        assert stat.S_IMODE(os.stat(tmp_path / "new" / name).st_mode) == 0o600, name
    store.close()


# ---- oversized bodies -----------------------------------------------------------------------------
def _status_of(sock: socket.socket) -> int:
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(1024)
        if not chunk:
            break
        head += chunk
    return int(head.split(b" ")[1])


def test_oversized_bodies_get_413_at_once_and_health_stays_quick(served):
    live, _, _, _ = served  # limit: 1 MiB
    socks = []
    try:
        for _ in range(4):  # four 20 MB bodies announced, only their first bytes sent
            sock = socket.create_connection(("127.0.0.1", live.port), timeout=5)
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                         b"application/json\r\nContent-Length: 20000000\r\n\r\n" + b"{" * 65536)
            socks.append(sock)
        started = time.monotonic()
        assert [_status_of(s) for s in socks] == [413] * 4
        with urllib.request.urlopen(live.base_url + "/health", timeout=5) as response:
            assert response.status == 200
        assert time.monotonic() - started < 2.0
    finally:
        for s in socks:
            s.close()
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:  # chunked
        sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        try:
            for _ in range(40):
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        except OSError:
            pass  # the server answered and closed before the body ended
        assert _status_of(sock) == 413
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x" * 2_000_000}]})
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        try:
            sock.sendall(_request_bytes("/v1/chat/completions", json.loads(body))[:4096])
        except OSError:
            pass
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_too_large"


# ---- SIGKILL during stored streaming, then a restart ----------------------------------------------
def _start_stub_server(db, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "gptoss.server.testing", "--port", str(port),
                             "--db", str(db), "--delay", "0.002", "--words", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    assert wait_for(lambda: healthy(url, timeout=1), timeout=60), proc.stdout.read1().decode()
    return proc


def test_sigkill_during_stored_streaming_loses_no_acknowledged_response(tmp_path):
    db, port = tmp_path / "kill.sqlite3", free_port()
    proc = _start_stub_server(db, port)
    acknowledged: list[str] = []
    lock = threading.Lock()

    def stream_forever() -> None:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        try:
            while True:
                for event in client.responses.create(model="tiny", input="go", stream=True):
                    if event.type == "response.completed":
                        with lock:
                            acknowledged.append(event.response.id)
        except (openai.APIError, OSError):
            return  # the server is gone

    threads = [threading.Thread(target=stream_forever, daemon=True) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        assert wait_for(lambda: len(acknowledged) >= 12, timeout=60)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    for t in threads:
        t.join(timeout=20)
    with lock:
        seen = list(acknowledged)
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    proc = _start_stub_server(db, port)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        for rid in seen:
            assert client.responses.retrieve(rid).status == "completed"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
