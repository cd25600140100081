"""One run: prepare → load → idle before → inference → idle after → stop → write the run folder.

- prepare: the model and its engine artifact, in a child process (loadgen/prepare.py), before any
  window: an export is never measured.
- load: service start → ``/ready`` 200 (model load and warm-up are here, never in inference).
- idle before / idle after: the service loaded and doing nothing, for the idle baseline.
- replay_start: Locust's launch up to its first request (its imports and spawning; not measured).
- inference: the requests' span, first request sent → last answer received, from the rows' own
  timestamps (loadgen/locustfile.py); Locust's start-up and stop lie outside it.
- replay_stop: the last answer → Locust's exit (not measured).
All timestamps come from one clock, ``time.time()`` on this host (the bench and Locust). Every phase
edge gets a sensor scrape of its own (loadgen/marks.py), on top of the periodic ones, and the harness
CPU is snapshotted at the inference window's edges. The sampler (if any) runs from before the
service starts until after it is gone.

Failure handling: Ctrl-C / SIGTERM → ``interrupted``; any exception → ``failed`` with the error; a
service or Locust that dies mid-run → ``failed`` with the rows answered so far kept; a request that
gets no HTTP answer within its timeout (a hung service) → ``failed`` at once, not after every other
prompt has waited out its own timeout; a run where a request failed is ``failed`` too (its energy
would not be comparable). A sensor that went away is recorded in ``flags``; the run stands. In every case the replay and
the service are stopped, and ``run.json`` is written last.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from loadgen import humaneval
from loadgen.hostinfo import host_info, software_versions
from loadgen.marks import Edges, MarkServer
from loadgen.overhead import harness_energy, harness_overhead
from loadgen.overhead import snapshot as cpu_snapshot
from loadgen.prompts import PromptSet, sha256_file
from loadgen.replay import LocustReplay
from loadgen.runfolder import SCHEMA, RunFolder
from loadgen.runners import (ROOT, NativeService, RunnerError, child_env, die_with_parent, log_tail, prepare_command,
                             start_service, terminate)
from loadgen.sampling import NullSampler, Sampler
from loadgen.summary import energy_summary
from analysis.quantities import request_span, request_timing, tokens_per_s

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
    stop_delay_s: float = 0.0  # Locust quits at the last answer (no --csv to complete; outside the window anyway)
    sample_interval_s: float | None = None
    bench_id: str | None = None
    order: int | None = None  # position in the bench
    order_seed: int | None = None  # seed of the bench's randomized order (None: fixed order)
    study: dict | None = None  # {name, cell, attempt, ...} when the run belongs to a study (loadgen/study/)
    service_url: str | None = None  # runner external: the running service to drive (nothing started or prepared)
    score_isolation: str = "auto"  # humaneval workload: the sandbox its completions are scored in (scoring/)
    stop: tuple[str, ...] = ()  # stop strings sent with every request (humaneval: loadgen/humaneval.py SENT_STOPS)
    stream: bool = False  # Locust replays with SSE on /v1/completions (loadgen/locustfile.py --stream)

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
        if self.runner not in ("native", "docker", "external"):
            raise ValueError(f"runner {self.runner!r} is not one of native, docker, external")
        if (self.runner == "external") != bool(self.service_url):
            raise ValueError("the external runner needs service_url (and only it takes one)")
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


def last_step(log_path: Path, offset: int) -> str | None:
    """The last line the prepare child wrote to its log after ``offset`` (its build/export step, e.g.
    ``tiny: training step 120/300  loss 2.1  ETA 40s``), for the progress line."""
    try:
        with open(log_path, "rb") as fh:
            fh.seek(offset)
            lines = [ln.strip() for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1] if lines else None


def run_prepare(plan: RunPlan, log_path: Path, progress=None) -> dict:
    argv = [*prepare_command(plan.runner), "--config", plan.config, "--model", plan.model,
            "--threads", str(plan.threads), "--precision", plan.precision]
    if plan.revision:
        argv += ["--revision", plan.revision]
    if plan.trust_remote_code:
        argv.append("--trust-remote-code")
    offset = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log, tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=child_env(), stdout=out, stderr=log, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=die_with_parent)
        try:
            while proc.poll() is None:  # never inside a window: prepare comes before every one
                time.sleep(0.5)
                if progress is not None and (step := last_step(log_path, offset)):
                    progress.step(step)
        except BaseException:
            terminate(proc, 10)
            raise
        out.seek(0)
        stdout = out.read()
    if proc.returncode != 0:
        raise RunnerError(f"preparing {plan.model} for {plan.config} failed (exit {proc.returncode}); "
                          f"last lines of {log_path}:\n{log_tail(log_path)}")
    return json.loads(stdout.decode().strip().splitlines()[-1])


def idle(service: NativeService, seconds: float, phase: str) -> None:
    """Wait ``seconds`` with the service loaded and unused, failing at once if it exits."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if not service.alive():
            raise service.died(f"during {phase}")
        time.sleep(min(0.2, left))


