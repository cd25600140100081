"""The bench's progress: one status line (run i/N, config, phase, prompts done, ETA).

On a terminal the line is redrawn in place; elsewhere (CI, a log file, tests) a line is printed
at each phase change and every quarter of the prompts, so logs stay short. The ETA is what is
known: the idle windows exactly, the prompts left at the mean latency so far, the runs left at
the mean length of the runs already done; before any of that is known it says ``≥``.

Listeners (``listeners=[...]``, e.g. loadgen/bench_exporter.py) get the same events: ``set_phase(phase)``,
``requests(done)`` and ``set_eta(seconds)`` at every redraw, so the terminal and Prometheus agree.
"""

from __future__ import annotations

import re
import sys
import time
from statistics import mean


def hms(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    def __init__(self, total_runs: int, *, warmup_s: float, cooldown_s: float, prompts: int,
                 rest_s: float = 0.0, stream=None, tty: bool | None = None, listeners=()) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.total_runs, self.warmup_s, self.cooldown_s, self.prompts = total_runs, warmup_s, cooldown_s, prompts
        self.set_size = prompts  # the prompt set's size; a run may replay fewer (humaneval: too long, skipped)
        self.skipped = 0
        self.rest_s = rest_s  # the wait between two runs (a study's rest), not part of a run
        self.run_i = 0
        self.label = ""
        self.phase = "-"
        self.phase_t0 = time.monotonic()
        self.done = 0
        self.latency: float | None = None
        self.run_durations: list[float] = []
        self.load_durations: list[float] = []
        self.latencies: list[float] = []
        self.run_t0 = time.monotonic()
        self._last_quarter = -1
        self._last_draw = 0.0
        self._width = 0
        self.listeners = list(listeners)
        self.step_text = ""  # the current phase's own step (prepare: the model build or export, with its ETA)

    def _tell(self, event: str, *args) -> None:
        for listener in self.listeners:
            getattr(listener, event)(*args)

    # -- events from the protocol
    def start_run(self, i: int, label: str) -> None:
        self.run_i, self.label, self.done, self.latency = i, label, 0, None
        self.prompts, self.skipped = self.set_size, 0
        self.run_t0 = self.phase_t0 = time.monotonic()
        self._last_quarter = -1

    def set_phase(self, phase: str) -> None:
        now = time.monotonic()
        if self.phase == "load" and phase != "load":
            self.load_durations.append(now - self.phase_t0)
        self.phase, self.phase_t0, self.step_text = phase, now, ""
        self._tell("set_phase", phase)
        self.draw(force=True, newline=not self.tty)

    def step(self, text: str) -> None:
        """The phase's own progress, e.g. prepare's ``tiny: training step 120/300 ... ETA 40s``. Off a
        terminal a line is printed only when the kind of step changes (not at every training step)."""
        text = " ".join(text.split())[:80]
        if text == self.step_text:
            return
        kind = re.split(r"\d", text, maxsplit=1)[0]
        new_kind = kind != re.split(r"\d", self.step_text, maxsplit=1)[0]
        self.step_text = text
        self.draw(force=new_kind, newline=new_kind and not self.tty)

    def replaying(self, count: int, skipped: int) -> None:
        """This run replays ``count`` prompts of the set, ``skipped`` left out before it (humaneval: a
        prompt that does not fit the model's context): the line shows ``n/count`` and the skipped ones."""
        self.prompts, self.skipped = count, skipped

    def requests(self, done: int, mean_latency: float | None) -> None:
        self.done, self.latency = done, mean_latency
        self._tell("requests", done)
        quarter = done * 4 // max(1, self.prompts)
        if not self.tty and quarter != self._last_quarter and done:
            self._last_quarter = quarter
            self.draw(force=True, newline=True)
        else:
            self.draw()

    def end_run(self, status: str) -> None:
        self.run_durations.append(time.monotonic() - self.run_t0)
        if self.latency is not None:
            self.latencies.append(self.latency)
        self.message(f"[run {self.run_i}/{self.total_runs}] {self.label}: {status} "
                     f"({hms(self.run_durations[-1])})")

    def message(self, text: str) -> None:
        """A line of its own (above the status line on a terminal)."""
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(text + "\n")
        self.stream.flush()

    # -- ETA
    def eta(self) -> tuple[float, bool]:
        """(seconds left in the whole bench, whether that is exact-ish rather than a lower bound)."""
        elapsed = time.monotonic() - self.phase_t0
        lat = self.latency if self.latency is not None else (mean(self.latencies) if self.latencies else None)
        known = lat is not None
        infer = (self.prompts - (self.done if self.phase == "inference" else 0)) * (lat or 0)
        load = mean(self.load_durations) if self.load_durations else 0.0
        known &= bool(self.load_durations) or self.phase not in ("prepare", "load")
        left = {
            "prepare": load + self.warmup_s + infer + self.cooldown_s,
            "load": max(0.0, load - elapsed) + self.warmup_s + infer + self.cooldown_s,
            "idle_before": max(0.0, self.warmup_s - elapsed) + infer + self.cooldown_s,
            "inference": infer + self.cooldown_s,
            "idle_after": max(0.0, self.cooldown_s - elapsed),
        }.get(self.phase, 0.0)
        runs_left = self.total_runs - self.run_i
        if self.phase == "rest":  # between run run_i and the next: this rest, then one before each later run
            left = max(0.0, self.rest_s - elapsed) + max(0, runs_left - 1) * self.rest_s
        else:
            left += runs_left * self.rest_s
        if runs_left:
            if self.run_durations:
                left += runs_left * mean(self.run_durations)
            else:
                left += runs_left * (load + self.warmup_s + self.prompts * (lat or 0) + self.cooldown_s)
                known = False
        return left, known

    def line(self) -> str:
        left, known = self.eta()
        prompts = f" {self.done}/{self.prompts} prompts" if self.phase in ("inference", "idle_after") else ""
        if prompts and self.skipped:
            prompts += f" ({self.skipped} of {self.prompts + self.skipped} skipped: too long)"
        phase_t = f" {hms(time.monotonic() - self.phase_t0)}"
        step = f" ({self.step_text})" if self.step_text else ""
        return (f"[run {self.run_i}/{self.total_runs}] {self.label} | {self.phase}{phase_t}{step}{prompts} | "
                f"ETA {'' if known else '≥'}{hms(left)}")

    def draw(self, force: bool = False, newline: bool = False) -> None:
        now = time.monotonic()
        if not force and (not self.tty or now - self._last_draw < 0.5):
            return
        self._last_draw = now
        if self.listeners:
            self._tell("set_eta", self.eta()[0])
        text = self.line()
        if self.tty:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self._width = len(text)
        elif newline:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._width:
            self.stream.write("\n")
            self._width = 0
            self.stream.flush()
