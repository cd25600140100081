"""The three dashboards as files, no Grafana needed: generated from grafana/boards and current, each
panel well formed (a datasource, queries, a unique id, a place inside the 24-column grid that no other
panel takes), every query on a metric that someone exports, provenance in every energy legend, the
node variable where per-host series are shown, and the provisioning pointing at the files."""

from __future__ import annotations

import copy
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

PANEL_TYPES = {"timeseries", "stat", "bargauge", "table", "state-timeline"}


def form_problems(board: dict) -> list[str]:
    """What Grafana would show wrongly or not at all: every panel needs the datasource, queries with
    distinct refIds, a unique id and a place inside the 24 columns that no other panel takes."""
    out = []
    every = board["panels"] + [p for r in board["panels"] for p in r.get("panels") or []]
    ids = [p.get("id") for p in every]
    out += [f"panel id {i!r} is not a positive integer" for i in ids if not (isinstance(i, int) and i > 0)]
    out += [f"panel id {i} is used {ids.count(i)} times" for i in sorted({i for i in ids if ids.count(i) > 1}, key=str)]
    taken: dict[tuple[int, int], str] = {}
    for p in every:
        title, g = p.get("title") or f"panel {p.get('id')}", p.get("gridPos") or {}
        if not all(isinstance(g.get(k), int) for k in "xywh") or g["w"] <= 0 or g["h"] <= 0 or g["x"] < 0 or g["y"] < 0:
            out.append(f"{title!r}: no valid gridPos {g}")
            continue
        if g["x"] + g["w"] > 24:
            out.append(f"{title!r} leaves the 24-column grid: {g}")
        clash = {taken[(x, y)] for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
                 if (x, y) in taken}
        out += [f"{title!r} overlaps {other!r}" for other in sorted(clash)]
        taken.update({(x, y): title for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])})
        if p.get("type") == "row":
            if (g["w"], g["h"], g["x"]) != (24, 1, 0):
                out.append(f"row {title!r} is not a full-width line")
            continue
        if p.get("type") not in PANEL_TYPES:
            out.append(f"{title!r}: panel type {p.get('type')!r}")
        if p.get("datasource") != {"type": "prometheus", "uid": "wattserve-prometheus"}:
            out.append(f"{title!r}: datasource {p.get('datasource')!r}")
        if not p.get("targets"):
            out.append(f"{title!r} has no query")
        refs = [t.get("refId") for t in p.get("targets") or []]
        if not all(refs) or len(refs) != len(set(refs)):
            out.append(f"{title!r}: refIds {refs}")
        for t in p.get("targets") or []:
            expr = t.get("expr") or ""
            if (t.get("datasource") or {}).get("uid") != "wattserve-prometheus" or not expr.strip():
                out.append(f"{title!r}: a query without the datasource or an expression")
            if expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}"):
                out.append(f"{title!r}: unbalanced brackets in {expr!r}")
        if p.get("type") == "bargauge" and "fieldOptions" in (p.get("options") or {}):
            out.append(f"{title!r}: a bar gauge in Grafana 6's shape (fieldOptions)")
    return out


@pytest.mark.parametrize("name", FILES)
def test_every_panel_is_well_formed(name):
    board = dashboards()[name]
    assert board["uid"] == UIDS[name] and board["title"].startswith("wattserve — ")
    assert board["schemaVersion"] >= 36 and board["editable"] is False and "wattserve" in board["tags"]
    assert form_problems(board) == []
    assert board["panels"][0]["type"] == "row" and len(panels(board)) >= 4


def test_the_form_check_finds_each_fault():
    board = copy.deepcopy(dashboards()["wattserve-now.json"])
    first, second, third, fourth = panels(board)[:4]
    second["gridPos"] = dict(first["gridPos"])                      # on top of the first
    third["gridPos"] = {**third["gridPos"], "x": 20, "w": 6}         # past column 24
    fourth["id"] = first["id"]                                       # a second panel with that id
    del panels(board)[4]["datasource"]
    panels(board)[5]["targets"] = []
    panels(board)[6]["targets"] = [panels(board)[7]["targets"][0]] * 2   # refId A twice
    got = "\n".join(form_problems(board))
    assert f"{second['title']!r} overlaps {first['title']!r}" in got
    assert f"{third['title']!r} leaves the 24-column grid" in got
    assert f"panel id {first['id']} is used 2 times" in got
    assert f"{panels(board)[4]['title']!r}: datasource None" in got
    assert f"{panels(board)[5]['title']!r} has no query" in got
    assert f"{panels(board)[6]['title']!r}: refIds ['A', 'A']" in got


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
