"""``python -m loadgen.bench``: benchmark serving configurations, one run folder per run, then a table.

Each run: prepare the model artifact (not measured) → start the service → wait until ready
(``load``) → idle before → replay the prompt set once with Locust (``inference``) → idle after →
stop the service → write ``RESULTS/<run-id>/`` (docs/run-folder.md). Runs are interleaved
(repetition-major: every configuration once, then again), never one configuration's reps in a row,
and randomized: each repetition is a fresh permutation from a seed that is printed and recorded in
every run.json (``--shuffle SEED`` chooses it, ``--fixed-order`` turns it off).
At the end, a comparison table over the runs just made, also written to ``RESULTS/bench-<ts>.md``.
"""

from __future__ import annotations

import random
import signal
import sys
import time
from pathlib import Path

from loadgen.bench_settings import Settings, UsageError, parser, resolve_settings
from loadgen.progress import Progress, hms
from loadgen.protocol import RunInterrupted, RunPlan, run_once
from loadgen.summary import comparison_table, summarize, write_report
from services.inference.variants import split


def read_manifest(run_dir: Path) -> dict | None:
    import json

    try:
        return json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return None


def schedule(s: Settings) -> list[tuple[int, str]]:
    """(rep, config) in run order: repetition-major, each repetition a fresh permutation drawn from the
    seed (``shuffle``; None = the order given, every repetition)."""
    rng = random.Random(s.shuffle)
    order = []
    for rep in range(1, s.reps + 1):
        configs = list(s.configs)
        if s.shuffle is not None:
            rng.shuffle(configs)
        order += [(rep, c) for c in configs]
    return order


def header(s: Settings, runs: int) -> str:
    limit = (f"max_new_tokens={s.max_new_tokens}" if s.max_new_tokens else f"max_length={s.max_length or 128}")
    return "\n".join([
        f"runner:  {s.runner} ({s.runner_reason})",
        f"configs: {', '.join(s.configs)}; model {s.model}; {s.reps} rep(s) = {runs} run(s)"
        + (f"; preset {s.preset}" if s.preset else "") + (f"; order randomized (seed {s.shuffle}; --shuffle {s.shuffle} repeats it)" if s.shuffle is not None
           else "; fixed order (--fixed-order)"),
        f"prompts: {s.prompts.name} ({s.prompts.count} prompts, sha256 {s.prompts.sha256[:16]}…)",
        f"windows: idle {s.warmup_s:g} s before, {s.cooldown_s:g} s after; greedy, {limit}"
        + (", ignore_eos" if s.ignore_eos else "") + (", streamed (SSE)" if s.stream else "") + f"; {s.threads} threads; request timeout {s.request_timeout_s:g} s",
        *([f"left out: {', '.join(f'{c} ({why})' for c, why in s.left_out.items())}"] if s.left_out else []),
        f"results: {s.results}",
        sensors_line(s),
        f"stack:   {'joined: ' + s.stack_note + '; Prometheus scrapes each run' if s.stack else s.stack_note}",
    ])


def sensors_line(s: Settings) -> str:
    if s.sensors is None or not s.sensors_resolved:
        return "sensors: none (--no-sensors): energy is recorded as missing"
    chosen = {"cpu": s.sensors.cpu, "gpu": s.sensors.gpu.split("=")[0], "wall": s.sensors.wall
              if s.sensors.wall in ("auto", "none") else "url"}
    parts = [f"{k} {v or 'none'} ({chosen[k]})" for k, v in s.sensors_resolved.items()]
    return "sensors: " + ", ".join(parts) + ("; CPU energy ESTIMATED" if s.sensors_resolved.get("cpu") == "estimate"
                                             else "")


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        s = resolve_settings(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    order = schedule(s)
    started = time.time()
    bench_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    head = header(s, len(order))
    print(head, flush=True)

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    from loadgen.hostinfo import host_info, software_versions

    host, software = host_info(), software_versions()
    if not args.no_sensors and not 0.05 <= args.sample_interval <= 10:
        print("error: --sample-interval must be between 0.05 and 10 seconds", file=sys.stderr)
        return 2
    stack_run = None
    if s.stack is not None:
        from loadgen.stack import StackRun

        stack_run = StackRun(s.stack, bench_id, len(order))
    progress = Progress(len(order), warmup_s=s.warmup_s, cooldown_s=s.cooldown_s, prompts=s.prompts.count,
                        listeners=[stack_run.exporter] if stack_run else [])
    summaries, interrupted = [], False
    sampler = None
    if not args.no_sensors:
        if s.exporters:
            from loadgen.local_exporters import LocalSampler

            sampler = LocalSampler(interval_s=args.sample_interval, choice=s.sensors, only=(),
                                   extra_targets=s.exporters)
        elif stack_run is not None:
            from loadgen.stack import stack_sampler

            sampler = stack_sampler(s.stack, args.sample_interval, s.sensors)
        else:
            from loadgen.sampling import local_sampler

            sampler = local_sampler(args.sample_interval, choice=s.sensors)
    try:
        for i, (rep, variant) in enumerate(order, 1):
            progress.start_run(i, f"{variant} {s.model} r{rep}/{s.reps}")
            config, precision = split(variant)
            plan = RunPlan(config=config, precision=precision, model=s.model, prompts=s.prompts, results=s.results, rep=rep, reps=s.reps,
                           warmup_s=s.warmup_s, cooldown_s=s.cooldown_s, request_timeout_s=s.request_timeout_s,
                           ready_timeout_s=s.ready_timeout_s, max_new_tokens=s.max_new_tokens,
                           max_length=s.max_length, ignore_eos=s.ignore_eos, threads=s.threads,
                           runner=s.runner, revision=s.revision, trust_remote_code=s.trust_remote_code,
                           bench_id=bench_id, order=i, order_seed=s.shuffle, service_url=s.service_url,
                           score_isolation=s.score_isolation, stream=s.stream)
            run_dir = run_once(plan, sampler=sampler, progress=progress, host=host, software=software, stack=stack_run)
            summaries.append(summarize(run_dir))
            if stack_run is not None:
                stack_run.run_written(read_manifest(run_dir))
    except RunInterrupted as exc:
        summaries.append(summarize(exc.run_dir))
        interrupted = True
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close()
        if stack_run is not None:
            stack_run.close()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if not summaries:
        print("interrupted before any run was written", file=sys.stderr)
        return 130
    table = comparison_table(summaries)
    report = write_report(s.results, summaries, head, started)
    print(f"\n{table}\n")
    for x in summaries:
        if x["error"]:
            print(f"{x['run_id']}: {x['status']}: {x['error']}", file=sys.stderr)
    print(f"{len(summaries)} run(s) in {hms(time.time() - started)}; table written to {report}")
    if interrupted:
        print("interrupted: remaining runs skipped", file=sys.stderr)
        return 130
    return 0 if all(x["status"] == "complete" for x in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
