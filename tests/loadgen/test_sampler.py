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
from loadgen.local_exporters import LocalSampler, start_local_exporters
from loadgen.sampler import Sampler
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


# ------------------------------------------------------------------ the serving GPU only

def test_two_gpus_only_the_serving_one_counts(tmp_path):
    """A 2-GPU host where GPU 0 serves (250 W, 90 %) and GPU 1 idles (30 W, 0 %): the nvml exporter (a fake
    NVML behind the production code) labels every series with its board's UUID, and the device filter
    counts the serving board only; dcgm-exporter's UUID label works the same way."""
    from services.exporters.common import serve
    from services.exporters.nvml import NvmlExporter
    from tests.exporters.fakes import FakeNvml

    exporter = NvmlExporter(FakeNvml([250.0, 30.0], util=[90, 0]), poll_interval_s=0.05)
    httpd, url = serve(exporter)
    dcgm = DcgmServer([300.0, 50.0])
    try:
        sampler = Sampler({"nvml": url, "dcgm": dcgm.url}, interval_s=0.25)
        sampler.start(tmp_path)
        t0 = time.time()
        time.sleep(2.5)
        sampler.stop()
    finally:
        httpd.shutdown()
        exporter.close()
        dcgm.close()
    series = read_series(tmp_path)
    start, end = t0 + 0.5, t0 + 2.0
    nvml = series[series["sensor"] == "nvml"]
    both = window_energy(nvml, start, end)["gpu"]
    serving = window_energy(nvml, start, end, devices={"gpu": {"GPU-fake-0"}})["gpu"]
    assert both.joules == pytest.approx(280 * 1.5, rel=0.02)
    assert (serving.joules, serving.complete) == (pytest.approx(250 * 1.5, rel=0.02), True), serving
    assert serving.devices.keys() == {"gpu0"}
    util = "wattserve_gpu_utilization_ratio"
    assert window_mean(nvml, util, start, end) == pytest.approx(0.45)
    assert window_mean(nvml, util, start, end, devices={"gpu": ["GPU-fake-0"]}) == pytest.approx(0.90)
    assert window_mean(nvml, util, start, end, devices={"gpu": ["GPU-fake-1"]}) == pytest.approx(0.0)
    # a board that left no series: missing, never 0 J, never "no GPU here"
    other = window_energy(nvml, start, end, devices={"gpu": {"GPU-not-here"}})["gpu"]
    assert other.joules is None and not other.complete and "GPU-not-here" in other.note
    assert window_mean(nvml, util, start, end, devices={"gpu": {"GPU-not-here"}}) is None
    # the filter touches the GPU domain only
    assert window_energy(nvml, start, end, devices={"cpu": {"x"}})["gpu"].joules == pytest.approx(both.joules)
    d = series[series["sensor"] == "dcgm"]
    assert window_energy(d, start, end)["gpu"].joules == pytest.approx(350 * 1.5, rel=0.01)
    assert window_energy(d, start, end, devices={"gpu": {"GPU-1"}})["gpu"].joules == pytest.approx(50 * 1.5, rel=0.01)
    assert window_mean(d, "wattserve_gpu_memory_total_bytes", start, end, devices={"gpu": {"GPU-0"}}) == \
        pytest.approx(81234 * 2**20)


# ------------------------------------------------------------------ bad sensor data

def _energy_rows(run_dir, sensor):
    with open(run_dir / "series.csv", newline="") as f:
        return [(float(r["t"]), float(r["value"])) for r in csv.DictReader(f)
                if r["sensor"] == sensor and r["metric"] == "wattserve_energy_joules_total"]


def _run_faulty(tmp_path, targets: dict, scrapes: int, interval_s: float = 0.2, **kw):
    sampler = Sampler({k: v.url for k, v in targets.items()}, interval_s=interval_s, **kw)
    run_dir = tmp_path / "run"
    sampler.start(run_dir)
    deadline = time.monotonic() + 30
    while min(t.requests for t in targets.values()) < scrapes and time.monotonic() < deadline:
        time.sleep(0.05)
    return run_dir, {d["name"]: d for d in sampler.stop()}


def test_bad_samples_are_dropped_counted_and_flagged(tmp_path):
    from loadgen.protocol import run_flags
    from tests.exporters.fakes import FaultyExporter

    faults = {3: "garbage", 5: "nan", 6: "inf", 8: "backwards", 10: "jump", 12: "zero", 14: "empty", 16: "restart"}
    bad, good = FaultyExporter(50.0, faults), FaultyExporter(20.0, source="energibridge")
    try:
        run_dir, sensors = _run_faulty(tmp_path, {"bad": bad, "good": good}, 22)
    finally:
        bad.close()
        good.close()
    served = {n: (t, kind, j) for n, t, kind, j in bad.served}

    # counted, with the reasons; the healthy exporter next to it lost nothing
    d = sensors["bad"]
    assert d["dropped_samples"] == 7, d
    for why in ("unparsable /metrics", "non-finite value", "went backwards", "jumped"):
        assert why in d["dropped_reason"], d["dropped_reason"]
    assert sensors["good"]["dropped_samples"] == 0 and sensors["good"]["dropped_reason"] is None
    assert len(_energy_rows(run_dir, "good")) == good.requests
    flags = run_flags(list(sensors.values()), {}, True)
    assert any(f.startswith("sensor bad: 7 bad sample(s) dropped") for f in flags), flags
    assert not any(f.startswith("sensor good") for f in flags)

    # nothing bad reached series.csv as a value: the counter rises, except once, at the real restart
    rows = _energy_rows(run_dir, "bad")
    values = [v for _, v in rows]
    assert all(v == v and abs(v) != float("inf") for v in values)
    for n in (8, 10, 12):
        assert served[n][2] not in values
    drops = [i for i in range(1, len(values)) if values[i] < values[i - 1]]
    assert len(drops) == 1 and rows[drops[0]][0] > served[16][0] - 0.1, rows
    series = read_series(run_dir)
    dropped = series[(series["metric"] == "dropped") & (series["sensor"] == "bad")]
    assert len(dropped) == 7 and not (series[series["metric"] == "wattserve_power_watts"]["value"] == float("inf")).any()
    assert {x["reason"].split(" ")[0] for x in dropped["labels"]} >= {"unparsable", "non-finite", "counter"}

    # the energy says so: a window over the dropped samples is incomplete (its value, from the counter's
    # good samples around them, is still right); one after the restart with nothing dropped is complete
    mine = series[series["sensor"] == "bad"]
    over = window_energy(mine, served[7][0], served[11][0])["cpu"]
    assert not over.complete and "dropped" in over.note, over
    assert over.joules == pytest.approx(50 * (served[11][0] - served[7][0]), rel=0.1)
    clean = window_energy(mine, served[17][0] + 0.05, served[21][0] - 0.05)["cpu"]
    assert clean.complete, clean
    assert clean.joules == pytest.approx(50 * (served[21][0] - served[17][0] - 0.1), rel=0.1)


