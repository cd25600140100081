"""*now*: the run in progress — which run and phase, prompts and ETA, power by source (every time series
shaded by the bench's phases), tokens/s, latency, CPU/RAM/GPU, and what is served."""

from __future__ import annotations

from .common import (NODE, PHASE_ANNOTATION, POWER_LEGEND, SEL, Layout, bargauge, dashboard, estimated_override,
                     node_var, query_var, stat, svc, table, target, targets, timeseries)

UID = "wattserve-now"
FILE = "wattserve-now.json"


def build():
    ok_requests = svc('wattserve_requests_total{status="200"}')
    done = f"sum({ok_requests})"
    latency_buckets = svc("rate(wattserve_request_latency_seconds_bucket[$__rate_interval])")
    mean_latency = ("(sum(" + svc("rate(wattserve_request_latency_seconds_sum[2m])") + ") / sum("
                    + svc("rate(wattserve_request_latency_seconds_count[2m])") + "))")
    tokens_per_s = "sum(" + svc("rate(wattserve_generated_tokens_total[$__rate_interval])") + ")"
    power = f'wattserve_power_watts{{source=~"$source", {NODE}}}'
    energy = f'wattserve_energy_joules_total{{source=~"$source", {NODE}}}'
    L = Layout()

    L.row("The run (make bench RUNNER=docker with the stack up)")
    L.add(table("Run and phase now", [target("wattserve_bench_phase_info", instant=True, table=True)],
                hide=("bench_id", "job", "instance", "Value"),
                description="wattserve_bench_phase_info: the run the bench is on, its configuration, model, "
                "repetition and phase (prepare, load, idle_before, inference, idle_after, stop). Empty between "
                "benches."), 10, 5)
    L.add(bargauge("Prompts done, each run of the bench", [target(
        "wattserve_bench_prompts_done / on(bench_id, run_id) wattserve_bench_prompts_total", "{{run_id}}",
        instant=True)], unit="percentunit", min_max=(0, 1),
        description="The bench's own count (its progress line's): prompts answered / prompts of the run."), 6, 5)
    L.add(stat("ETA of the bench", [target("wattserve_bench_eta_seconds", "ETA", instant=True)], unit="s",
               description="The bench's own ETA (its progress line's): idle windows exactly, prompts at the "
               "mean latency so far, runs left at the mean run length."), 4, 5)
    L.add(stat("Runs of the bench", [target("wattserve_bench_runs", "{{state}}", instant=True)], decimals=0,
               named=True, description="Runs finished (done) out of the bench's runs (total)."), 4, 5)

    L.row("Power and energy (shaded: the bench's phases)")
    L.add(timeseries("Power by source and device", [target(power, POWER_LEGEND)], unit="watt",
                     overrides=[estimated_override()],
                     description="wattserve_power_watts of every exporter. Zones overlap (a package includes its "
                     "cores): compare sources, never add domains. estimated=true (orange) is a model, not a "
                     "measurement. The shading marks the bench's phases (annotation 'bench phase')."), 16, 9)
    L.add(stat("Energy in the selected time range", [target(f"increase({energy}[$__range])", POWER_LEGEND,
                                                            instant=True)],
               unit="joule", named=True,
               description="increase(wattserve_energy_joules_total) over the dashboard's time range: set the range "
               "to a phase to read its energy (the run folder is the record: docs/live-view.md)."), 8, 9)
    L.add(timeseries("Cumulative energy in the range", [target(
        f"{energy} - min_over_time({energy}[$__range] @ end())", POWER_LEGEND)], unit="joule",
        overrides=[estimated_override()],
        description="Energy since the start of the selected range, per source/domain/device: the counter minus its "
        "smallest value in the range (it is monotonic), so series born inside the range start at 0 too."), 16, 8)
    L.add(stat("Energy per prompt in the range", [target(
        f"sum by (node, source, domain, device, estimated) (increase({energy}[$__range])) / scalar(sum(increase("
        f'wattserve_requests_total{{status="200"}}[$__range]) * {SEL}))', POWER_LEGEND, instant=True)],
        unit="joule", named=True,
        description="Energy of the range / prompts answered in the range (idle included: the analysis subtracts "
        "idle, this does not)."), 8, 8)

    L.row("The service: progress, tokens/s, latency")
    L.add(stat("Prompts answered by the service", targets((done, "done", {"instant": True}),
                                                          ("vector($prompts)", "of", {"instant": True})),
               decimals=0, named=True,
               description="Generation requests answered with 200 by the selected service(s) since it started, "
               "and the prompt set's size ($prompts: 164 for the paper set)."), 5, 4)
    L.add(bargauge("Share of the prompt set", [target(f"clamp_max({done} / $prompts, 1)", "done", instant=True)],
                   unit="percentunit", min_max=(0, 1)), 5, 4)
    L.add(stat("ETA of the prompt set", [target(f"clamp_min($prompts - {done}, 0) * {mean_latency}", "ETA",
                                                instant=True)], unit="s",
               description="(prompts left) x (mean engine latency over the last 2 minutes)."), 4, 4)
    L.add(stat("Tokens per second now", [target(tokens_per_s, "tokens/s", instant=True)], unit="short",
               description="rate(wattserve_generated_tokens_total): tokens generated per second by the selected "
               "service(s). The run's tokens/s (tokens / window) is in the run folder and make analyze."), 5, 4)
    L.add(stat("Mean latency (2 min)", [target(mean_latency, "mean", instant=True)], unit="s"), 5, 4)
    L.add(timeseries("Tokens per second", [target(tokens_per_s, "tokens/s")], unit="short"), 8, 8)
    L.add(timeseries("Request latency (engine time)", targets(
        (f"histogram_quantile(0.5, sum by (le) ({latency_buckets}))", "p50"),
        (f"histogram_quantile(0.9, sum by (le) ({latency_buckets}))", "p90"),
        (f"histogram_quantile(0.99, sum by (le) ({latency_buckets}))", "p99"),
        (mean_latency, "mean")), unit="s",
        description="Quantiles of wattserve_request_latency_seconds (histogram buckets: interpolated within a "
        "bucket) and the mean over 2 minutes."), 8, 8)
    L.add(timeseries("Requests per second by status", [target(
        "sum by (endpoint, status) (" + svc("rate(wattserve_requests_total[$__rate_interval])") + ")",
        "{{endpoint}} {{status}}")], unit="reqps"), 8, 8)

    L.row("CPU, RAM, GPU")
    L.add(timeseries("CPU utilization", [target(f"wattserve_cpu_utilization_ratio{{{NODE}}}", "{{node}} {{job}} system")],
                     unit="percentunit", min_max=(0, 1)), 12, 8)
    L.add(timeseries("Memory", targets((f"wattserve_memory_used_bytes{{{NODE}}}", "{{node}} {{job}} system used"),
                                       (f"wattserve_process_resident_memory_bytes{{{NODE}}}", "{{node}} {{target}} RSS")),
                     unit="bytes"), 12, 8)
    L.add(timeseries("GPU utilization", [target(f"wattserve_gpu_utilization_ratio{{{NODE}}}",
                                                "{{node}} {{device}} ({{job}})")],
                     unit="percentunit", min_max=(0, 1),
                     description="nvml exporter (compose profile gpu). No data on machines without an NVIDIA GPU."),
          12, 8)
    L.add(timeseries("GPU memory used", [target(f"wattserve_gpu_memory_used_bytes{{{NODE}}}",
                                                "{{node}} {{device}} ({{job}})")], unit="bytes",
                     description="nvml exporter (compose profile gpu). No data on machines without an NVIDIA GPU."),
          12, 8)

    L.row("What is served")
    L.add(table("Serving configuration", [target('wattserve_model_info{config=~"$config", model=~"$model"}',
                                                 instant=True, table=True)], hide=("Value",),
                description="wattserve_model_info of every scraped service: configuration, engine, provider, "
                "model, revision/content hash, precision, KV cache (and run_id/rep for a bench's service)."), 24, 5)

    variables = [
        query_var("config", "configuration", "label_values(wattserve_model_info, config)"),
        query_var("model", "model", 'label_values(wattserve_model_info{config=~"$config"}, model)'),
        query_var("source", "energy source", "label_values(wattserve_power_watts, source)"),
        node_var(),
        {"name": "prompts", "label": "prompts in the set", "type": "textbox", "query": "164",
         "current": {"text": "164", "value": "164"}, "hide": 0},
    ]
    return dashboard(UID, "wattserve — now: the run in progress",
                     "The run the bench is on: phase, prompts, ETA; power per source (measured or estimated) "
                     "shaded by phase; tokens/s, latency, CPU/RAM/GPU.", L, variables,
                     annotations=[PHASE_ANNOTATION])
