"""``python -m loadgen.study SPEC``: a whole study — models × configurations × repetitions — in one command.

The study's matrix is days of machine time, so it must survive what days bring:

- **Order.** Repetition-major blocks, each a seeded random permutation of every (model,
  configuration) cell: every configuration gets its n-th run before any gets its (n+1)-th, and no
  fixed order lets drift or heat favour one. The seed (drawn when the spec gives none) and the whole
  order are recorded in ``study.json`` on the first start and reused on every resume.
- **Resumable.** The truth is the run folders (``runs/``), whose ``run.json`` is written last and
  names its cell. A resume counts a cell done only when it has a ``complete`` run, so a run that
  was cut off (the runner killed with SIGKILL leaves ``status: running``) is marked ``failed``
  (abandoned), its rows kept, and the cell runs again: none lost, none duplicated, none counted
  half-written. A lock file keeps two runners off one study.
- **Retries.** A failed run (service crashed or hung, a request failed) is retried at the end of
  the queue, up to ``retries`` times; a cell that keeps failing is reported, not hidden.
- **Rest.** ``protocol.rest_s`` really waits between runs (the study's cool-down was a no-op).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import difflib
import fcntl
import hashlib
import json
import os
import random
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from loadgen.preflight import PreflightError, check_results, run_bytes
from loadgen.progress import Progress, hms
from loadgen.runfolder import MANIFEST, RunFolder, read_requests, slug, write_json_atomic

STUDY_FILE = "study.json"
RUNS_DIR = "runs"
LOCK_FILE = ".lock"
SUMMARY_FILE = "summary.md"
STUDY_SCHEMA = 1
ABANDONED = "abandoned: the study runner stopped during this run (killed or crashed); found when the study resumed"

EPILOG = """\
spec (YAML; every key is checked, a typo is an error):
  name: smoke                 # the study folder: RESULTS/<name>/ (default: the spec file's name)
  models: [tiny]              # as MODEL: tiny, shape:<hf id>, a registry name, a hub id, a folder
  configs: [torch-cpu, onnx-cpu]   # or a group: cpu, cuda, all
  repetitions: 2
  seed: 7                     # of the run order; drawn (and recorded) when absent
  retries: 2                  # extra attempts of a failed run
  runner: native              # auto | native | docker
  results: results            # parent of the study folder
  protocol:                   # defaults shown
    warmup_s: 5               # idle before inference, service loaded (the study: 300)
    cooldown_s: 5             # idle after inference (the study: 300)
    rest_s: 0                 # wait between runs, nothing running
    prompts: paper            # or a JSONL file (make prompts), relative to here or to the spec
    max_length: 128           # prompt + new tokens (the study's); or max_new_tokens: N, not both
    ignore_eos: false
    request_timeout_s: 300    # a request with no answer by then fails the run (a hung service)
    ready_timeout_s: 600      # load and warm-up
    threads: null             # CPU threads for every engine (null: every core)
    sample_interval_s: 0.5
    sensors: true             # true: every sensor this machine has (auto); false: none (energy missing);
                              # or choose, each checked on this machine before anything starts:
                              #   sensors: {cpu: auto|rapl|energibridge|estimate, gpu: auto|nvml|nvidia-smi|
                              #             dcgm=<URL>|none, wall: auto|none|<netio.json URL>, tdp_watts: W,
                              #             idle_watts: W, energibridge_bin: PATH, max_device_watts: 10000}
                              #   (NETIO credentials: NETIO_USER/NETIO_PASSWORD only; the estimate is labelled)

