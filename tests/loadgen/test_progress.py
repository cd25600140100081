"""The progress line's ETA: idle windows and rests exactly, runs left at the mean of those done."""

from __future__ import annotations

import io

import pytest

from loadgen.progress import Progress


def progress(total: int, rest_s: float = 0.0) -> Progress:
    return Progress(total, warmup_s=10, cooldown_s=20, prompts=100, rest_s=rest_s, stream=io.StringIO(), tty=False)


def test_eta_before_anything_is_known_is_a_lower_bound():
    p = progress(3, rest_s=5)
    p.start_run(1, "a")
    p.set_phase("prepare")
    left, known = p.eta()
    assert not known
    assert left >= 10 + 20 + 2 * (10 + 20) + 2 * 5  # idle windows of every run and the rests between them


def test_eta_counts_runs_left_at_the_mean_duration_and_each_rest(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("loadgen.progress.time.monotonic", lambda: clock[0])
    p = progress(3, rest_s=7)
    p.start_run(1, "a")
    p.set_phase("inference")
    p.requests(100, 0.5)
    clock[0] += 60
    p.end_run("complete")  # one run done: 60 s
    p.set_phase("rest")
    clock[0] += 2
    left, known = p.eta()
    assert known
    assert left == pytest.approx((7 - 2) + 7 + 2 * 60)  # this rest, the one before run 3, two runs
    p.start_run(2, "b")
    p.set_phase("idle_after")
    left, _ = p.eta()
    assert left == pytest.approx(20 + 7 + 60)  # this run's idle after, one rest, one run
    assert "[run 2/3] b | idle_after" in p.line() and "ETA" in p.line()


def test_prepare_shows_its_own_step_and_eta_and_logs_only_new_kinds_of_step(tmp_path):
    """A fresh machine's first bench builds tiny in prepare: the line says so (with the build's ETA)
    instead of a bare 'prepare 0:00'; off a terminal one line per kind of step, not per training step."""
    import io

    from loadgen.protocol import last_step

    log = tmp_path / "prepare.log"
    log.write_text("old run's line\n")
    offset = log.stat().st_size
    assert last_step(log, offset) is None
    log.write_text(log.read_text() + "building the 'tiny' model into /c (once, about a minute)\n"
                   "  tiny: training step 12/300  loss 5.100  ETA   80s\n")
    assert last_step(log, offset) == "tiny: training step 12/300  loss 5.100  ETA   80s"
    out = io.StringIO()
    p = Progress(1, warmup_s=1, cooldown_s=1, prompts=4, stream=out, tty=False)
    p.start_run(1, "onnx-cpu tiny r1/1")
    p.set_phase("prepare")
    for step in range(12, 300, 12):
        p.step(f"  tiny: training step {step}/300  loss 5.100  ETA {80 - step // 4:4d}s")
    assert "(tiny: training step 288/300 loss 5.100 ETA 8s)" in p.line()
    p.step("exporting tiny to ONNX (with KV cache) into /c/a")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, lines  # the phase, the first training step, the export
    assert "prepare 0:00 (tiny: training step 12/300" in lines[1] and "exporting tiny to ONNX" in lines[2]
    p.set_phase("load")
    assert "(" not in p.line().split("|")[1]  # a new phase starts without the old step


def test_a_run_that_replays_fewer_prompts_than_its_set_says_so_and_the_next_starts_afresh():
    """humaneval skips the prompts that do not fit the context: the line counts the ones replayed and
    says how many of the set were skipped; the next run (another model) starts from the whole set."""
    stream = io.StringIO()
    p = Progress(2, warmup_s=0, cooldown_s=0, prompts=164, stream=stream, tty=False)
    p.start_run(1, "torch-cpu tiny")
    p.replaying(161, 3)
    p.set_phase("inference")
    p.requests(161, 0.1)
    assert "161/161 prompts (3 of 164 skipped: too long)" in p.line()
    p.end_run("complete")
    p.start_run(2, "onnx-cpu tiny")
    p.set_phase("inference")
    p.requests(10, 0.1)
    assert "10/164 prompts |" in p.line() and "skipped" not in p.line()
