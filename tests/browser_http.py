"""A throwaway HTTP server on 127.0.0.1 for the browser tests: routes path -> handler, and a log
of the requests it saw (method, path, headers, body)."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

# a route answers (status, headers, body)
Route = Callable[[BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]]


@contextmanager
def local_server(routes: dict[str, Route]):
    """Yields (base_url, requests); requests is a list of dicts appended per request."""
    requests: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            requests.append({"method": self.command, "path": self.path,
                             "headers": {k.lower(): v for k, v in self.headers.items()},
                             "body": body})
            route = routes.get(self.path.split("?", 1)[0])
            status, headers, payload = route(self) if route else (404, {}, b"not found")
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            try:
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


def html(text: str, status: int = 200):
    return lambda handler: (status, {"Content-Type": "text/html; charset=utf-8"}, text.encode())


def redirect(location: str):
    return lambda handler: (302, {"Location": location}, b"")