Stop it at any moment (Ctrl-C, kill, power loss): the same command continues where it stopped.
exit status: 0 every cell complete, 1 a cell failed after its retries (or the study had to stop),
2 bad input (nothing started), 130 interrupted.
"""


class StudyError(ValueError):
    """Bad input or a study that cannot start; nothing was started."""


# ------------------------------------------------------------------------------------ the spec

class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sensors(Strict):
    """``protocol.sensors`` as a mapping (loadgen.sampling.SensorChoice; ``true`` = all auto)."""

    cpu: Literal["auto", "rapl", "energibridge", "estimate"] = "auto"
    gpu: str = "auto"
    wall: str = "auto"
    tdp_watts: float | None = Field(None, gt=0, allow_inf_nan=False)
    idle_watts: float | None = Field(None, ge=0, allow_inf_nan=False)
    energibridge_bin: str = "energibridge"
    max_device_watts: float = Field(10_000.0, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _valid(self):
        from loadgen.sampling import SensorError

        try:
            self.choice()
        except SensorError as exc:
            raise ValueError(str(exc)) from None
        if urlsplit(self.wall).password:
            raise ValueError("wall: put the NETIO's credentials in NETIO_USER / NETIO_PASSWORD, not in the spec")
        return self

    def choice(self):
        from loadgen.sampling import SensorChoice

        return SensorChoice.parse(self.cpu, self.gpu, self.wall, self.tdp_watts, self.idle_watts,
                                  self.energibridge_bin, self.max_device_watts)


class Protocol(Strict):
    warmup_s: float = Field(5.0, ge=0, allow_inf_nan=False)
    cooldown_s: float = Field(5.0, ge=0, allow_inf_nan=False)
    rest_s: float = Field(0.0, ge=0, allow_inf_nan=False)
    prompts: str = "paper"
    max_new_tokens: int | None = Field(None, ge=1)
    max_length: int | None = Field(None, ge=1)
    ignore_eos: bool = False
    request_timeout_s: float = Field(300.0, gt=0, allow_inf_nan=False)
    ready_timeout_s: float = Field(600.0, gt=0, allow_inf_nan=False)
    threads: int | None = Field(None, ge=1)
    sample_interval_s: float = Field(0.5, ge=0.05, le=10)
    sensors: bool | Sensors = True  # true/false as before (a spec's digest unchanged), or the choice

    @model_validator(mode="after")
    def _one_limit(self):
        if self.max_new_tokens is not None and self.max_length is not None:
            raise ValueError("give max_new_tokens or max_length, not both")
        return self


class StudySpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=80)
    models: list[str] = Field(min_length=1)
    configs: list[str] = Field(min_length=1)
    repetitions: int = Field(ge=1)
    seed: int | None = None
    retries: int = Field(2, ge=0, le=20)
    runner: Literal["auto", "native", "docker"] = "auto"
    results: str = "results"
    revision: str | None = None
    trust_remote_code: bool = False
    protocol: Protocol = Protocol()

    @field_validator("configs", "models", mode="before")
    @classmethod
    def _listify(cls, v):
        return [x.strip() for x in v.split(",")] if isinstance(v, str) else v

    @field_validator("models", "configs")
    @classmethod
    def _distinct(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"an entry is listed twice: {', '.join(sorted({x for x in v if v.count(x) > 1}))}")
        return v


def _problem(err: dict) -> str:
    if err["loc"][:2] == ("protocol", "sensors") and len(err["loc"]) > 2:  # bool | Sensors: say it plainly
        branch = str(err["loc"][2])
        if branch == "bool":
            return ""  # the mapping branch's errors say what is wrong
        if "Sensors" in branch:
            err = {**err, "loc": ("protocol", "sensors", *err["loc"][3:])}
            if err["type"] in ("model_type", "dict_type"):
                return f"protocol.sensors: true, false or a mapping of cpu, gpu, wall, ... (got {err.get('input')!r})"
            if err["type"] == "value_error":
                return f"protocol.sensors: {err['msg'].removeprefix('Value error, ')}"
    where = ".".join(str(x) for x in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        model = Sensors if err["loc"][:2] == ("protocol", "sensors") else Protocol if err["loc"][:1] == ("protocol",) \
            else StudySpec
        known = list(model.model_fields)
        close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
        return f"{where}: unknown key" + (f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(known)}")
    if err["type"] == "missing":
        return f"{where}: required"
    return f"{where}: {err['msg']} (got {err.get('input')!r})"


def load_spec(path: Path) -> StudySpec:
    """Parse and check a spec file; :class:`StudyError` lists every problem at once."""
    path = Path(path)
    if not path.is_file():
        shipped = sorted(p.name for p in (Path(__file__).resolve().parents[1] / "studies").glob("*.yaml"))
        raise StudyError(f"no spec file {path}" + (f"; shipped: studies/{', studies/'.join(shipped)}" if shipped else ""))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise StudyError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise StudyError(f"{path}: a study spec is a mapping of keys (name, models, configs, repetitions, ...)")
    data.setdefault("name", slug(path.stem))
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        problems = [p for p in (_problem(e) for e in exc.errors()) if p]
        raise StudyError(f"{path}: " + "; ".join(problems)) from None


# ------------------------------------------------------------------------------------ the plan

@dataclass(frozen=True, order=True)
class Cell:
    model: str
    config: str
    rep: int

    @property
    def label(self) -> str:
        return f"{self.model} {self.config} r{self.rep}"

    def as_dict(self) -> dict:
        return {"model": self.model, "config": self.config, "rep": self.rep}


def run_order(models: list[str], configs: list[str], reps: int, seed: int) -> list[Cell]:
    """Repetition-major; within each repetition a seeded random permutation of every (model, config)."""
    rng = random.Random(seed)
    order: list[Cell] = []
    for rep in range(1, reps + 1):
        block = [Cell(m, c, rep) for m in models for c in configs]
        rng.shuffle(block)
        order += block
    return order


def spec_digest(spec: StudySpec) -> str:
    """What identifies a study: its whole spec as checked (a resume must run under the same one)."""
    return hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


@dataclass
class Checked:
    """A spec checked against this machine: what the runs need."""

    spec: StudySpec
    configs: list[str]
    prompts: object  # loadgen.prompts.PromptSet
    runner: str
    runner_reason: str
    threads: int
    study_dir: Path


def check(spec: StudySpec, spec_path: Path, results: str | None = None, probe_docker=None,
          need_gpu: bool = True) -> Checked:
    """Every model, configuration, prompt set and the runner, before anything starts (``need_gpu``
    False: a preview on a machine without the GPU the -cuda configurations need)."""
    from loadgen.prompts import PromptError, load_prompts
    from loadgen.protocol import default_threads
    from loadgen.runners import RunnerError, choose_runner
    from services.inference.configs import ConfigError, expand, require_cuda
    from services.models.resolve import ModelError, resolve

    try:
        configs = expand(",".join(spec.configs))
    except ConfigError as exc:
        raise StudyError(f"configs: {exc}") from None
    if any(c.endswith("-cuda") for c in configs):
        try:
            require_cuda()
        except ConfigError as exc:
            if need_gpu:
                raise StudyError(f"configs: {exc}") from None
            print(f"warning: {exc}", file=sys.stderr)
    if len(set(configs)) != len(configs):
        raise StudyError(f"configs: a configuration is listed twice ({', '.join(configs)})")
    for m in spec.models:
        try:
            resolve(m, revision=spec.revision, trust_remote_code=spec.trust_remote_code, build=False)
        except ModelError as exc:
            raise StudyError(f"models: {m!r}: {exc}") from None
    prompts_arg = spec.protocol.prompts
    beside = Path(spec_path).parent / prompts_arg
    if prompts_arg != "paper" and not Path(prompts_arg).exists() and beside.exists():
        prompts_arg = str(beside)  # a prompt file named relative to the spec
    try:
        prompts = load_prompts(prompts_arg)
    except PromptError as exc:
        raise StudyError(f"protocol.prompts: {exc}") from None
    try:
        runner, why = choose_runner(spec.runner, configs=configs, **({"probe": probe_docker} if probe_docker else {}))
    except RunnerError as exc:
        raise StudyError(f"runner: {exc}") from None
    sensors = spec.protocol.sensors
    if isinstance(sensors, Sensors):
        from loadgen.sampling import SensorError, check_sensors

        try:
            check_sensors(sensors.choice())
        except SensorError as exc:
            if need_gpu:
                raise StudyError(f"protocol.sensors: {exc}") from None
            print(f"warning: protocol.sensors: {exc}", file=sys.stderr)
    root = Path(results if results is not None else spec.results).expanduser().resolve()
    return Checked(spec, configs, prompts, runner, why, spec.protocol.threads or default_threads(), root / spec.name)


# ------------------------------------------------------------------------------------ state

@dataclass
class CellState:
    complete: list[str] = field(default_factory=list)  # run ids
    failed: list[str] = field(default_factory=list)  # run ids of failed attempts (retries count these)
    other: list[str] = field(default_factory=list)  # interrupted or abandoned: not the cell's fault
    last_error: str | None = None

    @property
    def attempts(self) -> int:
        return len(self.complete) + len(self.failed) + len(self.other)


def _cell_of(m: dict) -> Cell | None:
    c = (m.get("study") or {}).get("cell") or {}
    try:
        return Cell(str(c["model"]), str(c["config"]), int(c["rep"]))
    except (KeyError, TypeError, ValueError):
        return None


def abandon(run_dir: Path, m: dict) -> dict:
    """A run whose runner died mid-way (``status: running``): keep every row it recorded and mark it
    failed, so nobody counts it; a docker runner's container is removed."""
    folder = RunFolder(run_dir)
    if folder.raw_requests_path.exists() or not folder.requests_path.exists():
        rows = folder.finalize_requests()
    else:  # finalized already, by a resume cut off before it could rewrite run.json
        rows = read_requests(folder.requests_path)
    if m.get("runner") == "docker":
        from loadgen.runners import _docker, container_name

        with contextlib.suppress(Exception):
            _docker("rm", "-f", container_name(m.get("run_id")), timeout=60)
    m = {**m, "status": "failed", "error": ABANDONED, "abandoned": True, "finished_at": time.time()}
    m["summary"] = {**(m.get("summary") or {}), "recorded": len(rows), "ok": sum(r["status"] == "ok" for r in rows)}
    folder.write_manifest(m)
    return m


