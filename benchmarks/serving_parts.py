"""The processes of the serving benchmark (benchmarks/serving.py): a service started from a checkout, the
floor app (benchmarks/serving_floor.py) and an in-process worker; the clients that time them are in
benchmarks/serving_clients.py."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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


def floor_name(hold_on: str | None) -> str:
    """A floor's row name: "http floor", or "http floor, held on a loop" / "... on a thread"."""
    return "http floor" if hold_on is None else f"http floor, held on a {hold_on}"


class FloorProcess(ServiceProcess):
    """benchmarks/serving_floor.py: no service, the same HTTP stack, a fixed answer; with ``hold_on``
    ("loop" | "thread") each answer waits as long as ``hold`` says (an engine's time) and reports the wait
    as its latency_s, else it answers at once with latency_s 0."""

    def __init__(self, tokens: int, log: Path | None = None, hold_on: str | None = None):
        self.hold_on = hold_on
        self.config = floor_name(hold_on)
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
