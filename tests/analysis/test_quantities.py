"""The one definition of each number (analysis/quantities.py) against synthetic series with known truth:
power ramps at the edges, edges off the sample grid, a power-only source, requests of their own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import quantities as Q
from analysis.energy import window_energy

RAPL = {"domain": "cpu", "device": "package-0", "source": "rapl", "estimated": "false", "method": "counter"}
EST = {"domain": "cpu", "device": "cpu", "source": "estimate", "estimated": "true", "method": "power-integral"}


def power(t):
    """Watts: 20 W idle, a 0.3 s ramp up to 60 W at t=10.07 (inference starts), 60..80 W wobbling during
    inference, a 0.4 s ramp down at t=30.43, then 20 W. Edges deliberately off any sample grid."""
    t = np.asarray(t, dtype=float)
    up = np.clip((t - 10.07) / 0.3, 0, 1)
    down = np.clip((t - 30.43) / 0.4, 0, 1)
    busy = 60 + 20 * np.sin(t * 1.7) ** 2
    return 20 + (busy - 20) * up * (1 - down)


def energy_at(t, fine=1e-4):
    """Exact joules since t=0 (numerically integrated on a grid far finer than any sensor's)."""
    grid = np.arange(0.0, 45.0 + fine, fine)
    cum = np.concatenate([[0.0], np.cumsum((power(grid[1:]) + power(grid[:-1])) / 2 * fine)])
    return np.interp(t, grid, cum)


def truth(a, b):
    return float(energy_at(b) - energy_at(a))


def series_of(times, labels, *, counter=True, sensor="rapl"):
    times = np.asarray(sorted(times))
    metric = "wattserve_energy_joules_total" if counter else "wattserve_power_watts"
    values = energy_at(times) if counter else power(times)
    return pd.DataFrame({"t": times, "sensor": sensor, "metric": metric, "labels": [dict(labels)] * len(times),
                         "value": values})


PHASES = {"idle_before": {"start": 0.2, "end": 10.0}, "inference": {"start": 10.0, "end": 30.5},
          "idle_after": {"start": 31.5, "end": 44.0}}
GRID = np.arange(0.013, 45.0, 0.5)  # the sampler's periodic scrapes, not aligned with any edge
EDGES = [v for ph in PHASES.values() for v in (ph["start"], ph["end"])]


def test_window_energy_with_edge_scrapes_is_exact_and_interpolation_is_the_bounded_fallback():
    t0, t1 = PHASES["inference"]["start"], PHASES["inference"]["end"]
    marked = window_energy(series_of([*GRID, *EDGES], RAPL), t0, t1)["cpu"].joules
    assert marked == pytest.approx(truth(t0, t1), rel=1e-6)
    # without the scrape at each edge: interpolation across the 0.5 s interval holding the ramp
    grid_only = window_energy(series_of(GRID, RAPL), t0, t1)["cpu"].joules
    err = abs(grid_only - truth(t0, t1))
    assert 0 < err <= 2 * 0.5 * (80 - 20)  # within the documented bound (interval x power swing per edge)


def test_a_power_only_source_is_integrated_within_half_a_percent():
    t0, t1 = 10.37, 30.43  # right after the ramp up, right at the ramp down: off the grid
    grid = np.arange(0.013, 45.0, 0.1)  # an exporter that reports power every 0.1 s
    got = window_energy(series_of([*grid, t0, t1], EST, counter=False), t0, t1)["cpu"]
    assert got.method == "power-integral" and got.estimated
    assert got.joules == pytest.approx(truth(t0, t1), rel=0.005)


def requests(starts_ends):
    return [{"index": i, "status": "ok", "start": a, "end": b} for i, (a, b) in enumerate(starts_ends)]


def test_per_request_energy_sums_each_requests_own_window_within_half_a_percent():
    # 8 sequential requests of 1.5-3.5 s across a window whose power wobbles; a 0.1 s sensor
    bounds = np.cumsum([10.37, 2.1, 1.5, 3.5, 2.4, 1.9, 2.7, 3.1, 2.2])
    rows = requests(list(zip(bounds[:-1], bounds[1:])))
    grid = np.arange(0.013, 45.0, 0.1)
    series = series_of([*grid, bounds[0], bounds[-1]], RAPL)
    phases = {**PHASES, "inference": {"start": bounds[0], "end": bounds[-1]}}
    energy = Q.run_energy(series, phases, host_gpus=[])
    assert energy["energy_global_j"] == pytest.approx(truth(bounds[0], bounds[-1]), rel=1e-6)
    per = Q.request_energy(series, rows, energy)
    for r, p in zip(rows, per):
        assert p["energy_j"] == pytest.approx(truth(r["start"], r["end"]), rel=0.005)
        assert p["energy_provenance"] == "measured" and p["energy_resolved"] is True
    # a coarse sensor does not resolve such requests, and says so
    coarse = series_of([*GRID, bounds[0], bounds[-1]], RAPL)
    assert not any(p["energy_resolved"] for p in Q.request_energy(coarse, rows, Q.run_energy(coarse, phases,
                                                                                              host_gpus=[])))


def test_per_request_prefill_and_decode_split_at_the_first_token():
    rows = [{"index": 0, "status": "ok", "start": 12.0, "end": 16.0, "ttft_s": 1.25}]
    series = series_of(np.arange(0.013, 45.0, 0.05), RAPL)
    energy = Q.run_energy(series, {**PHASES, "inference": {"start": 12.0, "end": 16.0}}, host_gpus=[])
    (p,) = Q.request_energy(series, rows, energy)
    assert p["prefill_j"] == pytest.approx(truth(12.0, 13.25), rel=0.005)
    assert p["decode_j"] == pytest.approx(truth(13.25, 16.0), rel=0.005)


def test_idle_power_uses_settled_parts_and_leaves_out_a_window_that_has_not_settled():
    def flat(w):
        return lambda t: np.full_like(np.asarray(t, float), w)

    times = np.arange(0.0, 200.0, 0.5)
    # idle before: 50 W settling to 20 W in its first 10 s; idle after: still falling from 40 W (not settled)
    watts = np.where(times < 10, 50, 20)
    watts = np.where((times >= 120) & (times < 200), 40 - (times - 120) * 0.2, watts)
    cum = np.concatenate([[0.0], np.cumsum((watts[1:] + watts[:-1]) / 2 * 0.5)])
    series = pd.DataFrame({"t": times, "sensor": "rapl", "metric": "wattserve_energy_joules_total",
                           "labels": [RAPL] * len(times), "value": cum})
    phases = {"idle_before": {"start": 0.0, "end": 60.0}, "idle_after": {"start": 120.0, "end": 199.0}}
    watts_by_dom, flags, detail = Q.idle_power(series, phases, settle_s=10)
    assert watts_by_dom["cpu"] == pytest.approx(20, rel=0.01)  # the unsettled idle_after is left out
    assert flags == ["idle_unsettled:cpu:idle_after"]
    assert detail["idle_after"]["watts"]["cpu"]["settled"] is False
    # both settled: a duration-weighted mean of the two
    flat_after = np.where(times >= 120, 30, watts)
    cum2 = np.concatenate([[0.0], np.cumsum((flat_after[1:] + flat_after[:-1]) / 2 * 0.5)])
    w2, f2, _ = Q.idle_power(series.assign(value=cum2), phases, settle_s=10)
    assert f2 == [] and w2["cpu"] == pytest.approx((20 * 50 + 30 * 69) / 119, rel=0.01)


def test_energy_above_idle_can_be_negative_and_is_flagged():
    times = np.arange(0.0, 40.0, 0.5)
    watts = np.where(times < 20, 30, 25)  # inference (20..30) draws less than idle before: a bad baseline
    cum = np.concatenate([[0.0], np.cumsum((watts[1:] + watts[:-1]) / 2 * 0.5)])
    series = pd.DataFrame({"t": times, "sensor": "rapl", "metric": "wattserve_energy_joules_total",
                           "labels": [RAPL] * len(times), "value": cum})
    e = Q.run_energy(series, {"idle_before": {"start": 0.0, "end": 19.0}, "inference": {"start": 21.0, "end": 30.0}},
                     host_gpus=[])
    assert e["dynamic_energy_cpu_j"] < 0 and "negative_above_idle:cpu" in e["flags"]
    assert "negative_above_idle:global" in e["flags"]


def test_global_energy_is_missing_not_a_partial_sum_when_a_gpu_part_is_missing():
    series = series_of(GRID, RAPL)
    nvml_down = pd.DataFrame({"t": GRID, "sensor": "nvml", "metric": "wattserve_sensor_up",
                              "labels": [{"sensor": "nvml", "source": "nvml"}] * len(GRID), "value": 0.0})
    both = pd.concat([series, nvml_down]).sort_values("t", kind="stable").reset_index(drop=True)
    e = Q.run_energy(both, PHASES, host_gpus=[{"name": "H200"}])
    assert e["energy_cpu_j"] > 0 and e["energy_global_j"] is None and "missing:gpu" in e["flags"]
    assert e["energy_global_provenance"] == "missing"
    cpu_only = Q.run_energy(series, PHASES, host_gpus=[])
    assert cpu_only["energy_global_j"] == pytest.approx(cpu_only["energy_cpu_j"])
    assert cpu_only["energy_global_parts"] == "cpu" and "global=cpu-only" in cpu_only["flags"]


def test_estimated_flows_into_global_energy_and_each_request():
    est = series_of(np.arange(0.013, 45.0, 0.1), EST, counter=False)
    e = Q.run_energy(est, PHASES, host_gpus=[])
    assert e["energy_global_estimated"] is True and e["energy_global_provenance"] == "estimated"
    (p,) = Q.request_energy(est, requests([(12.0, 15.0)]), e)
    assert p["energy_provenance"] == "estimated"


def test_wall_check_flags_cpu_plus_gpu_above_the_wall():
    assert Q.wall_check({"energy_wall_j": 100.0, "energy_cpu_j": 60.0, "energy_gpu_j": 30.0}) == (10.0, [])
    rest, flags = Q.wall_check({"energy_wall_j": 80.0, "energy_cpu_j": 60.0, "energy_gpu_j": 30.0})
    assert rest == -10.0 and flags and flags[0].startswith("cpu+gpu_exceeds_wall")
    assert Q.wall_check({"energy_cpu_j": 60.0}) == (None, [])


def test_agreement_counts_the_reference_prompts_a_run_reproduced():
    ref = {0: [1, 2], 1: [3], 2: None, 3: [4]}   # the reference did not answer prompt 2
    run = {0: [1, 2], 1: [9], 2: [5]}             # prompt 3 not answered by the run: not reproduced
    assert Q.agreement(run, ref) == (1, 3)
    assert Q.reference_config("onnx-cuda") == "torch-cuda" and Q.reference_config("ov-cpu") == "torch-cpu"


def test_request_span_is_first_start_to_last_end():
    assert Q.request_span([{"start": 5.0, "end": 6.0}, {"start": 6.1, "end": 9.5}, {"start": None, "end": 1}]) \
        == (5.0, 9.5)
    assert Q.request_span([]) is None
    assert Q.tokens_per_s(100, 4.0) == 25.0 and Q.tokens_per_s(0, 4.0) is None


def test_only_the_serving_gpu_counts_in_the_run_and_in_each_request():
    times = np.arange(0.013, 45.0, 0.1)
    gpus = {"GPU-serving": 300.0, "GPU-idle-neighbour": 60.0}
    frames = [series_of(times, RAPL)]
    for uuid, watts in gpus.items():
        lab = {"domain": "gpu", "device": uuid[-4:], "uuid": uuid, "source": "nvml", "estimated": "false",
               "method": "counter"}
        frames.append(pd.DataFrame({"t": times, "sensor": "nvml", "metric": "wattserve_energy_joules_total",
                                    "labels": [lab] * len(times), "value": watts * times}))
    series = pd.concat(frames).sort_values("t", kind="stable").reset_index(drop=True)
    devices = Q.serving_devices({"service": {"gpu_uuids": ["GPU-serving"]}})
    e = Q.run_energy(series, PHASES, host_gpus=[{"uuid": u} for u in gpus], devices=devices)
    seconds = PHASES["inference"]["end"] - PHASES["inference"]["start"]
    assert e["energy_gpu_j"] == pytest.approx(300.0 * seconds, rel=1e-6)  # the neighbour is not counted
    (p,) = Q.request_energy(series, requests([(12.0, 15.0)]), e, devices=devices)
    assert p["energy_j"] == pytest.approx(truth(12.0, 15.0) + 300.0 * 3.0, rel=0.005)
    everything = Q.run_energy(series, PHASES, host_gpus=[{"uuid": u} for u in gpus])
    assert everything["energy_gpu_j"] == pytest.approx(360.0 * seconds, rel=1e-6)  # without the filter: both


def test_pass_at_1_and_per_solved_are_undefined_not_a_division_by_zero():
    from analysis.quantities import pass_at_1, per_solved

    assert pass_at_1(3, 164) == pytest.approx(3 / 164)
    assert pass_at_1(0, 164) == 0.0 and pass_at_1(0, 0) is None
    assert per_solved(100.0, 4) == 25.0
    assert per_solved(100.0, 0) is None and per_solved(None, 4) is None and per_solved(float("nan"), 4) is None


def test_itl_is_decode_time_over_the_gaps_and_undefined_below_two_tokens():
    assert Q.itl_mean_s(0.5, 11) == pytest.approx(0.05)
    assert Q.itl_mean_s(0.0, 1) is None and Q.itl_mean_s(0.3, 0) is None  # no gap: undefined, not 0/0
    assert Q.itl_mean_s(None, 5) is None and Q.itl_mean_s(float("nan"), 5) is None and Q.itl_mean_s(0.1, "") is None


def test_quantiles_are_numpys_linear_ones_and_missing_values_do_not_count():
    xs = [0.031, 0.002, 0.017, 0.5, 0.009, 0.004, 0.12]
    for q in (0.0, 0.5, 0.9, 1.0):
        assert Q.quantile(xs + [None, float("nan"), ""], q) == pytest.approx(float(np.quantile(xs, q)))
    assert Q.quantile([], 0.5) is None and Q.quantile([None], 0.9) is None
    assert Q.quantile([3.0], 0.9) == 3.0


def test_request_timing_is_median_and_p90_over_the_answered_requests():
    rows = [{"status": "ok", "ttft_s": t, "itl_mean_s": i} for t, i in
            [(0.010, 0.002), (0.012, None), (0.011, 0.004), (0.050, 0.003), (0.013, 0.001)]]
    rows.append({"status": "failed", "ttft_s": 9.0, "itl_mean_s": 9.0})  # never counted
    t = Q.request_timing(rows)
    assert t["ttft_median_s"] == pytest.approx(0.012)
    assert t["ttft_p90_s"] == pytest.approx(np.quantile([0.010, 0.012, 0.011, 0.050, 0.013], 0.9))
    assert t["itl_median_s"] == pytest.approx(0.0025) and t["itl_p90_s"] == pytest.approx(0.0037)
    assert Q.request_timing([{"status": "ok"}]) == {"ttft_median_s": None, "ttft_p90_s": None,
                                                    "itl_median_s": None, "itl_p90_s": None}


def test_decode_tokens_per_s_counts_the_tokens_after_each_first_and_skips_what_has_no_decode_time():
    # 3 requests: 64, 64 and 1 token (a lone first token adds no decode step and no time)
    assert Q.decode_tokens_per_s([2.0, 1.5, 0.0], [64, 64, 1]) == pytest.approx(126 / 3.5)
    assert Q.decode_tokens_per_s([None, 1.0], [64, 11]) == pytest.approx(10.0)  # missing decode time: left out
    assert Q.decode_tokens_per_s([0.0], [1]) is None and Q.decode_tokens_per_s([], []) is None


def test_roofline_is_bandwidth_over_weight_bytes_and_undefined_without_either():
    assert Q.roofline_tokens_per_s(20e9, 656e6) == pytest.approx(30.4878, rel=1e-4)
    assert Q.roofline_tokens_per_s(20e9, 0) is None and Q.roofline_tokens_per_s(None, 656e6) is None
    assert Q.roofline_tokens_per_s(-1.0, 656e6) is None
