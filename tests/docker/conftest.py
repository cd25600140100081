"""Fixtures of the Docker tests: an engine that answers, the CPU images, a prepared cache volume.

Every test that needs Docker is skipped, with the reason, when ``docker info`` fails (no engine,
no permission) or when WATTSERVE_DOCKER_TESTS=0. Images are built by the project's own scripts
(scripts/docker/build-base.sh, build-images.sh): slow the first time (~7 min on 2 cores), then a
layer-cache hit (~10 s). The cache volume ``wattserve-test-cache`` is kept between sessions so the
tiny model is built once; ``docker volume rm wattserve-test-cache`` starts over.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts" / "docker"
IMAGE = os.environ.get("WATTSERVE_IMAGE", "wattserve")
TEST_VOLUME = os.environ.get("WATTSERVE_TEST_CACHE_VOLUME", "wattserve-test-cache")
CPU_CONFIGS = ("torch-cpu", "onnx-cpu", "ov-cpu", "jit-cpu")


def docker_bin() -> str:
    if os.environ.get("DOCKER"):
        return os.environ["DOCKER"]
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")


DOCKER = docker_bin()


def docker(*args: str, check: bool = True, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and out.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def engine_status() -> tuple[bool, str]:
    if os.environ.get("WATTSERVE_DOCKER_TESTS", "1") == "0":
        return False, "WATTSERVE_DOCKER_TESTS=0"
    try:
        out = subprocess.run([DOCKER, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                             timeout=20)
    except FileNotFoundError:
        return False, f"no docker client ({DOCKER}); scripts/docker/start-dockerd.sh installs and starts one"
    except subprocess.TimeoutExpired:
        return False, "'docker info' did not answer within 20 s"
    if out.returncode != 0:
        why = (out.stderr or out.stdout).strip().splitlines()
        return False, (f"no Docker engine answers ('docker info': {why[-1] if why else out.returncode}); "
                       "start one with scripts/docker/start-dockerd.sh")
    return True, out.stdout.strip()


def script_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "DOCKER": DOCKER, "BUILD_PROGRESS": "plain", **extra}


def run_script(name: str, *args: str, timeout: float = 3600, env: dict | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run([str(SCRIPTS / name), *args], capture_output=True, text=True, timeout=timeout,
                         env=env or script_env(), cwd=ROOT)
    if out.returncode != 0:
        raise AssertionError(f"{name} {' '.join(args)} failed ({out.returncode}):\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
    return out


def http_json(url: str, data: dict | None = None, timeout: float = 30) -> tuple[int, dict]:
    body = json.dumps(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def wait_until(fn, timeout: float, interval: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (OSError, ValueError) as e:  # connection refused/reset while starting
            last = e
        time.sleep(interval)
    raise AssertionError(f"{what} not met within {timeout:.0f} s (last: {last!r})")


@pytest.fixture(scope="session")
def docker_engine() -> str:
    ok, why = engine_status()
    if not ok:
        pytest.skip(f"Docker tests skipped: {why}")
    return why


@pytest.fixture(scope="session")
def cpu_images(docker_engine) -> dict[str, str]:
    """wattserve:cpu, the four CPU configuration images and wattserve-prometheus (built or reused)."""
    t0 = time.monotonic()
    run_script("build-base.sh")
    run_script("build-images.sh", "cpu", "prometheus")
    print(f"\n[docker] images ready in {time.monotonic() - t0:.0f} s")
    return {c: f"{IMAGE}:{c}" for c in ("cpu", *CPU_CONFIGS)}


def seed_tiny(volume: str, image: str) -> None:
    """Copy the host's already built tiny model (tests/conftest.py builds it for the native tests; the
    build is seeded, so it is byte-identical to one built in the image) into the volume, instead of
    training it a second time in a container. Exports still run in the container (prepare)."""
    from services.models.cache import COMPLETE_MARKER, cache_root

    models = cache_root() / "models"
    done = [d.name for d in sorted(models.glob("tiny-*")) if d.is_dir() and (d / COMPLETE_MARKER).is_file()]
    if not done:
        return
    copy = " ".join(f"[ -e /cache/models/{n}/{COMPLETE_MARKER} ] || cp -a /src/{n} /cache/models/;" for n in done)
    docker("run", "--rm", "--user", "0", "--entrypoint", "sh", "-v", f"{models}:/src:ro", "-v", f"{volume}:/cache",
           image, "-c", f"mkdir -p /cache/models && {copy} chown -R 10001:10001 /cache")


@pytest.fixture(scope="session")
def prepared_cache(cpu_images, tiny) -> str:
    """The test cache volume with tiny prepared for onnx-cpu."""
    if docker("volume", "inspect", TEST_VOLUME, check=False).returncode != 0:
        docker("volume", "create", TEST_VOLUME)
    t0 = time.monotonic()
    seed_tiny(TEST_VOLUME, cpu_images["cpu"])
    env = ["-e", "HF_HUB_OFFLINE=1"]
    docker("run", "--rm", "--init", *env, "-v", f"{TEST_VOLUME}:/cache", cpu_images["onnx-cpu"],
           "python", "-m", "services.models.prepare", "--model", "tiny", "--config", "onnx-cpu", timeout=1200)
    print(f"\n[docker] cache volume {TEST_VOLUME} prepared in {time.monotonic() - t0:.0f} s")
    return TEST_VOLUME
