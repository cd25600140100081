"""NETIO exporter against an HTTP server speaking netio.json: a known load profile, wrong credentials,
an unreachable device and a slow one (bounded waits, availability 0)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from urllib.parse import quote

import pytest

from tests.exporters.conftest import ROOT, wait_for
from tests.exporters.fakes import NetioProfile, NetioServer

SECRET = "s3cr3t-pw"


@pytest.fixture
def netio():
    servers = []

    def start(**kw) -> NetioServer:
        s = NetioServer(NetioProfile(t0=time.time()), **kw)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


def state(exp) -> tuple[float, str]:
    m = exp.scrape()
    return (m.get("wattserve_sensor_up", sensor="netio", source="netio"),
            m.all("wattserve_sensor_info", sensor="netio")[0].labels["message"])


def test_load_integrated_per_outlet_matches_the_profile(netio, start_exporter):
    server = netio(auth=("admin", SECRET))
    exp = start_exporter("netio", "--netio-url", server.url, "--outputs", "1,2", "--interval", "0.5",
                         "--timeout", "0.4", env={"NETIO_USER": "admin", "NETIO_PASSWORD": SECRET})
    assert wait_for(lambda: state(exp)[0] == 1, 5), exp.output()
    m1 = exp.scrape()
    time.sleep(3.2)
    m2 = exp.scrape()
    t1, t2 = (m.get("wattserve_sensor_last_sample_timestamp_seconds", sensor="netio") for m in (m1, m2))
    assert t2 - t1 > 2.4
    for outlet in (1, 2):
        labels = dict(domain="wall", device=f"outlet{outlet}", source="netio", estimated="false",
                      method="power-integral")
        got = m2.get("wattserve_energy_joules_total", **labels) - m1.get("wattserve_energy_joules_total", **labels)
        assert got == pytest.approx(server.profile.energy(t1, t2, outlet), rel=0.005)
    assert not m2.has("wattserve_energy_joules_total", device="outlet3")  # not asked for
    load1 = server.profile.loads(t2)[1]
    assert m2.get("wattserve_power_watts", device="outlet1", source="netio") == pytest.approx(load1, abs=0.5)
    assert m2.get("wattserve_netio_energy_watt_hours_total", device="outlet1") == 233204
    assert m2.get("wattserve_netio_energy_watt_hours_total", device="total") == 466412
    assert m2.get("wattserve_netio_voltage_volts") == pytest.approx(230.1)
    assert m2.get("wattserve_netio_frequency_hertz") == 50
    assert m2.get("wattserve_netio_current_amperes", device="outlet2") == pytest.approx(round(50 / 230 * 1000) / 1000)
    assert m2.get("wattserve_netio_power_factor", device="outlet1") == pytest.approx(0.95)
    assert SECRET not in exp.output() and SECRET not in m2.text


def test_wrong_credentials_are_reported_without_the_password(netio, start_exporter):
    server = netio(auth=("admin", "right"))
    exp = start_exporter("netio", "--netio-url", server.url.replace("http://", f"http://admin:{SECRET}@"),
                         "--interval", "0.5", "--timeout", "0.4")
    assert wait_for(lambda: "401" in state(exp)[1], 5), exp.output()
    up, msg = state(exp)
    assert up == 0 and "credentials" in msg
    assert SECRET not in msg and SECRET not in exp.output()
    assert not exp.scrape().has("wattserve_energy_joules_total")


def test_unreachable_device_is_down_and_scrapes_stay_fast(start_exporter):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    exp = start_exporter("netio", "--netio-url", f"http://127.0.0.1:{port}/netio.json", "--timeout", "0.5")
    assert wait_for(lambda: "failed" in state(exp)[1], 5), exp.output()
    t = time.monotonic()
    up, msg = state(exp)
    assert time.monotonic() - t < 1.0
    assert up == 0 and "ConnectError" in msg
    assert not exp.scrape().has("wattserve_energy_joules_total")


def test_slow_device_times_out_within_the_bound(netio, start_exporter):
    server = netio(delay_s=3.0)
    exp = start_exporter("netio", "--netio-url", server.url, "--interval", "0.5", "--timeout", "0.5")
    t0 = time.monotonic()
    assert wait_for(lambda: "failed" in state(exp)[1], 5), exp.output()
    assert time.monotonic() - t0 < 3.0  # decided by the timeout, not by the device's 3 s
    t = time.monotonic()
    up, msg = state(exp)
    assert time.monotonic() - t < 1.0
    assert up == 0 and "Timeout" in msg
    assert not exp.scrape().has("wattserve_energy_joules_total")


def test_poll_interval_below_half_a_second_is_refused():
    r = subprocess.run([sys.executable, "-m", "services.exporters.netio", "--netio-url", "http://192.0.2.1/netio.json",
                        "--interval", "0.2"], cwd=ROOT, capture_output=True, text=True, timeout=30,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and "below 0.5" in r.stderr


def forms(user: str, password: str) -> list[str]:
    """Every spelling of a secret that would betray it: as typed, URL-encoded, in a Basic auth header."""
    from base64 import b64encode
    from urllib.parse import quote

    return [password, quote(password, safe=""), b64encode(f"{user}:{password}".encode()).decode()]


def test_credentials_in_the_url_are_used_but_never_logged_or_exported(netio, start_exporter):
    """http://user:pass@host/netio.json, a password that needs URL-encoding, debug logging: the device
    is read (the credentials went into the auth header), and neither the log nor /metrics carries them."""
    password = "p@ss:w/rd " + SECRET
    server = netio(auth=("meter-admin", password))
    url = server.url.replace("http://", f"http://meter-admin:{quote(password, safe='')}@")
    exp = start_exporter("netio", "--netio-url", url, "--interval", "0.5", "--timeout", "0.4", "--log-level", "debug")
    assert wait_for(lambda: state(exp)[0] == 1, 5), exp.output()
    assert server.requests >= 1
    text = exp.scrape().text + exp.output()
    assert "wattserve_energy_joules_total" in text
    leaked = [f for f in forms("meter-admin", password) if f in text]
    assert not leaked and "meter-admin:" not in text, leaked
