"""The compose stack without Grafana: Prometheus scrapes every target, every Grafana panel's query
returns data from that live Prometheus once a few requests went through the service, nothing but
Grafana is published, and every container runs with the privileges images/README.md lists.

Nothing is published, so the tests reach the service and Prometheus over the compose network: at the
containers' bridge IPs (reachable from the host on Linux), or, where the host cannot reach those
(Docker Desktop, rootless), through `docker exec` into the estimate exporter (python, on the network)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from tests.docker.conftest import ROOT, SCRIPTS, docker, http_json, script_env, wait_until
from tests.docker.test_static import ALLOWED_CAP_ADD, ROOT_SERVICES, compose_file
from tests.grafana.contract import GPU_ONLY, dashboard_queries, metric_names

pytestmark = pytest.mark.slow
PROJECT = "wattserve-test"

# Linux capability numbers (include/uapi/linux/capability.h) of the capabilities on the allow-list
CAP_BITS = {"DAC_READ_SEARCH": 2, "SYS_ADMIN": 21}

# docker exec -i <container> python -c PROXY: one HTTP request from inside the compose network
PROXY = r"""
import json, sys, urllib.error, urllib.request
q = json.load(sys.stdin)
body = json.dumps(q["data"]).encode() if q["data"] is not None else None
r = urllib.request.Request(q["url"], data=body, headers={"content-type": "application/json"} if body else {})
try:
    with urllib.request.urlopen(r, timeout=q["timeout"]) as resp:
        status, text = resp.status, resp.read().decode()
except urllib.error.HTTPError as e:
    status, text = e.code, e.read().decode()
