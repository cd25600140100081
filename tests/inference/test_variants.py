"""The variant label (configuration @ precision): spelled, parsed and checked in one place."""

import pytest

from services.inference.configs import ConfigError
from services.inference.variants import Variant, expand_variants, label, refusal, split


def test_fp32_keeps_the_bare_configuration_name():
    assert label("onnx-cpu", "fp32") == label("onnx-cpu", None) == "onnx-cpu"
    assert label("onnx-cpu", "int8") == "onnx-cpu@int8" == Variant("onnx-cpu", "int8").label
    assert split("onnx-cpu@int8") == ("onnx-cpu", "int8") and split("onnx-cpu") == ("onnx-cpu", "fp32")
    assert Variant.parse(" ONNX-CPU@INT8 ") == Variant("onnx-cpu", "int8")
    assert Variant.parse("torch-cpu") == Variant("torch-cpu", "fp32")


@pytest.mark.parametrize("text, says", [
    ("onnx-cpu@int3", "unknown precision 'int3'"),
    ("onnx-cpu@tf32", "not implemented by any engine yet"),
    ("tensorrt-cpu@int8", "unknown configuration 'tensorrt-cpu'"),
    ("ov-cuda@int8", "OpenVINO has no CUDA"),
])
def test_bad_labels_say_why(text, says):
    with pytest.raises(ConfigError, match=says):
        Variant.parse(text)


def test_precision_list_times_configurations_in_order():
    got = expand_variants("torch-cpu,onnx-cpu", "fp32,int8")
    assert [v.label for v in got] == ["torch-cpu", "torch-cpu@int8", "onnx-cpu", "onnx-cpu@int8"]
    # an item's own @precision wins over PRECISION; duplicates are dropped
    assert [v.label for v in expand_variants("ov-cpu@int4,onnx-cpu,onnx-cpu@int8", "int8")] == [
        "ov-cpu@int4", "onnx-cpu@int8"]
    assert [v.label for v in expand_variants("torch-cpu")] == ["torch-cpu"]


def test_a_refused_pair_names_every_refusal_and_who_serves_it():
    with pytest.raises(ConfigError) as err:
        expand_variants("cpu", "int4")
    text = str(err.value)
    assert "torch-cpu@int4: engine 'torch' does not serve precision 'int4'" in text
    assert "jit-cpu@int4" in text and "onnx-cpu@int4" in text and "ov-cpu@int4" not in text.split("\n  int4")[0]
    assert "int4 is served by: ov-cpu" in text


def test_provider_refusal_comes_from_the_engine_declaration():
    assert refusal(Variant("torch-cpu", "int8")) is None
    why = refusal(Variant("torch-cuda", "int8"))
    assert why and "torch-cuda does not serve int8" in why and "CPU only" in why
    assert refusal(Variant("jit-cpu", "bf16")) == "engine 'jit' does not serve precision 'bf16'; it serves: fp32"


def test_a_group_leaves_out_an_opt_in_engine_that_is_not_installed(monkeypatch):
    from services.inference.engines import engine_class
    from services.inference.variants import left_out_of_groups

    cls = engine_class("llamacpp")
    monkeypatch.setattr(cls, "missing", classmethod(lambda c: "llama-cpp-python is not installed: make llamacpp"))
    cpu = [v.label for v in expand_variants("cpu")]
    assert "llamacpp-cpu" not in cpu and "torch-cpu" in cpu and "ct2-cpu" in cpu
    assert left_out_of_groups("cpu,onnx-cpu") == {"llamacpp-cpu": "llama-cpp-python is not installed: make llamacpp"}
    assert [v.label for v in expand_variants("llamacpp-cpu")] == ["llamacpp-cpu"]  # named: kept, refused at start
    assert left_out_of_groups("llamacpp-cpu") == {}
    monkeypatch.setattr(cls, "missing", classmethod(lambda c: None))
    assert "llamacpp-cpu" in [v.label for v in expand_variants("cpu")] and left_out_of_groups("cpu") == {}
