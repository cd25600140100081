"""NVML exporter with a fake NVML library behind the production code, served over real HTTP; the
nvidia-smi mode with a fake nvidia-smi printing the study's CSV query."""

from __future__ import annotations

import time

import pytest

from services.exporters.common import serve
from services.exporters.nvml import NvmlExporter, smi_value
from tests.exporters.conftest import HERE, scrape, script, wait_for
from tests.exporters.fakes import FakeNvml, FakeNvmlV2, NoNvml

MIB = 1024 * 1024


@pytest.fixture
def served():
    started = []

    def start(exporter):
        httpd, url = serve(exporter)
        started.append((httpd, exporter))
        return url

    yield start
    for httpd, exporter in started:
        httpd.shutdown()
        exporter.close()


def bracketed_scrapes(url: str, pause: float):
    a1 = time.monotonic(); m1 = scrape(url); b1 = time.monotonic()  # noqa: E702
    time.sleep(pause)
    a2 = time.monotonic(); m2 = scrape(url); b2 = time.monotonic()  # noqa: E702
    return m1, m2, (a2 - b1, b2 - a1)  # the true interval between the two reads lies in this range


@pytest.mark.parametrize("counter", [True, False], ids=["energy-counter", "power-integral"])
def test_fake_nvml_over_http(served, counter):
    fake = FakeNvml([250.0, 100.0], energy_counter=counter)
    url = served(NvmlExporter(fake, poll_interval_s=0.05))
    m1, m2, (lo, hi) = bracketed_scrapes(url, 1.0)
    method = "counter" if counter else "power-integral"
    for dev, watts in (("gpu0", 250.0), ("gpu1", 100.0)):
        labels = dict(domain="gpu", device=dev, source="nvml", estimated="false", method=method)
        delta = m2.get("wattserve_energy_joules_total", **labels) - m1.get("wattserve_energy_joules_total", **labels)
        slack = 0.01 * watts * lo + (0.0 if counter else watts * 0.05)  # mJ rounding / one poll
        assert watts * lo - slack <= delta <= watts * hi + slack, (dev, delta, lo, hi)
        assert m2.get("wattserve_power_watts", domain="gpu", device=dev, source="nvml", estimated="false") == watts
        assert m2.get("wattserve_gpu_utilization_ratio", device=dev) == pytest.approx(0.37)
        assert m2.get("wattserve_gpu_memory_utilization_ratio", device=dev) == pytest.approx(0.05)
        assert m2.get("wattserve_gpu_memory_used_bytes", device=dev) == 1234 * MIB
        assert m2.get("wattserve_gpu_memory_total_bytes", device=dev) == 24564 * MIB
        uuid = f"GPU-fake-{dev[-1]}"  # every per-GPU series names its board
        for name in ("wattserve_energy_joules_total", "wattserve_power_watts", "wattserve_gpu_utilization_ratio",
                     "wattserve_gpu_memory_utilization_ratio", "wattserve_gpu_memory_used_bytes",
                     "wattserve_gpu_memory_total_bytes", "wattserve_gpu_info"):
            assert [s.labels["uuid"] for s in m2.all(name, device=dev)] == [uuid], name
    # mJ since driver load -> J since the exporter started: no 123456 J offset
    assert m1.get("wattserve_energy_joules_total", device="gpu0") < 250 * 5
    assert m2.all("wattserve_gpu_info", device="gpu0")[0].labels["name"] == "Fake GPU 4090"
    assert m2.get("wattserve_sensor_up", sensor="nvml", source="nvml") == 1


def test_no_driver_is_unavailable_with_a_message(served):
    m = scrape(served(NvmlExporter(NoNvml([1.0]))))
    assert m.get("wattserve_sensor_up", sensor="nvml", source="nvml") == 0
    msg = m.all("wattserve_sensor_info", sensor="nvml")[0].labels["message"]
    assert "NVML" in msg and "driver" in msg
    assert not m.has("wattserve_energy_joules_total") and not m.has("wattserve_gpu_utilization_ratio")


