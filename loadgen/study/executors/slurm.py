"""The Slurm executor: each cell attempt is one ``sbatch --exclusive`` job (loadgen/study/job.py).

The coordinator (this module, under the study's lock) submits, watches with ``squeue`` and reads the
run folders; there is no accounting database (no ``sacct``), so state comes from the queue and the
study folder, which the nodes share:

- ``slurm/jobs.jsonl`` records every submission (cell, attempt, job id) as it is made. Job names are
  ``ws.<study>.<position>.<attempt>``, so a coordinator killed between ``sbatch`` and that line still
  finds its job in the queue: a resume never submits a cell that is pending or running.
- A job that left the queue is judged by its run folder (run.json names the job id): complete, failed
  (retried up to ``retries``), or cut off (SIGKILL after KillWait, node failure: marked failed/abandoned
  here with its rows kept, and retried). A job that ended before making a run folder is a failed attempt.
- Blocking on hardware: the cells of one (repetition, model) go to the node where its first run went
  (``--nodelist``); the others of that group wait until that node is known. A drained node's pending
  cells wait for it; none is lost.
- Ctrl-C / SIGTERM stops the coordinator, not the jobs (they finish and are picked up by the next
  start), unless ``--cancel-on-exit``; either way it says which jobs.
"""

from __future__ import annotations

import collections
import json
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from loadgen.runfolder import MANIFEST
from loadgen.study.plan import Cell, Checked, load_or_create_plan
from loadgen.study.spec import SlurmOptions, StudyError
from loadgen.study.state import RUNS_DIR, abandon, reconcile
from loadgen.study.summary import summary_text, write_summary

SLURM_DIR = "slurm"
JOBS_FILE = "jobs.jsonl"
LIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "RESIZING", "REQUEUED",
               "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}
ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Job:
    job_id: str
    name: str
    state: str
    node: str  # "" while pending
    reason: str


def job_name(study: str, position: int, attempt: int) -> str:
    return f"ws.{study}.{position}.{attempt}"


def parse_name(name: str, study: str) -> tuple[int, int] | None:
    prefix = f"ws.{study}."
    if not name.startswith(prefix):
        return None
    try:
        pos, attempt = name[len(prefix):].split(".")
        return int(pos), int(attempt)
    except ValueError:
        return None


def require_slurm() -> None:
    missing = [c for c in ("sbatch", "squeue", "scancel") if shutil.which(c) is None]
    if missing:
        raise StudyError(f"--executor slurm: no {', '.join(missing)} on PATH (a Slurm client; a test cluster: "
                         "scripts/slurm/start-cluster.sh)")
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise StudyError(f"--executor slurm: squeue fails ({out.stderr.strip()}); is slurmctld up?")


def queue(study: str) -> dict[str, Job]:
    """This study's jobs still in Slurm's queue (pending, running, completing), by job id."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%j|%T|%N|%r"], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"squeue failed: {out.stderr.strip()}")
    jobs = {}
    for line in out.stdout.splitlines():
        job_id, name, state, node, reason = (line.split("|", 4) + [""] * 5)[:5]
        if parse_name(name, study) and state in LIVE_STATES:
            jobs[job_id] = Job(job_id, name, state, node if state != "PENDING" else "", reason)
    return jobs


def read_jobs(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a line cut off as it was written: the queue still knows that job (its name)
    return records


def append_job(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()


def runs_by_job(study_dir: Path) -> dict[str, tuple[Path, dict]]:
    """Run folders that a Slurm job made, by job id."""
    found = {}
    runs = study_dir / RUNS_DIR
    for d in sorted(runs.iterdir()) if runs.is_dir() else []:
        try:
            m = json.loads((d / MANIFEST).read_text())
        except (OSError, ValueError):
            continue
        job_id = ((m.get("study") or {}).get("slurm") or {}).get("job_id")
        if job_id:
            found[str(job_id)] = (d, m)
    return found


def sbatch_argv(chk: Checked, opts: SlurmOptions, spec_path: Path, cell: Cell, position: int, attempt: int,
                node: str | None) -> list[str]:
    name = job_name(chk.spec.name, position, attempt)
    log = chk.study_dir / SLURM_DIR / f"{name}.%j.log"
    argv = ["sbatch", "--parsable", "--exclusive", f"--job-name={name}", f"--chdir={ROOT}", f"--output={log}",
            "--export=ALL"]
    if opts.partition:
        argv.append(f"--partition={opts.partition}")
    if opts.account:
        argv.append(f"--account={opts.account}")
    if opts.time_limit:
        argv.append(f"--time={opts.time_limit}")
    if cell.config.endswith("-cuda"):
        argv.append(f"--gpus={opts.gpus_per_job}")
    if node:
        argv.append(f"--nodelist={node}")
    argv += opts.sbatch_options
    job = [sys.executable, "-m", "loadgen.study.job", str(spec_path.resolve()), "--results",
           str(chk.study_dir.parent), "--position", str(position), "--attempt", str(attempt)]
    return argv + ["--wrap", "exec " + shlex.join(job)]


def cut_off(job_id: str) -> str:
    return (f"abandoned: Slurm job {job_id} ended during this run without writing it (SIGKILL after KillWait, "
            "node failure or a killed job); found by the coordinator; the cell runs again")


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
    failed_no_run = collections.Counter()  # jobs that ended before making a run folder: failed attempts
    for r in records:
        if r["job_id"] not in live and r["job_id"] not in by_job:
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
                    continue
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
            ended = [j for j in inflight if j not in live]
            if not ended:
                continue
            by_job = runs_by_job(chk.study_dir)
            for job_id in ended:
                c, attempt = inflight.pop(job_id)
                st = cells[c]
                if job_id not in by_job:
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
                    elif outcome == "failed" and not m.get("abandoned"):
                        st.failed.append(d.name)
                    else:
                        st.other.append(d.name)
                    st.last_error = error if outcome != "complete" else st.last_error
                print(f"job {job_id} ({c.label}, attempt {attempt}): {outcome}"
                      f"{': ' + error.splitlines()[0] if error else ''}", flush=True)
                if outcome == "complete":
                    continue
                abandoned = job_id in by_job and by_job[job_id][1].get("abandoned")
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
