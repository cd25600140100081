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
        if self.path == "/v1/completions":
            return self.stream(body)
        if "refused" in body["prompt"]:
            return self.reply(500, {"detail": "generation failed: boom"})
        if "stalls" in body["prompt"]:
            time.sleep(2.0)
        # real timestamps on the host's clock, inside the client's [start, end] (a first token stamped
        # before the request arrived would be dropped by the replay, as it should)
        started = time.time()
        first = time.time()
        time.sleep(0.007)
        t = time.time()
        ids = [1] if "again" in body["prompt"] else [1, 2]  # one token: no inter-token latency
        self.reply(200, {"text": " x", "token_ids": ids, "prompt_tokens": 3, "completion_tokens": len(ids),
                         "started_at": started, "finished_at": t, "latency_s": t - started, "first_token_at": first,
                         "decode_s": 0.006 if len(ids) > 1 else 0.0, "config": "stub", "model": "stub"})

    def stream(self, body):
        """OpenAI's SSE: a chunk per piece 50 ms apart (the last with the finish reason), usage, [DONE]."""
        if "refused" in body["prompt"]:
            return self.reply(422, {"detail": [{"loc": ["body", "max_tokens"], "msg": "too many"}]})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def event(payload):
            data = f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        head = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "stub"}
        pieces = [" x", " y", " z"]
        for i, piece in enumerate(pieces):
            time.sleep(0.05)
            event({**head, "choices": [{"index": 0, "text": piece,
                                        "finish_reason": "length" if i == len(pieces) - 1 else None}]})
        if "truncated" in body["prompt"]:  # the connection ends before [DONE]
            self.wfile.write(b"0\r\n\r\n")
            return
        event({**head, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}})
        event("[DONE]")
        self.wfile.write(b"0\r\n\r\n")

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


def test_stream_replays_with_sse_and_times_the_chunks_as_they_arrive(tmp_path, stub):
    prompts = tmp_path / "three.jsonl"
    texts = ["def ok(", "def refused(", "def truncated("]
    prompts.write_text("".join(json.dumps({"task_id": f"t{i}", "new_prompt": p}) + "\n" for i, p in enumerate(texts)))
    rows_csv = tmp_path / "rows.csv"
    env = bench_env(WATTSERVE_PROMPTS=str(prompts), WATTSERVE_REQUESTS_CSV=str(rows_csv), WATTSERVE_STREAM="1",
                    WATTSERVE_MAX_NEW_TOKENS="3", WATTSERVE_IGNORE_EOS="1", WATTSERVE_REQUEST_TIMEOUT="10")
    r = subprocess.run([sys.executable, "-m", "locust", "-f", str(ROOT / "loadgen" / "locustfile.py"), "--headless",
                        "-u", "1", "-r", "1", "--host", stub, "--only-summary"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr  # two requests failed
    assert [b["prompt"] for b in Stub.seen] == texts
    assert all(b["stream"] is True and b["stream_options"] == {"include_usage": True} and b["max_tokens"] == 3
               and b["ignore_eos"] is True and "max_new_tokens" not in b for b in Stub.seen)
    ok, refused, truncated = read_requests(rows_csv)
    assert timing_problems([ok]) == []
    assert ok["status"] == "ok" and ok["output"] == " x y z" and ok["completion_tokens"] == 3 and ok["token_ids"] == []
    # the first piece arrived after ~50 ms, the last ~100 ms after it: times as this client saw them, not
    # as one block at the end (a reader that waited for 1 KiB would see them all at once)
    assert 0.04 < ok["ttft_s"] < ok["latency_s"] and 0.08 < ok["decode_s"] < ok["latency_s"]
    assert ok["itl_mean_s"] == pytest.approx(ok["decode_s"] / 2)
    assert refused["status"] == "failed" and refused["http_status"] == 422 and "too many" in refused["error"]
    assert truncated["status"] == "failed" and "without data: [DONE]" in truncated["error"]
    assert truncated["ttft_s"] is None


def test_stream_without_a_new_token_limit_is_refused_before_any_request(tmp_path, stub):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"task_id": "a", "new_prompt": "def f("}\n')
    env = bench_env(WATTSERVE_PROMPTS=str(prompts), WATTSERVE_STREAM="1", WATTSERVE_MAX_LENGTH="128")
    r = subprocess.run([sys.executable, "-m", "locust", "-f", str(ROOT / "loadgen" / "locustfile.py"), "--headless",
                        "-u", "1", "-r", "1", "--host", stub], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "--stream needs --max-new-tokens" in r.stderr and Stub.seen == []
