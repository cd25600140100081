"""Bootstrap confidence intervals of the medians: none under 3 runs, a point for identical runs, inside
the runs' range and around the median otherwise, the same on every call (seeded); medians.csv carries
them after the provenance, none where the median is refused, and the report's median tables show
``median [low, high]`` and say how the interval was made."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from analysis import intervals as I
from analysis import tables as T


def test_median_ci_edges():
    assert all(np.isnan(I.median_ci([1.0, 2.0])))
    assert all(np.isnan(I.median_ci([1.0, np.nan, "x", 3.0])))  # 2 finite values
    assert I.median_ci([5.0, 5.0, 5.0]) == (5.0, 5.0)
    assert I.median_ci([3.0, 1.0, 2.0]) == (1.0, 3.0)  # 3 runs: the range, which holds the median 75 % of the time
    assert "3 runs 75 %" in I.DESCRIPTION
    x = [10.0, 11.0, 12.0, 13.0, 30.0, 11.5, 12.5, 10.5]
    lo, hi = I.median_ci(x)
    assert min(x) <= lo <= np.median(x) <= hi <= max(x)
    assert (lo, hi) == I.median_ci(x)  # seeded
    ref = st.bootstrap((np.array(x),), np.median, n_resamples=I.RESAMPLES, confidence_level=I.LEVEL,
                       method=I.METHOD, rng=np.random.default_rng(I.SEED)).confidence_interval
    assert (lo, hi) == pytest.approx((ref.low, ref.high))
    assert hi < 30.0  # the outlier does not drag the median's interval to it


def runs_frame() -> pd.DataFrame:
    recs = []
    for cfg, base, est in (("torch-cpu", 100.0, "true"), ("onnx-cpu", 50.0, "true")):
        for rep in range(1, 6):
            recs.append({"model": "codeparrot-small", "size_category": 1, "config": cfg, "rep": rep,
                         "energy_global_j": base + rep, "energy_cpu_j": base + rep, "energy_cpu_estimated": est,
                         "time_s": 10.0 + rep, "flags": ""})
    # a group of measured and estimated runs: its median is refused, so is its interval
    for rep, est in ((1, "true"), (2, "false"), (3, "false")):
        recs.append({"model": "phi2", "size_category": 3, "config": "torch-cpu", "rep": rep,
                     "energy_global_j": 500.0 + rep, "energy_cpu_j": 500.0 + rep, "energy_cpu_estimated": est,
                     "time_s": 20.0, "flags": ""})
    return pd.DataFrame(recs)


def test_medians_carry_intervals_after_the_provenance(tmp_path):
    runs_frame().to_csv(tmp_path / "t.csv", index=False)
    med = T.medians(T.load_table(tmp_path / "t.csv")).set_index(["model", "config"])
    cols = list(med.columns)
    i = cols.index("energy_global_j")
    assert cols[i + 1:i + 4] == ["energy_global_j_provenance", "energy_global_j_ci_low", "energy_global_j_ci_high"]
    r = med.loc[("codeparrot-small", "torch-cpu")]
    assert (r["energy_global_j_ci_low"], r["energy_global_j_ci_high"]) == I.median_ci([101, 102, 103, 104, 105])
    assert r["energy_global_j_ci_low"] <= r["energy_global_j"] <= r["energy_global_j_ci_high"]
    phi = med.loc[("phi2", "torch-cpu")]
    assert phi["energy_global_j_provenance"] == "mixed" and np.isnan(phi["energy_global_j"])
    assert np.isnan(phi["energy_global_j_ci_low"]) and np.isnan(phi["energy_global_j_ci_high"])
    assert phi["time_s_ci_low"] == phi["time_s_ci_high"] == 20.0


def test_report_table_cells_show_the_interval(tmp_path):
    from analysis.cli import main
    from tests.analysis.reportparse import parse_md

    runs_frame().to_csv(tmp_path / "t.csv", index=False)
    assert main(["--table", str(tmp_path / "t.csv"), "--out", str(tmp_path / "out"), "--quiet", "--no-figures"]) == 0
    _, tables = parse_md((tmp_path / "out" / "report.md").read_text())
    t = next(tb for tb in tables if tb["caption"].startswith("Median over repetitions: Inference time"))
    assert "95 % bootstrap confidence interval" in t["caption"] and "percentile" in t["caption"]
    row = dict(zip(t["header"], next(r for r in t["rows"] if "codeparrot-small" in r)))
    lo, hi = I.median_ci([11, 12, 13, 14, 15])
    assert (lo, hi) == (11.0, 15.0)  # 5 runs: the interval is their range
    assert row["torch-cpu"] == "13.0 [11.0, 15.0]"
