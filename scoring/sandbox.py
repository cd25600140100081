"""Where a completion runs: a throw-away sandbox, never the bench's or the service's process.

Three isolations, chosen by :func:`choose` (``auto`` = the first that works here):

- ``docker`` — one container per completion from the small image ``wattserve-sandbox`` (built on the
  local base ``wattserve-base:bookworm`` on first use): no network, read-only root, a non-root user,
  every capability dropped, no-new-privileges, memory / CPU / pids limits, a small tmpfs as its only
  writable place, killed and removed at its wall-clock limit.
- ``namespace`` — a child process (``unshare``) in its own network, PID and mount namespaces: every
  mount read-only, a private tmpfs on /tmp, /var/tmp and /dev/shm as its own temp dir, run as
  ``nobody`` without capabilities, RLIMIT_AS / CPU / NPROC / FSIZE / NOFILE, killed (its whole PID
  namespace) at its wall-clock limit. Needs root (mounts, the uid change).
- ``unsafe-local`` — a plain child process with the same rlimits and nothing else; only when asked
  for by name (``--unsafe-local-exec``), and every result says ``unsafe-local``.

The program itself runs under scoring/harness.py inside the sandbox, which reports how it ended.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from loadgen.runners import docker_answers, docker_bin

HERE = Path(__file__).resolve().parent
HARNESS = HERE / "harness.py"
DOCKERFILE = HERE.parents[0] / "images" / "sandbox" / "Dockerfile"
ISOLATIONS = ("auto", "docker", "namespace", "unsafe-local")
OUTCOMES = ("passed", "assertion", "timeout", "syntax_error", "crash")
SANDBOX_UID = 65534            # nobody
HOW_TO_ENABLE = (
    "start a Docker engine this user may use (scripts/docker/start-dockerd.sh; the image is built "
    "on first use from wattserve-base:bookworm, scripts/docker/build-base.sh), or run as root on a "
    "Linux host with util-linux unshare/setpriv (the namespace sandbox); --unsafe-local-exec runs "
    "completions without isolation, labelled unsafe-local in every result")


class SandboxUnavailable(RuntimeError):
    """No isolation that was asked for works here; the message says why and how to enable one."""


@dataclass(frozen=True)
class Limits:
    """Per completion. ``time_s`` is the program's CPU and wall-clock budget; ``start_s`` the extra
    wall-clock allowance for starting the sandbox (a container start), never given to the program."""
    time_s: float = 5.0
    start_s: float = 15.0
    memory_mib: int = 512
    processes: int = 32
    file_mib: int = 8
    tmp_mib: int = 16
    cpus: float = 1.0

    def __post_init__(self):
        for name in ("time_s", "memory_mib", "processes", "file_mib", "tmp_mib", "cpus"):
            if not getattr(self, name) > 0:
                raise ValueError(f"sandbox limit {name} must be > 0, got {getattr(self, name)!r}")

    def harness(self, processes: bool) -> dict:
        out = {"memory_mib": self.memory_mib, "cpu_s": max(1, int(self.time_s + 0.999)),
               "file_mib": self.file_mib}
        if processes:
            out["processes"] = self.processes
        return out


@dataclass
class Execution:
    """How one program ended in its sandbox."""
    outcome: str           # one of OUTCOMES
    detail: str
    seconds: float


def _parse(stdout: str, nonce: str, returncode: int) -> tuple[str, str]:
    for line in reversed((stdout or "").strip().splitlines()):
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and msg.get("nonce") == nonce and msg.get("outcome") in OUTCOMES:
            return msg["outcome"], str(msg.get("detail", ""))
    if returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        return "timeout", "CPU time limit (SIGXCPU)"
    if returncode in (-signal.SIGKILL, 128 + signal.SIGKILL, 137):
        return "crash", "killed (SIGKILL: memory limit or a kill from inside)"
    return "crash", f"exited (status {returncode}) before the tests finished"


def _reported(stdout: str, nonce: str) -> bool:
    return any(f'"nonce": "{nonce}", "outcome"' in line for line in (stdout or "").splitlines())


class Sandbox:
    name = "?"

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits()

    def command(self, tag: str) -> list[str]:
        raise NotImplementedError

    def kill(self, proc: subprocess.Popen, tag: str) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def job(self, program: str, nonce: str, workdir: str) -> dict:
        return {"program": program, "nonce": nonce, "workdir": workdir,
                "limits": self.limits.harness(processes=True)}

    def env(self) -> dict | None:
        return None

    def workdir(self):
        """The program's own temp dir (a context manager): the sandbox's private /tmp."""
        return contextlib.nullcontext("/tmp")

    def run(self, program: str) -> Execution:
        with self.workdir() as workdir:
            return self._run(program, workdir)

    def _run(self, program: str, workdir: str) -> Execution:
        nonce = secrets.token_hex(16)
        tag = "wattserve-score-" + secrets.token_hex(6)
        t0 = time.monotonic()
        proc = subprocess.Popen(self.command(tag), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, start_new_session=True, env=self.env())
        try:
            out, ran_s = self._watch(proc, tag, json.dumps(self.job(program, nonce, workdir)), nonce)
        finally:
            self.cleanup(tag)
        if out is None:
            return Execution("timeout", f"wall-clock limit ({self.limits.time_s:g} s)", time.monotonic() - t0)
        outcome, detail = _parse(out, nonce, proc.returncode)
        if not _reported(out, nonce) and ran_s >= self.limits.time_s * 0.9:   # killed at its CPU limit
            outcome, detail = "timeout", f"CPU time limit ({self.limits.time_s:g} s)"
        return Execution(outcome, detail, time.monotonic() - t0)

    def _watch(self, proc: subprocess.Popen, tag: str, job: str, nonce: str) -> tuple[str | None, float]:
        """The harness's output, or None when it overran: ``start_s`` to say it started, then
        ``time_s`` (+ a little) for the program. Also how long the program ran."""
        try:
            proc.stdin.write(job.encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        started_marker = json.dumps({"nonce": nonce, "started": True}).encode()
        fd = proc.stdout.fileno()
        buf, started = b"", None
        deadline = time.monotonic() + self.limits.start_s
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    if time.monotonic() < deadline:
                        continue
                    self.kill(proc, tag)
                    proc.wait()
                    return None, 0.0
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                buf = (buf + chunk)[-(1 << 20):]   # a program writing to the report fd cannot flood us
                if started is None and started_marker in buf:
                    started = time.monotonic()
                    deadline = started + self.limits.time_s + 0.5
        proc.wait()
        proc.stdout.close()
        return buf.decode("utf-8", "replace"), (time.monotonic() - started) if started else 0.0

    def cleanup(self, tag: str) -> None:
        pass

    def describe(self) -> dict:
        return {"isolation": self.name, "limits": asdict(self.limits)}


# ------------------------------------------------------------------------------------ docker

def sandbox_image_tag(base_image: str) -> str:
    """``wattserve-sandbox:<digest of the harness, Dockerfile and base>``: a changed harness gets a
    new image, never a stale one."""
    h = hashlib.sha256()
    for part in (HARNESS.read_bytes(), DOCKERFILE.read_bytes(), base_image.encode()):
        h.update(part)
    return f"{os.environ.get('WATTSERVE_SANDBOX_IMAGE') or 'wattserve-sandbox'}:{h.hexdigest()[:12]}"


class DockerSandbox(Sandbox):
    name = "docker"

    def __init__(self, limits: Limits | None = None, base_image: str | None = None):
        super().__init__(limits)
        self.base_image = base_image or os.environ.get("WATTSERVE_BASE_IMAGE") or "wattserve-base:bookworm"
        self.image = sandbox_image_tag(self.base_image)
        self.docker = docker_bin()

    def ensure_image(self) -> None:
        docker = self.docker
        if subprocess.run([docker, "image", "inspect", self.image], capture_output=True).returncode == 0:
            return
        if subprocess.run([docker, "image", "inspect", self.base_image], capture_output=True).returncode != 0:
            raise SandboxUnavailable(f"the sandbox image's base {self.base_image} does not exist "
                                     "(scripts/docker/build-base.sh builds it)")
        with tempfile.TemporaryDirectory() as ctx:
            shutil.copy(HARNESS, Path(ctx) / "harness.py")
            out = subprocess.run([docker, "build", "-q", "-f", str(DOCKERFILE), "--build-arg",
                                  f"BASE_IMAGE={self.base_image}", "-t", self.image, ctx],
                                 capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise SandboxUnavailable(f"building {self.image} failed: {out.stderr.strip()[-500:]}")

    def command(self, tag: str) -> list[str]:
        lim = self.limits
        return [self.docker, "run", "--rm", "-i", "--name", tag, "--label", "wattserve.role=sandbox",
                "--network", "none", "--read-only", "--user", f"{SANDBOX_UID}:{SANDBOX_UID}",
                "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                "--memory", f"{lim.memory_mib + 64}m", "--memory-swap", f"{lim.memory_mib + 64}m",
                "--cpus", f"{lim.cpus:g}", "--pids-limit", str(lim.processes),
                "--tmpfs", f"/tmp:rw,nosuid,nodev,size={lim.tmp_mib}m", "--workdir", "/tmp",
                "--log-driver", "none", self.image]

    def job(self, program: str, nonce: str, workdir: str) -> dict:
        # processes are counted by --pids-limit; RLIMIT_NPROC would count every uid-65534 process of the host
        return {"program": program, "nonce": nonce, "workdir": workdir,
                "limits": self.limits.harness(processes=False)}

    def kill(self, proc: subprocess.Popen, tag: str) -> None:
        subprocess.run([self.docker, "kill", tag], capture_output=True, timeout=60)
        super().kill(proc, tag)

    def cleanup(self, tag: str) -> None:
        subprocess.run([self.docker, "rm", "-f", tag], capture_output=True, timeout=60)

    def describe(self) -> dict:
        return {**super().describe(), "image": self.image, "base_image": self.base_image}

    @classmethod
    def probe(cls, limits: Limits | None = None) -> "DockerSandbox":
        ok, why = docker_answers()
        if not ok:
            raise SandboxUnavailable(f"docker: {why}")
        box = cls(limits)
        box.ensure_image()
        return box


# ------------------------------------------------------------------------------------ namespaces

_NAMESPACE_SETUP = r"""
set -e
awk '{print $5}' /proc/self/mountinfo | while read -r m; do
  mount -o remount,bind,ro "$m" 2>/dev/null || true
