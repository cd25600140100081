"""The live stack (``make up``) as the bench's home: find it, and tell its Prometheus what to scrape.

With the stack up, ``make bench RUNNER=docker`` runs each configuration's container on the stack's
compose network, samples the stack's own energy exporters (one RAPL/NVML reader per machine, the one
Prometheus scrapes too) and registers two scrape targets in a file Prometheus watches (file_sd,
``compose/targets/<project>/``): the run's service, labelled with the run id, and the bench's own
exporter (loadgen/bench_exporter.py: run, phase, progress). Without a stack nothing changes.

Which stack: ``WATTSERVE_STACK`` = ``auto`` (default: the compose project ``$COMPOSE_PROJECT_NAME``,
``wattserve`` unless set, when its Prometheus runs), ``off`` (never), or a project name (that one,
which must be up). Other projects (the tests' ``wattserve-test*``) are never joined by ``auto``.
The stack is found by its compose labels; the host reaches its containers at their bridge IPs (Linux;
Docker Desktop cannot, and is told to use ``WATTSERVE_STACK=off``).
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from loadgen.runners import docker_bin

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
TARGETS_MOUNT = "/etc/prometheus/targets"  # compose/docker-compose.yml: Prometheus' file_sd folder
EXPORTER_PORTS = {"rapl": 9651, "nvml": 9653, "netio": 9654, "host": 9655, "estimate": 9656, "dcgm": 9400}
SERVICE_PORT = 8000  # the service's port inside a container on the compose network


class StackError(RuntimeError):
    """A stack was asked for (or found) but cannot be used; the message says what to do."""


@dataclass
class Stack:
    """A running compose stack, as the host reaches it."""

    project: str
    network: str
    gateway: str                 # this host's address on the compose network (Prometheus reaches the bench there)
    prometheus_url: str          # http://<bridge ip>:9090
    targets_dir: Path            # the host folder Prometheus' file_sd reads
    exporters: dict[str, str] = field(default_factory=dict)  # stack service -> http://<ip>:<port>/metrics

    def describe(self) -> dict:
        return {"project": self.project, "network": self.network, "prometheus": self.prometheus_url,
                "exporters": sorted(self.exporters)}


def _docker_json(*args: str, timeout: float = 30):
    out = subprocess.run([docker_bin(), *args], capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise StackError(f"docker {' '.join(args[:2])} failed: {(out.stderr or out.stdout).strip()[-300:]}")
    return out.stdout


def project_containers(project: str) -> dict[str, dict]:
    """{compose service: docker inspect} of the project's running containers."""
    try:
        ids = _docker_json("ps", "-q", "--filter", f"label={PROJECT_LABEL}={project}").split()
    except (OSError, subprocess.TimeoutExpired, StackError):
        return {}
    if not ids:
        return {}
    return {c["Config"]["Labels"].get(SERVICE_LABEL, c["Name"]): c for c in json.loads(_docker_json("inspect", *ids))}


def _ip(info: dict, network: str) -> str | None:
    return ((info.get("NetworkSettings") or {}).get("Networks") or {}).get(network, {}).get("IPAddress") or None


def requested(environ=os.environ) -> str:
    """``off``, ``auto`` or a project name, from WATTSERVE_STACK."""
    value = (environ.get("WATTSERVE_STACK") or "auto").strip()
    return value.lower() if value.lower() in ("off", "auto", "none", "0", "no") else value


