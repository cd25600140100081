"""NVIDIA GPU energy, power, utilization and memory, through NVML (default) or nvidia-smi's CSV query.

    python -m services.exporters.nvml --port 9653 [--poll-interval 0.1]
    python -m services.exporters.nvml --port 9653 --source nvidia-smi [--nvidia-smi-bin nvidia-smi] [--interval-ms 100]

NVML (``import pynvml``, package nvidia-ml-py), per GPU ``gpu<i>``, every series labelled with the GPU's
``uuid`` too (``GPU-…``, as NVML, nvidia-smi and dcgm-exporter's ``UUID`` give it; the analysis keeps the
serving GPU's series by it on a multi-GPU host): power (W); energy from the GPU's
total-energy counter (nvmlDeviceGetTotalEnergyConsumption, mJ, Volta and newer: method="counter"),
otherwise measured power integrated trapezoidally at --poll-interval (method="power-integral", still
estimated="false": it is measured power); utilization.gpu and utilization.memory (ratios); memory
used/total (bytes) from NVML's v2 memory call where the binding has it (``used`` without the driver's
reserved memory; v1 otherwise, said by ``gpu_info{memory_api}``). The NVML library is injectable (:class:`NvmlLike`: the pynvml functions used here)
so tests put a fake behind the same code.

nvidia-smi mode runs the study's query (with ``index,uuid`` first so several GPUs are told apart)
``nvidia-smi --query-gpu=index,uuid,timestamp,gpu_name,utilization.gpu,utilization.memory,memory.total,
memory.used,power.draw,power.max_limit,temperature.gpu --format=csv -lms 100`` and integrates
power.draw between its own timestamps (method="power-integral").
"""

from __future__ import annotations

import importlib
import re
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from services.exporters.common import (Exporter, LineProcess, Poller, PowerIntegrator, SensorUnavailable,
                                       claim_port, energy_family, exporter_parser, gauge, log, power_family,
                                       run_exporter, setup_logging)

NO_GPU = ("no NVIDIA GPU/driver usable here. Install the NVIDIA driver (nvidia-smi must work); in Docker "
          "run with --gpus all (NVIDIA Container Toolkit)")
SMI_FIELDS = ["index", "uuid", "timestamp", "gpu_name", "utilization.gpu", "utilization.memory", "memory.total",
              "memory.used", "power.draw", "power.max_limit", "temperature.gpu"]
MIB = 1024 * 1024
GPU_LABELS = ["device", "uuid"]  # of every per-GPU gauge


class NvmlLike(Protocol):
    """The part of pynvml this exporter calls (units as NVML gives them)."""

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetName(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int: ...             # mW
    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int: ...  # mJ since driver load
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any: ...       # .gpu, .memory in %
    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: int | None = None) -> Any: ...  # .used, .total, bytes


def memory_info(nv: Any, handle: Any) -> tuple[Any, str]:
    """GPU memory and which NVML API gave it: ``v2`` (nvmlDeviceGetMemoryInfo_v2, where the binding has
    ``nvmlMemory_v2``: ``used`` excludes the driver's reserved memory) else ``v1`` (older bindings or
    drivers: ``used`` counts the reserved part as used, a few hundred MiB too high)."""
    version = getattr(nv, "nvmlMemory_v2", None)
    if version is not None:
        try:
            return nv.nvmlDeviceGetMemoryInfo(handle, version=version), "v2"
        except Exception as e:  # a driver without the v2 entry point, a binding without the argument
            log.debug("nvml: memory v2 unavailable (%s: %s), using v1", type(e).__name__, e)
    return nv.nvmlDeviceGetMemoryInfo(handle), "v1"


def _text(v: str | bytes) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class _Missing:
    """Stands in for pynvml where it is not installed: every call fails with the reason."""

    def __init__(self, why: str) -> None:
        self.why = why

    def __getattr__(self, name: str):
        raise RuntimeError(self.why)


def _not_supported(e: Exception) -> bool:
    try:
        import pynvml
    except ImportError:
        return False
    return isinstance(e, pynvml.NVMLError) and getattr(e, "value", None) == pynvml.NVML_ERROR_NOT_SUPPORTED


