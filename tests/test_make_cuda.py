"""The CUDA install path of the Makefile, without a GPU: a CUDA config picks .venv-cuda built from the
CUDA requirement set (make -n shows it), and on a machine without a GPU it stops at once, exit 2."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

from tests.conftest import ROOT


def make(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def test_dry_run_of_a_cuda_bench_installs_the_cuda_requirement_set(tmp_path):
    venv = tmp_path / "venv-cuda"
    out = make("-n", "bench", "CONFIG=onnx-cuda", f"CUDA_VENV={venv}").stdout
    assert "scripts/require-gpu.sh" in out.splitlines()[0], "the GPU check comes before any install"
    assert f"images/requirements.py cuda requirements.txt > {venv}/requirements-cuda.txt" in out
    assert f"-r {venv}/requirements-cuda.txt" in out and "-c images/constraints-cuda.txt" in out
    assert "-c constraints.txt" not in out, "the CPU constraints (onnxruntime==) must not reach .venv-cuda"
    assert f"{venv}/bin/python scripts/check-cuda-venv.py" in out
    assert f"{venv}/bin/python -m loadgen.bench" in out and f"using {venv}" in out
    for config in ("cuda", "torch-cpu,jit-cuda", "all"):
        assert "images/requirements.py cuda" in make("-n", "bench", f"CONFIG={config}", f"CUDA_VENV={venv}").stdout


def test_cpu_configs_keep_the_cpu_venv(tmp_path):
    out = make("-n", "bench", "CONFIG=onnx-cpu,torch-cpu", f"CUDA_VENV={tmp_path}/v").stdout
    assert "images/requirements.py cuda" not in out and "require-gpu" not in out
    assert ".venv/bin/python -m loadgen.bench" in out


def fake_smi(tmp_path, body: str):
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\n{body}\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    return str(smi)


def test_no_gpu_fails_at_once_before_installing_anything(tmp_path):
    venv = tmp_path / "venv-cuda"
    for target in ("bench", "serve", "test"):
        proc = make(target, "CONFIG=onnx-cuda", f"CUDA_VENV={venv}",
                    env={"NVIDIA_SMI": str(tmp_path / "no-such-nvidia-smi")})
        assert proc.returncode == 2, (target, proc.stdout, proc.stderr)
        assert "CONFIG=onnx-cuda needs an NVIDIA GPU" in proc.stderr and "CONFIG=cpu" in proc.stderr
        assert not venv.exists(), "nothing may be installed on a machine without a GPU"
    proc = make("bench", "CONFIG=jit-cuda", f"CUDA_VENV={venv}",
                env={"NVIDIA_SMI": fake_smi(tmp_path, "echo 'No devices were found'; exit 6")})
    assert proc.returncode == 2 and "lists none: No devices were found" in proc.stderr
    assert not venv.exists()


def test_require_gpu_accepts_a_listed_gpu(tmp_path):
    smi = fake_smi(tmp_path, "echo 'GPU 0: NVIDIA H200 (UUID: GPU-1234)'")
    proc = subprocess.run([str(ROOT / "scripts" / "require-gpu.sh"), "onnx-cuda"], capture_output=True, text=True,
                          env={**os.environ, "NVIDIA_SMI": smi}, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_the_venv_check_refuses_the_cpu_onnxruntime():
    """Run in this (CPU) venv: onnxruntime is installed, onnxruntime-gpu is not -> refused, saying how to fix."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "check-cuda-venv.py")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and "the CPU onnxruntime" in proc.stderr and "uninstall" in proc.stderr


def test_gpu_check_dry_run_prints_every_step():
    proc = make("gpu-check", "GPU_CHECK_ARGS=--dry-run")
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr
    for step in ("driver, CUDA and torch", "venv on the system torch", "serving tiny over HTTP",
                 "token agreement with torch-cuda", "bench run with the NVML exporter", "the nvidia-smi source"):
        assert step in out, step
    assert "--config torch-cuda" in out and "--config jit-cuda" in out and "--gpu-sensor nvml" in out
    assert "--source nvidia-smi" in out and "services.inference.equivalence" in out
    assert "onnx-cuda: SKIPPED" in out and "onnxruntime-gpu==1.31.1" in out  # no wheel dir: says what it needs
    assert "dry run: nothing was run" in out


def test_gpu_check_takes_onnx_cuda_when_its_wheel_is_given(tmp_path):
    (tmp_path / "onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_27_x86_64.whl").write_bytes(b"")
    proc = subprocess.run([str(ROOT / "scripts" / "gpu-check.sh"), "--dry-run", "--wheels", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "onnx-cuda: SKIPPED" not in proc.stdout
    assert "--config onnx-cuda" in proc.stdout and "--configs torch-cuda,jit-cuda,onnx-cuda" in proc.stdout
    assert "check-cuda-venv.py" in proc.stdout


def test_gpu_check_refuses_to_run_without_tiny():
    proc = subprocess.run([str(ROOT / "scripts" / "gpu-check.sh")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--tiny DIR" in proc.stderr
