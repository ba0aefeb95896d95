"""Server-sent events: the framing, a stream that reports a failure as a last event, and the
streaming response that always closes its stream (so no generation outlives its connection)."""
from __future__ import annotations

import json
import logging
from typing import Any, AsyncIterator, Callable

from fastapi.responses import StreamingResponse

from .protocol import APIError

log = logging.getLogger(__name__)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(data: dict[str, Any] | str, event: str | None = None) -> bytes:
    """One server-sent event (an `event:` line only when named), as UTF-8."""
    body = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return ((f"event: {event}\n" if event else "") + f"data: {body}\n\n").encode("utf-8")


async def event_stream(items: AsyncIterator[dict[str, Any]], *, named: bool,
                       done: str | None, on_error: Callable[[APIError], dict[str, Any]]):
    """Frame `items` as SSE (`event: <item type>` when `named`), then `data: <done>` if given.

    Once the response has started, an error can no longer change the status code: it is sent
    as one more event (`on_error` shapes it) and the stream ends. Each event is encoded here, so
    a failure to encode one is such an error too. A client that goes away closes this generator
    (see `ClosingStream`), and with it the generation (see generation.py).
    """
    try:
        async for item in items:
            yield sse(item, item.get("type") if named else None)
    except APIError as exc:
        error = on_error(exc)
        yield sse(error, error.get("type") if named else None)
        return
    except Exception as exc:  # a bug must not leave the client hanging on an open stream
        log.exception("stream failed")
        error = on_error(APIError(500, f"internal error: {type(exc).__name__}", type="server_error"))
        yield sse(error, error.get("type") if named else None)
        return
    finally:
        await items.aclose()
    if done is not None:
        yield sse(done)


class ClosingStream(StreamingResponse):
    """An SSE response that, however it ends (finished, client gone before or during the body,
    a send that failed), closes its event stream and calls `on_close` (which cancels the
    request's generations: a stream never iterated has no `finally` of its own to run)."""

    def __init__(self, content, on_close: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=SSE_HEADERS)
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self.body_iterator.aclose()
            finally:
                self.on_close()
