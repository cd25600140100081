"""One run: prepare → load → idle before → inference → idle after → stop → write the run folder.

- prepare: the model and its engine artifact, in a child process (loadgen/prepare.py), before any
  window: an export is never measured.
- load: service start → ``/ready`` 200 (model load and warm-up are here, never in inference).
- idle before / idle after: the service loaded and doing nothing, for the idle baseline.
- inference: the Locust replay subprocess, from its launch to its exit (every request lies inside).
All phase timestamps come from one clock, ``time.time()`` of this process. The sampler (if any)
runs from before the service starts until after it is gone.

Failure handling: Ctrl-C / SIGTERM → ``interrupted``; any exception → ``failed`` with the error; a
service or Locust that dies mid-run → ``failed`` with the rows answered so far kept; a request that
gets no HTTP answer within its timeout (a hung service) → ``failed`` at once, not after every other
prompt has waited out its own timeout; a run where a request failed is ``failed`` too (its energy
would not be comparable). A sensor that went away is recorded in ``flags``; the run stands. In every case the replay and
the service are stopped, and ``run.json`` is written last.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from loadgen.hostinfo import host_info, software_versions
from loadgen.overhead import overhead as cpu_overhead
from loadgen.overhead import snapshot as cpu_snapshot
from loadgen.prompts import PromptSet
from loadgen.replay import LocustReplay
from loadgen.runfolder import SCHEMA, RunFolder
from loadgen.runners import (ROOT, NativeService, RunnerError, child_env, die_with_parent, log_tail, prepare_command,
                             start_service)
from loadgen.sampling import NullSampler, Sampler
from loadgen.summary import energy_summary

DEFAULT_MAX_LENGTH = 128  # the study's limit, prompt included


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class RunPlan:
    """Everything that defines one run (all of it is recorded in run.json)."""

    config: str
    model: str
    prompts: PromptSet
    results: Path
    rep: int = 1
    reps: int = 1
    warmup_s: float = 5.0
    cooldown_s: float = 5.0
    request_timeout_s: float = 300.0
    ready_timeout_s: float = 600.0
    max_new_tokens: int | None = None
    max_length: int | None = None  # neither given: max_length = 128, the study's
    ignore_eos: bool = False
    threads: int = 0  # 0: every core this process may use
    precision: str = "fp32"
    runner: str = "native"
    revision: str | None = None
    trust_remote_code: bool = False
    stop_delay_s: float = 1.25  # > Locust's 1 s CSV interval (the bench never imports locust: gevent patching)
    sample_interval_s: float | None = None
    bench_id: str | None = None
    order: int | None = None  # position in the bench
    order_seed: int | None = None  # seed of the bench's randomized order (None: fixed order)
    study: dict | None = None  # {name, cell, attempt, ...} when the run belongs to a study (loadgen/study.py)

    def __post_init__(self) -> None:
        for name in ("warmup_s", "cooldown_s", "stop_delay_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("request_timeout_s", "ready_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_new_tokens is not None and self.max_length is not None:
            raise ValueError("give max_new_tokens or max_length, not both")
        for name in ("max_new_tokens", "max_length"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.rep <= self.reps:
            raise ValueError(f"rep must be in 1..reps, got {self.rep} of {self.reps}")
        if self.runner not in ("native", "docker"):
            raise ValueError(f"runner {self.runner!r} is not one of native, docker")
        if self.threads == 0:
            object.__setattr__(self, "threads", default_threads())

    @property
    def limits(self) -> tuple[int | None, int | None]:
        """(max_new_tokens, max_length) as sent with every request."""
        if self.max_new_tokens is None and self.max_length is None:
            return None, DEFAULT_MAX_LENGTH
        return self.max_new_tokens, self.max_length


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM during a run; raised after that run was written (``run_dir``)."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(str(run_dir))
        self.run_dir = run_dir


class _NoProgress:
    def __getattr__(self, name):
        return lambda *a, **k: None


@contextlib.contextmanager
def signals_deferred():
    """Let clean-up finish: SIGINT/SIGTERM are ignored inside (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_prepare(plan: RunPlan, log_path: Path) -> dict:
    argv = [*prepare_command(plan.runner), "--config", plan.config, "--model", plan.model,
            "--threads", str(plan.threads), "--precision", plan.precision]
    if plan.revision:
        argv += ["--revision", plan.revision]
    if plan.trust_remote_code:
        argv.append("--trust-remote-code")
    with open(log_path, "ab") as log:
        out = subprocess.run(argv, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=log,
                             stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent)
    if out.returncode != 0:
        raise RunnerError(f"preparing {plan.model} for {plan.config} failed (exit {out.returncode}); "
                          f"last lines of {log_path}:\n{log_tail(log_path)}")
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


def idle(service: NativeService, seconds: float, phase: str) -> None:
    """Wait ``seconds`` with the service loaded and unused, failing at once if it exits."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if not service.alive():
            raise service.died(f"during {phase}")
        time.sleep(min(0.2, left))


def replay_prompts(plan: RunPlan, service: NativeService, folder: RunFolder, progress) -> float:
    """Run the Locust replay to its end and return when it exited; fail if it or the service dies,
    or it stops progressing."""
    max_new, max_len = plan.limits
    replay = LocustReplay(service.url, plan.prompts, run_dir=folder.path, rows_csv=folder.raw_requests_path,
                          log_path=folder.path / "locust.log", request_timeout_s=plan.request_timeout_s,
                          max_new_tokens=max_new, max_length=max_len, ignore_eos=plan.ignore_eos,
                          stop_delay_s=plan.stop_delay_s)
    count = plan.prompts.count
    rows, size, changed = 0, -1, time.monotonic()
    stall_limit = plan.request_timeout_s + 60
    try:
        while True:
            try:
                replay.proc.wait(0.25)
                exited = time.time()
                break
            except subprocess.TimeoutExpired:
                pass
            if not service.alive():
                raise service.died("during inference")
            try:
                new_size = folder.raw_requests_path.stat().st_size
            except OSError:
                new_size = 0
            if new_size != size:  # parse only when something was appended
                size, changed = new_size, time.monotonic()
                rec = replay.read()
                rows = rec.rows
                progress.requests(rows, statistics.fmean(rec.latencies) if rec.latencies else None)
                if (lost := rec.first_unanswered) is not None:
                    if not service.alive():
                        raise service.died("during inference")
                    # a hung service would make every remaining request wait out its timeout
                    raise RunnerError(f"request #{lost['index']} ({lost['task_id']}) got no answer "
                                      f"({lost['error'] or 'no response'}) after {float(lost['latency_s']):.1f} s: "
                                      f"the service is hung or unreachable; stopped the run and the service")
            elif time.monotonic() - changed > stall_limit:
                raise RunnerError(f"the Locust replay recorded nothing for {stall_limit:.0f} s "
                                  f"({rows} of {count} requests done); stopped it")
    finally:
        rc = replay.stop()
    rec = replay.read()
    rows = rec.rows
    progress.requests(rows, statistics.fmean(rec.latencies) if rec.latencies else None)
    if rows < count:
        raise RunnerError(f"Locust exited (code {rc}) after {rows} of {count} requests; last lines of "
                          f"{replay.log_path}:\n{log_tail(replay.log_path)}")
    if rc not in (0, 1):  # 1 = some request failed, judged from the rows
        raise RunnerError(f"Locust exited with code {rc}; last lines of {replay.log_path}:\n{log_tail(replay.log_path)}")
    return exited


def summarize_rows(rows: list[dict], count: int, phases: dict) -> dict:
    ok = [r for r in rows if r["status"] == "ok"]
    inf = phases.get("inference") or {}
    span = (max(r["end"] for r in rows) - min(r["start"] for r in rows)) if rows else None
    completion = sum(r["completion_tokens"] or 0 for r in ok)
    return {
        "requests": count,
        "recorded": len(rows),
        "ok": len(ok),
        "failed": len(rows) - len(ok),
        "not_sent": count - len(rows),
        "time_s": (inf["end"] - inf["start"]) if "end" in inf else None,
        "requests_span_s": span,
        "median_latency_s": statistics.median(r["latency_s"] for r in ok) if ok else None,
        "prompt_tokens": sum(r["prompt_tokens"] or 0 for r in ok),
        "completion_tokens": completion,
        "tokens_per_s": completion / span if span else None,
        "energy": {},  # filled from series.csv by analysis/energy.py where sensors exist
    }


def run_flags(sensors: list[dict], energy: dict, sampled: bool) -> list[str]:
    """What went wrong with a run's measurements, for a reader to see before trusting its numbers: a
    sensor that went away or down during the run (its energy is then missing, never 0 J), energy that
    is missing or incomplete. (Estimated energy is provenance, recorded with every number, not a flag.)"""
    flags = [f"sensor {s['name']} unavailable: {s['error'] or 'down'}" for s in sensors if not s.get("available")]
    if sampled and energy.get("missing"):
        flags.append(f"energy missing for: {', '.join(energy['missing'])}")
    if sampled and energy and not energy.get("complete", True):
        flags.append("energy incomplete: a sensor did not cover the whole inference window")
    return flags


def run_once(plan: RunPlan, *, sampler: Sampler | None = None, progress=None, host: dict | None = None,
             software: dict | None = None) -> Path:
    """Carry out one run and return its folder. A run that goes wrong does not raise (its manifest
    says how), except an interruption: :class:`RunInterrupted`, after the run is written, so the
    caller stops too."""
    from services.inference.configs import ServingConfig

    progress = progress or _NoProgress()
    sampler = sampler or NullSampler()
    cfg = ServingConfig.parse(plan.config)
    model_label = Path(plan.model).name if Path(plan.model).is_dir() else plan.model
    folder = RunFolder.create(plan.results, cfg.name, model_label, plan.rep)
    max_new, max_len = plan.limits
    phases: dict[str, dict] = {}
    manifest = {
        "schema": SCHEMA, "run_id": folder.run_id, "status": "running", "error": None,
        "config": cfg.name, "engine": cfg.engine, "provider": cfg.provider, "runner": plan.runner,
        "model": {"name": plan.model, "kind": None, "source": None, "revision": plan.revision,
                  "content_hash": None, "params": None, "size_category": None},
        "prompts": plan.prompts.describe(),
        "generation": {"greedy": True, "max_length": max_len, "max_new_tokens": max_new,
                       "ignore_eos": plan.ignore_eos, "threads": plan.threads, "precision": plan.precision},
        "protocol": {"rep": plan.rep, "reps": plan.reps, "warmup_s": plan.warmup_s, "cooldown_s": plan.cooldown_s,
                     "request_timeout_s": plan.request_timeout_s, "sample_interval_s": plan.sample_interval_s,
                     "ready_timeout_s": plan.ready_timeout_s, "stop_delay_s": plan.stop_delay_s,
                     "bench_id": plan.bench_id, "order": plan.order, "order_seed": plan.order_seed, "clock": "time.time() of the bench process"},
        "study": plan.study, "flags": [],
        "phases": phases, "prepare": None, "service": None,
        "host": host or host_info(), "software": software or software_versions(),
        "sensors": [], "summary": summarize_rows([], plan.prompts.count, phases),
        "created_at": time.time(), "finished_at": None,
    }
    folder.write_manifest(manifest)
    status, error, interrupted = "complete", None, False
    service: NativeService | None = None
    sampling = False
    phase = "prepare"

    def begin(name: str) -> None:
        nonlocal phase
        phase = name
        progress.set_phase(name)
        if name in ("load", "idle_before", "inference", "idle_after"):
            phases[name] = {"start": time.time()}

    def end(name: str) -> None:
        phases[name]["end"] = time.time()

    try:
        begin("prepare")
        t0 = time.time()
        prepared = run_prepare(plan, folder.path / "prepare.log")
        manifest["prepare"] = {"start": t0, "end": time.time(), "artifact": prepared["artifact"]}
        manifest["model"] = {**manifest["model"], **prepared["model"]}

        sampler.start(folder.path)
        sampling = True
        begin("load")
        service = start_service(plan.runner, cfg.name, plan.model, threads=plan.threads, precision=plan.precision,
                                log_path=folder.path / "service.log", revision=plan.revision,
                                trust_remote_code=plan.trust_remote_code, run_id=folder.run_id)
        manifest["runner_details"] = service.describe()
        if hasattr(sampler, "service_started"):
            sampler.service_started(service.pid)
        service.wait_ready(plan.ready_timeout_s)
        end("load")
        manifest["service"] = service.info()

        begin("idle_before")
        idle(service, plan.warmup_s, "idle_before")
        end("idle_before")

        begin("inference")
        cpu_start = cpu_snapshot(service.pid)
        phases["inference"]["end"] = replay_prompts(plan, service, folder, progress)
        manifest["harness_overhead"] = cpu_overhead(cpu_start, cpu_snapshot(service.pid))

        begin("idle_after")
        idle(service, plan.cooldown_s, "idle_after")
        end("idle_after")
    except KeyboardInterrupt:
        status, error, interrupted = "interrupted", f"interrupted (SIGINT/SIGTERM) during {phase}", True
    except Exception as exc:
        status = "failed"
        error = str(exc) if isinstance(exc, RunnerError) else f"{type(exc).__name__}: {exc}"
    finally:
        with signals_deferred():
            for ph in phases.values():
                ph.setdefault("end", time.time())
            progress.set_phase("stop")
            if service is not None:
                manifest["service_exit_code"] = service.stop()
            if sampling:
                try:
                    manifest["sensors"] = sampler.stop()
                except Exception as exc:  # no sensors is recorded as such, the run itself stands
                    manifest["sampler_error"] = f"{type(exc).__name__}: {exc}"
            rows = folder.finalize_requests()
            summary = summarize_rows(rows, plan.prompts.count, phases)
            if sampling:
                try:
                    summary["energy"] = energy_summary(folder.path, phases)
                except Exception as exc:  # the run stands; its energy is missing, and says why
                    manifest["energy_error"] = f"{type(exc).__name__}: {exc}"
            if status == "complete" and summary["recorded"] < summary["requests"]:
                status, error = "failed", f"only {summary['recorded']} of {summary['requests']} requests recorded"
            elif status == "complete" and summary["failed"]:
                first = next(r for r in rows if r["status"] != "ok")
                status, error = "failed", (f"{summary['failed']} of {summary['requests']} requests failed "
                                           f"(first: #{first['index']} {first['task_id']}: {first['error']})")
            manifest["flags"] = run_flags(manifest.get("sensors") or [], summary.get("energy") or {}, sampling)
            manifest.update(status=status, error=error, summary=summary, finished_at=time.time())
            folder.write_manifest(manifest)
            progress.end_run(status if not error else f"{status}: {error.splitlines()[0]}")
    if interrupted:
        raise RunInterrupted(folder.path)
    return folder.path

