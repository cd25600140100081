"""analysis.energy on series with a known answer: interpolation, edges, resets, gaps, source choice,
DCGM series, missing sensors (None, never 0), idle power, global energy, gauges."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest

from analysis.energy import (EnergyReading, counter_delta, integrate_power, window_delta, window_energy,
                             window_mean)
from loadgen.runfolder import read_series

MIB = 1024 * 1024


def frame(rows) -> pd.DataFrame:
    """rows: (t, sensor, metric, labels, value) as load_series returns them."""
    return pd.DataFrame(rows, columns=["t", "sensor", "metric", "labels", "value"])


def counter_rows(sensor, watts, times, **labels):
    """A joules counter of constant power; labels default to a measured RAPL counter."""
    lab = {"domain": "cpu", "device": "package-0", "source": "rapl", "estimated": "false", "method": "counter",
           **labels}
    return [(t, sensor, "wattserve_energy_joules_total", lab, watts * t) for t in times]


def up_rows(sensor, source, times, value=1.0, message=""):
    return ([(t, sensor, "wattserve_sensor_up", {"sensor": sensor, "source": source}, value) for t in times]
            + [(t, sensor, "wattserve_sensor_info", {"sensor": sensor, "source": source, "message": message}, 1.0)
               for t in times]
            + [(t, sensor, "up", {}, 1.0) for t in times])


T = list(np.arange(0.0, 20.01, 0.5))


# ------------------------------------------------------------------ one series

def test_counter_delta_interpolates_linearly_at_the_edges():
    assert counter_delta([0, 1, 2, 3], [0, 10, 20, 30], 0.5, 2.5) == pytest.approx(20)
    assert counter_delta([0, 1, 2, 3], [0, 10, 20, 30], 1, 2) == pytest.approx(10)
    assert counter_delta([3, 0, 2, 1], [30, 0, 20, 10], 0.25, 0.75) == pytest.approx(5)  # order does not matter


@pytest.mark.parametrize("start,end", [(-1, 2), (1, 3.5), (-1, 4), (2, 1)])
def test_counter_delta_needs_samples_on_both_sides(start, end):
    assert counter_delta([0, 1, 2, 3], [0, 10, 20, 30], start, end) is None


def test_counter_reset_is_a_restart_from_zero():
    # exporter restarted between t=2 and t=3: it counted 5 J since its start
    assert counter_delta([0, 1, 2, 3, 4], [100, 110, 120, 5, 15], 0, 4) == pytest.approx(35)


def test_a_long_gap_overlapping_the_window_gives_none():
    t, v = [0, 1, 10, 11], [0, 10, 100, 110]
    assert counter_delta(t, v, 2, 3, max_gap_s=5) is None
    assert counter_delta(t, v, 2, 3) == pytest.approx(10)
    assert counter_delta(t, v, 10.2, 10.8, max_gap_s=5) == pytest.approx(6)


def test_integrate_power_trapezoid_clipped():
    assert integrate_power([0, 1, 2, 3], [10, 10, 10, 10], 0.5, 2.5) == pytest.approx(20)
    # ramp 0..30 W over 3 s, window 1..2: mean 15 W
    assert integrate_power([0, 1, 2, 3], [0, 10, 20, 30], 1, 2) == pytest.approx(15)
    assert integrate_power([0, 1, 2, 3], [0, 10, 20, 30], 0.5, 1.5) == pytest.approx(10)
    assert integrate_power([0, 1], [5, 5], 0, 2) is None


# ------------------------------------------------------------------ windows

def test_counters_preferred_devices_summed_zones_never_summed():
    rows = (counter_rows("rapl", 30, T) + counter_rows("rapl", 20, T, device="package-1")
            + counter_rows("rapl", 25, T, domain="cpu_core")
            + [(t, "rapl", "wattserve_power_watts",
                {"domain": "cpu", "device": "package-0", "source": "rapl", "estimated": "false"}, 999) for t in T]
            + counter_rows("estimate", 40, T, source="estimate", estimated="true", method="power-integral", device="cpu")
            + up_rows("rapl", "rapl", T) + up_rows("estimate", "estimate", T))
    r = window_energy(frame(rows), 2.25, 12.25)
    cpu = r["cpu"]
    assert cpu == EnergyReading(500.0, "rapl", False, "counter", True, {"package-0": 300.0, "package-1": 200.0})
    assert r["cpu_core"].joules == pytest.approx(250)  # its own domain, not added to cpu


def test_estimate_is_used_only_where_nothing_measures_and_says_so():
    rows = (counter_rows("estimate", 40, T, source="estimate", estimated="true", method="power-integral",
                         device="cpu") + up_rows("estimate", "estimate", T))
    cpu = window_energy(frame(rows), 1, 11)["cpu"]
    assert (cpu.joules, cpu.source, cpu.estimated, cpu.method) == (pytest.approx(400), "estimate", True,
                                                                    "power-integral")


def test_dcgm_series_energy_counter_in_mj_and_power_only():
    lab = lambda g: {"gpu": g, "UUID": f"GPU-{g}", "device": f"nvidia{g}", "modelName": "H100"}  # noqa: E731
    rows = ([(t, "dcgm", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", lab("0"), 5e9 + 300_000 * t) for t in T]
            + [(t, "dcgm", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", lab("1"), 7e9 + 100_000 * t) for t in T]
            + [(t, "dcgm", "DCGM_FI_DEV_POWER_USAGE", lab("0"), 300.0) for t in T])
    gpu = window_energy(frame(rows), 4, 14)["gpu"]
    assert (gpu.joules, gpu.source, gpu.method, gpu.complete) == (pytest.approx(4000), "dcgm", "counter", True)
    assert gpu.devices == {"gpu0": pytest.approx(3000), "gpu1": pytest.approx(1000)}
    power_only = [r for r in rows if r[2] == "DCGM_FI_DEV_POWER_USAGE"]
    gpu = window_energy(frame(power_only), 4, 14)["gpu"]
    assert (gpu.joules, gpu.method) == (pytest.approx(3000), "power-integral")


def test_a_sensor_that_ran_without_energy_is_missing_not_zero():
    rows = (counter_rows("rapl", 30, T) + up_rows("rapl", "rapl", T)
            + up_rows("nvml", "nvml", T, value=0.0, message="NVML unavailable: no NVIDIA GPU/driver"))
    r = window_energy(frame(rows), 1, 11)
    assert r["gpu"].joules is None and r["gpu"].source == "nvml" and not r["gpu"].complete
    assert "no NVIDIA GPU" in r["gpu"].note


def test_sensor_down_inside_the_window_marks_incomplete_and_a_long_outage_gives_none():
    down = {6.0, 6.5}
    rows = ([r for r in counter_rows("netio", 100, T, domain="wall", device="outlet1", source="netio",
                                     method="power-integral") if r[0] not in down]
            + [(t, "netio", "wattserve_sensor_up", {"sensor": "netio", "source": "netio"}, 0.0 if t in down else 1.0)
               for t in T]
            + [(t, "netio", "wattserve_sensor_info", {"sensor": "netio", "source": "netio",
                                                      "message": "GET failed: timed out" if t in down else ""}, 1.0)
               for t in T])
    wall = window_energy(frame(rows), 4, 9)["wall"]
    assert wall.joules == pytest.approx(500) and not wall.complete and "timed out" in wall.note
    outage = [r for r in rows if not (r[2] == "wattserve_energy_joules_total" and 3 < r[0] < 15)]
    wall = window_energy(frame(outage), 4, 9)["wall"]
    assert wall.joules is None and not wall.complete and "gap" in wall.note


def test_values_are_placed_at_the_sensor_sample_time():
    # a counter polled once a second at t = 0.3, 1.3, ... scraped every 0.5 s: staircase at scrape times
    rows = []
    for t in T:
        polled = np.floor(t - 0.3) + 0.3
        rows.append((t, "netio", "wattserve_energy_joules_total",
                     {"domain": "wall", "device": "outlet1", "source": "netio", "estimated": "false",
                      "method": "power-integral"}, 100 * polled))
        rows.append((t, "netio", "wattserve_sensor_last_sample_timestamp_seconds",
                     {"sensor": "netio", "source": "netio"}, polled))
    assert window_energy(frame(rows), 2.0, 7.0)["wall"].joules == pytest.approx(500)


def test_window_mean_time_weighted_filters_and_dcgm_fallback():
    rows = ([(t, "host", "wattserve_cpu_utilization_ratio", {}, 0.2 if t < 5 else 0.6) for t in T]
            + [(t, "nvml", "wattserve_gpu_memory_used_bytes", {"device": d}, v)
               for t in T for d, v in (("gpu0", 100.0), ("gpu1", 300.0))])
    df = frame(rows)
    assert window_mean(df, "wattserve_cpu_utilization_ratio", 6, 10) == pytest.approx(0.6)
    assert window_mean(df, "wattserve_cpu_utilization_ratio", 0, 10) == pytest.approx(0.41, abs=0.011)
    assert window_mean(df, "wattserve_gpu_memory_used_bytes", 1, 9) == pytest.approx(200)
    assert window_mean(df, "wattserve_gpu_memory_used_bytes", 1, 9, how="sum") == pytest.approx(400)
    assert window_mean(df, "wattserve_gpu_memory_used_bytes", 1, 9, {"device": "gpu1"}) == pytest.approx(300)
    assert window_mean(df, "wattserve_gpu_utilization_ratio", 1, 9) is None
    assert window_mean(df, "wattserve_cpu_utilization_ratio", 30, 40) is None
    dcgm = frame([(t, "dcgm", m, {"gpu": "0"}, v) for t in T for m, v in
                  (("DCGM_FI_DEV_GPU_UTIL", 37.0), ("DCGM_FI_DEV_MEM_COPY_UTIL", 5.0),
                   ("DCGM_FI_DEV_FB_USED", 1000.0), ("DCGM_FI_DEV_FB_FREE", 3000.0))])
    assert window_mean(dcgm, "wattserve_gpu_utilization_ratio", 1, 9) == pytest.approx(0.37)
    assert window_mean(dcgm, "wattserve_gpu_memory_utilization_ratio", 1, 9) == pytest.approx(0.05)
    assert window_mean(dcgm, "wattserve_gpu_memory_used_bytes", 1, 9) == pytest.approx(1000 * MIB)
    assert window_mean(dcgm, "wattserve_gpu_memory_total_bytes", 1, 9) == pytest.approx(4000 * MIB)


def test_window_delta_of_process_cpu_seconds():
    rows = [(t, "host", "wattserve_process_cpu_seconds_total", {"target": "service"}, 0.8 * t) for t in T]
    assert window_delta(frame(rows), "wattserve_process_cpu_seconds_total", 2, 7, {"target": "service"}) == \
        pytest.approx(4.0)
    assert window_delta(frame(rows), "wattserve_process_cpu_seconds_total", 2, 70) is None


def test_load_series_reads_the_sampler_format_and_survives_a_torn_last_line(tmp_path):
    with open(tmp_path / "series.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t", "sensor", "metric", "labels", "value"])
        for t in (1.0, 1.5):
            w.writerow([t, "rapl", "wattserve_energy_joules_total",
                        json.dumps({"device": "package-0", "domain": "cpu", "estimated": "false",
                                    "method": "counter", "source": "rapl"}, sort_keys=True), 10 * t])
            w.writerow([t, "rapl", "up", "{}", 1.0])
        f.write('2.0,rapl,wattserve_energy_joules_total,"{""dev')  # crash mid-write
    df = read_series(tmp_path)
    assert list(df.columns) == ["t", "sensor", "metric", "labels", "value"]
    assert len(df) == 4 and df["t"].is_monotonic_increasing
    assert df.loc[0, "labels"]["domain"] == "cpu" and df.loc[1, "labels"] == {}
    assert window_energy(df, 1.0, 1.5)["cpu"].joules == pytest.approx(5)