POLL_S = 1.0  # how often the bench looks at the replay's progress (its own CPU lands in the window)


def _sleep_until_exit(proc: subprocess.Popen, seconds: float) -> bool:
    """Sleep ``seconds`` in a few long naps, returning early (True) once ``proc`` has exited."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))
        if proc.poll() is not None:
            return True
    return False


def replay_prompts(plan: RunPlan, service: NativeService, folder: RunFolder, progress, mark_url: str = "") -> float:
    """Run the Locust replay to its end and return when it exited; fail if it or the service dies,
    or it stops progressing."""
    max_new, max_len = plan.limits
    replay = LocustReplay(service.url, plan.prompts, run_dir=folder.path, rows_csv=folder.raw_requests_path,
                          log_path=folder.path / "locust.log", request_timeout_s=plan.request_timeout_s,
                          max_new_tokens=max_new, max_length=max_len, ignore_eos=plan.ignore_eos,
                          stop_delay_s=plan.stop_delay_s, mark_url=mark_url, stop=plan.stop, stream=plan.stream)
    count = plan.prompts.count
    rows, size, changed = 0, -1, time.monotonic()
    stall_limit = plan.request_timeout_s + 60
    try:
        while True:
            # sleep, then look: Popen.wait(timeout) would wake every few ms inside the measured window
            if replay.proc.poll() is not None or _sleep_until_exit(replay.proc, POLL_S):
                exited = time.time()
                if not service.alive():  # refused at once, every request: Locust can finish before we look
                    raise service.died("during inference")
                break
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
    """The run's request figures; time and tokens/s over the inference window (the requests' span)."""
    ok = [r for r in rows if r["status"] == "ok"]
    inf = phases.get("inference") or {}
    time_s = (inf["end"] - inf["start"]) if "end" in inf and "start" in inf else None
    completion = sum(r["completion_tokens"] or 0 for r in ok)
    return {
        "requests": count,
        "recorded": len(rows),
        "ok": len(ok),
        "failed": len(rows) - len(ok),
        "not_sent": count - len(rows),
        "time_s": time_s,
        "median_latency_s": statistics.median(r["latency_s"] for r in ok) if ok else None,
        # TTFT / ITL median and p90 (analysis/quantities.py request_timing, as make analyze's runs.csv)
        **{("median_ttft_s" if k == "ttft_median_s" else k): v for k, v in request_timing(ok).items()},
        "prompt_tokens": sum(r["prompt_tokens"] or 0 for r in ok),
        "completion_tokens": completion,
        "tokens_per_s": tokens_per_s(completion, time_s),
        "energy": {},  # filled from series.csv by analysis/quantities.py where sensors exist
    }


def split_replay(phases: dict, rows: list[dict]) -> None:
    """Cut the replay's time at the requests' span: replay_start (Locust's start-up) → inference (first
    request sent → last answer in) → replay_stop (Locust's stop). No request sent: no inference phase."""
    span = request_span(rows)
    if "replay_start" not in phases or span is None:
        return
    phases["replay_start"]["end"] = span[0]
    phases["inference"] = {"start": span[0], "end": span[1]}
    stop = phases.setdefault("replay_stop", {})
    stop["start"] = span[1]
    stop.setdefault("end", span[1])


def run_flags(sensors: list[dict], energy: dict, sampled: bool) -> list[str]:
    """What went wrong with a run's measurements, for a reader to see before trusting its numbers: a
    sensor that went away or down during the run (its energy is then missing, never 0 J), energy that
    is missing or incomplete, a sensor whose bad samples (garbage, NaN, a counter going backwards or
    jumping) the sampler dropped. (Estimated energy is provenance, recorded with every number, not a flag.)"""
    flags = [f"sensor {s['name']} unavailable: {s['error'] or 'down'}" for s in sensors if not s.get("available")]
    flags += [f"sensor {s['name']}: {s['dropped_samples']} bad sample(s) dropped: {s.get('dropped_reason')}"
              for s in sensors if s.get("dropped_samples")]
    missing = [f.split(":", 1)[1] for f in energy.get("flags") or [] if f.startswith("missing:")]
    if sampled and missing:
        flags.append(f"energy missing for: {', '.join(missing)}")
    if sampled and energy.get("energy_global_j") is not None and not energy.get("energy_global_complete", True):
        flags.append("energy incomplete: a sensor did not cover the whole inference window")
    flags += [f"energy: {f}" for f in energy.get("flags") or []
              if f.startswith(("negative_above_idle", "idle_unsettled", "cpu+gpu_exceeds_wall"))]
    return flags


def _fit_humaneval(plan: RunPlan, manifest: dict, run_dir: Path) -> RunPlan:
    """The plan with only the HumanEval prompts that fit the model's context; run.json's workload
    entry records the others (skipped, counted, never truncated)."""
    from services.models.resolve import resolve

    max_new, _max_len = plan.limits
    if max_new is None:
        raise ValueError("the humaneval workload needs max_new_tokens (a limit on new tokens, not max_length)")
    spec = resolve(plan.model, revision=plan.revision, trust_remote_code=plan.trust_remote_code)
    fitted, entry = humaneval.fit_prompts(plan.prompts, spec.load_source, max_new)
    # Locust reads its prompts from a file: the replayed ones go to the run folder, with their own hash
    path = run_dir / "prompts-replayed.jsonl"
    path.write_text("".join(json.dumps({"task_id": p.task_id, "new_prompt": p.text}) + "\n" for p in fitted.items))
    fitted = dataclasses.replace(fitted, path=path, sha256=sha256_file(path))
    entry["replayed_sha256"] = fitted.sha256
    manifest["workload"] = entry
    manifest["generation"]["stop"] = list(humaneval.SENT_STOPS)  # part of the work: equal for every config
    return dataclasses.replace(plan, prompts=fitted, stop=humaneval.SENT_STOPS)


def problems_of(manifest: dict):
    """Every problem of the run's workload, replayed or skipped (pass@1's denominator)."""
    from loadgen.prompts import load_prompts

    return load_prompts(manifest["prompts"]["name"]).items


def run_once(plan: RunPlan, *, sampler: Sampler | None = None, progress=None, host: dict | None = None,
             software: dict | None = None, stack=None) -> Path:
    """Carry out one run and return its folder. A run that goes wrong does not raise (its manifest
    says how), except an interruption: :class:`RunInterrupted`, after the run is written, so the
    caller stops too. ``stack`` (loadgen/stack.py StackRun): the live stack the run joins — the docker
    service on its network, registered as a scrape target while it runs."""
    from services.inference.configs import ServingConfig
    from services.inference.variants import label

    progress = progress or _NoProgress()
    sampler = sampler or NullSampler()
    cfg = ServingConfig.parse(plan.config)
    model_label = Path(plan.model).name if Path(plan.model).is_dir() else plan.model
    variant = label(cfg.name, plan.precision)  # onnx-cpu, or onnx-cpu@int8 below fp32
    folder = RunFolder.create(plan.results, variant, model_label, plan.rep)
    max_new, max_len = plan.limits
    phases: dict[str, dict] = {}
    manifest = {
        "schema": SCHEMA, "run_id": folder.run_id, "status": "running", "error": None,
        "config": cfg.name, "variant": variant, "engine": cfg.engine, "provider": cfg.provider, "runner": plan.runner,
        "model": {"name": plan.model, "kind": None, "source": None, "revision": plan.revision,
                  "content_hash": None, "params": None, "size_category": None},
        "prompts": plan.prompts.describe(),
        "generation": {"greedy": True, "max_length": max_len, "max_new_tokens": max_new,
                       "ignore_eos": plan.ignore_eos, "threads": plan.threads, "precision": plan.precision,
                       "stop": list(plan.stop), "stream": plan.stream},
        "protocol": {"rep": plan.rep, "reps": plan.reps, "warmup_s": plan.warmup_s, "cooldown_s": plan.cooldown_s,
                     "request_timeout_s": plan.request_timeout_s, "sample_interval_s": plan.sample_interval_s,
                     "ready_timeout_s": plan.ready_timeout_s, "stop_delay_s": plan.stop_delay_s,
                     "bench_id": plan.bench_id, "order": plan.order, "order_seed": plan.order_seed,
                     "clock": "time.time() on this host (the bench and Locust)", "sensors": None},
        "workload": {"name": plan.prompts.name}, "study": plan.study, "flags": [],
        "phases": phases, "prepare": None, "service": None,
        "host": host or host_info(), "software": software or software_versions(),
        "sensors": [], "summary": summarize_rows([], plan.prompts.count, phases),
        "created_at": time.time(), "finished_at": None,
    }
    if stack is not None:
        manifest["stack"] = stack.describe()
        stack.run_started(folder.run_id, plan)
    folder.write_manifest(manifest)
    status, error, interrupted = "complete", None, False
    service: NativeService | None = None
    sampling = False

    edges = Edges(sampler, snapshot=lambda: cpu_snapshot(service.pid if service is not None else None))

    def begin(name: str, after: str | None = None) -> None:
        """Phase ``name`` starts now (at the end of ``after``): one edge, one sensor scrape."""
        nonlocal phase
        phase = name
        progress.set_phase(name)
        t = edges.mark(f"{after or name}_{'end' if after else 'start'}", scrape_first=after is None)
        if after:
            phases[after]["end"] = t
        phases[name] = {"start": t}

    def end(name: str) -> float:
        phases[name]["end"] = t = edges.mark(f"{name}_end", scrape_first=False)
        return t

    try:
        phase = "prepare"
        progress.set_phase("prepare")
        t0 = time.time()
        if plan.runner == "external":  # whoever runs the service prepared its model (compose: prepare)
            manifest["prepare"] = {"start": t0, "end": t0, "artifact": None, "skipped": "external service"}
        else:
            prepared = run_prepare(plan, folder.path / "prepare.log", progress)
            manifest["prepare"] = {"start": t0, "end": time.time(), "artifact": prepared["artifact"]}
            manifest["model"] = {**manifest["model"], **prepared["model"]}
        if plan.prompts.name == humaneval.NAME:   # skip (and count) the prompts that do not fit
            plan = _fit_humaneval(plan, manifest, folder.path)
            progress.replaying(plan.prompts.count, manifest["workload"]["skipped_count"])

        sampler.start(folder.path)
        sampling = True
        if hasattr(sampler, "describe"):  # the sensor choice and what it started (loadgen/sampling.py)
            manifest["protocol"]["sensors"] = sampler.describe()
        begin("load")
        joined = {"network": stack.network} if stack is not None and plan.runner == "docker" else {}
        if plan.runner == "external":
            joined = {"url": plan.service_url}
        service = start_service(plan.runner, cfg.name, plan.model, threads=plan.threads, precision=plan.precision,
                                log_path=folder.path / "service.log", revision=plan.revision,
                                trust_remote_code=plan.trust_remote_code, run_id=folder.run_id,
                                warmup_prompts=plan.prompts.path, **joined)
        manifest["runner_details"] = service.describe()
        if joined and stack is not None:
            stack.service_started(service, folder.run_id, plan.rep)
        if hasattr(sampler, "service_started") and service.pid is not None:
            sampler.service_started(service.pid)
        service.wait_ready(plan.ready_timeout_s)
        manifest["service"] = service.info()
        if plan.runner == "external":  # the model as the service describes it (no prepare of ours)
            described = manifest["service"].get("model")
            if isinstance(described, dict):
                manifest["model"] = {**manifest["model"], **described}

        begin("idle_before", after="load")
        idle(service, plan.warmup_s, "idle_before")
        begin("replay_start", after="idle_before")  # Locust's launch: its start-up is not measured
        phase = "inference"
        progress.set_phase("inference")
        cpu_start = cpu_snapshot(service.pid)
        marks = MarkServer(edges.on_request_edge)
        try:
            exited = replay_prompts(plan, service, folder, progress, mark_url=marks.url)
        finally:
            marks.close()
        manifest["harness_overhead"] = harness_overhead(edges, cpu_start, cpu_snapshot(service.pid))
        phases["replay_stop"] = {"end": exited}
        begin("idle_after", after="replay_stop")
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
            rows = folder.finalize_requests()  # Locust is stopped: its rows are all there
            split_replay(phases, rows)
            progress.set_phase("stop")
            if service is not None:
                if stack is not None:
                    stack.service_stopping()  # out of Prometheus' targets before the container goes
                manifest["service_exit_code"] = service.stop()
            if sampling:
                try:
                    manifest["sensors"] = sampler.stop()
                except Exception as exc:  # no sensors is recorded as such, the run itself stands
                    manifest["sampler_error"] = f"{type(exc).__name__}: {exc}"
            summary = summarize_rows(rows, plan.prompts.count, phases)
            if sampling:
                try:
                    summary["energy"], per_request = energy_summary(folder.path, phases, rows, manifest)
                    folder.add_request_columns(per_request)
                    harness_energy(manifest.get("harness_overhead") or {}, summary["energy"])
                except Exception as exc:  # the run stands; its energy is missing, and says why
                    manifest["energy_error"] = f"{type(exc).__name__}: {exc}"
            if status == "complete" and manifest["workload"]["name"] == humaneval.NAME:
                # after the sensors stopped: outside every measured window, charged to no configuration
                try:
                    manifest["scoring"] = humaneval.score_rows(
                        rows, [p.task_id for p in problems_of(manifest)], plan.score_isolation, folder.path,
                        sent=plan.stop)
                except Exception as exc:
                    manifest["scoring"] = {"error": f"{type(exc).__name__}: {exc}"}
            if status == "complete" and summary["recorded"] < summary["requests"]:
                status, error = "failed", f"only {summary['recorded']} of {summary['requests']} requests recorded"
            elif status == "complete" and summary["failed"]:
                first = next(r for r in rows if r["status"] != "ok")
                status, error = "failed", (f"{summary['failed']} of {summary['requests']} requests failed "
                                           f"(first: #{first['index']} {first['task_id']}: {first['error']})")
            manifest["flags"] = run_flags(manifest.get("sensors") or [], summary.get("energy") or {}, sampling)
            if (manifest.get("scoring") or {}).get("error"):
                manifest["flags"].append("scoring: " + manifest["scoring"]["error"].splitlines()[0])
            elif (manifest.get("scoring") or {}).get("unsafe"):
                manifest["flags"].append("scoring: UNSAFE-LOCAL (completions ran without a sandbox)")
            missed = (((manifest.get("scoring") or {}).get("stop") or {}).get("completions") or {}).get("safety_net")
            if missed:
                manifest["flags"].append(f"stop: {missed} completion(s) still held a stop string the service was "
                                         "sent (cut post hoc before scoring; the service did not stop at it)")
            manifest.update(status=status, error=error, summary=summary, finished_at=time.time())
            folder.write_manifest(manifest)
            progress.end_run(status if not error else f"{status}: {error.splitlines()[0]}")
    if interrupted:
        raise RunInterrupted(folder.path)
    return folder.path

