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