def test_a_counter_drop_is_a_restart_only_when_it_is_one(tmp_path):
    """Without a start time (dcgm-exporter) a one-sample drop to 0 is a glitch (dropped) and a drop that
    goes on is a restart (its first samples dropped); with one, the start time decides."""
    from tests.exporters.fakes import FaultyExporter

    blind = FaultyExporter(50.0, {4: "zero", 8: "restart"}, start_time=False)
    try:
        run_dir, sensors = _run_faulty(tmp_path, {"blind": blind}, 14)
    finally:
        blind.close()
    assert sensors["blind"]["dropped_samples"] == 1 + 2, sensors["blind"]
    values = [v for _, v in _energy_rows(run_dir, "blind")]
    drops = [i for i in range(1, len(values)) if values[i] < values[i - 1]]
    assert len(drops) == 1 and 0 < values[drops[0]] < 50 * 1.0, values  # the restart, near 0


def test_the_power_bound_is_configurable(tmp_path):
    """A 50 W counter under a 40 W bound: every rise is implausible, so the energy is missing (a gap), never
    a number made of the samples that passed."""
    from tests.exporters.fakes import FaultyExporter

    fake = FaultyExporter(50.0)
    try:
        run_dir, sensors = _run_faulty(tmp_path, {"x": fake}, 12, max_device_watts=40)
    finally:
        fake.close()
    assert sensors["x"]["dropped_samples"] >= 10 and "40 W" in sensors["x"]["dropped_reason"]
    series = read_series(run_dir)
    t = series["t"]
    assert window_energy(series, t.min() + 0.5, t.max() - 0.2)["cpu"].joules is None
    with pytest.raises(ValueError):
        Sampler({}, max_device_watts=0)


# ------------------------------------------------------------------ every sensor selectable

def test_local_sampler_starts_exactly_the_chosen_sensors(tmp_path, monkeypatch):
    """cpu rapl (a powercap tree: no estimate beside it), gpu nvidia-smi (a fake nvidia-smi), a NETIO
    by URL; then cpu estimate with the chosen TDP, gpu dcgm=<URL>, no wall meter: each descriptor says its
    role and what was asked for."""
    from loadgen.sampling import SensorChoice
    from tests.exporters.conftest import script

    root = build_powercap(tmp_path / "sys", ZONES[:1])
    monkeypatch.setenv("WATTSERVE_NVIDIA_SMI", str(script(tmp_path, "nvidia-smi", HERE / "fake_nvidia_smi.py")))
    monkeypatch.delenv("NETIO_URL", raising=False)
    netio, dcgm = NetioServer(NetioProfile(t0=time.time())), DcgmServer([200.0])
    try:
        first = LocalSampler(interval_s=0.25, powercap_root=root,
                             choice=SensorChoice.parse("rapl", "nvidia-smi", netio.url))
        first.start(tmp_path / "a")
        time.sleep(2.5)
        a = {d["name"]: d for d in first.stop()}
        second = LocalSampler(interval_s=0.25, powercap_root=root,
                              choice=SensorChoice.parse("estimate", f"dcgm={dcgm.url}", "none", tdp_watts=65))
        second.start(tmp_path / "b")
        time.sleep(1.0)
        described = second.describe()
        b = {d["name"]: d for d in second.stop()}
    finally:
        netio.close()
        dcgm.close()
    assert set(a) == {"host", "rapl", "nvml", "netio"}, a
    assert {n: (d["role"], d["requested"]) for n, d in a.items()} == {
        "host": ("host", None), "rapl": ("cpu", "rapl"), "nvml": ("gpu", "nvidia-smi"), "netio": ("wall", "url")}
    assert a["nvml"]["source"] == "nvidia-smi" and a["nvml"]["available"], a["nvml"]
    assert set(b) == {"host", "estimate", "dcgm"}, b
    assert (b["dcgm"]["role"], b["dcgm"]["requested"], b["estimate"]["estimated"]) == ("gpu", "dcgm", True)
    info = read_series(tmp_path / "b")
    tdp = info[info["metric"] == "wattserve_estimate_info"]["labels"].iloc[-1]
    assert (tdp["tdp_watts"], tdp["tdp_source"]) == ("65", "flag")
    assert described["cpu"] == "estimate" and described["resolved"]["gpu"] == ["dcgm"]
    assert described["resolved"]["wall"] == []
