"""Cumulative energy of one domain as a function of time, for evaluating many windows of one run at
once (every request's own window: analysis/quantities.py request_energy). Same sources, devices and
counter rules as analysis/energy.py's window_energy, whose series helpers it uses."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.energy import (DCGM_ENERGY_NAMES, DCGM_POWER, ENERGY, POWER, _prep, _sensor_clocks, _series_of,
                             select_devices)


class CumulativeEnergy:
    """Joules since the first sample, as a function of time, for one domain's chosen source (devices
    summed): a counter's reset-corrected value, or a power gauge's running trapezoid. ``f(t)`` takes an
    array and gives NaN outside the samples (no extrapolation). ``step_s``: the series' median sample
    spacing, what the sensor can resolve at best. Evaluating many windows (every request) costs one pass."""

    def __init__(self, curves: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.curves = curves
        self.step_s = max((float(np.median(np.diff(t))) for t, _ in curves if len(t) > 1), default=float("inf"))

    def __call__(self, t) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        total = np.zeros_like(t)
        for ts, cs in self.curves:
            v = np.interp(t, ts, cs)
            v[(t < ts[0]) | (t > ts[-1]) | ~np.isfinite(t)] = np.nan
            total = total + v
        return total


def _cumulative_counter(t: np.ndarray, v: np.ndarray) -> np.ndarray:
    d = np.diff(v)
    return np.concatenate([[0.0], np.cumsum(np.where(d >= 0, d, v[1:]))])  # a drop = restarted from 0


def _cumulative_power(t: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.diff(t) * (w[1:] + w[:-1]) / 2)])


def cumulative_energy(series: pd.DataFrame, domain: str, source: str | None, *,
                      devices=None) -> CumulativeEnergy | None:
    """The cumulative energy of ``domain`` from ``source`` (as :func:`window_energy` chose it), or None
    when that source has no series. Counters are preferred to power, as in window_energy; ``devices``
    keeps only those devices' series (select_devices, as window_energy's ``devices``)."""
    if source is None:
        return None
    if devices:
        series, _ = select_devices(series, {domain: devices})
    clocks = _sensor_clocks(series)

    def timed(sensor: str, t: np.ndarray) -> np.ndarray:
        clock = clocks.get(sensor)
        return np.array([clock.get(x, x) for x in t], dtype=float) if clock else t

    curves = []
    if source == "dcgm" and domain == "gpu":
        for sensor, lab, t, v in [g for name in DCGM_ENERGY_NAMES for g in _series_of(series, name)]:
            t, v = _prep(t, v / 1000.0)
            curves.append((t, _cumulative_counter(t, v)))
        for sensor, lab, t, v in [] if curves else _series_of(series, DCGM_POWER):
            t, v = _prep(t, v)
            curves.append((t, _cumulative_power(t, v)))
    else:
        want = {"domain": domain, "source": source}
        for sensor, lab, t, v in _series_of(series, ENERGY, labels=want):
            t, v = _prep(timed(sensor, t), v)
            curves.append((t, _cumulative_counter(t, v)))
        for sensor, lab, t, v in [] if curves else _series_of(series, POWER, labels=want):
            t, v = _prep(timed(sensor, t), v)
            curves.append((t, _cumulative_power(t, v)))
    curves = [(t, c) for t, c in curves if len(t) > 1]
    return CumulativeEnergy(curves) if curves else None
