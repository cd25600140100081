"""No Docker needed: the compose file, Prometheus' configuration and the image requirement sets are
checked as files (the dashboards and their provisioning: tests/grafana/test_dashboards.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose" / "docker-compose.yml"
PROMETHEUS = ROOT / "compose" / "prometheus.yml"
DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yml"

# ------------------------------------------------------------------ compose and Prometheus

def compose_file() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


EXPOSE = ROOT / "compose" / "expose.yml"
COMPOSE_SH = ROOT / "scripts" / "docker" / "compose.sh"
IMAGES_README = ROOT / "images" / "README.md"
EVERY_PROFILE = "dashboards,gpu,netio,bench"

# The only capabilities any service may add, each with the reason (also in images/README.md, "Security").
ALLOWED_CAP_ADD = {
    "dcgm": {"SYS_ADMIN": "dcgm-exporter's embedded nv-hostengine refuses to watch fields without it "
                          "(NVIDIA/dcgm-exporter#407); profiling (DCP) fields need it"},
    "loadgen": {"DAC_OVERRIDE": "a root caller's bench reads and writes the model cache, which belongs to "
                                "uid 10001 with 0700 folders; no effect for a non-root caller"},
}
# Services that run as root, and why. Every other one runs as its image's non-root user, or the caller's.
ROOT_SERVICES = {
    "rapl": "energy_uj is root:root 0400; uid 0 reads it as its owner, with no capability",
    "dcgm": "NVIDIA's image (embedded nv-hostengine) runs as root",
}


def env_items(svc: dict) -> list[tuple[str, str | None]]:
    env = svc.get("environment") or {}
    if isinstance(env, dict):
        return [(k, None if v is None else str(v)) for k, v in env.items()]
    return [(e.split("=", 1)[0], e.split("=", 1)[1] if "=" in e else None) for e in env]


def test_only_grafana_is_published():
    """Only Grafana is published, to 127.0.0.1; everything else talks over the compose network."""
    services = compose_file()["services"]
    published = {name: svc["ports"] for name, svc in services.items() if svc.get("ports")}
    assert list(published) == ["grafana"], f"published services: {sorted(published)} (only grafana may be)"
    [port] = published["grafana"]
    assert isinstance(port, str) and re.fullmatch(r"127\.0\.0\.1:\$\{GRAFANA_PORT-3000\}:3000", port), port
    # nothing that would bypass that: the host's network or namespaces, privileged mode
    for name, svc in services.items():
        assert svc.get("network_mode") != "host", name
        assert svc.get("pid") in (None, "service:inference"), name
        assert svc.get("ipc") != "host" and not svc.get("privileged"), name
    # the raw text too (an anchor or a merge key would not show up as a service's ports)
    assert len(re.findall(r"(?m)^\s*ports:", COMPOSE.read_text())) == 1


def test_expose_override_is_an_opt_in_on_loopback():
    """compose/expose.yml publishes exactly the service and Prometheus, on 127.0.0.1, and compose.sh adds
    it only when WATTSERVE_EXPOSE says so."""
    services = yaml.safe_load(EXPOSE.read_text())["services"]
    assert sorted(services) == ["inference", "prometheus"]
    assert services["inference"] == {"ports": ["127.0.0.1:${SERVICE_PORT-8000}:8000"]}
    assert services["prometheus"] == {"ports": ["127.0.0.1:${PROMETHEUS_PORT-9090}:9090"]}
    script = COMPOSE_SH.read_text()
    [line] = [line for line in script.splitlines() if "compose/expose.yml" in line and "files+=" in line]
    assert re.match(r"\s*1\|true\|yes\|on\)", line), line
    assert 'WATTSERVE_EXPOSE:-0' in script
    assert "127.0.0.1:$port/-/ready" not in script, "compose.sh must not rely on a published Prometheus"


def compose_bin() -> list[str] | None:
    from tests.docker.conftest import DOCKER

    if subprocess.run([DOCKER, "compose", "version"], capture_output=True).returncode == 0:
        return [DOCKER, "compose"]
    import shutil

    return [shutil.which("docker-compose")] if shutil.which("docker-compose") else None


def rendered_ports(*overrides: Path) -> dict[str, list[tuple[str, int]]]:
    """`compose config` of the file (+ overrides), every profile on: {service: [(host_ip, target)]}."""
    import os

    cmd = compose_bin()
    if not cmd:
        pytest.skip("neither `docker compose` nor docker-compose is installed")
    files = [a for f in (COMPOSE, *overrides) for a in ("-f", str(f))]
    env = {**os.environ, "GRAFANA_ADMIN_PASSWORD": "x", "COMPOSE_PROFILES": EVERY_PROFILE}
    out = subprocess.run([*cmd, *files, "config"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    assert {"grafana", "dcgm", "netio", "loadgen"} <= set(services), sorted(services)
    ports = {}
    for name, svc in services.items():
        for p in svc.get("ports", []):
            if isinstance(p, dict):  # compose v2: long syntax
                ports.setdefault(name, []).append((p.get("host_ip", "0.0.0.0"), int(p["target"])))
            else:  # docker-compose v1: "127.0.0.1:3000:3000/tcp"
                parts = str(p).split("/")[0].split(":")
                ports.setdefault(name, []).append((parts[0] if len(parts) == 3 else "0.0.0.0", int(parts[-1])))
    return ports


def test_compose_config_publishes_only_grafana():
    """What compose itself renders, with every profile on: one published port, Grafana's, on loopback."""
    assert rendered_ports() == {"grafana": [("127.0.0.1", 3000)]}


