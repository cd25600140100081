import pytest

from services.inference.configs import CONFIGS, ConfigError, ServingConfig, expand


def test_the_seven_study_configurations_and_the_added_ones():
    assert set(CONFIGS) == {"torch-cpu", "torch-cuda", "onnx-cpu", "onnx-cuda", "ov-cpu", "jit-cpu", "jit-cuda",
                            "compile-cpu", "compile-cuda", "ovgenai-cpu", "ct2-cpu", "ct2-cuda",
                            "llamacpp-cpu"}


def test_parse_splits_engine_and_provider():
    cfg = ServingConfig.parse("onnx-cuda")
    assert (cfg.engine, cfg.provider, cfg.device, cfg.name) == ("onnx", "cuda", "cuda", "onnx-cuda")


def test_ov_cuda_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="OpenVINO has no CUDA"):
        ServingConfig.parse("ov-cuda")
    with pytest.raises(ConfigError, match="OpenVINO GenAI runs on OpenVINO's devices"):
        ServingConfig.parse("ovgenai-cuda")
    with pytest.raises(ConfigError, match="needs a CUDA build of llama-cpp-python"):
        ServingConfig.parse("llamacpp-cuda")


def test_unknown_config_lists_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        ServingConfig.parse("tensorrt-cpu")
    assert all(c in str(err.value) for c in CONFIGS)


def test_expand_groups_and_lists():
    assert expand("cpu") == ["torch-cpu", "onnx-cpu", "ov-cpu", "jit-cpu", "compile-cpu", "ovgenai-cpu", "ct2-cpu",
                            "llamacpp-cpu"]
    assert expand("cuda") == ["torch-cuda", "onnx-cuda", "jit-cuda", "compile-cuda", "ct2-cuda"]
    assert expand("onnx-cpu, torch-cpu,onnx-cpu") == ["onnx-cpu", "torch-cpu"]
    assert len(expand("all")) == len(CONFIGS) == 13
    with pytest.raises(ConfigError):
        expand(" , ")
    with pytest.raises(ConfigError, match="not supported"):
        expand("cpu,ov-cuda")
