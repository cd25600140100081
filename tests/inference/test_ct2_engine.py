"""ct2-cpu: converted by CTranslate2's transformers converter in the prepare stage (atomic: a crash
leaves nothing that looks complete), verified against torch fp32 there and refused at fp32 when it
differs; int8 recorded as ct2 loaded it and served with its verdict; the streamer + should_stop
protocol token by token; an architecture ct2 cannot convert, and ct2-cuda without a GPU, refused in
one sentence. (Serving over HTTP, streaming and stop strings: the CPU_CONFIGS tests.)"""

from __future__ import annotations

import json
import shutil

import pytest

from services.inference.configs import ServingConfig
from services.inference.engines import EngineError, EngineSettings, engine_class
from services.inference.engines import ct2_engine
from services.models.cache import is_complete

CT2 = engine_class("ct2")


def ct2(model, cache_dir, precision="fp32", config="ct2-cpu"):
    return CT2(model, ServingConfig.parse(config), EngineSettings(threads=1, precision=precision, cache_dir=cache_dir))


@pytest.fixture(scope="module")
def engine(tiny, cache_dir):
    """ct2-cpu fp32 on tiny, prepared into the shared cache (the CPU_CONFIGS servers reuse it)."""
    built = ct2(tiny, cache_dir)
    built.load()
    return built


@pytest.fixture(scope="module")
def prompt_ids(tiny):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny.load_source)("def fibonacci(n):\n")["input_ids"]


def test_fp32_is_verified_against_torch_and_says_what_it_loaded(engine):
    verdict = engine.read_verdict()
    assert verdict["verified"] is True and verdict["exact"] == verdict["cases"] == 6
    assert verdict["reference"] == "torch-cpu fp32" and verdict["convert_seconds"] > 0
    assert engine.precision_settings["ctranslate2.compute_type"] == "float32"
    info = engine.describe()
    assert info["engine"] == "ct2" and info["verified"] is True and info["versions"]["ctranslate2"] == "4.8.5"
    assert (engine.artifact_dir / ct2_engine.MODEL_DIR / "model.bin").is_file() and is_complete(engine.artifact_dir)


class Heard:
    """A transformers-style streamer that records what it is told."""

    def __init__(self):
        self.puts, self.ends = [], 0

    def put(self, value):
        self.puts.append(list(value))

    def end(self):
        self.ends += 1


def test_streams_each_token_and_stops_when_asked(engine, prompt_ids):
    whole = engine.generate(prompt_ids, 30, 30)
    heard = Heard()
    assert engine.generate(prompt_ids, 30, 30, streamer=heard) == whole and len(whole) == 30
    assert heard.puts == [prompt_ids, *([t] for t in whole)] and heard.ends == 1  # the prompt, then one by one
    for k in (1, 7):
        heard, asked = Heard(), []
        got = engine.generate(prompt_ids, 30, 30, streamer=heard,
                              should_stop=lambda: asked.append(1) or len(asked) >= k)
        assert got == whole[:k] and len(asked) == k  # stopped at the token that said so, asked once per token
        assert heard.puts[1:] == [[t] for t in got]


def test_eos_is_kept_as_torch_keeps_it_and_min_new_tokens_blocks_it(engine, tiny):
    from transformers import AutoTokenizer

    from services.inference.engines.torch_engine import TorchEngine
    from services.inference.equivalence import PAPER_PROMPTS, read_prompts

    reference = TorchEngine(tiny, ServingConfig.parse("torch-cpu"), EngineSettings(threads=1))
    reference.load()
    tok = AutoTokenizer.from_pretrained(tiny.load_source)
    # the first paper prompt whose greedy continuation ends with EOS on tiny
    ids, want = next((ids, out) for ids in map(lambda p: tok(p)["input_ids"], read_prompts(PAPER_PROMPTS))
                     if (out := reference.generate(ids, 60)) and out[-1] == engine.eos[0])
    assert engine.generate(ids, 60) == want  # EOS included, as the torch engine returns it
    ignored = engine.generate(ids, 60, 60)
    assert ignored == reference.generate(ids, 60, 60) and len(ignored) == 60  # EOS blocked throughout
    assert engine.generate(ids, 0) == []


def test_a_streamer_that_raises_is_raised_and_the_engine_serves_on(engine, prompt_ids):
    class Broken(Heard):
        def put(self, value):
            super().put(value)
            if len(self.puts) == 4:
                raise RuntimeError("client gone mid-put")

    with pytest.raises(RuntimeError, match="client gone mid-put"):
        engine.generate(prompt_ids, 20, 20, streamer=Broken())
    assert len(engine.generate(prompt_ids, 5, 5)) == 5


