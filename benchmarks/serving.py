"""Serving benchmark: what a client sees against what the engine spends, per CPU configuration. Prints
tables; not a test.

    python benchmarks/serving.py [--models tiny,shape:bigcode/tiny_starcoder_py] [--configs cpu]
                                 [--rounds 5] [--requests 20] [--tokens 16] [--stream] [--baseline DIR]

For each model, every configuration's service (real uvicorn, loopback) and an in-process worker (the
same service without HTTP) are started once; then, round after round, each configuration gets a batch of
in-process requests and a batch of HTTP requests, the configurations in a rotating order. Interleaved
like this, a change in the machine's load (other work on a shared host) falls on every configuration and
on both paths alike, and the spread over the rounds shows how steady the numbers are.

The **overhead** of a request is what its client waits for beyond the engine's time: client latency −
the service's ``latency_s`` (the engine's span: tokenization, validation, the hop to the serving thread,
HTTP and JSON are outside it). It is a fixed cost per request, so the requests are short (``--tokens``)
and all generate the same number of tokens (ignore_eos): equal work. ``--stream`` times streamed
completions (SSE) instead (the engine time from the service's /metrics), with the client's time to
first chunk. ``--baseline DIR`` also starts each configuration from another checkout (e.g. ``git worktree
add /tmp/before <rev>``) and interleaves it request batch by request batch: a before/after comparison on
the same machine at the same time (``--baseline-without httptools,uvloop``: as it served before those
were installed). On a shared host, ``nice -n -10`` in front keeps other work from setting the numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.quantities import quantile  # noqa: E402
from benchmarks.serving_clients import CLIENTS, Client, Timing  # noqa: E402
from benchmarks.serving_parts import (ROOT, FloorProcess, InProcessWorker, ServiceProcess, floor_name,  # noqa: E402
                                     peak_rss)

DEFAULT_REQUESTS = {"tiny": 20, "default": 8}  # per configuration per round: enough to settle, short for 2 cores


@dataclass
class Target:
    """One service under test (a configuration, from this checkout or the baseline's) and what it measured."""

    model: str
    config: str
    label: str
    service: ServiceProcess
    worker: InProcessWorker | None = None
    client: Client | None = None
    ready_s: float = 0.0
    http: list[list[Timing]] = field(default_factory=list)      # per round
    in_process: list[list[float]] = field(default_factory=list)  # per round

    @property
    def is_floor(self) -> bool:
        return isinstance(self.service, FloorProcess)


def workload(n: int) -> list[str]:
    from services.inference.equivalence import PAPER_PROMPTS, read_prompts

    prompts = read_prompts(PAPER_PROMPTS)
    return [prompts[i % len(prompts)] for i in range(n)]


def ms(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x * 1e3, fmt)


def spread(per_round: list[float]) -> str:
    """The range of the per-round medians, in ms."""
    return "-" if not per_round else f"{min(per_round) * 1e3:.2f}–{max(per_round) * 1e3:.2f}"


def start_targets(model: str, configs: list[str], args) -> list[Target]:
    targets = []
    logs = ROOT / ".pytest_cache"
    for config in configs:
        for label, root in [("", ROOT)] + ([("baseline", Path(args.baseline))] if args.baseline else []):
            log = logs / f"bench-serving-{config}{'-' + label if label else ''}.log" if logs.exists() else None
            without = tuple(m for m in (args.baseline_without or "").split(",") if m) if label else ()
            targets.append(Target(model, config, label or "this", ServiceProcess(config, model, args.threads, root,
                                                                                log=log, without=without)))
    if args.floor:  # the same client against no service at all: the part of the overhead no service removes
        for hold_on in (None, "loop", "thread"):
            floor = FloorProcess(args.tokens, hold_on=hold_on)
            targets.append(Target(model, floor.config, "floor", floor))
    for t in targets:
        print(f"… {model} {t.config} ({t.label}): waiting for /ready", file=sys.stderr, flush=True)
        t.ready_s = t.service.wait_ready(args.ready_timeout)
        t.client = CLIENTS[args.client](t.service.port)
        if t.label == "this" and not args.no_in_process and not t.is_floor:
            t.worker = InProcessWorker(t.config, model, args.threads)
    return targets


def measure(targets: list[Target], prompts: list[str], args) -> None:
    engine = []
    for t in targets:  # untimed requests first: first-request costs paid
        t.client.reconnect()
        for p in prompts[:1 if t.is_floor else 3]:
            timing = (t.client.stream if args.stream else t.client.generate)(p, args.tokens)
            if not t.is_floor and timing.engine_s:
                engine.append(timing.engine_s)
    held = [t.service for t in targets if t.is_floor and t.service.hold_on]
    if held and engine:  # the held floors wait as long as the services' engines take
        hold = statistics.median(engine)
        print(f"… the held floors wait {hold * 1e3:.1f} ms per answer (the services' engine median)",
              file=sys.stderr, flush=True)
        for floor in held:
            floor.hold(hold)
    for r in range(args.rounds):
        order = targets[r % len(targets):] + targets[:r % len(targets)]
        for t in order:
            if t.worker is not None:
                t.in_process.append(t.worker.run(prompts, args.tokens))
            call = t.client.stream if args.stream else t.client.generate
            t.client.reconnect()
            t.http.append([call(p, args.tokens) for p in prompts])
        print(f"  round {r + 1}/{args.rounds} done (load average {os.getloadavg()[0]:.1f})", file=sys.stderr,
              flush=True)


def rows_for(targets: list[Target]) -> list[tuple]:
    rows = []
    for t in targets:
        timings = [x for batch in t.http for x in batch]
        over = [x.overhead_s for x in timings if x.overhead_s is not None]
        per_round = [statistics.median([x.overhead_s for x in b if x.overhead_s is not None]) for b in t.http
                     if any(x.overhead_s is not None for x in b)]
        engine = [x.engine_s for x in timings if x.engine_s is not None]
        inproc = [x for batch in t.in_process for x in batch]
        tokens = sum(x.tokens for x in timings)
        rss = max(peak_rss(t.service.proc.pid), t.worker.rss() if t.worker else 0)
        rows.append((t.model, t.config, t.label, t.worker.load_s if t.worker else None, t.ready_s,
                     quantile(inproc, 0.5), quantile(inproc, 0.9), quantile(engine, 0.5),
                     quantile([x.client_s for x in timings], 0.5), quantile([x.client_s for x in timings], 0.9),
                     quantile(over, 0.5), quantile(over, 0.25), quantile(over, 0.75), spread(per_round),
                     quantile([x.ttft_s for x in timings if x.ttft_s is not None], 0.5),
                     tokens / sum(engine) if engine and sum(engine) > 0 and not t.is_floor
                     else None, rss / 2**20, len(over)))
    return rows


def print_table(rows: list[tuple], args, load: tuple[float, float]) -> None:
    mode = "streamed /v1/completions (SSE)" if args.stream else f"non-streamed /v1/generate, {args.client} client"
    print(f"\nServing benchmark: {mode}, {args.tokens} tokens a request (ignore_eos: equal work), "
          f"{args.rounds} rounds interleaved; {args.threads} threads, {os.cpu_count()} CPUs, load average "
          f"{load[0]:.1f} at the start and {load[1]:.1f} at the end; times in ms")
    head = ("model", "config", "checkout", "load s", "ready s", "in-proc p50", "p90", "engine p50 (HTTP)",
            "client p50", "p90", "overhead p50", "IQR", "rounds' p50 range", "TTFT p50", "tok/s (engine)",
            "peak RSS MiB", "n")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for (m, c, label, load_s, ready_s, ip50, ip90, e50, c50, c90, o50, o25, o75, rng, ttft, tps, rss, n) in rows:
        print(f"| {m} | {c} | {label} | {'-' if load_s is None else f'{load_s:.1f}'} | {ready_s:.1f} | "
              f"{ms(ip50, '.1f')} | {ms(ip90, '.1f')} | {ms(e50, '.1f')} | {ms(c50, '.1f')} | {ms(c90, '.1f')} | "
              f"{ms(o50)} | {ms(o25)}–{ms(o75)} | {rng} | {ms(ttft)} | {'-' if tps is None else f'{tps:.0f}'} | "
              f"{rss:.0f} | {n} |")
    print("\noverhead = client latency − the service's engine time (latency_s; streamed: its /metrics), per "
          "request; IQR = its 25th–75th percentile; rounds' p50 range = the lowest and highest per-round median. "
          "TTFT: send to first token (non-streamed: the service's first_token_at; streamed: the first chunk)."
          + (" http floor: a bare ASGI app on the same uvicorn stack answering at once (benchmarks/serving_floor.py): "
             "its overhead is the client's, the loopback's and uvicorn's, which no service removes; held on a loop / "
             "on a thread: the same app waiting the services' engine median before it answers, on its event loop "
             "(the least any server does while its engine works) or on one worker thread (a service that keeps its "
             "event loop free while it generates), its wait counted as engine time: what waiting itself costs a "
             "request on this machine." if args.floor else ""))
    for line in own_parts(rows):
        print(line)


def own_parts(rows: list[tuple]) -> list[str]:
    """Each service's own part of the overhead: its median above the floor held on a thread (the same
    model's), the least a service with a serving thread pays on this machine for waiting on its engine."""
    floors = {r[0]: r[10] for r in rows if r[1] == floor_name("thread") and r[10] is not None}
    out = []
    for r in rows:
        if r[2] != "floor" and r[10] is not None and r[0] in floors:
            out.append(f"{r[0]} {r[1]} ({r[2]}): its own part of the overhead, above the floor held on a thread: "
                       f"{ms(r[10] - floors[r[0]])} ms")
    return out


def main() -> int:
    from services.inference.__main__ import default_threads
    from services.inference.configs import expand

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="tiny,shape:bigcode/tiny_starcoder_py", help="comma list")
    p.add_argument("--configs", default="cpu", help="configurations (a comma list, cpu, ...)")
    p.add_argument("--threads", type=int, default=default_threads(), help="engine threads of every service")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--requests", type=int, default=None,
                   help=f"requests per configuration per round (default {DEFAULT_REQUESTS['tiny']} for tiny, "
                        f"{DEFAULT_REQUESTS['default']} for others)")
    p.add_argument("--tokens", type=int, default=16, help="new tokens per request (default 16)")
    p.add_argument("--stream", action="store_true", help="time streamed completions (SSE) instead")
    p.add_argument("--baseline", metavar="DIR", help="another checkout whose services run interleaved beside "
                                                     "these (a before/after comparison)")
    p.add_argument("--baseline-without", metavar="MODULES",
                   help="modules the baseline's services must not import, a comma list (e.g. httptools,uvloop: "
                        "the baseline as it served before they were installed)")
    p.add_argument("--no-in-process", action="store_true", help="HTTP only (no in-process workers)")
    p.add_argument("--client", choices=sorted(CLIENTS), default="stdlib",
                   help="stdlib: http.client, keep-alive (default); raw: the request's bytes on a bare socket, the "
                        "answer read by Content-Length (non-streamed only): what the standard library's client adds")
    p.add_argument("--floor", action="store_true",
                   help="add rows for a bare ASGI app on the same HTTP stack (no service; non-streamed only), timed "
                        "by the same client, interleaved: answering at once, and holding each answer for the "
                        "services' engine time on its event loop and on a worker thread: the overhead's floors")
    p.add_argument("--ready-timeout", type=float, default=1800, help="seconds a service may take to be ready "
                                                                     "(a big model's first export happens here)")
    args = p.parse_args()
    if args.rounds < 1 or args.tokens < 1 or (args.requests is not None and args.requests < 1):
        p.error("--rounds, --requests and --tokens must be at least 1")
    if args.stream and (args.floor or args.client != "stdlib"):
        p.error("--floor and --client raw time non-streamed requests only")
    if args.baseline and not (Path(args.baseline) / "services" / "inference").is_dir():
        p.error(f"--baseline {args.baseline}: not a wattserve checkout (no services/inference there)")
    load0 = os.getloadavg()[0]
    rows = []
    for model in args.models.split(","):
        n = args.requests or DEFAULT_REQUESTS.get(model, DEFAULT_REQUESTS["default"])
        targets = []
        try:
            targets = start_targets(model, expand(args.configs), args)
            measure(targets, workload(n), args)
            rows += rows_for(targets)
        finally:
            for t in targets:
                if t.client:
                    t.client.close()
                if t.worker:
                    t.worker.stop()
                t.service.stop()
    print_table(rows, args, (load0, os.getloadavg()[0]))
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    rc = main()
    print(f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    sys.exit(rc)
