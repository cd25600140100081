"""The hot path: a generation request handed straight to its endpoint, without FastAPI's per-request work.

Routing, the dependency solver, the request object and the exception middleware cost about half a
millisecond a request on a small CPU (docs/latency.md): as much as the rest of the service's own cost
put together. A POST to a generation route whose body is JSON that the route's own model accepts is
validated here exactly as FastAPI would (``json.loads``, then the model), and the model is passed to the
very endpoint function FastAPI would call; an HTTPException it raises is answered by the app's own
handler. Anything else (a body that does not parse or validate, a chunked body, any other route) goes
to FastAPI untouched with its body replayed, so every refusal keeps its one shape and its one count, and
the OpenAPI schema stays the app's own: this module only skips work, it decides nothing.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

Endpoint = Callable[[BaseModel], Awaitable]


def direct_routes(app: FastAPI, paths: tuple[str, ...]) -> dict[str, tuple[type[BaseModel], Endpoint]]:
    """The POST routes among ``paths`` that can be called directly: an ``async`` endpoint taking one
    pydantic body and nothing else (no query, path, header or dependency parameters). It must return a
    Response (the service's serialize their answer once, with pydantic)."""
    out = {}
    for route in app.routes:
        if not isinstance(route, APIRoute) or route.path not in paths or route.methods != {"POST"}:
            continue
        d = route.dependant
        if (len(d.body_params) != 1 or d.query_params or d.path_params or d.header_params or d.cookie_params
                or d.dependencies or not inspect.iscoroutinefunction(route.endpoint)):
            continue
        model = d.body_params[0].field_info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            out[route.path] = (model, route.endpoint)
    return out


class FastPath:
    """Pure ASGI middleware that calls ``routes``' endpoints directly (see the module docstring). It sits
    inside the request guard, which has already refused oversized and non-JSON bodies."""

    def __init__(self, app, routes: Callable[[], dict[str, tuple[type[BaseModel], Endpoint]]],
                 http_error: Callable[[], Callable]) -> None:
        # both resolved on first use: the routes and handlers exist only once the app is assembled
        self.app, self._routes, self._http_error = app, routes, http_error
        self.routes: dict[str, tuple[type[BaseModel], Endpoint]] | None = None

    async def __call__(self, scope, receive, send):
        if self.routes is None:
            self.routes = self._routes()
        route = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None or not _declares_length(scope):
            return await self.app(scope, receive, send)
        body = await _read_body(receive)
        if body is None:  # the client left before its body arrived: nobody to answer
            return
        model, endpoint = route
        try:
            request = model.model_validate(json.loads(body))
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or not what the model accepts
            return await self.app(scope, _replay(body, receive), send)
        try:
            response = await endpoint(request)
        except StarletteHTTPException as exc:
            response = await self._http_error()(Request(scope, receive), exc)
        if not isinstance(response, Response):  # FastAPI would serialize it; here nobody would
            raise TypeError(f"{endpoint.__qualname__} returned {type(response).__name__}: an endpoint on the fast "
                            "path returns a Response (services/inference/calls.py answer)")
        await response(scope, receive, send)


def _declares_length(scope) -> bool:
    """Whether the request says its body's length (a chunked one is left to FastAPI and the guard's count)."""
    return any(name == b"content-length" for name, _ in scope["headers"])


async def _read_body(receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive):
    """A ``receive`` that gives ``body`` once, then whatever the client sends (its disconnect)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
