"""The bench's settings: its command line, the environment, presets and defaults, checked and
resolved into one :class:`Settings` before anything starts (a bad value is a :class:`UsageError`,
exit 2, nothing started). ``python -m loadgen.bench`` (loadgen/bench.py) runs them."""

from __future__ import annotations

import argparse
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

from loadgen import humaneval
from loadgen.preflight import PreflightError, check_results, run_bytes
from loadgen.prompts import PromptError, PromptSet, load_prompts
from loadgen.protocol import default_threads
from loadgen.runners import RUNNER_CHOICES, RunnerError, choose_runner

PRESETS = {
    "paper": {"WARMUP": "300", "COOLDOWN": "300", "REPS": "10"},  # the study: 5 min idle each side, 10 reps
}
DEFAULTS = {"CONFIG": "cpu", "PRECISION": "fp32", "MODEL": "tiny", "REPS": "1", "WARMUP": "5", "COOLDOWN": "5", "PROMPTS": "paper",
            "RESULTS": "results", "RUNNER": "auto", "PRESET": "",
            "CPU_SENSOR": "auto", "GPU_SENSOR": "auto", "WALL_METER": "auto", "TDP_WATTS": "", "IDLE_WATTS": "",
            "ENERGIBRIDGE_BIN": "energibridge", "SCORE_ISOLATION": "auto"}

EPILOG = """\
every option can also come from an environment variable (how `make bench` passes them):
  CONFIG PRECISION MODEL REPS WARMUP COOLDOWN PROMPTS RESULTS RUNNER PRESET SCORE_ISOLATION
  CPU_SENSOR GPU_SENSOR WALL_METER TDP_WATTS IDLE_WATTS ENERGIBRIDGE_BIN
  precedence: command line > environment > --preset > built-in default (an empty variable is unset)

CONFIG: one configuration (onnx-cpu), a comma list (torch-cpu,ov-cpu), or a group: cpu, cuda, all; a name may
        carry its precision (onnx-cpu@int8).
PRECISION: fp32 (default, the study's), bf16, fp16, int8, int4, or a comma list (fp32,int8: each configuration at
        each); what each engine serves is its own declaration, a pair it does not serve is refused before
        anything starts. A run at a lower precision is labelled <config>@<precision> (its run id, tables,
        dashboards); the analysis compares it with the same configuration at fp32.
MODEL:  tiny (built here, offline), shape:<hf id>, a registry name, a Hugging Face id, or a folder.
PROMPTS: paper (the study's 164 prompts, hash-checked), humaneval (the 164 whole HumanEval prompts, greedy,
        max_new_tokens 192 unless given, prompts that do not fit the context skipped and counted; each
        completion scored in a sandbox after the run: pass@1, energy per solved task; SCORE_ISOLATION=auto|
        docker|namespace|unsafe-local, checked before anything starts), or a JSONL file
        (python -m loadgen.generate_prompts).
RUNNER: auto (docker when a Docker engine answers and every configuration's image exists, else native), native, docker.

sensors (each choice is checked before anything starts: one this machine cannot satisfy is an exit 2
that says how to fix it; the choice is recorded in every run.json's sensor entries):
  CPU_SENSOR  auto (rapl where powercap is readable, else the estimate), rapl (Linux powercap;
              WATTSERVE_POWERCAP_ROOT for another tree), energibridge (ENERGIBRIDGE_BIN), estimate
              (ESTIMATED: idle + utilization x (TDP - idle); TDP_WATTS, IDLE_WATTS; default TDP from
              CodeCarbon's CPU table, else 4 W per logical CPU)
  GPU_SENSOR  auto (nvml where NVML works), nvml, nvidia-smi (the study's query), dcgm=<URL> (a running
              dcgm-exporter's /metrics, e.g. dcgm=http://127.0.0.1:9400/metrics), none
  WALL_METER  auto ($NETIO_URL if set), none, or a NETIO's netio.json URL; credentials only in
              NETIO_USER / NETIO_PASSWORD (never on a command line)

examples:
  python -m loadgen.bench                                  # every CPU config on tiny, 1 rep, 5 s idle windows
  python -m loadgen.bench --config onnx-cpu,torch-cpu --reps 3
  python -m loadgen.bench --config onnx-cpu,ov-cpu --precision fp32,int8 --model shape:bigcode/tiny_starcoder_py
  python -m loadgen.bench --preset paper --model codeparrot-small      # 300 s idle each side, 10 reps
  CONFIG=ov-cpu MODEL=tiny WARMUP=1 COOLDOWN=1 python -m loadgen.bench

Ctrl-C stops the running service, marks that run 'interrupted', and prints the table so far.
exit status: 0 every run complete, 1 a run failed, 2 bad input (nothing started), 130 interrupted.
"""


class UsageError(ValueError):
    """Bad input, found before anything starts."""


