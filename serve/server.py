"""Run the app on uvicorn: load first (a bad package refuses to start), SIGTERM drains then exits 0."""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

from polyglot_onnx.serve.backend import Backend
from polyglot_onnx.serve.config import CONFIG_ENV, ServeConfig

log = logging.getLogger("polyglot_onnx.serve")


def load_backends(config: ServeConfig) -> list[Backend]:
    """Open every package with the runtime's checks before binding the port (errors are one line)."""
    backends = [Backend.load(spec, config) for spec in config.models]
    for b in backends:
        log.info("model %s: %s, variant %s on %s, batch-invariant %s", b.name, b.directory, b.variant, b.provider,
                 b.batch_invariant)
    return backends


def run_server(config: ServeConfig, host: str, port: int, workers: int = 1, log_level: str = "info") -> int:
    import uvicorn

    if workers > 1:
        # uvicorn's supervisor starts each worker from an import string; the config travels as JSON.
        load_backends(config)  # refuse a bad package here, once, before any worker starts
        os.environ[CONFIG_ENV] = config.to_json()
        if config.api_key:
            os.environ.setdefault("POLYGLOT_API_KEY", config.api_key)
        uvicorn.run("polyglot_onnx.serve.app_factory:app_from_env", factory=True, host=host, port=port,
                    workers=workers, log_level=log_level, timeout_graceful_shutdown=int(config.drain_timeout))
        return 0

    from polyglot_onnx.serve.app import create_app

    app = create_app(config, load_backends(config))
    server = DrainingServer(uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                                           timeout_graceful_shutdown=int(config.drain_timeout)))
    # uvicorn re-raises the signal it caught after its graceful shutdown; a no-op handler makes that a
    # clean return, so a drained SIGTERM exits 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    server.run()
    return 0 if server.started else 1


class _Draining:
    """Mixin: flip /health to 503 the moment a shutdown signal arrives, before connections drain."""

    config: Any

    def handle_exit(self, sig: int, frame: Any) -> None:
        app = self.config.loaded_app if getattr(self.config, "loaded", False) else self.config.app
        service = _find_service(app)
        if service is not None:
            service.state = "draining"
        super().handle_exit(sig, frame)  # type: ignore[misc]


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
