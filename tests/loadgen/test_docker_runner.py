"""The docker runner: runner choice, and (where a Docker engine answers and ``wattserve:onnx-cpu``
exists) real runs through the protocol with the service in its image.

The Docker tests are skipped, with the reason, when ``docker info`` fails, when the image is missing
(``make images`` builds it) or when WATTSERVE_DOCKER_TESTS=0. They use the cache volume of the Docker
tests (``wattserve-test-cache``, kept between sessions), seeded with the host's tiny model so it is
never trained twice; the bench's prepare step (scripts/docker/prepare.sh) exports into it.
"""

from __future__ import annotations

import signal
import subprocess
import time

import psutil
import pytest

from loadgen import hostinfo
from loadgen.prompts import load_prompts
from loadgen.runfolder import read_requests, validate_manifest, validate_run
from loadgen.runners import (RunnerError, choose_runner, container_name, docker_answers, docker_unavailable_reason,
                             image_name, prepare_command, start_service)
from tests.docker.conftest import DOCKER, TEST_VOLUME, docker, engine_status, seed_tiny
from tests.loadgen.conftest import QUICK, gone, manifest, run_bench, run_dirs, start_bench, wait_for_rows

PAPER = load_prompts("paper")
IMAGE = image_name("onnx-cpu")
YES = lambda: (True, "Docker engine 27.0 answers")  # noqa: E731
NO = lambda: (False, "'docker info' failed: Cannot connect to the Docker daemon")  # noqa: E731


# ------------------------------------------------------------------------------ no engine needed

def test_auto_picks_docker_only_with_an_engine_and_every_image():
    none_missing = lambda configs: []  # noqa: E731
    runner, why = choose_runner("auto", probe=YES, configs=["onnx-cpu", "ov-cpu"], missing=none_missing)
    assert runner == "docker" and image_name("onnx-cpu") in why and image_name("ov-cpu") in why
    runner, why = choose_runner("auto", probe=YES, configs=["onnx-cpu", "ov-cpu"],
                                missing=lambda configs: ["wattserve:ov-cpu"])
    assert runner == "native" and "no image wattserve:ov-cpu" in why and "make images" in why  # as `missing` said
    runner, why = choose_runner("auto", probe=NO, configs=["onnx-cpu"], missing=none_missing)
    assert runner == "native" and "Cannot connect" in why
    runner, why = choose_runner("auto", probe=YES, missing=none_missing)  # configs unknown: images unchecked
    assert runner == "native"
    assert choose_runner("native", probe=YES, configs=["onnx-cpu"], missing=none_missing) == ("native", "asked for")


def test_explicit_docker_is_refused_without_an_engine_or_an_image():
    assert choose_runner("docker", probe=YES, configs=["onnx-cpu"], missing=lambda c: [])[0] == "docker"
    with pytest.raises(RunnerError, match=r"needs a Docker engine.*Cannot connect.*start-dockerd"):
        choose_runner("docker", probe=NO, configs=["onnx-cpu"])
    with pytest.raises(RunnerError, match=r":torch-cuda, which do not exist.*make images.*build-images.sh cuda"):
        choose_runner("docker", probe=YES, configs=["onnx-cpu", "torch-cuda"],
                      missing=lambda configs: [image_name(c) for c in configs if c.endswith("cuda")])
    assert docker_unavailable_reason(["onnx-cpu"], probe=YES, missing=lambda c: []) is None


def test_explicit_docker_with_a_missing_image_exits_2_and_starts_nothing(tmp_path):
    results = tmp_path / "results"
    before = containers()
    r = run_bench("--runner", "docker", "--config", "onnx-cpu", *QUICK, "--results", str(results), timeout=120,
                  WATTSERVE_IMAGE="wattserve-no-such-image")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "the docker runner needs" in r.stderr
    ok, _ = docker_answers()  # the bench's own probe
    assert ("make images" if ok else "Docker engine") in r.stderr, r.stderr
    assert not results.exists()
    assert containers() == before


