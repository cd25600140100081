"""The whole protocol, for real: the service as a subprocess, Locust as a subprocess, real HTTP.

Kept short (8 new tokens, 0.5 s idle windows, one thread) so the suite stays fast on 2 cores.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import statistics

import psutil
import pytest

from loadgen.prompts import load_prompts
from loadgen.runfolder import PHASES, read_requests, validate_manifest, validate_run
from loadgen.local_exporters import powercap_state
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
    assert sorted(manifest(d)["config"] for d in runs) == ["onnx-cpu", "torch-cpu"]
    seed = manifest(runs[0])["protocol"]["order_seed"]  # randomized by default, from a recorded seed
    assert isinstance(seed, int) and f"seed {seed}" in r.stdout
    assert all(manifest(d)["protocol"]["order_seed"] == seed for d in runs)
    for d in runs:
        m = validate_run(d)
        assert m["status"] == "complete" and m["error"] is None
        assert m["prompts"] == PAPER.describe()
        assert m["generation"]["max_new_tokens"] == 8 and m["generation"]["threads"] == 1
        assert m["model"]["name"] == "tiny" and m["model"]["content_hash"]
        assert m["service"]["config"] == m["config"] and m["service"]["state"] == "ready"
        assert m["service"]["warmup"]["prompts"] == str(PAPER.path)  # the run's own prompt set, passed on
        assert m["host"]["cpu_count"] >= 1 and m["software"]["locust"]
        sensors = {x["name"]: x for x in m["sensors"]}
        assert sensors["host"]["available"]  # utilization is recorded whatever measures energy
        e = m["summary"]["energy"]
        if powercap_state() == "readable":
            assert e["energy_cpu_source"] == "rapl" and not e["energy_cpu_estimated"]
        else:  # this VM: no RAPL, so the CPU energy is an estimate and says so
            assert "rapl" not in sensors and sensors["estimate"]["estimated"] is True
            assert e["energy_cpu_source"] == "estimate" and e["energy_cpu_estimated"] is True
            assert e["energy_global_estimated"] is True and e["energy_global_provenance"] == "estimated"
        assert e["energy_cpu_j"] > 0 and e["energy_cpu_complete"]
        series = (d / "series.csv").read_text()
        assert "wattserve_cpu_utilization_ratio" in series and "wattserve_process_cpu_seconds_total" in series

        ph = m["phases"]
        times = [t for name in PHASES for t in (ph[name]["start"], ph[name]["end"])]
        assert times == sorted(times)  # load ≤ idle before ≤ replay start ≤ inference ≤ replay stop ≤ idle after
        assert m["prepare"]["end"] <= ph["load"]["start"]  # the export is never in a window
        assert ph["idle_before"]["end"] - ph["idle_before"]["start"] >= 0.5
        assert ph["idle_after"]["end"] - ph["idle_after"]["start"] >= 0.5

        rows = read_requests(d / "requests.csv")
        assert [(x["index"], x["task_id"]) for x in rows] == [(p.index, p.task_id) for p in PAPER.items]
        assert all(x["status"] == "ok" and x["http_status"] == 200 and x["completion_tokens"] <= 8 for x in rows)
        assert all(len(x["token_ids"]) == x["completion_tokens"] for x in rows)
        # the inference window is the requests' span exactly: Locust's start-up and stop are outside it
        assert (ph["inference"]["start"], ph["inference"]["end"]) == (rows[0]["start"], rows[-1]["end"])
        assert ph["replay_start"]["end"] - ph["replay_start"]["start"] > 0.2  # Locust's imports and spawn
        assert m["summary"]["time_s"] == pytest.approx(rows[-1]["end"] - rows[0]["start"])
        # each edge of the window has a sensor scrape of its own, within a few ms of it
        scraped = sorted({float(line.split(",", 1)[0]) for line in series.splitlines()[1:]})
        for edge in (ph["inference"]["start"], ph["inference"]["end"]):
            assert min(abs(t - edge) for t in scraped) < 0.1, edge
        assert m["harness_overhead"]["window"] == "inference"
        assert all(x["energy_j"] > 0 and x["energy_provenance"] == e["energy_global_provenance"] for x in rows)
        assert sum(x["energy_j"] for x in rows) == pytest.approx(e["energy_global_j"], rel=0.05)
        assert all(0 < x["ttft_s"] <= x["latency_s"] for x in rows)  # the service's first token, this clock
        assert all(x["prefill_j"] + x["decode_j"] == pytest.approx(x["energy_j"]) for x in rows)
        assert m["summary"]["median_ttft_s"] == pytest.approx(statistics.median(x["ttft_s"] for x in rows))
        # the service's decode time (first to last token) and the mean inter-token latency it gives
        assert all(0 <= x["decode_s"] < x["latency_s"] - x["ttft_s"] + 1e-6 for x in rows)
        assert all(x["itl_mean_s"] == pytest.approx(x["decode_s"] / (x["completion_tokens"] - 1))
                   if x["completion_tokens"] > 1 else x["itl_mean_s"] is None for x in rows)
        assert m["summary"]["itl_median_s"] is not None and m["summary"]["ttft_p90_s"] >= m["summary"]["median_ttft_s"]
        assert all(a["end"] <= b["start"] for a, b in zip(rows, rows[1:]))  # one at a time, in order
        assert all(0 < x["server_latency_s"] <= x["latency_s"] for x in rows)

        summary = next(line for line in (d / "locust.log").read_text().splitlines() if "Aggregated" in line)
        assert summary.split()[1:3] == ["164", "0(0.00%)"]  # Locust's own count agrees
        assert not (d / "requests.raw.csv").exists()

    # the bench table and make analyze's runs.csv give the same numbers for the same run (one definition)
    from analysis.runs import read_results
    from loadgen.summary import summarize

    frame, _, _ = read_results(results, quiet=True)
    for d in runs:
        bench, row = summarize(d), frame.set_index("run_id").loc[d.name]
        e = manifest(d)["summary"]["energy"]
        assert bench["inference_s"] == pytest.approx(row["time_s"], rel=1e-9)
        assert bench["tokens_per_s"] == pytest.approx(row["tokens_per_s"], rel=1e-9)
        assert bench["energy_global_j"] == pytest.approx(row["energy_global_j"], rel=1e-9)
        assert e["idle_power_cpu_w"] == pytest.approx(row["idle_power_cpu_w"], rel=1e-9)
        assert f"{row['energy_global_j']:.1f} J" in bench["energy"] and f"cpu {row['idle_power_cpu_w']:.1f}" in r.stdout
        assert f"| {row['tokens_per_s']:.1f}" in r.stdout and f"| {row['time_s']:.1f}" in r.stdout

    table = r.stdout
    assert "| torch-cpu" in table and "ref" in table and "100.0% (164/164)" in table  # onnx == torch
    assert ("ESTIMATED; cpu: estimate" if powercap_state() != "readable" else "measured; cpu: rapl") in table
    reports = list(results.glob("bench-*.md"))
    assert len(reports) == 1 and "100.0% (164/164)" in reports[0].read_text()


def test_a_custom_prompt_file_reaches_the_warm_up(tmp_path, tiny_ready):
    """The warm-up runs one generation per prompt length the run will send: a custom PROMPTS file's
    lengths, not the paper prompts' (the service's default)."""
    from transformers import AutoTokenizer

    texts = ["def a(", "def add(x, y):\n    return", "class Stack:\n    def push(self, item):\n        self.items"]
    prompts = tmp_path / "mine.jsonl"
    prompts.write_text("".join(json.dumps({"task_id": f"mine/{i}", "new_prompt": t}) + "\n"
                               for i, t in enumerate(texts)))
    r = run_bench("--config", "torch-cpu", *QUICK, "--prompts", str(prompts), "--results", str(tmp_path / "r"),
                  timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    (run,) = run_dirs(tmp_path / "r")
    warm = manifest(run)["service"]["warmup"]
    tok = AutoTokenizer.from_pretrained(str(tiny_ready.load_source))
    assert warm["prompts"] == str(prompts.resolve())
    assert warm["prompt_lengths"] == sorted({len(tok(t)["input_ids"]) for t in texts})


def test_a_streamed_bench_times_each_request_as_its_client_sees_it(tmp_path, tiny_ready):
    """--stream: the same prompts and limits over SSE on /v1/completions; TTFT and decode time from the
    chunks' arrival at Locust, the run complete and valid, outputs not compared (no token ids)."""
    prompts = tmp_path / "twelve.jsonl"
    prompts.write_text("".join(json.dumps({"task_id": p.task_id, "new_prompt": p.text}) + "\n"
                               for p in PAPER.items[:12]))
    r = run_bench("--config", "torch-cpu", *QUICK, "--ignore-eos", "--stream", "--prompts", str(prompts),
                  "--results", str(tmp_path / "r"), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    (run,) = run_dirs(tmp_path / "r")
    m = validate_run(run)  # the validator accepts the streamed timing (and would refuse an impossible one)
    assert m["status"] == "complete" and m["generation"]["stream"] is True
    rows = read_requests(run / "requests.csv")
    assert len(rows) == 12 and all(x["status"] == "ok" and x["completion_tokens"] == 8 for x in rows)
    assert all(x["token_ids"] == [] and x["output"] for x in rows)  # SSE carries text, not ids
    assert all(0 < x["ttft_s"] < x["ttft_s"] + x["decode_s"] <= x["latency_s"] for x in rows)
    assert all(x["itl_mean_s"] == pytest.approx(x["decode_s"] / 7) for x in rows)
    assert m["summary"]["itl_median_s"] > 0 and m["summary"]["median_ttft_s"] > 0
    assert "streamed: no token ids" in r.stdout  # the bench table does not call a stream's outputs different


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
