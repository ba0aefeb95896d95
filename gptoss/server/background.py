"""Background responses (`background: true`) and `POST /v1/responses/{id}/cancel`.

A background response is stored at once (`status: "queued"`) and answered; its generation then
runs in a task of the server's (`ServerContext.background`), which stores the response again when
it ends: `completed` / `incomplete`, `failed` (with `error`), or `cancelled` by the cancel route.
`GET /v1/responses/{id}` polls it. A server that stops first leaves `in_progress` rows, which the
store marks `failed` when it is next opened.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from . import responses
from .context import ServerContext
from .generation import Generation
from .protocol import APIError, InvalidRequest
from .responses_protocol import ResponsesRequest
from .store import UNFINISHED

log = logging.getLogger(__name__)


async def create(ctx: ServerContext, req: ResponsesRequest) -> dict[str, Any]:
    """Start the response, store it as queued and answer that; the generation goes on."""
    if req.stream:
        raise InvalidRequest("background responses cannot be streamed here; poll "
                             "GET /v1/responses/{id}", param="stream")
    generation, items = await responses.start(ctx, req)
    builder = responses.ResponseBuilder(ctx, req)
    builder.response.status = "queued"
    if not await responses.save(ctx, builder, items):
        generation.stream.cancel()
        raise APIError(503, "the response store cannot be written, so a background response "
                            "could not be kept", type="server_error", code="store_unavailable")
    queued = builder.snapshot()
    rid = builder.response.id
    task = asyncio.create_task(_run(ctx, req, generation, items, builder))
    ctx.background[rid] = task
    # (a done callback also runs for a task cancelled before its first step, which `finally` won't)
    task.add_done_callback(lambda _: _ended(ctx, rid, generation))
    return queued


def _ended(ctx: ServerContext, response_id: str, generation: Generation) -> None:
    generation.stream.cancel()
    ctx.background.pop(response_id, None)


async def _run(ctx: ServerContext, req: ResponsesRequest, generation: Generation, items: list,
               builder: responses.ResponseBuilder) -> None:
    builder.response.status = "in_progress"
    try:
        await responses.save(ctx, builder, items)
        async for _ in responses.run(ctx, req, generation, items, builder):
            pass
    except asyncio.CancelledError:
        builder.response.status = "cancelled"
        await responses.save(ctx, builder, items)
    except APIError as exc:
        builder.response.status = "failed"
        builder.response.error = {"code": exc.code or exc.type, "message": exc.message}
        await responses.save(ctx, builder, items)
    except Exception as exc:  # a bug: the row must not stay in_progress
        log.exception("background response %s failed", builder.response.id)
        builder.response.status = "failed"
        builder.response.error = {"code": "server_error", "message": type(exc).__name__}
        await responses.save(ctx, builder, items)


async def cancel(ctx: ServerContext, response_id: str) -> dict[str, Any]:
    """Cancel a background response still running; answer it as stored afterwards (a response
    that had already ended is answered unchanged)."""
    stored = await asyncio.to_thread(ctx.store.get, response_id)
    if stored is None:
        raise APIError(404, f"No response found with id '{response_id}'.", param="response_id",
                       code="not_found")
    if not stored.response.get("background"):
        raise InvalidRequest("only background responses can be cancelled", param="response_id")
    task = ctx.background.get(response_id)
    if task is not None:
        task.cancel()
        await asyncio.wait({task})
        await asyncio.to_thread(ctx.store.set_status, response_id, "cancelled", UNFINISHED)
        stored = await asyncio.to_thread(ctx.store.get, response_id)
    return stored.response
