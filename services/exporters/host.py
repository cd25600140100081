"""Host CPU and memory use, and the CPU time and memory of one process tree (the service), via psutil.

    python -m services.exporters.host --port 9655 [--pid <service pid> | --pid-file F] [--target service]

wattserve_cpu_utilization_ratio is the system-wide busy share since the previous scrape (busy =
user+nice+system+irq+softirq; idle, iowait and steal count as not busy). Memory used = total -
available. The process tree is --pid and all its descendants, re-listed at every scrape; its CPU
seconds are a monotonic counter (a descendant that exits keeps the CPU time last seen for it; CPU a
short-lived child spends between two scrapes is missed), its resident memory the sum of RSS (shared
pages counted once per process).
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from services.exporters.common import (Exporter, claim_port, counter, cpu_busy_total, exporter_parser, gauge,
                                       log, run_exporter, setup_logging)


class ProcessTree:
    """CPU seconds (monotonic) and RSS of a process and all its descendants."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            self.root: psutil.Process | None = psutil.Process(pid)
        except psutil.Error:
            self.root = None  # already gone: reported as process_up 0
        self.seen: dict[tuple[int, float], float] = {}
        self.dead_cpu_s = 0.0
        self._procs: list[psutil.Process] = []
        self._listed = -1e9

    # Listing descendants walks all of /proc; a serving process tree changes rarely (engine threads are
    # threads, not processes), so it is listed again every LIST_EVERY_S seconds, not at every scrape:
    # this exporter's CPU lands in the measured window. A process that exits is dropped at once (its
    # CPU kept); one that starts is counted from the next listing.
    LIST_EVERY_S = 5.0

    def sample(self) -> tuple[float, int, int] | None:
        """(cpu seconds, rss bytes, processes), or None once the root process is gone."""
        if self.root is None:
            return None
        try:
            if not self.root.is_running() or self.root.status() == psutil.STATUS_ZOMBIE:
                return None
            if time.monotonic() - self._listed >= self.LIST_EVERY_S:
                self._procs, self._listed = [self.root, *self.root.children(recursive=True)], time.monotonic()
            procs = self._procs
        except psutil.Error:
            return None
        current: dict[tuple[int, float], float] = {}
        rss = 0
        for p in procs:
            try:
                with p.oneshot():
                    if p.status() == psutil.STATUS_ZOMBIE:  # exited: keeps the CPU time last seen
                        continue
                    ct, mem = p.cpu_times(), p.memory_info()
                    key = (p.pid, p.create_time())
            except psutil.Error:
                continue
            current[key] = ct.user + ct.system
            rss += mem.rss
        self.dead_cpu_s += sum(v for k, v in self.seen.items() if k not in current)
        self.seen = current
        return self.dead_cpu_s + sum(current.values()), rss, len(current)


class HostExporter(Exporter):
    sensor = "host"
    source = "psutil"

    def __init__(self, pid: int | None = None, target: str = "service", pid_file: Path | None = None) -> None:
        super().__init__()
        self.target, self.pid_file = target, pid_file
        self.tree: ProcessTree | None = None
        if pid is not None:
            self._watch(pid)
        self.last = cpu_busy_total()

    def _watch(self, pid: int) -> None:
        self.tree = ProcessTree(pid)
        if self.tree.root is None:
            log.error("host: no process %d to watch: process series will say process_up 0", pid)
        else:
            log.info("host: watching process %d and its descendants as target=%s", pid, self.target)

    def _follow_pid_file(self) -> None:
        """--pid-file: (re)read the pid whenever the file names another one (the service starts later)."""
        try:
            text = self.pid_file.read_text().strip()
        except OSError:
            return
        if text.isdigit() and (self.tree is None or self.tree.pid != int(text)):
            self._watch(int(text))

    def read(self):
        if self.pid_file is not None:
            self._follow_pid_file()
        busy, total = cpu_busy_total()
        b0, t0 = self.last
        if total > t0:
            g = gauge("cpu_utilization_ratio", "System CPU utilization (0-1) since the previous scrape")
            g.add_metric([], max(0.0, min(1.0, (busy - b0) / (total - t0))))
            yield g
            self.last = (busy, total)
        vm, sw = psutil.virtual_memory(), psutil.swap_memory()
        for name, doc, value in (
            ("memory_used_bytes", "RAM in use (total - available), bytes", vm.total - vm.available),
            ("memory_total_bytes", "RAM installed, bytes", vm.total),
            ("swap_used_bytes", "Swap in use, bytes", sw.used),
            ("swap_total_bytes", "Swap size, bytes", sw.total),
        ):
            g = gauge(name, doc)
            g.add_metric([], value)
            yield g
        if self.tree is None:
            return
        s = self.tree.sample()
        up = gauge("process_up", "1 while the watched process (--pid) runs", ["target", "pid"])
        up.add_metric([self.target, str(self.tree.pid)], 0 if s is None else 1)
        yield up
        if s is None:
            return
        cpu_s, rss, n = s
        c = counter("process_cpu_seconds", "User+system CPU seconds of the watched process tree", ["target"])
        c.add_metric([self.target], cpu_s)
        yield c
        for name, doc, value in (
            ("process_resident_memory_bytes", "Resident memory (sum of RSS) of the process tree, bytes", rss),
            ("process_count", "Processes in the watched tree", n),
        ):
            g = gauge(name, doc, ["target"])
            g.add_metric([self.target], value)
            yield g


def main(argv: list[str] | None = None) -> int:
    p = exporter_parser("host", __doc__.splitlines()[0], 9655)
    p.add_argument("--pid", type=int, default=None, help="process whose tree (children included) is watched")
    p.add_argument("--pid-file", type=Path, default=None,
                   help="file holding the pid to watch, re-read at each scrape (for a service started later)")
    p.add_argument("--target", default="service", help="target label of the process series (default service)")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    httpd = claim_port(args)
    return run_exporter(HostExporter(args.pid, args.target, args.pid_file), args, httpd)


if __name__ == "__main__":
    raise SystemExit(main())
