"""The jit engine generates exactly the torch engine's ids, and refuses artifacts it cannot trust."""

from __future__ import annotations

import json
import shutil

import pytest

from services.inference.configs import ServingConfig
from services.inference.engines import jit_engine
from services.inference.engines.base import EngineError, EngineSettings
from services.inference.engines.jit_engine import META_FILE, JitEngine
from services.inference.engines.torch_engine import TorchEngine

LONG = (
    "from typing import List\n\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
    '    """ Check if two numbers are closer to each other than threshold.\n    """\n'
    "    for idx, elem in enumerate(numbers):\n        for"
)
# (prompt, max_new_tokens, min_new_tokens): short and long prompts, runs that stop at EOS, runs
# cut by max_new_tokens, and ignore-EOS runs (min = max) past where EOS would have stopped them
CASES = [
    ("def", 100, 0),  # one token
    ("def", 100, 100),  # one token, ignore EOS
    ("def fibonacci(n):\n", 100, 0),
    ("import os\n", 20, 0),  # EOS straight away
    ("import os\n", 30, 30),
    ("class Stack:\n    def __init__(self):\n        self", 100, 0),
    ("    return", 37, 0),
    ('def is_prime(n):\n    """Return True if n is prime."""\n    if', 64, 0),
    ("x = [", 100, 0),
    ("x = [", 60, 20),  # EOS blocked for the first 20 only
    ("x = [", 100, 100),
    ("# sort a list\n", 1, 0),
    (LONG, 100, 0),
    ("def add(a, b):\n    return", 50, 50),
]


@pytest.fixture(scope="module")
def tokenizer(tiny):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny.path)


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return EngineSettings(threads=2, cache_dir=tmp_path_factory.mktemp("jit-cache"))


@pytest.fixture(scope="module")
def jit(tiny, settings):
    engine = JitEngine(tiny, ServingConfig.parse("jit-cpu"), settings)
    engine.load()
    return engine


@pytest.fixture(scope="module")
def torch_ref(tiny, settings):
    engine = TorchEngine(tiny, ServingConfig.parse("torch-cpu"), settings)
    engine.load()
    return engine


@pytest.mark.parametrize("prompt,max_new,min_new", CASES)
def test_same_ids_as_torch(jit, torch_ref, tokenizer, prompt, max_new, min_new):
    ids = tokenizer(prompt)["input_ids"]
    expected = torch_ref.generate(ids, max_new, min_new)
    got = jit.generate(ids, max_new, min_new)
    assert got == expected
    assert min_new <= len(got) <= max_new


def test_cases_cover_eos_and_one_token_prompt(torch_ref, tokenizer):
    assert len(tokenizer("def")["input_ids"]) == 1
    eos = torch_ref.model_obj.config.eos_token_id
    stopped = [torch_ref.generate(tokenizer(p)["input_ids"], n, m)[-1] == eos for p, n, m in CASES if m == 0]
    assert any(stopped) and not all(stopped)


def test_describe_and_metadata(jit):
    info = jit.describe()
    assert info["engine"] == "jit" and info["kv_cache"] is True
    assert info["verified"] is True
    assert info["attn_implementation"] in ("sdpa", "eager")
    assert info["traced_graphs"] == ["decode.pt", "prefill.pt"]
    meta = json.loads((jit.artifact_dir / META_FILE).read_text())
    assert meta["verified"] is True and meta["num_kv_tensors"] == 2 * 4  # tiny has 4 layers
    assert meta["context_length"] == 512


def _copy_artifact(jit, tiny, tmp_path) -> JitEngine:
    """A second engine whose cache holds a copy of ``jit``'s artifact, free to be damaged."""
    other = JitEngine(tiny, ServingConfig.parse("jit-cpu"), EngineSettings(threads=2, cache_dir=tmp_path))
    target = other.artifact_path()
    target.parent.mkdir(parents=True)
    shutil.copytree(jit.artifact_dir, target)
    return other


def test_unverified_artifact_is_refused(jit, tiny, tmp_path):
    engine = _copy_artifact(jit, tiny, tmp_path)
    meta_path = engine.artifact_path() / META_FILE
    meta = json.loads(meta_path.read_text())
    meta.update(verified=False, reason="traced greedy ids differ from eager generate")
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(EngineError, match="cannot be traced correctly for generation"):
        engine.load()


def test_corrupted_metadata_is_refused(jit, tiny, tmp_path):
    engine = _copy_artifact(jit, tiny, tmp_path)
    (engine.artifact_path() / META_FILE).write_text("{not json")
    with pytest.raises(EngineError, match="unreadable"):
        engine.load()


def test_verification_failure_is_recorded_and_refused(tiny, tmp_path, monkeypatch):
    """If the traced graphs disagree with eager generate, the build says so and load() refuses."""
    real = jit_engine.greedy_loop

    def off_by_one(*args, **kwargs):
        ids = real(*args, **kwargs)
        return ids[:-1] + [(ids[-1] + 1) % 2048]

    monkeypatch.setattr(jit_engine, "greedy_loop", off_by_one)
    engine = JitEngine(tiny, ServingConfig.parse("jit-cpu"), EngineSettings(threads=2, cache_dir=tmp_path))
    meta = json.loads((engine.prepare(progress=lambda _: None) / META_FILE).read_text())
    assert meta["verified"] is False
    assert [a["attn_implementation"] for a in meta["attempts"]] == ["sdpa", "eager"]
    assert all(a["mismatches"] for a in meta["attempts"])
    with pytest.raises(EngineError, match="tiny cannot be traced correctly"):
        engine.load()


def test_prompt_beyond_context_is_refused(jit):
    with pytest.raises(EngineError, match="context length"):
        jit.generate([1] * 500, 20)
