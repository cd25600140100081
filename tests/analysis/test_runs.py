"""Run folders (docs/run-folder.md) -> runs.csv and the tables, end to end.

Folders are written by tests/analysis/runfolders.py with energy counters growing at known watts, so
every energy number has a known answer. The tests that read series.csv need analysis/energy.py (the
energy library); they are skipped, saying so, only while that module cannot be imported.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main
from analysis.runs import discover, read_results, read_run
from tests.analysis.runfolders import write_run

try:
    import analysis.energy  # noqa: F401

    ENERGY_IMPORT_ERROR = None
except ImportError as e:  # only a missing module skips; a broken one fails the tests
    ENERGY_IMPORT_ERROR = f"{type(e).__name__}: {e}"

needs_energy = pytest.mark.skipif(
    ENERGY_IMPORT_ERROR is not None,
    reason=f"analysis/energy.py (the energy library, written separately) is not importable yet: {ENERGY_IMPORT_ERROR}")

T0 = 1_790_000_000.0


def test_discovery_keeps_complete_runs_and_lists_the_others(tmp_path):
    ok = write_run(tmp_path, config="torch-cpu", rep=1, start=T0, with_series=False)
    write_run(tmp_path, config="torch-cpu", rep=2, start=T0 + 100, status="failed", error="engine crashed",
              with_series=False)
    write_run(tmp_path, config="torch-cpu", rep=3, start=T0 + 200, status="running", with_series=False)
    crashed = write_run(tmp_path, config="onnx-cpu", rep=1, start=T0 + 300, with_series=False)
    (crashed / "run.json").unlink()  # a crash before the manifest was written
    broken = write_run(tmp_path, config="onnx-cpu", rep=2, start=T0 + 400, with_series=False)
    (broken / "run.json").write_text("{not json")
    nophase = write_run(tmp_path, config="onnx-cpu", rep=3, start=T0 + 500, with_series=False)
    m = json.loads((nophase / "run.json").read_text())
    del m["phases"]["inference"]
    (nophase / "run.json").write_text(json.dumps(m))
    nested = write_run(tmp_path / "campaign-2", config="ov-cpu", rep=1, start=T0 + 600, with_series=False)
    write_run(tmp_path / "report", config="ov-cpu", rep=9, start=T0 + 700, with_series=False)  # the output dir

    usable, left = discover(tmp_path, exclude=tmp_path / "report")
    assert sorted(f for f, _ in usable) == sorted([ok, nested])
    status = {lo.run_id.split("-r")[-1] + lo.status: lo.reason for lo in left}
    assert status["2failed"] == "engine crashed"
    assert "3running" in status
    assert {lo.status for lo in left} == {"failed", "running", "no run.json", "unreadable", "complete (unusable)"}


def test_requests_and_output_equivalence_against_the_torch_reference(tmp_path):
    start = T0
    for cfg, rep, mismatch, failed in [("torch-cpu", 1, set(), set()), ("torch-cpu", 2, set(), set()),
                                       ("onnx-cpu", 1, {1, 2}, set()), ("onnx-cpu", 2, set(), {7}),
                                       ("ov-cpu", 1, set(), set()),
                                       ("torch-cuda", 1, {5}, set()), ("onnx-cuda", 1, {5}, set())]:
        write_run(tmp_path, config=cfg, rep=rep, start=start, mismatch=mismatch, failed=failed, with_series=False)
        start += 100
    write_run(tmp_path, model="phi2", size_category=3, config="onnx-cpu", rep=1, start=start, with_series=False)
    runs, left, notes = read_results(tmp_path, jobs=1, quiet=True)
    assert not left and len(runs) == 8
    r = runs.set_index(["model", "config", "rep"])
    assert r.loc[("codeparrot-small", "onnx-cpu", 1), "output_match_rate"] == pytest.approx(0.8)
    assert r.loc[("codeparrot-small", "onnx-cpu", 2), "output_match_rate"] == pytest.approx(0.9)  # failed = differs
    assert r.loc[("codeparrot-small", "torch-cpu", 2), "output_match_rate"] == 1.0
    assert r.loc[("codeparrot-small", "ov-cpu", 1), "output_match_rate"] == 1.0
    # *-cuda compare with torch-cuda (which itself differs from torch-cpu: not a mismatch)
    assert r.loc[("codeparrot-small", "onnx-cuda", 1), "output_match_rate"] == 1.0
    assert r.loc[("codeparrot-small", "onnx-cpu", 1), "output_reference"].endswith("torch-cpu-codeparrot-small-r1")
    assert "output_match=80.0%" in r.loc[("codeparrot-small", "onnx-cpu", 1), "flags"]
    assert "failed_requests=1" in r.loc[("codeparrot-small", "onnx-cpu", 2), "flags"]
    assert np.isnan(r.loc[("phi2", "onnx-cpu", 1), "output_match_rate"])
    assert notes["no_reference"] == ["phi2 onnx-cpu"]
    row = r.loc[("codeparrot-small", "onnx-cpu", 2)]
    assert (row["requests"], row["requests_ok"], row["completion_tokens"]) == (10, 9, 72)
    assert row["time_s"] == pytest.approx(30.0)
    assert "no_series_csv" in row["flags"] and np.isnan(row["energy_cpu_j"])


@pytest.mark.parametrize("other", [{"prompts_sha": "B"}, {"max_new_tokens": 8}])
def test_runs_that_did_different_work_are_not_compared(tmp_path, other):
    write_run(tmp_path, config="torch-cpu", start=T0, with_series=False)
    write_run(tmp_path, config="onnx-cpu", start=T0 + 100, with_series=False, mismatch={1}, **other)
    runs, _, notes = read_results(tmp_path, jobs=1, quiet=True)
    assert np.isnan(runs.set_index("config").loc["onnx-cpu", "output_match_rate"])  # not compared
    assert notes["work_differs"] == ["codeparrot-small onnx-cpu"]


@pytest.mark.parametrize("stop, compared", [(["\ndef", "\n#"], False), ([], True)])
def test_stop_strings_sent_are_part_of_the_work(tmp_path, stop, compared):
    """A run that sent stop strings did other work than one that sent none; none recorded (a run made
    before run.json had generation.stop) is none sent."""
    import json

    write_run(tmp_path, config="torch-cpu", start=T0, with_series=False)
    onnx = write_run(tmp_path, config="onnx-cpu", start=T0 + 100, with_series=False)
    m = json.loads((onnx / "run.json").read_text())
    m["generation"]["stop"] = stop
    (onnx / "run.json").write_text(json.dumps(m))
    runs, _, notes = read_results(tmp_path, jobs=1, quiet=True)
    rate = runs.set_index("config").loc["onnx-cpu", "output_match_rate"]
    assert (rate == 1.0) if compared else (np.isnan(rate) and notes["work_differs"] == ["codeparrot-small onnx-cpu"])


def test_cli_without_series_still_reports(tmp_path):
    rng = np.random.default_rng(0)
    start = T0
    for cfg, base in (("torch-cpu", 60.0), ("onnx-cpu", 40.0)):
        for rep in range(1, 4):
            write_run(tmp_path, config=cfg, rep=rep, start=start, inference_s=base + rng.normal(0, 1),
                      with_series=False, mismatch={3} if cfg == "onnx-cpu" else set())
            start += 200
    write_run(tmp_path, config="ov-cpu", rep=1, start=start, status="interrupted", with_series=False)
    out = tmp_path / "out"
    assert main(["--results", str(tmp_path), "--out", str(out), "--quiet", "--no-figures"]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 6 and runs["energy_global_j"].isna().all()
    # per-request timing: prompt i's TTFT is 0.01 (i + 1) s, each decode 0.07 s over 7 gaps (8 tokens)
    ttfts = [0.01 * (i + 1) for i in range(10)]
    assert runs["ttft_median_s"].to_numpy() == pytest.approx(np.full(6, np.median(ttfts)))
    assert runs["ttft_p90_s"].to_numpy() == pytest.approx(np.full(6, np.quantile(ttfts, 0.9)))
    assert runs["itl_median_s"].to_numpy() == pytest.approx(np.full(6, 0.01))
    assert runs["itl_p90_s"].to_numpy() == pytest.approx(np.full(6, 0.01))
    med = pd.read_csv(out / "medians.csv").set_index("config")
    assert med.loc["onnx-cpu", "ttft_p90_s"] == pytest.approx(np.quantile(ttfts, 0.9))
    stats = pd.read_csv(out / "stats.csv")
    assert set(stats["variable"]) == {"time_s"}
    report = (out / "report.md").read_text()
    assert "interrupted" in report and "Outputs differ from the torch reference" in report
    assert "onnx-cpu (90.0 % of prompts identical)" in report
    timing = report[report.index("Per-request timing"):].split("\n\n")[1]  # the table after its caption
    assert "90th percentile time to first token [ms]" in timing.splitlines()[0]
    assert "| 1 | codeparrot-small | onnx-cpu | 55 | 91 | 10 | 10 |" in timing  # ms: median, p90 of TTFT, ITL
    for name in ("medians.csv", "aggregated.csv", "savings.csv"):
        assert "output_match" in pd.read_csv(out / name)["flags"].fillna("").str.cat()


def test_cli_refuses_empty_results(tmp_path, capsys):
    write_run(tmp_path, config="torch-cpu", status="failed", with_series=False)
    assert main(["--results", str(tmp_path), "--quiet"]) == 1
    assert "nothing to analyse" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([])
    with pytest.raises(SystemExit):
        main(["--results", str(tmp_path / "nope")])


# ---------------------------------------------------------------- with the energy library

@needs_energy
def test_run_row_energy_idle_and_utilization_known_values(tmp_path):
    folder = write_run(tmp_path, config="torch-cuda", start=T0, inference_s=30.0, idle_s=10.0, interval=0.5,
                       cpu_idle_w=10.0, cpu_busy_w=40.0, gpu_idle_w=20.0, gpu_busy_w=100.0,
                       cpu_util=0.5, gpu_util=0.8, gpu_mem_util=0.4, mem_used=8e9, mem_total=16e9,
                       gpu_mem_used=6e9, gpu_mem_total=24e9, n_prompts=10, tokens_per_prompt=8)
    row = read_run(folder).row
    assert row["time_s"] == pytest.approx(30.0)
    assert row["energy_cpu_j"] == pytest.approx(40.0 * 30, rel=1e-3)
    assert row["energy_gpu_j"] == pytest.approx(100.0 * 30, rel=1e-3)
    assert row["energy_global_j"] == pytest.approx(140.0 * 30, rel=1e-3)
    assert row["energy_global_parts"] == "cpu+gpu"
    assert row["energy_cpu_source"] == "estimate" and row["energy_cpu_estimated"] is True
    assert row["energy_gpu_estimated"] is False
    assert "estimated:cpu" in row["flags"] and "estimated:gpu" not in row["flags"]
    assert row["idle_power_cpu_w"] == pytest.approx(10.0, rel=1e-2)
    assert row["idle_power_gpu_w"] == pytest.approx(20.0, rel=1e-2)
    assert row["dynamic_energy_cpu_j"] == pytest.approx(30.0 * 30, rel=1e-2)
    assert row["dynamic_energy_global_j"] == pytest.approx(110.0 * 30, rel=1e-2)
    assert row["idle_share"] == pytest.approx(30.0 / 140.0, rel=1e-2)
    assert row["energy_per_request_j"] == pytest.approx(140.0 * 30 / 10, rel=1e-3)
    assert row["energy_per_token_j"] == pytest.approx(140.0 * 30 / 80, rel=1e-3)
    assert row["cpu_usage_pct"] == pytest.approx(50.0, rel=1e-2)
    assert row["ram_usage_pct"] == pytest.approx(50.0, rel=1e-2)
    assert row["gpu_usage_pct"] == pytest.approx(80.0, rel=1e-2)
    assert row["gpu_mem_util_pct"] == pytest.approx(40.0, rel=1e-2)
    assert row["gpu_mem_used_pct"] == pytest.approx(25.0, rel=1e-2)


@needs_energy
def test_cpu_only_host_global_is_cpu_and_says_so(tmp_path):
    folder = write_run(tmp_path, config="onnx-cpu", start=T0, cpu_busy_w=30.0)
    row = read_run(folder).row
    assert row["energy_global_j"] == pytest.approx(30.0 * 30, rel=1e-3)
    assert row["energy_global_parts"] == "cpu" and "global=cpu-only" in row["flags"]
    assert row.get("gpu_usage_pct") is None


@needs_energy
@pytest.mark.parametrize("host_gpus, nvml_down, parts, flag", [
    ([], True, "cpu", "global=cpu-only"),              # NVML ran, found no GPU, and the host has none
    ([{"name": "GPU"}], True, None, "missing:gpu"),   # the host has a GPU but NVML gave nothing
    ([{"name": "GPU"}], False, None, "missing:gpu"),  # the host has a GPU and no GPU sensor ran
])
def test_global_energy_is_missing_when_a_gpu_went_unmeasured(tmp_path, host_gpus, nvml_down, parts, flag):
    folder = write_run(tmp_path, config="torch-cpu", start=T0, host_gpus=host_gpus, nvml_down=nvml_down)
    row = read_run(folder).row
    assert row["energy_cpu_j"] == pytest.approx(40.0 * 30, rel=1e-3)
    assert row.get("energy_global_parts") == parts and flag in row["flags"]
    if parts is None:
        assert row.get("energy_global_j") is None
    else:
        assert "missing:gpu" not in row["flags"]


@needs_energy
def test_tables_recomputed_from_run_folders_and_test_choice(tmp_path):
    """3 configs x 5 reps: CPU watts normal around known means -> Welch; a skewed GPU-util variable -> Kruskal."""
    rng = np.random.default_rng(7)
    start = T0
    watts = {"torch-cpu": 40.0, "onnx-cpu": 30.0, "ov-cpu": 20.0}
    normal = [-1.2, -0.5, 0.0, 0.5, 1.2]  # textbook-normal offsets: Shapiro-Wilk keeps normality
    for cfg, w in watts.items():
        for rep in range(1, 6):
            write_run(tmp_path, config=cfg, rep=rep, start=start, inference_s=20.0, idle_s=5.0,
                      cpu_busy_w=w + normal[rep - 1], cpu_util=[0.1, 0.1, 0.1, 0.1, 0.9][rep - 1] + rng.uniform(0, 0.01),
                      mismatch={0} if cfg == "ov-cpu" else set(), n_prompts=5)
            start += 100
    out = tmp_path / "out"
    assert main(["--results", str(tmp_path), "--out", str(out), "--quiet", "--jobs", "2"]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 15
    med = pd.read_csv(out / "medians.csv").set_index("config")
    for cfg, w in watts.items():
        assert med.loc[cfg, "energy_cpu_j"] == pytest.approx(w * 20, rel=1e-3)
        assert med.loc[cfg, "energy_global_j"] == pytest.approx(w * 20, rel=1e-3)  # no GPU sensor
    assert med.loc["ov-cpu", "output_match_rate"] == pytest.approx(0.8)
    assert "output_match=80.0%" in med.loc["ov-cpu", "flags"]
    agg = pd.read_csv(out / "aggregated.csv").set_index("config")
    assert agg.loc["onnx-cpu", "energy_cpu_j"] == pytest.approx(600.0, rel=1e-3)
    sav = pd.read_csv(out / "savings.csv")
    s = sav[(sav["level"] == "category") & (sav["variable"] == "energy_global_j") & (sav["config"] == "ov-cpu")
            & (sav["baseline"] == "torch-cpu")]
    assert s["saving_pct"].iloc[0] == pytest.approx(50.0, rel=1e-3)
    stats = pd.read_csv(out / "stats.csv")
    e = stats[stats["variable"] == "energy_cpu_j"]
    assert "welch_anova" in set(e["test"]) and e.loc[e["test"] == "welch_anova", "p_value"].iloc[0] < 1e-6
    c = stats[stats["variable"] == "cpu_usage_pct"]
    assert "kruskal" in set(c["test"]) and "welch_anova" not in set(c["test"])
    report = (out / "report.md").read_text()
    assert "CPU energy is ESTIMATED, not measured" in report
    assert "ov-cpu (80.0 % of prompts identical)" in report
    figs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert "box_energy_global_j.png" in figs and any(f.startswith("timeseries_") for f in figs)