def test_fp32_that_differs_from_torch_is_refused(tiny, cache_dir, tmp_path, engine):
    """A verdict of 'differs' (here written into a copy of the real artifact) refuses fp32 in one sentence."""
    copy = ct2(tiny, tmp_path)
    shutil.copytree(engine.artifact_dir, copy.artifact_path())
    verdict_file = copy.artifact_path() / ct2_engine.VERIFY_FILE
    verdict = json.loads(verdict_file.read_text())
    verdict.update(verified=False, exact=5, reason="CTranslate2's greedy ids differ from torch's in 1/6 cases")
    verdict_file.write_text(json.dumps(verdict))
    with pytest.raises(EngineError, match="does not reproduce torch's greedy tokens for tiny at fp32: "
                                          "CTranslate2's greedy ids differ"):
        copy.load()
    assert copy.generator is None


def test_int8_is_what_ct2_loaded_and_served_with_its_agreement(tiny, cache_dir, engine, prompt_ids):
    """int8 weights, loaded as ct2's int8 compute type; not required to equal torch fp32: its verdict
    (how many cases agree) is recorded and it serves."""
    int8 = ct2(tiny, cache_dir, "int8")
    assert int8.artifact_path() != engine.artifact_path()
    int8.load()
    assert int8.precision_settings["ctranslate2.compute_type"] == "int8_float32"  # as ct2 reports it on this CPU
    assert int8.precision_settings["ctranslate2.compute_type (requested)"] == "int8"
    verdict = int8.read_verdict()
    assert verdict["precision"] == "int8" and verdict["cases"] == 6 and 0 <= verdict["exact"] <= 6
    assert verdict["verified"] == (verdict["exact"] == 6) and ("reason" in verdict) != verdict["verified"]
    assert json.loads((int8.artifact_dir / "model" / "config.json").read_text())  # its own converted model
    assert len(int8.generate(prompt_ids, 12, 12)) == 12


def test_an_architecture_ct2_cannot_convert_is_refused_and_leaves_nothing(tmp_path, tiny):
    """A tiny Starcoder2 (a code model whose converter ct2 4.8.5 lacks), built here."""
    from transformers import AutoTokenizer, Starcoder2Config, Starcoder2ForCausalLM

    from services.models.resolve import ModelSpec

    folder = tmp_path / "starcoder2"
    Starcoder2ForCausalLM(Starcoder2Config(vocab_size=2048, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=2, num_key_value_heads=1)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny.load_source).save_pretrained(folder)
    model = ModelSpec(name="starcoder2-toy", kind="local", source=str(folder), path=folder, content_hash="toy")
    engine = ct2(model, tmp_path / "cache")
    with pytest.raises(EngineError, match=r"CTranslate2 4\.8\.5 cannot convert this architecture "
                                          r"\(model_type 'starcoder2', Starcoder2Config of starcoder2-toy\)"):
        engine.prepare(progress=lambda _: None)
    left = engine.artifact_path().parent
    assert [p.name for p in left.iterdir() if not p.name.endswith(".lock")] == []  # no folder, not even a temp one


def test_a_crash_after_conversion_leaves_no_artifact(tiny, tmp_path, monkeypatch):
    """Converted, then killed before the verdict: nothing under the artifact's name, nor a temp folder."""
    def crash(*args, **kwargs):
        assert any(tmp_path.rglob("model.bin")), "the conversion ran into the temporary folder"
        raise KeyboardInterrupt

    monkeypatch.setattr(ct2_engine, "torch_reference", crash)
    engine = ct2(tiny, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        engine.prepare(progress=lambda _: None)
    assert not engine.artifact_path().exists() and not any(tmp_path.rglob("model.bin"))


def test_ct2_cuda_without_a_gpu_is_refused_naming_the_cuda_major(tiny, tmp_path):
    import ctranslate2

    if ctranslate2.get_cuda_device_count():
        pytest.skip("this machine has a CUDA device")
    engine = ct2(tiny, tmp_path, config="ct2-cuda")
    with pytest.raises(EngineError, match="sees no CUDA device; the ctranslate2 4.8.5 wheel is built for CUDA 12"):
        engine.load()
    assert not engine.artifact_path().exists()  # refused before converting anything
    assert ct2(tiny, tmp_path, "int8", "ct2-cuda").compute_type == "int8_float16"
