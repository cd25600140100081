"""The compose stack without Grafana: Prometheus scrapes every target, and every Grafana panel's query
returns data from that live Prometheus once a few requests went through the service."""

from __future__ import annotations

import time
import urllib.parse

import pytest

from tests.docker.conftest import ROOT, SCRIPTS, docker, http_json, script_env, wait_until
from tests.docker.test_static import GPU_ONLY, dashboard_queries, metric_names

pytestmark = pytest.mark.slow
PROJECT = "wattserve-test"


def compose(*args: str, env: dict, timeout: float = 900):
    import subprocess

    out = subprocess.run([str(SCRIPTS / "compose.sh"), *args], capture_output=True, text=True, env=env,
                         timeout=timeout, cwd=ROOT)
    if out.returncode != 0:
        raise AssertionError(f"compose.sh {' '.join(args)} failed ({out.returncode}):\n{out.stdout[-4000:]}\n"
                             f"{out.stderr[-4000:]}")
    return out.stdout


@pytest.fixture(scope="module")
def stack(cpu_images, prepared_cache, tmp_path_factory):
    # random loopback ports everywhere (an empty port variable = any free port), no Grafana (it
    # cannot be pulled here), the test cache volume, a throwaway results folder
    env = script_env(COMPOSE_PROJECT_NAME=PROJECT, WATTSERVE_PROFILES="", CONFIG="onnx-cpu", MODEL="tiny",
                     WATTSERVE_CACHE_VOLUME=prepared_cache, HF_HUB_OFFLINE="1",
                     RESULTS_DIR=str(tmp_path_factory.mktemp("results")),
                     GRAFANA_ADMIN_PASSWORD="unused-in-this-test",
                     **{v: "" for v in ("SERVICE_PORT", "PROMETHEUS_PORT", "GRAFANA_PORT", "RAPL_PORT", "NVML_PORT",
                                        "NETIO_PORT", "HOST_EXPORTER_PORT", "ESTIMATE_PORT", "DCGM_PORT")})
    env.pop("NETIO_URL", None)
    t0 = time.monotonic()
    try:
        compose("up", env=env)

        def port(service: str, inner: int) -> str:
            return compose("port", service, str(inner), env=env).strip().rsplit(":", 1)[1]

        urls = {"service": f"http://127.0.0.1:{port('inference', 8000)}",
                "prometheus": f"http://127.0.0.1:{port('prometheus', 9090)}"}
        wait_until(lambda: http_json(f"{urls['service']}/ready")[0] == 200, 300, what="inference /ready")
        print(f"\n[docker] compose stack up in {time.monotonic() - t0:.0f} s")
        yield urls
    finally:
        try:
            print(compose("ps", env=env))
        finally:
            compose("down", "-v", env=env)


def prom_query(prometheus: str, query: str) -> list:
    status, body = http_json(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query}))
    assert status == 200 and body["status"] == "success", (query, body)
    return body["data"]["result"]


def test_every_target_up(stack):
    prometheus = stack["prometheus"]

    def all_up():
        status, body = http_json(f"{prometheus}/api/v1/targets?state=active")
        targets = body["data"]["activeTargets"]
        return targets if targets and all(t["health"] == "up" for t in targets) else None

    targets = wait_until(all_up, 90, interval=1, what="every Prometheus target healthy")
    jobs = {t["labels"]["job"] for t in targets}
    assert {"inference", "host", "rapl", "estimate"} <= jobs, jobs
    up = prom_query(prometheus, "up")
    assert up and all(r["value"][1] == "1" for r in up), up
    # profile-only exporters leave no target behind when their profile is off
    assert not {"nvml", "dcgm", "netio"} & jobs


def test_every_dashboard_query_returns_data(stack):
    for i in range(4):
        status, body = http_json(f"{stack['service']}/v1/generate", {"prompt": f"def f{i}(x):", "max_new_tokens": 8})
        assert status == 200, body
    time.sleep(3)  # > 2 scrapes at 1 s
    substitutions = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "15s", "$config": ".*",
                     "$model": ".*", "$source": ".*", "$prompts": "164"}
    empty = []
    for title, expr in dashboard_queries():
        query = expr
        for k, v in substitutions.items():
            query = query.replace(k, v)
        if metric_names(expr) <= GPU_ONLY:
            continue  # GPU panels: no NVIDIA GPU here (their metric names are checked statically)
        try:
            wait_until(lambda: prom_query(stack["prometheus"], query), 15, interval=1, what=title)
        except AssertionError:
            empty.append((title, query))
    assert not empty, empty


def test_service_process_is_watched(stack):
    """The host exporter shares the service's PID namespace and reports its process tree."""
    result = prom_query(stack["prometheus"], 'wattserve_process_up{target="service"}')
    assert result and result[0]["value"][1] == "1", result
