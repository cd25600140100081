"""Measure what the measurement costs: CPU time of the local exporters and the sampler over a while.

    python -m loadgen.exporter_overhead [--seconds 30] [--interval 0.5]

Starts the exporters this machine supports (start_local_exporters, watching this process) and a
Sampler scraping them into a temporary run folder, then reports each one's CPU seconds (user+system)
as a share of one core, and the size of series.csv per second. The sampler's CPU is this process's
(its main thread only sleeps meanwhile).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import psutil

from loadgen.local_exporters import start_local_exporters
from loadgen.sampler import Sampler


def cpu_s(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def measure(seconds: float = 30.0, interval_s: float = 0.5) -> dict:
    me = psutil.Process()
    targets, stop = start_local_exporters(os.getpid())
    try:
        exporters = {}
        for child in me.children():
            cmd = child.cmdline()
            if "-m" in cmd and cmd[cmd.index("-m") + 1].startswith("services.exporters."):
                exporters[cmd[cmd.index("-m") + 1].rsplit(".", 1)[1]] = child
        with tempfile.TemporaryDirectory() as tmp:
            sampler = Sampler(targets, interval_s=interval_s)
            before = {n: cpu_s(p) for n, p in exporters.items()}
            own0, wall0 = cpu_s(me), time.monotonic()
            sampler.start(Path(tmp))
            time.sleep(seconds)
            sensors = sampler.stop()
            wall = time.monotonic() - wall0
            own = cpu_s(me) - own0
            after = {n: cpu_s(p) for n, p in exporters.items()}
            size = (Path(tmp) / "series.csv").stat().st_size
            rows = sum(1 for _ in open(Path(tmp) / "series.csv")) - 1
    finally:
        stop()
    parts = {n: after[n] - before[n] for n in exporters}
    parts["sampler"] = own
    total = sum(parts.values())
    return {
        "wall_s": round(wall, 2), "interval_s": interval_s, "targets": sorted(targets),
        "cpu_s": {k: round(v, 3) for k, v in parts.items()},
        "share_of_one_core": {k: round(v / wall, 4) for k, v in parts.items()},
        "total_cpu_s": round(total, 3), "total_share_of_one_core": round(total / wall, 4),
        "series_rows_per_s": round(rows / wall, 1), "series_bytes_per_s": round(size / wall),
        "sensors": [{k: d[k] for k in ("name", "available", "scrapes", "failed_scrapes")} for d in sensors],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadgen.exporter_overhead", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--interval", type=float, default=0.5)
    args = p.parse_args(argv)
    print(json.dumps(measure(args.seconds, args.interval), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