print(json.dumps({"status": status, "body": text}))
"""


def compose(*args: str, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    out = subprocess.run([str(SCRIPTS / "compose.sh"), *args], capture_output=True, text=True, env=env,
                         timeout=timeout, cwd=ROOT)
    if out.returncode != 0:
        raise AssertionError(f"compose.sh {' '.join(args)} failed ({out.returncode}):\n{out.stdout[-4000:]}\n"
                             f"{out.stderr[-4000:]}")
    return out


def stack_env(project: str, cache_volume: str, results: str, **extra: str) -> dict[str, str]:
    # no Grafana (it cannot be pulled here), the test cache volume, a throwaway results folder; none of
    # the caller's port, exposure or NETIO settings
    env = script_env(COMPOSE_PROJECT_NAME=project, WATTSERVE_PROFILES="", CONFIG="onnx-cpu", MODEL="tiny",
                     WATTSERVE_CACHE_VOLUME=cache_volume, HF_HUB_OFFLINE="1", RESULTS_DIR=results,
                     GRAFANA_ADMIN_PASSWORD="unused-in-this-test")
    for v in ("NETIO_URL", "SERVICE_PORT", "PROMETHEUS_PORT", "GRAFANA_PORT", "RAPL_USER", "WATTSERVE_EXPOSE"):
        env.pop(v, None)
    return {**env, **extra}


def project_containers(project: str) -> dict[str, dict]:
    """{compose service: docker inspect of its container}, stopped ones (prepare) included."""
    ids = docker("ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={project}").stdout.split()
    assert ids, f"no container of project {project}"
    found = {}
    for info in json.loads(docker("inspect", *ids).stdout):
        found[info["Config"]["Labels"]["com.docker.compose.service"]] = info
    return found


def bridge_ip(info: dict) -> str:
    ips = [n["IPAddress"] for n in (info["NetworkSettings"]["Networks"] or {}).values() if n.get("IPAddress")]
    assert ips, f"{info['Name']} has no IP on a network"
    return ips[0]


class Stack:
    """The running stack and how to speak HTTP to its services from here."""

    def __init__(self, project: str, env: dict, up_log: str):
        self.project, self.env, self.up_log = project, env, up_log
        self.containers = project_containers(project)
        # WATTSERVE_TEST_STACK_HTTP=ip|exec forces one way; by default the bridge IPs when they answer
        self.mode = os.environ.get("WATTSERVE_TEST_STACK_HTTP", "")
        if not self.mode:
            try:  # can the host reach the bridge network?
                urllib.request.urlopen(f"http://{bridge_ip(self.containers['prometheus'])}:9090/-/ready", timeout=5)
                self.mode = "ip"
            except OSError:
                self.mode = "exec"
        assert self.mode in ("ip", "exec"), f"WATTSERVE_TEST_STACK_HTTP={self.mode}: ip or exec"

    def url(self, service: str, port: int) -> str:
        host = bridge_ip(self.containers[service]) if self.mode == "ip" else service
        return f"http://{host}:{port}"

    def http(self, url: str, data: dict | None = None, timeout: float = 30) -> tuple[int, dict]:
        return http_json(url, data, timeout) if self.mode == "ip" else self.http_inside(url, data, timeout)

    def http_inside(self, url: str, data: dict | None = None, timeout: float = 30, raw: bool = False):
        """The request from inside the compose network (service names resolve there)."""
        out = docker("exec", "-i", self.containers["estimate"]["Id"], "python", "-c", PROXY, check=False,
                     input=json.dumps({"url": url, "data": data, "timeout": timeout}), timeout=timeout + 30)
        if out.returncode != 0:
            raise ConnectionError(f"{url} from inside the network: {out.stderr.strip()[-300:]}")
        reply = json.loads(out.stdout)
        return reply["status"], (reply["body"] if raw else json.loads(reply["body"] or "null"))


@pytest.fixture(scope="module")
def stack(cpu_images, prepared_cache, tmp_path_factory):
    env = stack_env(PROJECT, prepared_cache, str(tmp_path_factory.mktemp("results")))
    t0 = time.monotonic()
    try:
        up = compose("up", env=env)
        s = Stack(PROJECT, env, up.stderr)
        wait_until(lambda: s.http(f"{s.url('inference', 8000)}/ready")[0] == 200, 300, what="inference /ready")
        print(f"\n[docker] compose stack up in {time.monotonic() - t0:.0f} s (HTTP via {s.mode})")
        yield s
    finally:
        try:
            print(compose("ps", env=env).stdout)
        finally:
            compose("down", "-v", env=env)


def prom_query(stack: Stack, query: str) -> list:
    query_string = urllib.parse.urlencode({"query": query})
    status, body = stack.http(f"{stack.url('prometheus', 9090)}/api/v1/query?{query_string}")
    assert status == 200 and body["status"] == "success", (query, body)
    return body["data"]["result"]


def test_every_target_up(stack):
    def all_up():
        status, body = stack.http(f"{stack.url('prometheus', 9090)}/api/v1/targets?state=active")
        targets = body["data"]["activeTargets"]
        return targets if targets and all(t["health"] == "up" for t in targets) else None

    targets = wait_until(all_up, 90, interval=1, what="every Prometheus target healthy")
    jobs = {t["labels"]["job"] for t in targets}
    assert {"inference", "host", "rapl", "estimate"} <= jobs, jobs
    up = prom_query(stack, "up")
    assert up and all(r["value"][1] == "1" for r in up), up
    # profile-only exporters leave no target behind when their profile is off
    assert not {"nvml", "dcgm", "netio"} & jobs


def test_every_dashboard_query_returns_data(stack):
    for i in range(4):
        status, body = stack.http(f"{stack.url('inference', 8000)}/v1/generate",
                                  {"prompt": f"def f{i}(x):", "max_new_tokens": 8})
        assert status == 200, body
    time.sleep(3)  # > 2 scrapes at 1 s
    substitutions = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "15s", "$config": ".*",
                     "$model": ".*", "$source": ".*", "$node": ".*", "$prompts": "164"}
    empty = []
    for title, target in dashboard_queries():
        query = expr = target["expr"]
        for k, v in substitutions.items():
            query = query.replace(k, v)
        if metric_names(expr) <= GPU_ONLY:
            continue  # GPU panels: no NVIDIA GPU here (their metric names are checked statically)
        if all(n.startswith("wattserve_bench_") for n in metric_names(expr)):
            continue  # no bench runs here: tests/docker/test_bench_stack.py checks those with one
        try:
            wait_until(lambda: prom_query(stack, query), 15, interval=1, what=title)
        except AssertionError:
            empty.append((title, query))
    assert not empty, empty


def test_service_process_is_watched(stack):
    """The host exporter shares the service's PID namespace and reports its process tree."""
    result = prom_query(stack, 'wattserve_process_up{target="service"}')
    assert result and result[0]["value"][1] == "1", result


