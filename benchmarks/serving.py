"""Serving benchmark: per CPU configuration, in-process vs over HTTP. Prints a table; not a test.

For each model × configuration, in fresh processes: load time, per-request latency median/p90
in-process and over real HTTP (uvicorn, loopback), HTTP overhead, tokens/s and peak RSS.
Every request generates the same number of tokens (ignore_eos), so engines do equal work.

    python benchmarks/serving.py [--models tiny,shape:bigcode/tiny_starcoder_py] [--configs cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# requests and tokens per request, per model: enough to settle, short enough for 2 cores
WORKLOAD = {"tiny": (40, 64), "default": (12, 32)}


def peak_rss(pid: int | str = "self") -> int:
    """Peak resident set size (VmHWM) of a live process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def workload(model: str) -> tuple[list[str], int]:
    from services.inference.equivalence import PAPER_PROMPTS, read_prompts

    n, tokens = WORKLOAD.get(model, WORKLOAD["default"])
    return read_prompts(PAPER_PROMPTS)[:n], tokens


def p90(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=10)[-1] if len(xs) > 1 else xs[0]


def in_process(model: str, config: str, threads: int) -> dict:
    """Worker: load and generate in this process; print one JSON line."""
    from services.inference.configs import ServingConfig
    from services.inference.engines import EngineSettings
    from services.inference.service import InferenceService
    from services.models.cache import cache_root
    from services.models.resolve import resolve

    service = InferenceService(ServingConfig.parse(config), resolve(model),
                               EngineSettings(threads=threads, cache_dir=cache_root()), warmup=2)
    t0 = time.perf_counter()
    service.load()
    load_s = time.perf_counter() - t0
    prompts, tokens = workload(model)
    lat, toks = [], 0
    for p in prompts:
        g = service.generate(p, max_new_tokens=tokens, ignore_eos=True)
        lat.append(g.latency_s)
        toks += g.completion_tokens
    return {"load_s": load_s, "latencies": lat, "tokens": toks, "peak_rss": peak_rss()}


def over_http(model: str, config: str, threads: int) -> dict:
    """The same workload over real HTTP, against the test suite's subprocess server."""
    from tests.conftest import Server

    t0 = time.perf_counter()
    # the first use of a big model exports it inside the wait: allow for it
    server = Server(config, model, "--threads", str(threads), ready_timeout=1800)
    try:
        ready_s = time.perf_counter() - t0
        prompts, tokens = workload(model)
        client, engine = [], []
        for p in prompts:
            t = time.perf_counter()
            body = server.client.post("/v1/generate", json={"prompt": p, "max_new_tokens": tokens,
                                                            "ignore_eos": True}).json()
            client.append(time.perf_counter() - t)
            engine.append(body["latency_s"])
        rss = peak_rss(server.proc.pid)
    finally:
        server.stop()
    return {"ready_s": ready_s, "client": client, "server": engine, "peak_rss": rss}


def main() -> int:
    from services.inference.__main__ import default_threads
    from services.inference.configs import expand

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="tiny,shape:bigcode/tiny_starcoder_py")
    p.add_argument("--configs", default="cpu")
    p.add_argument("--threads", type=int, default=default_threads())
    p.add_argument("--worker", nargs=2, metavar=("MODEL", "CONFIG"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(in_process(*args.worker, args.threads)))
        return 0
    rows = []
    for model in args.models.split(","):
        for config in expand(args.configs):
            print(f"… {model} {config}", file=sys.stderr, flush=True)
            out = subprocess.run([sys.executable, __file__, "--worker", model, config, "--threads", str(args.threads)],
                                 capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
            if out.returncode != 0:
                rows.append((model, config, f"FAILED: {out.stderr.strip().splitlines()[-1] if out.stderr else '?'}"))
                continue
            ip = json.loads(out.stdout.strip().splitlines()[-1])
            http = over_http(model, config, args.threads)
            med_ip, med_http = statistics.median(ip["latencies"]), statistics.median(http["client"])
            per_req = statistics.median([c - s for c, s in zip(http["client"], http["server"])])
            rows.append((model, config, ip["load_s"], med_ip, p90(ip["latencies"]), med_http, p90(http["client"]),
                         100 * (med_http - med_ip) / med_ip, 100 * per_req / statistics.median(http["server"]),
                         ip["tokens"] / sum(ip["latencies"]), max(ip["peak_rss"], http["peak_rss"]) / 2**20))
    print(f"\nServing benchmark ({args.threads} threads, {os.cpu_count()} CPUs; latency in ms; equal work: ignore_eos)")
    head = ("model", "config", "load s", "in-proc p50", "p90", "HTTP p50", "p90", "HTTP ovh vs in-proc %",
            "HTTP ovh per req %", "tok/s", "peak RSS MiB")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        if len(r) == 3:
            print(f"| {r[0]} | {r[1]} | {r[2]} |")
            continue
        m, c, load, a, b, d, e, ovh, ovh_req, tps, rss = r
        print(f"| {m} | {c} | {load:.2f} | {a * 1e3:.1f} | {b * 1e3:.1f} | {d * 1e3:.1f} | {e * 1e3:.1f} | "
              f"{ovh:+.1f} | {ovh_req:.2f} | {tps:.0f} | {rss:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
