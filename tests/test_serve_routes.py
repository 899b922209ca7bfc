"""One list of routes: the router's handlers and the guard's / metrics' route sets come from serve/routes.py."""

from __future__ import annotations


def test_every_route_is_registered_once_with_its_metadata():
    from polyglot_onnx.serve.app import INFERENCE_ROUTES, OPEN_ROUTES, ROUTES
    from polyglot_onnx.serve.routes import ROUTE_TABLE, router

    paths = [r.path for r in router.routes]
    assert len(paths) == len(set(paths)) == len(ROUTE_TABLE) and set(paths) == ROUTES
    methods = {r.path: set(r.methods) for r in router.routes}
    assert all(methods[p] == {info.method} for p, info in ROUTE_TABLE.items())
    assert OPEN_ROUTES == {"/health"} and {"/health", "/info", "/metrics"}.isdisjoint(INFERENCE_ROUTES)
    assert {"/embed", "/v1/embeddings", "/fill-mask", "/tokenize"} <= INFERENCE_ROUTES
