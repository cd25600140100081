"""The exporters this machine supports, started as subprocesses for a run and sampled into it.

    from loadgen.local_exporters import LocalSampler, start_local_exporters

    targets, stop_exporters = start_local_exporters(service_pid, log_dir=run_dir / "exporters")
    sampler = Sampler(targets, interval_s=0.5)      # loadgen/sampler.py
    ...
    stop_exporters()

``LocalSampler`` bundles both for the run protocol (loadgen/sampling.py's interface).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from loadgen.sampler import Sampler

log = logging.getLogger("wattserve.sampler")
ROOT = Path(__file__).resolve().parents[1]


class LocalSampler:
    """What the bench protocol needs (loadgen/sampling.py): ``start(run_dir)`` starts the exporters this
    machine supports and samples them, ``service_started(pid)`` points the host exporter at the service's
    process tree (the service starts after sampling does, so that ``load`` is sampled), ``stop()`` stops
    both and returns the sensor descriptors for run.json. Exporter logs go to ``log_dir`` if given
    (else a temporary folder removed at stop)."""

    def __init__(self, interval_s: float = 0.5, log_dir: Path | None = None, *,
                 extra_targets: dict[str, str] | None = None, **exporter_kw) -> None:
        # extra_targets: exporters running elsewhere (the live stack's, loadgen/stack.py), sampled as well
        self.interval_s, self.log_dir, self.exporter_kw = interval_s, log_dir, exporter_kw
        self.extra_targets = dict(extra_targets or {})
        self.choice = exporter_kw.get("choice")
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._sampler: Sampler | None = None
        self._stop_exporters: Callable[[], None] | None = None

    def start(self, run_dir: Path) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="wattserve-sampler-")
        self.pid_file = Path(self._tmp.name) / "service.pid"
        targets, self._stop_exporters = start_local_exporters(None, log_dir=self.log_dir, pid_file=self.pid_file,
                                                              **self.exporter_kw)
        targets = {**targets, **self.extra_targets}
        self._roles = {name: ROLES.get(name, name) for name in targets}
        self._sampler = Sampler(targets, interval_s=self.interval_s,
                                **({"max_device_watts": self.choice.max_device_watts} if self.choice else {}))
        self._sampler.start(run_dir)

    @property
    def exporters(self) -> dict[str, str]:
        """{name: loopback URL} of the exporters this sampler started (not the extra targets)."""
        if self._sampler is None:
            return {}
        return {n: t.url for n, t in self._sampler.targets.items() if n not in self.extra_targets}

    def mark(self) -> bool:
        """Scrape every exporter now (Sampler.mark): the protocol's phase edges."""
        return self._sampler.mark() if self._sampler is not None else False

    def defer(self, on: bool) -> None:
        """Sampler.defer: parse the inference window's scrapes after it."""
        if self._sampler is not None:
            self._sampler.defer(on)

    def service_started(self, pid: int) -> None:
        tmp = self.pid_file.with_suffix(".tmp")
        tmp.write_text(str(pid))
        tmp.replace(self.pid_file)

    def describe(self) -> dict:
        """The sensor choice and what it started here (for run.json's protocol.sensors)."""
        from loadgen.sampling import SensorChoice

        started = {role: [n for n, r in getattr(self, "_roles", {}).items() if r == role]
                   for role in ("cpu", "gpu", "wall", "host")}
        return (self.choice or SensorChoice()).describe(started)

    def stop(self) -> list[dict]:
        """The descriptors, each with its ``role`` (cpu, gpu, wall, host) and the choice that started it
        (``requested``: auto, rapl, …)."""
        try:
            sensors = self._sampler.stop() if self._sampler is not None else []
            choice = self.choice
            for d in sensors:
                d["role"] = self._roles.get(d["name"], d["name"])
                d["requested"] = {"cpu": choice.cpu, "gpu": choice.gpu.split("=")[0], "wall": choice.wall
                                  if choice.wall in ("auto", "none") else "url"}.get(d["role"]) if choice else None
            return sensors
        finally:
            if self._stop_exporters is not None:
                self._stop_exporters()
            if self._tmp is not None:
                self._tmp.cleanup()
            self._sampler = self._stop_exporters = self._tmp = None


def powercap_state(root: Path = Path("/sys/class/powercap")) -> str:
    """'readable', 'unreadable' (present but permission denied) or 'absent'."""
    files = sorted(root.glob("intel-rapl:*/energy_uj")) if root.is_dir() else []
    if not files:
        return "absent"
    try:
        files[0].read_text()
        return "readable"
    except PermissionError:
        return "unreadable"
    except OSError:
        return "absent"


def nvml_usable() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetCount() > 0
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return False


ROLES = {"host": "host", "rapl": "cpu", "energibridge": "cpu", "estimate": "cpu", "nvml": "gpu", "dcgm": "gpu",
         "netio": "wall"}


