"""Slurm's side of the executor: job names, the queue (``squeue``), the ``sbatch`` command line, the
study's record of its submissions (``slurm/jobs.jsonl``) and what a job left behind (its run folder,
its log, its hardware). No accounting database is assumed: ``sacct`` is never called.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from loadgen.runfolder import MANIFEST
from loadgen.study.plan import Cell, Checked
from loadgen.study.spec import SlurmOptions, StudyError
from loadgen.study.state import RUNS_DIR
from services.inference.variants import split as split_variant

ROOT = Path(__file__).resolve().parents[3]
SLURM_DIR = "slurm"
JOBS_FILE = "jobs.jsonl"
LIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "RESIZING", "REQUEUED",
               "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}


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
    if split_variant(cell.config)[0].endswith("-cuda"):  # onnx-cuda@fp16 asks for its GPU too
        argv.append(f"--gpus={opts.gpus_per_job}")
    if node:
        argv.append(f"--nodelist={node}")
    argv += opts.sbatch_options
    job = [sys.executable, "-m", "loadgen.study.job", str(spec_path.resolve()), "--results",
           str(chk.study_dir.parent), "--position", str(position), "--attempt", str(attempt)]
    return argv + ["--wrap", "exec " + shlex.join(job)]


def fingerprint_of(m: dict) -> str | None:
    return ((m.get("host") or {}).get("fingerprint") or {}).get("sha256")


def other_hardware(by_job: dict, m: dict) -> None:
    """Say so when a (repetition, model) block's complete runs were measured on different hardware (a
    retry that could not go back to its block's node); the analysis analyses each fingerprint apart."""
    cell = (m.get("study") or {}).get("cell") or {}
    mine = fingerprint_of(m)
    others = {fingerprint_of(o) for _, o in by_job.values() if o.get("status") == "complete"
              and ((o.get("study") or {}).get("cell") or {}).get("model") == cell.get("model")
              and ((o.get("study") or {}).get("cell") or {}).get("rep") == cell.get("rep")} - {mine, None}
    if mine and others:
        print(f"warning: {cell.get('model')} r{cell.get('rep')}: run {m.get('run_id')} was measured on hardware "
              f"{mine[:12]}, others of its block on {', '.join(sorted(o[:12] for o in others))}; the analysis "
              "never compares them (each fingerprint apart)", flush=True)


def job_ran(study_dir: Path, job_id: str) -> bool:
    """Whether a job that left the queue without a run folder was an attempt: it started (Slurm creates
    its log as it starts) and was not stopped before its run began (job.py says so in its log)."""
    from loadgen.study.job import STOPPED_BEFORE_RUN

    for log in (study_dir / SLURM_DIR).glob(f"*.{job_id}.log"):
        try:
            return STOPPED_BEFORE_RUN not in log.read_text(errors="replace")
        except OSError:
            return True
    return False


def cut_off(job_id: str) -> str:
    return (f"abandoned: Slurm job {job_id} ended during this run without writing it (SIGKILL after KillWait, "
            "node failure or a killed job); found by the coordinator; the cell runs again")
