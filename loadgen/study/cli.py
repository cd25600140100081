"""``python -m loadgen.study SPEC``: the command line (parse, check, lock, hand over to an executor)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loadgen.preflight import PreflightError, check_results, run_bytes
from loadgen.progress import hms
from loadgen.study import __doc__ as STUDY_DOC
from loadgen.study.plan import Checked, check, run_order
from loadgen.study.spec import StudyError, load_spec
from loadgen.study.state import study_lock

EPILOG = """\
spec (YAML; every key is checked, a typo is an error):
  name: smoke                 # the study folder: RESULTS/<name>/ (default: the spec file's name)
  models: [tiny]              # as MODEL: tiny, shape:<hf id>, a registry name, a hub id, a folder
  configs: [torch-cpu, onnx-cpu]   # or a group: cpu, cuda, all
  precisions: [fp32]          # every configuration at each (fp32, bf16, fp16, int8, int4: what its engine
                              # serves); a config may carry its own: onnx-cpu@int8
  repetitions: 2
  seed: 7                     # of the run order; drawn (and recorded) when absent
  retries: 2                  # extra attempts of a failed run
  runner: native              # auto | native | docker
  results: results            # parent of the study folder
  protocol:                   # defaults shown
    warmup_s: 5               # idle before inference, service loaded (the study: 300)
    cooldown_s: 5             # idle after inference (the study: 300)
    rest_s: 0                 # wait between runs, nothing running
    prompts: paper            # humaneval (whole problems, scored: pass@1, energy per solved task), or a
                              # JSONL file (make prompts), relative to here or to the spec
    max_length: 128           # prompt + new tokens (the study's); or max_new_tokens: N, not both
                              # (humaneval: max_new_tokens only, 192 unless given)
    score_isolation: auto     # humaneval: the sandbox completions are scored in after each run:
                              # auto | docker | namespace | unsafe-local (checked before anything starts)
    ignore_eos: false
    stream: false             # true: streamed completions (SSE), TTFT/ITL as a client sees them (needs
                              # max_new_tokens); false: non-streamed /v1/generate, the study's workload
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

  slurm:                      # only for --executor slurm (not part of the study's identity)
    partition: null           # sbatch --partition; account: sbatch --account
    time_limit: null          # sbatch --time per cell attempt, e.g. "0:30:00"
    gpus_per_job: 1           # sbatch --gpus for -cuda configurations (CPU cells ask for none)
    sbatch_options: []        # more sbatch arguments, e.g. ["--constraint=a100"]
    max_jobs: 0               # at most this many jobs submitted at once (0: no limit)
    poll_s: 2                 # how often squeue is asked
    exporters_listen: 0.0.0.0 # where each job's exporters listen (Prometheus finds them: file_sd)

Stop it at any moment (Ctrl-C, kill, power loss): the same command continues where it stopped.
exit status: 0 every cell complete, 1 a cell failed after its retries (or the study had to stop),
2 bad input (nothing started), 130 interrupted.
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadgen.study", description=STUDY_DOC, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="the study spec (YAML), e.g. studies/smoke.yaml")
    p.add_argument("--results", help="parent folder of the study folder (default: the spec's 'results')")
    p.add_argument("--dry-run", action="store_true", help="check the spec and print the plan; start nothing")
    p.add_argument("--retry-failed", action="store_true",
                   help="give the cells that failed after every retry a fresh set of attempts")
    p.add_argument("--executor", choices=("local", "slurm"), default="local",
                   help="local: every run on this machine, one after another (default); slurm: each cell attempt "
                        "one 'sbatch --exclusive' job (spec key slurm:), the study folder on storage the nodes share")
    p.add_argument("--cancel-on-exit", action="store_true",
                   help="slurm: Ctrl-C of the coordinator also cancels its pending and running jobs (default: they "
                        "go on, and the next start picks them up)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        spec = load_spec(Path(args.spec))
        chk = check(spec, Path(args.spec), args.results, need_gpu=not (args.dry_run or args.executor == "slurm"))
        p = spec.protocol
        need = run_bytes(p.warmup_s, p.cooldown_s, chk.prompts.count, p.sample_interval_s)
        if args.dry_run:
            return dry_run(chk)
        check_results(chk.study_dir.parent, need)
        with study_lock(chk.study_dir):
            if args.executor == "slurm":
                from loadgen.study.executors import slurm

                return slurm.run_study(chk, Path(args.spec), retry_failed=args.retry_failed,
                                       cancel_on_exit=args.cancel_on_exit)
            from loadgen.study.executors.local import run_study

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