def test_compose_config_with_the_expose_override():
    assert rendered_ports(EXPOSE) == {"grafana": [("127.0.0.1", 3000)], "inference": [("127.0.0.1", 8000)],
                                      "prometheus": [("127.0.0.1", 9090)]}


def test_no_default_credentials():
    text = COMPOSE.read_text()
    services = compose_file()["services"]
    grafana = services["grafana"]
    env = grafana["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?"), "admin password must be required"
    # anonymous visitors: read-only (Viewer, no Explore/edit), no sign-up, no basic auth on the API
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert env["GF_USERS_VIEWERS_CAN_EDIT"] == "false"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false" and env["GF_USERS_ALLOW_ORG_CREATE"] == "false"
    assert env["GF_AUTH_BASIC_ENABLED"] == "false"
    assert not re.search(r"(?i)password[\"']?\s*[:=]\s*[\"']?admin\b", text)
    assert "dashboards" in grafana["profiles"], "Grafana must sit under a profile (it cannot be pulled everywhere)"
    # every secret-looking variable of every service: passed through from the host, or required; a
    # literal or a non-empty default would be a default credential
    secret = re.compile(r"(?i)(PASSWORD|PASSWD|TOKEN|SECRET|API_?KEY)")
    found = 0
    for name, svc in services.items():
        for key, value in env_items(svc):
            if not secret.search(key):
                continue
            found += 1
            ok = value is None or re.fullmatch(r"\$\{[A-Z_]+(:\?[^}]*|:-|-)?\}", value)
            assert ok, f"{name}: {key}={value!r} looks like a default credential"
    assert found >= 3  # GF_SECURITY_ADMIN_PASSWORD, HF_TOKEN, NETIO_PASSWORD
    # compose.sh makes a random password when none is given (never a fixed one)
    script = COMPOSE_SH.read_text()
    assert "secrets.token_urlsafe" in script and "umask 077" in script
    assert not re.search(r"GRAFANA_ADMIN_PASSWORD=[\"']?[A-Za-z0-9]", script)
    # provisioning: no stored secrets, the datasource is not editable
    for path in (ROOT / "grafana" / "provisioning").rglob("*.y*ml"):
        doc = path.read_text()
        assert not re.search(r"(?i)(password|secureJsonData|basicAuth:\s*true)", doc), path
    assert yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["editable"] is False


