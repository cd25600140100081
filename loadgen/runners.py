"""How the service under test is started: ``native`` (a subprocess here) or ``docker`` (its
configuration's image, ``wattserve:<config>``, through scripts/docker/serve.sh).

A service is started in its own session, so a Ctrl-C in the terminal reaches only the bench, which
then stops the service itself, in order; on Linux it also dies with the bench (PDEATHSIG) if the
bench is killed outright, so no orphan keeps a core busy under the next run.

The docker runner keeps the same process handle: serve.sh ends in ``exec docker run --rm`` in the
foreground (host network, the image's healthcheck off), so the Popen logic (alive, wait_ready,
SIGTERM proxied to the service, its exit code) is the native one. What differs: the model is
prepared into the cache volume by scripts/docker/prepare.sh, ``pid`` is the container's init on the
host (``docker inspect``), and ``stop`` always ends with ``docker rm -f`` (a client killed with
SIGKILL leaves its container running).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
RUNNER_CHOICES = ("auto", "native", "docker")
SERVE_SH = ROOT / "scripts" / "docker" / "serve.sh"
PREPARE_SH = ROOT / "scripts" / "docker" / "prepare.sh"
VERSION_LABEL = "org.opencontainers.image.version"


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


# ------------------------------------------------------------------------------------ docker

def docker_bin() -> str:
    """The Docker CLI scripts/docker/common.sh uses: $DOCKER, else /usr/bin/docker, else PATH's."""
    if os.environ.get("DOCKER"):
        return os.environ["DOCKER"]
    if Path("/usr/bin/docker").exists():
        return "/usr/bin/docker"
    return shutil.which("docker") or "docker"


def image_name(config: str) -> str:
    """``wattserve:<config>`` (``$WATTSERVE_IMAGE:<config>``), as serve.sh and prepare.sh name it."""
    return f"{os.environ.get('WATTSERVE_IMAGE') or 'wattserve'}:{config}"


def cache_volume() -> str:
    return os.environ.get("WATTSERVE_CACHE_VOLUME") or "wattserve-cache"


