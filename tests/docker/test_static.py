"""No Docker needed: the dashboard JSON, the provisioning, the compose file, Prometheus' configuration
and the image requirement sets are checked as files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "grafana" / "dashboards" / "wattserve.json"
COMPOSE = ROOT / "compose" / "docker-compose.yml"
PROMETHEUS = ROOT / "compose" / "prometheus.yml"
DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yml"

# Metrics only a GPU machine produces (nvml exporter / dcgm-exporter).
GPU_ONLY = {"wattserve_gpu_utilization_ratio", "wattserve_gpu_memory_used_bytes",
            "wattserve_gpu_memory_utilization_ratio", "wattserve_gpu_memory_total_bytes", "wattserve_gpu_info"}
DCGM = {"DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_MEM_COPY_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"}


def dashboard_queries() -> list[tuple[str, str]]:
    d = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in d["panels"] if p.get("type") != "row" for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (label matchers and strings removed first)."""
    bare = re.sub(r'"[^"]*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}", "", bare)
    return set(re.findall(r"\b(wattserve_[a-z0-9_]+|DCGM_FI_[A-Z0-9_]+)\b", bare))


def contract_metrics() -> set[str]:
    """Every metric name the service and the exporters can expose, from their code."""
    from prometheus_client import generate_latest

    from services.inference.metrics import ServiceMetrics

    m = ServiceMetrics()
    m.requests.labels("/v1/generate", "200").inc()
    m.errors.labels("/v1/generate", "invalid").inc()
    m.latency.labels("/v1/generate").observe(0.1)
    m.model_info.labels("onnx-cpu", "onnx", "cpu", "tiny", "r", "fp32", "true").set(1)
    text = generate_latest(m.registry).decode()
    names = set(re.findall(r"^(wattserve_[a-z0-9_]+)", text, re.M))
    # exporters that run anywhere: collect them for real
    import os

    from services.exporters.estimate import EstimateExporter
    from services.exporters.host import HostExporter

    for exporter in (HostExporter(os.getpid()), EstimateExporter()):
        for family in exporter.collect():
            names |= {sample.name for sample in family.samples}
    # the others (hardware absent here): from their code
    for path in (ROOT / "services" / "exporters").glob("*.py"):
        src = path.read_text()
        names |= {f"wattserve_{n}" for n in re.findall(r'\bgauge\(\s*"([a-z0-9_]+)"', src)}
        names |= {f"wattserve_{n}_total" for n in re.findall(r'\bcounter\(\s*"([a-z0-9_]+)"', src)}
        if "energy_family(" in src:
            names.add("wattserve_energy_joules_total")
        if "power_family(" in src:
            names.add("wattserve_power_watts")
    return names | DCGM


# ------------------------------------------------------------------ dashboard and provisioning

def test_dashboard_is_generated_from_its_script():
    out = subprocess.run([sys.executable, str(ROOT / "grafana" / "build_dashboards.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_every_panel_has_queries_on_existing_metrics():
    d = json.loads(DASHBOARD.read_text())
    known = contract_metrics()
    panels = [p for p in d["panels"] if p.get("type") != "row"]
    assert len(panels) >= 10
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        assert p.get("targets"), f"panel {p['title']!r} has no query"
        assert set().union(*(metric_names(t["expr"]) for t in p["targets"])), f"panel {p['title']!r}: no metric"
        for t in p["targets"]:
            names = metric_names(t["expr"])
            assert names or t["expr"].startswith("vector("), f"panel {p['title']!r}: no metric in {t['expr']!r}"
            unknown = names - known
            assert not unknown, f"panel {p['title']!r} uses metrics nobody exports: {unknown}"
            assert t["datasource"]["uid"] == "wattserve-prometheus"


def test_dashboard_covers_the_brief():
    used = set().union(*(metric_names(e) for _, e in dashboard_queries()))
    for m in ("wattserve_power_watts", "wattserve_energy_joules_total", "wattserve_requests_total",
              "wattserve_request_latency_seconds_bucket", "wattserve_cpu_utilization_ratio",
              "wattserve_memory_used_bytes", "wattserve_gpu_utilization_ratio", "wattserve_gpu_memory_used_bytes",
              "wattserve_model_info", "wattserve_sensor_up"):
        assert m in used, f"no panel shows {m}"
    d = json.loads(DASHBOARD.read_text())
    variables = {v["name"] for v in d["templating"]["list"]}
    assert {"config", "model"} <= variables


def test_energy_and_power_legends_show_provenance():
    d = json.loads(DASHBOARD.read_text())
    for p in d["panels"]:
        for t in p.get("targets", []):
            if metric_names(t["expr"]) & {"wattserve_power_watts", "wattserve_energy_joules_total"}:
                assert "{{source}}" in t["legendFormat"] and "{{estimated}}" in t["legendFormat"], p["title"]


def test_provisioned_datasource_matches_dashboards():
    ds = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert [d["uid"] for d in ds] == ["wattserve-prometheus"]
    assert ds[0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/wattserve.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"


# ------------------------------------------------------------------ compose and Prometheus

def compose_file() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_published_ports_bind_loopback_only():
    for name, svc in compose_file()["services"].items():
        assert svc.get("network_mode") != "host", name
        for port in svc.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name}: {port!r} is not bound to 127.0.0.1"


def test_no_default_credentials():
    text = COMPOSE.read_text()
    grafana = compose_file()["services"]["grafana"]
    env = grafana["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?"), "admin password must be required"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert not re.search(r"(?i)password[\"']?\s*[:=]\s*[\"']?admin\b", text)
    assert "dashboards" in grafana["profiles"], "Grafana must sit under a profile (it cannot be pulled everywhere)"


def test_services_run_without_root_where_they_can():
    services = compose_file()["services"]
    for name in ("host", "estimate", "nvml", "netio", "prometheus"):
        assert "ALL" in services[name].get("cap_drop", []), name
    # rapl reads root-only energy_uj: root, but no capabilities, read-only root fs and mount
    rapl = services["rapl"]
    assert rapl["user"] == "0:0" and rapl["read_only"] is True and "ALL" in rapl["cap_drop"]
    assert all(v.endswith(":ro") for v in rapl["volumes"])
    assert "user" not in services["inference"], "the inference image's non-root user must be kept"


def test_exporters_and_profiles():
    services = compose_file()["services"]
    exporters = {p.stem for p in (ROOT / "services" / "exporters").glob("*.py")} - {"__init__", "common", "sampler"}
    for name in ("host", "rapl", "estimate", "nvml", "netio"):
        assert name in exporters, f"services/exporters/{name}.py is gone"
        cmd = services[name]["command"]
        assert cmd[:3] == ["python", "-m", f"services.exporters.{name}"], cmd
        assert "--addr" in cmd and cmd[cmd.index("--addr") + 1] == "0.0.0.0"
    assert "gpu" in services["nvml"]["profiles"] and "gpu" in services["dcgm"]["profiles"]
    assert "netio" in services["netio"]["profiles"]
    assert services["dcgm"]["command"] == ["-c", "1000"]
    for gpu in ("nvml", "dcgm"):
        devices = services[gpu]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia"
    assert services["inference"]["depends_on"]["prepare"]["condition"] == "service_completed_successfully"


def test_prometheus_scrapes_every_service_each_second():
    prom = yaml.safe_load(PROMETHEUS.read_text())
    assert prom["global"]["scrape_interval"] == "1s"
    services = compose_file()["services"]
    jobs = {}
    for job in prom["scrape_configs"]:
        hosts = [t.split(":")[0] for sc in job.get("static_configs", []) for t in sc["targets"]]
        hosts += [n for sd in job.get("dns_sd_configs", []) for n in sd["names"]]
        jobs[job["job_name"]] = hosts
        for h in hosts:
            assert h in services, f"job {job['job_name']} scrapes {h}, which is no compose service"
    for name in ("inference", "host", "rapl", "estimate", "nvml", "dcgm", "netio"):
        assert name in jobs, f"Prometheus does not scrape {name}"


# ------------------------------------------------------------------ image requirement sets

def pins(path: Path) -> dict[str, str]:
    return pins_of_text(path.read_text())


def test_cuda_requirement_set():
    sys.path.insert(0, str(ROOT / "images"))
    try:
        import requirements as flavours
    finally:
        sys.path.pop(0)
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    assert flavours.flavour(lines, "cpu") == lines
    cuda = "\n".join(flavours.flavour(lines, "cuda"))
    assert not re.search(r"(?m)^onnxruntime==", cuda), "CPU and GPU ONNX Runtime must never be installed together"
    assert "optimum-onnx[onnxruntime-gpu]" in cuda and "onnxruntime-gpu[cuda,cudnn]==" in cuda
    cuda_pins = pins(ROOT / "images" / "constraints-cuda.txt")
    cpu_pins = pins(ROOT / "constraints.txt")
    for name, version in pins_of_text(cuda).items():
        assert cuda_pins.get(name) == version, f"{name}=={version} not pinned in images/constraints-cuda.txt"
    shared = {n: (v, cuda_pins[n]) for n, v in cpu_pins.items() if n in cuda_pins and cuda_pins[n] != v}
    assert not shared, f"CPU and CUDA sets disagree: {shared}"
    assert "onnxruntime" not in cuda_pins and "nvidia-cudnn-cu13" in cuda_pins


def pins_of_text(text: str) -> dict[str, str]:
    tmp = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            tmp[re.sub(r"\[.*\]", "", re.sub(r"[-_.]+", "-", name).lower())] = version.strip()
    return tmp


def test_dockerignore_keeps_local_state_out():
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "allowlist: exclude everything first"
    allowed = [line[1:] for line in ignore if line.startswith("!")]
    for private in (".venv", ".cache", "results", ".git"):
        assert not any(a.rstrip("/").startswith(private) for a in allowed), private


@pytest.mark.parametrize("dockerfile", ["images/Dockerfile", "images/prometheus/Dockerfile"])
def test_dockerfiles_take_a_base_image_and_no_syntax_line(dockerfile):
    text = (ROOT / dockerfile).read_text()
    assert re.search(r"(?m)^ARG BASE_IMAGE=", text)
    assert not re.search(r"(?m)^# *syntax=", text), "no syntax line: the builder's own frontend is used"
    if dockerfile == "images/Dockerfile":
        assert "HEALTHCHECK" in text and "/ready" in text and re.search(r"(?m)^USER wattserve$", text)


@pytest.mark.skipif(__import__("os").environ.get("WATTSERVE_TEST_RESOLVE") != "1",
                    reason="resolves the CUDA image's requirement set against the package index (network, "
                           "~1 min): set WATTSERVE_TEST_RESOLVE=1 (.ci/run does)")
def test_cuda_set_resolves_from_the_index(tmp_path):
    """pip install --dry-run of the CUDA flavour, as images/Dockerfile (deps-cuda) runs it: from the
    index alone (no local wheel folders, whose CPU torch would win), fully pinned."""
    import os

    req = tmp_path / "requirements-cuda.txt"
    out = subprocess.run([sys.executable, str(ROOT / "images" / "requirements.py"), "cuda", str(ROOT / "requirements.txt")],
                         capture_output=True, text=True, check=True)
    req.write_text(out.stdout)
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT")}
    env["PIP_CONFIG_FILE"] = os.devnull
    report = tmp_path / "report.json"
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
                          "--report", str(report), "-r", str(req), "-c", str(ROOT / "images" / "constraints-cuda.txt")],
                         capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    got = {re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower(): i["metadata"]["version"]
           for i in json.loads(report.read_text())["install"]}
    assert got["torch"] == "2.13.0" and "onnxruntime" not in got, got
    assert got["onnxruntime-gpu"] and got["nvidia-cudnn-cu13"].startswith("9."), got
    assert got == pins(ROOT / "images" / "constraints-cuda.txt")