@dataclass(frozen=True)
class Settings:
    configs: list[str]            # variant labels in the order asked: onnx-cpu, onnx-cpu@int8 (services/inference/variants.py)
    model: str
    reps: int
    warmup_s: float
    cooldown_s: float
    prompts: PromptSet
    results: Path
    runner: str
    runner_reason: str
    request_timeout_s: float
    ready_timeout_s: float
    max_new_tokens: int | None
    max_length: int | None
    ignore_eos: bool
    threads: int
    preset: str | None
    shuffle: int | None
    revision: str | None
    trust_remote_code: bool
    score_isolation: str = "auto"
    sensors: object = None        # loadgen.sampling.SensorChoice; None: --no-sensors
    sensors_resolved: dict | None = None  # what the choice is on this machine (check_sensors)
    stack: object = None          # loadgen.stack.Stack the docker runs join; None: no live stack
    stack_note: str = ""
    service_url: str | None = None  # runner external: drive this running service
    exporters: dict | None = None   # --exporter: sample these running exporters instead of starting any
    stream: bool = False            # --stream: Locust replays with SSE on /v1/completions
    left_out: dict | None = None    # opt-in configurations CONFIG's group left out, not installed here: {config: why}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadgen.bench", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="configuration(s): name, comma list, cpu, cuda, all [CONFIG; default cpu]")
    p.add_argument("--precision", help="fp32 | bf16 | fp16 | int8 | int4, or a comma list: every configuration at "
                                       "each [PRECISION; default fp32]")
    p.add_argument("--model", help="model to serve [MODEL; default tiny]")
    p.add_argument("--reps", help="repetitions of every configuration [REPS; default 1; paper preset 10]")
    p.add_argument("--warmup", help="idle seconds before inference, service loaded [WARMUP; default 5; paper 300]")
    p.add_argument("--cooldown", help="idle seconds after inference [COOLDOWN; default 5; paper 300]")
    p.add_argument("--prompts", help="prompt set: paper or a JSONL file [PROMPTS; default paper]")
    p.add_argument("--results", help="results directory [RESULTS; default results]")
    p.add_argument("--runner", help=f"{' | '.join(RUNNER_CHOICES)} [RUNNER; default auto]")
    p.add_argument("--preset", help=f"named settings: {', '.join(f'{k} ({v})' for k, v in PRESETS.items())} [PRESET]")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per request (default 300)")
    p.add_argument("--ready-timeout", type=float, default=600.0,
                   help="seconds allowed for the service to load and warm up (default 600)")
    limit = p.add_mutually_exclusive_group()
    limit.add_argument("--max-new-tokens", type=int, help="new tokens per request at most")
    limit.add_argument("--max-length", type=int, help="prompt + new tokens at most (default 128, the study's)")
    p.add_argument("--ignore-eos", action="store_true", help="always generate up to the limit")
    p.add_argument("--stream", action="store_true",
                   help="replay with streamed completions (SSE on /v1/completions; needs --max-new-tokens): TTFT and "
                        "ITL as a client sees them (default: non-streamed /v1/generate, the study's workload) [STREAM=1]")
    p.add_argument("--threads", type=int, default=None,
                   help=f"CPU threads for every engine (default: all usable cores, here {default_threads()})")
    order = p.add_mutually_exclusive_group()
    order.add_argument("--shuffle", type=int, metavar="SEED", default=None,
                       help="seed of the run order (default: drawn, printed and recorded in every run.json)")
    order.add_argument("--fixed-order", action="store_true",
                       help="run the configurations in the order given, every repetition (not randomized)")
    p.add_argument("--sample-interval", type=float, default=0.5,
                   help="seconds between sensor scrapes (default 0.5)")
    p.add_argument("--no-sensors", action="store_true",
                   help="start no exporters: energy is recorded as missing (never 0 J)")
    p.add_argument("--cpu-sensor", help="auto | rapl | energibridge | estimate [CPU_SENSOR; default auto]")
    p.add_argument("--gpu-sensor", help="auto | nvml | nvidia-smi | dcgm=<URL> | none [GPU_SENSOR; default auto]")
    p.add_argument("--wall-meter", help="auto | none | <netio.json URL>, credentials in NETIO_USER/NETIO_PASSWORD "
                                        "[WALL_METER; default auto: $NETIO_URL]")
    p.add_argument("--tdp-watts", help="the estimate's CPU power at full load, W [TDP_WATTS; default: CodeCarbon's "
                                       "table for this CPU, else 4 W per logical CPU]")
    p.add_argument("--idle-watts", help="the estimate's idle floor, W [IDLE_WATTS; default 20%% of the TDP]")
    p.add_argument("--energibridge-bin", help="EnergiBridge executable [ENERGIBRIDGE_BIN; default energibridge]")
    p.add_argument("--max-device-watts", type=float, default=10_000.0,
                   help="a sensor sample implying more power than this per device is bad data, dropped and "
                        "flagged (default 10000)")
    p.add_argument("--service-url", help="drive this running service instead of starting one (runner external: "
                                         "no prepare, nothing started or stopped; its /info must serve CONFIG), "
                                         "e.g. the compose stack's http://inference:8000 [SERVICE_URL]")
    p.add_argument("--exporter", action="append", default=[], metavar="NAME=URL",
                   help="sample this running exporter (its /metrics URL) instead of starting this machine's; "
                        "repeatable, e.g. estimate=http://estimate:9656/metrics (the compose loadgen's)")
    p.add_argument("--score-isolation", help="humaneval: the sandbox completions are scored in: auto | docker | "
                   "namespace | unsafe-local (no sandbox, labelled in every result) [SCORE_ISOLATION; default auto]")
    p.add_argument("--revision", default=None, help="hub revision of MODEL")
    p.add_argument("--trust-remote-code", action="store_true", help="allow a hub model's own code to run")
    return p