def test_the_runner_reason_names_the_image_versions_and_warns_when_stale(monkeypatch):
    from loadgen import runners

    monkeypatch.setattr(runners, "image_info", lambda image: {"name": image, "id": "sha256:x", "version": "abc1234"})
    monkeypatch.setattr(hostinfo, "git_describe", lambda: "abc1234")
    assert runners.images_note(["onnx-cpu"]) == f"{image_name('onnx-cpu')} (abc1234)"
    monkeypatch.setattr(hostinfo, "git_describe", lambda: "def5678-dirty")
    note = choose_runner("auto", probe=YES, configs=["onnx-cpu"], missing=lambda c: [])[1]
    assert "built from abc1234, this checkout is def5678-dirty" in note and "make images" in note


def test_prepare_command_and_container_name():
    assert prepare_command("native")[1:] == ["-m", "loadgen.prepare"]
    assert prepare_command("docker")[0].endswith("scripts/docker/prepare.sh")
    assert container_name("20250101T000000Z-onnx-cpu-tiny-r1") == "wattserve-20250101T000000Z-onnx-cpu-tiny-r1"
    assert container_name("a/b c") == "wattserve-a-b-c"


def test_wattserve_version_falls_back_to_the_environment_without_a_checkout(tmp_path, monkeypatch):
    monkeypatch.setattr(hostinfo, "ROOT", tmp_path)  # no .git here (as in an image)
    monkeypatch.setenv("WATTSERVE_VERSION", "v1.2.3-4-gabcdef0")
    assert hostinfo.software_versions()["wattserve"] == "v1.2.3-4-gabcdef0"
    monkeypatch.delenv("WATTSERVE_VERSION")
    assert hostinfo.git_describe() is None


# ------------------------------------------------------------------------------ real Docker runs