def test_services_reach_each_other_by_name(stack):
    """The path Grafana and Prometheus take: service names on the compose network (from the estimate
    exporter's container), whatever way the host reaches the stack."""
    status, body = stack.http_inside("http://prometheus:9090/api/v1/query?query=up")
    assert status == 200 and body["status"] == "success" and body["data"]["result"], body
    status, body = stack.http_inside("http://inference:8000/ready")
    assert status == 200 and body["ready"] is True, body
    status, text = stack.http_inside("http://rapl:9651/metrics", raw=True)
    assert status == 200 and "wattserve_sensor_up" in text


def test_nothing_is_published(stack):
    """No running (or exited) container of the stack publishes a port: Grafana, the only one that may,
    is not started here (its image cannot be pulled), and compose.sh says how to opt in."""
    assert set(stack.containers) >= {"prepare", "inference", "host", "rapl", "estimate", "prometheus"}
    for service, info in stack.containers.items():
        assert not info["HostConfig"]["PortBindings"], f"{service}: {info['HostConfig']['PortBindings']}"
        ports = info["NetworkSettings"]["Ports"] or {}
        assert all(b is None for b in ports.values()), f"{service} publishes {ports}"
        assert docker("port", info["Id"]).stdout.strip() == "", service
    assert "http://prometheus:9090 on the compose network only" in stack.up_log, stack.up_log
    assert "WATTSERVE_EXPOSE=1" in stack.up_log and "not ready" not in stack.up_log, stack.up_log


def proc_status(container_id: str) -> dict[str, dict[str, str]]:
    """{pid: {field: value}} of every process in the container (those visible in its PID namespace)."""
    out = docker("exec", container_id, "sh", "-c",
                 "grep -H -E '^(Name|Uid|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/[0-9]*/status "
                 "2>/dev/null; true").stdout
    procs: dict[str, dict[str, str]] = {}
    for line in out.splitlines():
        m = re.match(r"/proc/(\d+)/status:(\w+):\s*(.*)", line)
        if m:
            procs.setdefault(m.group(1), {})[m.group(2)] = m.group(3).strip()
    return {pid: p for pid, p in procs.items() if "CapEff" in p}


def test_containers_drop_every_capability(stack):
    """What Docker was told (HostConfig) and what the kernel enforces inside (/proc/*/status): no
    capability beyond the allow-list, in any set, no-new-privileges on, and root only where the
    table says so."""
    compose_services = compose_file()["services"]
    checked = 0

    def norm(caps):
        return {c.upper().removeprefix("CAP_") for c in caps or []}

    for service, info in stack.containers.items():
        host = info["HostConfig"]
        allowed = set(ALLOWED_CAP_ADD.get(service, {}))
        assert norm(host["CapDrop"]) == {"ALL"}, f"{service}: CapDrop {host['CapDrop']}"
        assert norm(host["CapAdd"]) == allowed, f"{service}: CapAdd {host['CapAdd']}"
        assert "no-new-privileges:true" in (host["SecurityOpt"] or []), f"{service}: {host['SecurityOpt']}"
        assert not host["Privileged"], service
        assert host["ReadonlyRootfs"] is bool(compose_services[service].get("read_only")), service
        if service == "prepare":
            assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 0, info["State"]
            continue
        assert info["State"]["Running"], f"{service}: {info['State']}"
        mask = sum(1 << CAP_BITS[c] for c in allowed)
        procs = proc_status(info["Id"])
        assert procs, f"{service}: no /proc/*/status read"
        for pid, p in procs.items():
            where = f"{service} pid {pid} ({p.get('Name')})"
            assert int(p["CapEff"], 16) == mask and int(p["CapPrm"], 16) == mask, f"{where}: {p}"
            assert int(p["CapBnd"], 16) == mask, f"{where}: bounding set {p['CapBnd']}"
            assert int(p["CapAmb"], 16) == 0 and int(p["CapInh"], 16) == 0, f"{where}: {p}"
            assert p["NoNewPrivs"] == "1", where
            uids = p["Uid"].split()
            if service in ROOT_SERVICES:
                assert set(uids) == {"0"}, f"{where}: uid {uids} (root, with no capability, expected)"
            else:
                assert "0" not in uids, f"{where} runs as root: {uids}"
            checked += 1
    assert checked >= 5


