"""Energy, power and utilization of a time window, from a run folder's sampled ``series.csv``.

One library for the bench summary and the analysis. It reads what the sampler wrote
(loadgen/sampler.py; format in docs/run-folder.md) and understands the wattserve_ metrics
(services/exporters/README.md) and NVIDIA dcgm-exporter's DCGM_FI_ series.

Rules
-----
* Counters first: a window's energy is the counter's value interpolated linearly at the window's start
  and end, differenced. Only where a device has no energy counter is its power gauge integrated
  (trapezoid, clipped to the window).
* Edges: a window needs a sample at or before its start and one at or after its end (no extrapolation);
  otherwise the value is None. Interpolation is exact while power is constant across the sample interval
  that holds the edge; in general the error is at most one sample interval x the power swing at each
  edge (bounded by interval x peak power), so <= 2 x interval x peak power for a window.
* Sensor time: where an exporter reports when its newest underlying sample was taken
  (wattserve_sensor_last_sample_timestamp_seconds: NETIO polls, EnergiBridge rows, nvidia-smi lines),
  its energy and power values are placed at that time rather than at the scrape, so a counter that
  only moves once a second is not smeared over the sampler's interval.
* Gaps: a gap between samples longer than ``max_gap_s`` overlapping the window (exporter or sampler
  down) makes the value None. Default per series: max(5 s, 5 x its median sample spacing).
* Resets: a counter that drops is taken to have restarted from 0 (Prometheus' rule; wattserve counters
  start at ~0 when their exporter starts); the energy between the last sample before and the restart
  is lost, so the reading is marked incomplete.
* Missing is None, never 0: a domain whose sensor exists but gave no value for the window has
  ``joules=None``. A sensor that reported ``wattserve_sensor_up 0`` (or a failed scrape, ``up 0``, or an
  energy/power sample the sampler dropped as bad data, a ``dropped`` row) inside the window leaves a value
  (if the counter covers it) marked ``complete=False``.
* Devices: ``devices={"gpu": {uuid, ...}}`` (window_energy, window_mean) counts, for that domain, only
  the series whose ``uuid`` (wattserve) or ``UUID`` (dcgm-exporter) label is in the set: the serving GPU
  of a multi-GPU host (run.json ``service.gpu_uuids``). A series without such a label is not counted;
  a domain left with no series is missing, never 0 J.
* One source per domain, never summed across sources (NVML and DCGM for the same GPU would double
  count); devices within the chosen source are summed (two packages, two GPUs, two outlets). Choice:
  has a value > measured (not estimated) > hardware counter > complete > SOURCE_PRIORITY.
* ``method``: "counter" = a hardware/driver energy counter (RAPL, EnergiBridge, NVML/DCGM total energy);
  "power-integral" = power integrated over time, by the exporter (NETIO Load, NVML without counter,
  nvidia-smi, the estimate) or here from a power gauge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Collection, Mapping, Sequence

import numpy as np
import pandas as pd


ENERGY = "wattserve_energy_joules_total"
POWER = "wattserve_power_watts"
SENSOR_UP = "wattserve_sensor_up"
SENSOR_INFO = "wattserve_sensor_info"
SCRAPE_UP = "up"
SAMPLE_TS = "wattserve_sensor_last_sample_timestamp_seconds"
DCGM_ENERGY = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"  # mJ counter (prometheus_client's parser, hence
DCGM_ENERGY_NAMES = (DCGM_ENERGY, DCGM_ENERGY + "_total")  # the sampler, names its samples ..._total)
DCGM_POWER = "DCGM_FI_DEV_POWER_USAGE"                # W
DROPPED = "dropped"  # the sampler's row for a bad sample it dropped (labels: metric, reason, value, ...)
ENERGY_METRICS = frozenset({ENERGY, POWER, DCGM_POWER, *DCGM_ENERGY_NAMES})
# every metric window_energy reads (energy_series keeps only these: many windows of one run cost less)
WINDOW_ENERGY_METRICS = frozenset({*ENERGY_METRICS, SENSOR_UP, SENSOR_INFO, SCRAPE_UP, SAMPLE_TS, DROPPED})
MIB = 1024 * 1024
# wattserve gauge -> the DCGM series that stand for it (summed), with their scale to wattserve units
DCGM_EQUIVALENTS: dict[str, list[tuple[str, float]]] = {
    "wattserve_gpu_utilization_ratio": [("DCGM_FI_DEV_GPU_UTIL", 0.01)],
    "wattserve_gpu_memory_utilization_ratio": [("DCGM_FI_DEV_MEM_COPY_UTIL", 0.01)],
    "wattserve_gpu_memory_used_bytes": [("DCGM_FI_DEV_FB_USED", MIB)],
    "wattserve_gpu_memory_total_bytes": [("DCGM_FI_DEV_FB_USED", MIB), ("DCGM_FI_DEV_FB_FREE", MIB)],
}
SOURCE_PRIORITY = ("rapl", "energibridge", "nvml", "dcgm", "nvidia-smi", "netio", "estimate")
SOURCE_DOMAIN = {"rapl": "cpu", "energibridge": "cpu", "estimate": "cpu", "nvml": "gpu",
                 "nvidia-smi": "gpu", "dcgm": "gpu", "netio": "wall"}
MIN_GAP_S = 5.0


@dataclass(frozen=True)
class EnergyReading:
    """Energy of one domain in one window. ``joules=None`` = missing (never 0 for a missing sensor)."""

    joules: float | None
    source: str | None
    estimated: bool
    method: str                  # "counter" | "power-integral"
    complete: bool
    devices: dict[str, float | None] = field(default_factory=dict)
    note: str = ""


# ------------------------------------------------------------------ loading

def _frozen(labels: Mapping[str, str]) -> tuple:
    return tuple(sorted(labels.items()))


def _match(labels: Mapping[str, str], want: Mapping[str, object] | None) -> bool:
    return not want or all(labels.get(k) == str(v) for k, v in want.items())


def _series_of(series: pd.DataFrame, metric: str, *, sensor: str | None = None,
               labels: Mapping[str, object] | None = None) -> list[tuple[str, dict, np.ndarray, np.ndarray]]:
    """Each distinct (sensor, labels) series of a metric: (sensor, labels, times, values)."""
    sub = series[series["metric"] == metric]
    if sensor is not None:
        sub = sub[sub["sensor"] == sensor]
    if labels:
        sub = sub[sub["labels"].map(lambda d: _match(d, labels))]
    if sub.empty:
        return []
    # load_series shares one dict per distinct label string: serialise each dict object once
    # (keyed by identity, all alive here), not once per row
    memo: dict[int, str] = {}
    keys = sub["sensor"].astype(str) + "\x00" + sub["labels"].map(
        lambda d: memo.get(id(d)) or memo.setdefault(id(d), json.dumps(_frozen(d))))
    out = []
    for _, g in sub.groupby(keys, sort=True):
        out.append((str(g["sensor"].iloc[0]), dict(g["labels"].iloc[0]),
                    g["t"].to_numpy(float), g["value"].to_numpy(float)))
    return out


# ------------------------------------------------------------------ arithmetic on one series

def _prep(times: Sequence[float], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    t, v = np.asarray(times, dtype=float), np.asarray(values, dtype=float)
    ok = np.isfinite(t) & np.isfinite(v)
    t, v = t[ok], v[ok]
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    if len(t) > 1:  # same time twice: keep the later row
        keep = np.append(t[1:] != t[:-1], True)
        t, v = t[keep], v[keep]
    return t, v


def _auto_gap(t: np.ndarray) -> float:
    return max(MIN_GAP_S, 5 * float(np.median(np.diff(t)))) if len(t) > 1 else MIN_GAP_S


def _coverage(t: np.ndarray, start: float, end: float, max_gap_s: float | None) -> tuple[int, int] | str:
    """Indices (last sample <= start, first sample >= end), or why the window is not covered."""
    if not end >= start:
        return f"window ends ({end}) before it starts ({start})"
    if len(t) == 0:
        return "no sample"
    if t[0] > start or t[-1] < end:
        return (f"samples span {t[0]:.3f}..{t[-1]:.3f}, the window {start:.3f}..{end:.3f} is not inside "
                "(no extrapolation)")
    i0 = int(np.searchsorted(t, start, side="right")) - 1
    i1 = int(np.searchsorted(t, end, side="left"))
    if max_gap_s is not None and i1 > i0:
        gap = float(np.max(np.diff(t[i0:i1 + 1])))
        if gap > max_gap_s:
            return f"a {gap:.1f} s gap between samples (more than {max_gap_s:.1f} s) overlaps the window"
    return i0, i1


def _counter_delta(times, values, start, end, max_gap_s=None) -> tuple[float | None, list[str]]:
    t, v = _prep(times, values)
    cov = _coverage(t, start, end, max_gap_s)
    if isinstance(cov, str):
        return None, [cov]
    i0, i1 = cov
    d = np.diff(v)
    inc = np.where(d >= 0, d, v[1:])          # a drop = restarted from 0
    c = np.concatenate([[0.0], np.cumsum(inc)])
    notes = []
    resets = np.nonzero(d[i0:i1] < 0)[0]
    if resets.size:
        k = i0 + int(resets[0])
        notes.append(f"counter reset between t={t[k]:.3f} and t={t[k + 1]:.3f} (energy before the restart lost)")
    return float(np.interp(end, t, c) - np.interp(start, t, c)), notes


def counter_delta(times: Sequence[float], values: Sequence[float], start: float, end: float, *,
                  max_gap_s: float | None = None) -> float | None:
    """Increase of a counter over [start, end]: its value interpolated linearly at start and at end.
    None unless samples exist at or before ``start`` and at or after ``end`` (and, with ``max_gap_s``, no
    longer gap between samples overlaps the window). A drop is a reset to 0 (see the module notes)."""
    return _counter_delta(times, values, start, end, max_gap_s)[0]


def _integrate(times, watts, start, end, max_gap_s=None) -> tuple[float | None, list[str]]:
    t, w = _prep(times, watts)
    cov = _coverage(t, start, end, max_gap_s)
    if isinstance(cov, str):
        return None, [cov]
    inner = (t > start) & (t < end)
    tt = np.concatenate([[start], t[inner], [end]])
    ww = np.concatenate([[np.interp(start, t, w)], w[inner], [np.interp(end, t, w)]])
    return float(np.trapezoid(ww, tt)), []


def integrate_power(times: Sequence[float], watts: Sequence[float], start: float, end: float, *,
                    max_gap_s: float | None = None) -> float | None:
    """Joules from power samples over [start, end]: trapezoid, with the power interpolated linearly at the
    window's edges (clipped). None when the window is not covered (same rule as counter_delta)."""
    return _integrate(times, watts, start, end, max_gap_s)[0]


