"""The end-of-study report (``summary.md``), written whole."""

from __future__ import annotations

import contextlib
from pathlib import Path

from loadgen.study.plan import Cell
from loadgen.study.state import RUNS_DIR, CellState

SUMMARY_FILE = "summary.md"


def summary_text(plan: dict, cells: dict[Cell, CellState], order: list[Cell], attempts_left: dict[Cell, int],
                 stop_reason: str | None, attempts_now: int, study_dir: Path) -> str:
    """The end-of-study report: counts, the comparison table of complete runs, what failed, what is flagged."""
    from loadgen.summary import comparison_table, summarize

    done = [c for c in order if cells.get(c) and cells[c].complete]
    gave_up = [c for c in order if c not in done and attempts_left[c] <= 0]
    todo = [c for c in order if c not in done and c not in gave_up]
    retries = sum(len(cells[c].failed) for c in order if c in cells)
    runs = [summarize(study_dir / RUNS_DIR / cells[c].complete[0]) for c in done]
    spec = plan["spec"]
    lines = [
        f"# study {plan['name']}",
        "",
        f"{len(order)} cells = {len(spec['models'])} model(s) x {len(plan['configs'])} configuration(s) x "
        f"{spec['repetitions']} repetition(s); order seed {plan['seed']}{' (drawn)' if plan.get('seed_drawn') else ''}; "
        f"prompts {plan['prompts']['name']} ({plan['prompts']['count']})",
        f"complete {len(done)} | failed after retries {len(gave_up)} | to do {len(todo)} | "
        f"failed attempts {retries} | runs started this time {attempts_now}",
    ]
    if stop_reason:
        lines += ["", f"stopped: {stop_reason}"]
    if runs:
        lines += ["", comparison_table(runs)]
    if gave_up:
        lines += ["", "cells that failed after every retry:"]
        for c in gave_up:
            last = (cells[c].last_error or "no error recorded").splitlines()[0]
            lines.append(f"- {c.label}: {len(cells[c].failed)} failed attempt(s); last: {last}")
    flagged = [r for r in runs if r.get("flags")]
    if flagged:
        lines += ["", "flagged runs (read before trusting their numbers):"]
        lines += [f"- {r['run_id']}: {'; '.join(r['flags'])}" for r in flagged]
    if todo:
        lines += ["", f"{len(todo)} cell(s) still to do: run the same command again to continue"]
    return "\n".join(lines) + "\n"


def write_summary(study_dir: Path, text: str) -> None:
    with contextlib.suppress(OSError):  # a full disk must not hide the summary from the terminal
        tmp = study_dir / f".{SUMMARY_FILE}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(study_dir / SUMMARY_FILE)
