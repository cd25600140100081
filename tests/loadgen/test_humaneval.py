"""The humaneval workload: whole prompts, the context rule (skipped and counted, never truncated),
stop sequences sent to the service (four, its limit) with the post-hoc cut as a safety net, and a real
bench run on tiny scored in a sandbox after the run."""

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


def test_the_sent_stops_fit_the_services_limit_and_the_rest_is_cut_post_hoc():
    from services.inference.watcher import MAX_STOP_SEQUENCES

    assert len(humaneval.SENT_STOPS) <= MAX_STOP_SEQUENCES
    assert set(humaneval.SENT_STOPS) | set(humaneval.POST_HOC_STOPS) == set(humaneval.STOP_SEQUENCES)
    assert humaneval.POST_HOC_STOPS == ("\nclass",) and not set(humaneval.SENT_STOPS) & set(humaneval.POST_HOC_STOPS)


def test_stop_cuts_say_which_cut_applied():
    outputs = ["    return 1\n",                      # whole: the service stopped (or EOS, or the limit)
               "    return 1\nclass A:\n    pass",     # the unsent stop: cut post hoc, by design
               "    return 1\n# trailing",            # a sent stop still there: the service missed it
               "    return 1\nclass A:\ndef g(): pass"]  # both: the first one decides (post hoc)
    cuts = humaneval.stop_cuts(outputs)
    assert cuts["completions"] == {"none": 1, "post_hoc": 2, "safety_net": 1}
    assert cuts["sent"] == list(humaneval.SENT_STOPS) and cuts["post_hoc_stops"] == ["\nclass"]
    # a run made before the service had stop sent nothing: every cut was post hoc
    assert humaneval.stop_cuts(outputs, sent=())["completions"] == {"none": 1, "post_hoc": 3, "safety_net": 0}


def test_stop_sent_to_the_service_ends_generation_and_scores_the_same_text(start_server):
    """Equal work: with the stops sent, the service ends at the stop string (fewer tokens, finish_reason
    stop) and the text scored is the one the post-hoc cut alone gives. HumanEval/40 and /43 are where
    tiny writes ``\ndef`` after a few tokens (it would otherwise run to the limit)."""
    server = start_server("torch-cpu")
    prompts = {p.task_id: p.text for p in HUMANEVAL.items}
    stopped = 0
    for task in ("HumanEval/40", "HumanEval/43", "HumanEval/0", "HumanEval/2"):
        body = {"prompt": prompts[task], "max_new_tokens": 96}
        plain = server.client.post("/v1/generate", json=body).json()
        sent = server.client.post("/v1/generate", json={**body, "stop": list(humaneval.SENT_STOPS)}).json()
        assert humaneval.cut_at_stop(sent["text"]) == humaneval.cut_at_stop(plain["text"]), task
        assert sent["completion_tokens"] <= plain["completion_tokens"]
        assert sent["token_ids"] == plain["token_ids"][:len(sent["token_ids"])]  # the same tokens, fewer
        if sent["finish_reason"] == "stop":
            stopped += 1
            assert sent["completion_tokens"] < plain["completion_tokens"] == 96
            assert humaneval.first_stop(sent["text"]) is None  # the service cut it: nothing left to cut
    assert stopped >= 2


def test_the_bench_table_says_pass_at_1_and_energy_per_solved_task():
    from loadgen.summary import solved_lines

    base = {"config": "torch-cpu", "model": "tiny", "rep": 1, "energy_global_j": 300.0, "energy_estimated": True,
            "inference_s": 60.0}
    scoring = {"problems": 164, "solved": 3, "isolation": {"isolation": "docker"}, "scoring_s": 95.2, "unsafe": False}
    none = {**scoring, "solved": 0}
    lines = solved_lines([{**base, "scoring": scoring}, {**base, "config": "onnx-cpu", "scoring": none},
                          {**base, "config": "ov-cpu", "scoring": {"error": "SandboxUnavailable: no docker"}},
                          {**base, "config": "jit-cpu", "scoring": None}])
    assert lines[0] == ("- torch-cpu tiny r1: pass@1 1.8 % (3/164; scored in docker, 95 s, after the run); energy per "
                        "solved task 100.0 J (ESTIMATED), time per solved task 20.0 s")
    assert lines[1].endswith("energy per solved task undefined: nothing solved") and "0.0 % (0/164" in lines[1]
    assert lines[2] == "- ov-cpu tiny r1: not scored: SandboxUnavailable: no docker" and len(lines) == 3


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
    assert m["workload"]["skipped_count"] == 0 and m["workload"]["stop_sent"] == list(humaneval.SENT_STOPS)
    assert m["generation"]["stop"] == list(humaneval.SENT_STOPS)
    # the warm-up covered the prompts the run replayed (its own file), not the paper prompts
    warm = m["service"]["warmup"]
    assert warm["prompts"] == str(run / "prompts-replayed.jsonl") and len(warm["prompt_lengths"]) > 100
    s = m["scoring"]
    assert sum(s["stop"]["completions"].values()) == 164 and s["stop"]["completions"]["safety_net"] == 0
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