def test_every_service_drops_every_capability():
    """cap_drop ALL and no-new-privileges everywhere; the only cap_add is on the allow-list (with its
    reason), documented in images/README.md and next to the cap_add itself."""
    services = compose_file()["services"]
    text = COMPOSE.read_text()
    for name, svc in services.items():
        assert svc.get("cap_drop") == ["ALL"], f"{name}: cap_drop must be [ALL], is {svc.get('cap_drop')}"
        assert "no-new-privileges:true" in svc.get("security_opt", []), f"{name}: no no-new-privileges"
        added = set(svc.get("cap_add", []))
        allowed = set(ALLOWED_CAP_ADD.get(name, {}))
        assert added <= allowed, f"{name}: cap_add {sorted(added - allowed)} is not on the allow-list"
        assert added == allowed, f"{name}: the allow-list names {sorted(allowed - added)}, compose does not"
    for name, caps in ALLOWED_CAP_ADD.items():
        block = re.search(rf"(?ms)^  {name}:\n(.*?)(?=^  [a-z]+:\n|\Z)", text).group(1)
        comment = " ".join(line.split("#", 1)[1] for line in block.splitlines() if line.strip().startswith("#"))
        for cap in caps:
            assert cap in comment, f"{name}: no comment says why it needs {cap}"
    rows = permission_rows()
    for name, caps in ALLOWED_CAP_ADD.items():
        for cap in caps:
            assert cap in rows[name]["capabilities"], f"images/README.md: {name}'s row does not name {cap}"


