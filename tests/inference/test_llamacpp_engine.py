"""llamacpp-cpu: llama.cpp on a GGUF from llama.cpp's own converter, fed our token ids, greedy, EOS as ours;
refused in one sentence where llama-cpp-python (an opt-in source build) or its converter is missing.

The tests that need llama-cpp-python skip, saying how to get it, where it is not installed (`make llamacpp`);
the refusal tests run everywhere: they hide an installed llama_cpp behind one that fails to import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.inference.configs import ConfigError, ServingConfig
from services.inference.engines import EngineError, EngineSettings, engine_class
from services.inference.engines.llamacpp_convert import converter_problem
from services.inference.engines.llamacpp_engine import LlamaCppEngine, llama_cpp_problem
from tests.conftest import ROOT, free_port

MISSING = llama_cpp_problem()
needs_llamacpp = pytest.mark.skipif(MISSING is not None, reason=f"llamacpp-cpu cannot run here: {MISSING}")


def hidden_llama_cpp(tmp_path) -> dict:
    """An environment in which ``import llama_cpp`` fails as it does where it is not installed."""
    pkg = tmp_path / "hide" / "llama_cpp"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError(\"No module named 'llama_cpp'\")\n")
    import os

    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "hide"), str(ROOT)])}


def test_registered_and_cuda_refused_with_the_reason():
    assert ServingConfig.parse("llamacpp-cpu").engine == "llamacpp"
    assert engine_class("llamacpp") is LlamaCppEngine
    with pytest.raises(ConfigError, match="needs a CUDA build of llama-cpp-python"):
        ServingConfig.parse("llamacpp-cuda")


def test_not_installed_is_one_sentence_saying_how_to_get_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_llama_cpp(name, *args, **kwargs):
        if name == "llama_cpp":
            raise ImportError("No module named 'llama_cpp'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_llama_cpp)
    msg = LlamaCppEngine.missing()
    assert msg.startswith("llama-cpp-python is not installed") and "make llamacpp" in msg
    assert "wattserve:llamacpp-cpu" in msg and "\n" not in msg


def test_the_engine_refuses_to_be_built_without_it(tiny, monkeypatch):
    monkeypatch.setattr(LlamaCppEngine, "missing", classmethod(lambda cls: "llama-cpp-python is not installed: x"))
    with pytest.raises(EngineError, match="^llama-cpp-python is not installed: x$"):
        LlamaCppEngine(tiny, ServingConfig.parse("llamacpp-cpu"), EngineSettings(threads=1))


def test_the_service_refuses_the_configuration_with_exit_2_before_loading(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "services.inference", "--config", "llamacpp-cpu", "--model", "tiny",
                           "--port", str(free_port())],
                          cwd=ROOT, env=hidden_llama_cpp(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: llama-cpp-python is not installed") and "make llamacpp" in line
    assert "Traceback" not in proc.stderr


def test_a_missing_or_mismatched_converter_is_named(tmp_path):
    assert "missing convert_hf_to_gguf.py, conversion, gguf-py" in converter_problem(tmp_path, "0.3.36")
    for f in ("convert_hf_to_gguf.py", "conversion", "gguf-py"):
        (tmp_path / f).mkdir()
    assert "has no VERSION file" in converter_problem(tmp_path, "0.3.36")
    (tmp_path / "VERSION").write_text("0.3.35\n")
    msg = converter_problem(tmp_path, "0.3.36")
    assert "from llama-cpp-python 0.3.35" in msg and "installed llama-cpp-python is 0.3.36" in msg
    (tmp_path / "VERSION").write_text("0.3.36\n")
    assert converter_problem(tmp_path, "0.3.36") is None


def test_precisions_are_the_converters_outtypes():
    from services.inference.engines.llamacpp_convert import OUTTYPES
    from services.inference.engines.llamacpp_engine import KV_TYPES

    assert LlamaCppEngine.precisions == ("fp32", "fp16", "int8")
    assert {p: OUTTYPES[p] for p in LlamaCppEngine.precisions} == {"fp32": "f32", "fp16": "f16", "int8": "q8_0"}
    assert set(KV_TYPES) == set(LlamaCppEngine.precisions)


# ------------------------------------------------------------------ with llama-cpp-python installed

def tokenize(engine, text: str) -> list[int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(engine.model.load_source)(text)["input_ids"]


@pytest.fixture(scope="module")
def engine(tiny, cache_dir):
    eng = LlamaCppEngine(tiny, ServingConfig.parse("llamacpp-cpu"), EngineSettings(threads=2, cache_dir=cache_dir))
    eng.load()
    return eng


@pytest.fixture(scope="module")
def torch_engine(tiny, cache_dir):
    from services.inference.engines.torch_engine import TorchEngine

    eng = TorchEngine(tiny, ServingConfig.parse("torch-cpu"), EngineSettings(threads=2, cache_dir=cache_dir))
    eng.load()
    return eng


@needs_llamacpp
def test_prepared_once_verified_against_torch_and_described(engine):
    folder = engine.artifact_dir
    assert (folder / "model.gguf").stat().st_size > 0 and (folder / ".complete").is_file()
    assert engine.prepare() == folder  # cached: the second prepare converts nothing
    info = engine.describe()
    assert info["engine"] == "llamacpp" and info["gguf"]["outtype"] == "f32"
    assert info["kv_cache_details"]["type_k"] == "F32" and info["flash_attention"] is False
    v = info["verification"]
    assert v["cases"] == 6 and 0 <= v["exact"] <= 6 and info["verified"] == (v["exact"] == 6)
    assert info["verified"] or "differ from torch's" in v["reason"]  # a mismatch is shown with its reason
    # tiny's tokenizer is unknown to the converter: written under a fallback name, and said so
    assert info["gguf"]["pre_tokenizer_recognised"] is False and info["gguf"]["pre_tokenizer"] == "gpt-2"


@needs_llamacpp
def test_greedy_min_new_tokens_and_limits(engine, torch_engine):
    prompt = [5, 6, 7]
    out = engine.generate(prompt, 12, min_new_tokens=12)
    assert len(out) == 12 and not set(out) & set(engine.eos)  # EOS held back until min_new_tokens
    assert out[0] == torch_engine.generate(prompt, 1)[0]  # the prefill's argmax is torch's
    assert engine.generate(prompt, 0) == []
    ends = tokenize(engine, "    return result\n")  # tiny's torch answers this with EOS at once
    assert torch_engine.generate(ends, 40) == engine.generate(ends, 40) == engine.eos[:1]  # stopped at our EOS
    held = engine.generate(ends, 40, min_new_tokens=5)
    assert len(held) >= 5 and not set(held[:5]) & set(engine.eos)
    with pytest.raises(ValueError, match="exceed the context"):
        engine.generate([5] * 500, 100)


@needs_llamacpp
def test_no_prefix_reuse_between_requests(engine):
    """The same prompt after another one gives the same ids as alone: nothing cached is reused."""
    a = engine.generate([9, 10, 11, 12], 8, 8)
    engine.generate([9, 10, 11, 40, 41], 8, 8)
    assert engine.generate([9, 10, 11, 12], 8, 8) == a


@needs_llamacpp
def test_streamer_and_should_stop(engine):
    heard = []

    class Streamer:
        def put(self, v):
            heard.append(list(v))

        def end(self):
            heard.append("end")

    out = engine.generate([1, 2, 3], 10, 10, streamer=Streamer(), should_stop=lambda: len(heard) >= 4)
    assert heard[0] == [1, 2, 3] and heard[-1] == "end"
    assert [h[0] for h in heard[1:-1]] == out and len(out) == 3  # stopped after the third new token


@needs_llamacpp
@pytest.mark.slow  # a conversion and a verification of its own: ~1 min here
def test_int8_is_a_q8_0_gguf_with_its_agreement_recorded(tiny, engine, tmp_path):
    int8 = LlamaCppEngine(tiny, ServingConfig.parse("llamacpp-cpu"),
                          EngineSettings(threads=2, precision="int8", cache_dir=tmp_path))
    int8.load()
    assert int8.artifact_dir != engine.artifact_dir
    info = int8.describe()
    assert info["gguf"]["outtype"] == "q8_0" and info["precision_settings"]["llamacpp.kv_cache_type"] == "F32"
    assert info["gguf"]["bytes"] < engine.describe()["gguf"]["bytes"] / 2  # 8.5 bits a weight, not 32
    v = info["verification"]
    assert v["reference"] == "torch-cpu fp32" and 0 <= v["exact"] <= v["cases"] == 6
    assert info["verified"] or "q8_0 weights" in v["reason"]
    assert len(int8.generate([5, 6, 7], 8, 8)) == 8
