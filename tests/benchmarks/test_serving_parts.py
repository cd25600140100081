"""The serving benchmark's instruments: the floor app and both clients time real requests over loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from benchmarks.serving_clients import CLIENTS, RawClient
from benchmarks.serving_parts import ROOT, FloorProcess
from tests.conftest import server_env


@pytest.fixture(scope="module")
def floor():
    proc = FloorProcess(tokens=16)
    try:
        proc.wait_ready(60)
        yield proc
    finally:
        proc.stop()


@pytest.mark.parametrize("kind", sorted(CLIENTS))
def test_both_clients_time_the_floor_on_one_connection(floor, kind):
    client = CLIENTS[kind](floor.port)
    try:
        client.reconnect()
        timings = [client.generate("def f(x):", 16) for _ in range(20)]
    finally:
        client.close()
    assert all(t.tokens == 16 and t.engine_s == 0.0 for t in timings)  # the floor's fixed answer, parsed
    assert all(t.overhead_s == t.client_s > 0 for t in timings)  # no engine: the whole latency is overhead


@pytest.mark.parametrize("hold_on", ["loop", "thread"])
def test_a_held_floor_waits_as_told_and_counts_the_wait_as_engine_time(hold_on):
    floor = FloorProcess(tokens=16, hold_on=hold_on)
    client = None
    try:
        floor.wait_ready(60)
        client = RawClient(floor.port)
        client.reconnect()
        assert client.generate("def f(x):", 16).engine_s == 0.0  # nothing held until told
        floor.hold(0.03)
        timings = [client.generate("def f(x):", 16) for _ in range(5)]
        with pytest.raises(RuntimeError, match="refused its hold"):
            FloorProcess.hold(floor, 99)  # beyond what a floor holds: refused, the hold unchanged
        assert client.generate("def f(x):", 16).engine_s >= 0.028
    finally:
        if client:
            client.close()
        floor.stop()
    assert floor.config == f"http floor, held on a {hold_on}"
    for t in timings:  # uvloop's timers have a millisecond's resolution: a sleep may end up to 1 ms early
        assert 0.028 <= t.engine_s < t.client_s  # the measured wait, inside what the client saw
        assert 0 < t.overhead_s < 0.03


def test_the_raw_client_reads_answers_split_across_reads_and_says_when_cut():
    """An answer arriving in pieces (head and body apart, the body in two) is read whole; a connection
    closed mid-answer is a ConnectionError, never a short body taken for the answer."""
    body = b'{"latency_s": 0.5, "completion_tokens": 3, "first_token_at": null}'
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve():
        conn, _ = server.accept()
        for cut in (False, True):
            conn.recv(65536)
            conn.sendall(head)
            conn.sendall(body[:10])
            if cut:
                conn.close()
                return
            conn.sendall(body[10:])

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    client = RawClient.__new__(RawClient)  # the socket part only: no http.client connection needed here
    client.port, client.timeout, client.buf = port, 10, b""
    client.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        timing = client.generate("x", 3)
        assert (timing.engine_s, timing.tokens) == (0.5, 3)
        with pytest.raises(ConnectionError, match="mid-answer"):
            client.generate("x", 3)
    finally:
        client.sock.close()
        server.close()
        t.join(5)


def test_the_services_own_part_is_its_overhead_above_the_same_models_thread_held_floor():
    from benchmarks.serving import own_parts

    def row(model, config, checkout, overhead):
        return (model, config, checkout) + (None,) * 7 + (overhead,) + (None,) * 7

    rows = [row("tiny", "torch-cpu", "this", 0.00153), row("tiny", "torch-cpu", "baseline", 0.00176),
            row("tiny", "http floor", "floor", 0.00025), row("tiny", "http floor, held on a thread", "floor", 0.00092),
            row("shape", "onnx-cpu", "this", 0.004)]  # no floor for this model: no line
    assert own_parts(rows) == [
        "tiny torch-cpu (this): its own part of the overhead, above the floor held on a thread: 0.61 ms",
        "tiny torch-cpu (baseline): its own part of the overhead, above the floor held on a thread: 0.84 ms"]


def test_the_serving_benchmark_runs_a_service_beside_its_floors_and_prints_every_row(tiny):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serving.py"), "--models", "tiny", "--configs",
                          "torch-cpu", "--threads", "1", "--rounds", "1", "--requests", "3", "--tokens", "4",
                          "--floor", "--client", "raw", "--no-in-process"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT, env=server_env())
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split(" | ") for line in out.stdout.splitlines() if line.startswith("| tiny |")]
    assert [r[1] for r in rows] == ["torch-cpu", "http floor", "http floor, held on a loop",
                                    "http floor, held on a thread"]
    assert all(r[-1].rstrip(" |") == "3" for r in rows)  # every request of the round timed, for each
    held = [float(r[7]) for r in rows[2:]]  # engine p50: the held floors waited about the service's engine time
    assert all(h > 0 for h in held) and "the held floors wait" in out.stderr
    assert "torch-cpu (this): its own part of the overhead, above the floor held on a thread" in out.stdout
