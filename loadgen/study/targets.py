"""Monitoring across nodes: each Slurm job's exporters as Prometheus file_sd targets, labelled ``node``.

A job (loadgen/study/job.py) runs the exporters its run needs on its own node, listening on every
address, and advertises them in ``<study>/slurm/targets/<job id>.json`` (the study folder is shared)
from the moment they serve until the run stops them. The coordinator (executors/slurm.py) merges the
files of the jobs Slurm reports running into one file_sd file, rewritten atomically whenever it
changes: ``<study>/slurm/file_sd.json`` always (point any Prometheus at it), and the live stack's
target folder when a stack is up (compose/targets/<project>/, which compose/prometheus.yml reads).
Every target carries ``node=<host name>`` (the dashboards' node variable selects on it), ``run_id``,
``study`` and ``slurm_job``; ``job`` is the exporter's kind (host, rapl, estimate, nvml, ...).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

TARGETS_DIR = "targets"  # under <study>/slurm/
FILE_SD = "file_sd.json"
NODE_LABEL = "node"  # the dashboards' variable (issue 16): keep this exact name


def node_address(towards: str | None = None) -> str:
    """This node's address as a Prometheus elsewhere reaches it: the source address of the route towards
    ``towards`` (the host that submitted the job, where the stack runs), or of the default route when
    that is loopback (one machine; a containerised Prometheus cannot reach the host's 127.0.0.1); the
    host name where neither routes."""
    for dest in ([towards] if towards else []) + ["192.0.2.1"]:  # TEST-NET-1: a route, nothing is sent
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((dest, 9))
                addr = s.getsockname()[0]
        except OSError:
            continue
        if not addr.startswith("127."):
            return addr
    return socket.gethostname()


def _write_atomic(path: Path, groups: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # outside file_sd's *.json pattern
    tmp.write_text(json.dumps(groups, indent=1) + "\n")
    tmp.chmod(0o644)
    tmp.replace(path)


def job_groups(exporters: dict[str, str], address: str, labels: dict[str, str]) -> list[dict]:
    """file_sd groups for one job's exporters ({name: loopback URL}) as reached at ``address``."""
    from urllib.parse import urlsplit

    groups = []
    for name, url in sorted(exporters.items()):
        port = urlsplit(url).port
        if port is None:
            continue
        groups.append({"targets": [f"{address}:{port}"],
                       "labels": {"job": name, "instance": f"{labels.get(NODE_LABEL, address)}:{name}",
                                  **{k: str(v) for k, v in labels.items()}}})
    return groups


class AdvertisedSampler:
    """A study sampler whose exporters are advertised in ``path`` while they serve (a Slurm job's);
    everything else is the wrapped sampler's."""

    def __init__(self, sampler, path: Path, labels: dict[str, str], address: str) -> None:
        self._inner, self.path, self.labels, self.address = sampler, path, labels, address

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def start(self, run_dir: Path) -> None:
        self._inner.start(run_dir)
        exporters = getattr(self._inner, "exporters", {}) or {}
        _write_atomic(self.path, job_groups(exporters, self.address, {**self.labels, "run_id": Path(run_dir).name}))

    def stop(self) -> list[dict]:
        self.path.unlink(missing_ok=True)  # out of Prometheus' targets before the exporters go
        return self._inner.stop()


class FileSD:
    """The coordinator's file_sd file(s): the running jobs' targets, merged; written only on change."""

    def __init__(self, slurm_dir: Path, extra: list[Path] | None = None) -> None:
        self.source = slurm_dir / TARGETS_DIR
        self.paths = [slurm_dir / FILE_SD, *(extra or [])]
        self._last: str | None = None

    def update(self, running_job_ids: set[str]) -> list[dict]:
        groups = []
        for f in sorted(self.source.glob("*.json")) if self.source.is_dir() else []:
            if f.stem not in running_job_ids:
                continue  # a job that ended (killed before it could remove its file): not a target
            try:
                groups += json.loads(f.read_text())
            except (OSError, ValueError):
                continue  # being replaced right now: the next poll reads it
        text = json.dumps(groups, sort_keys=True)
        if text != self._last:
            for p in self.paths:
                _write_atomic(p, groups)
            self._last = text
        return groups

    def close(self) -> None:
        """Nothing of this study's left to scrape; the stack's file goes, the study's own is emptied."""
        for p in self.paths[1:]:
            p.unlink(missing_ok=True)
        _write_atomic(self.paths[0], [])


def stack_file_sd(study_name: str) -> tuple[Path | None, str]:
    """(the live stack's file_sd file for this study, why): the stack's target folder when a stack is
    up (loadgen/stack.py finds it; WATTSERVE_STACK=off never), else None."""
    from loadgen.stack import StackError, discover

    try:
        stack, why = discover()
    except (StackError, OSError) as exc:
        return None, f"no stack targets ({exc})"
    if stack is None:
        return None, why
    return stack.targets_dir / f"study-{study_name}.json", why
