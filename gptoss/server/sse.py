"""Server-sent events: the framing, and a stream that reports a failure as a last event."""
from __future__ import annotations

import json
import logging
from typing import Any, AsyncIterator, Callable

from .protocol import APIError

log = logging.getLogger(__name__)


def sse(data: dict[str, Any] | str, event: str | None = None) -> str:
    """One server-sent event (an `event:` line only when named)."""
    body = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return (f"event: {event}\n" if event else "") + f"data: {body}\n\n"


async def event_stream(items: AsyncIterator[dict[str, Any]], *, named: bool,
                       done: str | None, on_error: Callable[[APIError], dict[str, Any]]):
    """Frame `items` as SSE (`event: <item type>` when `named`), then `data: <done>` if given.

    Once the response has started, an error can no longer change the status code: it is sent
    as one more event (`on_error` shapes it) and the stream ends. A client that goes away
    cancels this generator, and with it the generation (see generation.py).
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
    if done is not None:
        yield sse(done)
