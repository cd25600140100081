"""How the service under test is started: ``native`` (a subprocess here) now, ``docker`` later.

A service is started in its own session, so a Ctrl-C in the terminal reaches only the bench, which
then stops the service itself, in order; on Linux it also dies with the bench (PDEATHSIG) if the
bench is killed outright, so no orphan keeps a core busy under the next run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
RUNNER_CHOICES = ("auto", "native", "docker")


class RunnerError(RuntimeError):
    """The service could not be started, or stopped being there."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent() -> None:
    """preexec_fn: ask Linux to SIGTERM this child when the bench process dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def child_env(**extra: str) -> dict[str, str]:
    """The bench's environment with the repository importable (children run ``python -m ...``)."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **extra}


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = Path(path).read_text(errors="replace").rstrip().splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(log is empty)"


def docker_answers(timeout: float = 15) -> tuple[bool, str]:
    """Whether a Docker engine answers ``docker info`` (and, if not, why not)."""
    try:
        out = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                             text=True, timeout=timeout)
    except FileNotFoundError:
        return False, "the docker command is not installed"
    except subprocess.TimeoutExpired:
        return False, f"'docker info' did not answer within {timeout:.0f} s"
    if out.returncode != 0:
        msg = (out.stderr or out.stdout).strip().splitlines()
        return False, f"'docker info' failed: {msg[-1] if msg else 'exit ' + str(out.returncode)}"
    return True, f"Docker engine {out.stdout.strip()} answers"


def choose_runner(requested: str, probe: Callable[[], tuple[bool, str]] = docker_answers) -> tuple[str, str]:
    """(runner, why). ``docker`` asked for explicitly is refused until the docker runner exists."""
    requested = (requested or "auto").strip().lower()
    if requested not in RUNNER_CHOICES:
        raise RunnerError(f"unknown runner {requested!r}; choose from {', '.join(RUNNER_CHOICES)}")
    if requested == "docker":
        raise RunnerError("the docker runner is not available yet (it comes with the images issue); "
                          "use --runner native (RUNNER=native)")
    if requested == "native":
        return "native", "asked for"
    ok, why = probe()
    if ok:
        return "native", f"{why}, but the docker runner is not built yet: falling back to native"
    return "native", f"{why}: using native"


class NativeService:
    """``python -m services.inference`` as a subprocess on a free loopback port."""

    def __init__(self, config: str, model: str, *, threads: int, precision: str, log_path: Path,
                 revision: str | None = None, trust_remote_code: bool = False) -> None:
        self.config, self.model = config, model
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        argv = [sys.executable, "-m", "services.inference", "--config", config, "--model", model,
                "--host", "127.0.0.1", "--port", str(self.port), "--threads", str(threads),
                "--precision", precision, "--log-level", "info"]
        if revision:
            argv += ["--revision", revision]
        if trust_remote_code:
            argv.append("--trust-remote-code")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=child_env(), stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent)
        self.client = httpx.Client(base_url=self.url, timeout=10)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def died(self, when: str) -> RunnerError:
        return RunnerError(f"the {self.config} service exited with code {self.proc.returncode} {when}; "
                           f"last lines of {self.log_path}:\n{log_tail(self.log_path)}")

    def wait_ready(self, timeout: float) -> None:
        """Poll ``/ready`` until 200; fail at once (with the log's tail) if the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise self.died("while loading")
            try:
                if self.client.get("/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RunnerError(f"the {self.config} service was not ready after {timeout:.0f} s "
                          f"(raise --ready-timeout for big models); last lines of {self.log_path}:\n"
                          f"{log_tail(self.log_path)}")

    def info(self) -> dict:
        r = self.client.get("/info")
        r.raise_for_status()
        return r.json()

    def stop(self, grace: float = 15) -> int | None:
        """SIGTERM (uvicorn shuts down cleanly), then SIGKILL after ``grace`` seconds."""
        self.client.close()
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
