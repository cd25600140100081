"""Simulated hardware, at its boundary: a powercap sysfs tree driven by a known power profile (run as a
separate process: ``python tests/exporters/fakes.py powercap-sim SPEC.json``), a fake NVML library
(pynvml's functions and units), and an HTTP server speaking NETIO's netio.json. Nothing here is
imported by production code; the exporters read these exactly as they read the real things."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace


class StepProfile:
    """Piecewise-constant power: ``steps`` = [(t_rel_s, watts), ...] sorted, power before the first step
    is the first step's, and it stops (0 W) after ``duration`` when given."""

    def __init__(self, steps: list[tuple[float, float]], duration: float | None = None) -> None:
        self.steps = [(float(a), float(b)) for a, b in steps]
        self.duration = duration

    def energy(self, t: float) -> float:
        """Joules from t_rel = 0 to t (analytic)."""
        if self.duration is not None:
            t = min(t, self.duration)
        if t <= 0:
            return 0.0
        e = 0.0
        for i, (t0, w) in enumerate(self.steps):
            t1 = self.steps[i + 1][0] if i + 1 < len(self.steps) else float("inf")
            lo, hi = max(t0 if i else 0.0, 0.0), min(t1, t)
            if hi > lo:
                e += w * (hi - lo)
        return e


# ------------------------------------------------------------------ powercap

def build_powercap(base: Path, zones: list[dict]) -> Path:
    """A powercap tree as the kernel lays it out: devices/virtual/powercap/intel-rapl/<zone>[/<sub>]
    and class/powercap/<zone> symlinks. zones: [{"id": "intel-rapl:0", "name": "package-0",
    "range_uj": int, "start_uj": int}, {"id": "intel-rapl:0:0", "name": "core", ...}]. Returns the
    class/powercap root."""
    devices = base / "devices" / "virtual" / "powercap" / "intel-rapl"
    klass = base / "class" / "powercap"
    devices.mkdir(parents=True)
    klass.mkdir(parents=True)
    (klass / "intel-rapl").symlink_to(devices)  # the control type dir: no energy_uj
    for z in zones:
        parts = z["id"].split(":")
        d = devices / z["id"] if len(parts) == 2 else devices / ":".join(parts[:2]) / z["id"]
        d.mkdir(parents=True)
        (d / "name").write_text(z["name"] + "\n")
        (d / "max_energy_range_uj").write_text(f"{z['range_uj']}\n")
        (d / "energy_uj").write_text(f"{z.get('start_uj', 0)}\n")
        (klass / z["id"]).symlink_to(d)
    return klass


def zone_dir(root: Path, zone_id: str) -> Path:
    return (root / zone_id).resolve()


def write_uj(path: Path, value: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{value}\n")
    os.replace(tmp, path)  # a reader sees the old or the new value, as from sysfs


def powercap_sim(spec_path: str) -> None:
    """Write energy_uj = (start + E(t)) mod range for every zone every ``period`` s for ``duration`` s,
    then the exact final values; t0 (epoch) goes to spec["t0_file"] once the clock starts."""
    spec = json.loads(Path(spec_path).read_text())
    root = Path(spec["root"])
    zones = [(zone_dir(root, z["id"]) / "energy_uj", int(z["range_uj"]), int(z.get("start_uj", 0)),
              StepProfile(z["profile"], spec["duration"])) for z in spec["zones"]]
    t0 = time.time()
    Path(spec["t0_file"] + ".tmp").write_text(repr(t0))
    os.replace(spec["t0_file"] + ".tmp", spec["t0_file"])
    while True:
        now = time.time() - t0
        for path, rng, start, prof in zones:
            write_uj(path, (start + round(prof.energy(now) * 1e6)) % rng)
        if now >= spec["duration"]:
            break
        time.sleep(spec.get("period", 0.001))


# ------------------------------------------------------------------ NVML

class FakeNvml:
    """pynvml's functions used by the exporter, in NVML's units (mW, mJ, %, bytes), for GPUs with a
    given constant power; ``energy_counter=False`` makes nvmlDeviceGetTotalEnergyConsumption raise
    NVMLError_NotSupported as on pre-Volta GPUs. UUIDs: ``GPU-fake-<index>``."""

    def __init__(self, watts: list[float], energy_counter: bool = True, start_mj: int = 123_456_789,
                 util: list[int] | None = None) -> None:
        self.watts, self.energy_counter, self.start_mj = watts, energy_counter, start_mj
        self.util = util or [37] * len(watts)  # utilization.gpu per GPU, %
        self.t0: float | None = None
        self.calls: list[str] = []

    def nvmlInit(self) -> None:
        self.t0 = time.monotonic()

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(self.watts)

    def nvmlDeviceGetHandleByIndex(self, i: int):
        return i

    def nvmlDeviceGetName(self, h) -> bytes:
        return b"Fake GPU 4090"

    def nvmlDeviceGetUUID(self, h) -> str:
        return f"GPU-fake-{h}"

    def nvmlDeviceGetPowerUsage(self, h) -> int:
        return int(self.watts[h] * 1000)

    def energy_j(self, h: int, at: float | None = None) -> float:
        return self.watts[h] * ((at or time.monotonic()) - self.t0)

    def nvmlDeviceGetTotalEnergyConsumption(self, h) -> int:
        if not self.energy_counter:
            import pynvml

            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return self.start_mj + int(self.energy_j(h) * 1000)

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=self.util[h], memory=5)

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=1234 * 1024 * 1024, total=24564 * 1024 * 1024, free=0)


