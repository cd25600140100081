"""The locustfile under real Locust: every prompt once, in order, and failures recorded, not dropped.

The server here is a stub on purpose: it answers, refuses and stalls on cue, which a real model
cannot be made to do. The real service is exercised by test_protocol.py.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from loadgen.runfolder import REQUEST_COLUMNS, read_requests, timing_problems
from tests.conftest import ROOT
from tests.loadgen.conftest import bench_env

PROMPTS = ["def ok(", "def refused(", "def stalls(", "def ok_again("]


class Stub(BaseHTTPRequestHandler):
    seen: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Stub.seen.append(body)
        if "refused" in body["prompt"]:
            return self.reply(500, {"detail": "generation failed: boom"})
        if "stalls" in body["prompt"]:
            time.sleep(2.0)
        t = time.time()
        ids = [1] if "again" in body["prompt"] else [1, 2]  # one token: no inter-token latency
        self.reply(200, {"text": " x", "token_ids": ids, "prompt_tokens": 3, "completion_tokens": len(ids),
                         "started_at": t - 0.01, "finished_at": t, "latency_s": 0.01, "first_token_at": t - 0.006,
                         "decode_s": 0.006 if len(ids) > 1 else 0.0, "config": "stub", "model": "stub"})

    def reply(self, code, payload):
        data = json.dumps(payload).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass


@pytest.fixture
def stub():
    Stub.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_replay_records_ok_refused_and_timed_out_requests(tmp_path, stub):
    prompts = tmp_path / "four.jsonl"
    prompts.write_text("".join(json.dumps({"task_id": f"t{i}", "new_prompt": p}) + "\n" for i, p in enumerate(PROMPTS)))
    rows_csv = tmp_path / "rows.csv"
    env = bench_env(WATTSERVE_PROMPTS=str(prompts), WATTSERVE_REQUESTS_CSV=str(rows_csv),
                    WATTSERVE_REQUEST_TIMEOUT="0.5", WATTSERVE_MAX_NEW_TOKENS="5",
                    WATTSERVE_STOP=json.dumps(["\ndef", "\n#"]))
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "locust", "-f", str(ROOT / "loadgen" / "locustfile.py"), "--headless",
                        "-u", "1", "-r", "1", "--host", stub, "--csv", str(tmp_path / "locust"), "--only-summary"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    t1 = time.time()
    assert r.returncode == 1, r.stderr  # Locust's exit code when a request failed; it stopped by itself

    assert [b["prompt"] for b in Stub.seen] == PROMPTS  # each once, in order
    assert all(b["max_new_tokens"] == 5 and "max_length" not in b for b in Stub.seen)
    assert all(b["stop"] == ["\ndef", "\n#"] for b in Stub.seen)  # newlines kept whole through the environment
    with open(rows_csv, newline="") as fh:
        assert tuple(csv.DictReader(fh).fieldnames) == (*REQUEST_COLUMNS, "ttft_s", "decode_s", "itl_mean_s")
    rows = read_requests(rows_csv)
    assert timing_problems(rows) == []
    assert 0 < rows[0]["ttft_s"] < rows[0]["latency_s"] and rows[0]["decode_s"] == 0.006
    assert rows[0]["itl_mean_s"] == pytest.approx(0.006)  # 6 ms over the one gap between 2 tokens
    assert rows[3]["decode_s"] == 0.0 and rows[3]["itl_mean_s"] is None  # 1 token: undefined, not 0 / 0
    assert rows[1]["ttft_s"] is rows[1]["decode_s"] is rows[1]["itl_mean_s"] is None  # refused: no timing
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert [r["status"] for r in rows] == ["ok", "failed", "failed", "ok"]
    assert rows[0]["token_ids"] == [1, 2] and rows[0]["completion_tokens"] == 2 and rows[0]["http_status"] == 200
    assert rows[1]["http_status"] == 500 and "boom" in rows[1]["error"]
    assert rows[2]["http_status"] == 0 and "Timeout" in rows[2]["error"] and rows[2]["latency_s"] < 1.5
    assert all(t0 < a["start"] <= a["end"] <= b["start"] < t1 for a, b in zip(rows, rows[1:]))
    with open(tmp_path / "locust_stats.csv", newline="") as fh:
        agg = next(row for row in csv.DictReader(fh) if row["Name"] == "Aggregated")
    assert (agg["Request Count"], agg["Failure Count"]) == ("4", "2")  # Locust's own stats are complete


def test_a_tampered_prompt_set_stops_locust_before_any_request(tmp_path, stub):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"task_id": "a", "new_prompt": "def f("}\n')
    env = bench_env(WATTSERVE_PROMPTS=str(prompts), WATTSERVE_PROMPTS_SHA256="0" * 64,
                    WATTSERVE_REQUESTS_CSV=str(tmp_path / "rows.csv"))
    r = subprocess.run([sys.executable, "-m", "locust", "-f", str(ROOT / "loadgen" / "locustfile.py"), "--headless",
                        "-u", "1", "-r", "1", "--host", stub], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "expected 000000" in r.stderr
    assert Stub.seen == [] and not (tmp_path / "rows.csv").exists()


@pytest.mark.parametrize("stop", ['\\ndef', '["\\ndef", ""]', '{"a": 1}'])
def test_a_bad_stop_list_stops_locust_before_any_request(tmp_path, stub, stop):
    env = bench_env(WATTSERVE_PROMPTS="paper", WATTSERVE_STOP=stop, WATTSERVE_REQUESTS_CSV=str(tmp_path / "rows.csv"))
    r = subprocess.run([sys.executable, "-m", "locust", "-f", str(ROOT / "loadgen" / "locustfile.py"), "--headless",
                        "-u", "1", "-r", "1", "--host", stub], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "--stop must be a JSON list" in r.stderr
    assert Stub.seen == [] and not (tmp_path / "rows.csv").exists()
