"""The serving benchmark's instruments: the floor app and both clients time real requests over loopback."""

from __future__ import annotations

import socket
import threading

import pytest

from benchmarks.serving_clients import CLIENTS, RawClient
from benchmarks.serving_parts import FloorProcess


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