def discover(environ=os.environ, reach_timeout_s: float = 5.0) -> tuple[Stack | None, str]:
    """(the stack to join or None, why). A stack named in WATTSERVE_STACK that is not up, or one that
    is up but unusable from here, is a :class:`StackError`; ``auto`` with no stack is None."""
    want = requested(environ)
    if want in ("off", "none", "0", "no"):
        return None, "WATTSERVE_STACK=off"
    project = (environ.get("COMPOSE_PROJECT_NAME") or "wattserve").strip() if want == "auto" else want
    containers = project_containers(project)
    if "prometheus" not in containers:
        if want != "auto":
            raise StackError(f"WATTSERVE_STACK={want}: no running Prometheus of compose project {want!r} "
                             "(start it: COMPOSE_PROJECT_NAME=... make up), or WATTSERVE_STACK=off")
        return None, f"no stack up (compose project {project!r}; make up starts it)"
    prom = containers["prometheus"]
    networks = sorted(((prom.get("NetworkSettings") or {}).get("Networks") or {}))
    if not networks:
        raise StackError(f"stack {project}: its Prometheus is on no network")
    network = networks[0]
    targets = [m for m in prom.get("Mounts") or [] if m.get("Destination") == TARGETS_MOUNT]
    if not targets or targets[0].get("Type") != "bind":
        raise StackError(f"stack {project}: its Prometheus has no file_sd folder at {TARGETS_MOUNT} (a stack "
                         "started by an older checkout): restart it (make down && make up), or WATTSERVE_STACK=off")
    targets_dir = Path(targets[0]["Source"])
    if not os.access(targets_dir, os.W_OK):
        raise StackError(f"stack {project}: cannot write its target folder {targets_dir} (created by another "
                         "user?): fix its owner, or WATTSERVE_STACK=off")
    net = json.loads(_docker_json("network", "inspect", network))[0]
    gateway = next((c.get("Gateway") for c in (net.get("IPAM") or {}).get("Config") or [] if c.get("Gateway")), None)
    if not gateway:
        raise StackError(f"stack {project}: network {network} has no gateway address for the bench's exporter")
    prom_url = f"http://{_ip(prom, network)}:9090"
    try:
        urllib.request.urlopen(f"{prom_url}/-/ready", timeout=reach_timeout_s).close()
    except OSError as exc:
        raise StackError(f"stack {project} is up, but this host cannot reach its network at {prom_url} ({exc}; "
                         "Docker Desktop and rootless Docker cannot): WATTSERVE_STACK=off runs the bench "
                         "without it") from None
    exporters = {name: f"http://{_ip(info, network)}:{EXPORTER_PORTS[name]}/metrics"
                 for name, info in containers.items() if name in EXPORTER_PORTS and _ip(info, network)}
    return Stack(project, network, gateway, prom_url, targets_dir, exporters), \
        f"stack {project} (network {network}; Prometheus {prom_url})"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TargetFile:
    """The bench's scrape targets in the stack's file_sd folder (``bench-<pid>.json``), rewritten
    atomically (Prometheus reads a whole file or the previous one) and removed at the end."""

    def __init__(self, stack: Stack, name: str | None = None) -> None:
        self.path = stack.targets_dir / f"{name or f'bench-{os.getpid()}'}.json"
        self.groups: dict[str, dict] = {}
        for old in stack.targets_dir.glob("bench-*.json"):  # left by a bench killed outright
            pid = old.stem.rsplit("-", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                old.unlink(missing_ok=True)

    def set(self, key: str, address: str, labels: dict[str, str]) -> None:
        self.groups[key] = {"targets": [address], "labels": {k: str(v) for k, v in labels.items()}}
        self._write()

    def drop(self, key: str) -> None:
        if self.groups.pop(key, None) is not None:
            self._write()

    def _write(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")  # outside file_sd's *.json pattern
        tmp.write_text(json.dumps(list(self.groups.values()), indent=1) + "\n")
        tmp.chmod(0o644)
        tmp.replace(self.path)

    def close(self) -> None:
        self.groups.clear()
        self.path.unlink(missing_ok=True)


def sensor_targets(stack: Stack, choice) -> dict[str, str]:
    """The stack's exporters that the sensor choice (loadgen.sampling.SensorChoice) names: auto = every
    energy exporter the stack runs (rapl and the estimate: the analysis prefers a measurement, and rapl's
    entry records why it is down where it is). A choice the stack cannot serve is a :class:`StackError`."""
    have, out = stack.exporters, {}
    off = "; WATTSERVE_STACK=off runs the bench with its own exporters"
    if choice.cpu == "energibridge":
        raise StackError(f"cpu sensor energibridge: the stack has no EnergiBridge exporter{off}")
    if choice.cpu == "estimate" and (choice.tdp_watts is not None or choice.idle_watts is not None):
        raise StackError(f"TDP_WATTS/IDLE_WATTS: the stack's estimate exporter runs with its own settings{off}")
    for name in {"auto": ("rapl", "estimate"), "rapl": ("rapl",), "estimate": ("estimate",)}[choice.cpu]:
        if name in have:
            out[name] = have[name]
        elif choice.cpu != "auto":
            raise StackError(f"cpu sensor {name}: stack {stack.project} runs no {name} exporter{off}")
    if choice.dcgm_url:
        out["dcgm"] = choice.dcgm_url
    elif choice.gpu == "nvidia-smi":
        raise StackError(f"gpu sensor nvidia-smi: the stack's nvml exporter reads NVML{off}")
    elif choice.gpu in ("auto", "nvml"):
        out.update({n: have[n] for n in ("nvml", "dcgm") if n in have})
        if choice.gpu == "nvml" and "nvml" not in have:
            raise StackError(f"gpu sensor nvml: stack {stack.project} runs no nvml exporter (a -cuda CONFIG "
                             f"starts the gpu profile){off}")
    if choice.wall == "auto":
        out.update({"netio": have["netio"]} if "netio" in have else {})
    elif choice.wall != "none":
        raise StackError(f"wall meter URL: the stack's netio exporter has its own NETIO_URL (make up "
                         f"NETIO_URL=...){off}")
    return out


def stack_sampler(stack: Stack, interval_s: float, choice):
    """A sampler of the stack's energy exporters plus a host exporter of this bench's own (the service's
    process tree: the stack's host exporter watches the stack's inference service)."""
    from loadgen.local_exporters import LocalSampler
    from loadgen.sampling import SensorChoice, default_powercap_root

    choice = choice or SensorChoice()
    return LocalSampler(interval_s=interval_s, powercap_root=default_powercap_root(), choice=choice,
                        only=("host",), extra_targets=sensor_targets(stack, choice))


class StackRun:
    """The bench on the live stack (loadgen/protocol.py calls it): the bench's exporter and each run's
    service container are scrape targets (file_sd), the service labelled with the run id, repetition
    and bench id; the exporter follows the runs and phases (loadgen/bench_exporter.py)."""

    def __init__(self, stack: Stack, bench_id: str, total_runs: int) -> None:
        from loadgen.bench_exporter import BenchExporter

        self.stack, self.bench_id = stack, bench_id
        self.network = stack.network
        self.targets = TargetFile(stack, f"bench-{bench_id}-{os.getpid()}")
        self.exporter = BenchExporter(bench_id, addr=stack.gateway, port=0, total_runs=total_runs)
        self.targets.set("bench", self.exporter.address, {"job": "bench", "instance": "bench"})  # its series carry bench_id

    def describe(self) -> dict:
        return {**self.stack.describe(), "bench_exporter": self.exporter.address,
                "target_file": str(self.targets.path)}

    def run_started(self, run_id: str, plan) -> None:
        from services.inference.variants import label

        # the dashboards' config label is the variant: a run at int8 is onnx-cpu@int8, never mixed with fp32
        self.exporter.start_run(run_id, label(plan.config, plan.precision), plan.model, plan.rep, plan.prompts.count)

    def run_written(self, manifest: dict | None) -> None:
        self.exporter.end_run(manifest)

    def service_started(self, service, run_id: str, rep: int) -> None:
        container = getattr(service, "container", None)
        if container:
            self.targets.set("service", f"{container}:{SERVICE_PORT}",
                             {"job": "inference", "instance": container, "run_id": run_id, "rep": rep,
                              "bench_id": self.bench_id})

    def service_stopping(self) -> None:
        self.targets.drop("service")

    def close(self, linger_s: float = 2.5) -> None:
        """Out of Prometheus' targets, after ``linger_s`` (Prometheus scrapes every 1 s: the last run's
        figures get scraped before the exporter goes)."""
        import time

        time.sleep(linger_s)
        self.targets.close()
        self.exporter.close()
