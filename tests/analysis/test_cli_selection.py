"""Run selection: --study/--model/--config/--runs (make analyze STUDY= MODEL= CONFIG= RUNS=), what the
analysis says it took, and clear errors for filters that match nothing."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from analysis.cli import main
from tests.analysis.runfolders import set_study, write_run

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_790_000_000.0
TOOK = re.compile(r"took (\d+) run\(s\) \(models: (.*?); configs: (.*?); studies: (.*?)\), "
                  r"left out (\d+) by filter, (\d+) incomplete")


@pytest.fixture
def tree(tmp_path):
    """Complete runs of two studies and none, incomplete runs, and a crashed folder (no run.json)."""
    root = tmp_path / "results"
    plan = [("codeparrot-small", "torch-cpu", 1, "s1", "complete"), ("codeparrot-small", "torch-cpu", 2, "s1", "complete"),
            ("codeparrot-small", "onnx-cpu", 1, "s1", "complete"), ("codeparrot-small", "onnx-cpu", 2, "s1", "complete"),
            ("phi2", "torch-cpu", 1, "s2", "complete"), ("phi2", "torch-cpu", 2, "s2", "complete"),
            ("phi2", "onnx-cpu", 1, None, "complete"),
            ("phi2", "onnx-cpu", 2, "s2", "failed"), ("codeparrot-small", "torch-cpu", 3, None, "interrupted")]
    runs = []
    for i, (model, cfg, rep, study, status) in enumerate(plan):
        f = write_run(root, model=model, size_category=1 if model == "codeparrot-small" else 3, config=cfg, rep=rep,
                      start=T0 + 100 * i, status=status, with_series=False)
        if study:
            set_study(f, study)
        runs.append({"run_id": f.name, "model": model, "config": cfg, "study": study, "status": status})
    crashed = write_run(root, model="phi2", config="ov-cpu", start=T0 + 5000, with_series=False)
    (crashed / "run.json").unlink()
    runs.append({"run_id": crashed.name, "model": None, "config": None, "study": None, "status": "no run.json"})
    return root, pd.DataFrame(runs)


def analyse(root, out, *args):
    return main(["--results", str(root), "--out", str(out), "--quiet", "--no-figures", "--jobs", "1", *args])


def expected(plan: pd.DataFrame, **filters) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(complete runs taken, incomplete taken, left out by filter), from the plan: an unknown field
    (the crashed folder's) is not filtered out."""
    keep = pd.Series(True, index=plan.index)
    unknown = plan["status"] == "no run.json"
    for col, values in filters.items():
        keep &= (unknown | plan[col].isin(values)) if col != "run_id" else plan[col].isin(values)
    done = plan["status"] == "complete"
    return plan[keep & done], plan[keep & ~done], int((~keep).sum())


@pytest.mark.parametrize("args, filters", [
    ([], {}),
    (["--model", "phi2"], {"model": ["phi2"]}),
    (["--model", "phi-2"], {"model": ["phi2"]}),  # an alias of the registry name
    (["--study", "s1", "--config", "onnx-cpu"], {"study": ["s1"], "config": ["onnx-cpu"]}),
    (["--config", "torch-cpu,onnx-cpu", "--study", "s2"], {"config": ["torch-cpu", "onnx-cpu"], "study": ["s2"]}),
])
def test_filters_take_exactly_the_matching_runs_and_say_so(tree, tmp_path, capsys, args, filters):
    root, plan = tree
    assert analyse(root, tmp_path / "out", *args) == 0
    taken, incomplete, filtered = expected(plan, **filters)
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    assert sorted(runs["run_id"]) == sorted(taken["run_id"])
    m = TOOK.search(capsys.readouterr().out)
    assert m, "no 'took ...' line"
    assert int(m.group(1)) == len(taken) and int(m.group(5)) == filtered and int(m.group(6)) == len(incomplete)
    assert m.group(2).split(", ") == list(dict.fromkeys(taken.sort_values("model", key=lambda s: s.map(
        {"codeparrot-small": 0, "phi2": 1}))["model"]))
    studies = sorted(s for s in taken["study"].dropna().unique())
    assert m.group(4) == (", ".join(studies) or "none")
    report = (tmp_path / "out" / "report.md").read_text()
    assert m.group(0) in report
    for rid in incomplete["run_id"]:
        assert rid in report
    for rid in plan.loc[~plan["run_id"].isin(taken["run_id"]) & ~plan["run_id"].isin(incomplete["run_id"]), "run_id"]:
        assert rid not in report


