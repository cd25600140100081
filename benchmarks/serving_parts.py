"""The parts of the serving benchmark (benchmarks/serving.py): a service process started from a checkout,
an in-process worker, and a lean keep-alive HTTP client that times one request as a client sees it.

The client is ``http.client`` on one keep-alive connection: the lightest client the standard library has,
so that what it adds to a request is small and the same for every service it times. The engine's own
time comes from the service: ``latency_s`` in a /v1/generate answer; for a stream (no such field), the
increase of the service's ``wattserve_request_latency_seconds_sum`` over the request (its /metrics).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LATENCY_SUM = "wattserve_request_latency_seconds_sum"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss(pid: int | str = "self") -> int:
    """Peak resident set size (VmHWM) of a live process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


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


class ServiceProcess:
    """``python -m services.inference`` from a checkout (this one, or another's for a before/after
    comparison), on a free loopback port; ready when /ready says 200."""

    def __init__(self, config: str, model: str, threads: int, root: Path = ROOT, python: str = sys.executable,
                 log: Path | None = None, without: tuple[str, ...] = ()):
        self.config, self.root, self.port = config, Path(root), free_port()
        self.log = open(log, "w") if log else subprocess.DEVNULL
        path = [str(self.root)]
        if without:  # e.g. a checkout from before httptools/uvloop served it, with the venv it had then
            self._hidden = tempfile.TemporaryDirectory(prefix="wattserve-without-")
            for module in without:
                (Path(self._hidden.name) / f"{module}.py").write_text(
                    f"raise ImportError('{module} hidden by benchmarks/serving.py --baseline-without')\n")
            path.insert(0, self._hidden.name)
        self.proc = subprocess.Popen(
            [python, "-m", "services.inference", "--config", config, "--model", model, "--port", str(self.port),
             "--threads", str(threads), "--log-level", "warning"],
            cwd=self.root, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(path)})

    def wait_ready(self, timeout: float) -> float:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.config} service from {self.root} exited with {self.proc.returncode}"
                                   + (f"; see {self.log.name}" if hasattr(self.log, "name") else ""))
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/ready")
                if conn.getresponse().status == 200:
                    conn.close()
                    return time.perf_counter() - t0
                conn.close()
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{self.config} service from {self.root} not ready after {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class FloorProcess(ServiceProcess):
    """benchmarks/serving_floor.py: no service, the same HTTP stack, a fixed answer; with ``hold_on``
    ("loop" | "thread") each answer waits as long as ``hold`` says (an engine's time) and reports the wait
    as its latency_s, else it answers at once with latency_s 0."""

    def __init__(self, tokens: int, log: Path | None = None, hold_on: str | None = None):
        self.hold_on = hold_on
        self.config = "http floor" if hold_on is None else f"http floor, held on a {hold_on}"
        self.root, self.port = ROOT, free_port()
        self.log = open(log, "w") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "serving_floor.py"), "--port",
                                      str(self.port), "--tokens", str(tokens)], cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def hold(self, seconds: float) -> None:
        """Make every later answer wait ``seconds`` (on this floor's ``hold_on``)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", "/hold", json.dumps({"seconds": seconds, "on": self.hold_on}),
                         {"Content-Type": "application/json"})
            resp = conn.getresponse()
            if resp.status != 200:
                raise RuntimeError(f"the floor refused its hold: {resp.read()[:200]!r}")
            resp.read()
        finally:
            conn.close()


class InProcessWorker:
    """The same service without HTTP, in a child process that loads the model and then runs batches of
    requests on command (one JSON line in, one out), so in-process and HTTP batches can interleave."""

    def __init__(self, config: str, model: str, threads: int):
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", config, model, str(threads)],
                                     cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.load_s = self._read()["load_s"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"in-process worker exited with {self.proc.wait()}")
        return json.loads(line)

    def run(self, prompts: list[str], tokens: int) -> list[float]:
        self.proc.stdin.write(json.dumps({"prompts": prompts, "tokens": tokens}) + "\n")
        self.proc.stdin.flush()
        return self._read()["latencies"]

    def rss(self) -> int:
        return peak_rss(self.proc.pid)

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


def worker_main(config: str, model: str, threads: int) -> None:
    """The in-process worker's loop (see InProcessWorker)."""
    sys.path.insert(0, str(ROOT))
    from services.inference.configs import ServingConfig
    from services.inference.engines import EngineSettings
    from services.inference.service import InferenceService
    from services.models.cache import cache_root
    from services.models.resolve import resolve

    service = InferenceService(ServingConfig.parse(config), resolve(model),
                               EngineSettings(threads=threads, cache_dir=cache_root()))
    t0 = time.perf_counter()
    service.load()
    print(json.dumps({"load_s": time.perf_counter() - t0}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        lat = [service.generate(p, max_new_tokens=cmd["tokens"], ignore_eos=True).latency_s for p in cmd["prompts"]]
        print(json.dumps({"latencies": lat}), flush=True)


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--worker":
    worker_main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
