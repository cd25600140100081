"""The serving benchmark's floor: what one request costs on this machine with no service at all — a bare
ASGI app (no FastAPI, no model, no thread hop) behind the same uvicorn, HTTP parser and event loop as the
service (services/inference/__main__.py http_stack), answering every POST with a fixed body shaped like a
/v1/generate answer whose ``latency_s`` is 0. Timed by the same client as the services
(benchmarks/serving.py ``--floor``), its client latency is the part of the overhead no service can remove:
the client, the kernel's loopback, uvicorn's parsing and writing.

Answering at once flatters that floor: between a service's request and its answer the engine works for
tens of milliseconds, long enough for the idle event loop, and the client blocked on its answer, to wake
up cold (on a small VM, an idle vCPU's wake-up and cold caches cost several times the hot path). So the
floor can also **hold** each answer: ``POST /hold {"seconds": s, "on": "loop" | "thread"}`` makes every
later answer wait ``s`` — on the event loop (``asyncio.sleep``: the least any server can do while its
engine works) or on a worker thread (one hop there and back: the shape of any service that keeps its
event loop free for scrapes while it generates) — and report the wait as its ``latency_s``, so the
overhead is again only what waiting costs beyond the wait.

    python benchmarks/serving_floor.py --port 8123      (benchmarks/serving.py starts it itself)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.inference.serving_thread import ServingThread  # noqa: E402


HOLD_ON = ("loop", "thread")


def answer(tokens: int = 16, latency_s: float = 0.0) -> bytes:
    """A body of the size and shape a 16-token /v1/generate answer has (text, ids, counts, timings)."""
    return json.dumps({
        "model": "tiny", "config": "floor", "text": "    return sorted(set(numbers))[:k]  # x" * 1,
        "token_ids": list(range(1000, 1000 + tokens)), "prompt_tokens": 12, "completion_tokens": tokens,
        "finish_reason": "length", "latency_s": latency_s, "first_token_at": None, "seed": None,
    }).encode()


#: the floor's one worker thread: the service's own serving thread and hand-over (a SimpleQueue there, one
#: call_soon_threadsafe back), so the floor held on a thread pays exactly the hops a service pays
_worker = ServingThread("floor-worker")


def _wait(seconds: float) -> float:
    started = time.time()
    time.sleep(seconds)
    return time.time() - started


async def hold_for(seconds: float, on: str) -> float:
    """Wait ``seconds`` on the event loop or on the worker thread; the wait as measured (seconds)."""
    if on == "loop":
        started = time.time()
        await asyncio.sleep(seconds)
        return time.time() - started
    return await _worker.run_on_loop(lambda: _wait(seconds))


def make_app(tokens: int = 16):
    body = answer(tokens)
    hold = {"seconds": 0.0, "on": "loop"}

    def headers(content: bytes) -> list:
        return [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        chunks, more = [], True
        while more:  # read the request's body, as any endpoint must
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        content, status = body, 200 if scope["path"] in ("/v1/generate", "/ready") else 404
        if scope["path"] == "/hold":
            try:
                asked = json.loads(b"".join(chunks))
                seconds, on = float(asked["seconds"]), asked.get("on", "loop")
                if not 0 <= seconds <= 60 or on not in HOLD_ON:
                    raise ValueError(f"seconds in [0, 60] and on in {HOLD_ON}")
                hold.update(seconds=seconds, on=on)
                content, status = json.dumps(hold).encode(), 200
            except (ValueError, KeyError, TypeError) as exc:
                content, status = json.dumps({"detail": f"bad hold: {exc}"}).encode(), 422
        elif status == 200 and scope["path"] == "/v1/generate" and hold["seconds"] > 0:
            content = answer(tokens, await hold_for(hold["seconds"], hold["on"]))
        await send({"type": "http.response.start", "status": status, "headers": headers(content)})
        await send({"type": "http.response.body", "body": content})

    return app


def main(argv=None) -> int:
    import uvicorn

    from services.inference.__main__ import http_stack

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tokens", type=int, default=16)
    args = p.parse_args(argv)
    stack = http_stack()
    uvicorn.run(make_app(args.tokens), host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False, http=stack["http"], loop=stack["loop"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
