"""RAPL energy from Linux powercap: every package and sub-domain as a joules counter.

    python -m services.exporters.rapl --port 9651 [--powercap-root /sys/class/powercap] [--poll-interval 1]

Zones ``intel-rapl:N`` (packages, psys) and ``intel-rapl:N:M`` (core, uncore, dram) with
``name``, ``energy_uj`` and ``max_energy_range_uj``. ``energy_uj`` wraps at ``max_energy_range_uj``; a
poll thread reads every zone often enough to count the wraps (cumulative = raw + wraps x range). Zones
overlap (package includes core/uncore and, on some CPUs, dram), so each gets its own domain:
package-N -> cpu, core -> cpu_core, uncore -> uncore, dram -> dram, psys -> psys. ``intel-rapl-mmio``
zones repeat the package counter through another interface and are skipped.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.exporters.common import (Exporter, Poller, RateWindow, SensorUnavailable, WraparoundTracker,
                                       claim_port, energy_family, exporter_parser, power_family, run_exporter,
                                       setup_logging)

DEFAULT_ROOT = Path("/sys/class/powercap")
ZONE_ID = re.compile(r"^intel-rapl(:\d+)+$")
DOMAINS = {"core": "cpu_core", "uncore": "uncore", "dram": "dram", "psys": "psys"}


def permission_message(path: Path) -> str:
    return (f"cannot read {path}: permission denied. Since Linux 5.10 RAPL energy counters are readable "
            "by root only (CVE-2020-8694). Grant access in one of these ways: run this exporter as root; "
            "or `sudo chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj "
            "/sys/class/powercap/intel-rapl:*/intel-rapl:*/energy_uj` (until reboot); or persistently a "
            "systemd-tmpfiles line `z /sys/class/powercap/intel-rapl:*/energy_uj 0444 - - -` (plus the "
            "same for intel-rapl:*/intel-rapl:*/energy_uj); in Docker, run as root (no capability needed) "
            "with the host's /sys mounted read-only (-v /sys:/host/sys:ro --powercap-root "
            "/host/sys/class/powercap: Docker masks its own /sys/devices/virtual/powercap), as compose does. "
            "See services/exporters/README.md.")


def domain_of(name: str) -> str:
    if name.startswith("package"):
        return "cpu"
    return DOMAINS.get(name, re.sub(r"[^a-z0-9_]", "_", name.lower()))


@dataclass
class Zone:
    zone_id: str          # intel-rapl:0:1
    path: Path
    name: str             # package-0, core, dram...
    domain: str
    device: str           # the package the zone belongs to (package-0), or its own name for top level
    range_uj: int
    tracker: WraparoundTracker = None  # type: ignore[assignment]
    rate: RateWindow = field(default_factory=RateWindow)
    first: float | None = None
    joules: float | None = None

    def __post_init__(self) -> None:
        self.tracker = WraparoundTracker(float(self.range_uj) if self.range_uj > 0 else None)


def read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except PermissionError:
        raise SensorUnavailable(permission_message(path)) from None


def discover(root: Path) -> list[Zone]:
    """The RAPL zones under a powercap root (as /sys/class/powercap: symlinks or nested dirs)."""
    if not root.is_dir():
        raise SensorUnavailable(f"{root} does not exist: this kernel/VM exposes no powercap RAPL "
                                "(bare-metal Linux with intel_rapl_common loaded has it; AMD needs Linux "
                                "5.8+). Use the estimate exporter where nothing measures CPU energy.")
    found: dict[Path, Path] = {}
    for entry in sorted(root.iterdir()):
        if ZONE_ID.match(entry.name) and (entry / "energy_uj").exists():
            found.setdefault(entry.resolve(), entry)
            for sub in sorted(entry.iterdir()):
                if ZONE_ID.match(sub.name) and (sub / "energy_uj").exists():
                    found.setdefault(sub.resolve(), sub)
    if not found:
        raise SensorUnavailable(f"no RAPL zone (intel-rapl:N with energy_uj) under {root}: the CPU or "
                                "kernel does not expose RAPL here (try `modprobe intel_rapl_common`)")
    names = {p.name: (p / "name").read_text().strip() for p in found.values()}
    zones = []
    for path in sorted(found.values(), key=lambda p: [int(x) for x in p.name.split(":")[1:]]):
        name = names[path.name]
        parent = path.name.rsplit(":", 1)[0]
        device = names.get(parent, parent) if parent.count(":") >= 1 else name
        rng = path / "max_energy_range_uj"
        zones.append(Zone(path.name, path, name, domain_of(name), device,
                          read_int(rng) if rng.exists() else 0))
        read_int(path / "energy_uj")  # probe: a PermissionError here says how to grant access
    return zones


class RaplExporter(Exporter):
    sensor = "rapl"
    source = "rapl"

    def __init__(self, root: Path = DEFAULT_ROOT, poll_interval_s: float = 1.0,
                 retry_s: float = 5.0) -> None:
        super().__init__()
        self.root, self.retry_s = Path(root), retry_s
        self.zones: list[Zone] | None = None
        self._down: SensorUnavailable | None = None
        self._probed = -1e9
        self.poller = Poller(self.poll, poll_interval_s, "rapl-poll").start()

    def _ensure_zones(self) -> list[Zone]:
        if self.zones is None and time.monotonic() - self._probed >= self.retry_s:
            self._probed = time.monotonic()
            try:
                self.zones, self._down = discover(self.root), None
            except SensorUnavailable as e:
                self._down = e
            except OSError as e:
                self._down = SensorUnavailable(f"cannot read powercap under {self.root}: {e}")
        if self.zones is None:
            raise self._down or SensorUnavailable("RAPL zones not discovered yet")
        return self.zones

    def poll(self) -> None:
        with self.lock:
            try:
                zones = self._ensure_zones()
            except SensorUnavailable:
                return
            now = time.time()
            for z in zones:
                try:
                    raw = read_int(z.path / "energy_uj")
                except SensorUnavailable as e:  # permissions changed under us
                    self.zones, self._down = None, e
                    return
                except (OSError, ValueError) as e:
                    self.error(f"read {z.path}/energy_uj", e)
                    continue
                cum = z.tracker.update(raw)
                if z.first is None:
                    z.first = cum
                z.joules = (cum - z.first) / 1e6
                z.rate.add(now, z.joules)
            self.last_sample_time = now

    def read(self):
        self.poll()
        zones = self._ensure_zones()
        energy, power = energy_family(), power_family()
        for z in zones:
            if z.joules is None:
                continue
            energy.add_metric([z.domain, z.device, self.source, "false", "counter"], z.joules)
            watts = z.rate.rate()
            if watts is not None:
                power.add_metric([z.domain, z.device, self.source, "false"], watts)
        yield energy
        yield power

    def close(self) -> None:
        self.poller.stop()


def main(argv: list[str] | None = None) -> int:
    p = exporter_parser("rapl", __doc__.splitlines()[0], 9651)
    p.add_argument("--powercap-root", type=Path, default=DEFAULT_ROOT,
                   help=f"powercap sysfs root (default {DEFAULT_ROOT})")
    p.add_argument("--poll-interval", type=float, default=1.0,
                   help="seconds between counter reads; must be well under the wrap period "
                        "max_energy_range_uj / max power (>= ~10 s on current CPUs) (default 1)")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    if args.poll_interval <= 0:
        p.error("--poll-interval must be > 0")
    httpd = claim_port(args)  # a taken port fails before any sensor is touched
    return run_exporter(RaplExporter(args.powercap_root, args.poll_interval), args, httpd)


if __name__ == "__main__":
    raise SystemExit(main())
