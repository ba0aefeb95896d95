"""ASGI middleware: request bodies larger than the server's limit get a 413 before they are read.

A body announced by `Content-Length` is refused at once from its header; a chunked body is read
up to the limit (and refused as soon as it passes it), then handed on. So a client cannot make the
server buffer or parse more than `limit` bytes, and a flood of large bodies leaves the event loop
free for other requests (`/health` stays quick).
"""
from __future__ import annotations

from fastapi.responses import JSONResponse

from .protocol import APIError


def _too_large(limit: int) -> JSONResponse:
    exc = APIError(413, f"The request body is larger than this server's limit of {limit} bytes "
                        "(gptoss serve --max-request-bytes).", code="request_too_large")
    return JSONResponse(exc.body(), status_code=413, headers={"Connection": "close"})


class BodyLimit:
    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                exc = APIError(400, "Content-Length must be a number of bytes", code="invalid_header")
                await JSONResponse(exc.body(), status_code=400)(scope, receive, send)
            elif int(length) > self.limit:
                await _too_large(self.limit)(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        if b"chunked" not in headers.get(b"transfer-encoding", b"").lower():
            await self.app(scope, receive, send)
            return
        body = await self._read(receive)
        if body is None:
            await _too_large(self.limit)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive) -> bytes | None:
        """The whole chunked body, or None once it passes the limit (or the client left)."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return None
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive):
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
