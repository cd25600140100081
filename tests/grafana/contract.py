"""What the dashboard tests share: the generated dashboards, their queries, the metric names a PromQL
expression selects, and every metric name the service and the exporters can expose (from their code)."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "grafana" / "dashboards"
FILES = ("wattserve-now.json", "wattserve-compare.json", "wattserve-sensors.json")

# Metrics only a GPU machine produces (nvml exporter / dcgm-exporter).
GPU_ONLY = {"wattserve_gpu_utilization_ratio", "wattserve_gpu_memory_used_bytes",
            "wattserve_gpu_memory_utilization_ratio", "wattserve_gpu_memory_total_bytes", "wattserve_gpu_info"}
DCGM = {"DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_MEM_COPY_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"}
# Series Prometheus writes itself for every scrape target (its documentation: "Jobs and instances").
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
                  "scrape_series_added"}


def dashboards() -> dict[str, dict]:
    """{file name: dashboard} of the committed JSON."""
    return {name: json.loads((DASHBOARDS / name).read_text(encoding="utf-8")) for name in FILES}


def panels(board: dict) -> list[dict]:
    """Every panel but the rows (rows carry no query), nested rows' panels included."""
    out = []
    for p in board["panels"]:
        if p.get("type") == "row":
            out += p.get("panels") or []
        else:
            out.append(p)
    return out


def dashboard_queries() -> list[tuple[str, dict]]:
    """(``<dashboard uid>: <panel title>``, target) of every query of every dashboard."""
    return [(f"{b['uid']}: {p['title']}", t) for b in dashboards().values() for p in panels(b)
            for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (label matchers and strings removed first)."""
    bare = re.sub(r'"[^"]*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}", "", bare)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)
    own = "|".join(sorted(PROMETHEUS_OWN, key=len, reverse=True))
    return set(re.findall(rf"\b(wattserve_[a-z0-9_]+|DCGM_FI_[A-Z0-9_]+|{own})\b", bare))


def legend_labels(legend: str) -> set[str]:
    return set(re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", legend or ""))


def contract_metrics() -> set[str]:
    """Every metric name the service and the exporters can expose, from their code."""
    import os

    from prometheus_client import generate_latest

    from services.exporters.estimate import EstimateExporter
    from services.exporters.host import HostExporter
    from services.inference.metrics import ServiceMetrics

    m = ServiceMetrics()
    m.requests.labels("/v1/generate", "200").inc()
    m.errors.labels("/v1/generate", "invalid").inc()
    m.latency.labels("/v1/generate").observe(0.1)
    m.model_info.labels("onnx-cpu", "onnx", "cpu", "tiny", "r", "fp32", "true").set(1)
    text = generate_latest(m.registry).decode()
    names = set(re.findall(r"^(wattserve_[a-z0-9_]+)", text, re.M))
    # exporters that run anywhere: collect them for real
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
    # the bench's own exporter (on the live stack)
    src = (ROOT / "loadgen" / "bench_exporter.py").read_text()
    names |= {f"wattserve_bench_{n}" for n in re.findall(r'Gauge\(f"\{ns\}_([a-z0-9_]+)"', src)}
    return names | DCGM | PROMETHEUS_OWN