# ------------------------------------------------------------------ windows

@dataclass
class _Candidate:
    sensor: str
    source: str
    estimated: bool = False
    devices: dict[str, float | None] = field(default_factory=dict)
    methods: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def _sensor_health(series: pd.DataFrame, sensor: str, source: str, start: float, end: float) -> list[str]:
    """Why a sensor's window is incomplete: down (sensor_up 0) or unscraped (up 0) inside [start, end]."""
    notes = []
    inside = series[(series["t"] >= start) & (series["t"] <= end) & (series["sensor"] == sensor)]
    up = inside[(inside["metric"] == SENSOR_UP) & inside["labels"].map(lambda d: d.get("source", source) == source)]
    if (up["value"] == 0).any():
        info = inside[(inside["metric"] == SENSOR_INFO) & inside["labels"].map(lambda d: bool(d.get("message")))]
        why = info["labels"].iloc[-1]["message"] if len(info) else "no reason given"
        notes.append(f"{sensor} reported down in {int((up['value'] == 0).sum())} of {len(up)} scrapes: {why}")
    scrape = inside[inside["metric"] == SCRAPE_UP]
    if (scrape["value"] == 0).any():
        notes.append(f"{sensor} did not answer {int((scrape['value'] == 0).sum())} of {len(scrape)} scrapes")
    bad = inside[(inside["metric"] == DROPPED) & inside["labels"].map(
        lambda d: d.get("metric") in ENERGY_METRICS and d.get("source", source) == source)]
    if len(bad):
        notes.append(f"{sensor}: the sampler dropped {len(bad)} bad energy/power sample(s) "
                     f"({bad['labels'].iloc[-1].get('reason')})")
    return notes


