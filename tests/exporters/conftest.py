"""Exporters under test run as they do in production: ``python -m services.exporters.<name>`` in a
subprocess, scraped over real HTTP. Only the hardware behind them is simulated (see fakes.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


class Metrics:
    """One scrape: samples by name, matched by a subset of labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [s for fam in text_string_to_metric_families(text) for s in fam.samples]

    def all(self, name: str, **labels: str) -> list:
        return [s for s in self.samples
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]

    def get(self, name: str, **labels: str) -> float:
        found = self.all(name, **labels)
        assert len(found) == 1, f"{name}{labels}: {len(found)} samples in\n{self.text}"
        return found[0].value

    def has(self, name: str, **labels: str) -> bool:
        return bool(self.all(name, **labels))


def scrape(url: str) -> Metrics:
    r = httpx.get(url, timeout=5)
    r.raise_for_status()
    return Metrics(r.text)


class ExporterProcess:
    def __init__(self, name: str, args: list[str], tmp: Path, env: dict | None = None,
                 prefix: list[str] | None = None, timeout: float = 15) -> None:
        self.name = name
        ready = tmp / f"{name}-{time.monotonic_ns()}.ready"
        self.log_path = tmp / f"{name}-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", f"services.exporters.{name}", "--port", "0",
             "--ready-file", str(ready), *args],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} exporter did not start ({self.proc.poll()}):\n{self.output()}")
            time.sleep(0.02)
        self.url = json.loads(ready.read_text())["url"]

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def scrape(self) -> Metrics:
        return scrape(self.url)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def start_exporter(tmp_path):
    started: list[ExporterProcess] = []

    def start(name: str, *args: str, env: dict | None = None, prefix: list[str] | None = None) -> ExporterProcess:
        p = ExporterProcess(name, list(args), tmp_path, env, prefix)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def script(tmp_path: Path, name: str, source: Path) -> Path:
    """An executable ``name`` in tmp_path that runs a fake's Python source with this interpreter."""
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\nexec {sys.executable} {source} \"$@\"\n")
    path.chmod(0o755)
    return path


def wait_for(pred, timeout: float = 5.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


class PortHolder:
    """Another program holding a port: ``python -m http.server`` listening on (addr, a free port), so a
    test can check that whoever asks for the same port fails cleanly and leaves this one alive."""

    def __init__(self, addr: str = "127.0.0.1") -> None:
        import socket

        with socket.socket() as s:
            s.bind((addr, 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen([sys.executable, "-m", "http.server", str(self.port), "--bind", addr],
                                     cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}/"
        if not wait_for(self.serving, 15):
            self.close()
            raise RuntimeError(f"http.server did not start on {addr}:{self.port}")

    def serving(self) -> bool:
        try:
            return self.proc.poll() is None and httpx.get(self.url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture(params=["127.0.0.1", "0.0.0.0"])
def port_holder(request):
    """A port held on loopback, then on every address (which a loopback bind conflicts with too)."""
    holder = PortHolder(request.param)
    yield holder
    holder.close()
