"""The report records host, software, protocol and sensors from the analysed runs' run.json: one value
when every run agrees, each value with its run count when they differ, the estimated sensor said so;
and says plainly when there is no run folder (--table input)."""

from __future__ import annotations

import json

import pandas as pd

from analysis.cli import main
from tests.analysis.reportparse import parse_html, parse_md
from tests.analysis.runfolders import write_cells


def test_setup_section_from_run_json(tmp_path):
    cells = {("codeparrot-small", c): {"cpu_busy_w": w, "cpu_estimated": True}
             for c, w in (("torch-cpu", 40.0), ("onnx-cpu", 30.0))}
    folders = write_cells(tmp_path / "results", cells, reps=3)
    m = json.loads((folders[0] / "run.json").read_text())
    m["software"] = {"python": "3.11", "torch": "2.13.0+cpu", "wattserve": "abc1234"}
    m["protocol"]["order_seed"] = 42
    (folders[0] / "run.json").write_text(json.dumps(m))
    out = tmp_path / "out"
    assert main(["--results", str(tmp_path / "results"), "--out", str(out), "--quiet", "--no-figures"]) == 0
    for units, tables in (parse_md((out / "report.md").read_text()), parse_html((out / "report.html").read_text())):
        assert "Setup: host, software, protocol and sensors" in units
        host = {r[0]: r[1] for r in next(t for t in tables if t["caption"] == "Host")["rows"]}
        assert host["host name"] == "synthetic" and host["GPUs"] == "none" and host["RAM"] == "14.9 GiB"
        soft = {r[0]: r[1] for r in next(t for t in tables if t["caption"].startswith("Software"))["rows"]}
        assert soft["python"] == "3.11"
        assert soft["torch"] == "- (5 runs); 2.13.0+cpu (1 runs)"  # differs: each value with its count
        proto = {r[0]: r[1] for r in next(t for t in tables if t["caption"].startswith("Protocol"))["rows"]}
        assert proto["run order"] == "fixed (as given) (5 runs); randomized, seed 42 (1 runs)"
        sensors = next(t for t in tables if t["caption"].startswith("Sensors per role"))
        row = dict(zip(sensors["header"], sensors["rows"][0]))
        assert row["measured or estimated"] == "ESTIMATED" and row["runs (available)"] == "6 (6)"


def test_setup_section_without_run_folders(tmp_path):
    pd.DataFrame([{"model": "phi2", "config": "torch-cpu", "time_s": 1.0}]).to_csv(tmp_path / "t.csv", index=False)
    assert main(["--table", str(tmp_path / "t.csv"), "--out", str(tmp_path / "o"), "--quiet", "--no-figures"]) == 0
    units, _ = parse_md((tmp_path / "o" / "report.md").read_text())
    assert any(u.startswith("No run folder was read") for u in units)
