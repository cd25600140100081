"""A model's own Python code never runs unless the user opts in, and safetensors are what gets loaded
(and downloaded) wherever a model has them: pickled .bin weights can run code when unpickled."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest

from services.inference.configs import ServingConfig
from services.inference.engines import EngineSettings
from services.models import resolve as resolve_module
from services.models.resolve import download_patterns, resolve
from tests.conftest import ROOT, free_port


def model_with_code(folder: Path, marker: Path) -> Path:
    """A local model folder whose config needs its own Python module, which leaves ``marker`` if run."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "wattserve-probe",
        "auto_map": {"AutoConfig": "configuration_probe.ProbeConfig",
                     "AutoModelForCausalLM": "modeling_probe.ProbeModel"},
    }))
    (folder / "configuration_probe.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('the model code ran')\n"
        "from transformers import PretrainedConfig\n\n\n"
        "class ProbeConfig(PretrainedConfig):\n    model_type = 'wattserve-probe'\n")
    (folder / "modeling_probe.py").write_text("raise ImportError('no model here, only the probe')\n")
    return folder


def serve_once(model: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.inference", "--config", "torch-cpu", "--model", str(model),
                           "--port", str(free_port()), "--log-level", "warning", "--warmup", "0", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in __import__("os").environ.items() if k != "WATTSERVE_TRUST_REMOTE_CODE"})


def test_a_models_own_code_never_runs_unless_opted_in(tmp_path):
    marker = tmp_path / "ran"
    model = model_with_code(tmp_path / "probe-model", marker)
    r = serve_once(model)
    assert r.returncode == 1 and "could not load" in r.stderr, r.stderr[-2000:]
    assert "--trust-remote-code" in r.stderr, r.stderr[-2000:]  # the refusal says how to opt in
    assert not marker.exists(), "the model's Python code ran without --trust-remote-code"
    # the same folder with the opt-in: the code runs (so the probe above could have caught it)
    r = serve_once(model, "--trust-remote-code")
    assert marker.exists(), r.stderr[-2000:]


class Called(Exception):
    pass


@pytest.fixture
def spy(monkeypatch):
    """Replace the from_pretrained entry points of transformers and optimum: record their kwargs, stop."""
    calls: list[tuple[str, dict]] = []

    def patch(owner, label: str) -> None:
        def fake(*args, **kwargs):
            calls.append((label, kwargs))
            if label == "AutoTokenizer" and sum(c[0] == label for c in calls) == 1:
                return object()  # the service's first load: go on to its AutoConfig
            raise Called(label)

        monkeypatch.setattr(owner, "from_pretrained", fake)

    import transformers
    from optimum.intel import OVModelForCausalLM
    from optimum.onnxruntime import ORTModelForCausalLM

    patch(transformers.AutoModelForCausalLM, "AutoModelForCausalLM")
    patch(transformers.AutoTokenizer, "AutoTokenizer")
    patch(transformers.AutoConfig, "AutoConfig")
    patch(ORTModelForCausalLM, "ORTModelForCausalLM")
    patch(OVModelForCausalLM, "OVModelForCausalLM")
    return calls


@pytest.mark.parametrize("opted_in", [False, True], ids=["default", "opted-in"])
def test_trust_remote_code_reaches_every_loader_as_given(spy, tmp_path, tiny, opted_in):
    """resolve() defaults to False, and every engine and the service pass exactly that to transformers
    and optimum (explicitly: None would let transformers prompt or guess)."""
    from services.inference.engines import engine_class
    from services.inference.service import InferenceService

    spec = resolve(str(tiny.path), trust_remote_code=True) if opted_in else resolve(str(tiny.path))
    assert spec.trust_remote_code is opted_in
    settings = EngineSettings(threads=1, cache_dir=tmp_path)
    config = ServingConfig.parse("torch-cpu")
    attempts = {
        "service": lambda: InferenceService(config, spec, settings, warmup=0).load(),
        "torch": lambda: engine_class("torch")(spec, config, settings).load(),
        "jit": lambda: engine_class("jit")(spec, config, settings)._load_eager(None),
        "onnx": lambda: engine_class("onnx")(spec, ServingConfig.parse("onnx-cpu"), settings).prepare(print),
        "ov": lambda: engine_class("ov")(spec, ServingConfig.parse("ov-cpu"), settings).prepare(print),
    }
    for name, attempt in attempts.items():
        with pytest.raises(Called):
            attempt()
    assert [label for label, _ in spy] == ["AutoTokenizer", "AutoConfig", "AutoModelForCausalLM",
                                          "AutoModelForCausalLM", "ORTModelForCausalLM", "OVModelForCausalLM"]
    for label, kwargs in spy:
        assert kwargs.get("trust_remote_code", "missing") is opted_in, (label, kwargs)
    for label, kwargs in spy[2:4]:  # the eager loads: safetensors preferred (None) or required (True), never off
        assert kwargs.get("use_safetensors") in (None, True), kwargs


