"""``--executor slurm`` on a real Slurm cluster: each cell attempt its own job, and the faults a cluster
brings (scancel of a running cell, the coordinator SIGKILLed with jobs queued, a node drained mid-study).

Needs a cluster: ``scripts/slurm/start-cluster.sh`` (as root; .ci/run starts it and sets WATTSERVE_SLURM=1).
Without WATTSERVE_SLURM=1 and an answering ``sinfo`` every test here skips and says why. The studies are
small (tiny, 4 new tokens, 10 prompts, sub-second idle windows) so the whole file stays within minutes.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.loadgen.conftest import bench_env, recorded_rows
from tests.loadgen.test_study import Study, run_manifests, run_study, write_spec


def cluster_state() -> str | None:
    """None when a cluster answers; else why the tests skip."""
    if os.environ.get("WATTSERVE_SLURM") != "1":
        return "WATTSERVE_SLURM is not 1 (start a cluster: sudo scripts/slurm/start-cluster.sh; export WATTSERVE_SLURM=1)"
    if shutil.which("sinfo") is None:
        return "no sinfo on PATH (scripts/slurm/start-cluster.sh installs Slurm)"
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo does not answer ({exc})"
    if out.returncode != 0 or not out.stdout.strip():
        return f"sinfo does not answer: {(out.stderr or out.stdout).strip() or 'no node'}"
    return None


SKIP = cluster_state()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(SKIP is not None, reason=f"no Slurm cluster: {SKIP}")]


def node() -> str:
    return subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True, timeout=20,
                          check=True).stdout.split()[0]


def squeue(study: str) -> dict[str, tuple[str, str, str]]:
    """{job id: (name, state, reason)} of this study's jobs in the queue."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%j|%T|%r"], capture_output=True, text=True, timeout=20, check=True)
    jobs = {}
    for line in out.stdout.splitlines():
        job_id, name, state, reason = line.split("|", 3)
        if name.startswith(f"ws.{study}."):
            jobs[job_id] = (name, state, reason)
    return jobs


