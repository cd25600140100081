"""Precision as an axis, end to end: a real bench of onnx-cpu at fp32 and int8 (real services, Locust,
the estimate sensor), then the analysis of its folder — one label, onnx-cpu@int8, from run id to report."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from analysis.report_precision import precision_section, summarize
from tests.loadgen.conftest import QUICK, manifest, run_bench, run_dirs
from tests.conftest import ROOT


def test_a_bench_at_two_precisions_is_labelled_compared_and_reported(tmp_path):
    prompts = tmp_path / "p.jsonl"
    lines = (ROOT / "loadgen" / "prompts" / "paper-prompts.jsonl").read_text().splitlines()[:24]
    prompts.write_text("\n".join(lines) + "\n")
    results = tmp_path / "results"
    r = run_bench("--config", "onnx-cpu", "--precision", "fp32,int8", "--fixed-order", "--prompts", str(prompts),
                  *QUICK, "--cpu-sensor", "estimate", "--results", str(results), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    runs = {manifest(d)["variant"]: d for d in run_dirs(results)}
    assert set(runs) == {"onnx-cpu", "onnx-cpu@int8"}
    low = manifest(runs["onnx-cpu@int8"])
    assert "-onnx-cpu@int8-tiny-r1" in low["run_id"] and low["config"] == "onnx-cpu"
    assert low["generation"]["precision"] == "int8" and low["service"]["precision"] == "int8"
    assert any(k.startswith("quantization.") for k in low["service"]["precision_settings"])  # ORT's own record
    assert manifest(runs["onnx-cpu"])["service"]["precision"] == "fp32"
    table = r.stdout
    row = next(x for x in table.splitlines() if "| onnx-cpu@int8 " in x)
    assert "vs onnx-cpu" in row  # its agreement with the same configuration at fp32

    out = tmp_path / "report"
    a = subprocess.run([sys.executable, "-m", "analysis", "--results", str(results), "--out", str(out),
                        "--no-figures", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert a.returncode == 0, a.stderr
    rows = pd.read_csv(out / "runs.csv").set_index("config")
    assert rows.loc["onnx-cpu@int8", "precision"] == "int8" and rows.loc["onnx-cpu", "precision"] == "fp32"
    rate = rows.loc["onnx-cpu@int8", "output_match_fp32_rate"]
    assert 0 <= rate <= 1 and rows.loc["onnx-cpu@int8", "output_fp32_reference"] == manifest(runs["onnx-cpu"])["run_id"]
    same = round(rate * 24)
    assert f"({same}/24) vs onnx-cpu" in row  # the bench and the analysis count the same agreement
    report = (out / "report.md").read_text()
    assert "## Precision: what a lower precision saves and what it changes" in report
    section = report.split("## Precision")[1].split("\n## ")[0]
    assert "| onnx-cpu@int8 |" in section and "(estimated)" in section  # energy keeps its provenance
    assert list(rows.index) == ["onnx-cpu", "onnx-cpu@int8"]  # fp32 first, its variant right after


def _runs(**over) -> pd.DataFrame:
    base = {"model": "m", "size_category": 1, "rep": 1, "flags": [[]] * 4, "time_s": [10.0, 12.0, 6.0, 8.0],
            "config": ["onnx-cpu", "onnx-cpu", "onnx-cpu@int8", "onnx-cpu@int8"],
            "energy_global_j": [100.0, 120.0, 50.0, 70.0], "energy_cpu_j": [100.0, 120.0, 50.0, 70.0],
            "energy_cpu_estimated": [True] * 4, "energy_global_estimated": [True] * 4,
            "output_match_fp32_rate": [None, None, 0.5, 0.75], "output_match_rate": [1.0, 1.0, 0.5, 0.5],
            "tokens_per_s": [10.0, 10.0, 20.0, 20.0]}
    base.update(over)
    return pd.DataFrame(base)


def test_the_precision_table_compares_medians_and_refuses_measured_against_estimated():
    s = summarize(_runs()).iloc[0]
    assert (s["config"], s["fp32"], s["runs"], s["fp32_runs"]) == ("onnx-cpu@int8", "onnx-cpu", 2, 2)
    assert s["energy_change"] == "-45.5 %"  # median 60 against median 110
    assert s["time_change"] == "-36.4 %" and s["match_fp32"] == 0.625 and s["energy_kind"] == "estimated"
    mixed = summarize(_runs(energy_cpu_estimated=[True, True, False, False],
                            energy_global_estimated=[True, True, False, False])).iloc[0]
    assert mixed["energy_change"].startswith("refused")
    parts = precision_section(_runs()).parts
    text = "\n".join([p.text for p in parts if p.kind == "text"] + [i for p in parts if p.kind == "items" for i in p.items])
    assert "onnx-cpu@int8" in text and "45.5 % less global energy (estimated)" in text


def test_one_table_per_model_has_the_same_columns_for_every_configuration():
    """Two engines' variants in one model's table: every cell filled (seen: per-reference column names left
    'nan' in the other rows)."""
    from analysis.report_precision import model_table

    two = pd.concat([_runs(), _runs(config=["ov-cpu", "ov-cpu", "ov-cpu@int8", "ov-cpu@int8"])], ignore_index=True)
    table = model_table(summarize(two))
    assert list(table["configuration"]) == ["onnx-cpu@int8", "ov-cpu@int8"] and list(table["against"]) == [
        "onnx-cpu", "ov-cpu"]
    assert "nan" not in table.to_string() and list(table["same tokens as at fp32"]) == ["62.5 %", "62.5 %"]
    assert all(cell.endswith("(torch-cpu)") for cell in table["same tokens as torch fp32"])


def test_no_section_without_a_lower_precision_and_a_warning_without_its_fp32():
    fp32_only = _runs(config=["onnx-cpu"] * 4)
    assert precision_section(fp32_only) is None
    alone = _runs(config=["onnx-cpu@int8"] * 4)
    sec = precision_section(alone)
    warned = [p for p in sec.parts if getattr(p, "kind", "") == "warning"]
    assert warned and "run onnx-cpu too" in warned[0].items[0]


def test_the_bench_table_shows_energy_a_sensor_that_missed_a_scrape_still_gave():
    """Seen on a loaded host: one missed scrape marks the estimate unavailable, but the window's energy is
    computed from its other samples (incomplete): the cell shows it, marked, instead of n/a."""
    from loadgen.summary import energy_cell

    energy = {"energy_global_j": 1338.37, "energy_global_parts": "cpu", "energy_cpu_source": "estimate",
              "energy_global_estimated": True, "energy_global_complete": False}
    m = {"sensors": [{"name": "estimate", "available": False}], "summary": {"energy": energy}}
    assert energy_cell(m) == "1338.4 J (ESTIMATED; cpu: estimate, incomplete)"
    m["summary"]["energy"] = {"energy_global_j": None, "flags": []}
    assert energy_cell(m) == "n/a (sensors unavailable)"
