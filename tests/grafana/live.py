"""A real Grafana on a test's Prometheus: the image named by GRAFANA_IMAGE (it must already be in the
local Docker engine: nothing is pulled), started with the project's provisioning and dashboards
mounted read-only, and screenshots of each dashboard taken with headless Chromium (Debian's
``chromium``). Where any of that is missing the caller's test is skipped with the reason."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.grafana.contract import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def grafana_image_or_skip() -> str:
    """GRAFANA_IMAGE when it names an image present in the local engine and Chromium is installed;
    otherwise skip, saying which is missing."""
    image = os.environ.get("GRAFANA_IMAGE", "").strip()
    if not image:
        pytest.skip("no GRAFANA_IMAGE: set it to a Grafana image present in the local Docker engine "
                    "(e.g. GRAFANA_IMAGE=grafana/grafana:11.6.0 after docker pull/load) to screenshot the dashboards")
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip(f"GRAFANA_IMAGE={image}: no docker client here")
    if subprocess.run([docker, "image", "inspect", image], capture_output=True).returncode != 0:
        pytest.skip(f"GRAFANA_IMAGE={image} is absent from the local Docker engine (nothing is pulled: "
                    "docker pull or docker load it first)")
    if CHROMIUM is None:
        pytest.skip(f"GRAFANA_IMAGE={image} is there, but no chromium for the screenshots (apt-get install chromium)")
    return image


def http(url: str, data: dict | None = None, timeout: float = 10) -> tuple[int, object]:
    body = json.dumps(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read().decode() or "null")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()[-500:]


class Grafana:
    """One Grafana container on ``network`` (where the provisioned datasource's http://prometheus:9090
    resolves), anonymous Viewer access as in compose, reached at its address on that network."""

    def __init__(self, image: str, network: str, name: str, labels: dict[str, str] | None = None):
        self.name = name
        mounts = ["-v", f"{ROOT / 'grafana' / 'provisioning'}:/etc/grafana/provisioning:ro",
                  "-v", f"{ROOT / 'grafana' / 'dashboards'}:/etc/grafana/dashboards:ro"]
        env = {"GF_SECURITY_ADMIN_PASSWORD": secrets.token_urlsafe(16), "GF_AUTH_ANONYMOUS_ENABLED": "true",
               "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer", "GF_USERS_ALLOW_SIGN_UP": "false",
               "GF_ANALYTICS_REPORTING_ENABLED": "false", "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
               "GF_PLUGINS_PREINSTALL_DISABLED": "true", "GF_NEWS_NEWS_FEED_ENABLED": "false",
               "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH": "/etc/grafana/dashboards/wattserve-now.json"}
        args = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
        args += [a for k, v in (labels or {}).items() for a in ("--label", f"{k}={v}")]
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        run = subprocess.run(["docker", "run", "-d", "--name", name, "--network", network, "--cap-drop", "ALL",
                              "--security-opt", "no-new-privileges:true", *mounts, *args, image],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        info = json.loads(subprocess.run(["docker", "inspect", name], capture_output=True, text=True).stdout)[0]
        self.ip = info["NetworkSettings"]["Networks"][network]["IPAddress"]
        self.url = f"http://{self.ip}:3000"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if http(f"{self.url}/api/health", timeout=3)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(1)
        else:
            raise AssertionError(f"Grafana did not answer /api/health in 120 s:\n{self.logs()}")

    def logs(self) -> str:
        out = subprocess.run(["docker", "logs", "--tail", "60", self.name], capture_output=True, text=True)
        return (out.stdout + out.stderr)[-4000:]

    def dashboards(self, deadline_s: float = 60) -> dict[str, str]:
        """{uid: title} of the provisioned dashboards tagged wattserve (the provider polls every 30 s at most)."""
        end = time.monotonic() + deadline_s
        while True:
            status, found = http(f"{self.url}/api/search?tag=wattserve&type=dash-db")
            got = {d["uid"]: d["title"] for d in found} if status == 200 else {}
            if len(got) >= 3 or time.monotonic() > end:
                return got
            time.sleep(2)

    def query(self, expr: str, start_ms: int, end_ms: int) -> tuple[int, object]:
        """One PromQL query through Grafana's provisioned datasource (the path every panel takes)."""
        return http(f"{self.url}/api/ds/query", {"from": str(start_ms), "to": str(end_ms), "queries": [
            {"refId": "A", "datasource": {"type": "prometheus", "uid": "wattserve-prometheus"}, "expr": expr,
             "instant": True, "range": False}]}, timeout=30)

    def screenshot(self, uid: str, start_ms: int, end_ms: int, png: Path) -> subprocess.CompletedProcess:
        url = f"{self.url}/d/{uid}?orgId=1&kiosk&from={start_ms}&to={end_ms}&refresh="
        return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                               "--window-size=1600,2200", "--virtual-time-budget=20000", f"--screenshot={png}", url],
                              capture_output=True, text=True, timeout=120)

    def close(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True)
