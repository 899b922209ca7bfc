"""``create_app(config)``: the ASGI app that uvicorn, any ASGI server, or Ray Serve hosts.

The guard in front of the routes refuses early and cheaply (auth, payload size, overload, draining)
before a body is parsed; every refusal is shaped by serve/errors.py.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from contextlib import asynccontextmanager
from time import monotonic, perf_counter
from typing import Any

from polyglot_onnx.errors import first_line
from polyglot_onnx.serve import routes, routes_openai, routes_tei  # noqa: F401 - each registers its routes
from polyglot_onnx.serve.backend import Backend
from polyglot_onnx.serve.config import ServeConfig
from polyglot_onnx.serve.errors import (
    Kind,
    ServeError,
    body_error,
    error_body,
    error_headers,
    http_error,
    status_for,
    validation_message,
)
from polyglot_onnx.serve.route_table import DOCS_URL, OPENAPI_URL, ROUTE_TABLE, router
from polyglot_onnx.serve.service import DRAINING, READY, ClientGone, Service

log = logging.getLogger("polyglot_onnx.serve")

# From the routes' own metadata (serve/route_table.py ROUTE_TABLE): a route added there is labelled in the
# metrics, guarded against overload and kept behind the API key without a second list to update here.
ROUTES = frozenset(info.path for info in ROUTE_TABLE.values())  # metrics labels
INFERENCE_ROUTES = frozenset(key for key, info in ROUTE_TABLE.items() if info.inference)  # (method, path)
OPEN_ROUTES = frozenset(key for key, info in ROUTE_TABLE.items() if info.public)  # health for load balancers, docs


def create_app(config: ServeConfig, backends: list[Backend] | None = None) -> Any:
    """The app; ``backends`` already loaded (the CLI loads first to refuse bad packages before binding)."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    service = Service(config, backends)

    @asynccontextmanager
    async def lifespan(_: Any) -> Any:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    from polyglot_onnx import __version__

    app = FastAPI(title="polyglot-onnx", version=__version__, lifespan=lifespan, docs_url=DOCS_URL,
                  openapi_url=OPENAPI_URL, redoc_url=None, swagger_ui_oauth2_redirect_url=None,
                  description="TEI- and OpenAI-compatible embedding server for polyglot-onnx packages "
                              "(docs/serving.md)")
    app.state.service = service

    @app.exception_handler(ServeError)
    async def serve_error(request: Any, err: ServeError) -> Any:
        path = request.url.path
        return JSONResponse(error_body(path, err), status_code=status_for(path, err), headers=error_headers(err))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Any, err: RequestValidationError) -> Any:
        message, param = validation_message(list(err.errors()))
        if param is None and "json" not in request.headers.get("content-type", ""):
            message = "request body must be a JSON object sent with 'Content-Type: application/json'"
        return await serve_error(request, ServeError(Kind.VALIDATION, message, code="invalid_request", param=param))

    @app.exception_handler(HTTPException)
    async def http_refusal(request: Any, err: HTTPException) -> Any:
        if err.status_code == 400:  # FastAPI could not parse the body: its cause says why
            return await serve_error(request, body_error(err.__cause__))
        return await serve_error(request, http_error(err.status_code, str(err.detail), request.url.path))

    @app.exception_handler(ClientGone)
    async def gone(request: Any, err: ClientGone) -> Any:
        return JSONResponse({"error": "client disconnected", "error_type": "Cancelled"}, status_code=499)

    @app.exception_handler(Exception)
    async def unexpected(request: Any, err: Exception) -> Any:  # a bug, never bad input: one line, no traceback out
        log.exception("unexpected error on %s", request.url.path)
        body = ServeError(Kind.INTERNAL, f"internal error: {type(err).__name__}", code="internal_error")
        return JSONResponse(error_body(request.url.path, body), status_code=500)

    app.include_router(router)
    app.add_middleware(Guard, service=service)
    return app