def wait(cond, what: str, timeout: float = 240, study: Study | None = None, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        if study is not None:
            assert study.proc.poll() is None, f"the coordinator exited before {what}:\n{study.output}"
        time.sleep(poll)
    raise TimeoutError(f"no {what} in {timeout} s" + (f":\n{study.output}" if study else ""))


@pytest.fixture
def spec_of(tmp_path, tiny):
    """write_spec for a small Slurm study: 10 prompts, 4 new tokens; no study in the queue when it ends."""
    prompts = tmp_path / "ten.jsonl"
    lines = (ROOT / "loadgen" / "prompts" / "paper-prompts.jsonl").read_text().splitlines()[:10]
    prompts.write_text("\n".join(lines) + "\n")
    names = []

    def make(name: str, **over) -> Path:
        names.append(name)
        protocol = {"prompts": str(prompts), "max_new_tokens": 4, **over.pop("protocol", {})}
        return write_spec(tmp_path, name=name, protocol=protocol, slurm={"poll_s": 0.5}, **over)

    yield make
    for name in names:  # a failed test leaves nothing queued for the next one
        left = list(squeue(name))
        if left:
            subprocess.run(["scancel", *left], capture_output=True, timeout=30)


def jobs_file(study_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (study_dir / "slurm" / "jobs.jsonl").read_text().splitlines()]


def slurm_study(spec: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return run_study(spec, "--executor", "slurm", *args, timeout=timeout)


def slurm_latency(job_id: str) -> str:
    """SubmitTime to StartTime of a job as Slurm records them (whole seconds; kept MinJobAge after the end)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=20)
    times = dict(kv.split("=", 1) for kv in out.stdout.split() if kv.startswith(("SubmitTime=", "StartTime=")))
    try:
        from datetime import datetime

        s = (datetime.fromisoformat(times["StartTime"]) - datetime.fromisoformat(times["SubmitTime"])).total_seconds()
    except (KeyError, ValueError):
        return "unknown (scontrol show job has no times)"
    return f"{s:.0f} s (Slurm's SubmitTime -> StartTime, whole seconds)"


def files_of(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}


def header(path: Path) -> list[str]:
    with open(path, newline="") as fh:
        return next(csv.reader(fh))


def test_a_study_through_slurm_each_cell_its_own_job_results_as_a_local_study(tmp_path, spec_of):
    spec = spec_of("sl", configs=["torch-cpu", "onnx-cpu"], repetitions=1)
    study_dir = tmp_path / "results" / "sl"
    t0 = time.monotonic()
    study = Study(spec, "--executor", "slurm")
    # while a job runs, its exporters serve on its node and are file_sd targets labelled node=<host>
    file_sd = study_dir / "slurm" / "file_sd.json"
    groups = wait(lambda: file_sd.is_file() and json.loads(file_sd.read_text() or "[]"), "file_sd target",
                  study=study, poll=0.1)
    host = node()
    assert {g["labels"]["node"] for g in groups} == {host}
    assert {g["labels"]["job"] for g in groups} >= {"host"} and all(g["labels"]["run_id"] for g in groups)
    assert all(g["labels"]["study"] == "sl" and g["labels"]["slurm_job"] for g in groups)
    addr = groups[0]["targets"][0]
    try:
        body = urllib.request.urlopen(f"http://{addr}/metrics", timeout=10).read().decode()
    except OSError as exc:  # the job may have ended between the read and the scrape: then its file is gone
        assert not any(g["targets"][0] == addr for g in json.loads(file_sd.read_text() or "[]")), exc
    else:
        assert "wattserve_" in body
    study.proc.wait(600)
    wall_s = time.monotonic() - t0
    assert study.proc.returncode == 0, study.output
    assert json.loads(file_sd.read_text()) == []  # nothing of the study left to scrape

    plan = json.loads((study_dir / "study.json").read_text())
    order = [(c["model"], c["config"], c["rep"]) for c in plan["order"]]
    jobs = jobs_file(study_dir)
    assert [j["position"] for j in jobs] == [1, 2], "submitted strictly in the plan's order"
    assert len({j["job_id"] for j in jobs}) == 2
    assert jobs[0]["node"] is None and jobs[1]["node"] == host, "the block's second cell pinned to its first's node"
    assert [int(j["job_id"]) for j in jobs] == sorted(int(j["job_id"]) for j in jobs)
    ms = run_manifests(study_dir)
    assert len(ms) == 2 and all(m["status"] == "complete" for m in ms), [(m["run_id"], m["error"]) for m in ms]
    by_job = {m["study"]["slurm"]["job_id"]: m for m in ms}
    assert set(by_job) == {j["job_id"] for j in jobs}, "each run by its own job, each job one run"
    for j in jobs:
        m = by_job[j["job_id"]]
        assert (m["study"]["cell"]["model"], m["study"]["cell"]["config"], m["study"]["cell"]["rep"]) == \
            order[j["position"] - 1]
        assert m["study"]["slurm"]["node"] == host and m["study"]["slurm"]["partition"]
        assert (study_dir / "slurm" / f"{j['name']}.{j['job_id']}.log").is_file()
    started = [by_job[j["job_id"]]["created_at"] for j in jobs]
    assert started == sorted(started), "one node, exclusive jobs: the runs follow the plan's order"
    assert len({m["host"]["fingerprint"]["sha256"] for m in ms}) == 1
    print(f"\nslurm study of 2 cells: {wall_s:.0f} s wall; first job: submitted to started "
          f"{slurm_latency(jobs[0]['job_id'])}, to its run folder {by_job[jobs[0]['job_id']]['created_at'] - jobs[0]['submitted_at']:.1f} s")

    # the same spec through the local executor, one cell: the run folders are identical in form
    local_spec = spec_of("loc", configs=["torch-cpu"], repetitions=1)
    done = run_study(local_spec)
    assert done.returncode == 0, done.stdout + done.stderr
    local_dir = next((tmp_path / "results" / "loc" / "runs").iterdir())
    slurm_dir = next(d for d in (study_dir / "runs").iterdir() if "torch-cpu" in d.name)
    assert files_of(local_dir) == files_of(slurm_dir)
    lm, sm = json.loads((local_dir / "run.json").read_text()), json.loads((slurm_dir / "run.json").read_text())
    assert set(lm) == set(sm) and set(sm["study"]) - set(lm["study"]) == {"slurm"}
    assert set(lm["host"]) == set(sm["host"]) and lm["host"]["fingerprint"] == sm["host"]["fingerprint"]
    for name in ("requests.csv", "series.csv"):
        assert header(local_dir / name) == header(slurm_dir / name), name

    out = tmp_path / "report"
    analysed = subprocess.run([sys.executable, "-m", "analysis", "--results", str(study_dir), "--out", str(out),
                               "--no-figures", "--quiet", "--jobs", "1"], cwd=ROOT, env=bench_env(),
                              capture_output=True, text=True, timeout=300)
    assert analysed.returncode == 0, analysed.stdout + analysed.stderr
    with open(out / "runs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and {r["host_fingerprint"] for r in rows} == {ms[0]["host"]["fingerprint"]["short"]}


def test_scancel_in_the_rest_and_mid_run_abandons_keeps_the_rows_and_retries_the_cell(tmp_path, spec_of):
    # retries 0: neither stop is the cell's fault, so it runs again all the same, twice
    spec = spec_of("sc", configs=["torch-cpu"], repetitions=1, retries=0,
                   protocol={"max_new_tokens": 16, "cooldown_s": 3, "rest_s": 4})
    study_dir = tmp_path / "results" / "sc"
    study = Study(spec, "--executor", "slurm")
    logs = study_dir / "slurm"

    def resting():
        return next((lg for lg in sorted(logs.glob("ws.sc.1.1.*.log")) if "resting 4 s" in lg.read_text()), None)

    log = wait(resting, "the first job resting before its run", study=study, poll=0.05)
    rested_job = log.name.split(".")[-2]
    subprocess.run(["scancel", rested_job], check=True, timeout=30)
    study.wait_line(f"job {rested_job} (", timeout=120)
    runs = study_dir / "runs"
    cut = wait(lambda: next((d for d in sorted(runs.glob("*")) if runs.is_dir() and recorded_rows(d) >= 3), None),
               "run with 3 requests recorded", study=study, poll=0.05)
    job_id = json.loads((cut / "run.json").read_text())["study"]["slurm"]["job_id"]
    subprocess.run(["scancel", job_id], check=True, timeout=30)
    study.proc.wait(600)
    assert study.proc.returncode == 0, study.output
    assert f"job {rested_job} (tiny torch-cpu r1, attempt 1): cancelled" in study.output, study.output
    assert "nothing recorded" in log.read_text()
    assert f"job {job_id} (" in study.output and "will be retried" in study.output

    m = json.loads((cut / "run.json").read_text())
    assert m["status"] == "failed" and m["abandoned"] is True and job_id in m["error"], m["error"]
    assert m["study"]["attempt"] == 2 and m["study"]["slurm"]["rest_before_s"] == 4
    from loadgen.runfolder import read_requests, validate_run

    assert len(read_requests(cut / "requests.csv")) >= 3  # its rows were kept
    validate_run(cut)
    ms = run_manifests(study_dir)
    assert len(ms) == 2, "the attempt stopped in its rest made no run folder"
    complete = [x for x in ms if x["status"] == "complete"]
    assert len(complete) == 1 and complete[0]["study"]["cell"] == m["study"]["cell"]
    again = complete[0]
    assert again["study"]["attempt"] == 3 and again["study"]["slurm"]["job_id"] not in (job_id, rested_job)
    assert len(jobs_file(study_dir)) == 3


def test_coordinator_sigkilled_with_jobs_queued_then_the_node_drained_resumes_none_lost_none_twice(tmp_path, spec_of):
    spec = spec_of("kq", configs=["torch-cpu"], repetitions=2)
    study_dir = tmp_path / "results" / "kq"
    host = node()
    study = Study(spec, "--executor", "slurm")
    queued = wait(lambda: (lambda q: q if len(q) == 2 and {s for _, s, _ in q.values()} == {"RUNNING", "PENDING"}
                           else None)(squeue("kq")), "2 jobs queued, one running, one pending", study=study)
    study.proc.send_signal(signal.SIGKILL)
    study.proc.wait(30)
    running = next(j for j, (_, s, _) in queued.items() if s == "RUNNING")
    try:
        # the node drained while the coordinator is down: the running job finishes, the pending one waits
        subprocess.run(["scontrol", "update", f"nodename={host}", "state=drain", "reason=wattserve-test"],
                       check=True, timeout=30)
        again = Study(spec, "--executor", "slurm")
        again.wait_line("to submit")
        wait(lambda: running not in squeue("kq"), "the running job's end (a drain lets it finish)", study=again)
        time.sleep(3)  # several polls of the coordinator with the node drained
        q = squeue("kq")
        assert list(q) == [j for j in queued if j != running] and q[next(iter(q))][1] == "PENDING", q
        assert again.proc.poll() is None, again.output
    finally:
        subprocess.run(["scontrol", "update", f"nodename={host}", "state=resume"], timeout=30)
    again.proc.wait(600)
    assert again.proc.returncode == 0, again.output
    resumed = [line for line in again.lines if line.startswith("resume: job ")]
    assert len(resumed) == 2 and all("not submitted again" in line for line in resumed), again.output
    assert not [line for line in again.lines if line.startswith("submitted ")], again.output
    jobs = jobs_file(study_dir)
    assert sorted(j["job_id"] for j in jobs) == sorted(queued), "no cell submitted twice"
    ms = run_manifests(study_dir)
    assert len(ms) == 2 and all(m["status"] == "complete" for m in ms), [(m["run_id"], m["error"]) for m in ms]
    assert sorted(m["study"]["cell"]["rep"] for m in ms) == [1, 2]
    assert {m["study"]["slurm"]["job_id"] for m in ms} == set(queued)
