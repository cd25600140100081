"""RAPL exporter against a simulated powercap tree: known energy profile, wraparounds, permissions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.exporters.rapl import RaplExporter
from loadgen.local_exporters import powercap_state
from tests.exporters.conftest import HERE
from tests.exporters.fakes import StepProfile, build_powercap, zone_dir

DURATION = 3.0
ZONES = [
    # 50 J range from 49 J: the package counter wraps three times in 115 J
    {"id": "intel-rapl:0", "name": "package-0", "range_uj": 50_000_000, "start_uj": 49_000_000,
     "profile": [[0, 20], [1, 60], [2, 35]]},
    {"id": "intel-rapl:0:0", "name": "core", "range_uj": 30_000_000, "start_uj": 1_000,
     "profile": [[0, 12], [1, 40], [2, 20]]},
    {"id": "intel-rapl:0:1", "name": "dram", "range_uj": 262_143_328_850, "start_uj": 5,
     "profile": [[0, 5]]},
    {"id": "intel-rapl:1", "name": "psys", "range_uj": 262_143_328_850, "start_uj": 0,
     "profile": [[0, 80]]},
]
EXPECT = {"intel-rapl:0": ("cpu", "package-0"), "intel-rapl:0:0": ("cpu_core", "package-0"),
          "intel-rapl:0:1": ("dram", "package-0"), "intel-rapl:1": ("psys", "psys")}


def run_sim(tmp_path: Path, root: Path, zones: list[dict], duration: float, wait: bool = True):
    spec = tmp_path / "sim.json"
    t0_file = tmp_path / "sim.t0"
    spec.write_text(json.dumps({"root": str(root), "zones": zones, "duration": duration,
                                "t0_file": str(t0_file), "period": 0.001}))
    proc = subprocess.Popen([sys.executable, str(HERE / "fakes.py"), "powercap-sim", str(spec)])
    if wait:
        assert proc.wait(duration + 30) == 0
    return proc, t0_file


def energies(m) -> dict[tuple[str, str], float]:
    return {(s.labels["domain"], s.labels["device"]): s.value
            for s in m.all("wattserve_energy_joules_total", source="rapl")}


def test_counters_scraped_over_http_match_a_known_profile_through_wraps(tmp_path, start_exporter):
    root = build_powercap(tmp_path / "sys", ZONES)
    exp = start_exporter("rapl", "--powercap-root", str(root), "--poll-interval", "0.1")
    before = exp.scrape()
    assert before.get("wattserve_sensor_up", sensor="rapl", source="rapl") == 1
    e0 = energies(before)
    assert set(e0) == set(EXPECT.values())

    run_sim(tmp_path, root, ZONES, DURATION)
    time.sleep(0.3)  # a few polls after the last write
    after = exp.scrape()
    e1 = energies(after)
    for z in ZONES:
        key = EXPECT[z["id"]]
        truth = StepProfile(z["profile"], DURATION).energy(DURATION)
        got = e1[key] - e0[key]
        assert got == pytest.approx(truth, rel=0.005), f"{z['name']}: {got} J vs {truth} J"
    # the package counter really wrapped (raw value ended below where it started)
    raw_end = int((zone_dir(root, "intel-rapl:0") / "energy_uj").read_text())
    assert raw_end < ZONES[0]["start_uj"]
    for s in after.all("wattserve_energy_joules_total"):
        assert (s.labels["estimated"], s.labels["method"]) == ("false", "counter")
    assert after.has("wattserve_power_watts", domain="cpu", device="package-0", source="rapl")
    assert after.get("wattserve_exporter_scrape_errors_total", sensor="rapl") == 0


def test_unreadable_energy_says_how_to_grant_access_and_exports_no_energy(tmp_path, start_exporter):
    root = build_powercap(tmp_path / "sys", ZONES[:1])
    (zone_dir(root, "intel-rapl:0") / "energy_uj").chmod(0)
    prefix = None
    if os.geteuid() == 0:  # root reads anything: drop the capabilities that let it
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot make a file unreadable")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    exp = start_exporter("rapl", "--powercap-root", str(root), prefix=prefix)
    m = exp.scrape()
    assert m.get("wattserve_sensor_up", sensor="rapl", source="rapl") == 0
    (info,) = m.all("wattserve_sensor_info", sensor="rapl")
    msg = info.labels["message"]
    assert "permission denied" in msg and "root" in msg and "chmod" in msg
    assert not m.has("wattserve_energy_joules_total") and not m.has("wattserve_power_watts")
    assert "permission denied" in exp.output()


def test_missing_powercap_is_unavailable_not_zero(tmp_path):
    exp = RaplExporter(tmp_path / "nope", poll_interval_s=10)
    try:
        fams = {f.name: f for f in exp.collect()}
    finally:
        exp.close()
    assert fams["wattserve_sensor_up"].samples[0].value == 0
    assert "does not exist" in fams["wattserve_sensor_info"].samples[0].labels["message"]
    assert "wattserve_energy_joules" not in fams


def test_powercap_state(tmp_path):
    assert powercap_state(tmp_path / "absent") == "absent"
    assert powercap_state(build_powercap(tmp_path / "sys", ZONES[:1])) == "readable"
