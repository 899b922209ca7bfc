"""The one list of the server's routes: every handler registers here with its metadata, in one place.

The app's guard (API key, overload), the metrics labels and the tests read their route sets from
``ROUTE_TABLE``, so a route cannot be added in one place only. Routes live in three modules that all
register on this module's router: ``routes`` (TEI's core and our extensions), ``routes_tei`` (TEI's
aliases and tokenizer routes), ``routes_openai`` (the OpenAI API).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from polyglot_onnx.serve.service import Service

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class RouteInfo:
    """What the guard and the metrics need to know about a route: its path is its metrics label, ``inference``
    routes run the model or its tokenizer (the overload guard counts them), ``public`` routes need no API key,
    ``framework`` routes are served by FastAPI itself (the OpenAPI schema and its viewer), not by a handler here."""

    path: str
    method: str
    inference: bool
    public: bool = False
    framework: bool = False


router = APIRouter()
ROUTE_TABLE: dict[tuple[str, str], RouteInfo] = {}  # (method, path) -> metadata


def route(path: str, method: str = "POST", inference: bool = True, public: bool = False) -> Callable[[F], F]:
    """Register a handler on the router and its metadata in ROUTE_TABLE."""

    def register(handler: F) -> F:
        ROUTE_TABLE[(method, path)] = RouteInfo(path, method, inference, public)
        router.add_api_route(path, handler, methods=[method])
        return handler

    return register


# FastAPI's own pages: the interactive docs and the schema they read (public, as TEI's /docs is).
DOCS_URL = "/docs"
OPENAPI_URL = "/openapi.json"
for _path in (DOCS_URL, OPENAPI_URL):
    ROUTE_TABLE[("GET", _path)] = RouteInfo(_path, "GET", inference=False, public=True, framework=True)


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def json(content: Any, headers: dict[str, str] | None = None) -> Any:
    return JSONResponse(content, headers=headers)
