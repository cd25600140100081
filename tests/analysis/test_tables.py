"""Medians, aggregated tables, savings, flags and --table input, on tables with known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import tables as T
from analysis.catalog import RUN_COLUMNS
from analysis.cli import main

ROOT = Path(__file__).resolve().parents[2]

# The study's published medians (reference/NOTES.md), global energy J / time s, as printed there.
STUDY = """\
| model | onnx-cpu | ov-cpu | torch-cpu | onnx-cuda | torch-cuda |
|---|---|---|---|---|---|
| codeparrot-small | 27371 / 400.5 | 24936 / 285.9 | 38923 / 472.2 | 23078 / 191.0 | 12825 / 94.7 |
| pythia-410m | 75765 / 1051.4 | 125089 / 1033.0 | 112853 / 1307.0 | 55228 / 447.5 | 26694 / 189.2 |
| tinyllama | 221269 / 2000.8 | 257277 / 1500.7 | 233383 / 2963.9 | 67800 / 401.2 | 36828 / 188.8 |
| phi2 | 475453 / 4454.6 | 442487 / 2393.9 | 494766 / 5983.5 | 127933 / 793.5 | 63555 / 252.0 |
| stablecode-3b-completion | 575478 / 5248.0 | 585459 / 3239.9 | 631788 / 7379.7 | 154001 / 964.6 | 78787 / 376.7 |
"""


def study_table() -> pd.DataFrame:
    lines = [l.strip().strip("|") for l in STUDY.splitlines()]
    configs = [c.strip() for c in lines[0].split("|")[1:]]
    recs = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.split("|")]
        for cfg, cell in zip(configs, cells[1:]):
            e, t = (float(x) for x in cell.split("/"))
            recs.append({"model": cells[0], "config": cfg, "rep": 1, "energy_global_j": e, "time_s": t})
    return pd.DataFrame(recs)


def runs_table() -> pd.DataFrame:
    """Two models in category 1, one in category 3; known medians."""
    recs = []
    values = {  # (model, cat, config) -> energy per rep
        ("codeparrot-small", 1, "torch-cpu"): [100, 110, 120, 1000],  # median 115
        ("codeparrot-small", 1, "onnx-cpu"): [50, 60, 70],            # median 60
        ("pythia-410m", 1, "torch-cpu"): [300, 300, 300],             # median 300
        ("pythia-410m", 1, "onnx-cpu"): [150, 160, 170],              # median 160
        ("phi2", 3, "torch-cpu"): [1000, 1000, 1000],
        ("phi2", 3, "onnx-cpu"): [400, 500, 600],
    }
    for (model, cat, cfg), es in values.items():
        for rep, e in enumerate(es, 1):
            match = 0.9 if (model, cfg) == ("phi2", "onnx-cpu") and rep == 1 else 1.0
            recs.append({"model": model, "size_category": cat, "config": cfg, "rep": rep, "energy_global_j": e,
                         "time_s": e / 10, "run_id": f"{model}-{cfg}-{rep}", "output_match_rate": match,
                         "flags": "estimated:cpu" + (f";output_match={100 * match:.1f}%" if match < 1 else "")
                         + (";failed_requests=2" if rep == 2 and model == "pythia-410m" else "")})
    df = pd.DataFrame(recs)
    for c in RUN_COLUMNS:
        if c not in df:
            df[c] = np.nan
    return df[list(RUN_COLUMNS)]


def test_medians_aggregated_savings_known_values():
    med = T.medians(runs_table())
    m = med.set_index(["model", "config"])
    assert m.loc[("codeparrot-small", "torch-cpu"), "energy_global_j"] == 115
    assert m.loc[("codeparrot-small", "torch-cpu"), "n_runs"] == 4
    assert m.loc[("phi2", "onnx-cpu"), "output_match_rate"] == pytest.approx((0.9 + 1 + 1) / 3)
    # flags follow the configuration: kinds only, output match recomputed over the reps
    assert m.loc[("phi2", "onnx-cpu"), "flags"] == "estimated:cpu;output_match=96.7%"
    assert m.loc[("pythia-410m", "torch-cpu"), "flags"] == "estimated:cpu;failed_requests"
    assert m.loc[("phi2", "torch-cpu"), "flags"] == "estimated:cpu"
    # table order: size category, then the study's model order, then configuration order
    assert list(med["model"])[:2] == ["codeparrot-small", "codeparrot-small"]
    assert list(med["config"])[:2] == ["torch-cpu", "onnx-cpu"]

    agg = T.aggregated(med)
    a = agg.set_index(["size_category", "config"])
    assert a.loc[(1, "torch-cpu"), "energy_global_j"] == pytest.approx((115 + 300) / 2)
    assert a.loc[(1, "onnx-cpu"), "energy_global_j"] == pytest.approx((60 + 160) / 2)
    assert a.loc[(1, "onnx-cpu"), "n_models"] == 2
    assert a.loc[(3, "onnx-cpu"), "flags"] == "estimated:cpu;output_match<100%(phi2:96.7%)"
    assert a.loc[(1, "onnx-cpu"), "flags"] == "estimated:cpu;failed_requests"  # pythia-410m's runs
    assert a.loc[(3, "torch-cpu"), "flags"] == "estimated:cpu"

    sav = T.savings(med, agg)
    s = sav[(sav["variable"] == "energy_global_j") & (sav["config"] == "onnx-cpu") & (sav["baseline"] == "torch-cpu")]
    per_model = s[s["level"] == "model"].set_index("model")["saving_pct"]
    assert per_model["phi2"] == pytest.approx(50.0)
    assert per_model["codeparrot-small"] == pytest.approx(100 * (115 - 60) / 115)
    cat1 = s[(s["level"] == "category") & (s["size_category"] == 1)]["saving_pct"].iloc[0]
    assert cat1 == pytest.approx(100 * (207.5 - 110) / 207.5)
    back = sav[(sav["level"] == "model") & (sav["model"] == "phi2") & (sav["variable"] == "energy_global_j")
               & (sav["config"] == "torch-cpu")]
    assert back["saving_pct"].iloc[0] == pytest.approx(-100.0)  # torch-cpu needs twice onnx-cpu's energy
    assert "onnx-cpu:output_match=96.7%" in back["flags"].iloc[0]


def test_shipped_study_table_matches_notes():
    shipped = pd.read_csv(ROOT / "analysis" / "data" / "study_medians.csv")
    notes = study_table()
    notes["model"] = notes["model"].map(T.canonical_model)
    key = ["model", "config"]
    merged = shipped.merge(notes, on=key, suffixes=("", "_notes"))
    assert len(merged) == len(shipped) == 25
    assert np.allclose(merged["energy_global_j"], merged["energy_global_j_notes"])
    assert np.allclose(merged["time_s"], merged["time_s_notes"])


def test_table_input_on_published_medians(tmp_path):
    table = tmp_path / "study.csv"
    study_table().to_csv(table, index=False)  # study spellings, no size_category column, reps = 1
    out = tmp_path / "report"
    assert main(["--table", str(table), "--out", str(out), "--quiet"]) == 0
    for name in ("runs.csv", "medians.csv", "aggregated.csv", "savings.csv", "stats.csv", "report.md", "report.html"):
        assert (out / name).is_file(), name
    agg = pd.read_csv(out / "aggregated.csv").set_index(["size_category", "config"])
    # mean of medians per size category (codeparrot-small + pythia-410m are category 1)
    assert agg.loc[(1, "torch-cuda"), "energy_global_j"] == pytest.approx((12825 + 26694) / 2)
    assert agg.loc[(1, "torch-cuda"), "time_s"] == pytest.approx((94.7 + 189.2) / 2)
    assert agg.loc[(2, "ov-cpu"), "energy_global_j"] == pytest.approx(257277)
    # stablecode-3b-completion is the study's name of stablecode-completion-alpha-3b-4k (category 3)
    assert agg.loc[(3, "onnx-cuda"), "energy_global_j"] == pytest.approx((127933 + 154001) / 2)
    assert agg.loc[(3, "onnx-cuda"), "models"] == "phi2,stablecode-completion-alpha-3b-4k"
    stats = pd.read_csv(out / "stats.csv")
    assert stats["p_value"].isna().all() and stats["reason"].str.contains("< 3 runs|fewer than 2").all()
    report = (out / "report.md").read_text()
    assert "torch-cuda** needed the least measured global energy" in report
    assert "fewer than 3 runs" in report
    assert (out / "figures" / "box_energy_global_j.png").stat().st_size > 1000
    html = (out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<table>" in html and "figures/box_time_s.png" in html


def test_table_input_percent_match_and_errors(tmp_path):
    t = study_table().head(5)
    t["output_match_rate"] = [100, 98.5, 100, 100, 100]
    path = tmp_path / "t.csv"
    t.to_csv(path, index=False)
    df = T.load_table(path)
    assert df.loc[1, "output_match_rate"] == pytest.approx(0.985)
    assert df.loc[1, "flags"] == "output_match=98.5%" and df.loc[0, "flags"] == ""
    assert any("percent" in w for w in df.attrs["warnings"])
    assert list(df.columns) == list(RUN_COLUMNS)

    bad = tmp_path / "bad.csv"
    pd.DataFrame({"model": ["x"], "energy_global_j": [1.0]}).to_csv(bad, index=False)
    with pytest.raises(T.TableError, match="missing column"):
        T.load_table(bad)
    assert main(["--table", str(bad), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    with pytest.raises(T.TableError, match="no such file"):
        T.load_table(tmp_path / "nope.csv")
