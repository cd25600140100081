"""The Pareto front of energy against time: known fronts (a dominated point, ties, a trade-off), one
front per kind of energy (measured and estimated never compared, a refused median left out), and the
report's sentence and figure (texts in figures.json) from a real analysis run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from analysis import pareto
from analysis.cli import main
from tests.analysis.reportparse import parse_md


def test_front_known_answers():
    # a: fast and costly, b: slow and cheap (a trade-off: both on the front), c: dominated by b, d == b
    assert list(pareto.front([10, 5, 6, 5], [1, 3, 4, 3])) == [True, True, False, True]
    assert list(pareto.front([1.0], [1.0])) == [True]
    assert list(pareto.front([2, 2], [1, 2])) == [True, False]  # same energy, slower: dominated


def test_fronts_within_one_kind():
    med = pd.DataFrame({
        "model": ["m"] * 4, "config": ["torch-cpu", "onnx-cpu", "ov-cpu", "jit-cpu"],
        "energy_global_j": [100.0, 50.0, 10.0, np.nan], "energy_global_j_provenance": ["measured", "measured",
                                                                                         "estimated", "mixed"],
        "time_s": [1.0, 2.0, 9.0, 1.0]})
    f = pareto.fronts(med, "energy_global_j").set_index("config")
    assert set(f.index) == {"torch-cpu", "onnx-cpu", "ov-cpu"}  # the refused median is left out
    assert f.loc["torch-cpu", "on_front"] and f.loc["onnx-cpu", "on_front"]  # a trade-off among the measured
    assert f.loc["ov-cpu", "on_front"] and f.loc["ov-cpu", "provenance"] == "estimated"  # alone in its kind
    text = pareto.sentences(med, "energy_global_j")
    assert text[0].startswith("m (measured global energy (CPU + GPU) vs time): **torch-cpu, onnx-cpu** on the")
    assert text[1] == "m (estimated global energy (CPU + GPU) vs time): ov-cpu alone, nothing to compare it with."


def test_report_marks_the_front(tmp_path):
    recs = [{"model": "phi2", "config": c, "rep": r, "energy_global_j": e + r, "time_s": t + r / 10}
            for c, e, t in (("torch-cpu", 500.0, 30.0), ("onnx-cpu", 400.0, 20.0), ("ov-cpu", 300.0, 40.0))
            for r in (1, 2, 3)]
    pd.DataFrame(recs).to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "out"
    assert main(["--table", str(tmp_path / "t.csv"), "--out", str(out), "--quiet", "--jobs", "1"]) == 0
    units, _ = parse_md((out / "report.md").read_text())
    line = next(u for u in units if u.startswith("phi2 (measured global energy"))
    assert "onnx-cpu, ov-cpu on the Pareto front" in line and line.endswith("no more time): torch-cpu.")
    texts = json.loads((out / "figures" / "figures.json").read_text())["pareto_energy_global_j_time.png"]
    assert "Pareto front" in texts["suptitle"] and "measured" in texts["suptitle"]
    assert texts["titles"] == ["phi2"] and any("Pareto front" in lg for lg in texts["legend"])
    assert "figures/pareto_energy_global_j_time.png" in (out / "report.md").read_text()
