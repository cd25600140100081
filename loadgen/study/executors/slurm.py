"""The Slurm executor: each cell attempt is one ``sbatch --exclusive`` job (loadgen/study/job.py).

The coordinator (this module, under the study's lock) submits, watches with ``squeue`` and reads the
run folders; there is no accounting database (no ``sacct``), so state comes from the queue and the
study folder, which the nodes share:

- ``slurm/jobs.jsonl`` records every submission (cell, attempt, job id) as it is made. Job names are
  ``ws.<study>.<position>.<attempt>``, so a coordinator killed between ``sbatch`` and that line still
  finds its job in the queue: a resume never submits a cell that is pending or running.
- A job that left the queue is judged by its run folder (run.json names the job id): complete, failed
  (retried up to ``retries``), or cut off (SIGKILL after KillWait, node failure: marked failed/abandoned
  here with its rows kept, and retried, not counted against ``retries``). A job that ran but ended before
  making a run folder is a failed attempt; one stopped before its run started costs nothing.
- Order: cells are submitted strictly in the plan's order (a later cell never jumps ahead in the queue);
  each job rests ``protocol.rest_s`` on its node before its run, as the local executor rests between runs.
- Blocking on hardware: the cells of one (repetition, model) go to the node where its first run went
  (``--nodelist``), so one block is measured on one host fingerprint; the others of that group, and
  every cell after them, wait until that node is known. A drained node's pending cells wait for it;
  none is lost. A block whose runs still differ in fingerprint is reported (and analysed apart).
- Monitoring: the running jobs' exporters are kept in a Prometheus file_sd file, labelled ``node``
  (loadgen/study/targets.py).
- Ctrl-C / SIGTERM stops the coordinator, not the jobs (they finish and are picked up by the next
  start), unless ``--cancel-on-exit``; either way it says which jobs.
"""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time
from pathlib import Path

from loadgen.study.executors.slurm_jobs import (JOBS_FILE, SLURM_DIR, append_job, cut_off, job_name, job_ran,
                                                other_hardware, parse_name, queue, read_jobs, require_slurm,
                                                runs_by_job, sbatch_argv)
from loadgen.study.plan import Cell, Checked, load_or_create_plan
from loadgen.study.spec import SlurmOptions
from loadgen.study.state import abandon, reconcile
from loadgen.study.summary import summary_text, write_summary
from loadgen.study.targets import NODE_LABEL, FileSD, stack_file_sd


