"""The verdicts say whether a difference is significant, from the RQ3 tests: a winner whose lead over
the runner-up the post-hoc pair test does not support says NOT significant; a clear lead says
significant; a refused (measured vs estimated) or missing test says not tested, with the reason; and
every such sentence about estimated energy says estimated."""

from __future__ import annotations

import pandas as pd

from analysis import significance as S
from analysis.cli import main
from tests.analysis.reportparse import parse_html, parse_md
from tests.analysis.runfolders import write_cells


def stats_rows(*rows) -> pd.DataFrame:
    cols = ["model", "variable", "test", "group_a", "group_b", "p_value", "reason"]
    return pd.DataFrame([dict(zip(cols, r)) for r in rows])


def test_pair_outcomes():
    stats = stats_rows(
        ("m1", "e", "welch_anova", None, None, 0.001, ""), ("m1", "e", "games_howell", "a", "b", 0.01, ""),
        ("m2", "e", "kruskal", None, None, 0.20, ""), ("m2", "e", "dunn", "b", "a", 0.01, ""),  # omnibus not significant
        ("m3", "e", "refused", None, None, None, "refused: compares estimated (a) with measured (b) energy"),
        ("m4", "e", "welch_anova", None, None, 0.001, ""), ("m4", "e", "games_howell", "b", "a", 0.30, ""),
        ("m5", "e", "welch_anova", None, None, 0.001, ""), ("m5", "e", "games_howell", "a", "b", 0.01, ""),
    )
    med = pd.DataFrame({"model": ["m1", "m1", "m5", "m5"], "config": ["a", "b", "a", "b"], "e": [1.0, 2.0, 3.0, 2.0]})
    res = S.pair(stats, med, ["m1", "m2", "m3", "m4", "m5", "m6"], "e", "a", "b", 0.05)
    assert res.significant == ["m1"] and res.not_significant == ["m2", "m4"] and res.reversed == ["m5"]
    assert res.not_tested == {"m3": "measured vs estimated energy: refused", "m6": "fewer than 3 runs"}
    text = S.phrase(res, "b", 0.05, "estimated energy")
    assert "significantly lower estimated energy than b in 1 of 4 tested models (not in m2, m4)" in text
    assert "HIGHER than b in m5" in text and "2 of 6 models not tested" in text
    assert "was not tested (fewer than 3 runs)" in S.phrase(S.pair(stats, med, ["m9"], "e", "a", "b", 0.05), "b",
                                                             0.05, "x")


def test_verdicts_say_what_the_tests_found(tmp_path):
    # size 1: ov-cpu beats onnx-cpu by 0.1 W (within the repetitions' spread): not significant;
    # size 3: ov-cpu beats onnx-cpu by 10 W: significant. All CPU energy estimated.
    watts = {("codeparrot-small", 1): {"torch-cpu": 40.0, "onnx-cpu": 25.0, "ov-cpu": 24.9},
             ("phi2", 3): {"torch-cpu": 40.0, "onnx-cpu": 30.0, "ov-cpu": 20.0}}
    cells = {(m, c): {"size_category": cat, "cpu_busy_w": w, "cpu_estimated": True}
             for (m, cat), cw in watts.items() for c, w in cw.items()}
    write_cells(tmp_path / "results", cells, reps=5)
    out = tmp_path / "out"
    assert main(["--results", str(tmp_path / "results"), "--out", str(out), "--quiet", "--jobs", "1",
                 "--no-figures"]) == 0
    for units, _ in (parse_md((out / "report.md").read_text()), parse_html((out / "report.html").read_text())):
        cat1 = next(u for u in units if u.startswith("Size category 1"))
        cat3 = next(u for u in units if u.startswith("Size category 3"))
        assert "ov-cpu needed the least estimated global energy" in cat1
        assert "NOT significantly lower estimated global energy (CPU + GPU) than onnx-cpu in the 1 tested model" in cat1
        assert "ov-cpu needed the least estimated global energy" in cat3
        assert "significantly lower estimated global energy (CPU + GPU) than onnx-cpu in the 1 tested model" in cat3
        assert "NOT" not in cat3.split("; **")[0]
        winners = next(u for u in units if u.startswith("Per model, the configuration"))
        assert "lower estimated global energy (CPU + GPU) than the runner-up's is significant" in winners
        assert "in 1 of 2 tested models (phi2)" in winners


def test_usage_verdict_says_whether_highest_and_lowest_differ(tmp_path):
    recs = [{"model": m, "config": c, "rep": r, "time_s": 10.0 + r / 10, "cpu_usage_pct": u + (-1, 0, 1.2)[r - 1],
             "ram_usage_pct": 30.0 + (-1, 0, 1.2)[r - 1] + (0.2 if c == "onnx-cpu" else 0.0)}
            for m in ("codeparrot-small", "phi2")
            for c, u in (("torch-cpu", 90.0), ("onnx-cpu", 40.0), ("ov-cpu", 60.0)) for r in (1, 2, 3)]
    pd.DataFrame(recs).to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "out"
    assert main(["--table", str(tmp_path / "t.csv"), "--out", str(out), "--quiet", "--no-figures"]) == 0
    units, _ = parse_md((out / "report.md").read_text())
    cpu = next(u for u in units if u.startswith("CPU usage: highest"))
    assert "onnx-cpu vs torch-cpu: significantly lower CPU usage than torch-cpu in all 2 tested models" in cpu
    ram = next(u for u in units if u.startswith("RAM usage: highest"))
    assert "torch-cpu vs onnx-cpu: NOT significantly lower RAM usage than onnx-cpu" in ram  # 0.2 points apart
