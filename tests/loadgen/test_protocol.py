"""The whole protocol, for real: the service as a subprocess, Locust as a subprocess, real HTTP.

Kept short (8 new tokens, 0.5 s idle windows, one thread) so the suite stays fast on 2 cores.
"""

from __future__ import annotations

import csv
import os
import signal

import psutil
import pytest

from loadgen.prompts import load_prompts
from loadgen.runfolder import PHASES, read_requests, validate_manifest, validate_run
from loadgen.sampler import powercap_state
from tests.conftest import ROOT
from tests.loadgen.conftest import QUICK, gone, manifest, run_bench, run_dirs, start_bench, wait_for_rows

pytestmark = pytest.mark.slow
PAPER = load_prompts("paper")


def service_children(bench_pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(bench_pid).children(recursive=True)
            if "services.inference" in " ".join(p.cmdline())]


def test_bench_replays_every_prompt_once_in_order_inside_the_window(tmp_path, tiny_ready):
    results = tmp_path / "results"
    relative = os.path.relpath(results, ROOT)  # RESULTS is relative by default: children run elsewhere
    r = run_bench("--config", "torch-cpu,onnx-cpu", *QUICK, "--results", relative, timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr
    runs = run_dirs(results)
    assert [manifest(d)["config"] for d in runs] == ["torch-cpu", "onnx-cpu"]
    for d in runs:
        m = validate_run(d)
        assert m["status"] == "complete" and m["error"] is None
        assert m["prompts"] == PAPER.describe()
        assert m["generation"]["max_new_tokens"] == 8 and m["generation"]["threads"] == 1
        assert m["model"]["name"] == "tiny" and m["model"]["content_hash"]
        assert m["service"]["config"] == m["config"] and m["service"]["state"] == "ready"
        assert m["host"]["cpu_count"] >= 1 and m["software"]["locust"]
        sensors = {x["name"]: x for x in m["sensors"]}
        assert sensors["host"]["available"]  # utilization is recorded whatever measures energy
        cpu = m["summary"]["energy"]["domains"]["cpu"]
        if powercap_state() == "readable":
            assert cpu["source"] == "rapl" and not cpu["estimated"]
        else:  # this VM: no RAPL, so the CPU energy is an estimate and says so
            assert "rapl" not in sensors and sensors["estimate"]["estimated"] is True
            assert cpu["source"] == "estimate" and cpu["estimated"] is True and m["summary"]["energy"]["estimated"]
        assert cpu["joules"] > 0 and cpu["complete"]
        series = (d / "series.csv").read_text()
        assert "wattserve_cpu_utilization_ratio" in series and "wattserve_process_cpu_seconds_total" in series

        ph = m["phases"]
        times = [t for name in PHASES for t in (ph[name]["start"], ph[name]["end"])]
        assert times == sorted(times)  # load ≤ idle before ≤ inference ≤ idle after, one clock
        assert m["prepare"]["end"] <= ph["load"]["start"]  # the export is never in a window
        assert ph["idle_before"]["end"] - ph["idle_before"]["start"] >= 0.5
        assert ph["idle_after"]["end"] - ph["idle_after"]["start"] >= 0.5

        rows = read_requests(d / "requests.csv")
        assert [(x["index"], x["task_id"]) for x in rows] == [(p.index, p.task_id) for p in PAPER.items]
        assert all(x["status"] == "ok" and x["http_status"] == 200 and x["completion_tokens"] <= 8 for x in rows)
        assert all(len(x["token_ids"]) == x["completion_tokens"] for x in rows)
        assert all(ph["inference"]["start"] < x["start"] <= x["end"] < ph["inference"]["end"] for x in rows)
        assert all(a["end"] <= b["start"] for a, b in zip(rows, rows[1:]))  # one at a time, in order
        assert all(0 < x["server_latency_s"] <= x["latency_s"] for x in rows)

        with open(d / "locust_stats.csv", newline="") as fh:
            agg = next(row for row in csv.DictReader(fh) if row["Name"] == "Aggregated")
        assert agg["Request Count"] == "164" and agg["Failure Count"] == "0"
        assert not (d / "requests.raw.csv").exists()

    table = r.stdout
    assert "| torch-cpu" in table and "ref" in table and "100.0% (164/164)" in table  # onnx == torch
    assert ("ESTIMATED; cpu: estimate" if powercap_state() != "readable" else "measured; cpu: rapl") in table
    reports = list(results.glob("bench-*.md"))
    assert len(reports) == 1 and "100.0% (164/164)" in reports[0].read_text()


def test_ctrl_c_mid_inference_stops_the_service_and_marks_the_run_interrupted(tmp_path, tiny_ready):
    results = tmp_path / "results"
    bench = start_bench("--config", "onnx-cpu", *QUICK, "--max-new-tokens", "64", "--ignore-eos",
                        "--results", str(results))
    try:
        run = wait_for_rows(results, 5, bench)
        services = service_children(bench.pid)
        children = psutil.Process(bench.pid).children(recursive=True)  # the service and Locust
        assert len(services) == 1 and any("locust" in " ".join(c.cmdline()) for c in children)
        bench.send_signal(signal.SIGINT)
        out, _ = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            bench.kill()
    assert bench.returncode == 130, out
    m = validate_manifest(manifest(run))
    assert m["status"] == "interrupted" and "during inference" in m["error"]
    assert "idle_after" not in m["phases"] and m["phases"]["inference"]["end"] >= m["phases"]["inference"]["start"]
    assert all(gone(c) for c in children)
    rows = read_requests(run / "requests.csv")
    assert len(rows) >= 5 and [x["index"] for x in rows] == list(range(len(rows)))
    assert m["summary"]["recorded"] == len(rows)
    assert "interrupted" in out and m["run_id"] in out  # the table of what was done still prints


def test_a_service_that_dies_mid_run_fails_the_run_and_keeps_the_answered_rows(tmp_path, tiny_ready):
    results = tmp_path / "results"
    bench = start_bench("--config", "onnx-cpu", *QUICK, "--max-new-tokens", "64", "--ignore-eos",
                        "--results", str(results))
    try:
        run = wait_for_rows(results, 5, bench)
        (service,) = service_children(bench.pid)
        os.kill(service.pid, signal.SIGKILL)
        out, _ = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            bench.kill()
    assert bench.returncode == 1, out
    m = validate_manifest(manifest(run))
    assert m["status"] == "failed"
    assert "service exited with code -9 during inference" in m["error"]
    rows = read_requests(run / "requests.csv")
    ok = [x for x in rows if x["status"] == "ok"]
    assert len(ok) >= 5 and [x["index"] for x in ok] == list(range(len(ok)))
    assert m["summary"]["ok"] == len(ok) and m["summary"]["requests"] == 164
