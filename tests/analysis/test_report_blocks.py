"""Fair comparisons: aggregates, savings, the RQ1/RQ2 verdicts and the test counts compare
configurations only over the models they all share (a complete block). The tables here have a model
with one configuration only, whose numbers would turn the verdicts around if they were counted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import tables as T
from analysis.blocks import complete_block
from analysis.cli import main
from tests.analysis.reportparse import parse_html, parse_md

# model -> config -> (energy_global_j per rep, cpu_usage_pct, time_s)
CELLS = {
    ("codeparrot-small", 1): {"torch-cpu": ([100.0, 101.0, 99.0], 50.0, 10.0),
                              "onnx-cpu": ([90.0, 91.0, 89.0], 40.0, 12.0)},
    ("pythia-410m", 1): {"onnx-cpu": ([1000.0, 1010.0, 990.0], 95.0, 100.0)},  # no torch-cpu
    ("phi2", 3): {"torch-cpu": ([500.0, 510.0, 490.0], 60.0, 30.0),
                  "onnx-cpu": ([400.0, 410.0, 390.0], 65.0, 20.0)},
}


def table(path) -> pd.DataFrame:
    recs = []
    for (model, cat), cfgs in CELLS.items():
        for cfg, (energies, usage, time_s) in cfgs.items():
            for rep, e in enumerate(energies, 1):
                recs.append({"model": model, "size_category": cat, "config": cfg, "rep": rep, "energy_global_j": e,
                             "cpu_usage_pct": usage + rep, "time_s": time_s + rep / 10})
    df = pd.DataFrame(recs)
    df.to_csv(path, index=False)
    return df


def naive_category_means(df: pd.DataFrame, var: str) -> pd.Series:
    """What the tables gave before complete blocks: the mean over whatever models a config has."""
    med = df.groupby(["size_category", "model", "config"])[var].median().reset_index()
    return med.groupby(["size_category", "config"])[var].mean()


def test_aggregates_savings_and_verdicts_use_the_complete_block(tmp_path):
    src = table(tmp_path / "t.csv")
    out = tmp_path / "out"
    assert main(["--table", str(tmp_path / "t.csv"), "--out", str(out), "--quiet", "--no-figures"]) == 0
    naive = naive_category_means(src, "energy_global_j")
    assert naive[(1, "torch-cpu")] < naive[(1, "onnx-cpu")]  # the premise: counting pythia-410m flips category 1

    agg = pd.read_csv(out / "aggregated.csv").set_index(["size_category", "config"])
    med = pd.read_csv(out / "medians.csv").set_index(["model", "config"])
    for cfg in ("torch-cpu", "onnx-cpu"):
        assert agg.loc[(1, cfg), "energy_global_j"] == pytest.approx(med.loc[("codeparrot-small", cfg), "energy_global_j"])
        assert agg.loc[(1, cfg), "n_models"] == 1 and agg.loc[(1, cfg), "models"] == "codeparrot-small"
        assert "pythia-410m" in agg.loc[(1, cfg), "left_out"] and "onnx-cpu" in agg.loc[(1, cfg), "left_out"]
    assert agg.loc[(3, "onnx-cpu"), "n_models"] == 1 and pd.isna(agg.loc[(3, "onnx-cpu"), "left_out"])

    sav = pd.read_csv(out / "savings.csv")
    s = sav[(sav["level"] == "category") & (sav["size_category"] == 1) & (sav["variable"] == "energy_global_j")
            & (sav["config"] == "onnx-cpu") & (sav["baseline"] == "torch-cpu")]
    b, v = agg.loc[(1, "torch-cpu"), "energy_global_j"], agg.loc[(1, "onnx-cpu"), "energy_global_j"]
    assert s["saving_pct"].iloc[0] == pytest.approx(100 * (b - v) / b) and s["saving_pct"].iloc[0] > 0

    for units, _ in (parse_md((out / "report.md").read_text()), parse_html((out / "report.html").read_text())):
        cat1 = next(u for u in units if u.startswith("Size category 1"))
        assert "onnx-cpu needed the least measured global energy" in cat1  # naive: torch-cpu
        assert "pythia-410m" in cat1
        left = [u for u in units if u.startswith("left out of")]
        assert any("pythia-410m" in u and "has only" in u and "onnx-cpu" in u for u in left)
        # RQ2: over the block torch-cpu uses the most CPU; counting pythia-410m (95 %) would say onnx-cpu
        usage = next(u for u in units if u.startswith("CPU usage:"))
        assert "highest with torch-cpu" in usage
        naive_usage = naive_category_means(src, "cpu_usage_pct").groupby("config").mean()
        assert naive_usage["onnx-cpu"] > naive_usage["torch-cpu"]
        # per-model winners: over the 2 models with both configurations
        winners = next(u for u in units if u.startswith("Per model"))
        assert "onnx-cpu for 2 of 2 models" in winners


def test_stats_counts_only_the_block(tmp_path):
    table(tmp_path / "t.csv")
    out = tmp_path / "out"
    assert main(["--table", str(tmp_path / "t.csv"), "--out", str(out), "--quiet", "--no-figures"]) == 0
    stats = pd.read_csv(out / "stats.csv")
    assert not stats.loc[stats["model"] == "pythia-410m", "in_block"].any()
    assert stats.loc[stats["model"] != "pythia-410m", "in_block"].all()
    units, _ = parse_md((out / "report.md").read_text())
    energy = next(u for u in units if u.startswith("Global energy (CPU + GPU) [J]"))
    assert "of 2 tested models" in energy and "left out" in energy and "pythia-410m" in energy


def test_block_with_missing_value_refuses_instead_of_averaging_fewer_models():
    med = pd.DataFrame({
        "model": ["codeparrot-small", "codeparrot-small", "pythia-410m", "pythia-410m"],
        "size_category": [1, 1, 1, 1], "config": ["torch-cpu", "onnx-cpu", "torch-cpu", "onnx-cpu"],
        "n_runs": 3, "energy_wall_j": [10.0, 8.0, 20.0, np.nan], "time_s": [1.0, 2.0, 3.0, 4.0],
        "output_match_rate": 1.0, "flags": "",
    })
    agg = T.aggregated(med).set_index("config")
    assert agg.loc["torch-cpu", "energy_wall_j"] == pytest.approx(15.0)
    assert np.isnan(agg.loc["onnx-cpu", "energy_wall_j"])  # not 8.0 over codeparrot-small alone
    assert "energy_wall_j: no value for pythia-410m" in agg.loc["onnx-cpu", "refused"]
    assert agg.loc["onnx-cpu", "time_s"] == pytest.approx(3.0)


def test_complete_block_names_what_each_left_out_model_has():
    frame = pd.DataFrame({"model": ["a", "a", "a", "b", "c", "c"],
                          "config": ["torch-cpu", "onnx-cpu", "ov-cpu", "onnx-cpu", "torch-cpu", "ov-cpu"],
                          "x": [1.0, 1.0, 1.0, 1.0, 1.0, np.nan]})
    b = complete_block(frame, "the test")
    assert b.models == ["a"] and b.left_out == {"b": ["onnx-cpu"], "c": ["torch-cpu", "ov-cpu"]}
    assert b.notes()[0] == "left out of the test: model b (has only configs onnx-cpu; lacks torch-cpu, ov-cpu)"
    bx = complete_block(frame, "x", var="x")  # with a variable, a NaN is not having the configuration
    assert bx.left_out["c"] == ["torch-cpu"]
