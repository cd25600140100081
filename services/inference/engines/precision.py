"""Equal numeric precision on every engine, applied explicitly and read back for the record.

The study's setting is fp32. The libraries do not agree on what fp32 means on a GPU: ONNX Runtime's
CUDA execution provider runs fp32 matmuls and convolutions in TF32 by default (``use_tf32`` true),
while torch keeps full fp32 matmuls by default but lets cuDNN use TF32. An fp32 run therefore turns
TF32 off on both sides, so neither engine is faster for computing less exactly, and records what the
libraries then report (``/info`` and run.json). Lower precisions (bf16, fp16, int8, int4) are served
by the engines that declare them in ``Engine.precisions`` (engines/lower_precision.py says how each
library makes them); any other engine refuses them, never silently serving fp32. tf32 is a known
name no engine serves yet.
"""

from __future__ import annotations

from typing import Any

#: precisions some engine implements today (which engine: its ``precisions``)
SUPPORTED = ("fp32", "bf16", "fp16", "int8", "int4")
#: names understood but not yet implemented by any engine (refused with this reason)
PLANNED = ("tf32",)


class PrecisionError(ValueError):
    """A precision no engine can serve (yet); the message names the supported ones."""


def check(precision: str) -> str:
    """The precision if some engine serves it, else a PrecisionError saying why not."""
    if precision in SUPPORTED:
        return precision
    if precision in PLANNED:
        raise PrecisionError(f"precision {precision!r} is not implemented by any engine yet "
                             f"(supported: {', '.join(SUPPORTED)}); it is a planned setting, see "
                             "services/inference/engines/precision.py")
    raise PrecisionError(f"unknown precision {precision!r}; supported: {', '.join(SUPPORTED)} "
                         f"(planned: {', '.join(PLANNED)})")


def check_engine(engine: str, served: tuple[str, ...], precision: str) -> str:
    """The precision if ``engine`` (which serves ``served``) serves it, else a PrecisionError naming them."""
    check(precision)
    if precision not in served:
        raise PrecisionError(f"engine {engine!r} does not serve precision {precision!r}; it serves: "
                             f"{', '.join(served)}")
    return precision


def check_serving(engine_cls, provider: str, precision: str) -> str:
    """The precision if ``engine_cls`` serves it on ``provider`` (its ``precisions``, less its
    ``provider_refusals``), else a PrecisionError that says why."""
    check_engine(engine_cls.name, engine_cls.precisions, precision)
    why = engine_cls.provider_refusals.get((provider, precision))
    if why:
        raise PrecisionError(f"{engine_cls.name}-{provider} does not serve {precision}: {why}")
    return precision


def apply_torch(precision: str) -> dict[str, Any]:
    """Set torch's process-wide matmul/cuDNN precision for ``precision``; return what torch reports
    afterwards. fp32: TF32 off for matmuls (``float32_matmul_precision='highest'``) and for cuDNN.
    Harmless on a CPU-only torch (the flags exist; nothing uses them)."""
    import torch

    check(precision)  # the flags only concern fp32 matmuls; bf16/fp16/int8 weights are the engine's part
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    return torch_readback()


def torch_readback() -> dict[str, Any]:
    import torch

    return {
        "torch.backends.cuda.matmul.allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "torch.backends.cudnn.allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "torch.float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


def ort_cuda_options(precision: str) -> dict[str, str]:
    """CUDAExecutionProvider options for ``precision`` (ORT takes option values as strings)."""
    check(precision)
    return {"use_tf32": "0"}


def ort_readback(provider_options: dict[str, dict[str, str]]) -> dict[str, Any]:
    """What an ORT session reports about precision, from ``session.get_provider_options()``:
    ``use_tf32`` of its CUDA provider ("0"/"1"), None where the session has no CUDA provider."""
    cuda = provider_options.get("CUDAExecutionProvider")
    return {"ort.CUDAExecutionProvider.use_tf32": None if cuda is None else cuda.get("use_tf32")}


def ort_matches(precision: str, readback: dict[str, Any]) -> bool:
    """Whether a session's reported ``use_tf32`` is what ``precision`` asked (True without CUDA)."""
    value = readback.get("ort.CUDAExecutionProvider.use_tf32")
    return value is None or value == ort_cuda_options(precision)["use_tf32"]
