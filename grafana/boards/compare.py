"""*compare*: energy and time of every completed run of the model being studied, configuration by
configuration, side by side — the run folders' own figures (the bench exporter's finished-run records),
never a second computation; an estimated figure reads ESTIMATED in its name and has its own colour."""

from __future__ import annotations

from .common import Layout, bargauge, dashboard, estimated_override, flag_estimated, query_var, table, target

UID = "wattserve-compare"
FILE = "wattserve-compare.json"

RUNS = 'model=~"$model", config=~"$config"'
GLOBAL = ', kind="global"'


def last(metric: str, extra: str = "") -> str:
    """The record's value of every run finished in the dashboard's range (the bench's exporter keeps
    the series only while the bench runs)."""
    return f"last_over_time({metric}{{{RUNS}{extra}}}[$__range])"


def build():
    L = Layout()
    L.row("Per completed run of the model, by configuration (the run folders' figures)")
    L.add(bargauge("Global energy per run — measured or ESTIMATED (in each bar's name)", [target(flag_estimated(
        f'max by (config, run_id, provenance) ({last("wattserve_bench_run_energy_joules", GLOBAL)})'),
        "{{config}} · {{run_id}} · {{provenance}}", instant=True)], unit="joule", overrides=[estimated_override()],
        description="Energy of each run's inference window (the requests' span) as its run folder records it: "
        "global = every energy source of the run that counts towards its total. ESTIMATED (orange) where a source "
        "was modelled (CPU energy without RAPL): never compare an estimated bar with a measured one."), 12, 10)
    L.add(bargauge("Time per run (the inference window)", [target(
        f'max by (config, run_id) ({last("wattserve_bench_run_time_seconds")})', "{{config}} · {{run_id}}",
        instant=True)], unit="s",
        description="Each run's inference window, first request sent to last response received, from its run "
        "folder."), 12, 10)
    L.add(table("Energy by kind per run — measured or ESTIMATED", [target(flag_estimated(
        f'max by (config, run_id, kind, provenance) ({last("wattserve_bench_run_energy_joules")})'),
        instant=True, table=True)], unit="joule",
        rename={"Value": "energy (J)", "provenance": "measured or ESTIMATED"},
        description="Every energy figure of each run's record: global, cpu, gpu, wall... with its provenance."),
        14, 9)
    L.add(table("Completed runs", [target(
        f'max by (config, model, rep, run_id, status) ({last("wattserve_bench_run_info")})', instant=True,
        table=True)], hide=("Value",),
        description="Runs whose run folder was written, with their status (complete, failed, interrupted)."), 10, 9)

    variables = [
        query_var("model", "model studied", "label_values(wattserve_bench_run_info, model)", multi=False,
                  include_all=False),
        query_var("config", "configuration", 'label_values(wattserve_bench_run_info{model=~"$model"}, config)'),
    ]
    return dashboard(UID, "wattserve — compare: energy and time per run",
                     "Every completed run of the model studied, configuration by configuration: energy (measured "
                     "or ESTIMATED) and time of the inference window, from the run folders.", L, variables,
                     refresh="30s", time_from="now-24h")