@pytest.fixture(scope="module")
def weights_both_ways(tiny, tmp_path_factory):
    """tiny with model.safetensors as built, plus a pytorch_model.bin whose weights are all shifted by 1."""
    import torch
    from safetensors.torch import load_file

    folder = tmp_path_factory.mktemp("both") / "tiny-both"
    shutil.copytree(tiny.path, folder)
    assert (folder / "model.safetensors").is_file()
    state = load_file(folder / "model.safetensors")
    torch.save({k: v + 1 for k, v in state.items()}, folder / "pytorch_model.bin")
    return folder, state


def loaded_weights(folder: Path, tmp_path: Path) -> dict:
    from services.inference.engines import engine_class

    engine = engine_class("torch")(resolve(str(folder)), ServingConfig.parse("torch-cpu"),
                                   EngineSettings(threads=1, cache_dir=tmp_path))
    engine.load()
    return engine.model_obj.state_dict()


def test_safetensors_win_over_a_pickle_beside_them(weights_both_ways, tmp_path):
    import torch

    folder, state = weights_both_ways
    loaded = loaded_weights(folder, tmp_path)
    name = next(k for k in state if k in loaded and state[k].dtype.is_floating_point)
    assert torch.equal(loaded[name], state[name].float()), "the .bin was loaded although safetensors exist"
    # without the safetensors file the .bin is what loads: the check above can tell them apart
    only_bin = tmp_path / "only-bin"
    shutil.copytree(folder, only_bin)
    (only_bin / "model.safetensors").unlink()
    assert torch.equal(loaded_weights(only_bin, tmp_path)[name], state[name].float() + 1)


def test_hub_downloads_take_safetensors_and_no_code(monkeypatch, tmp_path):
    """materialize() on a hub model, against a local stand-in for the Hub that honours allow_patterns."""
    import huggingface_hub

    repo = {"config.json": "{}", "tokenizer.json": "{}", "vocab.txt": "", "model.safetensors": "s",
            "pytorch_model.bin": "pickle", "flax_model.msgpack": "f", "modeling_custom.py": "code", "README.md": ""}
    fetched: list[list[str]] = []

    def list_repo_files(self, repo_id, revision=None, **kw):
        return list(current)

    def snapshot_download(repo_id, revision=None, allow_patterns=None, **kw):
        fetched.append(list(allow_patterns))
        out = tmp_path / f"snapshot{len(fetched)}" / "0123abc"
        out.mkdir(parents=True)
        for f in current:
            if any(fnmatch(f, p) for p in allow_patterns):
                (out / f).write_text(repo[f])
        return str(out)

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", list_repo_files)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)

    def got(trust: bool) -> set[str]:
        spec = resolve("someorg/some-model", trust_remote_code=trust) if trust else resolve("someorg/some-model")
        return {p.name for p in resolve_module.materialize(spec, progress=lambda m: None).path.iterdir()}

    current = list(repo)
    assert got(False) == {"config.json", "tokenizer.json", "vocab.txt", "model.safetensors"}
    assert got(True) == {"config.json", "tokenizer.json", "vocab.txt", "model.safetensors", "modeling_custom.py"}
    current = [f for f in repo if f != "model.safetensors"]  # a repository with pickled weights only
    assert got(False) == {"config.json", "tokenizer.json", "vocab.txt", "pytorch_model.bin"}
    assert download_patterns(["model-00001-of-00002.safetensors", "pytorch_model.bin"]) == \
        ["*.json", "*.model", "*.txt", "*.tiktoken", "*.safetensors"]