def permission_rows() -> dict[str, dict[str, str]]:
    """images/README.md's permissions table: {service: {column: text}}."""
    lines = IMAGES_README.read_text().split("## Security", 1)[1].splitlines()
    table = [line for line in lines if line.startswith("|")]
    header = [c.strip().lower() for c in table[0].strip("|").split("|")]
    rows = {}
    for line in table[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        for name in re.findall(r"`([a-z]+)`", cells[0]):
            rows[name] = dict(zip(header, cells))
    return rows


def test_permissions_table_covers_every_service():
    rows = permission_rows()
    services = compose_file()["services"]
    assert set(rows) == set(services), f"images/README.md Security table vs compose: {set(rows) ^ set(services)}"
    assert {"service", "user", "capabilities", "mounts", "why"} <= set(next(iter(rows.values())))
    for name in ROOT_SERVICES:
        assert "root" in rows[name]["user"], name
    for name, svc in services.items():
        if not svc.get("cap_add"):
            assert "none" in rows[name]["capabilities"].lower(), f"{name}: the table must say it has no capability"


def test_services_run_without_root_where_they_can():
    services = compose_file()["services"]
    dockerfile = (ROOT / "images" / "Dockerfile").read_text()
    assert re.search(r"(?m)^USER wattserve$", dockerfile)
    assert re.search(r"(?m)^USER prometheus$", (ROOT / "images" / "prometheus" / "Dockerfile").read_text())
    for name, svc in services.items():
        if name in ROOT_SERVICES:
            continue
        user = svc.get("user")
        if name == "loadgen":  # the caller's uid (compose.sh), so results belong to whoever ran it
            assert user == "${WATTSERVE_UID:-10001}:${WATTSERVE_GID:-10001}", user
        else:  # the image's non-root user: wattserve (10001), prometheus, grafana (472)
            assert user is None, f"{name}: user {user!r} overrides the image's non-root user"
    # rapl: root, but no capabilities, read-only root fs and mounts; RAPL_USER to run it non-root
    rapl = services["rapl"]
    assert rapl["user"] == "${RAPL_USER:-0:0}" and rapl["read_only"] is True
    assert rapl["cap_drop"] == ["ALL"] and not rapl.get("cap_add")
    assert all(v.endswith(":ro") for v in rapl["volumes"])
    # read-only root file systems where nothing but a volume is written
    for name in ("host", "rapl", "estimate", "nvml", "netio", "prometheus"):
        assert services[name]["read_only"] is True, name


def test_exporters_and_profiles():
    services = compose_file()["services"]
    exporters = {p.stem for p in (ROOT / "services" / "exporters").glob("*.py")} - {"__init__", "common", "sampler"}
    for name in ("host", "rapl", "estimate", "nvml", "netio"):
        assert name in exporters, f"services/exporters/{name}.py is gone"
        cmd = services[name]["command"]
        assert cmd[:3] == ["python", "-m", f"services.exporters.{name}"], cmd
        assert "--addr" in cmd and cmd[cmd.index("--addr") + 1] == "0.0.0.0"
    assert "gpu" in services["nvml"]["profiles"] and "gpu" in services["dcgm"]["profiles"]
    assert "netio" in services["netio"]["profiles"]
    assert services["dcgm"]["command"] == ["-c", "1000"]
    for gpu in ("nvml", "dcgm"):
        devices = services[gpu]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia"
    assert services["inference"]["depends_on"]["prepare"]["condition"] == "service_completed_successfully"


def nvidia_reservations(path: Path) -> list[tuple[str, dict]]:
    """(service, device reservation) for every NVIDIA device a compose file reserves."""
    out = []
    for name, svc in (yaml.safe_load(path.read_text()).get("services") or {}).items():
        devices = (((svc.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
        out += [(name, d) for d in devices if d.get("driver") == "nvidia"]
    return out


def test_gpu_services_keep_compute():
    """`capabilities: [gpu]` alone: Docker then leaves NVIDIA_DRIVER_CAPABILITIES at the toolkit's default
    (compute,utility). Listing `utility` makes it exactly `utility`, and the CUDA containers get no
    libcuda.so.1 (docker/compose#8583): torch sees no GPU, the nvml exporter still works."""
    seen = {}
    for path in (COMPOSE, ROOT / "compose" / "gpu.yml"):
        for name, device in nvidia_reservations(path):
            seen[f"{path.name}:{name}"] = device
            assert device.get("capabilities") == ["gpu"], f"{path.name}: {name} reserves {device.get('capabilities')}"
            assert "NVIDIA_DRIVER_CAPABILITIES" not in dict(env_items(
                yaml.safe_load(path.read_text())["services"][name])), f"{name} narrows the driver capabilities"
    assert {"docker-compose.yml:nvml", "docker-compose.yml:dcgm", "gpu.yml:inference", "gpu.yml:prepare"} <= set(seen)


def test_prometheus_scrapes_every_service_each_second():
    prom = yaml.safe_load(PROMETHEUS.read_text())
    assert prom["global"]["scrape_interval"] == "1s"
    services = compose_file()["services"]
    jobs = {}
    for job in prom["scrape_configs"]:
        hosts = [t.split(":")[0] for sc in job.get("static_configs", []) for t in sc["targets"]]
        hosts += [n for sd in job.get("dns_sd_configs", []) for n in sd["names"]]
        jobs[job["job_name"]] = hosts
        for h in hosts:
            assert h in services, f"job {job['job_name']} scrapes {h}, which is no compose service"
    for name in ("inference", "host", "rapl", "estimate", "nvml", "dcgm", "netio"):
        assert name in jobs, f"Prometheus does not scrape {name}"


# ------------------------------------------------------------------ image requirement sets

def pins(path: Path) -> dict[str, str]:
    return pins_of_text(path.read_text())


def test_cuda_requirement_set():
    sys.path.insert(0, str(ROOT / "images"))
    try:
        import requirements as flavours
    finally:
        sys.path.pop(0)
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    assert flavours.flavour(lines, "cpu") == lines
    cuda = "\n".join(flavours.flavour(lines, "cuda"))
    assert not re.search(r"(?m)^onnxruntime==", cuda), "CPU and GPU ONNX Runtime must never be installed together"
    assert "optimum-onnx[onnxruntime-gpu]" in cuda and "onnxruntime-gpu[cuda,cudnn]==" in cuda
    cuda_pins = pins(ROOT / "images" / "constraints-cuda.txt")
    cpu_pins = pins(ROOT / "constraints.txt")
    for name, version in pins_of_text(cuda).items():
        assert cuda_pins.get(name) == version, f"{name}=={version} not pinned in images/constraints-cuda.txt"
    shared = {n: (v, cuda_pins[n]) for n, v in cpu_pins.items() if n in cuda_pins and cuda_pins[n] != v}
    assert not shared, f"CPU and CUDA sets disagree: {shared}"
    assert "onnxruntime" not in cuda_pins and "nvidia-cudnn-cu13" in cuda_pins


def pins_of_text(text: str) -> dict[str, str]:
    tmp = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            tmp[re.sub(r"\[.*\]", "", re.sub(r"[-_.]+", "-", name).lower())] = version.strip()
    return tmp


def test_dockerignore_keeps_local_state_out():
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "allowlist: exclude everything first"
    allowed = [line[1:] for line in ignore if line.startswith("!")]
    for private in (".venv", ".cache", "results", ".git"):
        assert not any(a.rstrip("/").startswith(private) for a in allowed), private


@pytest.mark.parametrize("dockerfile", ["images/Dockerfile", "images/prometheus/Dockerfile"])
def test_dockerfiles_take_a_base_image_and_no_syntax_line(dockerfile):
    text = (ROOT / dockerfile).read_text()
    assert re.search(r"(?m)^ARG BASE_IMAGE=", text)
    assert not re.search(r"(?m)^# *syntax=", text), "no syntax line: the builder's own frontend is used"
    if dockerfile == "images/Dockerfile":
        assert "HEALTHCHECK" in text and "/ready" in text and re.search(r"(?m)^USER wattserve$", text)


@pytest.mark.skipif(__import__("os").environ.get("WATTSERVE_TEST_RESOLVE") != "1",
                    reason="resolves the CUDA image's requirement set against the package index (network, "
                           "~1 min): set WATTSERVE_TEST_RESOLVE=1 (.ci/run does)")
def test_cuda_set_resolves_from_the_index(tmp_path):
    """pip install --dry-run of the CUDA flavour, as images/Dockerfile (deps-cuda) runs it: from the
    index alone (no local wheel folders, whose CPU torch would win), fully pinned."""
    import os

    req = tmp_path / "requirements-cuda.txt"
    out = subprocess.run([sys.executable, str(ROOT / "images" / "requirements.py"), "cuda", str(ROOT / "requirements.txt")],
                         capture_output=True, text=True, check=True)
    req.write_text(out.stdout)
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT")}
    env["PIP_CONFIG_FILE"] = os.devnull
    report = tmp_path / "report.json"
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
                          "--report", str(report), "-r", str(req), "-c", str(ROOT / "images" / "constraints-cuda.txt")],
                         capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    got = {re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower(): i["metadata"]["version"]
           for i in json.loads(report.read_text())["install"]}
    assert got["torch"] == "2.13.0" and "onnxruntime" not in got, got
    assert got["onnxruntime-gpu"] and got["nvidia-cudnn-cu13"].startswith("9."), got
    assert got == pins(ROOT / "images" / "constraints-cuda.txt")


def test_every_configuration_has_an_image():
    """A configuration the registry serves has its Dockerfile target and is built by build-images.sh,
    so `make images` never leaves one without its container."""
    from services.inference.configs import CONFIGS

    dockerfile = (ROOT / "images" / "Dockerfile").read_text()
    script = (ROOT / "scripts" / "docker" / "build-images.sh").read_text()
    targets = set(re.findall(r"(?m)^FROM \S+ AS (\S+)$", dockerfile))
    built = set(re.findall(r"(?m)^\s*for c in ([^;]+);", script)[0].split()) | set(
        re.findall(r"(?m)^\s*for c in ([^;]+);", script)[1].split())
    for config in CONFIGS:
        assert config in targets, f"images/Dockerfile has no target {config}"
        assert config in built, f"scripts/docker/build-images.sh does not build {config}"
        assert f"ENV WATTSERVE_CONFIG={config}" in dockerfile
