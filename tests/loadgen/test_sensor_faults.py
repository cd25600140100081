"""Sensor faults inside a real bench run: a RAPL counter that wraps mid-run, a NETIO meter that is
slow (and needs credentials that must never reach the results)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.exporters.fakes import NetioProfile, NetioServer, build_powercap
from tests.loadgen.conftest import manifest, run_bench, run_dirs

pytestmark = pytest.mark.slow
QUICK = ["--config", "torch-cpu", "--model", "tiny", "--max-new-tokens", "16", "--warmup", "0.5", "--cooldown", "0.5",
         "--threads", "1"]


def test_rapl_counter_wrapping_mid_run_gives_the_right_energy(tmp_path, tiny):
    """A real bench run on a simulated powercap tree whose package counter wraps every 2.5 s."""
    watts, range_uj = 20.0, 50_000_000
    zones = [{"id": "intel-rapl:0", "name": "package-0", "range_uj": range_uj, "start_uj": 45_000_000,
              "profile": [[0, watts]]}]
    root = build_powercap(tmp_path / "sys", zones)
    sim_spec = tmp_path / "sim.json"
    sim_spec.write_text(json.dumps({"root": str(root), "zones": zones, "duration": 240,
                                    "t0_file": str(tmp_path / "t0"), "period": 0.005}))
    sim = subprocess.Popen([sys.executable, str(ROOT / "tests" / "exporters" / "fakes.py"), "powercap-sim",
                            str(sim_spec)])
    try:
        r = run_bench(*QUICK, "--results", str(tmp_path / "results"), timeout=300, WATTSERVE_POWERCAP_ROOT=str(root))
    finally:
        sim.kill()
    assert r.returncode == 0, r.stdout + r.stderr
    (run_dir,) = run_dirs(tmp_path / "results")
    m = manifest(run_dir)
    inf = m["phases"]["inference"]
    duration = inf["end"] - inf["start"]
    assert duration * watts > 2 * range_uj / 1e6  # the counter wrapped at least twice inside the window
    e = m["summary"]["energy"]
    assert (e["energy_cpu_source"], e["energy_cpu_estimated"], e["energy_cpu_complete"]) == ("rapl", False, True), e
    joules = e["energy_cpu_j"]
    print(f"\n[rapl wrap] {duration:.2f} s window, {watts * duration / (range_uj / 1e6):.1f} counter ranges: "
          f"{joules:.2f} J measured vs {watts * duration:.2f} J true ({100 * (joules / (watts * duration) - 1):+.3f} %)")
    assert joules == pytest.approx(watts * duration, rel=0.005)  # the window's edges have scrapes of their own
    assert "measured; cpu: rapl" in r.stdout


def test_a_slow_netio_meter_is_bounded_marked_unavailable_and_its_credentials_stay_out_of_the_results(tmp_path, tiny):
    password = "s3cret-Pw-9f2"
    server = NetioServer(NetioProfile(t0=time.time()), delay_s=4.0, auth=("wattserve", password))
    try:
        r = run_bench(*QUICK, "--results", str(tmp_path / "results"), timeout=300, NETIO_URL=server.url,
                      NETIO_USER="wattserve", NETIO_PASSWORD=password)
    finally:
        server.close()
    assert r.returncode == 0, r.stdout + r.stderr  # the run itself stands
    (run_dir,) = run_dirs(tmp_path / "results")
    m = manifest(run_dir)
    assert m["status"] == "complete"
    netio = {s["name"]: s for s in m["sensors"]}["netio"]
    assert netio["available"] is False and netio["error"], netio
    assert server.requests >= 1  # it was asked, and the wait for it was bounded (the run completed)
    assert any(f.startswith("sensor netio unavailable") for f in m["flags"])
    assert m["summary"]["energy"].get("energy_wall_j") is None  # missing, never 0 J
    leaked = [p.name for p in run_dir.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
    assert not leaked and password not in r.stdout + r.stderr, leaked