def reconcile(study_dir: Path, name: str) -> tuple[dict[Cell, CellState], list[str]]:
    """Read every run folder of the study; abandoned runs are marked failed. Returns the state of
    each cell that has runs, and notes on what was found (for the user)."""
    cells: dict[Cell, CellState] = collections.defaultdict(CellState)
    notes = []
    runs = study_dir / RUNS_DIR
    for d in sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []:
        path = d / MANIFEST
        if not path.is_file():
            notes.append(f"{d.name}: no run.json (cut off as it was created); ignored")
            continue
        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            notes.append(f"{d.name}: unreadable run.json ({exc}); ignored")
            continue
        cell = _cell_of(m)
        if cell is None or (m.get("study") or {}).get("name") != name:
            notes.append(f"{d.name}: not a run of study {name!r}; ignored")
            continue
        if m.get("status") == "running":
            m = abandon(d, m)
            notes.append(f"{d.name} ({cell.label}): was cut off; marked failed (abandoned), the cell runs again")
        st = cells[cell]
        status = m.get("status")
        if status == "complete":
            st.complete.append(d.name)
        elif status == "failed" and not m.get("abandoned"):
            st.failed.append(d.name)
            st.last_error = m.get("error")
        else:
            st.other.append(d.name)
            st.last_error = m.get("error")
    return cells, notes