class Guard:
    """Pure ASGI middleware: API key, draining, body size and time, overload (429), request metrics.

    A request joins the concurrency limit only once its whole body is in: a client that sends headers
    and then stalls holds a socket until --body-timeout (408), never a slot of --max-concurrent-requests.
    While the server drains, a body still arriving is cut off with a 503; once --drain-timeout has
    passed, a request whose answer has not started gets a 503 too (its queued inputs are dropped).
    Every refusal and every unexpected error is answered in the error shape, and the connection says
    'Connection: close' whenever it is about to close.
    """

    def __init__(self, app: Any, service: Service) -> None:
        self.app = app
        self.service = service
        self.key = service.config.api_key
        self._trims: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in ROUTES else "other"
        key = (scope.get("method", ""), path)
        started = perf_counter()
        status = {"code": 500, "started": False, "bytes": 0}

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["started"] = True
            else:
                status["bytes"] += len(message.get("body", b""))
            await send(message)

        size = 0
        try:
            size = await self._serve(scope, receive, send_status, path, key in INFERENCE_ROUTES, status)
        finally:
            self.service.metrics.requests.labels(route, str(status["code"])).inc()
            self.service.metrics.request_seconds.labels(route).observe(perf_counter() - started)
            if size or status["bytes"]:  # a large body or answer leaves freed heap pages behind: trim soon
                task = asyncio.ensure_future(self.service.memory.after(max(size, status["bytes"])))
                self._trims.add(task)
                task.add_done_callback(self._trims.discard)

    async def _serve(self, scope: dict[str, Any], receive: Any, send: Any, path: str, inference: bool,
                     status: dict[str, Any]) -> int:
        """Refuse, read the body, admit, run; returns the body's size (0 when none was read)."""
        refusal = self._refusal(scope, path, inference)
        if refusal is not None:
            await _respond(path, refusal, send)
            return 0
        self.service.uploading += 1
        try:
            body = await self._read_body(scope, receive)
        finally:
            self.service.uploading -= 1
        if isinstance(body, ServeError):
            await _respond(path, body, send)
            return 0
        if body is None:  # client left before sending its body
            return 0
        if not inference:
            await self._run(scope, body, receive, send, path, status, deadline=None)
            return len(body)
        limit = self.service.config.max_concurrent_requests
        if self.service.in_flight >= limit:
            await _respond(path, ServeError(Kind.OVERLOADED, f"model is overloaded: more than {limit} requests in "
                                            "flight (--max-concurrent-requests); retry after a second",
                                            code="overloaded"), send)
            return len(body)
        self.service.in_flight += 1
        self.service.metrics.in_flight.inc()
        try:
            await self._run(scope, body, receive, send, path, status, deadline=self.service.drain_expired)
        finally:
            self.service.in_flight -= 1
            self.service.metrics.in_flight.dec()
        return len(body)

    async def _run(self, scope: dict[str, Any], body: bytes, receive: Any, send: Any, path: str,
                   status: dict[str, Any], deadline: asyncio.Future[None] | None) -> None:
        """The app, until it answers or the drain deadline passes before its answer started (then 503)."""
        task = asyncio.ensure_future(self.app(scope, _replay(body, receive), send))
        waiting: set[asyncio.Future[Any]] = {task} if deadline is None else {task, deadline}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not task.done() and not status["started"]:
            task.cancel()
            await asyncio.wait({task})
            late = ServeError(Kind.UNHEALTHY, f"the server is shutting down: this request was not answered within "
                              f"--drain-timeout ({self.service.config.drain_timeout:g} s); retry on another "
                              "replica", code="unhealthy", close=True)
            await _respond(path, late, send)
            return
        try:
            await task
        except Exception as err:  # noqa: BLE001 - the app's own handler answered it and logged it
            if not status["started"]:
                log.error("unexpected error on %s: %s", path, first_line(err))
                await _respond(path, ServeError(Kind.INTERNAL, f"internal error: {type(err).__name__}",
                                                code="internal_error"), send)

    def _refusal(self, scope: dict[str, Any], path: str, inference: bool) -> ServeError | None:
        if self.key is not None and (scope.get("method"), path) not in OPEN_ROUTES and not self._authorized(scope):
            return ServeError(Kind.UNAUTHORIZED, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                              code="invalid_api_key")
        if inference and self.service.state != READY:
            return ServeError(Kind.UNHEALTHY, f"the server is {self.service.state}: retry on another replica or later",
                              code="unhealthy", close=self.service.state == DRAINING)
        return None

    def _authorized(self, scope: dict[str, Any]) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.key.encode())  # type: ignore[union-attr]
        return False

    async def _read_body(self, scope: dict[str, Any], receive: Any) -> bytes | ServeError | None:
        config = self.service.config
        limit = config.payload_limit
        too_large = ServeError(Kind.PAYLOAD, f"request body is over the payload limit of {limit} bytes "
                               "(--payload-limit): send fewer or shorter inputs", code="payload_too_large")
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                return too_large
        deadline = monotonic() + config.body_timeout if config.body_timeout else None
        chunks, size = [], 0
        while True:
            message = await self._receive(receive, deadline)
            if isinstance(message, ServeError):
                return message
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _receive(self, receive: Any, deadline: float | None) -> dict[str, Any] | ServeError:
        """The next body message, unless the body deadline passes (408) or the server starts draining (503)."""
        message = asyncio.ensure_future(receive())
        waiting: set[asyncio.Future[Any]] = {message, self.service.drain_started}
        timeout = None if deadline is None else max(0.0, deadline - monotonic())
        await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if message.done():
            return message.result()  # type: ignore[no-any-return]
        message.cancel()
        if self.service.drain_started.done():
            return ServeError(Kind.UNHEALTHY, "the server is shutting down: send this request to another replica",
                              code="unhealthy", close=True)
        return ServeError(Kind.TIMEOUT, f"request body did not arrive within {self.service.config.body_timeout:g} s "
                          "(--body-timeout): send the body right after the headers", code="request_timeout",
                          close=True)


def _replay(body: bytes, receive: Any) -> Any:
    """The body once, then the real channel (which reports the client's disconnect)."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        message: dict[str, Any] = await receive()
        return message

    return replay


async def _respond(path: str, err: ServeError, send: Any) -> None:
    import json

    payload = json.dumps(error_body(path, err)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error_headers(err).items()]
    await send({"type": "http.response.start", "status": status_for(path, err), "headers": headers})
    await send({"type": "http.response.body", "body": payload})
