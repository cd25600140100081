"""The local executor: every cell in turn on this machine, in the plan's order, retries at the end."""

from __future__ import annotations

import collections
import json
import signal
import sys
import time

from loadgen.preflight import PreflightError, check_results
from loadgen.progress import Progress
from loadgen.runfolder import MANIFEST
from loadgen.study.plan import Cell, Checked, load_or_create_plan
from loadgen.study.cellrun import cell_run_plan, study_sampler
from loadgen.study.state import RUNS_DIR, reconcile
from loadgen.study.summary import summary_text, write_summary


def rest(seconds: float, progress: Progress) -> None:
    """Really wait (the service is stopped, the machine settles), redrawing the progress line."""
    progress.set_phase("rest")
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(0.5, left))
        progress.draw()


def run_study(chk: Checked, need_bytes: int, retry_failed: bool = False) -> int:
    from loadgen.hostinfo import host_info, software_versions
    from loadgen.protocol import RunInterrupted, run_once

    spec, p = chk.spec, chk.spec.protocol
    plan = load_or_create_plan(chk)
    order = [Cell(c["model"], c["config"], int(c["rep"])) for c in plan["order"]]
    position = {c: i for i, c in enumerate(order, 1)}
    cells, notes = reconcile(chk.study_dir, spec.name)
    fresh = {c: 1 + spec.retries for c in order}  # attempts allowed this time, per cell
    for c in order:
        if c in cells and not retry_failed:
            fresh[c] = 1 + spec.retries - len(cells[c].failed)

    queue = collections.deque(c for c in order if not (cells.get(c) and cells[c].complete) and fresh[c] > 0)
    done_before = sum(1 for c in order if cells.get(c) and cells[c].complete)
    print(f"study {spec.name}: {len(order)} cells, {done_before} complete, {len(queue)} to run now; "
          f"order seed {plan['seed']}; runner {chk.runner} ({chk.runner_reason})", flush=True)
    print(f"folder {chk.study_dir}", flush=True)
    for n in notes:
        print(f"resume: {n}", flush=True)

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, on_sigterm)
    sampler = study_sampler(chk)
    host, software = host_info(), software_versions()
    progress = Progress(len(queue), warmup_s=p.warmup_s, cooldown_s=p.cooldown_s, prompts=chk.prompts.count,
                        rest_s=p.rest_s)
    interrupted, stop_reason, started_now = False, None, 0
    try:
        while queue:
            cell = queue.popleft()
            if started_now:  # the first run was checked before anything started (main)
                if p.rest_s:
                    rest(p.rest_s, progress)
                try:
                    check_results(chk.study_dir, need_bytes)
                except PreflightError as exc:
                    stop_reason = str(exc)
                    break
            started_now += 1
            st = cells[cell]
            attempt = st.attempts + 1
            progress.start_run(started_now, f"{cell.label} (cell {position[cell]}/{len(order)}, attempt {attempt})")
            run_plan = cell_run_plan(chk, plan, cell, position[cell], len(order), attempt)
            try:
                run_dir = run_once(run_plan, sampler=sampler, progress=progress, host=host, software=software)
            except RunInterrupted as exc:
                st.other.append(exc.run_dir.name)
                raise
            m = json.loads((run_dir / MANIFEST).read_text())
            if m["status"] == "complete":
                st.complete.append(run_dir.name)
            else:
                st.failed.append(run_dir.name)
                st.last_error = m.get("error")
                fresh[cell] -= 1
                if fresh[cell] > 0:
                    queue.append(cell)  # retried after the others, not back to back
                    progress.total_runs += 1
                    progress.message(f"  {cell.label} will be retried ({fresh[cell]} attempt(s) left)")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close()
        signal.signal(signal.SIGTERM, old_term)
    text = summary_text(plan, cells, order, fresh, stop_reason, started_now, chk.study_dir)
    write_summary(chk.study_dir, text)
    print("\n" + text)
    if interrupted:
        print("interrupted: run the same command again to continue (make study SPEC=...)", file=sys.stderr)
        return 130
    complete = all(cells.get(c) and cells[c].complete for c in order)
    return 0 if complete else 1
