"""Bootstrap confidence intervals of the median over repetitions (one model x configuration).

A median of 3-10 repetitions says little about its own uncertainty; the interval says how far it could
move. scipy.stats.bootstrap, percentile method (BCa is unstable on a handful of runs: its acceleration
degenerates when resampled medians repeat), a fixed seed so a report is reproducible, and no interval
under ``MIN_RUNS`` runs. A percentile interval never leaves the runs' range, and the range of n runs
holds the true median with probability 1 - 2^(1-n) only (3 runs: 75 %, 5 runs: 94 %): under
``FULL_COVERAGE_RUNS`` runs the interval covers less than its nominal level, and the report says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as st

from analysis import provenance as P
from analysis.catalog import DEPENDENT_VARIABLES

LEVEL = 0.95
METHOD = "percentile"
RESAMPLES = 4999
SEED = 17
MIN_RUNS = 3
# the variables whose medians the report shows (tables and figures)
CI_VARIABLES = (*DEPENDENT_VARIABLES, "energy_per_token_j")

FULL_COVERAGE_RUNS = 6  # the smallest n with 1 - 2^(1-n) >= 95 %

DESCRIPTION = (f"{LEVEL:.0%} bootstrap confidence interval of the median over repetitions "
               f"(scipy.stats.bootstrap, {METHOD} method, {RESAMPLES} resamples, seed {SEED}; "
               f"none under {MIN_RUNS} runs; under {FULL_COVERAGE_RUNS} runs it is at most the runs' range "
               "and covers less than its level: 3 runs 75%, 5 runs 94%)").replace("%", " %")


def low_column(var: str) -> str:
    return f"{var}_ci_low"


def high_column(var: str) -> str:
    return f"{var}_ci_high"


def median_ci(values) -> tuple[float, float]:
    """(low, high) of the median's interval; NaN, NaN under MIN_RUNS finite values."""
    x = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < MIN_RUNS:
        return np.nan, np.nan
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    res = st.bootstrap((x,), np.median, n_resamples=RESAMPLES, confidence_level=LEVEL, method=METHOD,
                       vectorized=True, rng=np.random.default_rng(SEED))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def add_median_cis(med: pd.DataFrame, runs: pd.DataFrame, keys=("model", "size_category", "config"),
                   variables=CI_VARIABLES) -> pd.DataFrame:
    """``med`` with ``<var>_ci_low`` and ``<var>_ci_high`` after each shown variable (and after its
    provenance column); none where the median itself is refused (measured and estimated runs)."""
    keys = list(keys)
    out = med.copy()
    groups = {_key(k if isinstance(k, tuple) else (k,)): g
              for k, g in runs.groupby(keys, dropna=False, sort=False)}
    cols = list(out.columns)
    for var in [v for v in variables if v in out and v in runs]:
        lows, highs = [], []
        for _, row in out.iterrows():
            g = groups.get(_key(tuple(row[k] for k in keys)))
            if g is None or pd.isna(row[var]):
                lo = hi = np.nan
            else:
                lo, hi = median_ci(g[var])
            lows.append(lo)
            highs.append(hi)
        out[low_column(var)], out[high_column(var)] = lows, highs
        after = P.provenance_column(var) if P.provenance_column(var) in cols else var
        at = cols.index(after) + 1
        cols[at:at] = [low_column(var), high_column(var)]
    return out[cols]


def _key(values: tuple) -> tuple:
    """A group key with NaN as None (NaN never equals itself)."""
    return tuple(None if pd.isna(v) else v for v in values)