def containers() -> set[str]:
    """Names of every container (running or not) on the engine; empty when none answers."""
    try:
        out = subprocess.run([DOCKER, "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return set(out.stdout.split()) if out.returncode == 0 else set()


@pytest.fixture(scope="module")
def docker_cache(tiny_ready) -> str:
    """An engine, the onnx-cpu image, and the test cache volume holding the tiny model."""
    ok, why = engine_status()
    if not ok:
        pytest.skip(f"docker runner tests skipped: {why}")
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        pytest.skip(f"docker runner tests skipped: no image {IMAGE} (build it: make images)")
    if docker("volume", "inspect", TEST_VOLUME, check=False).returncode != 0:
        docker("volume", "create", TEST_VOLUME)
    seed_tiny(TEST_VOLUME, IMAGE)
    return TEST_VOLUME


def docker_env(volume: str) -> dict[str, str]:
    return {"WATTSERVE_CACHE_VOLUME": volume, "HF_HUB_OFFLINE": "1", "RUNNER": "docker"}


@pytest.mark.slow
def test_a_docker_run_replays_every_prompt_and_records_the_image(tmp_path, docker_cache):
    results = tmp_path / "results"
    t0 = time.monotonic()
    r = run_bench("--runner", "docker", "--config", "onnx-cpu", *QUICK, "--results", str(results), timeout=300,
                  **docker_env(docker_cache))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "runner:  docker" in r.stdout
    (run,) = run_dirs(results)
    m = validate_run(run)
    assert m["status"] == "complete" and m["error"] is None and m["runner"] == "docker"
    assert m["summary"]["ok"] == m["summary"]["requests"] == PAPER.count == 164
    rows = read_requests(run / "requests.csv")
    assert [(x["index"], x["task_id"]) for x in rows] == [(p.index, p.task_id) for p in PAPER.items]
    assert all(x["status"] == "ok" and x["completion_tokens"] <= 8 for x in rows)
    assert m["prepare"]["artifact"].startswith("/cache/")  # prepared inside the image, into the volume

    inspect = docker("image", "inspect", "--format",
                     '{{.Id}} {{index .Config.Labels "org.opencontainers.image.version"}}', IMAGE).stdout.split()
    name = f"wattserve-{m['run_id']}"
    for image in (m["service"]["image"], m["runner_details"]["image"]):
        assert image["name"] == IMAGE and [image["id"], image["version"]] == inspect
    assert m["runner_details"]["container"] == m["service"]["container"] == name
    assert m["service"]["config"] == "onnx-cpu" and m["service"]["threads"] == 1
    # the run's prompt file reaches the container's warm-up (serve.sh mounts it read-only)
    assert m["service"]["warmup"]["prompts"] == "/warmup/prompts.jsonl" and len(m["service"]["warmup"]["prompt_lengths"]) > 1
    assert name not in containers()
    print(f"\n[docker runner] complete run in {time.monotonic() - t0:.1f} s")


@pytest.mark.slow
def test_ctrl_c_mid_inference_leaves_no_container(tmp_path, docker_cache):
    results = tmp_path / "results"
    bench = start_bench("--runner", "docker", "--config", "onnx-cpu", *QUICK, "--max-new-tokens", "64",
                        "--ignore-eos", "--results", str(results), **docker_env(docker_cache))
    try:
        run = wait_for_rows(results, 5, bench)
        name = f"wattserve-{run.name}"
        assert name in containers()
        children = psutil.Process(bench.pid).children(recursive=True)  # the docker client and Locust
        bench.send_signal(signal.SIGINT)
        out, _ = bench.communicate(timeout=90)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    assert bench.returncode == 130, out
    m = validate_manifest(manifest(run))
    assert m["status"] == "interrupted" and "during inference" in m["error"] and m["runner"] == "docker"
    assert name not in containers()
    assert children and all(gone(c) for c in children)


@pytest.mark.slow
def test_pid_is_the_containers_and_a_killed_client_still_leaves_no_container(tmp_path, docker_cache, monkeypatch):
    """``pid`` is the container's init on the host (the service below it); a SIGKILLed docker client
    leaves its container running, and ``stop`` removes it anyway."""
    monkeypatch.setenv("WATTSERVE_CACHE_VOLUME", docker_cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run_id = f"test-{int(time.time() * 1000)}"
    name = f"wattserve-{run_id}"
    # the artifact exists from the complete run above, or is exported now
    subprocess.run([*prepare_command("docker"), "--config", "onnx-cpu", "--model", "tiny", "--threads", "1"],
                   check=True, capture_output=True, timeout=300)
    service = start_service("docker", "onnx-cpu", "tiny", threads=1, precision="fp32",
                            log_path=tmp_path / "service.log", run_id=run_id)
    try:
        pid = service.pid
        assert pid != service.proc.pid
        assert docker("inspect", "--format", "{{.State.Pid}}", name).stdout.strip() == str(pid)
        service.wait_ready(120)
        tree = [" ".join(p.cmdline()) for p in psutil.Process(pid).children(recursive=True)]
        assert any("services.inference" in c for c in tree), tree
        assert service.info()["image"]["name"] == IMAGE
        service.proc.kill()  # the client only: the container goes on
        service.proc.wait()
        time.sleep(0.5)
        assert docker("inspect", "--format", "{{.State.Running}}", name).stdout.strip() == "true"
    finally:
        rc = service.stop()
    assert rc == -signal.SIGKILL
    assert name not in containers()


@pytest.mark.slow
def test_a_docker_study_whose_runner_is_killed_leaves_no_container_and_resumes(tmp_path, docker_cache):
    from loadgen.study import ABANDONED
    from tests.loadgen.test_study import Study, run_study, wait_for_new_run_rows, wait_gone, write_spec

    spec = write_spec(tmp_path, configs=["onnx-cpu"], runner="docker")
    runs = tmp_path / "results" / "s" / "runs"
    study = Study(spec, **docker_env(docker_cache))
    cut = wait_for_new_run_rows(runs, 5, study, set())
    name = f"wattserve-{cut.name}"
    assert name in containers()
    wait_gone(study.kill())  # SIGKILL of the runner: the docker client goes with it
    resumed = run_study(spec, **docker_env(docker_cache))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert name not in containers()  # the cut-off run's container is gone, whatever its client managed
    statuses = sorted((manifest(d)["status"], manifest(d)["error"]) for d in runs.iterdir())
    assert statuses == [("complete", None), ("failed", ABANDONED)]
    assert not {f"wattserve-{d.name}" for d in runs.iterdir()} & containers()
