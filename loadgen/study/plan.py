"""The plan: the seeded repetition-major order, the spec checked against this machine, ``study.json``."""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from loadgen.runfolder import write_json_atomic
from loadgen.study.spec import Sensors, StudyError, StudySpec

STUDY_FILE = "study.json"
STUDY_SCHEMA = 1


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
    """What identifies a study: its whole spec as checked (a resume must run under the same one), but
    for where it runs (``slurm:``) and where completions are scored (``protocol.score_isolation``),
    which change no run's protocol."""
    dump = spec.model_dump(mode="json", exclude={"slurm": True, "protocol": {"score_isolation": True}})
    # keys added later, at their defaults, leave the digest of a study begun before them as it was
    for where, key, default in ((dump, "precisions", ["fp32"]), (dump["protocol"], "stream", False)):
        if where.get(key) == default:
            where.pop(key)
    return hashlib.sha256(json.dumps(dump, sort_keys=True).encode()).hexdigest()


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
    from services.inference.configs import ConfigError, require_cuda
    from services.inference.variants import expand_variants, left_out_of_groups, split
    from services.models.resolve import ModelError, resolve

    try:  # variant labels: onnx-cpu at fp32, onnx-cpu@int8 below it (what a cell's config names)
        configs = [v.label for v in expand_variants(",".join(spec.configs), ",".join(spec.precisions))]
    except ConfigError as exc:
        raise StudyError(f"configs: {exc}") from None
    for config, why in left_out_of_groups(",".join(spec.configs)).items():
        print(f"note: configs: {config} left out ({why})", file=sys.stderr)
    if any(split(c)[0].endswith("-cuda") for c in configs):
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
    if prompts.name == "humaneval":  # completions are scored in a sandbox after each run: there must be one
        from scoring.sandbox import SandboxUnavailable, choose

        try:
            choose(spec.protocol.score_isolation)
        except (SandboxUnavailable, ValueError) as exc:
            if need_gpu:  # a preview, or a Slurm coordinator (the nodes score), only warns
                raise StudyError(f"protocol.score_isolation: {exc}") from None
            print(f"warning: protocol.score_isolation: {exc}", file=sys.stderr)
    try:
        runner, why = choose_runner(spec.runner, configs=list(dict.fromkeys(split(c)[0] for c in configs)), **({"probe": probe_docker} if probe_docker else {}))
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


def load_or_create_plan(chk: Checked) -> dict:
    """``study.json``: made on the first start (seed, order); on a resume the spec must be unchanged."""
    path = chk.study_dir / STUDY_FILE
    spec = chk.spec
    if path.is_file():
        plan = json.loads(path.read_text())
        if plan.get("spec_sha256") != spec_digest(spec):
            old = plan.get("spec") or {}
            new = spec.model_dump(mode="json", exclude={"slurm"})
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
