"""Check a CUDA environment after install: onnxruntime-gpu present, the CPU onnxruntime absent.

Both ship the same ``onnxruntime`` folder; with both installed, whichever came last wins file by file
and the CUDA provider may silently be missing. Exit 1 with the fix when that is so.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version


def installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def main() -> int:
    gpu, cpu = installed("onnxruntime-gpu"), installed("onnxruntime")
    if cpu is not None:
        print(f"error: the CPU onnxruntime {cpu} is installed in {sys.prefix} (beside onnxruntime-gpu {gpu}): "
              f"{sys.executable} -m pip uninstall -y onnxruntime onnxruntime-gpu, then make venv-cuda", file=sys.stderr)
        return 1
    if gpu is None:
        print(f"error: onnxruntime-gpu is not installed in {sys.prefix}; make venv-cuda", file=sys.stderr)
        return 1
    print(f"{sys.prefix}: onnxruntime-gpu {gpu}, no CPU onnxruntime; torch {installed('torch')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