def start_local_exporters(service_pid: int | None, *, log_dir: Path | None = None,
                          pid_file: Path | None = None, powercap_root: Path = Path("/sys/class/powercap"),
                          netio_url: str | None = None, extra_args: dict[str, list[str]] | None = None,
                          ready_timeout_s: float = 20.0, choice=None,
                          only: tuple[str, ...] | None = None,
                          addr: str = "127.0.0.1") -> tuple[dict[str, str], Callable[[], None]]:
    """Start, as subprocesses on free loopback ports, the exporters of ``choice`` (a
    loadgen.sampling.SensorChoice; default: auto everywhere, what this machine supports): host (watching
    ``service_pid``'s tree); CPU: auto = rapl if powercap is readable, else estimate (and rapl too where
    powercap exists but is unreadable, so the manifest records why), or exactly rapl, energibridge
    (``choice.energibridge_bin``) or estimate (with ``choice.tdp_watts``/``idle_watts``); GPU: auto = nvml
    if NVML initializes, or nvml, nvidia-smi (the nvml exporter's --source nvidia-smi), dcgm=<URL> (a
    running dcgm-exporter: scraped, nothing started) or none; wall: netio at ``netio_url``, else the
    choice's URL (auto: $NETIO_URL), none. The URL and NETIO_USER/NETIO_PASSWORD reach the netio exporter
    by its environment only: never a command line, which any user can read. ``pid_file``: the host
    exporter follows the pid written there instead (for a service started after the exporters). Whether
    this machine can satisfy the choice is loadgen.sampling.check_sensors' job, before a run starts.
    ``only``: start just these of the planned exporters (the live stack runs the others). ``addr``: where
    they listen (a Slurm job's: every address, so that a Prometheus elsewhere scrapes them; the returned
    URLs are this machine's loopback either way).
    Returns ({name: url}, stop); an exporter that fails to start is left out with a warning (its log
    says why)."""
    from loadgen.sampling import SensorChoice

    choice = choice or SensorChoice()
    extra_args = extra_args or {}
    plan: dict[str, tuple[str, list[str]]] = {"host": ("host", ["--pid", str(service_pid)] if service_pid else [])}
    if pid_file is not None:
        plan["host"][1].extend(["--pid-file", str(pid_file)])
    state = powercap_state(powercap_root)
    estimate_args = [*(["--tdp-watts", f"{choice.tdp_watts:g}"] if choice.tdp_watts is not None else []),
                     *(["--idle-watts", f"{choice.idle_watts:g}"] if choice.idle_watts is not None else [])]
    if choice.cpu in ("auto", "rapl") and (state != "absent" or choice.cpu == "rapl"):
        plan["rapl"] = ("rapl", ["--powercap-root", str(powercap_root)])
    if (choice.cpu == "auto" and state != "readable") or choice.cpu == "estimate":
        plan["estimate"] = ("estimate", estimate_args)
    if choice.cpu == "energibridge":
        plan["energibridge"] = ("energibridge", ["--energibridge-bin", choice.energibridge_bin])
    if choice.gpu == "nvml" or (choice.gpu == "auto" and nvml_usable()):
        plan["nvml"] = ("nvml", [])
    elif choice.gpu == "nvidia-smi":
        plan["nvml"] = ("nvml", ["--source", "nvidia-smi",
                                 "--nvidia-smi-bin", os.environ.get("WATTSERVE_NVIDIA_SMI", "nvidia-smi")])
    netio_url = netio_url or choice.netio_url(os.environ)
    if netio_url:
        plan["netio"] = ("netio", [])  # its URL (which may hold user:password) goes by environment, never argv
    if only is not None:
        plan = {name: v for name, v in plan.items() if name in only}
    tmp = tempfile.TemporaryDirectory(prefix="wattserve-exporters-")
    logs = Path(log_dir) if log_dir is not None else Path(tmp.name)
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    netio_env = {k: v for k, v in env.items() if k.startswith("NETIO_")}
    env = {k: v for k, v in env.items() if k not in netio_env}  # NETIO credentials: for the netio exporter only
    if netio_url:
        netio_env["NETIO_URL"] = netio_url
    procs: dict[str, tuple[subprocess.Popen, Path, object]] = {}
    for name, (module, args) in plan.items():
        ready = Path(tmp.name) / f"{name}.json"
        logf = open(logs / f"{name}.log", "ab")
        argv = [sys.executable, "-m", f"services.exporters.{module}", "--port", "0", "--addr", addr,
                "--ready-file", str(ready), "--exit-with-parent", *args, *extra_args.get(name, [])]
        p = subprocess.Popen(argv, cwd=ROOT, env={**env, **netio_env} if name == "netio" else env, stdout=logf,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        procs[name] = (p, ready, logf)

    def stop() -> None:
        for p, _, _ in procs.values():
            if p.poll() is None:
                p.terminate()
        for p, _, logf in procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            logf.close()
        tmp.cleanup()

    targets: dict[str, str] = {"dcgm": choice.dcgm_url} if choice.dcgm_url else {}
    deadline = time.monotonic() + ready_timeout_s
    pending = dict(procs)
    while pending and time.monotonic() < deadline:
        for name, (p, ready, _) in list(pending.items()):
            if ready.exists():
                targets[name] = json.loads(ready.read_text())["url"]
                del pending[name]
            elif p.poll() is not None:
                log.warning("exporter %s exited with %s at start; see %s", name, p.returncode, logs / f"{name}.log")
                del pending[name]
        time.sleep(0.05)
    for name in pending:
        log.warning("exporter %s not ready after %.0f s; left out (see %s)", name, ready_timeout_s,
                    logs / f"{name}.log")
    return targets, stop
