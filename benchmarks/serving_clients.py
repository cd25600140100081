"""The serving benchmark's clients (benchmarks/serving.py): each times one request as a client sees it.

``Client`` is ``http.client`` on one keep-alive connection: the lightest client the standard library has,
so that what it adds to a request is small and the same for every service it times. ``RawClient`` writes
the same request's bytes on a bare socket, to show what even that client adds. The engine's own time
comes from the service: ``latency_s`` in a /v1/generate answer; for a stream (no such field), the increase
of the service's ``wattserve_request_latency_seconds_sum`` over the request (its /metrics).
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from dataclasses import dataclass

LATENCY_SUM = "wattserve_request_latency_seconds_sum"


@dataclass
class Timing:
    client_s: float          # send to the whole answer (the stream's [DONE]) at the client
    engine_s: float | None   # the service's engine time for it
    ttft_s: float | None     # send to the first token: the service's clock (non-streamed), the first chunk (streamed)
    tokens: int

    @property
    def overhead_s(self) -> float | None:
        return None if self.engine_s is None else self.client_s - self.engine_s


class Client:
    """One keep-alive connection to a service; ``generate`` (non-streamed /v1/generate) and ``stream``
    (/v1/completions with stream: true) each time one request."""

    def __init__(self, port: int, timeout: float = 600):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def close(self) -> None:
        self.conn.close()

    def reconnect(self) -> None:
        """A fresh connection, opened now (untimed): uvicorn closes one idle for 5 s, as between batches."""
        self.conn.close()
        self.conn.connect()

    def _post(self, path: str, body: dict) -> http.client.HTTPResponse:
        self.conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        return self.conn.getresponse()

    def generate(self, prompt: str, tokens: int) -> Timing:
        body = {"prompt": prompt, "max_new_tokens": tokens, "ignore_eos": True}
        t0, wall0 = time.perf_counter(), time.time()
        resp = self._post("/v1/generate", body)
        data = resp.read()
        client = time.perf_counter() - t0
        if resp.status != 200:
            raise RuntimeError(f"/v1/generate answered {resp.status}: {data[:300]!r}")
        out = json.loads(data)
        first = out.get("first_token_at")
        return Timing(client, out["latency_s"], None if first is None else first - wall0, out["completion_tokens"])

    def engine_seconds(self) -> float:
        """The service's total engine time so far (every endpoint), from its /metrics."""
        self.conn.request("GET", "/metrics")
        text = self.conn.getresponse().read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(LATENCY_SUM))

    def stream(self, prompt: str, tokens: int) -> Timing:
        """A streamed completion read to ``data: [DONE]``; the engine time is the /metrics increase."""
        before = self.engine_seconds()
        body = {"prompt": prompt, "max_tokens": tokens, "ignore_eos": True, "stream": True,
                "stream_options": {"include_usage": True}}
        t0 = time.perf_counter()
        resp = self._post("/v1/completions", body)
        if resp.status != 200:
            raise RuntimeError(f"/v1/completions (stream) answered {resp.status}: {resp.read()[:300]!r}")
        first, usage = None, 0
        for line in resp:  # http.client undoes the chunked encoding; events are "data: ..." lines
            if not line.startswith(b"data: "):
                continue
            payload = line[6:].strip()
            if payload == b"[DONE]":
                break
            chunk = json.loads(payload)
            if first is None and any(c.get("text") for c in chunk.get("choices") or []):
                first = time.perf_counter() - t0
            usage = (chunk.get("usage") or {}).get("completion_tokens", usage)
        resp.read()
        client = time.perf_counter() - t0
        # the service counts a stream once it has ended, which may be just after [DONE] left it
        for _ in range(100):
            engine = self.engine_seconds() - before
            if engine > 0:
                break
            time.sleep(0.002)
        return Timing(client, engine if engine > 0 else None, first, usage)


class RawClient(Client):
    """The same non-streamed request over a bare keep-alive socket: the request's bytes written in one
    send, the answer read by its Content-Length — none of http.client's header objects. What it saves
    against ``Client`` is the standard library's own cost, measured by running both (``--client``);
    the service's work is the same. Streams and /metrics still go through ``Client``'s connection."""

    def __init__(self, port: int, timeout: float = 600):
        super().__init__(port, timeout)
        self.timeout, self.sock, self.buf = timeout, None, b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        super().close()

    def reconnect(self) -> None:
        super().reconnect()
        if self.sock is not None:
            self.sock.close()
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _read_answer(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the service closed the connection mid-answer")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = next(int(x.split(b":", 1)[1]) for x in lines[1:] if x[:15].lower() == b"content-length:")
        while len(self.buf) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the service closed the connection mid-answer")
            self.buf += chunk
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, body

    def generate(self, prompt: str, tokens: int) -> Timing:
        if self.sock is None:
            self.reconnect()
        body = json.dumps({"prompt": prompt, "max_new_tokens": tokens, "ignore_eos": True}).encode()
        request = (b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        t0, wall0 = time.perf_counter(), time.time()
        self.sock.sendall(request)
        status, data = self._read_answer()
        client = time.perf_counter() - t0
        if status != 200:
            raise RuntimeError(f"/v1/generate answered {status}: {data[:300]!r}")
        out = json.loads(data)
        first = out.get("first_token_at")
        return Timing(client, out["latency_s"], None if first is None else first - wall0, out["completion_tokens"])


CLIENTS = {"stdlib": Client, "raw": RawClient}
