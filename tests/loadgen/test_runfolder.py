"""The run-folder contract: manifests that analysis can trust, folders that are never reused."""

from __future__ import annotations

import copy
import re

import pytest

from loadgen.protocol import summarize_rows
from loadgen.runfolder import (REQUEST_COLUMNS, ManifestError, RunFolder, make_run_id, manifest_problems,
                               read_requests, validate_manifest)

T = 1_800_000_000.0


def good_manifest() -> dict:
    return {
        "schema": 1, "run_id": "20270115T080000Z-onnx-cpu-tiny-r1", "status": "complete", "error": None,
        "config": "onnx-cpu", "engine": "onnx", "provider": "cpu", "runner": "native",
        "model": {"name": "tiny", "kind": "tiny", "source": "wattserve/tiny", "revision": None,
                  "content_hash": "ab" * 32, "params": 2_000_000, "size_category": 1},
        "prompts": {"name": "paper", "path": "/x", "sha256": "0f" * 32, "count": 2},
        "generation": {"greedy": True, "max_length": 128, "max_new_tokens": None, "ignore_eos": False,
                       "threads": 2, "precision": "fp32"},
        "protocol": {"rep": 1, "reps": 1, "warmup_s": 5, "cooldown_s": 5, "request_timeout_s": 300,
                     "sample_interval_s": None},
        "phases": {"load": {"start": T, "end": T + 1}, "idle_before": {"start": T + 1, "end": T + 6},
                   "inference": {"start": T + 6, "end": T + 9}, "idle_after": {"start": T + 9, "end": T + 14}},
        "service": {}, "host": {"hostname": "h", "os": "Linux", "kernel": "6", "cpu_model": "x", "cpu_count": 2,
                                "ram_bytes": 1, "gpus": []},
        "software": {"python": "3.11"}, "sensors": [],
        "summary": {"requests": 2, "ok": 2, "failed": 0, "time_s": 3.0, "energy": {}},
        "created_at": T - 1, "finished_at": T + 15,
    }


def test_a_good_manifest_validates():
    assert manifest_problems(good_manifest()) == []
    assert validate_manifest(good_manifest())["status"] == "complete"


@pytest.mark.parametrize("change, problem", [
    (lambda m: m.pop("prompts"), "missing key 'prompts'"),
    (lambda m: m.update(status="done"), "status 'done'"),
    (lambda m: m.update(runner="k8s"), "runner 'k8s'"),
    (lambda m: m.update(schema="1"), "'schema' has type str"),
    (lambda m: m.update(config="onnx-cuda"), "is not engine-provider"),
    (lambda m: m["prompts"].update(sha256="abc"), "prompts.sha256"),
    (lambda m: m["generation"].update(greedy=False), "greedy must be true"),
    (lambda m: m["generation"].pop("threads"), "generation.threads is missing"),
    (lambda m: m["phases"].pop("idle_after"), "phases.idle_after is missing"),
    (lambda m: m["phases"]["inference"].update(start=T + 0.5), "starts before the previous phase ends"),
    (lambda m: m["phases"]["load"].update(end="soon"), "phases.load needs epoch-second floats"),
    (lambda m: m["summary"].update(ok=1, failed=1), "a complete run answers every prompt"),
    (lambda m: m.update(status="failed"), "a failed run needs an 'error' string"),
    (lambda m: m["sensors"].append({"name": "rapl"}), "sensor entry"),
])
def test_every_departure_is_named(change, problem):
    m = copy.deepcopy(good_manifest())
    change(m)
    problems = manifest_problems(m)
    assert any(problem in p for p in problems), problems
    with pytest.raises(ManifestError):
        validate_manifest(m)


def test_an_interrupted_run_may_stop_mid_protocol():
    m = good_manifest()
    m.update(status="interrupted", error="interrupted during inference")
    del m["phases"]["idle_after"]
    assert manifest_problems(m) == []