def load_or_create_plan(chk: Checked) -> dict:
    """``study.json``: made on the first start (seed, order); on a resume the spec must be unchanged."""
    path = chk.study_dir / STUDY_FILE
    spec = chk.spec
    if path.is_file():
        plan = json.loads(path.read_text())
        if plan.get("spec_sha256") != spec_digest(spec):
            old = plan.get("spec") or {}
            new = spec.model_dump(mode="json")
            diff = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                    if old.get(k) != new.get(k)]
            raise StudyError(f"study {spec.name!r} in {chk.study_dir} was started with another spec ({'; '.join(diff)}); "
                             "its runs would not be comparable. Restore the spec, or give the study a new name")
        return plan
    seed = spec.seed if spec.seed is not None else secrets.randbelow(2**31)
    order = run_order(spec.models, chk.configs, spec.repetitions, seed)
    plan = {"schema": STUDY_SCHEMA, "name": spec.name, "spec": spec.model_dump(mode="json"),
            "spec_sha256": spec_digest(spec), "seed": seed, "seed_drawn": spec.seed is None,
            "configs": chk.configs, "prompts": chk.prompts.describe(), "created_at": time.time(),
            "order": [c.as_dict() for c in order]}
    chk.study_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, plan)
    return plan


@contextlib.contextmanager
def study_lock(study_dir: Path):
    """One runner per study (the lock dies with its process, SIGKILL included)."""
    study_dir.mkdir(parents=True, exist_ok=True)
    fh = open(study_dir / LOCK_FILE, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "?"
        fh.close()
        raise StudyError(f"study {study_dir.name!r} is already running (pid {holder}; lock {study_dir / LOCK_FILE})") from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    try:
        yield
    finally:
        fh.close()


# ------------------------------------------------------------------------------------ running

def rest(seconds: float, progress: Progress) -> None:
    """Really wait (the service is stopped, the machine settles), redrawing the progress line."""
    progress.set_phase("rest")
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(0.5, left))
        progress.draw()


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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadgen.study", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="the study spec (YAML), e.g. studies/smoke.yaml")
    p.add_argument("--results", help="parent folder of the study folder (default: the spec's 'results')")
    p.add_argument("--dry-run", action="store_true", help="check the spec and print the plan; start nothing")
    p.add_argument("--retry-failed", action="store_true",
                   help="give the cells that failed after every retry a fresh set of attempts")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        spec = load_spec(Path(args.spec))
        chk = check(spec, Path(args.spec), args.results, need_gpu=not args.dry_run)
        p = spec.protocol
        need = run_bytes(p.warmup_s, p.cooldown_s, chk.prompts.count, p.sample_interval_s)
        if args.dry_run:
            return dry_run(chk)
        check_results(chk.study_dir.parent, need)
        with study_lock(chk.study_dir):
            return run_study(chk, need, retry_failed=args.retry_failed)
    except (StudyError, PreflightError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def dry_run(chk: Checked) -> int:
    spec, p = chk.spec, chk.spec.protocol
    seed = spec.seed if spec.seed is not None else 0
    order = run_order(spec.models, chk.configs, spec.repetitions, seed)
    per_run = p.warmup_s + p.cooldown_s + p.rest_s
    print(f"study {spec.name}: {len(order)} runs ({len(spec.models)} model(s) x {len(chk.configs)} configuration(s) x "
          f"{spec.repetitions} repetition(s)), up to {spec.retries} retries each; runner {chk.runner} ({chk.runner_reason})")
    idle = len(order) * per_run
    print(f"folder {chk.study_dir}; prompts {chk.prompts.name} ({chk.prompts.count}); idle {p.warmup_s:g} s + "
          f"{p.cooldown_s:g} s, rest {p.rest_s:g} s: at least {hms(idle)} ({idle / 86400:.1f} days) before any inference")
    if spec.seed is None:
        print("order seed: drawn at the first start (this preview uses seed 0)")
    for i, c in enumerate(order[:12], 1):
        print(f"  {i:4d}. {c.label}")
    if len(order) > 12:
        print(f"  ... and {len(order) - 12} more")
    return 0


def run_study(chk: Checked, need_bytes: int, retry_failed: bool = False) -> int:
    from loadgen.hostinfo import host_info, software_versions
    from loadgen.protocol import RunInterrupted, RunPlan, run_once

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
    sampler = None
    if p.sensors:
        from loadgen.sampling import local_sampler

        sampler = local_sampler(p.sample_interval_s, choice=p.sensors.choice() if isinstance(p.sensors, Sensors) else None)
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
            run_plan = RunPlan(
                config=cell.config, model=cell.model, prompts=chk.prompts, results=chk.study_dir / RUNS_DIR,
                rep=cell.rep, reps=spec.repetitions, warmup_s=p.warmup_s, cooldown_s=p.cooldown_s,
                request_timeout_s=p.request_timeout_s, ready_timeout_s=p.ready_timeout_s,
                max_new_tokens=p.max_new_tokens, max_length=p.max_length, ignore_eos=p.ignore_eos,
                threads=chk.threads, runner=chk.runner, revision=spec.revision,
                trust_remote_code=spec.trust_remote_code, sample_interval_s=p.sample_interval_s,
                bench_id=f"study:{spec.name}", order=position[cell],
                study={"name": spec.name, "cell": cell.as_dict(), "attempt": attempt, "position": position[cell],
                       "cells": len(order), "seed": plan["seed"], "spec_sha256": plan["spec_sha256"]})
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
    with contextlib.suppress(OSError):  # a full disk must not hide the summary from the terminal
        tmp = chk.study_dir / f".{SUMMARY_FILE}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(chk.study_dir / SUMMARY_FILE)
    print("\n" + text)
    if interrupted:
        print("interrupted: run the same command again to continue (make study SPEC=...)", file=sys.stderr)
        return 130
    complete = all(cells.get(c) and cells[c].complete for c in order)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
