"""The CPU images: one container of onnx-cpu serving tiny, really over HTTP, from a prepared cache volume."""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest

from tests.docker.conftest import CPU_CONFIGS, ROOT, docker, http_json, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def onnx_container(cpu_images, prepared_cache):
    name = f"wattserve-test-onnx-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--init", "--name", name, "-p", "127.0.0.1::8000", "-v", f"{prepared_cache}:/cache",
           "-e", "WATTSERVE_MODEL=tiny", "-e", "HF_HUB_OFFLINE=1",
           # the image's probe, run more often than its 30 s default so the test sees "healthy" soon
           "--health-interval", "2s", cpu_images["onnx-cpu"])
    try:
        port = docker("port", name, "8000/tcp").stdout.strip().splitlines()[0].rsplit(":", 1)[1]
        url = f"http://127.0.0.1:{port}"
        t0 = time.monotonic()
        wait_until(lambda: http_json(f"{url}/ready")[0] == 200, 300, what=f"{name} /ready 200")
        print(f"\n[docker] onnx-cpu container ready in {time.monotonic() - t0:.1f} s")
        yield name, url
    finally:
        logs = docker("logs", "--tail", "40", name, check=False)
        print(logs.stdout[-2000:], logs.stderr[-2000:])
        docker("rm", "-f", name, check=False)


def test_ready_info_generate(onnx_container):
    name, url = onnx_container
    status, ready = http_json(f"{url}/ready")
    assert status == 200 and ready["ready"] is True
    status, info = http_json(f"{url}/info")
    assert status == 200
    assert (info["config"], info["engine"], info["provider"]) == ("onnx-cpu", "onnx", "cpu")
    assert info["model"]["name"] == "tiny" and info["kv_cache"] is True
    status, gen = http_json(f"{url}/v1/generate", {"prompt": "def add(a, b):", "max_new_tokens": 8})
    assert status == 200, gen
    assert gen["config"] == "onnx-cpu" and gen["model"] == "tiny"
    assert gen["completion_tokens"] > 0 and len(gen["token_ids"]) == gen["completion_tokens"]
    status, err = http_json(f"{url}/v1/generate", {"prompt": 5})
    assert status == 422


def test_runs_as_non_root(onnx_container):
    name, _ = onnx_container
    assert docker("inspect", "-f", "{{.Config.User}}", name).stdout.strip() == "wattserve"
    uid = docker("exec", name, "id", "-u").stdout.strip()
    assert uid != "0", "the service runs as root"
    # the service process itself (PID 1 is docker-init with --init)
    status = docker("exec", name, "sh", "-c", "grep -h '^Uid:' /proc/[0-9]*/status").stdout
    assert all(line.split()[1] != "0" for line in status.splitlines()), status


def test_published_port_is_loopback_only(onnx_container):
    name, _ = onnx_container
    ports = json.loads(docker("inspect", "-f", "{{json .NetworkSettings.Ports}}", name).stdout)
    bindings = ports["8000/tcp"]
    assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings), bindings


def test_healthcheck_becomes_healthy(onnx_container):
    name, _ = onnx_container
    health = json.loads(docker("inspect", "-f", "{{json .Config.Healthcheck}}", name).stdout)
    assert any("/ready" in part for part in health["Test"]), health
    wait_until(lambda: docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip() == "healthy",
               60, interval=1, what="HEALTHCHECK healthy")


def test_config_images_share_every_layer(cpu_images):
    """The four CPU configuration images differ from wattserve:cpu by ENV only: same layers."""
    layers = {c: json.loads(docker("image", "inspect", "-f", "{{json .RootFS.Layers}}", img).stdout)
              for c, img in cpu_images.items()}
    assert all(v == layers["cpu"] for v in layers.values())
    for c in CPU_CONFIGS:
        env = json.loads(docker("image", "inspect", "-f", "{{json .Config.Env}}", cpu_images[c]).stdout)
        assert f"WATTSERVE_CONFIG={c}" in env


def test_compile_image_adds_only_the_compiler(cpu_images):
    """wattserve:compile-cpu is wattserve:cpu plus one layer holding what inductor compiles with."""
    image = f"{cpu_images['cpu'].rsplit(':', 1)[0]}:compile-cpu"
    layers = {i: json.loads(docker("image", "inspect", "-f", "{{json .RootFS.Layers}}", i).stdout)
              for i in (cpu_images["cpu"], image)}
    assert layers[image][:-1] == layers[cpu_images["cpu"]] and len(layers[image]) == len(layers[cpu_images["cpu"]]) + 1
    env = json.loads(docker("image", "inspect", "-f", "{{json .Config.Env}}", image).stdout)
    assert "WATTSERVE_CONFIG=compile-cpu" in env
    probe = ("import shutil, sysconfig, os, sys; ok = shutil.which('g++') and os.path.exists("
             "os.path.join(sysconfig.get_paths()['include'], 'Python.h')); sys.exit(0 if ok else 'no g++ or Python.h')")
    docker("run", "--rm", "--entrypoint", "python", image, "-c", probe)
    assert docker("image", "inspect", "-f", "{{.Config.User}}", image).stdout.strip() == "wattserve"


def test_llamacpp_image_adds_one_layer_with_llama_cpp_and_no_compiler(cpu_images):
    """wattserve:llamacpp-cpu is wattserve:cpu plus one layer: the llama-cpp-python wheel compiled in its own
    build stage, llama.cpp's converter of the same version and libgomp1; the compiler stays behind."""
    image = f"{cpu_images['cpu'].rsplit(':', 1)[0]}:llamacpp-cpu"
    layers = {i: json.loads(docker("image", "inspect", "-f", "{{json .RootFS.Layers}}", i).stdout)
              for i in (cpu_images["cpu"], image)}
    assert layers[image][:-1] == layers[cpu_images["cpu"]] and len(layers[image]) == len(layers[cpu_images["cpu"]]) + 1
    env = json.loads(docker("image", "inspect", "-f", "{{json .Config.Env}}", image).stdout)
    assert "WATTSERVE_CONFIG=llamacpp-cpu" in env
    probe = ("import shutil, sys; from services.inference.engines.llamacpp_engine import llama_cpp_problem; "
             "p = llama_cpp_problem(); sys.exit(p or ('a C++ compiler reached the image' if shutil.which('g++') else 0))")
    docker("run", "--rm", "--entrypoint", "python", image, "-c", probe)
    assert docker("image", "inspect", "-f", "{{.Config.User}}", image).stdout.strip() == "wattserve"


def test_image_pins_match_constraints(cpu_images):
    """The image's Python packages are exactly the project's pins (constraints.txt)."""
    frozen = docker("run", "--rm", cpu_images["cpu"], "pip", "freeze", "--all").stdout
    norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
    have = {norm(n): v for n, _, v in (line.partition("==") for line in frozen.splitlines() if "==" in line)}
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            n, v = line.split("==", 1)
            pins[norm(n)] = v
    wrong = {n: (v, have.get(n)) for n, v in pins.items() if have.get(n, "").split("+")[0] != v}
    assert not wrong, f"pinned vs in image: {wrong}"
    assert have["torch"].endswith("+cpu"), "the CPU image must carry the CPU torch build"


def test_no_model_artifacts_baked_in(cpu_images):
    listing = docker("run", "--rm", cpu_images["cpu"], "ls", "-A", "/cache").stdout.strip()
    assert listing == "", f"/cache in the image is not empty: {listing}"
