"""The serving benchmark's floor: what one request costs on this machine with no service at all — a bare
ASGI app (no FastAPI, no model, no thread hop) behind the same uvicorn, HTTP parser and event loop as the
service (services/inference/__main__.py http_stack), answering every POST with a fixed body shaped like a
/v1/generate answer whose ``latency_s`` is 0. Timed by the same client as the services
(benchmarks/serving.py ``--floor``), its client latency is the part of the overhead no service can remove:
the client, the kernel's loopback, uvicorn's parsing and writing.

    python benchmarks/serving_floor.py --port 8123      (benchmarks/serving.py starts it itself)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def answer(tokens: int = 16) -> bytes:
    """A body of the size and shape a 16-token /v1/generate answer has (text, ids, counts, timings)."""
    return json.dumps({
        "model": "tiny", "config": "floor", "text": "    return sorted(set(numbers))[:k]  # x" * 1,
        "token_ids": list(range(1000, 1000 + tokens)), "prompt_tokens": 12, "completion_tokens": tokens,
        "finish_reason": "length", "latency_s": 0.0, "first_token_at": None, "seed": None,
    }).encode()


def make_app(body: bytes):
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        more = True
        while more:  # read the request's body, as any endpoint must
            message = await receive()
            more = message.get("more_body", False)
        status = 200 if scope["path"] in ("/v1/generate", "/ready") else 404
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def main(argv=None) -> int:
    import uvicorn

    from services.inference.__main__ import http_stack

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tokens", type=int, default=16)
    args = p.parse_args(argv)
    stack = http_stack()
    uvicorn.run(make_app(answer(args.tokens)), host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False, http=stack["http"], loop=stack["loop"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
