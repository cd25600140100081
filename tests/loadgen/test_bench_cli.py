"""Bad input is refused with a clear message, exit 2, and nothing started or written."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadgen.bench import PRESETS, parser, resolve_settings, schedule
from loadgen.runners import RunnerError, choose_runner
from tests.loadgen.conftest import run_bench


@pytest.mark.parametrize("args, env, message", [
    (["--config", "tensorrt-cpu"], {}, "unknown configuration 'tensorrt-cpu'; valid configurations are: torch-cpu"),
    (["--config", "ov-cuda"], {}, "OpenVINO has no CUDA"),
    ([], {"REPS": "0"}, "REPS must be >= 1, got 0"),
    (["--reps", "two"], {}, "REPS must be an integer"),
    (["--warmup", "-1"], {}, "WARMUP (seconds) must be >= 0"),
    (["--prompts", "/nonexistent/prompts.jsonl"], {}, "neither a named set (paper) nor a readable JSONL file"),
    (["--model", "no-such-model"], {}, "unknown model 'no-such-model'"),
    ([], {"RUNNER": "docker", "WATTSERVE_IMAGE": "wattserve-no-such-image"}, "the docker runner needs"),
    (["--runner", "kubernetes"], {}, "unknown runner 'kubernetes'"),
    (["--preset", "fast"], {}, "unknown preset 'fast'"),
    (["--timeout", "0"], {}, "--timeout (seconds) must be > 0"),
    (["--max-new-tokens", "0"], {}, "--max-new-tokens must be >= 1"),
    (["--config", "torch-cuda"], {}, "no usable NVIDIA GPU"),
])
def test_bad_input_is_refused_before_anything_starts(tmp_path, args, env, message):
    if "torch-cuda" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU: torch-cuda is valid here")
    results = tmp_path / "results"
    r = run_bench(*args, "--results", str(results), timeout=120, **env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr
    assert not results.exists()  # no folder, no service, no Locust


def test_help_explains_the_variables_and_the_preset():
    text = parser().format_help()
    for word in ("CONFIG", "MODEL", "REPS", "WARMUP", "COOLDOWN", "PROMPTS", "RESULTS", "RUNNER", "--preset",
                 "--max-new-tokens", "interrupted", "exit status"):
        assert word in text


def args(*argv):
    return parser().parse_args(list(argv))


def test_defaults_env_preset_and_command_line_precedence():
    no_docker = lambda: (False, "no docker here")  # noqa: E731
    s = resolve_settings(args(), environ={}, probe_docker=no_docker)
    assert (s.configs, s.model, s.reps, s.warmup_s, s.cooldown_s, s.prompts.name, str(s.results)) == (
        ["torch-cpu", "onnx-cpu", "ov-cpu", "jit-cpu"], "tiny", 1, 5.0, 5.0, "paper", str(Path("results").resolve()))
    assert s.runner == "native" and "no docker here" in s.runner_reason
    s = resolve_settings(args("--preset", "paper"), environ={}, probe_docker=no_docker)
    assert (s.warmup_s, s.cooldown_s, s.reps) == (300.0, 300.0, 10) == tuple(
        float(PRESETS["paper"][k]) if k != "REPS" else int(PRESETS["paper"][k]) for k in ("WARMUP", "COOLDOWN", "REPS"))
    env = {"PRESET": "paper", "WARMUP": "10", "CONFIG": "onnx-cpu,ov-cpu", "REPS": "", "RUNNER": "native"}
    s = resolve_settings(args("--warmup", "2"), environ=env)
    assert (s.warmup_s, s.cooldown_s, s.reps, s.configs) == (2.0, 300.0, 10, ["onnx-cpu", "ov-cpu"])
    s = resolve_settings(args(), environ=env)
    assert s.warmup_s == 10.0  # environment beats the preset


def test_runs_are_interleaved_by_repetition():
    s = resolve_settings(args("--config", "torch-cpu,onnx-cpu", "--reps", "2", "--runner", "native"), environ={})
    assert schedule(s) == [(1, "torch-cpu"), (1, "onnx-cpu"), (2, "torch-cpu"), (2, "onnx-cpu")]


def test_runner_choice():  # the docker cases in full: tests/loadgen/test_docker_runner.py
    no_engine = lambda: (False, "no engine here")  # noqa: E731
    assert choose_runner("native")[0] == "native"
    assert choose_runner("auto", probe=no_engine, configs=["onnx-cpu"]) == ("native", "no engine here: using native")
    with pytest.raises(RunnerError, match="needs a Docker engine"):
        choose_runner("docker", probe=no_engine, configs=["onnx-cpu"])
