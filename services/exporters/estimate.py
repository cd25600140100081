"""ESTIMATED CPU power and energy, for hosts where nothing measures CPU energy (no RAPL, no EnergiBridge).

    python -m services.exporters.estimate --port 9656 [--tdp-watts W] [--idle-watts W]

Model: power = idle + utilization x (TDP - idle), utilization = system-wide busy CPU share. Because the
model is linear in utilization, the energy between two scrapes is exact *for the model* at any scrape
rate: idle x dt + (TDP - idle) x busy CPU seconds / logical CPUs. Every series says estimated="true",
source="estimate", method="power-integral"; wattserve_estimate_info carries the TDP, the idle floor and
where the TDP came from.

Default TDP: CodeCarbon's maintained table of vendor TDPs, ``data/cpu_power.csv`` (shipped here from
the codecarbon wheel named in CPU_TABLE_SOURCE, MIT licence in data/cpu_power.LICENSE; refresh it with
scripts/update_cpu_power.sh), matched as CodeCarbon matches it: the model string exactly (case aside),
then the same with "(R)", "CPU @ 2.10GHz"-style suffixes and "N-Core Processor" removed, then a unique row
whose words all occur in the model's (or the model's in the row's); x sockets. Any other CPU (an ambiguous
or unknown name, as in most VMs: "AMD EPYC") -> 4 W per logical CPU (CodeCarbon's own fallback).
Default idle floor: 20 % of TDP (about the ratio of the per-vCPU minimum and maximum watts, 0.74 / 3.5 W,
that Cloud Carbon Footprint uses). In a VM with a recognised model only part of the package is yours, so
pass --tdp-watts. ``tdp_source`` in wattserve_estimate_info says which row (or the fallback) was used.
These are proxies of time and utilization, not measurements.
"""

from __future__ import annotations

import csv
import functools
import os
import platform
import re
import time
from pathlib import Path

from services.exporters.common import (Exporter, claim_port, cpu_busy_total, energy_family, exporter_parser,
                                       gauge, power_family, run_exporter, setup_logging)

CPU_TABLE = Path(__file__).resolve().parent / "data" / "cpu_power.csv"   # Name,TDP (W per socket)
CPU_TABLE_SOURCE = "codecarbon-3.3.2"  # the wheel data/hardware/cpu_power.csv came from (sha256 in README)
WATTS_PER_THREAD = 4.0
IDLE_FRACTION = 0.2


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, int]:
    """(model name, sockets) from /proc/cpuinfo, else platform.processor() and 1 socket."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return platform.processor() or "unknown", 1
    names = re.findall(r"^model name\s*:\s*(.+)$", text, re.M)
    sockets = len(set(re.findall(r"^physical id\s*:\s*(\d+)$", text, re.M))) or 1
    return (names[0].strip() if names else platform.processor() or "unknown"), sockets


def _normalize(name: str) -> str:
    """CodeCarbon's clean-up of a model string: no (R)/(TM), no " CPU @ 2.10GHz", no "16-Core Processor"."""
    n = re.sub(r"\((r|tm)\)", "", name.lower())
    n = n.split(" cpu @ ")[0]
    n = re.sub(r"@\s*\d+(\.\d+)?\s*ghz", "", n)
    n = re.sub(r"\b\d+-core processor\b|\bprocessor\b|\bcpu\b", "", n)
    return re.sub(r"\s+", " ", n).strip()


@functools.lru_cache(maxsize=4)
def cpu_table(path: Path = CPU_TABLE) -> tuple[dict[str, tuple[str, float]], list[tuple[frozenset, str, float]]]:
    """({normalized name: (name, W)}, [(words, name, W)]) from a Name,TDP CSV; empty if it is missing."""
    exact: dict[str, tuple[str, float]] = {}
    words: list[tuple[frozenset, str, float]] = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                try:
                    name, watts = row["Name"].strip(), float(row["TDP"])
                except (KeyError, TypeError, ValueError):
                    continue
                if name and watts > 0:
                    exact.setdefault(name.lower(), (name, watts))
                    exact.setdefault(_normalize(name), (name, watts))
                    words.append((frozenset(_normalize(name).split()), name, watts))
    except OSError:
        pass
    return exact, words