@dataclass
class Gpu:
    index: int
    handle: Any
    name: str
    uuid: str
    energy_base_mj: int | None = None          # counter mode
    energy_last_mj: int | None = None
    energy_carry_j: float = 0.0
    integrator: PowerIntegrator | None = None  # power-integral mode
    memory_api: str = ""                       # "v2" or "v1" once memory was read (memory_info)

    @property
    def device(self) -> str:
        return f"gpu{self.index}"


class NvmlExporter(Exporter):
    sensor = "nvml"
    source = "nvml"

    def __init__(self, nvml: NvmlLike | None = None, poll_interval_s: float = 0.1,
                 retry_s: float = 30.0) -> None:
        super().__init__()
        if nvml is None:
            try:
                nvml = importlib.import_module("pynvml")
            except ImportError as e:
                nvml = _Missing(f"pynvml is not importable ({e}): install nvidia-ml-py")
        self.nvml = nvml
        self.poll_interval_s, self.retry_s = poll_interval_s, retry_s
        self.gpus: list[Gpu] | None = None
        self.poller: Poller | None = None
        self._down: SensorUnavailable | None = None
        self._tried = -1e9
        with self.lock:
            try:
                self._ensure()
            except SensorUnavailable as e:
                log.error("nvml: %s", e)
                self._state = (0, str(e))  # said once

    def _ensure(self) -> list[Gpu]:
        if self.gpus is None and time.monotonic() - self._tried >= self.retry_s:
            self._tried = time.monotonic()
            nv = self.nvml
            try:
                nv.nvmlInit()
                count = nv.nvmlDeviceGetCount()
                gpus = []
                for i in range(count):
                    h = nv.nvmlDeviceGetHandleByIndex(i)
                    gpu = Gpu(i, h, _text(nv.nvmlDeviceGetName(h)), _text(nv.nvmlDeviceGetUUID(h)))
                    try:
                        gpu.energy_base_mj = gpu.energy_last_mj = int(nv.nvmlDeviceGetTotalEnergyConsumption(h))
                    except Exception as e:
                        if not _not_supported(e):
                            raise
                        gpu.integrator = PowerIntegrator(max_gap_s=max(1.0, 10 * self.poll_interval_s))
                        log.info("nvml: gpu%d (%s) has no total-energy counter: integrating power every "
                                 "%.3g s", i, gpu.name, self.poll_interval_s)
                    gpus.append(gpu)
            except Exception as e:
                self._down = SensorUnavailable(f"NVML unavailable ({type(e).__name__}: {e}): {NO_GPU}")
            else:
                if not gpus:
                    self._down = SensorUnavailable(f"NVML found no GPU: {NO_GPU}")
                else:
                    self.gpus, self._down = gpus, None
                    if any(g.integrator for g in gpus):
                        self.poller = Poller(self.poll, self.poll_interval_s, "nvml-power").start()
        if self.gpus is None:
            raise self._down or SensorUnavailable(NO_GPU)
        return self.gpus

    def poll(self) -> None:
        """Integrate power of the GPUs without an energy counter."""
        with self.lock:
            for g in self.gpus or []:
                if g.integrator is None:
                    continue
                try:
                    watts = self.nvml.nvmlDeviceGetPowerUsage(g.handle) / 1000.0
                except Exception as e:
                    self.error(f"{g.device} power", e)
                    continue
                g.integrator.add(time.monotonic(), watts)
            self.last_sample_time = time.time()

    def _energy_j(self, g: Gpu) -> float | None:
        if g.integrator is not None:
            return g.integrator.joules if g.integrator.last is not None else None
        mj = int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(g.handle))
        if g.energy_last_mj is not None and mj < g.energy_last_mj:  # driver reloaded: keep monotonic
            g.energy_carry_j += (g.energy_last_mj - g.energy_base_mj) / 1000.0
            g.energy_base_mj = mj
        g.energy_last_mj = mj
        return g.energy_carry_j + (mj - g.energy_base_mj) / 1000.0

    def read(self):
        gpus = self._ensure()
        if self.poller is not None:
            self.poll()  # integrate up to this scrape, so every value is as of now
        nv = self.nvml
        energy, power = energy_family(["uuid"]), power_family(["uuid"])
        info = gauge("gpu_info", "GPU identity (value 1); memory_api: the NVML memory call (v2 or v1)",
                     ["device", "name", "uuid", "memory_api"])
        util = gauge("gpu_utilization_ratio", "utilization.gpu: share of time a kernel ran (0-1)", GPU_LABELS)
        mutil = gauge("gpu_memory_utilization_ratio",
                      "utilization.memory: share of time device memory was read or written (0-1)", GPU_LABELS)
        used = gauge("gpu_memory_used_bytes", "GPU memory used, bytes", GPU_LABELS)
        total = gauge("gpu_memory_total_bytes", "GPU memory total, bytes", GPU_LABELS)
        for g in gpus:
            ids = [g.device, g.uuid]
            try:
                power.add_metric(["gpu", g.device, self.source, "false", g.uuid],
                                 nv.nvmlDeviceGetPowerUsage(g.handle) / 1000.0)
            except Exception as e:
                self.error(f"{g.device} power", e)
            try:
                joules = self._energy_j(g)
                if joules is not None:
                    method = "power-integral" if g.integrator is not None else "counter"
                    energy.add_metric(["gpu", g.device, self.source, "false", method, g.uuid], joules)
            except Exception as e:
                self.error(f"{g.device} energy", e)
            try:
                u = nv.nvmlDeviceGetUtilizationRates(g.handle)
                util.add_metric(ids, u.gpu / 100.0)
                mutil.add_metric(ids, u.memory / 100.0)
            except Exception as e:
                self.error(f"{g.device} utilization", e)
            try:
                m, g.memory_api = memory_info(nv, g.handle)
                used.add_metric(ids, m.used)
                total.add_metric(ids, m.total)
            except Exception as e:
                self.error(f"{g.device} memory", e)
            info.add_metric([g.device, g.name, g.uuid, g.memory_api], 1)
        yield from (energy, power, util, mutil, used, total, info)

    def close(self) -> None:
        if self.poller is not None:
            self.poller.stop()
        if self.gpus is not None:
            try:
                self.nvml.nvmlShutdown()
            except Exception:
                pass


