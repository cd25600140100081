"""The service on a port another program holds: exit 2 within seconds, before the model is even
resolved, with a message naming the address and port and suggesting --port; the other program keeps
serving. And the service binds loopback unless told otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from services.inference.__main__ import parse_args
from tests.conftest import ROOT
from tests.exporters.conftest import port_holder  # noqa: F401 - the fixture, shared with the exporters' tests


@pytest.mark.parametrize("model", ["tiny", "no such model"])
def test_a_taken_port_is_exit_2_before_anything_loads(port_holder, model):  # noqa: F811
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "services.inference", "--config", "torch-cpu", "--model", model,
                        "--port", str(port_holder.port)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - t
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert f"127.0.0.1:{port_holder.port}" in r.stderr and "--port" in r.stderr, r.stderr
    assert "another process is listening there" in r.stderr
    assert "unknown model" not in r.stderr  # the port was claimed before the model was even looked at
    assert "Traceback" not in r.stderr and "loading" not in r.stderr.lower()
    assert elapsed < 20, elapsed
    assert port_holder.proc.poll() is None and port_holder.serving(), "the port's holder was disturbed"


def test_the_default_host_is_loopback(monkeypatch):
    monkeypatch.delenv("WATTSERVE_HOST", raising=False)
    assert parse_args(["--config", "torch-cpu", "--model", "tiny"]).host == "127.0.0.1"
    monkeypatch.setenv("WATTSERVE_HOST", "0.0.0.0")  # containers opt in, as compose does
    assert parse_args(["--config", "torch-cpu", "--model", "tiny"]).host == "0.0.0.0"


def test_a_started_service_listens_on_loopback_only(start_server):
    if "WATTSERVE_HOST" in os.environ:
        pytest.skip("WATTSERVE_HOST is set in this environment: the default is not what runs")
    server = start_server("torch-cpu")  # started without --host
    listening = [c for c in psutil.Process(server.proc.pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]
    assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening), listening
    assert {c.laddr.port for c in listening} == {server.port}
    assert server.client.get("/ready").status_code == 200