def test_nvidia_smi_csv(tmp_path, start_exporter):
    smi = script(tmp_path, "nvidia-smi", HERE / "fake_nvidia_smi.py")
    exp = start_exporter("nvml", "--source", "nvidia-smi", "--nvidia-smi-bin", str(smi), "--interval-ms", "100",
                         env={"FAKE_SMI_WATTS": "45.3,120"})
    assert wait_for(lambda: exp.scrape().get("wattserve_sensor_up", sensor="nvml", source="nvidia-smi") == 1, 5), \
        exp.output()
    m1 = exp.scrape()
    time.sleep(1.5)
    m2 = exp.scrape()
    labels = dict(domain="gpu", device="gpu0", source="nvidia-smi", estimated="false", method="power-integral")
    delta = m2.get("wattserve_energy_joules_total", **labels) - m1.get("wattserve_energy_joules_total", **labels)
    ts = [m.get("wattserve_sensor_last_sample_timestamp_seconds", sensor="nvml") for m in (m1, m2)]
    assert delta == pytest.approx(45.3 * (ts[1] - ts[0]), rel=0.03)
    assert m2.get("wattserve_power_watts", device="gpu1", source="nvidia-smi") == pytest.approx(120)
    assert m2.get("wattserve_gpu_utilization_ratio", device="gpu0") == pytest.approx(0.37)
    assert m2.get("wattserve_gpu_memory_utilization_ratio", device="gpu0") == pytest.approx(0.05)
    assert m2.get("wattserve_gpu_memory_used_bytes", device="gpu1") == 1234 * MIB
    assert m2.get("wattserve_gpu_memory_total_bytes", device="gpu1") == 24564 * MIB
    assert m2.get("wattserve_gpu_temperature_celsius", device="gpu0") == 41
    assert not m2.has("wattserve_gpu_power_limit_watts")  # "[N/A]" is not 0
    for dev in ("gpu0", "gpu1"):  # the board's UUID on every per-GPU series, from the query's uuid column
        assert {s.labels["uuid"] for s in m2.samples if s.labels.get("device") == dev} == {f"GPU-fake-smi-{dev[-1]}"}


def test_nvidia_smi_without_driver_is_down(tmp_path, start_exporter):
    smi = script(tmp_path, "nvidia-smi", HERE / "fake_nvidia_smi.py")
    exp = start_exporter("nvml", "--source", "nvidia-smi", "--nvidia-smi-bin", str(smi), env={"FAKE_SMI_FAIL": "1"})
    assert wait_for(lambda: "couldn't communicate" in
                    exp.scrape().all("wattserve_sensor_info")[0].labels["message"], 5), exp.output()
    m = exp.scrape()
    assert m.get("wattserve_sensor_up", sensor="nvml", source="nvidia-smi") == 0
    assert not m.has("wattserve_energy_joules_total")


def test_smi_units():
    assert smi_value("45.30 W") == pytest.approx(45.3)
    assert smi_value("37 %") == pytest.approx(0.37)
    assert smi_value("1234 MiB") == 1234 * MIB
    assert smi_value("41") == 41
    assert smi_value("[N/A]") is None and smi_value("[Not Supported]") is None


@pytest.mark.parametrize("fake, used, api", [
    (lambda: FakeNvmlV2([100.0]), 1234 * MIB - FakeNvmlV2.RESERVED, "v2"),  # v2: reserved memory is not "used"
    (lambda: FakeNvmlV2([100.0], v2_fails=True), 1234 * MIB, "v1"),        # driver without the v2 call
    (lambda: FakeNvml([100.0]), 1234 * MIB, "v1"),                          # binding without nvmlMemory_v2
], ids=["v2", "v2-missing-in-driver", "binding-v1"])
def test_memory_prefers_nvml_v2_and_says_which(served, fake, used, api):
    m = scrape(served(NvmlExporter(fake(), poll_interval_s=0.05)))
    assert m.get("wattserve_gpu_memory_used_bytes", device="gpu0") == used
    assert m.get("wattserve_gpu_memory_total_bytes", device="gpu0") == 24564 * MIB
    assert m.all("wattserve_gpu_info", device="gpu0")[0].labels["memory_api"] == api