# ------------------------------------------------------------------ nvidia-smi

NUMBER = re.compile(r"^([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*(%|W|MiB|MHz|C)?$")
UNITS = {"%": 0.01, "MiB": MIB}


def smi_value(cell: str) -> float | None:
    """``"45.30 W"`` -> 45.3, ``"37 %"`` -> 0.37, ``"1234 MiB"`` -> bytes, ``"[N/A]"`` -> None."""
    m = NUMBER.match(cell.strip())
    if not m:
        return None
    return float(m.group(1)) * UNITS.get(m.group(2) or "", 1.0)


def smi_timestamp(cell: str) -> float | None:
    """nvidia-smi's local wall-clock timestamp as seconds (only differences are used)."""
    for fmt in ("%Y/%m/%d %H:%M:%S.%f", "%Y/%m/%d %H:%M:%S"):
        try:
            return datetime.strptime(cell.strip(), fmt).timestamp()
        except ValueError:
            continue
    return None


@dataclass
class SmiGpu:
    device: str
    values: dict[str, Any] = field(default_factory=dict)
    integrator: PowerIntegrator = None  # type: ignore[assignment]
    last_at: float = 0.0                # monotonic receipt time


class NvidiaSmiExporter(Exporter):
    sensor = "nvml"
    source = "nvidia-smi"

    def __init__(self, binary: str = "nvidia-smi", interval_ms: int = 100, restart_delay_s: float = 5.0) -> None:
        super().__init__()
        self.interval_ms = interval_ms
        self.stale_s = max(2.0, 5 * interval_ms / 1000)
        self.header: list[str] | None = None
        self.gpus: dict[str, SmiGpu] = {}
        self.exit_message: str | None = None
        self.proc: LineProcess | None = None
        path = shutil.which(binary)
        if path is None:
            self.missing = f"nvidia-smi not found ({binary!r}): {NO_GPU}"
            log.error("nvml: %s", self.missing)
            return
        self.missing = None
        argv = [path, f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv", "-lms", str(interval_ms)]
        self.proc = LineProcess(argv, on_line=self._line, on_start=self._start, on_exit=self._exited,
                                restart_delay_s=restart_delay_s, name="nvidia-smi").start()

    def _start(self) -> None:
        with self.lock:
            self.header = None

    def _exited(self, code: int, tail: str) -> None:
        with self.lock:
            self.exit_message = f"nvidia-smi exited with code {code}: {tail or 'no output'} ({NO_GPU})"

    def _line(self, line: str) -> None:
        cells = [c.strip() for c in line.split(",")]
        with self.lock:
            if "timestamp" in cells and any(c.startswith("power.draw") for c in cells):
                self.header = [re.sub(r"\s*\[.*\]$", "", c) for c in cells]  # drop " [W]" etc.
                return
            if self.header is None or len(cells) != len(self.header):
                return
            row = dict(zip(self.header, cells))
            device = f"gpu{row.get('index', '0').strip() or '0'}"
            gpu = self.gpus.get(device)
            if gpu is None:
                gpu = self.gpus[device] = SmiGpu(device, integrator=PowerIntegrator(max(2.0, 10 * self.interval_ms / 1000)))
            now = time.monotonic()
            t = smi_timestamp(row.get("timestamp", ""))
            if t is None or (gpu.integrator.last is not None and not 0 < t - gpu.integrator.last[0] < 60):
                t = (gpu.integrator.last[0] + now - gpu.last_at) if gpu.integrator.last else now
            watts = smi_value(row.get("power.draw", ""))
            if watts is not None:
                gpu.integrator.add(t, watts)
            gpu.values = {k: (v if k in ("name", "timestamp", "uuid") else smi_value(v)) for k, v in row.items()}
            gpu.last_at = now
            self.last_sample_time = time.time()
            self.exit_message = None

    def read(self):
        if self.missing:
            raise SensorUnavailable(self.missing)
        if self.proc is not None and not self.proc.running and self.exit_message:
            raise SensorUnavailable(self.exit_message)
        fresh = [g for g in self.gpus.values() if time.monotonic() - g.last_at <= self.stale_s]
        if not fresh:
            raise SensorUnavailable(self.exit_message or "no sample from nvidia-smi "
                                    + ("yet" if not self.gpus else f"for more than {self.stale_s:.1f} s"))
        energy, power = energy_family(["uuid"]), power_family(["uuid"])
        fams = {k: gauge(*v, GPU_LABELS) for k, v in {
            "utilization.gpu": ("gpu_utilization_ratio", "utilization.gpu (0-1)"),
            "utilization.memory": ("gpu_memory_utilization_ratio", "utilization.memory (0-1)"),
            "memory.used": ("gpu_memory_used_bytes", "GPU memory used, bytes"),
            "memory.total": ("gpu_memory_total_bytes", "GPU memory total, bytes"),
            "power.max_limit": ("gpu_power_limit_watts", "power.max_limit, W"),
            "temperature.gpu": ("gpu_temperature_celsius", "temperature.gpu, degrees C"),
        }.items()}
        info = gauge("gpu_info", "GPU identity (value 1)", ["device", "name", "uuid"])
        for g in fresh:
            uuid = str(g.values.get("uuid") or "")
            if g.integrator.last is not None:
                energy.add_metric(["gpu", g.device, self.source, "false", "power-integral", uuid], g.integrator.joules)
            if g.values.get("power.draw") is not None:
                power.add_metric(["gpu", g.device, self.source, "false", uuid], g.values["power.draw"])
            for key, fam in fams.items():
                if g.values.get(key) is not None:
                    fam.add_metric([g.device, uuid], g.values[key])
            info.add_metric([g.device, str(g.values.get("name", "")), uuid], 1)
        yield from (energy, power, *fams.values(), info)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def main(argv: list[str] | None = None) -> int:
    p = exporter_parser("nvml", __doc__.splitlines()[0], 9653)
    p.add_argument("--source", choices=["nvml", "nvidia-smi"], default="nvml")
    p.add_argument("--poll-interval", type=float, default=0.1,
                   help="NVML: seconds between power reads where a GPU has no energy counter (default 0.1)")
    p.add_argument("--nvidia-smi-bin", default="nvidia-smi", help="nvidia-smi executable (--source nvidia-smi)")
    p.add_argument("--interval-ms", type=int, default=100, help="nvidia-smi -lms interval (default 100)")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    httpd = claim_port(args)  # a taken port fails before NVML or nvidia-smi starts
    if args.source == "nvml":
        exporter: Exporter = NvmlExporter(poll_interval_s=args.poll_interval)
    else:
        exporter = NvidiaSmiExporter(args.nvidia_smi_bin, args.interval_ms)
    return run_exporter(exporter, args, httpd)


if __name__ == "__main__":
    raise SystemExit(main())
