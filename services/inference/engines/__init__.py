"""Engine registry. Adding an engine = one module here + one line below.

Modules are imported only when their engine is used, so torch-only machines never import
onnxruntime or openvino.
"""

from __future__ import annotations

import importlib

from services.inference.engines.base import Engine, EngineError, EngineSettings

REGISTRY: dict[str, str] = {
    "torch": "services.inference.engines.torch_engine:TorchEngine",
    "onnx": "services.inference.engines.onnx_engine:OnnxEngine",
    "ov": "services.inference.engines.ov_engine:OpenVinoEngine",
    "jit": "services.inference.engines.jit_engine:JitEngine",
    "compile": "services.inference.engines.compile_engine:CompileEngine",
    "ovgenai": "services.inference.engines.ovgenai_engine:OpenVinoGenAIEngine",
    "ct2": "services.inference.engines.ct2_engine:CTranslate2Engine",
    "llamacpp": "services.inference.engines.llamacpp_engine:LlamaCppEngine",
}


def engine_class(name: str) -> type[Engine]:
    try:
        module, cls = REGISTRY[name].split(":")
    except KeyError:
        raise EngineError(f"unknown engine {name!r}; registered: {', '.join(REGISTRY)}") from None
    return getattr(importlib.import_module(module), cls)


__all__ = ["Engine", "EngineError", "EngineSettings", "REGISTRY", "engine_class"]