def _sensor_clocks(series: pd.DataFrame) -> dict[str, dict[float, float]]:
    """Per sensor: scrape time -> time of the newest sample behind that scrape's values."""
    sub = series[series["metric"] == SAMPLE_TS]
    return {str(s): dict(zip(g["t"].to_numpy(float), g["value"].to_numpy(float)))
            for s, g in sub.groupby("sensor")}


def _dcgm_device(labels: Mapping[str, str]) -> str:
    """dcgm-exporter's gpu="0" -> "gpu0", the same device name the nvml exporter uses."""
    return f"gpu{labels['gpu']}" if "gpu" in labels else labels.get("UUID", labels.get("device", "gpu"))


def _candidates(series: pd.DataFrame, start: float, end: float,
                max_gap_s: float | None) -> dict[str, dict[tuple[str, str], _Candidate]]:
    out: dict[str, dict[tuple[str, str], _Candidate]] = {}
    clocks = _sensor_clocks(series)

    def sensor_time(sensor: str, t: np.ndarray) -> np.ndarray:
        clock = clocks.get(sensor)
        return np.array([clock.get(x, x) for x in t], dtype=float) if clock else t

    def cand(domain: str, sensor: str, source: str) -> _Candidate:
        return out.setdefault(domain, {}).setdefault((sensor, source), _Candidate(sensor, source))

    def add(c: _Candidate, device: str, value: float | None, notes: list[str], method: str, est: bool) -> None:
        c.devices[device] = value
        c.methods.add(method)
        c.estimated |= est
        c.notes += [f"{device}: {n}" for n in notes]

    countered: set[tuple[str, str, str, str]] = set()
    for sensor, lab, t, v in _series_of(series, ENERGY):
        t = sensor_time(sensor, t)
        domain, source = lab.get("domain", "unknown"), lab.get("source", sensor)
        device = lab.get("device", "")
        val, notes = _counter_delta(t, v, start, end, max_gap_s if max_gap_s is not None else _auto_gap(t))
        method = lab.get("method", "counter")
        add(cand(domain, sensor, source), device, val, notes, method, lab.get("estimated") == "true")
        countered.add((domain, sensor, source, device))
    for sensor, lab, t, v in [g for name in DCGM_ENERGY_NAMES for g in _series_of(series, name)]:
        device = _dcgm_device(lab)
        val, notes = _counter_delta(t, v / 1000.0, start, end, max_gap_s if max_gap_s is not None else _auto_gap(t))
        add(cand("gpu", sensor, "dcgm"), device, val, notes, "counter", False)
        countered.add(("gpu", sensor, "dcgm", device))
    powers = [(s, lab.get("domain", "unknown"), lab.get("source", s), lab.get("device", ""),
               lab.get("estimated") == "true", t, v) for s, lab, t, v in _series_of(series, POWER)]
    powers += [(s, "gpu", "dcgm", _dcgm_device(lab), False, t, v) for s, lab, t, v in _series_of(series, DCGM_POWER)]
    for sensor, domain, source, device, est, t, v in powers:
        if (domain, sensor, source, device) in countered:
            continue
        t = sensor_time(sensor, t)
        val, notes = _integrate(t, v, start, end, max_gap_s if max_gap_s is not None else _auto_gap(t))
        add(cand(domain, sensor, source), device, val, notes, "power-integral", est)
    return out


