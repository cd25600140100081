"""Lower precisions, each made by its own library's tool, and what that library reports having made.

fp32 is the study's setting (engines/precision.py). Below it every engine uses the conversion its
library ships, never a hand-written one: torch casts the weights (bf16, fp16) or swaps its Linear
layers for ``torch.ao.quantization.quantize_dynamic``'s int8 ones (int8 weights, activations
quantized per batch at run time); ONNX Runtime rewrites the exported graph with
``onnxruntime.quantization.quantize_dynamic`` (MatMulInteger); OpenVINO compresses the IR's weights
with NNCF through optimum-intel's ``OVWeightQuantizationConfig`` at export (int8, int4), computing in
f32. What each reports afterwards (the dtypes of the layers, the quantized operators in the graph, the
weight types in the IR, the compiled inference precision) is recorded in ``precision_settings``, so a
run says what ran, not what was asked.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

#: the file a quantized artifact carries with what its quantizer made (written at prepare, read at load)
META_FILE = "wattserve-precision.json"

TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


# -- torch ------------------------------------------------------------------------------------------
def cpu_features() -> dict[str, bool]:
    """Whether this CPU has native bf16 matmuls (AVX512-BF16, AMX) as torch sees it: without them
    oneDNN emulates bf16 through fp32, so bf16 halves the weights' bytes but not the arithmetic."""
    import torch

    return {"avx512": bool(torch.cpu._is_avx512_supported()),
            "avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported()),
            "amx_tile": bool(torch.cpu._is_amx_tile_supported()),
            "capability": torch.backends.cpu.get_cpu_capability()}


def torch_dtype(precision: str):
    """The dtype torch loads weights in for ``precision`` (int8 loads fp32, then quantizes)."""
    import torch

    return getattr(torch, TORCH_DTYPES.get(precision, "float32"))


def torch_int8_dynamic(model):
    """``model`` with every ``nn.Linear`` replaced by torch's dynamic int8 Linear (CPU kernels only)."""
    import warnings

    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch.ao.quantization warns it is deprecated; it is still torch's own
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*")
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*")
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def torch_report(model) -> dict[str, Any]:
    """What the loaded torch model is made of: its parameters' dtypes, and how many of its Linear
    layers are dynamic int8 ones (with the quantized engine that runs them)."""
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    dtypes = Counter(str(p.dtype).removeprefix("torch.") for p in model.parameters())
    modules = list(model.modules())
    report: dict[str, Any] = {
        "torch.parameter_dtypes": dict(sorted(dtypes.items())),
        "torch.float_linear_layers": sum(isinstance(m, torch.nn.Linear) for m in modules),
        "torch.dynamic_int8_linear_layers": sum(isinstance(m, DynamicInt8Linear) for m in modules),
    }
    if report["torch.dynamic_int8_linear_layers"]:
        report["torch.backends.quantized.engine"] = torch.backends.quantized.engine
    return report


# -- ONNX Runtime -------------------------------------------------------------------------------------
def onnx_quantize_int8(source: Path, target: Path) -> dict[str, Any]:
    """Quantize ``source``/model.onnx (an fp32 export) into ``target``/model.onnx with ORT's dynamic
    int8 quantizer (int8 weights, activations quantized at run time); copy the rest of the folder;
    write what the graph then holds into ``target``/META_FILE and return it."""
    import shutil

    import onnx
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for item in source.iterdir():
        if item.is_file() and not item.name.startswith("model.onnx") and not item.name.startswith("."):
            shutil.copy2(item, target / item.name)
    external = any(p.name != "model.onnx" for p in source.glob("model.onnx*"))  # >2 GB models keep data beside
    quantize_dynamic(source / "model.onnx", target / "model.onnx", weight_type=QuantType.QInt8,
                     per_channel=False, use_external_data_format=external)
    graph = onnx.load(str(target / "model.onnx"), load_external_data=False).graph
    ops = Counter(node.op_type for node in graph.node)
    meta = {"quantizer": f"onnxruntime.quantization.quantize_dynamic (onnxruntime {onnxruntime.__version__})",
            "weight_type": "QInt8", "per_channel": False,
            "ops": {op: ops[op] for op in ("MatMulInteger", "DynamicQuantizeLinear", "MatMul", "Gemm") if ops[op]}}
    (target / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return meta


# -- OpenVINO -----------------------------------------------------------------------------------------
#: NNCF weight compression per precision (asymmetric; int4 in groups of 64 along the input axis,
#: which divides the widths of every model here). NNCF keeps the embedding and the last layer at
#: int8 under int4, as its own statistics table prints.
OV_WEIGHT_COMPRESSION = {
    "int8": {"bits": 8, "sym": False},
    "int4": {"bits": 4, "sym": False, "group_size": 64, "ratio": 1.0},
}


def ov_weight_config(precision: str):
    """optimum-intel's weight-compression config for ``precision`` (None for fp32: no compression)."""
    if precision not in OV_WEIGHT_COMPRESSION:
        return None
    from optimum.intel import OVWeightQuantizationConfig

    return OVWeightQuantizationConfig(**OV_WEIGHT_COMPRESSION[precision])


def ov_weight_census(folder: Path) -> dict[str, Any]:
    """The element types of the IR's weight constants (how many, how many values), as OpenVINO reads
    the saved model: what the compression really produced. Written to ``folder``/META_FILE."""
    import nncf
    import openvino

    model = openvino.Core().read_model(folder / "openvino_model.xml")
    counts, values = Counter(), Counter()
    for op in model.get_ops():
        if op.get_type_name() == "Constant":
            shape = op.get_output_partial_shape(0)
            size = 1
            for dim in shape.to_shape():
                size *= dim
            if size >= 1024:  # weights, not the scalars and shapes the graph also holds
                kind = op.get_output_element_type(0).get_type_name()
                counts[kind] += 1
                values[kind] += size
    meta = {"compressor": f"nncf {nncf.__version__} through optimum-intel OVWeightQuantizationConfig",
            "weight_constants": dict(sorted(counts.items())), "weight_values": dict(sorted(values.items()))}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return meta


def read_meta(folder: Path) -> dict[str, Any]:
    """The quantizer's record in an artifact folder, as ``precision_settings`` entries
    (``quantization.<key>``; {} for an fp32 artifact, which has none)."""
    path = folder / META_FILE
    return {f"quantization.{k}": v for k, v in json.loads(path.read_text()).items()} if path.is_file() else {}
