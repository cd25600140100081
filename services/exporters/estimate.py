"""ESTIMATED CPU power and energy, for hosts where nothing measures CPU energy (no RAPL, no EnergiBridge).

    python -m services.exporters.estimate --port 9656 [--tdp-watts W] [--idle-watts W]

Model: power = idle + utilization x (TDP - idle), utilization = system-wide busy CPU share. Because the
model is linear in utilization, the energy between two scrapes is exact *for the model* at any scrape
rate: idle x dt + (TDP - idle) x busy CPU seconds / logical CPUs. Every series says estimated="true",
source="estimate", method="power-integral"; wattserve_estimate_info carries the TDP, the idle floor and
where the TDP came from.

Default TDP: a small built-in table of common CPUs (vendor TDP per socket x sockets; CodeCarbon's
cpu_power.csv is a larger maintained table of the same kind); any other CPU -> 4 W per logical CPU
(CodeCarbon's own fallback). Default idle floor: 20 % of TDP (about the ratio of the per-vCPU minimum and
maximum watts, 0.74 / 3.5 W, that Cloud Carbon Footprint uses). Inside a VM the model string is often
generic, so the fallback applies there; in a VM with a recognised model only part of the package is
yours, so pass --tdp-watts. These are proxies of time and utilization, not measurements.
"""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

from services.exporters.common import (Exporter, claim_port, cpu_busy_total, energy_family, exporter_parser,
                                       gauge, power_family, run_exporter, setup_logging)

# Vendor TDP per socket, W (AMD "default TDP", Intel "processor base power"/TDP), from the spec sheets.
CPU_TDP_W: dict[str, float] = {
    r"ryzen 9 7950x": 170, r"ryzen 9 7900x": 170, r"ryzen 9 5950x": 105, r"ryzen 7 5800x": 105,
    r"epyc 7742": 225, r"epyc 7763": 280, r"epyc 9654": 360,
    r"core i9-13900k": 125, r"core i9-12900k": 125, r"core i7-12700k": 125,
    r"xeon gold 6230": 125, r"xeon gold 6248": 150, r"xeon gold 6338": 205,
    r"xeon platinum 8380": 270, r"xeon platinum 8480\+": 350,
}
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


def default_tdp(model: str, sockets: int, threads: int) -> tuple[float, str]:
    """(TDP watts, how it was chosen)."""
    norm = re.sub(r"\((r|tm)\)", "", model.lower())
    norm = re.sub(r"\s+", " ", norm)
    for pattern, watts in CPU_TDP_W.items():
        if re.search(rf"\b{pattern}(?![\w])", norm):
            return watts * sockets, f"table:{pattern.replace(chr(92), '')}x{sockets}"
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
                   help="CPU power at full load, W (default: from the CPU model, else 4 W per logical CPU)")
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
