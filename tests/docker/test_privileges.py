"""Why rapl runs as root with no capability (images/README.md, "Security"), shown on this engine with
the real rapl exporter and a powercap tree whose energy_uj is root:root 0400, as Linux >= 5.10 has it:

- root, cap_drop ALL, no-new-privileges, read-only root fs (the compose service): reads the counter;
  its capability sets are empty;
- uid 10001 with cap_add DAC_READ_SEARCH (the "non-root with one capability" idea): Docker leaves the
  capability in the bounding set only, so the process has none (CapEff 0) and gets permission denied,
  which the exporter reports as down with the reason."""

from __future__ import annotations

import re
import uuid

import pytest

from tests.docker.conftest import docker, wait_until

pytestmark = pytest.mark.slow

METRICS = ("import urllib.request as u; "
           "print(u.urlopen('http://127.0.0.1:9651/metrics', timeout=3).read().decode())")


@pytest.fixture(scope="module")
def root_only_powercap(cpu_images):
    """A volume holding intel-rapl:0 (package-0) and intel-rapl:0:0 (core), energy_uj root-only."""
    volume = f"wattserve-test-powercap-{uuid.uuid4().hex[:8]}"
    docker("volume", "create", volume)
    tree = ("set -e; for z in intel-rapl:0 intel-rapl:0/intel-rapl:0:0; do mkdir -p /pc/$z; done; "
            "echo package-0 > /pc/intel-rapl:0/name; echo core > /pc/intel-rapl:0/intel-rapl:0:0/name; "
            "for z in intel-rapl:0 intel-rapl:0/intel-rapl:0:0; do "
            "echo 262143328850 > /pc/$z/max_energy_range_uj; echo 5000000 > /pc/$z/energy_uj; "
            "chmod 0444 /pc/$z/name /pc/$z/max_energy_range_uj; chown 0:0 /pc/$z/energy_uj; "
            "chmod 0400 /pc/$z/energy_uj; done; ls -ln /pc/intel-rapl:0")
    listing = docker("run", "--rm", "--user", "0:0", "--entrypoint", "sh", "-v", f"{volume}:/pc", cpu_images["cpu"],
                     "-c", tree).stdout
    assert re.search(r"(?m)^-r-------- 1 0 0 .* energy_uj$", listing), listing
    try:
        yield volume
    finally:
        docker("volume", "rm", "-f", volume, check=False)


def rapl_container(image: str, volume: str, *privileges: str):
    name = f"wattserve-test-rapl-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--init", "--name", name, "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
           "--security-opt", "no-new-privileges:true", *privileges, "-v", f"{volume}:/host/powercap:ro", image,
           "python", "-m", "services.exporters.rapl", "--addr", "127.0.0.1", "--port", "9651",
           "--powercap-root", "/host/powercap")
    return name


def scrape(name: str) -> str:
    def once():
        out = docker("exec", name, "python", "-c", METRICS, check=False)
        return out.stdout if out.returncode == 0 and "wattserve_sensor_up" in out.stdout else None

    return wait_until(once, 60, interval=1, what=f"{name} /metrics")


def status_of(name: str) -> dict[str, str]:
    text = docker("exec", name, "cat", "/proc/1/status").stdout
    return dict(re.findall(r"(?m)^(\w+):\s*(.*)$", text))


def run_and_scrape(image: str, volume: str, *privileges: str) -> tuple[str, dict[str, str]]:
    name = rapl_container(image, volume, *privileges)
    try:
        return scrape(name), status_of(name)
    finally:
        logs = docker("logs", "--tail", "20", name, check=False)
        print(logs.stdout[-1500:], logs.stderr[-1500:])
        docker("rm", "-f", name, check=False)


def test_root_without_capabilities_reads_root_only_energy(cpu_images, root_only_powercap):
    metrics, status = run_and_scrape(cpu_images["cpu"], root_only_powercap, "--user", "0:0")
    assert re.search(r'(?m)^wattserve_sensor_up\{[^}]*source="rapl"[^}]*\} 1\.0$', metrics), metrics
    energy = re.findall(r'(?m)^wattserve_energy_joules_total\{([^}]*)\} (\S+)$', metrics)
    assert {re.search(r'domain="(\w+)"', labels).group(1) for labels, _ in energy} == {"cpu", "cpu_core"}, energy
    assert all(float(v) >= 0 for _, v in energy)
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[field], 16) == 0, (field, status[field])
    assert status["NoNewPrivs"] == "1" and status["Uid"].split()[0] == "0"


def test_non_root_with_dac_read_search_gets_nothing(cpu_images, root_only_powercap):
    metrics, status = run_and_scrape(cpu_images["cpu"], root_only_powercap, "--user", "10001:10001",
                                     "--cap-add", "DAC_READ_SEARCH")
    assert re.search(r'(?m)^wattserve_sensor_up\{[^}]*source="rapl"[^}]*\} 0\.0$', metrics), metrics
    assert "permission denied" in metrics and "wattserve_energy_joules_total{" not in metrics, metrics
    # the capability is only in the bounding set: not permitted, not effective, not ambient
    assert int(status["CapBnd"], 16) == 1 << 2, status["CapBnd"]  # CAP_DAC_READ_SEARCH = 2
    for field in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(status[field], 16) == 0, (field, status[field])
