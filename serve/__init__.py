"""Serving stage: packages over HTTP (OpenAI- and TEI-compatible routes, fill-mask, word vectors).

Layers, each its own module: ``routes``, ``routes_tei``, ``routes_openai`` (HTTP shapes, on the one
``route_table``), ``sentences`` (the embedding routes' shared request path), ``errors`` (status codes and bodies),
``service`` + ``batching`` (token-budget dynamic batching, off the event loop), ``backend`` (the
public runtime). Needs the ``serve`` extra; nothing in the runtime imports this package.
"""

from __future__ import annotations

from typing import Any

from polyglot_onnx.serve.config import ModelSpec, ServeConfig

__all__ = ["ModelSpec", "ServeConfig", "create_app"]


def create_app(config: ServeConfig, backends: Any = None) -> Any:
    """The ASGI app (FastAPI); models load in its lifespan unless ``backends`` are given."""
    from polyglot_onnx.errors import DependencyError

    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError as err:
        raise DependencyError("serving needs the serve extra: pip install 'polyglot-onnx[serve]'") from err
    from polyglot_onnx.serve.app import create_app as build

    return build(config, backends)
