"""Print the pip requirement set of an image flavour, derived from the project's requirements.txt.

    python3 images/requirements.py cpu  requirements.txt > image-requirements.txt
    python3 images/requirements.py cuda requirements.txt > image-requirements.txt

``cpu`` is requirements.txt as it is (torch comes from a local wheel directory or the PyTorch CPU
index, see images/Dockerfile). ``cuda`` swaps ONNX Runtime for onnxruntime-gpu with its CUDA and
cuDNN wheels (the two packages ship the same ``onnxruntime`` module and must never be installed
together) and keeps torch==<pin> from PyPI, whose Linux wheel is the CUDA build. The fully
resolved CUDA set is pinned in images/constraints-cuda.txt (see images/README.md to refresh it).

Standard library only: it runs inside the image build before anything is installed.
"""

from __future__ import annotations

import re
import sys

# onnxruntime-gpu is released apart from onnxruntime and may lag it (1.32.0 CPU vs 1.31.1 GPU on
# PyPI, November 2026); both must share CUDA major with torch's wheel (CUDA 13 for torch 2.13.0).
ORT_GPU = "onnxruntime-gpu[cuda,cudnn]==1.31.1"


def name_of(line: str) -> str:
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    return m.group(1).lower().replace("_", "-") if m else ""


def flavour(lines: list[str], kind: str) -> list[str]:
    if kind == "cpu":
        return lines
    if kind != "cuda":
        raise SystemExit(f"unknown flavour {kind!r}: cpu or cuda")
    out = []
    for line in lines:
        name = name_of(line.split("#", 1)[0])
        if name == "onnxruntime":
            continue
        if name == "optimum-onnx":
            line = line.replace("[onnxruntime]", "[onnxruntime-gpu]")
        out.append(line)
    out.append(f"{ORT_GPU}  # images/requirements.py: the CUDA flavour's ONNX Runtime")
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[2], encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    print("\n".join(flavour(lines, argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
