"""Phase boundaries as the bench process sees them: a sensor scrape and a CPU snapshot at each edge.

The inference window is the requests' span (first request sent → last answer received), and only the
Locust process knows when those two moments come. So the bench serves one tiny loopback endpoint,
``GET /mark/<name>``, that the locustfile calls just before it sends the first request
(``inference_start``) and just after it has the last answer (``inference_end``); each call scrapes every
sensor at once (``Sampler.mark``) and snapshots the harness and service CPU. The bench's own phase
edges (load, idle before/after) are marked the same way, in-process. Two calls per run: nothing on the
request path in between.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

MARK_NAMES = ("inference_start", "inference_end")


class MarkServer:
    """``GET /mark/<name>`` on 127.0.0.1 (a free port) → ``on_mark(name)``, answered 204 once it returned.
    Unknown names get 404; a failing callback 500 (the replay goes on: the edge is then interpolated)."""

    def __init__(self, on_mark: Callable[[str], None]) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                name = self.path.rstrip("/").rsplit("/", 1)[-1]
                if not self.path.startswith("/mark/") or name not in MARK_NAMES:
                    self.send_error(404, f"marks are {', '.join(MARK_NAMES)}")
                    return
                try:
                    on_mark(name)
                except Exception as exc:  # noqa: BLE001 - reported to the caller and kept
                    outer.errors.append(f"{name}: {type(exc).__name__}: {exc}")
                    self.send_error(500, str(exc)[:200])
                    return
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:  # quiet
                pass

        self.errors: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="marks", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/mark"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Edges:
    """What happened at each marked edge: {name: {"t": epoch s, "scraped": bool, "cpu": snapshot}}."""

    def __init__(self, sampler, snapshot: Callable[[], object] | None = None) -> None:
        self.sampler, self.snapshot = sampler, snapshot
        self.seen: dict[str, dict] = {}
        self._lock = threading.Lock()

    def mark(self, name: str, *, scrape_first: bool) -> float:
        """An edge now. ``scrape_first``: the scrape lies just before the edge (an opening edge: the
        window then starts after its sample); otherwise just after it (a closing edge). Returns the
        edge's time (epoch s, this process's clock)."""
        mark = getattr(self.sampler, "mark", None)
        scraped = False
        if scrape_first and mark:
            scraped = bool(mark())
        cpu = self.snapshot() if self.snapshot else None
        t = time.time()
        if not scrape_first and mark:
            scraped = bool(mark())
        with self._lock:
            self.seen[name] = {"t": t, "scraped": scraped, "cpu": cpu}
        return t

    def on_request_edge(self, name: str) -> None:
        """For the MarkServer: the replay's first request is about to go / its last answer is in. Inside
        the window the sampler only fetches (``defer``): its parsing and writing wait until after it."""
        opening = name.endswith("_start")
        defer = getattr(self.sampler, "defer", None)
        if defer and not opening:
            defer(False)
        self.mark(name, scrape_first=opening)
        if defer and opening:
            defer(True)
