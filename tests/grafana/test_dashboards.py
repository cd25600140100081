"""The three dashboards as files, no Grafana needed: generated from grafana/boards and current, each
panel well formed (a datasource, queries, a unique id, a place inside the 24-column grid that no other
panel takes), every query on a metric that someone exports, provenance in every energy legend, the
node variable where per-host series are shown, and the provisioning pointing at the files."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from tests.grafana.contract import (DASHBOARDS, FILES, ROOT, contract_metrics, dashboard_queries, dashboards,
                                    legend_labels, metric_names, panels)

UIDS = {"wattserve-now.json": "wattserve-now", "wattserve-compare.json": "wattserve-compare",
        "wattserve-sensors.json": "wattserve-sensors"}
ENERGY = {"wattserve_power_watts", "wattserve_energy_joules_total"}
PER_HOST = {"wattserve_power_watts", "wattserve_energy_joules_total", "wattserve_cpu_utilization_ratio",
            "wattserve_memory_used_bytes", "wattserve_process_resident_memory_bytes", "wattserve_sensor_up",
            "wattserve_sensor_info", "up", "wattserve_gpu_utilization_ratio", "wattserve_gpu_memory_used_bytes"}


# ------------------------------------------------------------------ generated and current

def test_the_committed_json_is_what_the_boards_write():
    out = subprocess.run([sys.executable, str(ROOT / "grafana" / "build_dashboards.py"), "--check"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in DASHBOARDS.glob("*.json")) == sorted(FILES)


def test_the_check_fails_on_a_stale_file_and_says_how_to_regenerate(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / "grafana"))
    try:
        import build_dashboards as builder
    finally:
        sys.path.pop(0)
    monkeypatch.setattr(builder, "OUT", tmp_path)
    files = {tmp_path / p.name: text for p, text in builder.render().items()}
    monkeypatch.setattr(builder, "render", lambda: files)
    assert builder.main([]) == 0
    assert builder.main(["--check"]) == 0
    now = tmp_path / "wattserve-now.json"
    now.write_text(now.read_text().replace('"wattserve-now"', '"hand-edited"'))
    (tmp_path / "wattserve.json").write_text("{}")  # the old single dashboard, left behind
    (tmp_path / "wattserve-sensors.json").unlink()
    assert builder.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "make dashboards" in err
    assert "wattserve-now.json: not what" in err and "wattserve-sensors.json: missing" in err
    assert "wattserve.json: written by no board" in err
    assert builder.main([]) == 0 and not (tmp_path / "wattserve.json").exists()  # regenerating repairs it all
    assert builder.main(["--check"]) == 0


def test_make_dashboards_regenerates():
    rule = re.search(r"(?ms)^dashboards:.*?(?=^\S|\Z)", (ROOT / "Makefile").read_text())
    assert rule and "grafana/build_dashboards.py" in rule.group(0)


# ------------------------------------------------------------------ well formed, without a Grafana

@pytest.mark.parametrize("name", FILES)
def test_every_panel_is_well_formed(name):
    board = dashboards()[name]
    assert board["uid"] == UIDS[name] and board["title"].startswith("wattserve — ")
    assert board["schemaVersion"] >= 36 and board["editable"] is False and "wattserve" in board["tags"]
    every = board["panels"] + [p for r in board["panels"] for p in r.get("panels") or []]
    ids = [p["id"] for p in every]
    assert all(isinstance(i, int) and i > 0 for i in ids) and len(ids) == len(set(ids)), ids
    taken: dict[tuple[int, int], str] = {}
    for p in every:
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["y"] >= 0, p["title"]
        assert g["x"] + g["w"] <= 24, f"{p['title']!r} leaves the 24-column grid: {g}"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in taken, f"{p['title']!r} overlaps {taken[(x, y)]!r} at column {x}, row {y}"
                taken[(x, y)] = p["title"]
        if p["type"] == "row":
            assert g["w"] == 24 and g["h"] == 1 and g["x"] == 0, p["title"]
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "wattserve-prometheus"}, p["title"]
        assert p.get("targets"), f"panel {p['title']!r} has no query"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)) and all(refs), (p["title"], refs)
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "wattserve-prometheus" and t["expr"].strip(), p["title"]
            assert t["expr"].count("(") == t["expr"].count(")") and t["expr"].count("{") == t["expr"].count("}")
        assert p["title"] and p["type"] in {"timeseries", "stat", "bargauge", "table", "state-timeline"}
        if p["type"] == "bargauge":  # today's shape, not grafanalib's Grafana 6 one
            assert "fieldOptions" not in p["options"] and p["options"]["reduceOptions"]["calcs"] == ["lastNotNull"]
    rows = [p for p in board["panels"] if p["type"] == "row"]
    assert rows and board["panels"][0]["type"] == "row"


def test_the_layout_refuses_a_panel_wider_than_the_grid():
    sys.path.insert(0, str(ROOT))
    from grafana.boards.common import Layout, stat, target

    layout = Layout()
    layout.add(stat("a", [target("up")]), 20, 4)
    layout.add(stat("b", [target("up")]), 8, 4)  # does not fit beside a: next line
    assert [(p.gridPos.x, p.gridPos.y) for p in layout.panels] == [(0, 0), (0, 4)]
    with pytest.raises(ValueError, match="width 25"):
        layout.add(stat("c", [target("up")]), 25, 4)


# ------------------------------------------------------------------ on the metric contract

def test_every_query_is_on_metrics_someone_exports():
    known = contract_metrics()
    assert "wattserve_bench_run_sensor_dropped_samples" in known and "wattserve_generated_tokens_total" in known
    queries = dashboard_queries()
    assert len(queries) >= 35
    for title, t in queries:
        names = metric_names(t["expr"])
        assert names or re.fullmatch(r"vector\(\$\w+\)", t["expr"]), f"{title}: no metric in {t['expr']!r}"
        unknown = names - known
        assert not unknown, f"{title} uses metrics nobody exports: {unknown}"


def test_metric_names_reads_promql():
    assert metric_names('sum by (up) (rate(wattserve_requests_total{status="up"}[1m])) * on(job) group_left() '
                        'wattserve_model_info') == {"wattserve_requests_total", "wattserve_model_info"}
    assert metric_names("count(up{node=~\"$node\"} == 0) or vector(0)") == {"up"}
    assert metric_names("wattserve_sensor_up") == {"wattserve_sensor_up"}


def test_the_dashboards_cover_the_brief():
    by_board = {b["uid"]: set().union(*(metric_names(t["expr"]) for p in panels(b) for t in p["targets"]))
                for b in dashboards().values()}
    assert {"wattserve_bench_phase_info", "wattserve_bench_prompts_done", "wattserve_bench_eta_seconds",
            "wattserve_power_watts", "wattserve_generated_tokens_total", "wattserve_request_latency_seconds_bucket",
            "wattserve_cpu_utilization_ratio", "wattserve_memory_used_bytes", "wattserve_gpu_utilization_ratio",
            "wattserve_model_info"} <= by_board["wattserve-now"]
    assert {"wattserve_bench_run_energy_joules", "wattserve_bench_run_time_seconds",
            "wattserve_bench_run_info"} <= by_board["wattserve-compare"]
    assert {"up", "wattserve_sensor_up", "wattserve_sensor_info", "wattserve_power_watts",
            "wattserve_exporter_scrape_errors_total", "wattserve_bench_run_sensor_dropped_samples"} <= by_board[
        "wattserve-sensors"]
    now = dashboards()["wattserve-now.json"]
    assert [a["name"] for a in now["annotations"]["list"]] == ["bench phase"]  # the phase shading
    assert now["annotations"]["list"][0]["expr"] == "wattserve_bench_phase_info"


def test_energy_legends_and_titles_say_measured_or_estimated():
    for title, t in dashboard_queries():
        names = metric_names(t["expr"])
        if names & ENERGY and t["format"] != "table":
            assert {"source", "estimated"} <= legend_labels(t["legendFormat"]), title
        if "wattserve_bench_run_energy_joules" in names:
            # the record's provenance, in capitals where estimated, in the bar's name or a table column
            assert 'label_replace(' in t["expr"] and '"ESTIMATED", "provenance", "estimated"' in t["expr"], title
            assert "provenance" in t["expr"].split("by (", 1)[1].split(")")[0], title
            assert t["format"] == "table" or "provenance" in legend_labels(t["legendFormat"]), title
            assert "ESTIMATED" in title, title


def test_per_host_series_follow_the_node_variable():
    for board in dashboards().values():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        shown = set().union(*(metric_names(t["expr"]) for p in panels(board) for t in p["targets"]))
        if not shown & PER_HOST:
            continue
        node = variables.get("node")
        assert node, f"{board['uid']}: per-host series but no node variable"
        # All = .*: also matches a series without the label (the local stack's, not on a Slurm node)
        assert node["includeAll"] and node["allValue"] == ".*" and node["multi"], node
        assert node["query"]["query"] == "label_values(up, node)"
        for p in panels(board):
            for t in p["targets"]:
                for name in metric_names(t["expr"]) & PER_HOST:
                    selectors = re.findall(rf"\b{name}\{{([^}}]*)\}}", t["expr"])
                    if name == "wattserve_sensor_up" and "group_left() wattserve_sensor_up" in t["expr"]:
                        continue  # joined to a node-filtered left side
                    assert selectors and all('node=~"$node"' in s for s in selectors), (board["uid"], p["title"], name)


def test_the_compare_dashboard_studies_one_model():
    board = dashboards()["wattserve-compare.json"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["model"]["multi"] is False and variables["model"]["includeAll"] is False
    assert variables["config"]["includeAll"] and variables["config"]["allValue"] == ".*"
    for p in panels(board):
        for t in p["targets"]:
            assert 'model=~"$model"' in t["expr"] and 'config=~"$config"' in t["expr"], p["title"]
            assert "last_over_time(" in t["expr"] and "[$__range]" in t["expr"], p["title"]


# ------------------------------------------------------------------ provisioning

def test_provisioning_loads_the_three_files():
    ds = yaml.safe_load((ROOT / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    assert [d["uid"] for d in ds] == ["wattserve-prometheus"] and ds[0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/wattserve.yml").read_text())["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"] == "/etc/grafana/dashboards"
    compose = yaml.safe_load((ROOT / "compose" / "docker-compose.yml").read_text())["services"]["grafana"]
    assert "../grafana/dashboards:/etc/grafana/dashboards:ro" in compose["volumes"]
    home = compose["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == "/etc/grafana/dashboards/wattserve-now.json" and (DASHBOARDS / home.rsplit("/", 1)[1]).is_file()
