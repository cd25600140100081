"""Helpers for the loadgen tests: the bench as a real subprocess, and watching its run folders."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT

# fast, still real: tiny model, 8 new tokens, one thread (a shared 2-core box makes 2 torch threads
# spin against other processes), short idle windows
QUICK = ["--model", "tiny", "--max-new-tokens", "8", "--warmup", "0.5", "--cooldown", "0.5", "--threads", "1"]


def bench_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("CONFIG", "PRECISION", "MODEL", "REPS", "WARMUP", "COOLDOWN", "PROMPTS", "RESULTS", "RUNNER", "PRESET")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env["RUNNER"] = "native"  # skip the docker probe
    env["WATTSERVE_STACK"] = "off"  # never join a live stack someone has up (tests/docker/test_bench_stack.py does)
    env.update(extra)
    return env


def run_bench(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loadgen.bench", *args], cwd=ROOT, env=bench_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def start_bench(*args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "loadgen.bench", *args], cwd=ROOT, env=bench_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_dirs(results: Path) -> list[Path]:
    return sorted(p for p in Path(results).glob("*-r*") if p.is_dir())


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def recorded_rows(run_dir: Path) -> int:
    """Requests the Locust replay of a run in progress has recorded so far."""
    raw = Path(run_dir) / "requests.raw.csv"
    if not raw.exists():
        return 0
    with open(raw, newline="") as fh:
        return max(0, sum(1 for _ in csv.reader(fh)) - 1)


def gone(p: psutil.Process) -> bool:
    """The process has exited (a zombie has too: only its parent's wait is left)."""
    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_for_rows(results: Path, n: int, proc: subprocess.Popen, timeout: float = 180) -> Path:
    """Wait until the single run in ``results`` has recorded ``n`` requests; return its folder."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"bench exited early:\n{proc.stdout.read()}"
        for d in run_dirs(results):
            if recorded_rows(d) >= n:
                return d
        time.sleep(0.1)
    raise TimeoutError(f"no run reached {n} requests in {timeout}s")


@pytest.fixture(scope="session")
def tiny_ready(tiny):
    """The tiny model is built (once) before any bench starts."""
    return tiny
from tests.exporters.conftest import start_exporter  # noqa: F401  (the sampler tests run real exporters)
