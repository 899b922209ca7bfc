"""One list of routes: the router's handlers and the guard's / metrics' route sets come from serve/route_table.py."""

from __future__ import annotations


def test_every_route_is_registered_once_with_its_metadata():
    from polyglot_onnx.serve.app import INFERENCE_ROUTES, OPEN_ROUTES, ROUTES
    from polyglot_onnx.serve.route_table import ROUTE_TABLE, router

    handled = [(method, r.path) for r in router.routes for method in r.methods]
    ours = {key for key, info in ROUTE_TABLE.items() if not info.framework}
    assert len(handled) == len(set(handled)) == len(ours) and set(handled) == ours
    assert ROUTES == {path for _, path in ROUTE_TABLE}
    public = ("/health", "/", "/ping", "/docs", "/openapi.json", "/api-doc/openapi.json")
    assert OPEN_ROUTES == {("GET", p) for p in public}
    assert {("GET", p) for p in ("/health", "/info", "/metrics", "/v1/models", "/docs")}.isdisjoint(INFERENCE_ROUTES)
    assert {("POST", p) for p in ("/embed", "/v1/embeddings", "/embeddings", "/", "/invocations", "/fill-mask",
                                  "/tokenize", "/decode", "/similarity")} <= INFERENCE_ROUTES
    # FastAPI serves the docs itself: the app has them, the router does not
    from polyglot_onnx.serve.app import create_app
    from polyglot_onnx.serve.config import ModelSpec, ServeConfig

    app = create_app(ServeConfig(models=(ModelSpec("unused"),)), backends=[])
    paths = {getattr(r, "path", None) for r in app.routes}
    assert {"/docs", "/openapi.json"} <= paths and "/redoc" not in paths
