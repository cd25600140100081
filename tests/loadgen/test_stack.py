"""The bench's side of the live stack without Docker: the bench exporter's series, the file_sd target
file, which stack exporters a sensor choice takes, and that no stack means the bench as before."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadgen.bench_exporter import BenchExporter, record_energies
from loadgen.progress import Progress
from loadgen.sampling import SensorChoice
from loadgen.stack import Stack, StackError, StackRun, TargetFile, discover, sensor_targets


def scrape(exporter: BenchExporter) -> dict[str, list[tuple[dict, float]]]:
    text = urllib.request.urlopen(f"http://{exporter.address}/metrics", timeout=5).read().decode()
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


@pytest.fixture
def exporter():
    e = BenchExporter("B1", total_runs=2)
    yield e
    e.close()


def test_phase_info_is_one_for_the_current_phase_only(exporter):
    progress = Progress(2, warmup_s=1, cooldown_s=1, prompts=3, stream=io.StringIO(), tty=False,
                        listeners=[exporter])
    exporter.start_run("R1", "onnx-cpu", "tiny", 1, 3)
    progress.set_phase("load")
    progress.set_phase("inference")
    progress.requests(2, 0.1)
    got = scrape(exporter)
    phases = got["wattserve_bench_phase_info"]
    assert [(l["phase"], v) for l, v in phases] == [("inference", 1.0)]
    assert phases[0][0] == {"bench_id": "B1", "run_id": "R1", "config": "onnx-cpu", "model": "tiny", "rep": "1",
                            "phase": "inference"}
    assert got["wattserve_bench_prompts_done"] == [({"bench_id": "B1", "run_id": "R1"}, 2.0)]
    assert got["wattserve_bench_prompts_total"][0][1] == 3.0
    starts = {l["phase"]: v for l, v in got["wattserve_bench_phase_start_timestamp_seconds"]}
    ends = {l["phase"]: v for l, v in got.get("wattserve_bench_phase_end_timestamp_seconds", [])}
    assert set(starts) == {"load", "inference"} and set(ends) == {"load"}
    assert starts["load"] <= ends["load"] <= starts["inference"]
    assert got["wattserve_bench_eta_seconds"][0][1] > 0  # the progress line's ETA, forced redraws included


def test_a_finished_run_exposes_its_record(exporter):
    exporter.start_run("R1", "onnx-cpu", "tiny", 1, 3)
    exporter.set_phase("stop")
    manifest = {"status": "complete", "phases": {"inference": {"start": 100.0, "end": 112.5}, "load": {"start": 90.0}},
                "summary": {"time_s": 12.5, "energy": {
        "energy_global_j": 100.0, "energy_global_estimated": True, "energy_cpu_j": 100.0,
        "energy_cpu_estimated": True, "energy_gpu_j": None, "energy_per_request_j": 33.3}}}
    exporter.end_run(manifest)
    got = scrape(exporter)
    assert "wattserve_bench_phase_info" not in got  # no phase between runs
    assert got["wattserve_bench_run_time_seconds"][0][1] == 12.5
    energy = {(l["kind"], l["provenance"]): v for l, v in got["wattserve_bench_run_energy_joules"]}
    assert energy == {("global", "estimated"): 100.0, ("cpu", "estimated"): 100.0}  # no gpu value: no series
    assert got["wattserve_bench_run_info"][0][0]["status"] == "complete"
    # the record's window replaces the live phase edges (load has no end in the record: left as it was)
    assert [(l["phase"], v) for l, v in got["wattserve_bench_phase_start_timestamp_seconds"]
            if l["phase"] == "inference"] == [("inference", 100.0)]
    assert [(l["phase"], v) for l, v in got["wattserve_bench_phase_end_timestamp_seconds"]
            if l["phase"] == "inference"] == [("inference", 112.5)]
    assert {l["state"]: v for l, v in got["wattserve_bench_runs"]} == {"total": 2.0, "done": 1.0}


def test_a_finished_run_exposes_its_sensors_health(exporter):
    """The sensors dashboard's per-run table: dropped samples, failed scrapes, availability, from run.json's
    sensor entries; a sensor with nothing dropped still has its series (0), a nameless entry none."""
    exporter.start_run("R1", "onnx-cpu", "tiny", 1, 3)
    exporter.end_run({"status": "complete", "summary": {}, "sensors": [
        {"name": "estimate", "available": True, "scrapes": 40, "failed_scrapes": 0, "dropped_samples": 0},
        {"name": "rapl", "available": False, "scrapes": 40, "failed_scrapes": 3, "dropped_samples": 2,
         "dropped_reason": "2 nan"},
        {"available": True}, "not a sensor entry"]})
    got = scrape(exporter)

    def by_sensor(name):
        return {l["sensor"]: v for l, v in got[name] if l["run_id"] == "R1" and l["bench_id"] == "B1"}

    assert by_sensor("wattserve_bench_run_sensor_dropped_samples") == {"estimate": 0.0, "rapl": 2.0}
    assert by_sensor("wattserve_bench_run_sensor_failed_scrapes") == {"estimate": 0.0, "rapl": 3.0}
    assert by_sensor("wattserve_bench_run_sensor_available") == {"estimate": 1.0, "rapl": 0.0}


def test_record_energies_takes_provenance_per_kind():
    assert record_energies({"energy_global_j": 5, "energy_global_estimated": False, "energy_wall_j": 7,
                            "energy_wall_estimated": False, "energy_cpu_j": 2, "energy_cpu_estimated": True}) == [
        ("global", 5.0, False), ("wall", 7.0, False), ("cpu", 2.0, True)]
    assert record_energies({}) == []


def fake_stack(tmp_path: Path, **exporters: str) -> Stack:
    return Stack("p", "p_default", "127.0.0.1", "http://127.0.0.1:1", tmp_path, dict(exporters))


def test_target_file_is_replaced_whole_and_removed(tmp_path):
    stack = fake_stack(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"bench-old-{dead.pid}.json").write_text("[]")  # a bench killed outright
    (tmp_path / f"bench-live-{os.getpid()}.json").write_text("[]")
    f = TargetFile(stack, "bench-x-1")
    assert not (tmp_path / f"bench-old-{dead.pid}.json").exists()
    assert (tmp_path / f"bench-live-{os.getpid()}.json").exists()
    f.set("bench", "10.0.0.1:9999", {"job": "bench"})
    f.set("service", "c:8000", {"job": "inference", "run_id": "R", "rep": 1})
    groups = json.loads(f.path.read_text())
    assert groups == [{"targets": ["10.0.0.1:9999"], "labels": {"job": "bench"}},
                      {"targets": ["c:8000"], "labels": {"job": "inference", "run_id": "R", "rep": "1"}}]
    f.drop("service")
    assert json.loads(f.path.read_text()) == [groups[0]]
    assert sorted(p.name for p in tmp_path.iterdir() if "bench-x" in p.name) == ["bench-x-1.json"]  # no tmp left
    f.close()
    assert not f.path.exists()


def test_stack_run_registers_the_service_with_the_run_id(tmp_path):
    run = StackRun(fake_stack(tmp_path), "B7", 1)
    try:
        class Svc:
            container = "wattserve-R1"
        run.service_started(Svc(), "R1", 2)
        groups = {g["labels"]["job"]: g for g in json.loads(run.targets.path.read_text())}
        assert groups["inference"] == {"targets": ["wattserve-R1:8000"], "labels": {
            "job": "inference", "instance": "wattserve-R1", "run_id": "R1", "rep": "2", "bench_id": "B7"}}
        assert groups["bench"]["targets"] == [run.exporter.address]
        run.service_stopping()
        assert [g["labels"]["job"] for g in json.loads(run.targets.path.read_text())] == ["bench"]
    finally:
        run.close(linger_s=0)
    assert not run.targets.path.exists()


@pytest.mark.parametrize("choice, want", [
    (SensorChoice(), {"rapl", "estimate", "nvml", "netio"}),
    (SensorChoice(cpu="rapl", gpu="none", wall="none"), {"rapl"}),
    (SensorChoice(cpu="estimate", gpu="dcgm=http://d:9400/metrics"), {"estimate", "dcgm", "nvml", "netio"} - {"nvml"}),
])
def test_sensor_choice_takes_the_stacks_exporters(tmp_path, choice, want):
    stack = fake_stack(tmp_path, rapl="r", estimate="e", nvml="n", netio="w", host="h")
    got = sensor_targets(stack, choice)
    assert set(got) == want and "host" not in got  # the bench's own host exporter watches its service
    if choice.dcgm_url:
        assert got["dcgm"] == "http://d:9400/metrics"


@pytest.mark.parametrize("choice, says", [
    (SensorChoice(cpu="energibridge"), "energibridge"),
    (SensorChoice(cpu="estimate", tdp_watts=65), "TDP_WATTS"),
    (SensorChoice(gpu="nvml"), "no nvml exporter"),
    (SensorChoice(gpu="nvidia-smi"), "nvidia-smi"),
    (SensorChoice(wall="http://pdu/netio.json"), "NETIO_URL"),
])
def test_a_choice_the_stack_cannot_serve_says_how(tmp_path, choice, says):
    with pytest.raises(StackError, match=says) as exc:
        sensor_targets(fake_stack(tmp_path, rapl="r", estimate="e"), choice)
    assert "WATTSERVE_STACK=off" in str(exc.value)


def test_no_stack_is_none_and_a_named_absent_one_an_error():
    assert discover({"WATTSERVE_STACK": "off"}) == (None, "WATTSERVE_STACK=off")
    stack, why = discover({"COMPOSE_PROJECT_NAME": "wattserve-no-such-project-16"})
    assert stack is None and "no stack up" in why
    with pytest.raises(StackError, match="no running Prometheus of compose project"):
        discover({"WATTSERVE_STACK": "wattserve-no-such-project-16"})


def test_the_native_runner_never_joins_a_named_stack():
    from loadgen.bench_settings import UsageError, stack_settings

    assert stack_settings("native", None, {})[0] is None
    with pytest.raises(UsageError, match="only the docker runner joins a stack"):
        stack_settings("native", None, {"WATTSERVE_STACK": "mystack"})


@pytest.mark.parametrize("args, says", [
    (["--service-url", "http://127.0.0.1:9", "--config", "onnx-cpu,torch-cpu"], "CONFIG must be its one"),
    (["--exporter", "estimate"], "NAME=http://host:port/metrics"),
])
def test_external_service_and_exporter_options_are_checked_first(tmp_path, args, says):
    from tests.loadgen.conftest import run_bench

    out = run_bench(*args, "--results", str(tmp_path / "r"), timeout=120)
    assert out.returncode == 2 and says in out.stderr, out.stderr
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
