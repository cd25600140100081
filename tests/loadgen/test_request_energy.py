"""Per-request energy through the production path: a real RAPL exporter over a simulated powercap tree
whose counter wraps inside one request, scraped by the real Sampler (with marks at the window's edges
and its parsing deferred inside the window, as the protocol does)
into series.csv, then analysis/quantities.py — against the analytic truth."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from analysis import quantities as Q
from loadgen.runfolder import read_series
from loadgen.sampler import Sampler
from tests.exporters.conftest import HERE
from tests.exporters.fakes import StepProfile, build_powercap

SIM_S = 7.0
PACKAGE = [[0, 10], [3, 80], [6, 10]]
# 30 J at the start, a 50 J range: the counter wraps when 20 J have been used, at t = 2.0 s
ZONES = [{"id": "intel-rapl:0", "name": "package-0", "range_uj": 50_000_000, "start_uj": 30_000_000,
          "profile": PACKAGE}]
REQUESTS = [(0.6, 2.7), (3.3, 4.4), (4.4, 5.8)]  # request 0 holds the wrap; edges where power is steady


def test_a_rapl_wrap_inside_one_request_keeps_every_requests_energy_within_half_a_percent(tmp_path, start_exporter):
    root = build_powercap(tmp_path / "sys", ZONES)
    rapl = start_exporter("rapl", "--powercap-root", str(root), "--poll-interval", "0.05")
    sampler = Sampler({"rapl": rapl.url}, interval_s=0.1)
    spec = tmp_path / "sim.json"
    spec.write_text(json.dumps({"root": str(root), "zones": ZONES, "duration": SIM_S,
                                "t0_file": str(tmp_path / "t0"), "period": 0.001}))
    sampler.start(tmp_path)
    sim = subprocess.Popen([sys.executable, str(HERE / "fakes.py"), "powercap-sim", str(spec)])
    while not (tmp_path / "t0").exists():
        time.sleep(0.01)
    t0 = float((tmp_path / "t0").read_text())
    # the protocol marks the window's edges, and defers the sampler's parsing and writing inside it
    time.sleep(max(0.0, t0 + REQUESTS[0][0] - time.time()))
    assert sampler.mark()
    sampler.defer(True)
    time.sleep(0.3)  # let a write that began before the deferral land
    size = (tmp_path / "series.csv").stat().st_size
    time.sleep(max(0.0, t0 + REQUESTS[-1][1] - time.time()))
    assert (tmp_path / "series.csv").stat().st_size == size  # nothing parsed or written in the window
    sampler.defer(False)
    assert sampler.mark()
    assert sim.wait(SIM_S + 30) == 0
    time.sleep(0.3)
    sampler.stop()

    series = read_series(tmp_path)
    scrapes = series[(series["sensor"] == "rapl") & (series["metric"] == "up")]["t"].to_numpy()
    inside = scrapes[(scrapes > t0 + REQUESTS[0][0] + 0.5) & (scrapes < t0 + REQUESTS[-1][1] - 0.5)]
    assert len(inside) >= 0.8 * (REQUESTS[-1][1] - REQUESTS[0][0] - 1) / 0.1  # deferred, not lost
    assert (scrapes[1:] >= scrapes[:-1]).all()  # and written in order
    rows = [{"index": i, "status": "ok", "start": t0 + a, "end": t0 + b} for i, (a, b) in enumerate(REQUESTS)]
    span = Q.request_span(rows)
    phases = {"inference": {"start": span[0], "end": span[1]}}
    energy = Q.run_energy(series, phases, host_gpus=[])
    prof = StepProfile(PACKAGE, SIM_S)
    assert energy["energy_cpu_source"] == "rapl" and energy["energy_global_provenance"] == "measured"
    assert energy["energy_global_j"] == pytest.approx(prof.energy(REQUESTS[-1][1]) - prof.energy(REQUESTS[0][0]),
                                                      rel=0.005)
    per = Q.request_energy(series, rows, energy)
    for (a, b), p in zip(REQUESTS, per):
        assert p["energy_j"] == pytest.approx(prof.energy(b) - prof.energy(a), rel=0.005), (a, b)
        assert p["energy_provenance"] == "measured"
    assert per[0]["energy_j"] > 0  # the wrap did not turn into a huge negative or positive jump
