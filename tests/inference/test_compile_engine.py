"""compile-cpu: compiled on the serving thread during warm-up, never again after it, the torch engine's
ids exactly; a missing compiler is one clear sentence naming the packages."""

from __future__ import annotations

import json
import sysconfig

import pytest

from services.inference.configs import ServingConfig
from services.inference.engines.base import EngineError, EngineSettings
from services.inference.engines.compile_engine import CompileEngine, toolchain_problem
from services.inference.engines.torch_engine import TorchEngine


def test_toolchain_present_here():
    assert toolchain_problem("cpu") is None


def test_missing_compiler_names_the_packages(tmp_path):
    msg = toolchain_problem("cpu", compilers=("/nonexistent/g++",))
    assert "no C++ compiler" in msg and "/nonexistent/g++" in msg and "g++ python3-dev" in msg
    assert "torch-cpu" in msg


def test_missing_python_headers_are_named(tmp_path):
    msg = toolchain_problem("cpu", compilers=("g++",), include_dir=str(tmp_path))
    assert "Python's headers are missing" in msg and str(tmp_path / "Python.h") in msg
    assert toolchain_problem("cpu", compilers=("g++",), include_dir=sysconfig.get_paths()["include"]) is None


def test_engine_refuses_before_compiling_without_a_compiler(tiny):
    from torch._inductor import config as inductor_config

    engine = CompileEngine(tiny, ServingConfig.parse("compile-cpu"), EngineSettings(threads=1))
    with inductor_config.patch({"cpp.cxx": (None, "/nonexistent/g++")}), pytest.raises(EngineError) as err:
        engine.load()
    assert "g++ python3-dev" in str(err.value) and "Traceback" not in str(err.value)
    assert not hasattr(engine, "model_obj")  # refused before loading or compiling anything


@pytest.fixture(scope="module")
def service(tiny, tmp_path_factory):
    from services.inference.service import InferenceService

    prompts = tmp_path_factory.mktemp("compile") / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"new_prompt": p}) + "\n" for p in ("def add(a, b):", "import os\n")))
    svc = InferenceService(ServingConfig.parse("compile-cpu"), tiny, EngineSettings(threads=2), warmup=1,
                           warmup_prompts=prompts)
    svc.load()
    yield svc
    svc.executor.shutdown()


@pytest.mark.slow  # the real compile: ~20 s with inductor's disk cache warm, ~110 s cold here
def test_compiled_in_warmup_and_recorded_in_info(service):
    info = service.info()
    details = info["engine_details"]
    assert details["engine"] == "compile" and details["verified"] is True
    assert details["compile"]["mode"] == "default" and details["compile"]["dynamic"] is True
    assert details["compile_seconds"] > 0 and details["compile"]["graphs_compiled"] >= 2  # prefill + decode
    assert details["compile"]["verification_prompt_tokens"][0] == 1  # the 1-token shapes are compiled too
    assert details["recompiles_after_compile"] == 0  # warm-up's own passes compiled nothing new
    print(f"\ncompile-cpu on tiny: compile {details['compile_seconds']} s, {details['compile']}")


NEW_LENGTHS = ("x", "def is_prime(n):\n    \"\"\"Return True if n is prime.\"\"\"\n    if n < 2:\n        return",
               "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n" * 4)


@pytest.mark.slow  # the real compile: ~20 s with inductor's disk cache warm, ~110 s cold here
def test_no_recompile_after_warmup_and_torchs_ids(service, tiny):
    torch_engine = TorchEngine(tiny, ServingConfig.parse("torch-cpu"), EngineSettings(threads=2))
    torch_engine.load()
    seen = set(service.info()["warmup"]["prompt_lengths"])
    for prompt in NEW_LENGTHS:
        ids = service.encode(prompt)
        assert len(ids) not in seen  # a prompt length warm-up never ran
        got = service.generate(prompt, max_new_tokens=24, ignore_eos=True).token_ids
        assert got == torch_engine.generate(ids, 24, 24)
    assert service.engine.recompiles_after_compile() == 0


@pytest.mark.slow  # the real compile: ~20 s with inductor's disk cache warm, ~110 s cold here
def test_the_recompile_count_can_fail(service):
    """The count is dynamo's graph count: any graph compiled after the pass shows (an eager-backend
    toy here, so the check costs nothing)."""
    import torch

    before = service.engine.recompiles_after_compile()
    torch.compile(lambda x: x * 3 + 1, backend="eager")(torch.ones(3))
    assert service.engine.recompiles_after_compile() == before + 1


@pytest.mark.slow  # the real compile: ~20 s with inductor's disk cache warm, ~110 s cold here
def test_mismatch_with_eager_is_refused(service):
    engine = service.engine
    saved = (engine.compile_record, engine._cases)
    case, want = engine._cases[0]
    engine.compile_record, engine._cases = None, [(case, [t + 1 for t in want])]
    try:
        with pytest.raises(EngineError, match="other greedy ids than eager torch"):
            engine.generate(case["input_ids"], 2)
    finally:
        engine.compile_record, engine._cases = saved