done
for d in /tmp /var/tmp /dev/shm; do
  [ -d "$d" ] && mount -t tmpfs -o "size=${WS_TMP_MIB}m,mode=1777,nosuid,nodev" tmpfs "$d"
done
exec setpriv --reuid "$WS_UID" --regid "$WS_UID" --clear-groups --no-new-privs \
  --inh-caps=-all --bounding-set=-all "$WS_PYTHON" -I -S -c "$WS_HARNESS"
"""


def sandbox_python() -> str | None:
    """A python3 the unprivileged sandbox user can run (the harness needs the standard library only)."""
    for cand in ("/usr/bin/python3", "/usr/local/bin/python3", os.path.realpath(sys.executable)):
        if os.path.exists(cand) and all(os.stat(p).st_mode & 0o005 == 0o005
                                        for p in _dirs_to(cand)):
            return cand
    return None


def _dirs_to(path: str):
    p = Path(path)
    yield from (str(q) for q in [*reversed(p.parents), p] if str(q) != "/")


class NamespaceSandbox(Sandbox):
    name = "namespace"

    def __init__(self, limits: Limits | None = None, python: str | None = None):
        super().__init__(limits)
        self.python = python or sandbox_python()

    def command(self, tag: str) -> list[str]:
        return ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount", "--propagation",
                "private", "--mount-proc", "sh", "-c", _NAMESPACE_SETUP]

    def env(self) -> dict:
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "WS_UID": str(SANDBOX_UID),
                "WS_TMP_MIB": str(self.limits.tmp_mib), "WS_PYTHON": self.python,
                "WS_HARNESS": HARNESS.read_text(), "LANG": "C.UTF-8"}

    def kill(self, proc: subprocess.Popen, tag: str) -> None:
        # pid 1 of the namespace first (the uid change cleared its parent-death signal): its death
        # takes every process of the namespace with it
        try:
            for task in Path(f"/proc/{proc.pid}/task").iterdir():
                for child in (task / "children").read_text().split():
                    os.kill(int(child), signal.SIGKILL)
        except (OSError, ValueError):
            pass
        super().kill(proc, tag)

    @classmethod
    def probe(cls, limits: Limits | None = None) -> "NamespaceSandbox":
        if not sys.platform.startswith("linux"):
            raise SandboxUnavailable("namespace: needs Linux")
        if os.geteuid() != 0:
            raise SandboxUnavailable("namespace: needs root (private mounts and the change to an "
                                     "unprivileged uid)")
        missing = [b for b in ("unshare", "setpriv", "mount") if not shutil.which(b)]
        if missing:
            raise SandboxUnavailable(f"namespace: missing {', '.join(missing)} (util-linux)")
        box = cls(limits)
        if not box.python:
            raise SandboxUnavailable("namespace: no python3 the sandbox user may run (/usr/bin/python3)")
        check = box.run("assert 1 + 1 == 2\n")
        if check.outcome != "passed":
            raise SandboxUnavailable(f"namespace: a trivial program did not pass ({check.detail})")
        return box


# ------------------------------------------------------------------------------------ no isolation

class UnsafeLocal(Sandbox):
    """rlimits and a temp dir only: the completion can reach the network, the files and the processes
    of this user. Only on explicit request; labelled in every result."""
    name = "unsafe-local"

    def command(self, tag: str) -> list[str]:
        return [os.path.realpath(sys.executable), "-I", "-S", str(HARNESS)]

    def workdir(self):
        return tempfile.TemporaryDirectory(prefix="wattserve-unsafe-")


# ------------------------------------------------------------------------------------ choice

def choose(isolation: str = "auto", limits: Limits | None = None) -> Sandbox:
    """The sandbox to score with, or SandboxUnavailable saying why none works and how to enable one."""
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {', '.join(ISOLATIONS)}, got {isolation!r}")
    if isolation == "unsafe-local":
        return UnsafeLocal(limits)
    kinds = {"docker": [DockerSandbox], "namespace": [NamespaceSandbox],
             "auto": [DockerSandbox, NamespaceSandbox]}[isolation]
    reasons = []
    for kind in kinds:
        try:
            return kind.probe(limits)
        except SandboxUnavailable as exc:
            reasons.append(str(exc))
    raise SandboxUnavailable("no sandbox to score completions in: " + "; ".join(reasons)
                             + ". To enable one: " + HOW_TO_ENABLE)