def _reading(c: _Candidate, health: list[str]) -> EnergyReading:
    values = list(c.devices.values())
    joules = None if not values or any(v is None for v in values) else float(sum(values))
    method = "counter" if c.methods == {"counter"} else "power-integral"
    notes = c.notes + health
    if joules is None and not notes:
        notes = ["no energy series in the window"]
    return EnergyReading(joules, c.source, c.estimated, method, joules is not None and not notes,
                         dict(sorted(c.devices.items())), "; ".join(notes))


def _rank(r: EnergyReading) -> tuple:
    prio = SOURCE_PRIORITY.index(r.source) if r.source in SOURCE_PRIORITY else len(SOURCE_PRIORITY)
    return (r.joules is None, r.estimated, r.method != "counter", not r.complete, prio, r.source or "")


def _series_domain(metric: str, labels: Mapping[str, str]) -> str | None:
    if "domain" in labels:
        return labels["domain"]
    return "gpu" if metric.startswith(("wattserve_gpu_", "DCGM_FI_")) else None


def select_devices(series: pd.DataFrame, devices: Mapping[str, Collection[str]] | None) -> tuple[pd.DataFrame, set]:
    """``series`` without the rows of a filtered domain whose ``uuid``/``UUID`` label is not in its set
    (see the module notes), and the domains that lost every row that way."""
    if not devices:
        return series, set()
    wanted = {d: {str(x) for x in ids} for d, ids in devices.items()}

    def keep(metric: str, labels: Mapping[str, str]) -> bool:
        domain = _series_domain(metric, labels)
        if domain not in wanted:
            return True
        return (labels.get("uuid") or labels.get("UUID")) in wanted[domain]

    memo: dict[tuple[str, int], bool] = {}  # load_series shares one labels dict per distinct string
    mask = np.array([memo[k] if (k := (m, id(d))) in memo else memo.setdefault(k, keep(m, d))
                     for m, d in zip(series["metric"], series["labels"])], dtype=bool)

    def energy_domains(rows: pd.DataFrame) -> set:
        e = rows[rows["metric"].isin(ENERGY_METRICS)]
        return {_series_domain(m, d) for m, d in zip(e["metric"], e["labels"])}

    kept = series[mask] if len(series) else series
    return kept, (energy_domains(series) & set(wanted)) - energy_domains(kept)


