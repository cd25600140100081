"""`make up` then `make bench RUNNER=docker`: the bench joins the live stack. Against the real
Prometheus of a real stack: the run's requests are there (the increase of wattserve_requests_total
equals its request count) under its run id, the bench's phase markers are there, the energy of the
inference window from Prometheus agrees with the run folder's within 2 % (the run folder is the
record), the queries docs/live-view.md gives and every query of the three Grafana dashboards return
data with the right labels, and `compose.sh down` leaves no container — the bench's own included,
even one a killed bench left behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from analysis.energy import counter_delta
from tests.docker.conftest import ROOT, docker
from tests.docker.test_stack import Stack, compose, stack_env

pytestmark = pytest.mark.slow
PROJECT = "wattserve-test-bench16"
# Enough prompts for an inference window of many 1 s Prometheus scrapes: with 12 prompts an
# uncontended tiny run lasted ~2 s, and a 1 s sampling of a 2 s window is off by ~3 % by itself.
PROMPTS = 60


@pytest.fixture(scope="module")
def stack_run(prepared_cache, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    prompts = (ROOT / "loadgen" / "prompts" / "paper-prompts.jsonl").read_text().splitlines()[:PROMPTS]
    (results / "prompts.jsonl").write_text("\n".join(prompts) + "\n")
    env = stack_env(PROJECT, prepared_cache, str(results))
    try:
        up = compose("up", env=env)
        s = Stack(PROJECT, env, up.stderr)
        if s.mode != "ip":
            pytest.skip("this host cannot reach the compose network's addresses (the bench needs them)")
        bench_env = {**env, "WATTSERVE_STACK": PROJECT, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-m", "loadgen.bench", "--runner", "docker", "--config", "onnx-cpu",
                              "--model", "tiny", "--prompts", str(results / "prompts.jsonl"), "--warmup", "2",
                              "--cooldown", "2", "--threads", "1", "--results", str(results / "runs")],
                             cwd=ROOT, env=bench_env, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
        assert f"stack:   joined: stack {PROJECT}" in out.stdout, out.stdout
        (run_json,) = (results / "runs").glob("*/run.json")
        yield s, json.loads(run_json.read_text()), env
    finally:
        compose("down", "-v", env=env)


def query(s: Stack, expr: str, at: float | None = None) -> list:
    args = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
    status, body = s.http(f"{s.url('prometheus', 9090)}/api/v1/query?{urllib.parse.urlencode(args)}")
    assert status == 200 and body["status"] == "success", (expr, body)
    return body["data"]["result"]


def test_the_runs_requests_are_in_prometheus_under_its_run_id(stack_run):
    s, m, _ = stack_run
    assert m["runner_details"]["network"] == f"{PROJECT}_default" and m["stack"]["project"] == PROJECT
    result = query(s, f'sum(last_over_time(wattserve_requests_total{{run_id="{m["run_id"]}",'
                      f'endpoint="/v1/generate"}}[1h]))')
    assert result and float(result[0]["value"][1]) == m["summary"]["requests"] == PROMPTS
    labels = query(s, f'wattserve_model_info{{run_id="{m["run_id"]}"}}[1h]')[0]["metric"]
    assert labels["config"] == "onnx-cpu" and labels["job"] == "inference" and labels["rep"] == "1"


def test_the_bench_marks_every_phase(stack_run):
    s, m, _ = stack_run
    seen = {r["metric"]["phase"] for r in query(s, f'last_over_time(wattserve_bench_phase_info{{run_id="{m["run_id"]}"}}[1h])')}
    assert {"prepare", "load", "idle_before", "inference", "idle_after"} <= seen, seen
    done = query(s, f'max_over_time(wattserve_bench_prompts_done{{run_id="{m["run_id"]}"}}[1h])')
    assert float(done[0]["value"][1]) == PROMPTS
    # after the run: the record's window (the requests' span) replaces the live edges
    start = query(s, f'last_over_time(wattserve_bench_phase_start_timestamp_seconds{{run_id="{m["run_id"]}",'
                     'phase="inference"}[1h])')
    assert float(start[0]["value"][1]) == pytest.approx(m["phases"]["inference"]["start"], abs=1e-3)


def test_prometheus_energy_of_the_window_agrees_with_the_run_folder(stack_run):
    """The same counter (the stack's estimate exporter), sampled by Prometheus at 1 s: the window's
    energy from its samples, by the run folder's own counter arithmetic, and by PromQL's increase()."""
    s, m, _ = stack_run
    inf, energy = m["phases"]["inference"], m["summary"]["energy"]
    record = energy["energy_cpu_j"]
    assert energy["energy_cpu_source"] == "estimate" and energy["energy_cpu_estimated"] is True
    span = inf["end"] - inf["start"]
    (series,) = query(s, f'wattserve_energy_joules_total{{job="estimate"}}[{int(span) + 20}s] @ {inf["end"] + 10:.3f}')
    t, v = zip(*((float(a), float(b)) for a, b in series["values"]))
    from_samples = counter_delta(t, v, inf["start"], inf["end"])
    (inc,) = query(s, f'increase(wattserve_energy_joules_total{{job="estimate"}}[{int(span * 1000)}ms] @ {inf["end"]:.3f})')
    print(f"\nESTIMATED CPU energy of the window: run folder {record:.2f} J, Prometheus samples "
          f"{from_samples:.2f} J ({100 * (from_samples / record - 1):+.3f} %), increase() {float(inc['value'][1]):.2f} J")
    assert from_samples == pytest.approx(record, rel=0.02)
    assert float(inc["value"][1]) == pytest.approx(record, rel=0.02)


def doc_queries() -> list[str]:
    text = (ROOT / "docs" / "live-view.md").read_text()
    return re.findall(r"```promql\n(.*?)\n```", text, re.S)


def test_the_documented_queries_answer(stack_run):
    s, m, _ = stack_run
    queries = doc_queries()
    assert len(queries) == 4, queries
    power, per_run, window, requests = queries
    # a phase is over by now: the power query is checked at a moment of the inference phase
    at = (m["phases"]["inference"]["start"] + m["phases"]["inference"]["end"]) / 2
    got = query(s, power, at=at)
    assert {r["metric"]["source"] for r in got} >= {"estimate"}, got
    rows = [r for r in query(s, per_run) if r["metric"]["run_id"] == m["run_id"]]
    assert {(r["metric"]["kind"], r["metric"]["provenance"]) for r in rows} >= {("global", "estimated")}
    assert float(next(r for r in rows if r["metric"]["kind"] == "global")["value"][1]) == pytest.approx(
        m["summary"]["energy"]["energy_global_j"], rel=1e-9)
    inf = m["phases"]["inference"]
    ms = int((inf["end"] - inf["start"]) * 1000)
    got = query(s, window.replace("MS", str(ms)).replace("END", f"{inf['end']:.3f}"))
    est = next(r for r in got if r["metric"]["source"] == "estimate")
    assert float(est["value"][1]) == pytest.approx(m["summary"]["energy"]["energy_cpu_j"], rel=0.02)
    got = {r["metric"]["run_id"]: float(r["value"][1]) for r in query(s, requests)}
    assert got[m["run_id"]] == PROMPTS


# Grafana's own variables as the check sets them: a 1 h range holds the whole run, every variable All.
PANEL_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s", "$config": ".*",
                   "$model": ".*", "$source": ".*", "$node": ".*", "$prompts": str(PROMPTS)}


def substituted(expr: str) -> str:
    for k, v in PANEL_VARIABLES.items():
        expr = expr.replace(k, v)
    return expr


def test_every_panel_of_the_three_dashboards_returns_data_for_the_run(stack_run):
    """Every query of every panel of the three dashboards, against this Prometheus, during the run's
    inference (or after it, for the finished-run records): non-empty, with the labels its legend names
    (node aside: only a Slurm node's targets carry it), and where rows name runs, this run among them.
    The annotation (phase shading) and the variables' label_values() queries too."""
    from tests.grafana.contract import GPU_ONLY, dashboard_queries, dashboards, legend_labels, metric_names

    s, m, _ = stack_run
    mid = (m["phases"]["inference"]["start"] + m["phases"]["inference"]["end"]) / 2
    checks = [(title, t["expr"], t.get("legendFormat") or "") for title, t in dashboard_queries()]
    for board in dashboards().values():
        for a in board["annotations"]["list"]:
            checks.append((f"{board['uid']}: annotation {a['name']}", a["expr"], a["titleFormat"] + a["textFormat"]))
        for v in board["templating"]["list"]:
            text = v["query"].get("query", "") if isinstance(v.get("query"), dict) else ""  # a textbox: a str
            lv = re.fullmatch(r"label_values\((.+), *(\w+)\)", text)
            if lv and lv.group(2) != "node":  # no Slurm node here: the node list is empty, All matches all
                checks.append((f"{board['uid']}: variable {v['name']}",
                               f"group by ({lv.group(2)}) (last_over_time({lv.group(1)}[$__range]))",
                               "{{" + lv.group(2) + "}}"))
    report, skipped = [], []
    for title, expr, legend in checks:
        names = metric_names(expr)
        if names and names <= GPU_ONLY:
            skipped.append(title)  # no NVIDIA GPU here: the metric names are checked statically
            continue
        q = substituted(expr)
        rows, when = query(s, q, at=mid), "inference"
        if not rows:
            rows, when = query(s, q), "after"
        assert rows, (title, q)
        need = legend_labels(legend) - {"node"}
        assert any(need <= set(r["metric"]) for r in rows), (title, need, [r["metric"] for r in rows[:3]])
        runs = {r["metric"]["run_id"] for r in rows if "run_id" in r["metric"]}
        assert not runs or m["run_id"] in runs, (title, runs)
        report.append(f"{title:<95} {when:<9} {len(rows):>3} row(s), e.g. {rows[0]['value'][1]}")
    print("\npanel queries (" + str(len(report)) + " answered, " + str(len(skipped)) + " GPU-only skipped):\n"
          + "\n".join(report))
    assert len(report) >= 40 and len(skipped) <= 2, (len(report), skipped)


@pytest.fixture(scope="session")
def grafana_image() -> str:
    """Session-scoped so that its skip comes before the stack is started."""
    from tests.grafana.live import grafana_image_or_skip

    return grafana_image_or_skip()


def test_grafana_shows_the_three_dashboards(grafana_image, stack_run, tmp_path):
    """GRAFANA_IMAGE (present in the local engine): Grafana with the project's provisioning on the stack's
    network loads the three dashboards, its datasource answers a panel's query, and each dashboard is
    screenshotted over the run (to $WATTSERVE_SHOTS if set). Skipped, saying why, without the image."""
    from tests.grafana.live import Grafana

    s, m, _ = stack_run
    start_ms = int((m["phases"]["inference"]["start"] - 60) * 1000)
    end_ms = int((m["phases"]["inference"]["end"] + 30) * 1000)
    network = f"{PROJECT}_default"  # the label: compose.sh down removes it too, should this test be cut short
    g = Grafana(grafana_image, network, "wattserve-test16-grafana", labels={"wattserve.stack.network": network})
    try:
        boards = g.dashboards()
        assert set(boards) == {"wattserve-now", "wattserve-compare", "wattserve-sensors"}, (boards, g.logs())
        # the provisioned datasource reaches the stack's Prometheus: the run's record, through Grafana
        status, body = g.query(f'last_over_time(wattserve_bench_run_info{{run_id="{m["run_id"]}"}}[1h])', start_ms,
                               int(time.time() * 1000))
        assert status == 200, body
        frames = body["results"]["A"].get("frames") or []
        assert frames and frames[0]["data"]["values"], body
        shots = Path(os.environ.get("WATTSERVE_SHOTS") or tmp_path)
        shots.mkdir(parents=True, exist_ok=True)
        for uid in boards:
            png = shots / f"{uid}.png"
            res = g.screenshot(uid, start_ms, end_ms, png)
            assert png.is_file() and png.stat().st_size > 30_000, (uid, res.stderr[-2000:], g.logs())
            print(f"\nscreenshot of {uid}: {png} ({png.stat().st_size} bytes)")
    finally:
        g.close()


def test_down_leaves_no_container_not_even_a_killed_benchs(stack_run):  # last: it takes the stack down
    s, m, env = stack_run
    # what a bench killed with SIGKILL leaves: its service container on the stack's network
    docker("run", "-d", "--name", "wattserve-test16-leftover", "--network", f"{PROJECT}_default",
           "--label", f"wattserve.stack.network={PROJECT}_default", "--entrypoint", "sleep", "wattserve:cpu", "300")
    compose("down", "-v", env=env)
    left = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}").stdout.split()
    left += docker("ps", "-aq", "--filter", f"label=wattserve.stack.network={PROJECT}_default").stdout.split()
    assert not left, left
    assert docker("network", "inspect", f"{PROJECT}_default", check=False).returncode != 0

