"""Write grafana/dashboards/wattserve.json, the live dashboard of the wattserve stack.

    python grafana/build_dashboards.py          # rewrite the JSON (commit both)
    python grafana/build_dashboards.py --check  # exit 1 if the JSON is not what this script writes

The dashboard reads the metric contract of services/inference/metrics.py (wattserve_requests_total,
wattserve_request_latency_seconds, wattserve_model_info, ...) and of the exporters
(services/exporters: wattserve_power_watts / wattserve_energy_joules_total with the labels source,
estimated, domain, device; wattserve_cpu_utilization_ratio, wattserve_memory_used_bytes,
wattserve_gpu_*; wattserve_sensor_up / _info). Every energy or power legend shows `source` and
`estimated`, so a modelled number never passes for a measured one. Standard library only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "wattserve.json"
DS = {"type": "prometheus", "uid": "wattserve-prometheus"}

# The service's series carry no config/model labels; wattserve_model_info (value 1) does. Joining on
# the scrape target selects the services of the chosen configuration(s) and model(s).
SEL = 'on(job, instance) group_left() wattserve_model_info{config=~"$config", model=~"$model"}'


def svc(expr: str) -> str:
    return f"({expr} * {SEL})"


def target(expr: str, legend: str, ref: str = "A", instant: bool = False) -> dict:
    t = {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "range": not instant,
         "instant": instant}
    return t


def panel(pid: int, kind: str, title: str, grid: tuple[int, int, int, int], targets: list[dict], *,
          unit: str = "short", description: str = "", options: dict | None = None,
          defaults: dict | None = None, overrides: list | None = None) -> dict:
    x, y, w, h = grid
    field_defaults = {"unit": unit}
    if kind == "timeseries":
        field_defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                                    "spanNulls": False}
    field_defaults.update(defaults or {})
    p = {"id": pid, "type": kind, "title": title, "description": description, "datasource": DS,
         "gridPos": {"x": x, "y": y, "w": w, "h": h}, "targets": targets,
         "fieldConfig": {"defaults": field_defaults, "overrides": overrides or []},
         "options": options or {}}
    if kind == "timeseries":
        p["options"] = {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                                   "calcs": ["lastNotNull", "max"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}, **(options or {})}
    return p


def row(pid: int, title: str, y: int) -> dict:
    return {"id": pid, "type": "row", "title": title, "collapsed": False, "panels": [],
            "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}}


def dashboard() -> dict:
    power_legend = "{{source}} {{domain}}/{{device}} (estimated={{estimated}})"
    ok_requests = svc('wattserve_requests_total{status="200"}')
    done = f"sum({ok_requests})"
    latency_buckets = svc("rate(wattserve_request_latency_seconds_bucket[$__rate_interval])")
    mean_latency = ("(sum(" + svc("rate(wattserve_request_latency_seconds_sum[2m])") + ") / sum("
                    + svc("rate(wattserve_request_latency_seconds_count[2m])") + "))")
    panels = [
        row(100, "Energy and power", 0),
        panel(1, "timeseries", "Power by source and device", (0, 1, 16, 9), [
            target('wattserve_power_watts{source=~"$source"}', power_legend)],
            unit="watt", description="wattserve_power_watts of every exporter. Zones overlap (a package "
            "includes its cores): compare sources, never add domains. estimated=true is a model, not a "
            "measurement."),
        panel(2, "stat", "Energy in the selected time range", (16, 1, 8, 9), [
            target('increase(wattserve_energy_joules_total{source=~"$source"}[$__range])', power_legend,
                   instant=True)],
            unit="joule", description="increase(wattserve_energy_joules_total) over the dashboard's time "
            "range: set the range to the current phase (idle before, inference, idle after) to read its "
            "energy. Counters are monotonic (wraparound handled by the exporters).",
            options={"reduceOptions": {"calcs": ["lastNotNull"], "values": False},
                     "textMode": "value_and_name", "colorMode": "none", "graphMode": "none"}),
        panel(3, "timeseries", "Cumulative energy in the range", (0, 10, 16, 8), [
            target('wattserve_energy_joules_total{source=~"$source"} - '
                   'min_over_time(wattserve_energy_joules_total{source=~"$source"}[$__range] @ end())',
                   power_legend)],
            unit="joule", description="Energy since the start of the selected range, per "
            "source/domain/device: the counter minus its first value in the range (the smallest, it is "
            "monotonic), so series born inside the range start at 0 too."),
        panel(4, "table", "Sensors: measured or estimated, up or down", (16, 10, 8, 8), [
            target("wattserve_sensor_up", "", instant=True),
            target("wattserve_sensor_info", "", ref="B", instant=True)],
            description="wattserve_sensor_up per exporter with the reason a sensor is down "
            "(wattserve_sensor_info message). A missing sensor is reported missing, never as 0 J.",
            options={"showHeader": True},
            defaults={"custom": {"align": "auto"}}),
        row(101, "Progress and latency", 18),
        panel(5, "bargauge", "Prompts done, share of the set", (0, 19, 5, 4), [
            target(f"clamp_max({done} / $prompts, 1)", "done", instant=True)],
            unit="percentunit", description="Generation requests answered with 200 by the selected "
            "service(s) since it started, over the prompt set's size ($prompts: 164 for the paper set).",
            defaults={"min": 0, "max": 1},
            options={"orientation": "horizontal", "displayMode": "gradient",
                     "reduceOptions": {"calcs": ["lastNotNull"], "values": False}}),
        panel(16, "stat", "Prompts done", (5, 19, 3, 4), [
            target(done, "done", instant=True), target("vector($prompts)", "of", ref="B", instant=True)],
            options={"reduceOptions": {"calcs": ["lastNotNull"], "values": False}, "textMode": "value_and_name",
                     "colorMode": "none", "graphMode": "none"}, defaults={"decimals": 0}),
        panel(6, "stat", "ETA of the prompt set", (8, 19, 4, 4), [
            target(f"clamp_min($prompts - {done}, 0) * {mean_latency}", "ETA", instant=True)],
            unit="s", description="(prompts left) x (mean engine latency over the last 2 minutes).",
            options={"reduceOptions": {"calcs": ["lastNotNull"], "values": False}, "colorMode": "none",
                     "graphMode": "none"}),
        panel(7, "stat", "Energy per prompt in the range", (12, 19, 6, 4), [
            target('sum by (source, domain, device, estimated) (increase(wattserve_energy_joules_total'
                   '{source=~"$source"}[$__range])) / scalar(sum(increase('
                   'wattserve_requests_total{status="200"}[$__range]) * ' + SEL + '))',
                   power_legend, instant=True)],
            unit="joule", description="Energy of the range / prompts answered in the range (idle "
            "included: the analysis subtracts idle, this does not).",
            options={"reduceOptions": {"calcs": ["lastNotNull"], "values": False}, "textMode": "value_and_name",
                     "colorMode": "none", "graphMode": "none"}),
        panel(8, "stat", "Tokens per second", (18, 19, 6, 4), [
            target("sum(" + svc("rate(wattserve_generated_tokens_total[1m])") + ")", "tokens/s", instant=True)],
            unit="short", options={"reduceOptions": {"calcs": ["lastNotNull"], "values": False},
                                   "colorMode": "none"}),
        panel(9, "timeseries", "Request latency (engine time)", (0, 23, 12, 8), [
            target(f"histogram_quantile(0.5, sum by (le) ({latency_buckets}))", "p50"),
            target(f"histogram_quantile(0.9, sum by (le) ({latency_buckets}))", "p90", ref="B"),
            target(f"histogram_quantile(0.99, sum by (le) ({latency_buckets}))", "p99", ref="C"),
            target(mean_latency, "mean", ref="D")],
            unit="s", description="Quantiles of wattserve_request_latency_seconds (histogram buckets, so "
            "quantiles are interpolated within a bucket)."),
        panel(10, "timeseries", "Requests per second by status", (12, 23, 12, 8), [
            target("sum by (endpoint, status) (" + svc("rate(wattserve_requests_total[$__rate_interval])") + ")",
                   "{{endpoint}} {{status}}")],
            unit="reqps"),
        row(102, "CPU, RAM, GPU", 31),
        panel(11, "timeseries", "CPU utilization", (0, 32, 12, 8), [
            target("wattserve_cpu_utilization_ratio", "{{job}} system")],
            unit="percentunit", defaults={"min": 0, "max": 1}),
        panel(12, "timeseries", "Memory", (12, 32, 12, 8), [
            target("wattserve_memory_used_bytes", "{{job}} system used"),
            target("wattserve_process_resident_memory_bytes", "{{target}} RSS", ref="B")],
            unit="bytes"),
        panel(13, "timeseries", "GPU utilization", (0, 40, 12, 8), [
            target("wattserve_gpu_utilization_ratio", "{{device}} ({{job}})")],
            unit="percentunit", defaults={"min": 0, "max": 1},
            description="nvml exporter (compose profile gpu). No data on machines without an NVIDIA GPU."),
        panel(14, "timeseries", "GPU memory used", (12, 40, 12, 8), [
            target("wattserve_gpu_memory_used_bytes", "{{device}} ({{job}})")],
            unit="bytes",
            description="nvml exporter (compose profile gpu). No data on machines without an NVIDIA GPU."),
        row(103, "What is served", 48),
        panel(15, "table", "Serving configuration", (0, 49, 24, 5), [
            target('wattserve_model_info{config=~"$config", model=~"$model"}', "", instant=True)],
            description="wattserve_model_info of every scraped service: configuration, engine, provider, "
            "model, revision/content hash, precision, KV cache."),
        # the bench on the stack (docs/live-view.md, loadgen/bench_exporter.py): which run and phase a watt
        # belongs to; the phases also shade every time series (annotation "bench phase")
        row(104, "Bench run (make bench RUNNER=docker with the stack up)", 54),
        panel(17, "table", "Run and phase now", (0, 55, 12, 5), [
            target("wattserve_bench_phase_info", "", instant=True)],
            description="wattserve_bench_phase_info: 1 during the phase (prepare, load, idle_before, inference, "
            "idle_after, stop) of the run the bench is on; empty between benches."),
        panel(18, "bargauge", "Prompts of each run", (12, 55, 6, 5), [
            target("wattserve_bench_prompts_done / on(bench_id, run_id) wattserve_bench_prompts_total",
                   "{{run_id}}", instant=True)],
            unit="percentunit", defaults={"min": 0, "max": 1},
            options={"orientation": "horizontal", "displayMode": "gradient",
                     "reduceOptions": {"calcs": ["lastNotNull"], "values": False}}),
        panel(19, "stat", "ETA of the bench", (18, 55, 6, 5), [
            target("wattserve_bench_eta_seconds", "ETA", instant=True)],
            unit="s", description="The bench's own ETA (its progress line's): idle windows exactly, prompts "
            "at the mean latency so far, runs left at the mean run length.",
            options={"reduceOptions": {"calcs": ["lastNotNull"], "values": False}, "colorMode": "none",
                     "graphMode": "none"}),
        panel(20, "table", "Energy and time per finished run (the run folder's)", (0, 60, 24, 8), [
            target('last_over_time(wattserve_bench_run_energy_joules{model=~"$model"}[$__range])', "",
                   instant=True),
            target('last_over_time(wattserve_bench_run_time_seconds{model=~"$model"}[$__range])', "", ref="B",
                   instant=True)],
            description="Each finished run's inference-window energy by kind (global, cpu, gpu, wall) with its "
            "provenance (measured | estimated: never compare the two) and its window length, as written in "
            "its run folder, the record (make analyze reads the same)."),
    ]
    variables = [
        {"name": "config", "label": "configuration", "type": "query", "datasource": DS,
         "query": {"query": "label_values(wattserve_model_info, config)", "refId": "config"},
         "definition": "label_values(wattserve_model_info, config)", "refresh": 2, "includeAll": True,
         "multi": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "sort": 1},
        {"name": "model", "label": "model", "type": "query", "datasource": DS,
         "query": {"query": 'label_values(wattserve_model_info{config=~"$config"}, model)', "refId": "model"},
         "definition": 'label_values(wattserve_model_info{config=~"$config"}, model)', "refresh": 2,
         "includeAll": True, "multi": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"},
         "sort": 1},
        {"name": "source", "label": "energy source", "type": "query", "datasource": DS,
         "query": {"query": "label_values(wattserve_power_watts, source)", "refId": "source"},
         "definition": "label_values(wattserve_power_watts, source)", "refresh": 2, "includeAll": True,
         "multi": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "sort": 1},
        {"name": "prompts", "label": "prompts in the set", "type": "textbox", "query": "164",
         "current": {"text": "164", "value": "164"}},
    ]
    return {
        "uid": "wattserve-live", "title": "wattserve — live energy, power and progress",
        "description": "One serving configuration under load: power and energy per source (measured or "
                       "estimated), progress through the prompt set, latency, CPU/RAM/GPU.",
        "tags": ["wattserve"], "timezone": "utc", "editable": False, "graphTooltip": 1,
        "refresh": "5s", "time": {"from": "now-15m", "to": "now"}, "schemaVersion": 39, "version": 1,
        "templating": {"list": variables}, "annotations": {"list": [
            {"name": "bench phase", "datasource": DS, "enable": True, "iconColor": "rgba(255, 152, 48, 0.3)",
             "expr": "wattserve_bench_phase_info", "step": "1s", "titleFormat": "{{phase}}",
             "textFormat": "{{config}} {{model}} r{{rep}} ({{run_id}})", "tagKeys": "phase,config"}]}, "links": [], "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.is_file() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is out of date: run python grafana/build_dashboards.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