def window_energy(series: pd.DataFrame, start: float, end: float, *,
                  max_gap_s: float | None = None,
                  devices: Mapping[str, Collection[str]] | None = None) -> dict[str, EnergyReading]:
    """Energy per domain (cpu, cpu_core, uncore, dram, psys, gpu, wall...) over [start, end], one source
    per domain, devices summed. A domain whose sensor ran but gave no value -> ``joules=None``.
    ``devices``: per domain, the device UUIDs to count (the serving GPU); see the module notes."""
    series, emptied = select_devices(series, devices)
    result: dict[str, EnergyReading] = {}
    health_cache: dict[tuple[str, str], list[str]] = {}
    for domain, cands in _candidates(series, start, end, max_gap_s).items():
        readings = []
        for (sensor, source), c in cands.items():
            if (sensor, source) not in health_cache:
                health_cache[(sensor, source)] = _sensor_health(series, sensor, source, start, end)
            readings.append(_reading(c, health_cache[(sensor, source)]))
        result[domain] = min(readings, key=_rank)
    # sensors that ran but exported no energy at all (no GPU, no permission...): their domain is missing
    for sensor, lab, t, v in _series_of(series, SENSOR_UP):
        source = lab.get("source", "")
        domain = SOURCE_DOMAIN.get(source)
        if domain is None or domain in result:
            continue
        health = _sensor_health(series, sensor, source, start, end)
        info = series[(series["metric"] == SENSOR_INFO) & (series["sensor"] == sensor)]
        msgs = [d.get("message") for d in info["labels"] if d.get("message")]
        why = msgs[-1] if msgs else "no energy series"
        method = "counter" if source in ("rapl", "energibridge", "nvml", "dcgm") else "power-integral"
        result[domain] = EnergyReading(None, source, source == "estimate", method, False, {},
                                       "; ".join([f"{sensor} exported no energy: {why}", *health]))
    for domain in emptied:  # series of other devices only: missing, never absent (nor 0 J)
        r = result.get(domain)
        if r is None or r.joules is None:
            result[domain] = EnergyReading(None, r.source if r else None, bool(r and r.estimated),
                                           r.method if r else "counter", False, {},
                                           f"no {domain} series of device(s) {', '.join(sorted(devices[domain]))}")
    return dict(sorted(result.items()))


