"""Serving configurations: a runtime engine paired with an execution provider.

A configuration name is ``<engine>-<provider>`` (``onnx-cuda``); it is the independent variable of
everything wattserve measures, so parsing it is strict and its errors name the valid choices.
"""

from __future__ import annotations

from dataclasses import dataclass

ENGINES = ("torch", "onnx", "ov", "jit", "compile", "ovgenai", "ct2", "llamacpp")
PROVIDERS = ("cpu", "cuda")

# Pairs that do not exist, with the reason a user is told.
UNSUPPORTED = {
    "ov-cuda": "OpenVINO has no CUDA execution provider (its GPU plugin targets Intel GPUs); "
    "use onnx-cuda, torch-cuda or jit-cuda for NVIDIA GPUs",
    "ovgenai-cuda": "OpenVINO GenAI runs on OpenVINO's devices (CPU, Intel GPU/NPU), not CUDA; "
    "use onnx-cuda, torch-cuda or jit-cuda for NVIDIA GPUs",
    "llamacpp-cuda": "it needs a CUDA build of llama-cpp-python (llama.cpp compiled with nvcc and the CUDA "
    "toolkit, made in its image), and this project builds the CPU one only; use llamacpp-cpu, or "
    "onnx-cuda, torch-cuda or jit-cuda for NVIDIA GPUs",
}

CONFIGS = tuple(
    f"{e}-{p}" for e in ENGINES for p in PROVIDERS if f"{e}-{p}" not in UNSUPPORTED
)
CPU_CONFIGS = tuple(c for c in CONFIGS if c.endswith("-cpu"))
CUDA_CONFIGS = tuple(c for c in CONFIGS if c.endswith("-cuda"))


class ConfigError(ValueError):
    """A configuration name that is unknown, unsupported, or not runnable on this machine."""


@dataclass(frozen=True)
class ServingConfig:
    engine: str
    provider: str

    @property
    def name(self) -> str:
        return f"{self.engine}-{self.provider}"

    @property
    def device(self) -> str:
        return "cuda" if self.provider == "cuda" else "cpu"

    @classmethod
    def parse(cls, name: str) -> "ServingConfig":
        name = (name or "").strip().lower()
        if name in UNSUPPORTED:
            raise ConfigError(f"configuration {name!r} is not supported: {UNSUPPORTED[name]}")
        if name not in CONFIGS:
            raise ConfigError(
                f"unknown configuration {name!r}; valid configurations are: {', '.join(CONFIGS)}"
            )
        engine, provider = name.split("-", 1)
        return cls(engine, provider)


def expand(selection: str) -> list[str]:
    """Expand a user selection (one name, a comma list, ``cpu``, ``cuda`` or ``all``)."""
    out: list[str] = []
    for part in (selection or "").split(","):
        part = part.strip().lower()
        if not part:
            continue
        group = {"cpu": CPU_CONFIGS, "cuda": CUDA_CONFIGS, "all": CONFIGS}.get(part)
        names = list(group) if group else [ServingConfig.parse(part).name]
        out.extend(n for n in names if n not in out)
    if not out:
        raise ConfigError(f"no configuration selected; valid: {', '.join(CONFIGS)}, cpu, cuda, all")
    return out


def require_cuda() -> None:
    """Fail early, and clearly, when a CUDA configuration is asked for on a machine without one."""
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            "a CUDA configuration was requested but no usable NVIDIA GPU is visible to PyTorch "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); "
            "run a -cpu configuration or use a machine with an NVIDIA GPU and driver"
        )
