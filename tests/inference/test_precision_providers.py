"""Equal precision and verified providers, without a GPU: the precision settings are applied and read
back, other precisions are refused (exit 2), and an ONNX Runtime session that fell back to the CPU
while CUDA was asked is refused — through the production load path with the real CPU onnxruntime,
whose provider list is made to claim CUDA as the GPU wheel's does when its CUDA provider then fails."""

from __future__ import annotations


import pytest

from services.inference.configs import ServingConfig
from services.inference.engines import EngineError, EngineSettings
from services.inference.engines import precision as precisions


def test_fp32_turns_tf32_off_in_torch():
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    try:
        got = precisions.apply_torch("fp32")
        assert got == {"torch.backends.cuda.matmul.allow_tf32": False, "torch.backends.cudnn.allow_tf32": False,
                       "torch.float32_matmul_precision": "highest"}
        assert torch.get_float32_matmul_precision() == "highest"  # read back from torch, not echoed
    finally:
        precisions.apply_torch("fp32")


def test_fp32_asks_ort_cuda_for_no_tf32():
    assert precisions.ort_cuda_options("fp32") == {"use_tf32": "0"}
    assert precisions.ort_matches("fp32", precisions.ort_readback({"CUDAExecutionProvider": {"use_tf32": "0"}}))
    assert not precisions.ort_matches("fp32", precisions.ort_readback({"CUDAExecutionProvider": {"use_tf32": "1"}}))
    assert precisions.ort_readback({"CPUExecutionProvider": {}}) == {"ort.CUDAExecutionProvider.use_tf32": None}


@pytest.mark.parametrize("name, mentions", [("tf32", "not implemented by any engine yet"),
                                            ("int3", "unknown precision")])
def test_other_precisions_are_refused(name, mentions):
    with pytest.raises(precisions.PrecisionError, match=mentions):
        EngineSettings(threads=1, precision=name)


class FakeSession:
    """An ORT InferenceSession as far as the provider check reads it."""

    def __init__(self, providers, options):
        self.providers, self.options = providers, options

    def get_providers(self):
        return self.providers

    def get_provider_options(self):
        return self.options


def test_verify_session_reads_the_session():
    from services.inference.engines.onnx_engine import verify_session

    cuda = FakeSession(["CUDAExecutionProvider", "CPUExecutionProvider"],
                       {"CUDAExecutionProvider": {"use_tf32": "0", "device_id": "0"}, "CPUExecutionProvider": {}})
    got = verify_session(cuda, "CUDAExecutionProvider", "fp32")
    assert got["providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert got["provider_options"]["CUDAExecutionProvider"]["device_id"] == "0"
    assert got["precision_settings"] == {"ort.CUDAExecutionProvider.use_tf32": "0"}
    with pytest.raises(EngineError, match="use_tf32=0"):  # TF32 left on (ORT's default) is refused
        verify_session(FakeSession(cuda.providers, {"CUDAExecutionProvider": {"use_tf32": "1"}}),
                       "CUDAExecutionProvider", "fp32")
    with pytest.raises(EngineError, match="not on CUDAExecutionProvider"):  # CUDA present but not first
        verify_session(FakeSession(["CPUExecutionProvider", "CUDAExecutionProvider"], cuda.options),
                       "CUDAExecutionProvider", "fp32")
    with pytest.raises(EngineError, match="no provider"):
        verify_session(FakeSession([], {}), "CPUExecutionProvider", "fp32")


@pytest.fixture(scope="module")
def onnx_cpu_artifact(tiny, cache_dir):
    from services.inference.engines.onnx_engine import OnnxEngine

    return OnnxEngine(tiny, ServingConfig.parse("onnx-cpu"), EngineSettings(threads=1, cache_dir=cache_dir)).prepare()


def test_onnx_cuda_that_falls_back_to_cpu_is_refused(tiny, cache_dir, onnx_cpu_artifact, monkeypatch):
    """The real failure: onnxruntime-gpu lists CUDAExecutionProvider as available; the session then
    cannot load it, warns and runs on the CPU. Here the real CPU onnxruntime is asked for CUDA through
    the engine's own load (optimum, a real InferenceSession); only the availability list is the GPU
    wheel's. Without the session check the engine would serve (verified by hand: removing the
    verify_session call makes this test fail with 'DID NOT RAISE')."""
    import onnxruntime as ort

    from services.inference.engines.onnx_engine import OnnxEngine

    real = ort.get_available_providers
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real()])
    engine = OnnxEngine(tiny, ServingConfig.parse("onnx-cuda"), EngineSettings(threads=1, cache_dir=cache_dir))
    monkeypatch.setattr(engine, "prepare", lambda progress=print: onnx_cpu_artifact)  # same export, no re-export
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"), \
            pytest.raises(EngineError, match=r"runs on \['CPUExecutionProvider'\], not on CUDAExecutionProvider"):
        engine.load()


def test_onnx_cpu_records_the_sessions_providers(tiny, cache_dir, onnx_cpu_artifact):
    from services.inference.engines.onnx_engine import OnnxEngine

    engine = OnnxEngine(tiny, ServingConfig.parse("onnx-cpu"), EngineSettings(threads=1, cache_dir=cache_dir))
    engine.load()
    described = engine.describe()
    assert described["providers"] == ["CPUExecutionProvider"]
    assert set(described["provider_options"]) == {"CPUExecutionProvider"}
    assert described["precision_settings"] == {"ort.CUDAExecutionProvider.use_tf32": None}
    assert len(engine.generate([1, 2, 3], 4, 4)) == 4
