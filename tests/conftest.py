"""Shared fixtures: the locally built ``tiny`` model and a real uvicorn server per configuration."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]

# A suite started in the background (``make test &``, nohup, a job runner) inherits SIGINT ignored, and so
# would every bench it starts: Python keeps an ignored SIGINT ignored, and the Ctrl-C tests' SIGINT would
# do nothing. Handled here, it is the default again in every child, as in a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny():
    """The ``tiny`` model, built into the wattserve cache on first use (about two minutes, once)."""
    from services.models.resolve import resolve

    return resolve("tiny")


@pytest.fixture(scope="session")
def cache_dir(tiny) -> Path:
    from services.models.cache import cache_root

    return cache_root()


def server_env() -> dict[str, str]:
    """A test server's environment: OpenMP's idle threads sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE),
    so the session's servers on a 2-core CI machine do not starve each other and the test's own client
    while idle. It changes how fast idle threads wake, never what they compute (the same tokens); the
    bench leaves the engines' policy alone, since it changes the energy they measure."""
    return {"OMP_WAIT_POLICY": "PASSIVE", **os.environ}


class Server:
    """``python -m services.inference`` in a subprocess, on a free loopback port, really over HTTP."""

    def __init__(self, config: str, model: str = "tiny", *extra: str, ready_timeout: float = 300):
        self.config, self.port = config, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(ROOT / ".pytest_cache" / f"server-{config}-{self.port}.log", "w+") if (ROOT / ".pytest_cache").exists() else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.inference", "--config", config, "--model", model,
             "--port", str(self.port), "--log-level", "warning", *extra],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env=server_env(),
        )
        self.client = httpx.Client(base_url=self.url, timeout=120)
        self.wait_ready(ready_timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.config} server exited with {self.proc.returncode}")
            try:
                if self.client.get("/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{self.config} server not ready after {timeout}s")

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="session")
def start_server(tiny):
    servers: dict[str, Server] = {}

    def start(config: str) -> Server:
        if config not in servers:
            from services.inference.configs import ServingConfig
            from services.inference.engines import engine_class

            problem = engine_class(ServingConfig.parse(config).engine).missing()  # an opt-in engine
            if problem:
                pytest.skip(f"{config}: {problem}")
            servers[config] = Server(config)
        return servers[config]

    yield start
    for s in servers.values():
        s.stop()
