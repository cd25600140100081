"""*sensors*: is every number there and what kind is it — targets and sensors up or down (and why),
which sources are measured and which estimated, the exporters' scrape errors, and the bad samples the
bench's sampler dropped from each finished run."""

from __future__ import annotations

import grafanalib.core as G

from .common import DS, NODE, Layout, dashboard, node_var, stat, table, target, targets, timeseries

UID = "wattserve-sensors"
FILE = "wattserve-sensors.json"

UP_DOWN = [{"type": "value", "options": {"0": {"text": "down", "color": "red"}, "1": {"text": "up", "color": "green"}}}]


def timeline(title: str, expr: str, legend: str, description: str) -> G.StateTimeline:
    return G.StateTimeline(title=title, description=description, dataSource=DS, targets=[target(expr, legend)],
                           mappings=UP_DOWN, showValue="never", mergeValues=True, maxDataPoints=None)


def build():
    L = Layout()
    L.row("Now")
    L.add(stat("Targets down", [target(f"count(up{{{NODE}}} == 0) or vector(0)", "down", instant=True)], decimals=0,
               description="Prometheus targets whose last scrape failed (up == 0): an exporter or service that "
               "does not answer."), 4, 6)
    L.add(table("Sensors: up or down, and why", [target(
        f"wattserve_sensor_info{{{NODE}}} * on(job, instance, sensor, source) group_left() wattserve_sensor_up",
        instant=True, table=True)], hide=("bench_id",), rename={"Value": "up (1) / down (0)", "message": "why down"},
        description="wattserve_sensor_up of every exporter with the reason a sensor is down (wattserve_sensor_info "
        "message). A sensor that is down exports no energy series: its energy is missing, never 0 J."), 12, 6)
    L.add(table("Measured or estimated: every power source", [target(
        f"count by (node, job, source, estimated) (wattserve_power_watts{{{NODE}}})", instant=True, table=True)],
        rename={"Value": "series", "estimated": "estimated (true = a model, not a measurement)"},
        description="Each exporter's power/energy source and whether it is measured (rapl, energibridge, nvml, "
        "nvidia-smi, dcgm, netio) or estimated (estimate: utilization x a TDP-derived span)."), 8, 6)

    L.row("Over time")
    L.add(timeline("Prometheus targets up", f"up{{{NODE}}}", "{{node}} {{job}} {{instance}}",
                   "Prometheus' own up series per scrape target (1: the scrape answered)."), 12, 8)
    L.add(timeline("Sensors up", f"wattserve_sensor_up{{{NODE}}}", "{{node}} {{job}} {{sensor}} ({{source}})",
                   "wattserve_sensor_up: 1 when the exporter could read its sensor at that scrape."), 12, 8)
    L.add(timeseries("Exporter scrape errors per minute", [target(
        f"increase(wattserve_exporter_scrape_errors_total{{{NODE}}}[1m])", "{{node}} {{job}} {{sensor}}")],
        description="Reads that failed inside an exporter (their series were dropped from that scrape, never "
        "written as 0)."), 8, 8)
    L.add(timeseries("Scrape and read duration", targets(
        (f"scrape_duration_seconds{{{NODE}}}", "{{node}} {{job}} Prometheus scrape"),
        (f"wattserve_exporter_scrape_duration_seconds{{{NODE}}}", "{{node}} {{job}} sensor read")), unit="s",
        description="How long Prometheus' scrape of each target took (its timeout: 900 ms) and how long the "
        "exporter's own sensor read took inside it."), 8, 8)
    L.add(timeseries("Samples per scrape", [target(f"scrape_samples_scraped{{{NODE}}}", "{{node}} {{job}}")],
                     stepped=True, description="Samples each target returned: a drop means a family went missing "
                     "(a failed read drops its family)."), 8, 8)

    L.row("The bench's sampler, per finished run (its run folder's sensor entries)")
    L.add(table("Bad samples dropped and scrapes failed, per run and sensor", targets(
        (f"max by (run_id, sensor) (last_over_time(wattserve_bench_run_sensor_dropped_samples{{{NODE}}}[$__range]))",
         "", {"instant": True, "table": True}),
        (f"max by (run_id, sensor) (last_over_time(wattserve_bench_run_sensor_failed_scrapes{{{NODE}}}[$__range]))",
         "", {"instant": True, "table": True}),
        (f"max by (run_id, sensor) (last_over_time(wattserve_bench_run_sensor_available{{{NODE}}}[$__range]))",
         "", {"instant": True, "table": True})),
        rename={"Value #A": "dropped samples", "Value #B": "failed scrapes", "Value #C": "available (1/0)"},
        description="Samples the bench's sampler left out of series.csv as bad data (NaN, a counter going "
        "backwards, an impossible jump: each one a 'dropped' row there, and the run is flagged), scrapes that "
        "failed, and whether the sensor was available the whole run."), 24, 8)

    return dashboard(UID, "wattserve — sensors: up, measured or estimated, errors",
                     "Every target and sensor up or down (and why), which sources are measured and which estimated, "
                     "scrape errors, and the bad samples dropped from each finished run.", L, [node_var()],
                     time_from="now-1h")