def run_study(chk: Checked, spec_path: Path, retry_failed: bool = False, cancel_on_exit: bool = False) -> int:
    require_slurm()
    spec = chk.spec
    opts = spec.slurm or SlurmOptions()
    plan = load_or_create_plan(chk)
    order = [Cell(c["model"], c["config"], int(c["rep"])) for c in plan["order"]]
    position = {c: i for i, c in enumerate(order, 1)}
    jobs_path = chk.study_dir / SLURM_DIR / JOBS_FILE
    (chk.study_dir / SLURM_DIR).mkdir(parents=True, exist_ok=True)

    live = queue(spec.name)
    records = read_jobs(jobs_path)
    known = {r["job_id"] for r in records}
    for j in live.values():  # submitted by a coordinator killed before it could record the job
        if j.job_id not in known:
            pos, attempt = parse_name(j.name, spec.name)
            rec = {"job_id": j.job_id, "name": j.name, "position": pos, "attempt": attempt,
                   "cell": order[pos - 1].as_dict(), "submitted_at": None, "recovered": True}
            append_job(jobs_path, rec)
            records.append(rec)
    cells, notes = reconcile(chk.study_dir, spec.name, in_flight=lambda m: None if str(
        ((m.get("study") or {}).get("slurm") or {}).get("job_id")) in live else cut_off(
        str(((m.get("study") or {}).get("slurm") or {}).get("job_id"))))
    by_job = runs_by_job(chk.study_dir)
    failed_no_run = collections.Counter()  # jobs that ran but ended before making a run folder: failed attempts
    for r in records:
        if r["job_id"] not in live and r["job_id"] not in by_job and job_ran(chk.study_dir, r["job_id"]):
            failed_no_run[order[r["position"] - 1]] += 1
    inflight: dict[str, tuple[Cell, int]] = {j.job_id: (order[parse_name(j.name, spec.name)[0] - 1],
                                                        parse_name(j.name, spec.name)[1]) for j in live.values()}
    last_attempt = collections.Counter()
    for r in records:
        c = order[r["position"] - 1]
        last_attempt[c] = max(last_attempt[c], int(r["attempt"]))

    def failures(c: Cell) -> int:
        return (len(cells[c].failed) if c in cells else 0) + failed_no_run[c]

    budget = {c: 1 + spec.retries - (0 if retry_failed else failures(c)) for c in order}
    busy = {c for c, _ in inflight.values()}
    todo = collections.deque(c for c in order if not (cells.get(c) and cells[c].complete) and c not in busy
                             and budget[c] > 0)
    done_before = sum(1 for c in order if cells.get(c) and cells[c].complete)
    print(f"study {spec.name}: {len(order)} cells, {done_before} complete, {len(inflight)} in Slurm's queue, "
          f"{len(todo)} to submit; order seed {plan['seed']}; executor slurm; runner {chk.runner}", flush=True)
    print(f"folder {chk.study_dir}; jobs recorded in {jobs_path}", flush=True)
    for n in notes:
        print(f"resume: {n}", flush=True)
    for job_id, (c, a) in sorted(inflight.items()):
        print(f"resume: job {job_id} ({c.label}, attempt {a}) is {live[job_id].state.lower()}: not submitted again",
              flush=True)

    def group_node(c: Cell) -> tuple[bool, str | None]:
        """(may submit now, node to pin) for the cells of c's (repetition, model) block."""
        for d, m in by_job.values():
            mc = (m.get("study") or {}).get("cell") or {}
            if (mc.get("model"), mc.get("rep")) == (c.model, c.rep) and m.get("status") == "complete":
                return True, m["study"]["slurm"].get("node")
        for job_id, (ic, _) in inflight.items():
            if (ic.model, ic.rep) == (c.model, c.rep):
                node = live[job_id].node if job_id in live else ""
                return (True, node) if node else (False, None)
        return True, None

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    stack_sd, why = stack_file_sd(spec.name)
    file_sd = FileSD(chk.study_dir / SLURM_DIR, [stack_sd] if stack_sd else [])
    print(f"monitoring: the running jobs' exporters in {', '.join(map(str, file_sd.paths))} (file_sd, label "
          f"{NODE_LABEL}){'' if stack_sd else f'; {why}'}", flush=True)
    old_term = signal.signal(signal.SIGTERM, on_sigterm)
    submitted, interrupted, stop_reason = 0, False, None
    try:
        while todo or inflight:
            # submit what may go now, in the plan's order
            for c in list(todo):
                if opts.max_jobs and len(inflight) >= opts.max_jobs:
                    break
                ok, node = group_node(c)
                if not ok:
                    break  # strictly in the plan's order: a later cell never jumps ahead in Slurm's queue
                attempt = max(last_attempt[c], cells[c].attempts if c in cells else 0) + 1
                argv = sbatch_argv(chk, opts, spec_path, c, position[c], attempt, node)
                out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
                if out.returncode != 0:
                    stop_reason = f"sbatch refused {c.label}: {out.stderr.strip()}"
                    raise StopIteration
                job_id = out.stdout.strip().split(";")[0]
                append_job(jobs_path, {"job_id": job_id, "name": job_name(spec.name, position[c], attempt),
                                       "position": position[c], "attempt": attempt, "cell": c.as_dict(),
                                       "submitted_at": time.time(), "node": node, "sbatch": argv[:-2]})
                todo.remove(c)
                inflight[job_id] = (c, attempt)
                last_attempt[c] = attempt
                submitted += 1
                print(f"submitted {c.label} (cell {position[c]}/{len(order)}, attempt {attempt}) as job {job_id}"
                      f"{' on ' + node if node else ''}", flush=True)
            time.sleep(opts.poll_s)
            live = queue(spec.name)
            file_sd.update({j for j, job in live.items() if job.state in ("RUNNING", "COMPLETING")})
            ended = [j for j in inflight if j not in live]
            if not ended:
                continue
            by_job = runs_by_job(chk.study_dir)
            for job_id in ended:
                c, attempt = inflight.pop(job_id)
                st = cells[c]
                if job_id not in by_job and not job_ran(chk.study_dir, job_id):
                    outcome, error = "cancelled", f"job {job_id} was stopped before its run started (scancel?)"
                elif job_id not in by_job:
                    failed_no_run[c] += 1
                    outcome, error = "failed", f"job {job_id} ended without a run folder (see {SLURM_DIR}/*.{job_id}.log)"
                else:
                    d, m = by_job[job_id]
                    if m.get("status") == "running":
                        m = abandon(d, m, cut_off(job_id))
                        by_job[job_id] = (d, m)
                    outcome, error = m.get("status"), m.get("error")
                    if outcome == "complete":
                        st.complete.append(d.name)
                        other_hardware(by_job, m)
                    elif outcome == "failed" and not m.get("abandoned"):
                        st.failed.append(d.name)
                    else:
                        st.other.append(d.name)
                    st.last_error = error if outcome != "complete" else st.last_error
                print(f"job {job_id} ({c.label}, attempt {attempt}): {outcome}"
                      f"{': ' + error.splitlines()[0] if error else ''}", flush=True)
                if outcome == "complete":
                    continue
                abandoned = outcome == "cancelled" or (job_id in by_job and by_job[job_id][1].get("abandoned"))
                if not abandoned:
                    budget[c] -= 1
                    st.last_error = error
                if budget[c] > 0:
                    todo.append(c)
                    print(f"  {c.label} will be retried", flush=True)
    except KeyboardInterrupt:
        interrupted = True
    except StopIteration:
        pass
    finally:
        signal.signal(signal.SIGTERM, old_term)
    if not inflight or cancel_on_exit:
        file_sd.close()  # nothing of this study left to scrape (jobs left running keep their targets)
    if (interrupted or stop_reason) and inflight:
        listed = ", ".join(f"{j} ({c.label})" for j, (c, _) in sorted(inflight.items()))
        if cancel_on_exit:
            subprocess.run(["scancel", *inflight], capture_output=True, timeout=60)
            print(f"cancelled (--cancel-on-exit): {listed}", file=sys.stderr, flush=True)
        else:
            print(f"left running in Slurm (the next start picks them up; --cancel-on-exit cancels): {listed}",
                  file=sys.stderr, flush=True)
    text = summary_text(plan, cells, order, budget, stop_reason, submitted, chk.study_dir)
    write_summary(chk.study_dir, text)
    print("\n" + text)
    if interrupted:
        print("interrupted: run the same command again to continue (make study SPEC=... STUDY_ARGS=\"--executor "
              "slurm\")", file=sys.stderr)
        return 130
    return 0 if all(cells.get(c) and cells[c].complete for c in order) else 1
