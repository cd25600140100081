"""One cell attempt as a run: the same RunPlan and sampler whichever executor runs it (local loop or a
Slurm job), so a study's run folders are identical in form wherever they were made."""

from __future__ import annotations

from loadgen.study.plan import Cell, Checked
from loadgen.study.spec import Sensors
from loadgen.study.state import RUNS_DIR


def cell_run_plan(chk: Checked, plan: dict, cell: Cell, position: int, cells: int, attempt: int,
                  extra: dict | None = None):
    """The RunPlan of ``cell``'s ``attempt``; ``extra`` joins run.json's ``study`` (e.g. the Slurm job)."""
    from loadgen.protocol import RunPlan
    from services.inference.variants import split

    spec, p = chk.spec, chk.spec.protocol
    config, precision = split(cell.config)  # a cell's config is a variant label: onnx-cpu, onnx-cpu@int8
    return RunPlan(
        config=config, precision=precision, model=cell.model, prompts=chk.prompts, results=chk.study_dir / RUNS_DIR,
        rep=cell.rep, reps=spec.repetitions, warmup_s=p.warmup_s, cooldown_s=p.cooldown_s,
        request_timeout_s=p.request_timeout_s, ready_timeout_s=p.ready_timeout_s,
        max_new_tokens=p.max_new_tokens, max_length=p.max_length, ignore_eos=p.ignore_eos, stream=p.stream,
        threads=chk.threads, runner=chk.runner, revision=spec.revision,
        trust_remote_code=spec.trust_remote_code, sample_interval_s=p.sample_interval_s,
        bench_id=f"study:{spec.name}", order=position, score_isolation=p.score_isolation,
        study={"name": spec.name, "cell": cell.as_dict(), "attempt": attempt, "position": position,
               "cells": cells, "seed": plan["seed"], "spec_sha256": plan["spec_sha256"], **(extra or {})})


def study_sampler(chk: Checked, addr: str = "127.0.0.1"):
    """This machine's sensors as the spec chooses them (None: ``sensors: false``), their exporters
    listening on ``addr``."""
    p = chk.spec.protocol
    if not p.sensors:
        return None
    from loadgen.sampling import local_sampler

    return local_sampler(p.sample_interval_s, choice=p.sensors.choice() if isinstance(p.sensors, Sensors) else None,
                         addr=addr)