def test_run_ids_follow_the_contract_and_folders_are_never_reused(tmp_path):
    rid = make_run_id("ov-cpu", "bigcode/tiny_starcoder_py", 3, t=T)
    assert rid == "20270115T080000Z-ov-cpu-bigcode--tiny_starcoder_py-r3"
    a = RunFolder.create(tmp_path, "ov-cpu", "tiny", 1)
    b = RunFolder.create(tmp_path, "ov-cpu", "tiny", 1)  # same second: waits for the next one
    assert a.path != b.path and a.path.is_dir() and b.path.is_dir()
    assert all(re.fullmatch(r"\d{8}T\d{6}Z-ov-cpu-tiny-r1", p.name) for p in (a.path, b.path))


def test_rows_are_typed_ordered_and_a_torn_last_line_is_dropped(tmp_path):
    folder = RunFolder.create(tmp_path, "onnx-cpu", "tiny", 1)
    header = ",".join(REQUEST_COLUMNS)
    folder.raw_requests_path.write_text(
        header + "\n"
        f"1,t1,{T + 2},{T + 3},1.0,0.9,200,ok,3,2,\"two\nlines\",5 6,\n"
        f"0,t0,{T},{T + 1},1.0,0.9,200,ok,3,1,x,7,\n"
        f"2,t2,{T + 3},{T + 4},1.0,,0,failed,,,,,ReadTimeout: timed out\n"
        f"3,t3,{T + 4}"  # the replay died while writing this one
    )
    rows = folder.finalize_requests()
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert rows[1]["output"] == "two\nlines" and rows[1]["token_ids"] == [5, 6]
    assert rows[2]["status"] == "failed" and rows[2]["server_latency_s"] is None and rows[2]["token_ids"] == []
    assert not folder.raw_requests_path.exists()
    assert read_requests(folder.requests_path) == rows
    s = summarize_rows(rows, 5, {"inference": {"start": T, "end": T + 5}})
    assert (s["requests"], s["recorded"], s["ok"], s["failed"], s["not_sent"]) == (5, 3, 2, 1, 2)
    assert s["completion_tokens"] == 3 and s["time_s"] == 5


def timed_rows() -> list[dict]:
    """Two answered requests inside good_manifest()'s inference window, with per-request timing."""
    base = {"task_id": "t", "server_latency_s": 0.9, "http_status": 200, "status": "ok", "prompt_tokens": 3,
            "output": "x", "error": None}
    return [{**base, "index": 0, "start": T + 6, "end": T + 7, "latency_s": 1.0, "completion_tokens": 5,
             "token_ids": [1, 2, 3, 4, 5], "ttft_s": 0.2, "decode_s": 0.6, "itl_mean_s": 0.15},
            {**base, "index": 1, "start": T + 7, "end": T + 8, "latency_s": 1.0, "completion_tokens": 1,
             "token_ids": [1], "ttft_s": 0.3, "decode_s": 0.0, "itl_mean_s": None}]


@pytest.mark.parametrize("change, problem", [
    (None, None),
    (lambda rows: rows[0].update(ttft_s=1.5), "ttft_s outside [0, latency_s] (rows 0)"),
    (lambda rows: rows[1].update(ttft_s=-0.1), "ttft_s outside [0, latency_s] (rows 1)"),
    (lambda rows: rows[0].update(decode_s=-0.01, itl_mean_s=-0.0025), "decode_s outside [0, latency_s] (rows 0)"),
    (lambda rows: rows[0].update(itl_mean_s=0.12), "itl_mean_s is not decode_s / (completion_tokens - 1)"),
    (lambda rows: rows[1].update(itl_mean_s=0.0), "itl_mean_s is not decode_s"),  # 1 token: must be empty
    (lambda rows: [r.update(decode_s=None, itl_mean_s=None) for r in rows], None),  # older folders: no timing
])
def test_the_validator_accepts_per_request_timing_and_names_what_cannot_be(tmp_path, change, problem):
    from loadgen.runfolder import validate_run, write_json_atomic, write_requests

    rows = timed_rows()
    if change:
        change(rows)
    write_json_atomic(tmp_path / "run.json", good_manifest())
    write_requests(tmp_path / "requests.csv", rows)
    if problem is None:
        assert validate_run(tmp_path)["status"] == "complete"
        assert read_requests(tmp_path / "requests.csv")[0]["ttft_s"] == 0.2
    else:
        with pytest.raises(ManifestError, match=re.escape(problem)):
            validate_run(tmp_path)
