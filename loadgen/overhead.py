"""How much CPU does the measuring harness itself take while the service answers prompts, and what
share of the CPU energy does that stand for (an estimate)?

Snapshots at the inference window's edges: the harness = this bench process (sampler thread,
progress, protocol), its children that are not the service (exporters, Locust) and, once reaped,
finished children (Locust exits inside the window); the service = the service process and its
descendants. Overhead = harness CPU seconds / service CPU seconds (goal: ≤ 1 %).
With the docker runner the service's pid is the container's init on the host: its tree is read
the same way, though it is not a child of this process.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, field

import psutil


@dataclass(frozen=True)
class CpuSnapshot:
    harness_s: float
    service_s: float
    parts: dict[str, float] = field(default_factory=dict)  # harness CPU s by role: bench, locust, exporter:<name>


def role(p: psutil.Process) -> str:
    """What a harness process is, from its command line."""
    try:
        argv = p.cmdline()
    except psutil.Error:
        return "other"
    for i, a in enumerate(argv[:-1]):
        if a == "-m" and argv[i + 1].startswith("services.exporters."):
            return "exporter:" + argv[i + 1].rsplit(".", 1)[1]
        if a == "-m" and argv[i + 1] == "locust":
            return "locust"
    return "other"


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def snapshot(service_pid: int | None) -> CpuSnapshot:
    me = psutil.Process()
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    harness, service = _cpu(me) + reaped.ru_utime + reaped.ru_stime, 0.0
    parts = {"bench": _cpu(me), "reaped": reaped.ru_utime + reaped.ru_stime}
    service_tree: set[int] = set()
    if service_pid:
        try:
            root = psutil.Process(service_pid)
            tree = [root, *root.children(recursive=True)]
            service_tree = {p.pid for p in tree}
            service = sum(_cpu(p) for p in tree)
        except psutil.NoSuchProcess:
            pass
    for child in me.children(recursive=True):
        if child.pid in service_tree:
            continue
        try:
            cpu = _cpu(child)
        except psutil.NoSuchProcess:  # ended between listing and reading: counted once reaped
            continue
        harness += cpu
        name = role(child)
        parts[name] = parts.get(name, 0.0) + cpu
    return CpuSnapshot(harness, service, parts)


def overhead(start: CpuSnapshot, end: CpuSnapshot) -> dict:
    harness = end.harness_s - start.harness_s
    service = end.service_s - start.service_s
    by_role = {k: round(end.parts.get(k, 0.0) - start.parts.get(k, 0.0), 3) for k in sorted(end.parts)}
    return {
        "harness_cpu_s": round(harness, 3),
        "service_cpu_s": round(service, 3),
        "harness_share_of_service": round(harness / service, 5) if service > 1e-3 else None,
        "harness_cpu_s_by_role": {k: v for k, v in by_role.items() if v},
    }


def harness_overhead(edges, replay_start: CpuSnapshot, replay_end: CpuSnapshot) -> dict:
    """Harness CPU over the inference window, from the snapshots at its marked edges (over the whole
    replay, Locust's start-up included, where the edges were not marked — said so in ``window``)."""
    a, b = edges.seen.get("inference_start"), edges.seen.get("inference_end")
    if a and b and a["cpu"] is not None and b["cpu"] is not None:
        return {**overhead(a["cpu"], b["cpu"]), "window": "inference"}
    return {**overhead(replay_start, replay_end), "window": "replay (edges not marked)"}


def harness_energy(harness: dict, energy: dict) -> None:
    """The harness's share of the CPU energy above idle, by its share of the busy CPU seconds in the
    window: always an estimate (package energy is not metered per process)."""
    h, sv = harness.get("harness_cpu_s"), harness.get("service_cpu_s")
    base = energy.get("dynamic_energy_cpu_j")
    if base is None:
        base = energy.get("energy_cpu_j")
    if h is None or sv is None or base is None or h + sv <= 0:
        return
    harness.update(harness_energy_cpu_j=round(max(0.0, base) * h / (h + sv), 4), harness_energy_estimated=True,
                    harness_energy_rule="CPU energy above idle x harness CPU s / (harness + service CPU s)")
