"""Run the app on uvicorn: load first (a bad package refuses to start), SIGTERM drains then exits 0.

Draining: on SIGTERM /health turns 503 and new requests get a 503 in the error shape (the port stays
open, so clients see an answer, not a refused connection) while the requests in flight are answered;
bodies still arriving are cut off. The server exits once none is left, or --drain-timeout after the
signal: then a request whose answer has not started gets a 503 and its queued inputs are dropped, so
the exit comes within the timeout plus one batch (batches are cut to --max-batch-ms of work).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
from time import monotonic
from typing import Any

from polyglot_onnx.errors import InputError
from polyglot_onnx.serve.backend import Backend
from polyglot_onnx.serve.config import CONFIG_ENV, ServeConfig
from polyglot_onnx.serve.connections import guarded_protocol, uvicorn_protocol
from polyglot_onnx.serve.memory import Trimmer

log = logging.getLogger("polyglot_onnx.serve")
# Seconds after --drain-timeout for answers already being sent, and then for uvicorn's own shutdown.
LATE_ANSWER_GRACE = 2
BACKLOG = 2048  # uvicorn's default


def load_backends(config: ServeConfig) -> list[Backend]:
    """Open every package with the runtime's checks before binding the port (errors are one line)."""
    backends = [Backend.load(spec, config) for spec in config.models]
    for b in backends:
        log.info("model %s: %s, variant %s on %s, batch-invariant %s", b.name, b.directory, b.variant, b.provider,
                 b.batch_invariant)
    return backends


def protocol(config: ServeConfig) -> type:
    """uvicorn's HTTP protocol with the header deadline and the per-address connection cap."""
    return guarded_protocol(uvicorn_protocol(), config.header_timeout, config.max_connections_per_address)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a port in TIME_WAIT is free
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _in_use(host: str, port: int) -> InputError:
    return InputError(f"port {port} on {host} is already in use: pass --port (or POLYGLOT_PORT) or stop the other "
                      "server")


def check_port(host: str, port: int) -> None:
    """Before the models load (which can take a while): a port already in use fails at once, in one line.
    Anything else (a privileged port, an address not on this machine) is reported when binding."""
    try:
        _bind(host, port).close()
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise _in_use(host, port) from None


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound and listening here, then handed to uvicorn: a port taken since check_port (or any
    other failure) is one line too, not uvicorn's log lines, and from here on no other server can take the port
    (connections made during the warm-up wait in the backlog and are answered once it is done)."""
    try:
        sock = _bind(host, port)
        try:
            sock.listen(BACKLOG)
        except OSError:
            sock.close()
            raise
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise _in_use(host, port) from None
        raise InputError(f"cannot listen on {host}:{port}: {err.strerror or err} (--host, --port)") from None
    sock.set_inheritable(True)  # uvicorn's worker processes inherit it
    return sock


def run_server(config: ServeConfig, host: str, port: int, workers: int = 1, log_level: str = "info") -> int:
    import uvicorn

    check_port(host, port)
    Trimmer().limit_arenas()  # before onnxruntime and the tokenizers start their threads
    if workers > 1:
        from uvicorn.supervisors import Multiprocess

        # uvicorn's supervisor starts each worker from an import string; the config travels as JSON.
        load_backends(config)  # refuse a bad package here, once, before any worker starts
        os.environ[CONFIG_ENV] = config.to_json()
        if config.api_key:
            os.environ.setdefault("POLYGLOT_API_KEY", config.api_key)
        # uvicorn's own HTTP protocol: the workers are started by pickling this config, which the guarded
        # protocol (a class made at run time) cannot be; the connection guards are the plain server's (docs)
        options = uvicorn.Config("polyglot_onnx.serve.app_factory:app_from_env", factory=True, host=host, port=port,
                                 workers=workers, log_level=log_level, backlog=BACKLOG,
                                 timeout_graceful_shutdown=int(config.drain_timeout))
        Multiprocess(options, sockets=[listening_socket(host, port)]).run()  # what uvicorn.run does, on our socket
        return 0

    from polyglot_onnx.serve.app import create_app

    app = create_app(config, load_backends(config))
    sock = listening_socket(host, port)
    server = DrainingServer(uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                                           http=protocol(config), timeout_graceful_shutdown=LATE_ANSWER_GRACE))
    # uvicorn re-raises the signal it caught after its graceful shutdown; a no-op handler makes that a
    # clean return, so a drained SIGTERM exits 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    server.run(sockets=[sock])
    return 0 if server.started else 1


class _Draining:
    """Mixin: on the first shutdown signal, drain (503 to new requests, answer the ones in flight) until
    none is left or --drain-timeout has passed; a second signal stops as uvicorn does."""

    config: Any
    should_exit: bool
    _captured_signals: list[int]
    _drain_began: float | None = None

    def _service(self) -> Any:
        app = self.config.loaded_app if getattr(self.config, "loaded", False) else self.config.app
        return _find_service(app)

    def handle_exit(self, sig: int, frame: Any) -> None:
        service = self._service()
        if service is None or self._drain_began is not None or not getattr(self, "started", False):
            super().handle_exit(sig, frame)  # type: ignore[misc]
            return
        self._captured_signals.append(sig)  # uvicorn re-raises it after shutdown (SIGTERM's handler: a no-op)
        self._drain_began = monotonic()
        service.begin_drain()

    async def on_tick(self, counter: int) -> bool:
        if self._drain_began is not None and not self.should_exit:
            service = self._service()
            waited = monotonic() - self._drain_began
            if waited >= service.config.drain_timeout:
                service.end_drain()  # late requests: 503 in the error shape
            if service.busy == 0 or waited >= service.config.drain_timeout + LATE_ANSWER_GRACE:
                self.should_exit = True
        return await super().on_tick(counter)  # type: ignore[misc,no-any-return]


def _find_service(app: Any) -> Any:
    """The Service behind whatever middleware wrappers uvicorn put around the app."""
    for _ in range(10):
        state = getattr(app, "state", None)
        if state is not None and getattr(state, "service", None) is not None:
            return state.service
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


def _server_class() -> Any:
    import uvicorn

    return type("DrainingServer", (_Draining, uvicorn.Server), {})


def DrainingServer(config: Any) -> Any:
    return _server_class()(config)
