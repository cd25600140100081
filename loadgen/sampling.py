"""What the protocol needs from a sensor sampler, and the no-op one used when there is none.

The real sampler (loadgen/sampler.py, with loadgen/local_exporters.py) scrapes exporters into ``series.csv``; the
protocol only starts it before the service starts (so ``load`` is sampled too) and stops it after
the service is gone, taking the sensor descriptors for run.json's ``sensors``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from services.exporters.common import redact_url


@runtime_checkable
class Sampler(Protocol):
    def start(self, run_dir: Path) -> None:
        """Begin sampling into ``run_dir`` (``series.csv``)."""

    def stop(self) -> list[dict]:
        """Stop; return one ``{name, url, source, estimated, available, error}`` per sensor."""


class NullSampler:
    """No sensors: the run records ``sensors: []`` and its energy is missing, never 0 J.

    A sampler may also define ``service_started(pid)``: the protocol calls it once the service
    process exists (an exporter that watches the service's process tree needs the pid).
    """

    def start(self, run_dir: Path) -> None:
        pass

    def stop(self) -> list[dict]:
        return []


CPU_CHOICES = ("auto", "rapl", "energibridge", "estimate")
GPU_CHOICES = ("auto", "nvml", "nvidia-smi", "dcgm=<URL>", "none")
WALL_CHOICES = ("auto", "none", "<netio.json URL>")


class SensorError(ValueError):
    """A sensor choice that is malformed or that this machine cannot satisfy; the message says how to fix it."""


@dataclass(frozen=True)
class SensorChoice:
    """Which sensor measures what (``make bench CPU_SENSOR=… GPU_SENSOR=… WALL_METER=…``, a study's
    ``protocol.sensors``). ``auto`` everywhere is the default: rapl where powercap is readable, else the
    estimate; nvml where NVML initializes; the NETIO at $NETIO_URL if set."""

    cpu: str = "auto"              # auto | rapl | energibridge | estimate
    gpu: str = "auto"              # auto | nvml | nvidia-smi | dcgm=<URL of a running dcgm-exporter> | none
    wall: str = "auto"             # auto ($NETIO_URL) | none | <netio.json URL> (credentials: NETIO_USER/NETIO_PASSWORD)
    tdp_watts: float | None = None   # the estimate's TDP (default: CodeCarbon's table, else 4 W per thread)
    idle_watts: float | None = None  # the estimate's idle floor (default 20 % of the TDP)
    energibridge_bin: str = "energibridge"
    max_device_watts: float = 10_000.0  # the sampler's plausibility bound per device

    @classmethod
    def parse(cls, cpu="auto", gpu="auto", wall="auto", tdp_watts=None, idle_watts=None,
              energibridge_bin="energibridge", max_device_watts=10_000.0, *, where: str = "") -> "SensorChoice":
        """Check the syntax (no probing): :class:`SensorError` naming the option and the valid values."""
        cpu, gpu, wall = (str(x or "auto").strip() for x in (cpu, gpu, wall))
        cpu = cpu.lower()
        if cpu not in CPU_CHOICES:
            raise SensorError(f"{where}cpu sensor {cpu!r}: choose one of {', '.join(CPU_CHOICES)}")
        low = gpu.lower()
        if low.startswith("dcgm="):
            url = gpu[5:].strip()
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
                raise SensorError(f"{where}gpu sensor {gpu!r}: dcgm= needs the http(s) URL of a running dcgm-exporter's "
                                  "/metrics, e.g. dcgm=http://127.0.0.1:9400/metrics")
            gpu = f"dcgm={url}"
        elif low in GPU_CHOICES:
            gpu = low
        else:
            raise SensorError(f"{where}gpu sensor {gpu!r}: choose one of {', '.join(GPU_CHOICES)}")
        if wall.lower() in ("auto", "none"):
            wall = wall.lower()
        elif urlsplit(wall).scheme not in ("http", "https") or not urlsplit(wall).netloc:
            raise SensorError(f"{where}wall meter {redact_url(wall)!r}: auto, none or the http(s) URL of a NETIO's "
                              "netio.json")
        numbers = {}
        for name, value, low_ok in (("tdp_watts", tdp_watts, False), ("idle_watts", idle_watts, True),
                                    ("max_device_watts", max_device_watts, False)):
            if value is None or value == "":
                numbers[name] = None
                continue
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise SensorError(f"{where}{name} must be a number of watts, got {value!r}") from None
            if not math.isfinite(v) or v < 0 or (v == 0 and not low_ok):
                raise SensorError(f"{where}{name} must be {'>= 0' if low_ok else '> 0'} and finite, got {value!r}")
            numbers[name] = v
        tdp, idle = numbers["tdp_watts"], numbers["idle_watts"]
        if tdp is not None and idle is not None and idle > tdp:
            raise SensorError(f"{where}idle_watts ({idle:g}) must not exceed tdp_watts ({tdp:g})")
        if (tdp is not None or idle is not None) and cpu in ("rapl", "energibridge"):
            raise SensorError(f"{where}tdp_watts/idle_watts set the estimate, but the cpu sensor is {cpu}: "
                              "choose cpu estimate (or auto), or leave them out")
        return cls(cpu, gpu, wall, tdp, idle, str(energibridge_bin or "energibridge"),
                   numbers["max_device_watts"] if numbers["max_device_watts"] is not None else 10_000.0)

    @property
    def dcgm_url(self) -> str | None:
        return self.gpu[5:] if self.gpu.startswith("dcgm=") else None

    def netio_url(self, environ=os.environ) -> str | None:
        if self.wall == "none":
            return None
        if self.wall == "auto":
            return environ.get("NETIO_URL", "").strip() or None
        return self.wall

    def describe(self, resolved: dict | None = None) -> dict:
        """For run.json: the choice (URLs without credentials) and, given, what it resolved to here."""
        out = {"cpu": self.cpu, "gpu": redact_url(self.gpu), "wall": redact_url(self.wall),
               "tdp_watts": self.tdp_watts, "idle_watts": self.idle_watts, "max_device_watts": self.max_device_watts}
        if self.cpu == "energibridge":
            out["energibridge_bin"] = self.energibridge_bin
        if resolved is not None:
            out["resolved"] = resolved
        return out


def check_sensors(choice: SensorChoice, *, powercap_root: Path | None = None, environ=os.environ,
                  probe_timeout_s: float = 5.0) -> dict:
    """What ``choice`` resolves to on this machine: {"cpu": "rapl"|"energibridge"|"estimate",
    "gpu": "nvml"|"nvidia-smi"|"dcgm"|None, "wall": "netio"|None}. A choice this machine cannot satisfy
    raises :class:`SensorError` saying how to fix it, before anything starts."""
    from loadgen.local_exporters import nvml_usable, powercap_state
    from services.exporters.rapl import permission_message

    root = powercap_root or default_powercap_root(environ)
    out: dict[str, str | None] = {}
    state = powercap_state(root)
    if choice.cpu == "rapl":
        if state != "readable":
            files = sorted(root.glob("intel-rapl:*/energy_uj")) if root.is_dir() else []
            why = (permission_message(files[0]) if state == "unreadable" and files else
                   f"no RAPL zone under {root} (most VMs have none; WATTSERVE_POWERCAP_ROOT points at another "
                   "powercap tree): choose cpu energibridge or estimate, or auto")
            raise SensorError(f"cpu sensor rapl: {why}")
        out["cpu"] = "rapl"
    elif choice.cpu == "energibridge":
        from services.exporters.energibridge import INSTALL, resolve_binary

        if resolve_binary(choice.energibridge_bin) is None:
            raise SensorError(f"cpu sensor energibridge: no EnergiBridge binary {choice.energibridge_bin!r} "
                              f"(ENERGIBRIDGE_BIN / --energibridge-bin). {INSTALL}")
        out["cpu"] = "energibridge"
    elif choice.cpu == "estimate":
        out["cpu"] = "estimate"
    else:
        out["cpu"] = "rapl" if state == "readable" else "estimate"
    if choice.gpu == "nvml":
        if not nvml_usable():
            from services.exporters.nvml import NO_GPU

            raise SensorError(f"gpu sensor nvml: NVML does not initialize here or sees no GPU: {NO_GPU}; "
                              "or choose gpu none")
        out["gpu"] = "nvml"
    elif choice.gpu == "nvidia-smi":
        out["gpu"] = "nvidia-smi"
        _probe_nvidia_smi(environ.get("WATTSERVE_NVIDIA_SMI", "nvidia-smi"), probe_timeout_s)
    elif choice.dcgm_url:
        _probe_dcgm(choice.dcgm_url, probe_timeout_s)
        out["gpu"] = "dcgm"
    elif choice.gpu == "none":
        out["gpu"] = None
    else:
        out["gpu"] = "nvml" if nvml_usable() else None
    url = choice.netio_url(environ)
    if url and choice.wall != "auto":
        _probe_netio(url, environ, probe_timeout_s)
    out["wall"] = "netio" if url else None
    return out


def _probe_nvidia_smi(binary: str, timeout_s: float) -> None:
    import shutil
    import subprocess

    from services.exporters.nvml import NO_GPU

    path = shutil.which(binary)
    if path is None:
        raise SensorError(f"gpu sensor nvidia-smi: {binary!r} not found: {NO_GPU}; or choose gpu none")
    try:
        out = subprocess.run([path, "-L"], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SensorError(f"gpu sensor nvidia-smi: `nvidia-smi -L` failed: {exc}: {NO_GPU}") from None
    if out.returncode != 0 or "GPU" not in out.stdout:
        tail = (out.stdout + out.stderr).strip().splitlines()[-1:] or ["no GPU listed"]
        raise SensorError(f"gpu sensor nvidia-smi: `nvidia-smi -L` says: {tail[0]}: {NO_GPU}; or choose gpu none")


def _get(url: str, timeout_s: float, auth=None):
    import httpx

    with httpx.Client(timeout=timeout_s, trust_env=False, auth=auth) as client:
        return client.get(url)


def _probe_dcgm(url: str, timeout_s: float) -> None:
    try:
        r = _get(url, timeout_s)
    except Exception as exc:
        raise SensorError(f"gpu sensor dcgm: {redact_url(url)} does not answer ({type(exc).__name__}): start "
                          "dcgm-exporter first (`make up` with the gpu profile, or docker run nvcr.io/nvidia/k8s/"
                          "dcgm-exporter with -c 500) and give its /metrics URL") from None
    if r.status_code != 200 or "DCGM_FI_" not in r.text:
        raise SensorError(f"gpu sensor dcgm: {redact_url(url)} answered HTTP {r.status_code} without DCGM_FI_ "
                          "series: not a dcgm-exporter's /metrics")


def _probe_netio(url: str, environ, timeout_s: float) -> None:
    parts = urlsplit(url)
    user = environ.get("NETIO_USER") or (unquote(parts.username) if parts.username else None)
    auth = (user, environ.get("NETIO_PASSWORD", "") if environ.get("NETIO_USER") else unquote(parts.password or "")) \
        if user else None
    shown = redact_url(url)
    try:
        r = _get(shown, timeout_s, auth)
        doc = r.json() if r.status_code == 200 else None
    except Exception as exc:
        raise SensorError(f"wall meter: {shown} does not answer ({type(exc).__name__}): check the URL and that "
                          "the NETIO's JSON API is enabled (M2M API protocols in its web UI)") from None
    if r.status_code == 401:
        raise SensorError(f"wall meter: {shown}: HTTP 401: wrong or missing credentials (NETIO_USER/NETIO_PASSWORD)")
    if not isinstance(doc, dict) or "Outputs" not in doc:
        raise SensorError(f"wall meter: {shown} answered HTTP {r.status_code} without netio.json's Outputs: "
                          "not a NETIO netio.json")


def default_powercap_root(environ=os.environ) -> Path:
    root = environ.get("WATTSERVE_POWERCAP_ROOT", "").strip()
    return Path(root) if root else Path("/sys/class/powercap")


def local_sampler(interval_s: float, choice: SensorChoice | None = None, addr: str = "127.0.0.1"):
    """The exporters this machine supports (or those ``choice`` names), sampled every ``interval_s``
    (loadgen/local_exporters.py), listening on ``addr`` (a Slurm job: every address, for file_sd).

    ``WATTSERVE_POWERCAP_ROOT`` points the RAPL exporter at another powercap tree than
    /sys/class/powercap (a host's /sys mounted into a container, a simulated tree in the tests).
    """
    from loadgen.local_exporters import LocalSampler

    return LocalSampler(interval_s=interval_s, powercap_root=default_powercap_root(), choice=choice or SensorChoice(),
                        addr=addr)
