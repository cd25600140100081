"""``python -m loadgen.study.job SPEC --position P --attempt N``: one cell attempt inside a Slurm job.

The coordinator (executors/slurm.py) submits this as the job's only command. It checks the spec on
this node (GPU, sensors, runner: a node that cannot serve the cell fails the attempt before any run
starts), reads the study's plan (the same seed and order; a changed spec is refused) and runs the
cell with the same run protocol as the local executor, its exporters on this node (advertised to the
coordinator's Prometheus file_sd while they serve: loadgen/study/targets.py). The Slurm job id,
node and partition join run.json's ``study`` entry. Slurm stops a job with SIGTERM (scancel, time
limit, node shutdown), then SIGKILL after KillWait: the run is then marked failed/abandoned, its rows
kept, and the coordinator retries the cell. exit status: 0 complete, 1 not, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

from loadgen.runfolder import MANIFEST


def slurm_env() -> dict:
    """Where this attempt runs, from the job's environment."""
    env = os.environ
    return {"job_id": env.get("SLURM_JOB_ID"), "node": env.get("SLURMD_NODENAME"),
            "partition": env.get("SLURM_JOB_PARTITION"), "cluster": env.get("SLURM_CLUSTER_NAME")}


def advertised(sampler, chk, job: dict):
    """The sampler, its exporters advertised to the coordinator's file_sd (loadgen/study/targets.py)."""
    from loadgen.study.executors.slurm_jobs import SLURM_DIR
    from loadgen.study.targets import NODE_LABEL, TARGETS_DIR, AdvertisedSampler, node_address

    if sampler is None or not job.get("job_id"):
        return sampler
    path = chk.study_dir / SLURM_DIR / TARGETS_DIR / f"{job['job_id']}.json"
    labels = {NODE_LABEL: job.get("node") or socket.gethostname(), "study": chk.spec.name,
              "slurm_job": job["job_id"]}
    return AdvertisedSampler(sampler, path, labels, node_address(os.environ.get("SLURM_SUBMIT_HOST")))


STOPPED_BEFORE_RUN = "stopped by Slurm before its run started: nothing recorded"  # the coordinator reads it


def killed_by_slurm(job: dict) -> str:
    return (f"abandoned: Slurm stopped job {job.get('job_id')} on {job.get('node')} during this run "
            "(scancel, time limit or node shutdown); the cell runs again")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadgen.study.job", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec")
    ap.add_argument("--results", help="parent folder of the study folder (as the coordinator was given)")
    ap.add_argument("--position", type=int, required=True, help="the cell's position in the plan's order (1-based)")
    ap.add_argument("--attempt", type=int, required=True)
    args = ap.parse_args(argv)

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return _attempt(args)
    except KeyboardInterrupt:  # before run_once made a run folder (after, it raises RunInterrupted)
        print(STOPPED_BEFORE_RUN, flush=True)
        return 1


def _attempt(args) -> int:
    from loadgen.study.cellrun import cell_run_plan, study_sampler
    from loadgen.study.plan import Cell, check
    from loadgen.study.spec import StudyError, load_spec
    from loadgen.study.state import abandon

    try:
        spec = load_spec(Path(args.spec))
        chk = check(spec, Path(args.spec), args.results)
        from loadgen.study.plan import STUDY_FILE, spec_digest

        plan = json.loads((chk.study_dir / STUDY_FILE).read_text())
        if plan.get("spec_sha256") != spec_digest(spec):
            raise StudyError(f"the spec changed since the study was planned ({chk.study_dir / STUDY_FILE})")
        order = [Cell(c["model"], c["config"], int(c["rep"])) for c in plan["order"]]
        if not 1 <= args.position <= len(order):
            raise StudyError(f"--position {args.position}: the plan has {len(order)} cells")
    except (StudyError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from loadgen.protocol import RunInterrupted, run_once

    cell = order[args.position - 1]
    job = slurm_env()
    listen = (spec.slurm.exporters_listen if spec.slurm else "0.0.0.0")
    print(f"slurm job {job['job_id']} on {job['node']}: {cell.label} (cell {args.position}/{len(order)}, "
          f"attempt {args.attempt})", flush=True)
    rest = spec.protocol.rest_s
    if rest:  # the local executor rests between runs; here each job rests first, on its exclusive node
        print(f"resting {rest:g} s before the run (protocol.rest_s: the node idles, nothing of ours running)",
              flush=True)
        time.sleep(rest)
    job["rest_before_s"] = rest
    run_plan = cell_run_plan(chk, plan, cell, args.position, len(order), args.attempt, extra={"slurm": job})
    try:
        run_dir = run_once(run_plan, sampler=advertised(study_sampler(chk, addr=listen), chk, job))
    except RunInterrupted as exc:
        m = json.loads((exc.run_dir / MANIFEST).read_text())
        abandon(exc.run_dir, m, killed_by_slurm(job))
        print(f"{exc.run_dir.name}: stopped by Slurm; marked failed (abandoned)", flush=True)
        return 1
    m = json.loads((run_dir / MANIFEST).read_text())
    print(f"{run_dir.name}: {m['status']}{': ' + m['error'] if m.get('error') else ''}", flush=True)
    return 0 if m["status"] == "complete" else 1


if __name__ == "__main__":
    sys.exit(main())
