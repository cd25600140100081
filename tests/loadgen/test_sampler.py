"""The sampler scraping real exporters (simulated hardware behind them) into series.csv, and
analysis.energy.window_energy on that file against the known truth; a target dying mid-run."""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
import time

import httpx
import pytest

from loadgen.runfolder import read_series
from analysis.energy import window_energy, window_mean
from services.exporters.common import PowerIntegrator, RateWindow
from loadgen.sampler import LocalSampler, Sampler, start_local_exporters
from tests.exporters.conftest import HERE
from tests.exporters.fakes import DcgmServer, NetioProfile, NetioServer, StepProfile, build_powercap

SIM_S = 9.0
PACKAGE = [[0, 10], [3, 80], [6, 10]]   # low power at the window's edges, a burst inside
DRAM = [[0, 5]]
ZONES = [{"id": "intel-rapl:0", "name": "package-0", "range_uj": 50_000_000, "start_uj": 30_000_000,
          "profile": PACKAGE},
         {"id": "intel-rapl:0:0", "name": "dram", "range_uj": 262_143_328_850, "start_uj": 0, "profile": DRAM}]


def test_sampler_series_and_window_energy_match_truth(tmp_path, start_exporter):
    root = build_powercap(tmp_path / "sys", ZONES)
    netio = NetioServer(NetioProfile(t0=time.time()))
    try:
        exps = {
            "rapl": start_exporter("rapl", "--powercap-root", str(root), "--poll-interval", "0.1"),
            "netio": start_exporter("netio", "--netio-url", netio.url, "--outputs", "1,2", "--interval", "0.5",
                                    "--timeout", "0.4"),
            "estimate": start_exporter("estimate", "--tdp-watts", "40"),
            "host": start_exporter("host"),
        }
        sampler = Sampler({k: e.url for k, e in exps.items()}, interval_s=0.5)
        run_dir = tmp_path / "run"
        sampler.start(run_dir)
        spec = tmp_path / "sim.json"
        spec.write_text(json.dumps({"root": str(root), "zones": ZONES, "duration": SIM_S,
                                    "t0_file": str(tmp_path / "t0"), "period": 0.001}))
        sim = subprocess.Popen([sys.executable, str(HERE / "fakes.py"), "powercap-sim", str(spec)])
        time.sleep(SIM_S / 2)
        exps["host"].proc.kill()  # a target dying mid-run
        assert sim.wait(SIM_S + 30) == 0
        time.sleep(1.0)
        sensors = {d["name"]: d for d in sampler.stop()}
    finally:
        netio.close()
    t0 = float((tmp_path / "t0").read_text())

    # run.json descriptors
    assert set(sensors) == {"rapl", "netio", "estimate", "host"}
    for name in ("rapl", "netio", "estimate"):
        assert sensors[name]["available"] and sensors[name]["error"] is None, sensors[name]
    assert sensors["rapl"]["source"] == "rapl" and not sensors["rapl"]["estimated"]
    assert sensors["estimate"]["estimated"] is True
    assert sensors["host"]["available"] is False and "stopped answering" in sensors["host"]["error"]
    assert set(sensors["host"]) >= {"name", "url", "source", "estimated", "available", "error"}

    # series.csv: long format, JSON labels with sorted keys, an up row per scrape
    with open(run_dir / "series.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["t", "sensor", "metric", "labels", "value"]
    energy_row = next(r for r in rows if r["metric"] == "wattserve_energy_joules_total" and r["sensor"] == "rapl")
    assert list(json.loads(energy_row["labels"])) == sorted(json.loads(energy_row["labels"]))
    host_up = [float(r["value"]) for r in rows if r["sensor"] == "host" and r["metric"] == "up"]
    assert host_up[0] == 1 and host_up[-1] == 0

    series = read_series(run_dir)
    start, end = t0 + 1.5, t0 + 7.5
    readings = window_energy(series, start, end)
    cpu_truth = StepProfile(PACKAGE, SIM_S).energy(7.5) - StepProfile(PACKAGE, SIM_S).energy(1.5)
    cpu = readings["cpu"]
    assert (cpu.source, cpu.estimated, cpu.method, cpu.complete) == ("rapl", False, "counter", True), cpu
    assert cpu.joules == pytest.approx(cpu_truth, rel=0.005)
    assert readings["dram"].joules == pytest.approx(5 * 6.0, rel=0.005)
    wall = readings["wall"]
    wall_truth = sum(netio.profile.energy(start, end, o) for o in (1, 2))
    assert (wall.source, wall.method, wall.complete) == ("netio", "power-integral", True), wall
    assert wall.joules == pytest.approx(wall_truth, rel=0.005)
    assert set(wall.devices) == {"outlet1", "outlet2"}
    assert "gpu" not in readings  # no GPU sensor ran: absent, not 0
    # gauges
    assert 0 <= window_mean(series, "wattserve_cpu_utilization_ratio", t0, t0 + 3) <= 1
    # after the host exporter died, its gauges are simply missing in a later window
    assert window_mean(series, "wattserve_memory_used_bytes", t0 + SIM_S - 1, t0 + SIM_S) is None


def test_dcgm_exporter_series_through_the_sampler(tmp_path):
    dcgm = DcgmServer([300.0, 120.0])
    try:
        sampler = Sampler({"dcgm": dcgm.url}, interval_s=0.25)
        sampler.start(tmp_path)
        time.sleep(2.5)
        (desc,) = sampler.stop()
    finally:
        dcgm.close()
    assert (desc["source"], desc["available"], desc["estimated"]) == ("dcgm", True, False)
    series = read_series(tmp_path)
    start, end = dcgm.t0 + 0.5, dcgm.t0 + 2.0
    gpu = window_energy(series, start, end)["gpu"]
    assert (gpu.source, gpu.method, gpu.complete) == ("dcgm", "counter", True), gpu
    assert gpu.joules == pytest.approx((300 + 120) * 1.5, rel=0.005)
    assert gpu.devices.keys() == {"gpu0", "gpu1"}
    assert window_mean(series, "wattserve_gpu_utilization_ratio", start, end) == pytest.approx(0.37)
    assert window_mean(series, "wattserve_gpu_memory_total_bytes", start, end) == pytest.approx(81234 * 2**20)


def test_start_local_exporters_on_this_machine(tmp_path):
    netio = NetioServer(NetioProfile(t0=time.time()))
    targets, stop = start_local_exporters(None, log_dir=tmp_path / "logs", powercap_root=tmp_path / "absent",
                                          netio_url=netio.url)
    try:
        assert set(targets) >= {"host", "estimate", "netio"} and "rapl" not in targets
        for name, url in targets.items():
            assert "wattserve_sensor_up" in httpx.get(url, timeout=5).text
    finally:
        stop()
        netio.close()
    for url in targets.values():
        with pytest.raises(httpx.TransportError):
            httpx.get(url, timeout=1)
    assert (tmp_path / "logs" / "host.log").exists()


def test_local_sampler_as_the_bench_protocol_drives_it(tmp_path):
    """start(run_dir) before the service exists, service_started(pid) later, stop() -> descriptors."""
    sampler = LocalSampler(interval_s=0.25, powercap_root=tmp_path / "absent", netio_url=None)
    sampler.start(tmp_path / "run")
    service = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        sampler.service_started(service.pid)
        time.sleep(1.5)
    finally:
        service.kill()
        service.wait()
        sensors = {d["name"]: d for d in sampler.stop()}
    assert {"host", "estimate"} <= set(sensors) and all(d["available"] for d in sensors.values()), sensors
    series = read_series(tmp_path / "run")
    tree = series[(series["metric"] == "wattserve_process_up") & (series["value"] == 1)]
    assert set(tree["labels"].map(lambda d: (d["target"], d["pid"]))) == {("service", str(service.pid))}


def test_start_local_exporters_picks_rapl_where_powercap_is_readable(tmp_path):
    root = build_powercap(tmp_path / "sys", ZONES[:1])
    targets, stop = start_local_exporters(None, powercap_root=root, netio_url=None)
    try:
        assert "rapl" in targets and "estimate" not in targets
    finally:
        stop()


def test_power_integrator_and_rate_window():
    integ = PowerIntegrator(max_gap_s=2.0)
    for t, w in [(0, 10), (1, 20), (2, 20), (10, 50), (11, 50)]:  # the 8 s gap is not bridged
        integ.add(t, w)
    assert integ.joules == pytest.approx(15 + 20 + 50) and integ.gaps == 1
    rate = RateWindow(window_s=1.0)
    for t in range(6):
        rate.add(t * 0.25, t * 0.25 * 30)
    assert rate.rate() == pytest.approx(30)


def test_netio_credentials_stay_out_of_command_lines_records_and_logs(tmp_path, caplog, monkeypatch):
    """NETIO_URL=http://user:pass@host/netio.json as the bench gets it: the netio exporter reads the device
    with it, and no command line, no other exporter's environment, no run.json sensor entry, no
    series.csv row and no log line carries the password."""
    from base64 import b64encode
    from urllib.parse import quote

    import psutil

    password = "wall:meter/pw " + "Zq7-s3cr3t"
    secrets = [password, quote(password, safe=""), b64encode(f"admin:{password}".encode()).decode()]
    netio = NetioServer(NetioProfile(t0=time.time()), auth=("admin", password))
    url = netio.url.replace("http://", f"http://admin:{quote(password, safe='')}@")
    monkeypatch.setenv("NETIO_PASSWORD", password)  # also set the way compose passes it: for netio only
    monkeypatch.setenv("NETIO_USER", "admin")
    caplog.set_level("DEBUG")
    with socket.socket() as s:  # a closed port: a target that never answers, with credentials in its URL
        s.bind(("127.0.0.1", 0))
        dead = f"http://scraper:{quote(password, safe='')}@127.0.0.1:{s.getsockname()[1]}/metrics"
    targets, stop = start_local_exporters(None, log_dir=tmp_path / "logs", powercap_root=tmp_path / "absent",
                                          netio_url=url, extra_args={"netio": ["--interval", "0.5", "--log-level",
                                                                               "debug"]})
    try:
        assert "netio" in targets
        children = psutil.Process().children(recursive=True)
        exporters = {p.pid: p for p in children if "services.exporters." in " ".join(p.cmdline())}
        assert len(exporters) >= 3
        for p in exporters.values():
            cmdline = " ".join(p.cmdline())
            assert not [x for x in secrets if x in cmdline], cmdline
            if "services.exporters.netio" not in cmdline:
                assert not {k for k in p.environ() if k.startswith("NETIO_")}, (cmdline, "gets NETIO_*")
        sampler = Sampler({**targets, "remote": dead}, interval_s=0.25)
        sampler.start(tmp_path / "run")
        time.sleep(2.0)
        sensors = {d["name"]: d for d in sampler.stop()}
    finally:
        stop()
        netio.close()
    assert sensors["netio"]["available"] and sensors["netio"]["source"] == "netio", sensors["netio"]
    assert netio.requests >= 2  # the device was really read, with the credentials
    assert sensors["remote"]["url"] == dead.replace(dead.split("@")[0].split("//")[1] + "@", "")
    assert sensors["remote"]["available"] is False
    written = [json.dumps(sensors), (tmp_path / "run" / "series.csv").read_text(), caplog.text,
               *(f.read_text() for f in (tmp_path / "logs").glob("*.log"))]
    assert "wattserve_energy_joules_total" in written[1]
    leaks = [(i, x) for i, text in enumerate(written) for x in secrets if x in text]
    assert not leaks, leaks