def match_cpu(model: str, path: Path = CPU_TABLE) -> tuple[str, float] | None:
    """(table row name, TDP W per socket) for a CPU model string, or None when unknown or ambiguous."""
    exact, words = cpu_table(path)
    for key in (model.strip().lower(), _normalize(model)):
        if key in exact:
            return exact[key]
    mine = frozenset(_normalize(model).split())
    if not mine:
        return None
    hits = {(name, w) for ws, name, w in words if ws and (ws <= mine or mine <= ws)}
    return hits.pop() if len(hits) == 1 else None


def default_tdp(model: str, sockets: int, threads: int, path: Path = CPU_TABLE) -> tuple[float, str]:
    """(TDP watts, how it was chosen: ``table:<source>:<row>x<sockets>`` or ``fallback:…``)."""
    hit = match_cpu(model, path)
    if hit is not None:
        name, watts = hit
        return watts * sockets, f"table:{CPU_TABLE_SOURCE}:{name} x{sockets}"
    return WATTS_PER_THREAD * threads, f"fallback:{WATTS_PER_THREAD:g}W/thread x{threads}"


class EstimateExporter(Exporter):
    sensor = "estimate"
    source = "estimate"

    def __init__(self, tdp_w: float | None = None, idle_w: float | None = None) -> None:
        super().__init__()
        self.model, sockets = cpu_model()
        threads = os.cpu_count() or 1
        if tdp_w is None:
            tdp_w, self.tdp_source = default_tdp(self.model, sockets, threads)
        else:
            self.tdp_source = "flag"
        self.tdp_w = float(tdp_w)
        self.idle_w = float(idle_w) if idle_w is not None else IDLE_FRACTION * self.tdp_w
        if not 0 <= self.idle_w <= self.tdp_w:
            raise ValueError(f"idle {self.idle_w} W must be between 0 and the TDP {self.tdp_w} W")
        self.joules = 0.0
        self.watts = self.idle_w
        self.last_t = time.monotonic()
        self.last_cpu = cpu_busy_total()

    def advance(self) -> None:
        now, (busy, total) = time.monotonic(), cpu_busy_total()
        dt = now - self.last_t
        (b0, t0) = self.last_cpu
        if dt <= 0:
            return
        if total > t0:
            util = max(0.0, min(1.0, (busy - b0) / (total - t0)))
            self.watts = self.idle_w + util * (self.tdp_w - self.idle_w)
            self.last_cpu = (busy, total)
        self.joules += self.watts * dt
        self.last_t = now

    def read(self):
        self.advance()
        energy, power = energy_family(), power_family()
        energy.add_metric(["cpu", "cpu", self.source, "true", "power-integral"], self.joules)
        power.add_metric(["cpu", "cpu", self.source, "true"], self.watts)
        info = gauge("estimate_info", "The CPU power model (value 1): power = idle + utilization x (tdp - idle)",
                     ["cpu_model", "tdp_watts", "idle_watts", "tdp_source"])
        info.add_metric([self.model, f"{self.tdp_w:g}", f"{self.idle_w:g}", self.tdp_source], 1)
        yield from (energy, power, info)


def main(argv: list[str] | None = None) -> int:
    p = exporter_parser("estimate", __doc__.splitlines()[0], 9656)
    p.add_argument("--tdp-watts", type=float, default=None,
                   help="CPU power at full load, W (default: the CPU model's TDP from CodeCarbon's table x "
                        "sockets, else 4 W per logical CPU)")
    p.add_argument("--idle-watts", type=float, default=None,
                   help=f"CPU power when idle, W (default {IDLE_FRACTION:.0%} of the TDP)")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    httpd = claim_port(args)
    try:
        exporter = EstimateExporter(args.tdp_watts, args.idle_watts)
    except ValueError as e:
        p.error(str(e))
    return run_exporter(exporter, args, httpd)


if __name__ == "__main__":
    raise SystemExit(main())
