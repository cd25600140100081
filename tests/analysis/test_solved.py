"""The report's energy per solved task (humaneval runs): pass@1 per configuration beside the published
one, energy and time per solved task with provenance (undefined, said, when nothing is solved), the
configurations that are cheaper and at least as correct, the scatter, and the non-equivalence flag
(tokens equal torch's, pass@1 not). Run folders are synthetic with known answers."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from analysis import solved as S
from analysis.cli import main
from analysis.runs import read_results
from tests.analysis.reportparse import figure_texts, parse_md, unlabelled
from tests.analysis.runfolders import set_scoring, write_cells

MODEL = "codeparrot-small"  # published pass@1 3.8 % (registry)


def scored(root, solved: dict[str, int], *, reps: int = 1, model: str = MODEL, watts=None, **kw):
    """One run folder per configuration and repetition, scored with ``solved[config]`` problems."""
    watts = watts or {"torch-cpu": 40.0, "onnx-cpu": 30.0, "ov-cpu": 50.0}
    cells = {(model, c): {"cpu_busy_w": watts[c], "cpu_estimated": True, **kw} for c in solved}
    folders = write_cells(root, cells, reps=reps)
    for f in folders:
        config = json.loads((f / "run.json").read_text())["config"]
        set_scoring(f, solved[config])
    return folders


def report(tmp_path, figures: bool = False) -> tuple[str, list, list]:
    out = tmp_path / "out"
    args = ["--results", str(tmp_path / "results"), "--out", str(out), "--quiet", "--jobs", "1"]
    assert main(args + ([] if figures else ["--no-figures"])) == 0
    md = (out / "report.md").read_text()
    units, tables = parse_md(md)
    return md, units, tables


def pass_tables(tables: list[dict]) -> list[dict]:
    return [t for t in tables if "pass@1 (solved/problems)" in t["header"]]


def test_non_equivalence_is_flagged_when_equal_tokens_solve_different_problems(tmp_path):
    scored(tmp_path / "results", {"torch-cpu": 10, "onnx-cpu": 12})  # same token ids, different pass@1
    runs, _, _ = read_results(tmp_path / "results", quiet=True)
    onnx = runs.set_index("config").loc["onnx-cpu"]
    assert onnx["output_match_rate"] == 1.0 and "pass_at_1_differs_from_torch-cpu" in onnx["flags"]
    md, units, tables = report(tmp_path)
    warning = [u for u in units if "Non-equivalence" in u or "equal torch-cpu's" in u]
    assert any("onnx-cpu: its generated tokens equal torch-cpu's" in u for u in warning), units
    (t,) = pass_tables(tables)
    row = dict(zip(t["header"], next(r for r in t["rows"] if r[0] == "onnx-cpu")))
    assert row["flags"] == "NON-EQUIVALENT to torch-cpu"


@pytest.mark.parametrize("case", ["agree", "tokens_differ"])
def test_no_non_equivalence_where_pass_agrees_or_the_tokens_already_differ(tmp_path, case):
    if case == "agree":
        scored(tmp_path / "results", {"torch-cpu": 10, "onnx-cpu": 10})
    else:  # different tokens may solve different problems: that is an output mismatch, flagged as such
        scored(tmp_path / "results", {"torch-cpu": 10}, )
        cells = {(MODEL, "onnx-cpu"): {"cpu_busy_w": 30.0, "mismatch": {1, 2}}}
        for f in write_cells(tmp_path / "results", cells, reps=1, start=1_790_100_000.0):
            set_scoring(f, 12)
    md, units, tables = report(tmp_path)
    assert "Non-equivalence" not in md and "NON-EQUIVALENT" not in md
    (t,) = pass_tables(tables)
    assert "flags" not in t["header"]


def test_the_table_gives_pass_at_1_beside_the_published_one_and_energy_per_solved_task(tmp_path):
    folders = scored(tmp_path / "results", {"torch-cpu": 8, "onnx-cpu": 8, "ov-cpu": 0}, reps=3)
    runs, _, _ = read_results(tmp_path / "results", quiet=True)
    md, units, tables = report(tmp_path)
    (t,) = pass_tables(tables)
    rows = {r[0]: dict(zip(t["header"], r)) for r in t["rows"]}
    assert list(rows) == ["torch-cpu", "onnx-cpu", "ov-cpu"]
    assert rows["onnx-cpu"]["pass@1 (solved/problems)"] == "4.9 % (8/164)"
    assert all(r["published pass@1"] == "3.8 %" for r in rows.values())  # the registry's, beside
    assert "CodeParrot evaluation table" in t["caption"]  # with its source
    # energy per solved task = the run's global energy / solved, median over the repetitions, estimated
    onnx = runs[runs["config"] == "onnx-cpu"]
    expected = (onnx["energy_global_j"] / 8).median()
    header = "energy per solved task [J], estimated"
    assert float(rows["onnx-cpu"][header].replace(",", "")) == pytest.approx(expected, rel=1e-3)
    time_expected = (onnx["time_s"] / 8).median()
    assert float(rows["onnx-cpu"]["time per solved task [s]"]) == pytest.approx(time_expected, rel=1e-2)
    # nothing solved: undefined, said, never a division by zero (and the run's energy still shown)
    assert rows["ov-cpu"][header] == "undefined: nothing solved" == rows["ov-cpu"]["time per solved task [s]"]
    assert rows["ov-cpu"]["global energy [J], estimated"] not in ("", "missing")
    # onnx-cpu is as correct as torch-cpu and cheaper (30 W against 40 W): it stands out, torch-cpu is beaten
    sentence = next(u for u in units if u.startswith(f"{MODEL}: cheaper and at least as correct"))
    standing, beaten = sentence.split("beaten on both")
    assert standing.endswith("(estimated energy): onnx-cpu; ") and "torch-cpu, ov-cpu" in beaten
    # every energy text of the report says estimated (this host has no meter)
    assert unlabelled(units, tables) == []
    assert len(folders) == 9


def test_a_model_without_a_published_value_says_not_published(tmp_path):
    scored(tmp_path / "results", {"torch-cpu": 3}, model="pythia-410m")
    _, _, tables = report(tmp_path)
    (t,) = pass_tables(tables)
    assert t["rows"][0][t["header"].index("published pass@1")] == "not published"
    assert "not published" in t["caption"]
    reg = S.published_pass_at_1()
    assert reg["pythia-410m"]["value"] is None and reg["pythia-410m"]["source"].startswith("not published")
    assert all(v["value"] is None or 0 < v["value"] < 1 for v in reg.values()) and len(reg) == 12


def test_no_section_without_humaneval_runs(tmp_path):
    write_cells(tmp_path / "results", {(MODEL, "torch-cpu"): {"cpu_busy_w": 40.0}}, reps=1)
    md, _, _ = report(tmp_path)
    assert "per solved task" not in md.lower() and "pass@1" not in md


def test_runs_of_two_workloads_analysed_together_are_a_loud_caveat(tmp_path):
    scored(tmp_path / "results", {"torch-cpu": 3})
    write_cells(tmp_path / "results", {(MODEL, "onnx-cpu"): {"cpu_busy_w": 40.0}}, reps=1, start=1_790_100_000.0)
    md, units, tables = report(tmp_path)
    assert any("Runs of 2 workloads" in u and "humaneval" in u for u in units)
    (t,) = pass_tables(tables)
    assert [r[0] for r in t["rows"]] == ["torch-cpu"]  # the paper-style run is not in the solved-task table


def test_the_scatter_marks_the_cheaper_as_correct_configuration_and_nothing_is_cut_off(tmp_path):
    scored(tmp_path / "results", {"torch-cpu": 8, "onnx-cpu": 8, "ov-cpu": 0}, reps=3)
    md, units, _ = report(tmp_path, figures=True)
    texts = figure_texts(tmp_path / "out" / "figures")
    fig = texts["solved_energy_pass_at_1.png"]
    assert fig["cut_off"] == []
    assert "ESTIMATED" in fig["suptitle"] and "pass@1" in fig["suptitle"]
    assert any("estimated energy" in x for x in fig["legend"])
    assert "figures/solved_energy_pass_at_1.png" in md
    pts = S.fronts(S.per_config(read_results(tmp_path / "results", quiet=True)[0]))
    on = dict(zip(pts["config"], pts["on_front"]))
    # ov-cpu solves nothing but is the most expensive: beaten; torch-cpu is beaten by onnx-cpu
    assert on == {"torch-cpu": False, "onnx-cpu": True, "ov-cpu": False}


def test_front_keeps_a_more_correct_but_dearer_configuration():
    table = pd.DataFrame({"model": ["m"] * 3, "config": ["torch-cpu", "onnx-cpu", "ov-cpu"],
                          "energy_global_j": [10.0, 5.0, 5.0], "energy_global_j_provenance": ["estimated"] * 3,
                          "pass_at_1": [0.3, 0.2, 0.1]})
    pts = S.fronts(table)
    assert dict(zip(pts["config"], pts["on_front"])) == {"torch-cpu": True, "onnx-cpu": True, "ov-cpu": False}