def test_expose_override_publishes_service_and_prometheus_on_loopback(prepared_cache, tmp_path):
    """WATTSERVE_EXPOSE=1: a second, small stack (Prometheus + estimate) publishes Prometheus on
    127.0.0.1 (a random free port), answers there from the host, and compose.sh prints that URL."""
    project = f"{PROJECT}-expose"
    env = stack_env(project, prepared_cache, str(tmp_path), WATTSERVE_EXPOSE="1", PROMETHEUS_PORT="", SERVICE_PORT="")
    try:
        up = compose("up", "prometheus", "estimate", env=env, timeout=300)
        containers = project_containers(project)
        assert set(containers) == {"prometheus", "estimate"}, sorted(containers)
        bindings = containers["prometheus"]["NetworkSettings"]["Ports"]["9090/tcp"]
        assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings), bindings
        assert containers["estimate"]["NetworkSettings"]["Ports"] in ({}, None) or all(
            v is None for v in containers["estimate"]["NetworkSettings"]["Ports"].values())
        port = bindings[0]["HostPort"]
        assert f"Prometheus  http://127.0.0.1:{port}" in up.stderr, up.stderr
        ready = urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=10)
        assert ready.status == 200
        assert compose("port", "prometheus", "9090", env=env).stdout.strip() == f"127.0.0.1:{port}"
    finally:
        compose("down", "-v", env=env)


def test_loadgen_service_runs_the_bench(prepared_cache, tmp_path):
    """The bench in its compose container (profile bench), with its privileges (cap_drop ALL; root
    callers: DAC_OVERRIDE for the uid-10001 model cache): a short run completes and lands in the
    results folder. A non-root caller's uid cannot use that cache yet (its folders are 0700, uid
    10001), so then the test runs loadgen as 10001 into a folder it may write."""
    import os

    results = tmp_path / "results"
    results.mkdir()
    prompts = (ROOT / "loadgen" / "prompts" / "paper-prompts.jsonl").read_text().splitlines()[:6]
    (results / "six-prompts.jsonl").write_text("\n".join(prompts) + "\n")
    extra = {"WATTSERVE_PROFILES": "bench", "REPS": "1", "WARMUP": "0", "COOLDOWN": "0",
             "PROMPTS": "/results/six-prompts.jsonl"}
    if os.getuid() != 0:
        results.chmod(0o777)
        extra |= {"WATTSERVE_UID": "10001", "WATTSERVE_GID": "10001"}
    env = stack_env(f"{PROJECT}-bench", prepared_cache, str(results), **extra)
    try:
        out = compose("run", "--rm", "-T", "loadgen", env=env, timeout=600)
    finally:
        compose("down", "-v", env=env)
    runs = [json.loads(p.read_text()) for p in results.glob("*/run.json")]
    assert len(runs) == 1 and runs[0]["status"] == "complete", (out.stdout[-2000:], out.stderr[-2000:])
    assert runs[0]["config"] == "onnx-cpu", runs[0]["config"]
    # it drove the stack's own service and sampled the stack's exporters (none of its own)
    assert runs[0]["runner_details"] == {"runner": "external", "url": "http://inference:8000"}, runs[0]["runner_details"]
    assert {s["name"]: s["url"] for s in runs[0]["sensors"]} == {
        "host": "http://host:9655/metrics", "rapl": "http://rapl:9651/metrics",
        "estimate": "http://estimate:9656/metrics"}
    assert runs[0]["summary"]["requests"] == runs[0]["summary"]["ok"] == 6