class FakeNvmlV2(FakeNvml):
    """A binding and driver with NVML's v2 memory call (nvml.h: version nvmlMemory_v2; ``used``
    without the ``reserved`` part that v1 counts as used). ``v2_fails``: a driver without the v2
    entry point (NVML_ERROR_FUNCTION_NOT_FOUND)."""

    nvmlMemory_v2 = 0x02000028
    RESERVED = 300 * 1024 * 1024

    def __init__(self, *a, v2_fails: bool = False, **kw) -> None:
        super().__init__(*a, **kw)
        self.v2_fails = v2_fails

    def nvmlDeviceGetMemoryInfo(self, h, version=None):
        if version is None:
            return super().nvmlDeviceGetMemoryInfo(h)
        if version != self.nvmlMemory_v2 or self.v2_fails:
            import pynvml

            raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        v1 = super().nvmlDeviceGetMemoryInfo(h)
        return SimpleNamespace(version=version, used=v1.used - self.RESERVED, reserved=self.RESERVED,
                               total=v1.total, free=0)


class NoNvml(FakeNvml):
    """A host with the NVML package but no driver."""

    def nvmlInit(self) -> None:
        import pynvml

        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)


# ------------------------------------------------------------------ NETIO

@dataclass
class NetioProfile:
    """Outlet loads in W as functions of epoch time: outlet 1 ramps, outlet 2 is constant."""

    t0: float
    ramp_w: float = 100.0
    slope_w_per_s: float = 4.0
    flat_w: float = 50.0

    def loads(self, t: float) -> dict[int, float]:
        return {1: self.ramp_w + self.slope_w_per_s * (t - self.t0), 2: self.flat_w}

    def energy(self, t_a: float, t_b: float, outlet: int) -> float:
        if outlet == 2:
            return self.flat_w * (t_b - t_a)
        f = lambda t: self.ramp_w * (t - self.t0) + 0.5 * self.slope_w_per_s * (t - self.t0) ** 2  # noqa: E731
        return f(t_b) - f(t_a)


class NetioServer:
    """http.server in a thread answering GET /netio.json like a PowerBOX 4KF (optional basic auth,
    optional delay before answering)."""

    def __init__(self, profile: NetioProfile, delay_s: float = 0.0, auth: tuple[str, str] | None = None) -> None:
        self.profile, self.delay_s, self.auth = profile, delay_s, auth
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                server.requests += 1
                if server.auth:
                    import base64

                    want = "Basic " + base64.b64encode(f"{server.auth[0]}:{server.auth[1]}".encode()).decode()
                    if self.headers.get("Authorization") != want:
                        self.send_response(401)
                        self.end_headers()
                        return
                if self.path != "/netio.json":
                    self.send_response(404)
                    self.end_headers()
                    return
                if server.delay_s:
                    time.sleep(server.delay_s)
                body = json.dumps(server.document(time.time())).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/netio.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def document(self, t: float) -> dict:
        loads = self.profile.loads(t)
        outputs = [{"ID": i, "Name": f"output_{i}", "State": 1, "Action": 6, "Delay": 5000,
                    "Current": round(loads.get(i, 0) / 230.0 * 1000), "PowerFactor": 0.95, "Phase": 0,
                    "Load": loads.get(i, 0), "Energy": 233203 + i, "ReverseEnergy": 0, "EnergyNR": 0,
                    "ReverseEnergyNR": 0} for i in range(1, 5)]
        return {
            "Agent": {"Model": "PowerBOX 4KF", "Version": "3.4.2", "JSONVer": "2.4", "DeviceName": "lab-pdu",
                      "SerialNumber": "24:A4:2C:00:00:01", "MAC": "24:A4:2C:00:00:01", "Uptime": 4521231,
                      "Time": "2026-11-26T12:00:00+00:00", "NumOutputs": 4},
            "GlobalMeasure": {"Voltage": 230.1, "Frequency": 50.0,
                              "TotalCurrent": sum(o["Current"] for o in outputs),
                              "OverallPowerFactor": 0.95, "TotalLoad": sum(loads.values()),
                              "TotalEnergy": 466412, "EnergyStart": "1970-01-01T00:00:00+00:00"},
            "Outputs": outputs,
        }

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ------------------------------------------------------------------ dcgm-exporter

