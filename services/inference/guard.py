"""The ASGI guard in front of the app: oversized bodies get 413 before they are buffered, non-JSON
bodies get 415 (FastAPI alone would read any body whole into memory before validating it)."""

from __future__ import annotations

import email.message
import functools
import json
from collections.abc import Callable

from fastapi import HTTPException
from starlette.datastructures import Headers


@functools.lru_cache(maxsize=256)  # every request of a client sends the same header: parse it once
def is_json(content_type: str | None) -> bool:
    """application/json or application/*+json, parameters allowed (as FastAPI decides what it parses)."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


class RequestGuard:
    """Pure ASGI middleware in front of the app: a body over ``max_bytes`` gets 413 before it is
    buffered (at once from Content-Length, else counted as it streams in), and a POST body that is not
    JSON gets 415. Without it FastAPI reads any body whole into memory before validating it."""

    def __init__(self, app, max_bytes: int, on_refused: Callable[[str, int], None] | None = None) -> None:
        self.app, self.max_bytes, self.on_refused = app, max_bytes, on_refused

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":  # the only method that takes a body here
            return await self.app(scope, receive, send)
        path, headers = scope["path"], Headers(scope=scope)
        declared = headers.get("content-length", "").strip()
        declared_n = int(declared) if declared.isdigit() else None
        if declared_n is not None and declared_n > self.max_bytes:
            return await self.refuse(send, path, 413, self.too_large(f"{declared_n} bytes"))
        has_body = bool(declared_n) or "chunked" in headers.get("transfer-encoding", "").lower()
        if has_body and not is_json(headers.get("content-type")):
            return await self.refuse(send, path, 415, "the body must be JSON, sent with Content-Type: "
                                     f"application/json (got {headers.get('content-type') or 'no Content-Type'})")
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if self.on_refused:
                        self.on_refused(path, 413)
                    # FastAPI re-raises an HTTPException from reading the body; the connection closes
                    # so the rest of the body is never read
                    raise HTTPException(413, self.too_large(f"more than {self.max_bytes} bytes"),
                                        headers={"Connection": "close"})
            return message

        await self.app(scope, limited_receive, send)

    def too_large(self, size: str) -> str:
        return (f"request body is {size}; at most {self.max_bytes} bytes are accepted "
                "(python -m services.inference --max-body-bytes, WATTSERVE_MAX_BODY_BYTES)")

    async def refuse(self, send, path: str, status: int, detail: str) -> None:
        if self.on_refused:
            self.on_refused(path, status)
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})  # the unread body is never read: close
        await send({"type": "http.response.body", "body": body})
