"""A real client in its own virtual environment, from the package registry, cached by version.

guidellm pins click differently from this project, so it cannot share .venv. The environment is made
once under the wattserve cache, keyed by the tool's version and the pins it was installed with, and
marked complete only after the tool answers ``--help`` (a failed install is never taken for a good one).
The pins are the tool's whole resolved set (torch at the project's pin, so the local CPU wheel where
there is one), so the environment is the same on every machine.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path


class RegistryUnreachable(RuntimeError):
    """pip could not reach the package registry (the only reason such a test may skip)."""


UNREACHABLE = re.compile(r"(Could not fetch URL|NewConnectionError|Temporary failure in name resolution|"
                         r"Max retries exceeded|Network is unreachable|ConnectTimeout|ReadTimeout)")


def tool_venv(package: str, version: str, executable: str, constraints: Path, cache: Path,
              timeout: float = 1500) -> Path:
    """The path of ``executable`` in a venv holding ``package==version``, its dependencies pinned by
    ``constraints`` (the tool's own resolved set, kept beside the test), made if missing."""
    pins = constraints.read_text()
    key = hashlib.sha256(f"{package}=={version}\n{pins}".encode()).hexdigest()[:12]
    home = cache / "venvs" / f"{package}-{version}-{key}"
    exe = home / "bin" / executable
    if (home / ".complete").exists() and exe.exists():
        return exe
    shutil.rmtree(home, ignore_errors=True)
    home.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(home)], check=True, timeout=120)
    (home / "constraints.txt").write_text(pins)
    install = subprocess.run(
        [str(home / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         f"{package}=={version}", "-c", str(home / "constraints.txt")],
        capture_output=True, text=True, timeout=timeout)
    if install.returncode != 0:
        shutil.rmtree(home, ignore_errors=True)
        if UNREACHABLE.search(install.stderr):
            raise RegistryUnreachable(f"{package}=={version}: {install.stderr.strip().splitlines()[-1]}")
        raise RuntimeError(f"pip could not install {package}=={version}:\n{install.stderr[-4000:]}")
    subprocess.run([str(exe), "--help"], check=True, capture_output=True, timeout=300)
    (home / ".complete").write_text(f"{package}=={version}\n")
    return exe
