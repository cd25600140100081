"""Lower precisions served for real: per engine and precision a live service on ``tiny`` answers over
HTTP and its /info records the precision and what the library reports having made (dtypes, quantized
layers or operators, compressed weight types); an undeclared precision is refused, naming the served ones."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.inference.configs import ServingConfig
from services.inference.engines import EngineSettings, engine_class
from services.inference.engines.precision import PrecisionError
from tests.conftest import ROOT, Server, free_port

PROMPT = {"prompt": "def fib(n):", "max_new_tokens": 6, "ignore_eos": True}


def served_lower_precisions():
    return [(f"{engine}-cpu", p) for engine in ("torch", "onnx", "ov", "jit", "ct2")
            for p in engine_class(engine).precisions if p != "fp32"]


def test_the_engines_declare_their_lower_precisions():
    assert served_lower_precisions() == [("torch-cpu", "bf16"), ("torch-cpu", "fp16"), ("torch-cpu", "int8"),
                                         ("onnx-cpu", "int8"), ("ov-cpu", "int8"), ("ov-cpu", "int4"),
                                         ("ct2-cpu", "int8")]


def check_reported(engine: str, precision: str, settings: dict) -> None:
    """What the library read back must be the precision asked for, not fp32 relabelled."""
    if engine == "torch":
        if precision == "int8":
            assert settings["torch.dynamic_int8_linear_layers"] > 0 and settings["torch.float_linear_layers"] == 0
        else:
            assert list(settings["torch.parameter_dtypes"]) == [{"bf16": "bfloat16", "fp16": "float16"}[precision]]
        assert isinstance(settings["cpu.avx512_bf16"], bool)
    elif engine == "onnx":
        assert settings["quantization.ops"]["MatMulInteger"] > 0
    elif engine == "ov":
        bits = {"int8": "u8", "int4": "u4"}[precision]
        assert settings["quantization.weight_constants"][bits] > 0
        assert settings["openvino.INFERENCE_PRECISION_HINT"] == "f32"  # weights compressed, computed in f32
        assert settings["nncf.weight_compression"]["bits"] == int(precision[3:])
    elif engine == "ct2":  # what the Generator reports it loaded: int8 weights, float32 elsewhere on a CPU
        assert settings["ctranslate2.compute_type"] == "int8_float32"


@pytest.mark.parametrize("config, precision", served_lower_precisions())
def test_a_lower_precision_serves_and_says_so(tiny, config, precision):
    server = Server(config, "tiny", "--precision", precision, "--warmup", "1")
    try:
        body = server.client.post("/v1/generate", json=PROMPT).json()
        assert body["completion_tokens"] == 6 and len(body["token_ids"]) == 6
        info = server.client.get("/info").json()
        assert info["precision"] == precision and info["state"] == "ready"
        check_reported(config.split("-")[0], precision, info["precision_settings"])
        metrics = server.client.get("/metrics").text  # the dashboards select services by the variant label
        assert f'wattserve_model_info{{config="{config}@{precision}"' in metrics
        assert f'precision="{precision}"' in metrics
    finally:
        server.stop()


def test_fp32_artifacts_are_not_reused_for_int8(tiny, cache_dir):
    """The quantized artifact has its own key, and the fp32 one stays unquantized."""
    cls = engine_class("onnx")
    cfg = ServingConfig.parse("onnx-cpu")
    fp32 = cls(tiny, cfg, EngineSettings(threads=1, cache_dir=cache_dir))
    int8 = cls(tiny, cfg, EngineSettings(threads=1, precision="int8", cache_dir=cache_dir))
    assert fp32.artifact_path() != int8.artifact_path()
    assert not (fp32.prepare() / "wattserve-precision.json").exists()
    assert (int8.prepare() / "wattserve-precision.json").exists()


@pytest.mark.parametrize("engine, precision, served", [("jit", "bf16", "fp32"), ("onnx", "int4", "fp32, int8"),
                                                       ("ov", "bf16", "fp32, int8, int4"), ("ct2", "int4", "fp32, int8"),
                                                       ("torch", "int4", "fp32, bf16, fp16, int8")])
def test_an_undeclared_precision_is_refused_naming_the_served_ones(tiny, cache_dir, engine, precision, served):
    cfg = ServingConfig.parse(f"{engine}-cpu")
    with pytest.raises(PrecisionError, match=f"engine '{engine}' does not serve precision '{precision}'; "
                                             f"it serves: {served}$"):
        engine_class(engine)(tiny, cfg, EngineSettings(threads=1, precision=precision, cache_dir=cache_dir))


@pytest.mark.parametrize("config, precision, says", [
    ("onnx-cpu", "bf16", "engine 'onnx' does not serve precision 'bf16'; it serves: fp32, int8"),  # this engine's
    ("torch-cpu", "tf32", "precision 'tf32' is not implemented by any engine yet (supported: fp32, bf16"),  # none's
])
def test_the_service_refuses_a_precision_it_cannot_serve_with_exit_2_before_loading(config, precision, says):
    proc = subprocess.run([sys.executable, "-m", "services.inference", "--config", config, "--model", "tiny",
                           "--port", str(free_port()), "--precision", precision],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_int8_on_cuda_is_refused_before_anything_loads(tiny, cache_dir, engine):
    """Both int8 paths have CPU-only kernels; asked on CUDA they say so when the engine is made (and the
    bench, which reads the same declaration, before anything starts), never mid-run."""
    from services.inference.engines.precision import PrecisionError

    with pytest.raises(PrecisionError, match=f"{engine}-cuda does not serve int8: .*CPU"):
        engine_class(engine)(tiny, ServingConfig.parse(f"{engine}-cuda"),
                             EngineSettings(threads=1, precision="int8", cache_dir=cache_dir))
    engine_class(engine)(tiny, ServingConfig.parse(f"{engine}-cpu"),  # the same precision on the CPU: served
                         EngineSettings(threads=1, precision="int8", cache_dir=cache_dir))