def _docker(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([docker_bin(), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def docker_answers(timeout: float = 15) -> tuple[bool, str]:
    """Whether a Docker engine answers ``docker info`` (and, if not, why not)."""
    try:
        out = _docker("info", "--format", "{{.ServerVersion}}", timeout=timeout)
    except FileNotFoundError:
        return False, "the docker command is not installed"
    except subprocess.TimeoutExpired:
        return False, f"'docker info' did not answer within {timeout:.0f} s"
    if out.returncode != 0:
        msg = (out.stderr or out.stdout).strip().splitlines()
        return False, f"'docker info' failed: {msg[-1] if msg else 'exit ' + str(out.returncode)}"
    return True, f"Docker engine {out.stdout.strip()} answers"


def image_info(image: str) -> dict | None:
    """``{name, id, version, created}`` of a local image (version: its OCI version label, the
    source's git describe), or None when the image does not exist (or no engine answers)."""
    try:
        out = _docker("image", "inspect", "--format", "{{json .}}", image)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    data = json.loads(out.stdout.strip().splitlines()[0])
    labels = (data.get("Config") or {}).get("Labels") or {}
    return {"name": image, "id": data.get("Id"), "version": labels.get(VERSION_LABEL),
            "created": data.get("Created"), "repo_digests": data.get("RepoDigests") or []}


def images_note(configs: Sequence[str]) -> str:
    """``wattserve:onnx-cpu (version)``, and a warning when an image was built from another source
    version than this checkout's (a stale image serves old code)."""
    from loadgen.hostinfo import git_describe

    infos = [image_info(image_name(c)) or {"name": image_name(c)} for c in configs]
    text = ", ".join(f"{i['name']} ({i.get('version') or 'no version label'})" for i in infos)
    here = git_describe()
    stale = sorted({i["version"] for i in infos if i.get("version")} - {here}) if here else []
    if stale:
        text += f"; WARNING: built from {', '.join(stale)}, this checkout is {here}: `make images` rebuilds them"
    return text


def missing_images(configs: Sequence[str]) -> list[str]:
    """The ``wattserve:<config>`` images of ``configs`` that do not exist locally."""
    return [image_name(c) for c in configs if image_info(image_name(c)) is None]


def docker_unavailable_reason(configs: Sequence[str], probe: Callable[[], tuple[bool, str]] = docker_answers,
                              missing: Callable[[Sequence[str]], list[str]] = missing_images) -> str | None:
    """Why the docker runner cannot run ``configs`` here (None: it can): no engine, or an image missing."""
    ok, why = probe()
    if not ok:
        return (f"the docker runner needs a Docker engine, and none answers ({why}); start one "
                "(scripts/docker/start-dockerd.sh) or use --runner native (RUNNER=native)")
    gone = missing(list(configs))
    if gone:
        flavours = " ".join(sorted({"cuda" if c.endswith("-cuda") else "cpu" for c in gone}))
        return (f"the docker runner needs the image(s) {', '.join(gone)}, which do not exist here; build them with "
                f"`make images` (scripts/docker/build-images.sh {flavours}) or use --runner native (RUNNER=native)")
    return None


def choose_runner(requested: str, probe: Callable[[], tuple[bool, str]] = docker_answers, *,
                  configs: Sequence[str] | None = None,
                  missing: Callable[[Sequence[str]], list[str]] = missing_images) -> tuple[str, str]:
    """(runner, why). ``docker``: refused (RunnerError, the reason) when no engine answers or an image
    of ``configs`` is missing. ``auto``: docker only when the engine answers and every configuration's
    image exists, else native with the reason. Without ``configs`` the images cannot be checked, so
    ``auto`` stays native."""
    requested = (requested or "auto").strip().lower()
    if requested not in RUNNER_CHOICES:
        raise RunnerError(f"unknown runner {requested!r}; choose from {', '.join(RUNNER_CHOICES)}")
    if requested == "native":
        return "native", "asked for"
    if requested == "docker":
        if configs is None:
            raise RunnerError("the docker runner needs the configurations to check their images")
        reason = docker_unavailable_reason(configs, probe, missing)
        if reason:
            raise RunnerError(reason)
        return "docker", f"asked for; images {images_note(configs)}"
    ok, why = probe()
    if not ok:
        return "native", f"{why}: using native"
    if configs is None:
        return "native", f"{why}, but the configurations' images were not checked: using native"
    gone = missing(list(configs))
    if gone:
        return "native", f"{why}, but there is no image {', '.join(gone)} (make images): using native"
    return "docker", f"{why} and every image exists: {images_note(configs)}"


def prepare_command(runner: str) -> list[str]:
    """The prepare command (``python -m loadgen.prepare``'s arguments follow; its last stdout line is
    the JSON result): natively that module, under docker scripts/docker/prepare.sh (same arguments,
    same JSON, artifact paths inside the container under /cache, the cache being the volume)."""
    if runner == "docker":
        return [str(PREPARE_SH)]
    if runner == "native":
        return [sys.executable, "-m", "loadgen.prepare"]
    raise RunnerError(f"unknown runner {runner!r}")


def container_name(run_id: str | None) -> str:
    """``wattserve-<run-id>`` (docker names allow [a-zA-Z0-9][a-zA-Z0-9_.-]*)."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", run_id or f"serve-{uuid.uuid4().hex[:12]}").strip("-.")
    return f"wattserve-{base}"


# ------------------------------------------------------------------------------------ services

def terminate(proc: subprocess.Popen, grace: float) -> int | None:
    """SIGTERM (so the child can shut down cleanly), SIGKILL after ``grace`` seconds; reaped."""
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)  # a stopped (hung) child gets the SIGTERM only once resumed
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class NativeService:
    """``python -m services.inference`` as a subprocess on a free loopback port."""

    runner = "native"

    def __init__(self, config: str, model: str, *, threads: int, precision: str, log_path: Path,
                 revision: str | None = None, trust_remote_code: bool = False, run_id: str | None = None,
                 warmup_prompts: Path | None = None) -> None:
        self.config, self.model, self.run_id = config, model, run_id
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        self.argv = self.command(config, model, threads=threads, precision=precision, revision=revision,
                                 trust_remote_code=trust_remote_code, warmup_prompts=warmup_prompts)
        self._log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.environment(), stdout=self._log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=die_with_parent)
        except OSError:
            self._log.close()
            raise
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def service_args(self, config: str, model: str, *, threads: int, precision: str, revision: str | None,
                     trust_remote_code: bool, warmup_prompts: Path | None = None) -> list[str]:
        """The command line of ``python -m services.inference`` (serve.sh takes the same). ``warmup_prompts``:
        the run's prompt file, so the warm-up covers every prompt length the run sends (a custom set's
        too, not only the paper prompts' default)."""
        argv = ["--config", config, "--model", model, "--host", "127.0.0.1", "--port", str(self.port),
                "--threads", str(threads), "--precision", precision, "--log-level", "info"]
        if warmup_prompts is not None:
            argv += ["--warmup-prompts", str(Path(warmup_prompts).resolve())]
        if revision:
            argv += ["--revision", revision]
        if trust_remote_code:
            argv.append("--trust-remote-code")
        return argv

    def command(self, config: str, model: str, **kw) -> list[str]:
        return [sys.executable, "-m", "services.inference", *self.service_args(config, model, **kw)]

    def environment(self) -> dict[str, str]:
        return child_env()

    def describe(self) -> dict:
        """How the service was run (for run.json)."""
        return {"runner": self.runner, "python": sys.executable}

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
        terminate(self.proc, grace)
        self._log.close()
        return self.proc.returncode


class DockerService(NativeService):
    """The configuration's image, ``wattserve:<config>``, run by scripts/docker/serve.sh in the
    foreground as container ``wattserve-<run-id>`` (host network: the service binds the same loopback
    port as natively, no proxy in between)."""

    runner = "docker"
    pid_timeout_s = 120.0  # docker run → container started; slow only on a loaded engine

    def __init__(self, config: str, model: str, *, threads: int, precision: str, log_path: Path,
                 revision: str | None = None, trust_remote_code: bool = False, run_id: str | None = None,
                 network: str | None = None, warmup_prompts: Path | None = None) -> None:
        # network: host (default, $WATTSERVE_DOCKER_NETWORK), bridge, or a compose stack's network
        # (loadgen/stack.py), where the service is reached at the container's own address on :8000
        self.network = network or os.environ.get("WATTSERVE_DOCKER_NETWORK") or "host"
        self.container = container_name(run_id)
        self.docker = docker_bin()
        self._pid: int | None = None
        self.container_image_id: str | None = None
        self.image = image_info(image_name(config))
        if self.image is None:
            raise RunnerError(docker_unavailable_reason([config]) or f"no image {image_name(config)}")
        super().__init__(config, model, threads=threads, precision=precision, log_path=log_path, revision=revision,
                         trust_remote_code=trust_remote_code, run_id=run_id, warmup_prompts=warmup_prompts)

    def command(self, config: str, model: str, **kw) -> list[str]:
        return [str(SERVE_SH), *self.service_args(config, model, **kw)]

    def environment(self) -> dict[str, str]:
        return child_env(WATTSERVE_CONTAINER=self.container, DOCKER=self.docker, WATTSERVE_DOCKER_NETWORK=self.network)

    @property
    def joined(self) -> bool:
        """On a named network (the stack's): the URL is the container's address, known once it runs."""
        return self.network not in ("host", "bridge")

    def wait_ready(self, timeout: float) -> None:
        if self.joined:
            self.pid  # noqa: B018 (resolves the container's address into self.url)
        super().wait_ready(timeout)

    def describe(self) -> dict:
        image = dict(self.image or {})
        if self.container_image_id and self.container_image_id != image.get("id"):
            # the tag moved between the inspect and docker run: the container's own image is the truth
            image = image_info(self.container_image_id) or {"id": self.container_image_id}
            image["name"] = image_name(self.config)
        return {"runner": self.runner, "container": self.container, "image": image,
                "cache_volume": cache_volume(), "network": self.network}

    def info(self) -> dict:
        """``GET /info`` plus ``image`` (name, id, version label: the container's own) and ``container``."""
        if self.container_image_id is None:
            try:
                out = _docker("inspect", "--format", "{{.Image}}", self.container, timeout=15)
                if out.returncode == 0:
                    self.container_image_id = out.stdout.strip() or None
            except (OSError, subprocess.TimeoutExpired):
                pass
        d = self.describe()
        return {**super().info(), "image": d["image"], "container": d["container"]}

    @property
    def pid(self) -> int:
        """The container's init process on the host (its process tree is the service), once started."""
        if self._pid:
            return self._pid
        deadline = time.monotonic() + self.pid_timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise self.died("while its container was starting")
            try:
                out = _docker("inspect", "--format", "{{.State.Pid}} {{.Image}} {{json .NetworkSettings.Networks}}",
                              self.container, timeout=15)
            except subprocess.TimeoutExpired:
                continue
            if out.returncode == 0:
                pid, image, networks = (out.stdout.strip().split(" ", 2) + ["", ""])[:3]
                ip = ((json.loads(networks or "null") or {}).get(self.network) or {}).get("IPAddress")
                if pid.isdigit() and int(pid) > 0 and (ip or not self.joined):
                    self._pid, self.container_image_id = int(pid), image or None
                    if self.joined:
                        self.url = f"http://{ip}:8000"
                        self.client.close()
                        self.client = httpx.Client(base_url=self.url, timeout=10)
                    return self._pid
            time.sleep(0.1)
        raise RunnerError(f"container {self.container} had no process after {self.pid_timeout_s:.0f} s; "
                          f"last lines of {self.log_path}:\n{log_tail(self.log_path)}")

    def stop(self, grace: float = 15) -> int | None:
        """The native stop (SIGTERM to the docker client, proxied to the service), then always
        ``docker rm -f``, and wait until the container is gone (``--rm`` may still be removing it)."""
        try:
            return super().stop(grace)
        finally:
            self.remove()

    def remove(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                _docker("rm", "-f", self.container, timeout=max(1.0, deadline - time.monotonic()))
                if _docker("inspect", "--format", "{{.Id}}", self.container, timeout=15).returncode != 0:
                    return
            except (OSError, subprocess.TimeoutExpired):
                pass
            time.sleep(0.2)


class ExternalService:
    """A service someone else runs (the compose stack's ``inference``, driven by the compose ``loadgen``):
    nothing is started or stopped; ``/ready`` is waited for and ``/info`` must name the run's
    configuration. Its process is not ours (``pid`` None: the stack's host exporter watches it)."""

    runner = "external"
    pid = None

    def __init__(self, config: str, model: str, *, url: str, log_path: Path, precision: str = "fp32",
                 **_ignored) -> None:
        self.config, self.model, self.url, self.precision = config, model, url.rstrip("/"), precision
        self.log_path = Path(log_path)
        self.log_path.write_text(f"external service at {self.url}: its log is its own (compose logs inference)\n")
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def describe(self) -> dict:
        return {"runner": self.runner, "url": self.url}

    def alive(self) -> bool:
        return True  # not ours to watch; a service that goes away fails the requests, and the run with them

    def died(self, when: str) -> RunnerError:
        return RunnerError(f"the service at {self.url} went away {when}")

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.client.get("/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            raise RunnerError(f"the service at {self.url} was not ready after {timeout:.0f} s")
        info = self.info()
        served, precision = info.get("config"), info.get("precision") or "fp32"
        if served != self.config:
            raise RunnerError(f"the service at {self.url} serves {served}, not {self.config}: CONFIG must be the "
                              "stack's (make up CONFIG=...)")
        if precision != self.precision:
            raise RunnerError(f"the service at {self.url} serves {served} at {precision}, not {self.precision}: "
                              "PRECISION must be the stack's")

    def info(self) -> dict:
        r = self.client.get("/info")
        r.raise_for_status()
        return r.json()

    def stop(self, grace: float = 15) -> None:
        self.client.close()
        return None


SERVICES: dict[str, type] = {"native": NativeService, "docker": DockerService, "external": ExternalService}


def start_service(runner: str, config: str, model: str, **kw) -> NativeService:
    """Start the service the runner's way (keywords: those of :class:`NativeService`)."""
    try:
        cls = SERVICES[runner]
    except KeyError:
        raise RunnerError(f"unknown runner {runner!r}") from None
    return cls(config, model, **kw)