def energy_series(series: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``series`` that window_energy reads, for computing many windows of one run."""
    return series[series["metric"].isin(WINDOW_ENERGY_METRICS)].reset_index(drop=True)


def _time_mean(t: np.ndarray, v: np.ndarray, start: float, end: float) -> float | None:
    t, v = _prep(t, v)
    if end > start and not isinstance(_coverage(t, start, end, None), str):
        return integrate_power(t, v, start, end) / (end - start)
    inside = v[(t >= start) & (t <= end)]
    return float(inside.mean()) if inside.size else None


def window_mean(series: pd.DataFrame, metric: str, start: float, end: float,
                labels: Mapping[str, object] | None = None, *, sensor: str | None = None,
                how: str = "mean", devices: Mapping[str, Collection[str]] | None = None) -> float | None:
    """Time-weighted mean of a gauge over [start, end] (plain mean of the samples inside the window when
    they do not bracket it). Several matching series (devices, sensors) are combined by ``how``: "mean"
    or "sum". wattserve GPU gauges fall back to their DCGM_FI_ equivalents (scaled) when absent.
    ``devices``: as in window_energy (``{"gpu": {uuid}}``: the serving GPU's series only).
    None when nothing was sampled in the window."""
    if how not in ("mean", "sum"):
        raise ValueError("how must be 'mean' or 'sum'")
    if devices:
        sub, _ = select_devices(series[series["metric"].isin([metric, *(m for m, _ in DCGM_EQUIVALENTS.get(metric, []))])],
                                devices)
        return window_mean(sub, metric, start, end, labels, sensor=sensor, how=how)
    groups = _series_of(series, metric, sensor=sensor, labels=labels)
    if not groups and metric in DCGM_EQUIVALENTS:
        total = 0.0
        for dcgm_metric, scale in DCGM_EQUIVALENTS[metric]:
            m = window_mean(series, dcgm_metric, start, end, labels, sensor=sensor, how=how)
            if m is None:
                return None
            total += m * scale
        return total
    means = [m for m in (_time_mean(t, v, start, end) for _, _, t, v in groups) if m is not None]
    if not means:
        return None
    return float(np.mean(means)) if how == "mean" else float(np.sum(means))


def window_delta(series: pd.DataFrame, metric: str, start: float, end: float,
                 labels: Mapping[str, object] | None = None, *, sensor: str | None = None) -> float | None:
    """Increase of a counter (e.g. wattserve_process_cpu_seconds_total) over [start, end], summed over
    matching series; None if any of them does not cover the window, or none exists."""
    groups = _series_of(series, metric, sensor=sensor, labels=labels)
    deltas = [counter_delta(t, v, start, end, max_gap_s=_auto_gap(_prep(t, v)[0])) for _, _, t, v in groups]
    if not deltas or any(d is None for d in deltas):
        return None
    return float(sum(deltas))
