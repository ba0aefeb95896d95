"""The FastAPI application: `create_app(engine, options)`, and `serve(...)` with uvicorn.

Routes: POST /v1/chat/completions, POST /v1/responses, GET|DELETE /v1/responses/{id},
GET /v1/models, GET /health, GET /metrics. Every error is an OpenAI error object
(`{"error": {"message", "type", "param", "code"}}`) with its status code; nothing a client sends
can take the server down (unexpected failures are logged and answered with a 500).
"""
from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import chat, responses
from .context import ServerContext, ServerOptions
from .engine_client import EngineClient
from .protocol import APIError, ChatCompletionRequest, ModelCard, ModelList
from .responses_protocol import ResponsesRequest
from .sse import event_stream

log = logging.getLogger(__name__)
ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/models", "/health", "/metrics")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _error(exc: APIError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


def _endpoint_label(path: str) -> str:
    if path.startswith("/v1/responses/"):
        return "/v1/responses/{id}"
    return path if path in ENDPOINTS else "other"


class Gate:
    """ASGI middleware: the API key check on /v1/*, and per-request metrics.

    (A plain ASGI wrapper, not BaseHTTPMiddleware, so streaming and disconnects pass untouched.)
    """

    def __init__(self, app, ctx: ServerContext) -> None:
        self.app, self.ctx = app, ctx
        key = ctx.options.api_key
        self.expected = f"Bearer {key}".encode() if key else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        label, status = _endpoint_label(scope["path"]), [500]
        if self.expected is not None and scope["path"].startswith("/v1/"):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                exc = APIError(401, "Incorrect API key provided.", code="invalid_api_key")
                await _error(exc)(scope, receive, send)
                self.ctx.metrics.request_done(label, 401)
                return

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.ctx.metrics.request_done(label, status[0])


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError):
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            return _error(APIError(400, f"The request body is not valid JSON: {first.get('msg')}",
                                   code="invalid_json"))
        param = ".".join(loc) or None
        where = f"{param}: " if param else ""
        return _error(APIError(400, f"Invalid request: {where}{first.get('msg')}", param=param))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException):
        kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
        return _error(APIError(exc.status_code, str(exc.detail), type=kind))

    @app.exception_handler(Exception)
    async def crashed(_: Request, exc: Exception):
        log.exception("unhandled error")
        return _error(APIError(500, f"internal error: {type(exc).__name__}", type="server_error"))


def create_app(engine: EngineClient, options: ServerOptions) -> FastAPI:
    """The server for one engine. `app.state.ctx` holds the shared context."""
    ctx = ServerContext(engine, options)
    app = FastAPI(title="gptoss", docs_url=None, redoc_url=None)
    app.state.ctx = ctx
    app.add_middleware(Gate, ctx=ctx)
    _install_errors(app)
    _install_routes(app, ctx)
    return app


def _install_routes(app: FastAPI, ctx: ServerContext) -> None:
    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(ctx.metrics.render(), media_type="text/plain; version=0.0.4")

    def card(name: str) -> ModelCard:
        lora = ctx.check_model(name)
        return ModelCard(id=name, max_model_len=ctx.engine.context_length,
                         root=ctx.options.lora.get(lora) if lora else None,
                         parent=ctx.model_name if lora else None)

    @app.get("/v1/models")
    async def models():
        names = (ctx.model_name,) + ctx.options.lora_names
        return ModelList(data=[card(n) for n in names]).model_dump()

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        return card(model_id).model_dump()

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        generations = await chat.start_generations(ctx, body)
        if body.stream:
            chunks = chat.stream_chunks(ctx, body, generations)
            framed = event_stream(chunks, named=False, done="[DONE]", on_error=APIError.body)
            return StreamingResponse(framed, media_type="text/event-stream", headers=SSE_HEADERS)
        work = chat.complete(ctx, body, generations)
        return await ctx.until_disconnect(work, request.is_disconnected)

    @app.post("/v1/responses")
    async def create_response(body: ResponsesRequest, request: Request):
        generation, items = await responses.start(ctx, body)
        builder = responses.ResponseBuilder(ctx, body)
        events = responses.run(ctx, body, generation, items, builder)
        if body.stream:
            on_error = lambda exc: responses.error_event(builder, exc)  # noqa: E731
            return StreamingResponse(event_stream(events, named=True, done=None, on_error=on_error),
                                     media_type="text/event-stream", headers=SSE_HEADERS)

        async def drain() -> dict[str, Any]:
            async for _ in events:
                pass
            return builder.snapshot()

        return await ctx.until_disconnect(drain(), request.is_disconnected)

    @app.get("/v1/responses/{response_id}")
    async def get_response(response_id: str):
        stored = await asyncio.to_thread(ctx.store.get, response_id)
        if stored is None:
            raise APIError(404, f"No response found with id '{response_id}'.", param="response_id",
                           code="not_found")
        return stored.response

    @app.delete("/v1/responses/{response_id}")
    async def delete_response(response_id: str):
        if not await asyncio.to_thread(ctx.store.delete, response_id):
            raise APIError(404, f"No response found with id '{response_id}'.", param="response_id",
                           code="not_found")
        return {"id": response_id, "object": "response.deleted", "deleted": True}


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run the app with uvicorn until interrupted; the engine and store are closed afterwards."""
    import uvicorn

    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
    finally:
        app.state.ctx.close()
