"""Every exporter CLI on a port another program holds: exit 2 at once with a message naming the address
and port and suggesting --port, before any sensor starts; the other program keeps serving. And every
exporter binds loopback unless told otherwise."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from tests.exporters.conftest import ROOT
from tests.exporters.fakes import NetioProfile, NetioServer

EXPORTERS = ["rapl", "energibridge", "nvml", "netio", "host", "estimate"]


def run_exporter_cli(name: str, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", f"services.exporters.{name}", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return r, time.monotonic() - t


@pytest.mark.parametrize("name", EXPORTERS)
def test_a_taken_port_is_exit_2_and_the_holder_keeps_serving(port_holder, tmp_path, name):
    marker = tmp_path / "sensor-started"
    starts_sensor = tmp_path / "sensor"  # stands in for EnergiBridge / nvidia-smi: says if it was ever run
    starts_sensor.write_text(f"#!/bin/sh\ntouch {marker}\nsleep 30\n")
    starts_sensor.chmod(0o755)
    netio = NetioServer(NetioProfile(t0=time.time())) if name == "netio" else None
    extra = {"energibridge": ["--energibridge-bin", str(starts_sensor)],
             "nvml": ["--source", "nvidia-smi", "--nvidia-smi-bin", str(starts_sensor)],
             "netio": ["--netio-url", netio.url if netio else "", "--interval", "0.5"]}.get(name, [])
    try:
        r, elapsed = run_exporter_cli(name, "--port", str(port_holder.port), *extra)  # no --addr: the default
        time.sleep(0.6)  # a sensor or poll started anyway would show by now
        assert r.returncode == 2, (r.returncode, r.stderr)
        assert elapsed < 15
        assert f"127.0.0.1:{port_holder.port}" in r.stderr and "--port" in r.stderr, r.stderr
        assert "another process is listening there" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        assert not marker.exists(), "the sensor was started although the exporter could not serve"
        if netio:
            assert netio.requests == 0, "the NETIO was polled although the exporter could not serve"
    finally:
        if netio:
            netio.close()
    assert port_holder.proc.poll() is None and port_holder.serving(), "the port's holder was disturbed"


class Parsed(Exception):
    pass


@pytest.mark.parametrize("name", EXPORTERS)
def test_the_default_address_is_loopback(monkeypatch, name):
    """Each exporter's own main(), stopped where it would bind: what it would bind is 127.0.0.1."""
    module = importlib.import_module(f"services.exporters.{name}")
    seen = []

    def claim_port(args):
        seen.append(args)
        raise Parsed

    monkeypatch.setattr(module, "claim_port", claim_port)
    with pytest.raises(Parsed):
        module.main(["--netio-url", "http://192.0.2.1/netio.json"] if name == "netio" else [])
    assert seen[0].addr == "127.0.0.1" and seen[0].port > 1024, vars(seen[0])


def test_an_exporter_started_without_addr_listens_on_loopback_only(start_exporter):
    exp = start_exporter("host")  # --port 0 --ready-file only
    listening = [c for c in psutil.Process(exp.proc.pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening), listening
    assert httpx.get(exp.url, timeout=5).status_code == 200
    port = listening[0].laddr.port
    assert exp.url == f"http://127.0.0.1:{port}/metrics"
