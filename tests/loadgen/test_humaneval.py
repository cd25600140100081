"""The humaneval workload: whole prompts, the context rule (skipped and counted, never truncated),
stop sequences applied post hoc, and a real bench run on tiny scored in a sandbox after the run."""

from __future__ import annotations

import csv
import json

import pytest

from loadgen import humaneval
from loadgen.prompts import load_prompts
from scoring.problems import problems
from tests.loadgen.conftest import QUICK, manifest, run_bench, run_dirs

HUMANEVAL = load_prompts("humaneval")


def test_the_set_is_the_164_whole_prompts_in_order():
    assert HUMANEVAL.count == 164
    for p, (task_id, problem) in zip(HUMANEVAL.items, problems().items()):
        assert (p.task_id, p.text) == (task_id, problem["prompt"])


def test_cut_at_the_first_stop_sequence():
    body = "    return x + 1\n"
    assert humaneval.cut_at_stop(body + "\ndef other():\n    pass\n") == body
    assert humaneval.cut_at_stop(body + "\n# a comment\nif x: pass") == body
    assert humaneval.cut_at_stop(body) == body
    assert humaneval.cut_at_stop("\nprint(1)") == ""


def test_prompts_that_do_not_fit_the_context_are_skipped_and_counted(tiny):
    fitted, entry = humaneval.fit_prompts(HUMANEVAL, tiny.path, max_new_tokens=192)
    assert entry["context_tokens"] == 512
    assert entry["skipped_count"] == len(entry["skipped"]) >= 1
    assert fitted.count + entry["skipped_count"] == 164 == entry["problems"]
    assert all(s["prompt_tokens"] + 192 > 512 for s in entry["skipped"])
    assert [p.index for p in fitted.items] == list(range(fitted.count))  # replay order, no gaps
    skipped = {s["task_id"] for s in entry["skipped"]}
    kept = {p.task_id: p.text for p in fitted.items}
    assert all(kept[t] == problems()[t]["prompt"] for t in kept) and not skipped & set(kept)  # never truncated
    _, none_skipped = humaneval.fit_prompts(HUMANEVAL, tiny.path, max_new_tokens=8)
    assert none_skipped["skipped_count"] == 0


def test_no_sandbox_stops_the_bench_before_anything_starts(tmp_path):
    r = run_bench("--config", "torch-cpu", "--prompts", "humaneval", *QUICK, "--results", str(tmp_path / "r"),
                  timeout=120, SCORE_ISOLATION="docker", DOCKER="/bin/false")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "SCORE_ISOLATION" in r.stderr and "To enable one" in r.stderr
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
    r = run_bench("--prompts", "humaneval", "--max-length", "300", *QUICK[:2], "--results", str(tmp_path / "r"))
    assert r.returncode == 2 and "--max-new-tokens" in r.stderr


@pytest.mark.slow
def test_a_humaneval_bench_run_is_scored_after_the_run(tmp_path, tiny):
    results = tmp_path / "results"
    r = run_bench("--config", "torch-cpu", "--prompts", "humaneval", *QUICK, "--results", str(results),
                  timeout=900, SCORE_ISOLATION="namespace")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (run,) = run_dirs(results)
    m = manifest(run)
    assert m["status"] == "complete" and m["workload"]["name"] == "humaneval"
    assert m["workload"]["skipped_count"] == 0 and m["workload"]["stop_applied"].startswith("post hoc")
    s = m["scoring"]
    assert s["problems"] == 164 and s["isolation"]["isolation"] == "namespace" and not s["unsafe"]
    assert s["solved"] + sum(s["failures"].values()) == 164
    # outside every measured window: the scoring began after the last phase ended
    last = max(ph["end"] for ph in m["phases"].values())
    outcomes = [json.loads(x) for x in (run / "scoring.jsonl").read_text().splitlines()]
    assert len(outcomes) == 164 and {o["task_id"] for o in outcomes} == set(problems())
    with open(run / "requests.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 164
    assert m["finished_at"] >= last

    from analysis.runs import read_run

    row = read_run(run).row
    assert row["workload"] == "humaneval" and row["problems"] == 164
    assert row["pass_at_1"] == pytest.approx(s["solved"] / 164)
    if row["solved"] == 0:   # tiny solves nothing with 8 tokens: undefined, said, no division by zero
        assert row["energy_per_solved_j"] is None and row["time_per_solved_s"] is None
        assert "no problem solved" in row["energy_notes"]
    else:
        assert row["energy_per_solved_j"] == pytest.approx(row["energy_global_j"] / row["solved"])