class DcgmServer:
    """Serves /metrics like NVIDIA's dcgm-exporter for GPUs at constant power (W): the mJ energy counter
    (declared a counter, without _total), power, utilizations and framebuffer MiB."""

    def __init__(self, watts: list[float]) -> None:
        self.watts, self.t0 = watts, time.time()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                body = server.render(time.time()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/metrics"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def energy_j(self, t: float, gpu: int) -> float:
        return self.watts[gpu] * (t - self.t0)

    def render(self, t: float) -> str:
        out = []
        for name, kind, unit_doc, value in (
            ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter", "Total energy consumption since boot (in mJ).",
             lambda g: 9_000_000_000 + round(self.energy_j(t, g) * 1000)),
            ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", lambda g: self.watts[g]),
            ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", lambda g: 37),
            ("DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory utilization (in %).", lambda g: 5),
            ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).", lambda g: 1234),
            ("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).", lambda g: 80000),
        ):
            out += [f"# HELP {name} {unit_doc}", f"# TYPE {name} {kind}"]
            out += [f'{name}{{gpu="{g}",UUID="GPU-{g}",device="nvidia{g}",modelName="NVIDIA H100 80GB HBM3",'
                    f'Hostname="bench"}} {value(g)}' for g in range(len(self.watts))]
        return "\n".join(out) + "\n"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ------------------------------------------------------------------ a misbehaving exporter

class FaultyExporter:
    """Serves /metrics like a wattserve exporter measuring a constant ``watts`` (a cpu energy counter from
    0 at its start, power, sensor_up, its start time), except at chosen scrapes (1-based request numbers):
    ``faults = {n: kind}`` with kind ``garbage`` (HTML, not the exposition format), ``empty``, ``nan``
    (energy NaN), ``inf`` (power +Inf), ``backwards`` (energy - 500 J, no restart), ``zero`` (energy 0, no
    restart), ``jump`` (energy + 10 MJ), ``restart`` (a new start time: the counter starts again from 0
    and stays so). ``start_time=False`` leaves the start time out (as dcgm-exporter). ``served`` records
    (n, t, kind, energy the body said)."""

    def __init__(self, watts: float, faults: dict[int, str] | None = None, start_time: bool = True,
                 source: str = "rapl") -> None:
        self.watts, self.faults, self.with_start, self.source = watts, dict(faults or {}), start_time, source
        self.t_start = time.time()
        self.requests = 0
        self.served: list[tuple[int, float, str, float | None]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                body = server.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/metrics"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def energy(self, t: float) -> float:
        return self.watts * (t - self.t_start)

    def render(self) -> str:
        with self.lock:
            self.requests += 1
            n, t = self.requests, time.time()
            kind = self.faults.get(n, "ok")
            if kind == "restart":
                self.t_start = t - 0.01
            joules: float | None = self.energy(t)
            power = float(self.watts)
            if kind == "garbage":
                self.served.append((n, t, kind, None))
                return "<html><body>502 Bad Gateway</body></html>\n"
            if kind == "empty":
                self.served.append((n, t, kind, None))
                return ""
            joules = {"nan": float("nan"), "backwards": joules - 500.0, "zero": 0.0,
                      "jump": joules + 1e7}.get(kind, joules)
            power = float("inf") if kind == "inf" else power
            self.served.append((n, t, kind, joules))
            labels = f'domain="cpu",device="package-0",source="{self.source}",estimated="false"'
            lines = [
                "# TYPE wattserve_energy_joules counter",
                f'wattserve_energy_joules_total{{{labels},method="counter"}} {joules!r}',
                "# TYPE wattserve_power_watts gauge",
                f"wattserve_power_watts{{{labels}}} {power!r}",
                "# TYPE wattserve_sensor_up gauge",
                f'wattserve_sensor_up{{sensor="faulty",source="{self.source}"}} 1.0',
            ]
            if self.with_start:
                lines += ["# TYPE wattserve_exporter_start_time_seconds gauge",
                          f'wattserve_exporter_start_time_seconds{{sensor="faulty"}} {self.t_start!r}']
            return "\n".join(lines) + "\n"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["powercap-sim"]:
        powercap_sim(sys.argv[2])
    else:
        raise SystemExit("usage: fakes.py powercap-sim SPEC.json")
