"""CPU energy, CPU use and memory from EnergiBridge's CSV stream (the study's CPU sensor).

    python -m services.exporters.energibridge --port 9652 [--energibridge-bin energibridge] [--interval-ms 200]

Runs ``energibridge --interval MS <command>`` (command = an idle process that dies with EnergiBridge:
EnergiBridge measures the whole machine while its command runs) and reads its CSV from stdout (the same CSV ``--output`` writes):
``Delta,Time,<sorted columns>`` with ``Time`` in epoch ms. Energy columns are the RAPL counters as
EnergiBridge reads them from the MSRs, in joules; they wrap (EnergiBridge does not handle it): a value
that drops gets the wrap added back (``--wrap-joules``, or inferred as the next power of two).

Columns -> series: ``CPU_ENERGY (J)`` (AMD package) / ``PACKAGE_ENERGY (J)`` (Intel; also its old
spelling ``PACAKGE``) -> domain cpu; ``PP0_ENERGY (J)`` and ``CORE<i>_ENERGY (J)`` -> cpu_core;
``PP1_ENERGY (J)`` -> uncore; ``DRAM_ENERGY (J)`` -> dram; ``CPU_POWER (Watts)`` -> cpu power;
``SYSTEM_POWER (Watts)`` -> system power; ``CPU_USAGE_<i>`` (%) -> wattserve_cpu_utilization_ratio
(mean over CPUs); ``TOTAL_MEMORY``/``USED_MEMORY``/``TOTAL_SWAP``/``USED_SWAP`` (bytes) -> memory gauges.
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from pathlib import Path

from services.exporters.common import (Exporter, LineProcess, claim_port, log, RateWindow, SensorUnavailable,
                                       WraparoundTracker, energy_family, exporter_parser, gauge, power_family,
                                       run_exporter, setup_logging)

ENERGY_COLUMNS = {
    "CPU_ENERGY (J)": ("cpu", "package-0"),
    "PACKAGE_ENERGY (J)": ("cpu", "package-0"),
    "PACAKGE_ENERGY (J)": ("cpu", "package-0"),  # sic: how some EnergiBridge versions spell it
    "PP0_ENERGY (J)": ("cpu_core", "package-0"),
    "PP1_ENERGY (J)": ("uncore", "package-0"),
    "DRAM_ENERGY (J)": ("dram", "package-0"),
}
CORE_ENERGY = re.compile(r"^CORE(\d+)_ENERGY \(J\)$")
POWER_COLUMNS = {"CPU_POWER (Watts)": ("cpu", "package-0"), "SYSTEM_POWER (Watts)": ("system", "system")}
MEMORY_COLUMNS = {"TOTAL_MEMORY": "memory_total_bytes", "USED_MEMORY": "memory_used_bytes",
                  "TOTAL_SWAP": "swap_total_bytes", "USED_SWAP": "swap_used_bytes"}
# what EnergiBridge runs while it measures: a process that does nothing and dies with EnergiBridge
DEFAULT_COMMAND = [sys.executable, "-c", "import ctypes, os, signal; ctypes.CDLL(None).prctl(1, 9); "
                   "os.getppid() == 1 and os._exit(0); signal.pause()"]

INSTALL = ("Install EnergiBridge (https://github.com/tdurieux/EnergiBridge): `git clone "
           "https://github.com/tdurieux/EnergiBridge && cd EnergiBridge && cargo build -r` (Rust from "
           "https://rustup.rs), then give it MSR access: `sudo modprobe msr; sudo chgrp -R msr /dev/cpu/*/msr; "
           "sudo chmod g+r /dev/cpu/*/msr; sudo setcap cap_sys_rawio=ep target/release/energibridge`, and "
           "pass --energibridge-bin /path/to/target/release/energibridge (or put it on PATH).")


def energy_target(column: str) -> tuple[str, str] | None:
    if column in ENERGY_COLUMNS:
        return ENERGY_COLUMNS[column]
    m = CORE_ENERGY.match(column)
    return ("cpu_core", f"core{m.group(1)}") if m else None


def resolve_binary(binary: str) -> str | None:
    found = shutil.which(binary)
    if found:
        return found
    p = Path(binary)
    return str(p) if p.is_file() and shutil.which(str(p.resolve())) else None


class EnergiBridgeExporter(Exporter):
    sensor = "energibridge"
    source = "energibridge"

    def __init__(self, binary: str = "energibridge", interval_ms: int = 200,
                 command: list[str] | None = None, wrap_joules: float | None = None,
                 restart_delay_s: float = 5.0, stale_s: float | None = None) -> None:
        super().__init__()
        self.interval_ms, self.wrap_joules = interval_ms, wrap_joules
        self.stale_s = stale_s if stale_s is not None else max(2.0, 5 * interval_ms / 1000)
        self.header: list[str] | None = None
        self.trackers: dict[str, WraparoundTracker] = {}
        self.first: dict[str, float] = {}
        self.carry: dict[str, float] = {}     # energy counted before a restart of EnergiBridge
        self.joules: dict[str, float] = {}
        self.rates: dict[str, RateWindow] = {}
        self.values: dict[str, float] = {}
        self.last_row_at: float | None = None  # monotonic
        self.exit_message: str | None = None
        self.proc: LineProcess | None = None
        path = resolve_binary(binary)
        if path is None:
            self.missing = f"EnergiBridge binary not found: {binary!r}. {INSTALL}"
            log.error("%s", self.missing)
            return
        self.missing = None
        argv = [path, "--interval", str(interval_ms), *(command or DEFAULT_COMMAND)]
        self.proc = LineProcess(argv, on_line=self._line, on_start=self._restart, on_exit=self._exited,
                                restart_delay_s=restart_delay_s, name="energibridge").start()

    # -- stream (reader thread)
    def _restart(self) -> None:
        with self.lock:
            self.header = None
            self.carry = dict(self.joules)
            self.trackers, self.first, self.rates = {}, {}, {}

    def _exited(self, code: int, tail: str) -> None:
        with self.lock:
            hint = (" It needs MSR access (msr module, read on /dev/cpu/*/msr, cap_sys_rawio): "
                    + INSTALL) if code else ""
            self.exit_message = (f"energibridge exited with code {code}: {tail or 'no output'}; restarting "
                                 f"it.{hint}")

    def _line(self, line: str) -> None:
        cells = [c.strip() for c in line.split(",")]
        with self.lock:
            if cells[:2] == ["Delta", "Time"]:
                self.header = cells
                return
            if self.header is None or len(cells) != len(self.header):
                return  # not CSV (a message of EnergiBridge or of its command)
            try:
                row = dict(zip(self.header, map(float, cells)))
            except ValueError:
                return
            t = row["Time"] / 1000.0
            for col, raw in row.items():
                if energy_target(col) is None:
                    continue
                tracker = self.trackers.setdefault(col, WraparoundTracker(self.wrap_joules))
                cum = tracker.update(raw)
                first = self.first.setdefault(col, cum)
                self.joules[col] = self.carry.get(col, 0.0) + cum - first
                self.rates.setdefault(col, RateWindow()).add(t, self.joules[col])
            self.values = row
            self.last_row_at = time.monotonic()
            self.last_sample_time = t
            self.exit_message = None

    # -- scrape
    def read(self):
        if self.missing:
            raise SensorUnavailable(self.missing)
        if self.proc is not None and not self.proc.running and self.exit_message:
            raise SensorUnavailable(self.exit_message)
        if self.last_row_at is None:
            raise SensorUnavailable(self.exit_message or "no sample from energibridge yet")
        age = time.monotonic() - self.last_row_at
        if age > self.stale_s:
            raise SensorUnavailable(self.exit_message or f"no sample from energibridge for {age:.1f} s")
        energy, power = energy_family(), power_family()
        seen: set[tuple[str, str]] = set()
        for col, joules in self.joules.items():
            target = energy_target(col)
            if target is None or target in seen or col not in self.trackers:
                continue
            seen.add(target)
            energy.add_metric([*target, self.source, "false", "counter"], joules)
            watts = self.rates[col].rate()
            if watts is not None:
                power.add_metric([*target, self.source, "false"], watts)
        for col, target in POWER_COLUMNS.items():
            if col in self.values and target not in seen:
                power.add_metric([*target, self.source, "false"], self.values[col])
        yield energy
        yield power
        usage = [v for k, v in self.values.items() if k.startswith("CPU_USAGE_")]
        if usage:
            g = gauge("cpu_utilization_ratio", "System CPU utilization (0-1), mean over CPUs")
            g.add_metric([], sum(usage) / len(usage) / 100.0)
            yield g
        for col, name in MEMORY_COLUMNS.items():
            if col in self.values:
                g = gauge(name, f"{col} as EnergiBridge reports it, bytes")
                g.add_metric([], self.values[col])
                yield g

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def main(argv: list[str] | None = None) -> int:
    p = exporter_parser("energibridge", __doc__.splitlines()[0], 9652)
    p.add_argument("--energibridge-bin", default="energibridge", help="EnergiBridge executable")
    p.add_argument("--interval-ms", type=int, default=200, help="EnergiBridge sampling interval (ms)")
    p.add_argument("--wrap-joules", type=float, default=None,
                   help="range at which EnergiBridge's energy columns wrap, in J (default: inferred as "
                        "the next power of two above the last value, exact for RAPL MSRs)")
    p.add_argument("--command", nargs="+", default=None,
                   help="command EnergiBridge runs while measuring (default: an idle Python process that exits "
                        "with EnergiBridge)")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    if args.interval_ms < 10:
        p.error("--interval-ms must be >= 10")
    httpd = claim_port(args)  # a taken port fails before EnergiBridge starts
    exporter = EnergiBridgeExporter(args.energibridge_bin, args.interval_ms, args.command, args.wrap_joules)
    return run_exporter(exporter, args, httpd)


if __name__ == "__main__":
    raise SystemExit(main())
