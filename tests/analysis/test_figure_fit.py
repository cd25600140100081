"""Every figure's texts fit inside it (a title or legend wider than its figure is cut off in the PNG,
as the HTML report showed): checked from the laid-out matplotlib objects (figures.json ``cut_off``)
on the narrowest and the most crowded figures the analysis draws, and the check itself can fail."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis.cli import main  # noqa: E402
from analysis.figure_texts import cut_off  # noqa: E402
from tests.analysis.runfolders import write_cells  # noqa: E402


def test_the_check_sees_a_title_wider_than_its_figure():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.set_title("a title far too long for a three-inch figure to hold on one line, cut at both ends")
    fig.legend(handles=ax.plot([0], [0], label="x" * 120), loc="lower center", ncol=1)
    assert len(cut_off(fig)) == 2
    plt.close(fig)


def test_every_figure_fits(tmp_path):
    long = "stablecode-completion-alpha-3b-4k"
    cells = {(long, "torch-cpu"): {"size_category": 3, "cpu_busy_w": 40.0, "cpu_estimated": True},  # one box
             ("codeparrot-small", "torch-cpu"): {"size_category": 1, "cpu_busy_w": 40.0, "cpu_estimated": False},
             ("codeparrot-small", "onnx-cpu"): {"size_category": 1, "cpu_busy_w": 30.0, "cpu_estimated": True},
             ("pythia-410m", "onnx-cpu"): {"size_category": 1, "cpu_busy_w": 30.0, "cpu_estimated": True}}
    write_cells(tmp_path / "results", cells, reps=3)
    out = tmp_path / "out"
    assert main(["--results", str(tmp_path / "results"), "--out", str(out), "--quiet", "--jobs", "1"]) == 0
    texts = json.loads((out / "figures" / "figures.json").read_text())
    assert any(k.startswith("pareto_") for k in texts) and any(k.startswith("timeseries_") for k in texts)
    assert {k: v["cut_off"] for k, v in texts.items() if v["cut_off"]} == {}
