"""The fast path (services/inference/fast_path.py): a valid generation request reaches its endpoint without
FastAPI's router; anything else is answered by FastAPI exactly as without the fast path."""

from __future__ import annotations

import inspect
import json

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from services.inference.fast_path import FastPath, direct_routes


class Ask(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str
    n: int = 1


def make_app(fast: bool) -> tuple[FastAPI, list[bool]]:
    """A small app shaped like the service's: one direct route, two that are not eligible."""
    app = FastAPI()
    through_router: list[bool] = []

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return JSONResponse({"detail": exc.detail, "handled": "by the app"}, status_code=exc.status_code)

    @app.post("/ask")
    async def ask(req: Ask):
        through_router.append(any(f.filename.endswith("starlette/routing.py") for f in inspect.stack()))
        if req.n < 0:
            raise HTTPException(503, "not ready")
        return JSONResponse({"echo": req.prompt * req.n})

    @app.post("/sync")
    def sync(req: Ask):
        return {"sync": req.prompt}

    @app.post("/query")
    async def query(req: Ask, q: int = 0):
        return {"q": q}

    if fast:
        app.add_middleware(FastPath, routes=lambda: direct_routes(app, ("/ask", "/sync", "/query")),
                           http_error=lambda: app.exception_handlers[StarletteHTTPException])
    return app, through_router


def test_only_async_one_body_routes_are_called_directly():
    app, _ = make_app(fast=False)
    routes = direct_routes(app, ("/ask", "/sync", "/query", "/missing"))
    assert set(routes) == {"/ask"}
    assert routes["/ask"][0] is Ask


def test_a_valid_body_skips_the_router_and_answers_the_same():
    fast_app, fast_calls = make_app(fast=True)
    slow_app, slow_calls = make_app(fast=False)
    body = {"prompt": "ab", "n": 2}
    with TestClient(fast_app) as fast, TestClient(slow_app) as slow:
        a, b = fast.post("/ask", json=body), slow.post("/ask", json=body)
    assert a.status_code == b.status_code == 200
    assert a.content == b.content == b'{"echo":"abab"}'
    assert a.headers == b.headers
    assert fast_calls == [False] and slow_calls == [True]


@pytest.mark.parametrize("body", [
    b'{"prompt": "x", "extra": 1}',  # the model refuses it
    b'{"prompt": ',                   # not JSON
    b'[1, 2]',                        # JSON, not an object
    b'\xff\xfe{}',                    # not UTF-8
    b'',                              # no body
])
def test_anything_invalid_gets_fastapis_own_answer(body):
    fast_app, fast_calls = make_app(fast=True)
    slow_app, _ = make_app(fast=False)
    headers = {"Content-Type": "application/json"}
    with TestClient(fast_app) as fast, TestClient(slow_app) as slow:
        a, b = fast.post("/ask", content=body, headers=headers), slow.post("/ask", content=body, headers=headers)
    assert a.status_code == b.status_code == 422
    assert a.json() == b.json()
    assert fast_calls == []  # the endpoint never ran


def test_an_http_error_of_the_endpoint_is_answered_by_the_apps_handler():
    app, calls = make_app(fast=True)
    with TestClient(app) as client:
        r = client.post("/ask", json={"prompt": "x", "n": -1})
    assert r.status_code == 503
    assert r.json() == {"detail": "not ready", "handled": "by the app"}
    assert calls == [False]


def test_an_endpoint_that_returns_no_response_is_a_clear_error():
    app = FastAPI()

    @app.post("/ask")
    async def ask(req: Ask):
        return {"not": "a Response"}

    app.add_middleware(FastPath, routes=lambda: direct_routes(app, ("/ask",)),
                       http_error=lambda: app.exception_handlers[StarletteHTTPException])
    with TestClient(app, raise_server_exceptions=True) as client, pytest.raises(TypeError, match="returns a Response"):
        client.post("/ask", json={"prompt": "x"})


def test_other_routes_and_methods_go_through_fastapi():
    app, _ = make_app(fast=True)
    with TestClient(app) as client:
        assert client.post("/sync", json={"prompt": "s"}).json() == {"sync": "s"}
        assert client.post("/query?q=3", json={"prompt": "s"}).json() == {"q": 3}
        assert client.get("/ask").status_code == 405


def test_the_service_app_calls_its_generation_endpoints_directly():
    """The service's own generation routes are all eligible (a refactor that gives one a query parameter,
    a dependency or a plain ``def`` would silently lose the fast path)."""
    from services.inference.app import create_app
    from services.inference.calls import GENERATION_ENDPOINTS

    class NoService:  # create_app only reads attributes when a request or the lifespan comes
        pass

    app = create_app(NoService())
    assert set(direct_routes(app, GENERATION_ENDPOINTS)) == set(GENERATION_ENDPOINTS)
    json.dumps(app.openapi())  # the schema is still FastAPI's, with every route
