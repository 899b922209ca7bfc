"""``create_app(config)``: the ASGI app that uvicorn, any ASGI server, or Ray Serve hosts.

The guard in front of the routes refuses early and cheaply (auth, payload size, overload, draining)
before a body is parsed; every refusal is shaped by serve/errors.py.
"""

from __future__ import annotations

import hmac
import logging
from contextlib import asynccontextmanager
from time import perf_counter
from typing import Any

from polyglot_onnx.serve.backend import Backend
from polyglot_onnx.serve.config import ServeConfig
from polyglot_onnx.serve.errors import Kind, ServeError, error_body, error_headers, validation_message
from polyglot_onnx.serve.routes import add_routes
from polyglot_onnx.serve.service import READY, ClientGone, Service

log = logging.getLogger("polyglot_onnx.serve")

INFERENCE_ROUTES = frozenset({"/v1/embeddings", "/embed", "/embed_all", "/fill-mask", "/embed_words", "/tokenize"})
ROUTES = INFERENCE_ROUTES | {"/health", "/info", "/metrics"}
OPEN_ROUTES = frozenset({"/health"})  # reachable without the API key (load balancers, orchestrators)


def create_app(config: ServeConfig, backends: list[Backend] | None = None) -> Any:
    """The app; ``backends`` already loaded (the CLI loads first to refuse bad packages before binding)."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    service = Service(config, backends)

    @asynccontextmanager
    async def lifespan(_: Any) -> Any:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="polyglot-onnx", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    @app.exception_handler(ServeError)
    async def serve_error(request: Any, err: ServeError) -> Any:
        return JSONResponse(error_body(request.url.path, err), status_code=err.kind.status, headers=error_headers(err))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Any, err: RequestValidationError) -> Any:
        message, param = validation_message(list(err.errors()))
        if param is None and "json" not in request.headers.get("content-type", ""):
            message = "request body must be a JSON object sent with 'Content-Type: application/json'"
        return await serve_error(request, ServeError(Kind.VALIDATION, message, code="invalid_request", param=param))

    @app.exception_handler(ClientGone)
    async def gone(request: Any, err: ClientGone) -> Any:
        return JSONResponse({"error": "client disconnected", "error_type": "Cancelled"}, status_code=499)

    @app.exception_handler(Exception)
    async def unexpected(request: Any, err: Exception) -> Any:  # a bug, never bad input: one line, no traceback out
        log.exception("unexpected error on %s", request.url.path)
        body = ServeError(Kind.BACKEND, f"internal error: {type(err).__name__}", code="internal_error")
        return JSONResponse(error_body(request.url.path, body), status_code=500)

    add_routes(app, service)
    app.add_middleware(Guard, service=service)
    return app


class Guard:
    """Pure ASGI middleware: API key, draining, overload (429), payload limit (413), request metrics."""

    def __init__(self, app: Any, service: Service) -> None:
        self.app = app
        self.service = service
        self.key = service.config.api_key

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in ROUTES else "other"
        started = perf_counter()
        status = {"code": 500}

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        counted = route in INFERENCE_ROUTES
        if counted:
            self.service.in_flight += 1
            self.service.metrics.in_flight.inc()
        try:
            refusal = self._refusal(scope, path, counted)
            if refusal is not None:
                await _respond(path, refusal, send_status)
                return
            body = await self._read_body(scope, receive)
            if isinstance(body, ServeError):
                await _respond(path, body, send_status)
                return
            if body is None:  # client left before sending its body
                return
            await self.app(scope, _replay(body, receive), send_status)
        finally:
            if counted:
                self.service.in_flight -= 1
                self.service.metrics.in_flight.dec()
            self.service.metrics.requests.labels(route, str(status["code"])).inc()
            self.service.metrics.request_seconds.labels(route).observe(perf_counter() - started)

    def _refusal(self, scope: dict[str, Any], path: str, counted: bool) -> ServeError | None:
        if self.key is not None and path not in OPEN_ROUTES and not self._authorized(scope):
            return ServeError(Kind.UNAUTHORIZED, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                              code="invalid_api_key")
        if counted and self.service.state != READY:
            return ServeError(Kind.UNHEALTHY, f"the server is {self.service.state}: retry on another replica or later",
                              code="unhealthy")
        limit = self.service.config.max_concurrent_requests
        if counted and self.service.in_flight > limit:
            return ServeError(Kind.OVERLOADED, f"model is overloaded: more than {limit} requests in flight "
                              "(--max-concurrent-requests); retry after a second", code="overloaded")
        return None

    def _authorized(self, scope: dict[str, Any]) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.key.encode())  # type: ignore[union-attr]
        return False

    async def _read_body(self, scope: dict[str, Any], receive: Any) -> bytes | ServeError | None:
        limit = self.service.config.payload_limit
        too_large = ServeError(Kind.PAYLOAD, f"request body is over the payload limit of {limit} bytes "
                               "(--payload-limit): send fewer or shorter inputs", code="payload_too_large")
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                return too_large
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    """The body once, then the real channel (which reports the client's disconnect)."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _respond(path: str, err: ServeError, send: Any) -> None:
    import json

    payload = json.dumps(error_body(path, err)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error_headers(err).items()]
    await send({"type": "http.response.start", "status": err.kind.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
