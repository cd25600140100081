"""EnergiBridge exporter with a fake EnergiBridge that speaks its command line and CSV, wrap included."""

from __future__ import annotations

import time

import pytest

from services.exporters.common import WraparoundTracker
from tests.exporters.conftest import HERE, script, wait_for

WATTS = 40.0


def up(exp) -> bool:
    return exp.scrape().get("wattserve_sensor_up", sensor="energibridge", source="energibridge") == 1


def test_csv_stream_becomes_counters_and_the_wrap_is_corrected(tmp_path, start_exporter):
    eb = script(tmp_path, "energibridge", HERE / "fake_energibridge.py")
    # the MSR counter is 60 J below its 2^16 J wrap: it wraps ~1.5 s after EnergiBridge starts
    exp = start_exporter("energibridge", "--energibridge-bin", str(eb), "--interval-ms", "100",
                         env={"FAKE_EB_WATTS": str(WATTS), "FAKE_EB_START_J": str(65536 - 60),
                              "FAKE_EB_WRAP_J": "65536"})
    assert wait_for(lambda: up(exp), 5), exp.output()
    m1 = exp.scrape()
    time.sleep(2.5)
    m2 = exp.scrape()
    labels = dict(domain="cpu", device="package-0", source="energibridge", estimated="false", method="counter")
    e1, e2 = (m.get("wattserve_energy_joules_total", **labels) for m in (m1, m2))
    t1, t2 = (m.get("wattserve_sensor_last_sample_timestamp_seconds", sensor="energibridge") for m in (m1, m2))
    assert t2 - t1 > 2.0
    assert e2 - e1 == pytest.approx(WATTS * (t2 - t1), rel=0.005)
    assert m2.get("wattserve_power_watts", domain="cpu", device="package-0", source="energibridge",
                  estimated="false") == pytest.approx(WATTS, rel=0.05)
    assert m2.get("wattserve_cpu_utilization_ratio") == pytest.approx(0.5)
    assert m2.get("wattserve_memory_total_bytes") == 34359738368
    assert m2.get("wattserve_memory_used_bytes") == 10188488704
    assert m2.get("wattserve_swap_used_bytes") == 0


def test_missing_binary_says_how_to_install_it(tmp_path, start_exporter):
    exp = start_exporter("energibridge", "--energibridge-bin", str(tmp_path / "no-energibridge"))
    m = exp.scrape()
    assert m.get("wattserve_sensor_up", sensor="energibridge", source="energibridge") == 0
    msg = m.all("wattserve_sensor_info", sensor="energibridge")[0].labels["message"]
    assert "not found" in msg and "github.com/tdurieux/EnergiBridge" in msg and "cargo build" in msg
    assert not m.has("wattserve_energy_joules_total")
    assert "github.com/tdurieux/EnergiBridge" in exp.output()


def test_energibridge_that_exits_is_reported_down(tmp_path, start_exporter):
    eb = script(tmp_path, "energibridge", HERE / "fake_energibridge.py")
    exp = start_exporter("energibridge", "--energibridge-bin", str(eb), "--interval-ms", "50",
                         "--command", "true")
    assert wait_for(lambda: "exited" in exp.scrape().all("wattserve_sensor_info")[0].labels["message"], 5)
    m = exp.scrape()
    assert m.get("wattserve_sensor_up", sensor="energibridge", source="energibridge") == 0
    assert not m.has("wattserve_energy_joules_total")


def test_wraparound_tracker_known_and_inferred_range():
    known = WraparoundTracker(100.0)
    assert [known.update(v) for v in (90, 99, 5, 50, 3)] == [90, 99, 105, 150, 203]
    inferred = WraparoundTracker(None)  # RAPL MSR in joules: wraps at a power of two
    assert [inferred.update(v) for v in (65000.5, 65530, 10, 20)] == [65000.5, 65530, 65546, 65556]
    assert inferred.wraps == 1