def pick(cli, name: str, environ, preset: dict) -> str:
    """Command line > environment > preset > default; an empty environment variable is unset."""
    if cli is not None:
        return str(cli)
    if environ.get(name, "").strip():
        return environ[name].strip()
    return preset.get(name, DEFAULTS[name])


def _number(text: str, name: str, kind=float, minimum=None, strict=False):
    try:
        value = kind(text)
    except ValueError:
        raise UsageError(f"{name} must be a{'n integer' if kind is int else ' number'}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise UsageError(f"{name} must be finite, got {text!r}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise UsageError(f"{name} must be {'>' if strict else '>='} {minimum}, got {text}")
    return value


def resolve_settings(args: argparse.Namespace, environ=os.environ,
                     probe_docker=None) -> Settings:
    """Check every input; raise :class:`UsageError` before anything is started or written."""
    from services.inference.configs import ConfigError, require_cuda
    from services.inference.variants import expand_variants, left_out_of_groups
    from services.models.resolve import ModelError, resolve

    preset_name = pick(args.preset, "PRESET", environ, {}).strip().lower() or None
    if preset_name and preset_name not in PRESETS:
        raise UsageError(f"unknown preset {preset_name!r}; available: {', '.join(PRESETS)}")
    preset = PRESETS.get(preset_name, {})
    get = lambda cli, name: pick(cli, name, environ, preset)  # noqa: E731
    try:
        variants = expand_variants(get(args.config, "CONFIG"), get(args.precision, "PRECISION"))
        left_out = left_out_of_groups(get(args.config, "CONFIG"))
        configs = [v.label for v in variants]
        if any(v.config.endswith("-cuda") for v in variants):
            require_cuda()
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    reps = _number(get(args.reps, "REPS"), "REPS", int, minimum=1)
    warmup = _number(get(args.warmup, "WARMUP"), "WARMUP (seconds)", minimum=0)
    cooldown = _number(get(args.cooldown, "COOLDOWN"), "COOLDOWN (seconds)", minimum=0)
    timeout = _number(str(args.timeout), "--timeout (seconds)", minimum=0, strict=True)
    ready_timeout = _number(str(args.ready_timeout), "--ready-timeout (seconds)", minimum=0, strict=True)
    for name in ("max_new_tokens", "max_length"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    threads = args.threads if args.threads is not None else default_threads()
    if threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    model = get(args.model, "MODEL").strip()
    try:
        resolve(model, revision=args.revision, trust_remote_code=args.trust_remote_code, build=False)
    except ModelError as exc:
        raise UsageError(str(exc)) from None
    try:
        prompts = load_prompts(get(args.prompts, "PROMPTS"))
    except PromptError as exc:
        raise UsageError(str(exc)) from None
    max_new_tokens = args.max_new_tokens
    isolation = get(args.score_isolation, "SCORE_ISOLATION").strip().lower()
    if prompts.name == humaneval.NAME:
        if args.max_length is not None:
            raise UsageError("the humaneval workload takes --max-new-tokens (prompts are whole problems), "
                             "not --max-length")
        max_new_tokens = max_new_tokens or humaneval.DEFAULT_MAX_NEW_TOKENS
        from scoring.sandbox import SandboxUnavailable, choose
        try:
            choose(isolation)
        except (SandboxUnavailable, ValueError) as exc:
            raise UsageError(f"SCORE_ISOLATION: {exc}") from None
    stream = args.stream or environ.get("STREAM", "").strip().lower() in ("1", "true", "yes")
    if stream and not max_new_tokens:
        raise UsageError("--stream (STREAM=1) needs --max-new-tokens: OpenAI's /v1/completions limits new tokens "
                         "only (max_tokens), while the study's max_length counts the prompt")
    results = Path(get(args.results, "RESULTS")).expanduser().resolve()  # children run elsewhere
    service_url = (args.service_url or environ.get("SERVICE_URL", "")).strip() or None
    exporters = parse_exporters(args.exporter)
    if service_url:
        if len(configs) != 1:
            raise UsageError(f"--service-url drives one running service: CONFIG must be its one configuration, "
                             f"got {', '.join(configs)}")
        runner, why = "external", f"the running service at {service_url}"
    else:
        try:
            runner, why = choose_runner(get(args.runner, "RUNNER"), configs=list(dict.fromkeys(v.config for v in variants)),
                                        **({"probe": probe_docker} if probe_docker else {}))
        except RunnerError as exc:
            raise UsageError(str(exc)) from None
    sensors, resolved = sensor_settings(args, get, environ)
    stack, stack_note = stack_settings(runner, sensors, environ)
    try:  # last: a refused start leaves no folder behind
        check_results(results, run_bytes(warmup, cooldown, prompts.count, args.sample_interval))
    except PreflightError as exc:
        raise UsageError(f"RESULTS: {exc}") from None
    return Settings(configs=configs, model=model, reps=reps, warmup_s=warmup, cooldown_s=cooldown, prompts=prompts,
                    results=results, runner=runner, runner_reason=why, request_timeout_s=timeout,
                    ready_timeout_s=ready_timeout, max_new_tokens=max_new_tokens, max_length=args.max_length,
                    ignore_eos=args.ignore_eos, threads=threads, preset=preset_name,
                    shuffle=None if args.fixed_order else (args.shuffle if args.shuffle is not None
                                                            else random.SystemRandom().randrange(2**31)),
                    revision=args.revision, trust_remote_code=args.trust_remote_code,
                    score_isolation=isolation, sensors=sensors,
                    sensors_resolved=resolved, stack=stack, stack_note=stack_note, service_url=service_url,
                    exporters=exporters, stream=stream, left_out=left_out)


def parse_exporters(items: list[str]) -> dict[str, str]:
    """``--exporter NAME=URL`` (repeatable) → {name: url}."""
    from urllib.parse import urlsplit

    out = {}
    for item in items:
        name, sep, url = item.partition("=")
        if not sep or not name.strip() or urlsplit(url.strip()).scheme not in ("http", "https"):
            raise UsageError(f"--exporter {item!r}: give NAME=http://host:port/metrics")
        out[name.strip()] = url.strip()
    return out


def stack_settings(runner: str, sensors, environ) -> tuple[object, str]:
    """The live stack the docker runs join (loadgen/stack.py; WATTSERVE_STACK=auto|off|<project>), and why
    (not): only the docker runner's containers can join its network."""
    from loadgen.stack import StackError, discover, requested, sensor_targets

    if runner == "external":
        return None, "not joined (runner external: the service and the exporters given are someone else's)"
    if runner != "docker":
        if requested(environ) not in ("auto", "off", "none", "0", "no"):
            raise UsageError(f"WATTSERVE_STACK={requested(environ)}: only the docker runner joins a stack "
                             "(RUNNER=docker)")
        return None, "not joined (the native runner's service is not on the stack's network; RUNNER=docker joins it)"
    try:
        stack, why = discover(environ)
        if stack is not None and sensors is not None:
            sensor_targets(stack, sensors)
    except StackError as exc:
        raise UsageError(f"stack: {exc}") from None
    return stack, why


def sensor_settings(args: argparse.Namespace, get, environ) -> tuple[object, dict | None]:
    """The sensor choice, checked in syntax and against this machine (UsageError: how to fix it)."""
    from loadgen.sampling import SensorChoice, SensorError, check_sensors
    from services.exporters.common import url_secrets

    if args.wall_meter is not None and url_secrets(args.wall_meter):
        raise UsageError("--wall-meter: put the NETIO's credentials in NETIO_USER / NETIO_PASSWORD, never on a "
                         "command line (any user can read it)")
    names = ("CPU_SENSOR", "GPU_SENSOR", "WALL_METER", "TDP_WATTS", "IDLE_WATTS", "ENERGIBRIDGE_BIN")
    cli = (args.cpu_sensor, args.gpu_sensor, args.wall_meter, args.tdp_watts, args.idle_watts, args.energibridge_bin)
    values = [get(c, n) for c, n in zip(cli, names)]
    if args.no_sensors:
        chosen = [n for c, n in zip(cli, names) if c is not None]
        if chosen:
            raise UsageError(f"--no-sensors starts no sensor: drop it or the sensor option(s) "
                             f"{', '.join('--' + n.lower().replace('_', '-') for n in chosen)}")
        return None, None
    try:
        choice = SensorChoice.parse(*values, max_device_watts=args.max_device_watts)
        return choice, check_sensors(choice, environ=environ)
    except SensorError as exc:
        raise UsageError(f"sensors: {exc}") from None