def test_runs_by_id(tree, tmp_path, capsys):
    root, plan = tree
    ids = list(plan.loc[plan["status"] == "complete", "run_id"][::3])
    failed = plan.loc[plan["status"] == "failed", "run_id"].iloc[0]
    assert analyse(root, tmp_path / "out", "--runs", ",".join(ids + [failed])) == 0
    assert sorted(pd.read_csv(tmp_path / "out" / "runs.csv")["run_id"]) == sorted(ids)
    m = TOOK.search(capsys.readouterr().out)
    assert int(m.group(1)) == len(ids) and int(m.group(6)) == 1
    assert int(m.group(5)) == len(plan) - len(ids) - 1


@pytest.mark.parametrize("args, listed", [
    (["--model", "phi3"], ["codeparrot-small", "phi2"]),
    (["--config", "onnx-cuda"], ["torch-cpu", "onnx-cpu"]),
    (["--study", "s3"], ["s1", "s2"]),
    (["--runs", "nope"], []),
    (["--model", "phi2,phi3"], ["codeparrot-small", "phi2"]),  # one unknown name is enough
])
def test_a_filter_matching_nothing_is_an_error_listing_what_exists(tree, tmp_path, capsys, args, listed):
    root, _ = tree
    assert analyse(root, tmp_path / "out", *args) == 2
    err = capsys.readouterr().err
    assert args[1].split(",")[-1] in err and "no run has" in err
    for name in listed:
        assert name in err
    assert not (tmp_path / "out" / "runs.csv").exists()


def test_filters_that_match_nothing_together(tree, tmp_path, capsys):
    root, _ = tree
    assert analyse(root, tmp_path / "out", "--study", "s1", "--model", "phi2") == 2
    err = capsys.readouterr().err
    assert "together" in err and "s1" in err and "phi2" in err


def test_a_filter_matching_only_incomplete_runs_is_nothing_to_analyse(tree, tmp_path, capsys):
    root, plan = tree
    failed = plan.loc[plan["status"] == "failed", "run_id"].iloc[0]
    assert analyse(root, tmp_path / "out", "--runs", failed) == 1
    assert "nothing to analyse" in capsys.readouterr().err


def test_empty_filter_value_is_refused(tree, tmp_path):
    root, _ = tree
    with pytest.raises(SystemExit):
        analyse(root, tmp_path / "out", "--model", " , ")


def test_make_analyze_passes_filters_only_when_given():
    def dry(*assignments):
        r = subprocess.run(["make", "-n", "analyze", *assignments], cwd=ROOT, capture_output=True, text=True,
                           check=True)
        return next(l for l in r.stdout.replace("\\\n", " ").splitlines() if "-m analysis" in l)

    plain = dry()
    for opt in ("--study", "--model", "--config", "--runs"):
        assert opt not in plain  # MODEL and CONFIG have bench defaults in the Makefile: they must not filter
    line = dry("STUDY=s1,s2", "MODEL=phi2", "CONFIG=onnx-cpu,ov-cpu", "RUNS=a,b")
    for opt, value in (("--study", "s1,s2"), ("--model", "phi2"), ("--config", "onnx-cpu,ov-cpu"), ("--runs", "a,b")):
        assert f'{opt} "{value}"' in line
    help_text = subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "analysis", "--help"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout
    for opt in ("--study", "--model", "--config", "--runs"):
        assert opt in help_text


def test_table_rows_are_selected_too(tmp_path, capsys):
    path = tmp_path / "t.csv"
    pd.DataFrame({"model": ["phi2", "phi2", "tinyllama"], "config": ["torch-cpu", "onnx-cpu", "torch-cpu"],
                  "study": ["s1", "s2", "s1"], "time_s": [1.0, 2.0, 3.0]}).to_csv(path, index=False)
    out = tmp_path / "out"
    assert main(["--table", str(path), "--out", str(out), "--quiet", "--no-figures", "--study", "s1"]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(zip(runs["model"], runs["config"])) == [("phi2", "torch-cpu"), ("tinyllama", "torch-cpu")]
    assert "left out 1 by filter" in capsys.readouterr().out
    assert main(["--table", str(path), "--out", str(out), "--quiet", "--no-figures", "--model", "phi3"]) == 2
    assert "tinyllama" in capsys.readouterr().err
