"""Bad input is refused with a clear message, exit 2, and nothing started or written."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadgen.bench import header, schedule
from loadgen.bench_settings import PRESETS, parser, resolve_settings
from loadgen.runners import RunnerError, choose_runner
from services.inference.configs import CPU_CONFIGS
from services.inference.variants import not_installed
from tests.loadgen.conftest import run_bench


@pytest.mark.parametrize("args, env, message", [
    (["--config", "tensorrt-cpu"], {}, "unknown configuration 'tensorrt-cpu'; valid configurations are: torch-cpu"),
    (["--config", "ov-cuda"], {}, "OpenVINO has no CUDA"),
    ([], {"REPS": "0"}, "REPS must be >= 1, got 0"),
    (["--reps", "two"], {}, "REPS must be an integer"),
    (["--warmup", "-1"], {}, "WARMUP (seconds) must be >= 0"),
    (["--prompts", "/nonexistent/prompts.jsonl"], {}, "neither a named set (paper, humaneval) nor a readable JSONL file"),
    (["--model", "no-such-model"], {}, "unknown model 'no-such-model'"),
    ([], {"RUNNER": "docker", "WATTSERVE_IMAGE": "wattserve-no-such-image"}, "the docker runner needs"),
    (["--runner", "kubernetes"], {}, "unknown runner 'kubernetes'"),
    (["--preset", "fast"], {}, "unknown preset 'fast'"),
    (["--timeout", "0"], {}, "--timeout (seconds) must be > 0"),
    (["--max-new-tokens", "0"], {}, "--max-new-tokens must be >= 1"),
    (["--stream"], {}, "--stream (STREAM=1) needs --max-new-tokens"),
    ([], {"STREAM": "1"}, "--stream (STREAM=1) needs --max-new-tokens"),
    (["--config", "torch-cuda"], {}, "no usable NVIDIA GPU"),
    # sensors: a choice this machine cannot satisfy says how to fix it
    (["--cpu-sensor", "turbo"], {}, "cpu sensor 'turbo': choose one of auto, rapl, energibridge, estimate"),
    ([], {"GPU_SENSOR": "cuda"}, "gpu sensor 'cuda': choose one of auto, nvml, nvidia-smi, dcgm=<URL>, none"),
    (["--cpu-sensor", "rapl"], {"WATTSERVE_POWERCAP_ROOT": "/nonexistent/powercap"},
     "cpu sensor rapl: no RAPL zone under /nonexistent/powercap"),
    (["--cpu-sensor", "energibridge", "--energibridge-bin", "/nonexistent/energibridge"], {},
     "cpu sensor energibridge: no EnergiBridge binary '/nonexistent/energibridge'"),
    (["--cpu-sensor", "rapl", "--tdp-watts", "65"], {}, "tdp_watts/idle_watts set the estimate"),
    ([], {"TDP_WATTS": "-5"}, "tdp_watts must be > 0"),
    (["--tdp-watts", "50", "--idle-watts", "60"], {}, "idle_watts (60) must not exceed tdp_watts (50)"),
    (["--gpu-sensor", "nvml"], {}, "gpu sensor nvml: NVML does not initialize here"),
    (["--gpu-sensor", "nvidia-smi"], {"WATTSERVE_NVIDIA_SMI": "/nonexistent/nvidia-smi"},
     "gpu sensor nvidia-smi: '/nonexistent/nvidia-smi' not found"),
    (["--gpu-sensor", "dcgm=localhost:9400"], {}, "dcgm= needs the http(s) URL"),
    (["--gpu-sensor", "dcgm=http://127.0.0.1:9/metrics"], {}, "gpu sensor dcgm: http://127.0.0.1:9/metrics does not answer"),
    (["--wall-meter", "http://127.0.0.1:9/netio.json"], {}, "wall meter: http://127.0.0.1:9/netio.json does not answer"),
    (["--wall-meter", "http://admin:s3cret@127.0.0.1:9/netio.json"], {}, "NETIO_USER / NETIO_PASSWORD, never on a command line"),
    (["--no-sensors", "--cpu-sensor", "estimate"], {}, "--no-sensors starts no sensor: drop it or the sensor option(s) --cpu-sensor"),
    (["--config", "jit-cpu,onnx-cpu", "--precision", "int8"], {},
     "jit-cpu@int8: engine 'jit' does not serve precision 'int8'; it serves: fp32"),
    (["--config", "onnx-cpu"], {"PRECISION": "int3"}, "unknown precision 'int3'"),
])
def test_bad_input_is_refused_before_anything_starts(tmp_path, args, env, message):
    if "torch-cuda" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU: torch-cuda is valid here")
    if "nvml" in args:
        from loadgen.local_exporters import nvml_usable

        if nvml_usable():
            pytest.skip("NVML works here: --gpu-sensor nvml is valid")
    results = tmp_path / "results"
    r = run_bench(*args, "--results", str(results), timeout=120, **env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr
    assert not results.exists()  # no folder, no service, no Locust
    assert "s3cret" not in r.stdout + r.stderr


def test_help_explains_the_variables_and_the_preset():
    text = parser().format_help()
    for word in ("CONFIG", "MODEL", "REPS", "WARMUP", "COOLDOWN", "PROMPTS", "RESULTS", "RUNNER", "--preset",
                 "--max-new-tokens", "interrupted", "exit status"):
        assert word in text
    for word in ("CPU_SENSOR", "GPU_SENSOR", "WALL_METER", "TDP_WATTS", "IDLE_WATTS", "ENERGIBRIDGE_BIN",
                 "--cpu-sensor", "--gpu-sensor", "--wall-meter", "--max-device-watts", "rapl", "energibridge",
                 "estimate", "nvidia-smi", "dcgm=<URL>", "ESTIMATED", "NETIO_PASSWORD"):
        assert word in text, word


def test_sensor_choices_resolve_on_this_machine(tmp_path):
    """Each choice checked against simulated hardware (a powercap tree, a dcgm-exporter, a NETIO) and
    what it resolves to; the environment (how make passes CPU_SENSOR=…) and the command line."""
    from tests.exporters.fakes import DcgmServer, NetioProfile, NetioServer, build_powercap
    import time

    no_docker = lambda: (False, "no docker here")  # noqa: E731
    root = build_powercap(tmp_path / "sys", [{"id": "intel-rapl:0", "name": "package-0", "range_uj": 2**32}])
    dcgm, netio = DcgmServer([100.0]), NetioServer(NetioProfile(t0=time.time()))
    try:
        s = resolve_settings(args(), environ={"WATTSERVE_POWERCAP_ROOT": str(root)}, probe_docker=no_docker)
        assert s.sensors.cpu == "auto" and s.sensors_resolved["cpu"] == "rapl"
        s = resolve_settings(args(), environ={}, probe_docker=no_docker)  # no powercap at its usual place here
        if not Path("/sys/class/powercap/intel-rapl:0/energy_uj").exists():
            assert s.sensors_resolved["cpu"] == "estimate"
        env = {"CPU_SENSOR": "estimate", "TDP_WATTS": "65", "IDLE_WATTS": "9", "GPU_SENSOR": f"dcgm={dcgm.url}",
               "WALL_METER": netio.url, "WATTSERVE_POWERCAP_ROOT": str(root)}
        s = resolve_settings(args(), environ=env, probe_docker=no_docker)
        assert (s.sensors.cpu, s.sensors.tdp_watts, s.sensors.idle_watts) == ("estimate", 65.0, 9.0)
        assert s.sensors_resolved == {"cpu": "estimate", "gpu": "dcgm", "wall": "netio"}
        assert s.sensors.describe()["gpu"] == f"dcgm={dcgm.url}"
        s = resolve_settings(args("--cpu-sensor", "rapl", "--gpu-sensor", "none", "--wall-meter", "none"),
                             environ={**env, "TDP_WATTS": "", "IDLE_WATTS": ""}, probe_docker=no_docker)
        assert s.sensors_resolved == {"cpu": "rapl", "gpu": None, "wall": None}
        assert resolve_settings(args("--no-sensors"), environ={}, probe_docker=no_docker).sensors is None
    finally:
        dcgm.close()
        netio.close()


def args(*argv):
    return parser().parse_args(list(argv))


def test_defaults_env_preset_and_command_line_precedence():
    no_docker = lambda: (False, "no docker here")  # noqa: E731
    s = resolve_settings(args(), environ={}, probe_docker=no_docker)
    assert (s.configs, s.model, s.reps, s.warmup_s, s.cooldown_s, s.prompts.name, str(s.results)) == (
        [c for c in CPU_CONFIGS if not_installed(c) is None], "tiny", 1, 5.0, 5.0, "paper", str(Path("results").resolve()))
    assert s.runner == "native" and "no docker here" in s.runner_reason
    s = resolve_settings(args("--preset", "paper"), environ={}, probe_docker=no_docker)
    assert (s.warmup_s, s.cooldown_s, s.reps) == (300.0, 300.0, 10) == tuple(
        float(PRESETS["paper"][k]) if k != "REPS" else int(PRESETS["paper"][k]) for k in ("WARMUP", "COOLDOWN", "REPS"))
    env = {"PRESET": "paper", "WARMUP": "10", "CONFIG": "onnx-cpu,ov-cpu", "REPS": "", "RUNNER": "native"}
    s = resolve_settings(args("--warmup", "2"), environ=env)
    assert (s.warmup_s, s.cooldown_s, s.reps, s.configs) == (2.0, 300.0, 10, ["onnx-cpu", "ov-cpu"])
    s = resolve_settings(args(), environ=env)
    assert s.warmup_s == 10.0  # environment beats the preset


def test_precision_makes_variants_from_the_environment_or_the_command_line():
    env = {"CONFIG": "onnx-cpu,ov-cpu@int4", "PRECISION": "fp32,int8", "RUNNER": "native"}
    s = resolve_settings(args(), environ=env)
    assert s.configs == ["onnx-cpu", "onnx-cpu@int8", "ov-cpu@int4"]  # an item's own @precision is kept
    s = resolve_settings(args("--precision", "int8"), environ=env)  # the command line beats PRECISION
    assert s.configs == ["onnx-cpu@int8", "ov-cpu@int4"]
    assert sorted(schedule(s)) == [(1, "onnx-cpu@int8"), (1, "ov-cpu@int4")]  # what the runs are started as


def test_runs_are_interleaved_by_repetition_and_randomized_from_a_recorded_seed():
    configs = ["torch-cpu", "onnx-cpu", "ov-cpu", "jit-cpu"]
    base = ("--config", ",".join(configs), "--reps", "6", "--runner", "native")
    fixed = resolve_settings(args(*base, "--fixed-order"), environ={})
    assert fixed.shuffle is None
    assert schedule(fixed) == [(rep, c) for rep in range(1, 7) for c in configs]
    drawn = [resolve_settings(args(*base), environ={}) for _ in range(2)]
    assert all(isinstance(s.shuffle, int) for s in drawn) and drawn[0].shuffle != drawn[1].shuffle  # drawn anew
    order = schedule(drawn[0])
    blocks = [[c for r, c in order if r == rep] for rep in range(1, 7)]
    assert all(sorted(b) == sorted(configs) for b in blocks)  # every configuration once per repetition
    assert len({tuple(b) for b in blocks}) > 1  # a fresh permutation per repetition, not one fixed order
    again = resolve_settings(args(*base, "--shuffle", str(drawn[0].shuffle)), environ={})
    assert schedule(again) == order  # the printed seed repeats the order
    assert f"seed {drawn[0].shuffle}" in header(drawn[0], len(order))
    with pytest.raises(SystemExit):
        args(*base, "--fixed-order", "--shuffle", "3")


def test_runner_choice():  # the docker cases in full: tests/loadgen/test_docker_runner.py
    no_engine = lambda: (False, "no engine here")  # noqa: E731
    assert choose_runner("native")[0] == "native"
    assert choose_runner("auto", probe=no_engine, configs=["onnx-cpu"]) == ("native", "no engine here: using native")
    with pytest.raises(RunnerError, match="needs a Docker engine"):
        choose_runner("docker", probe=no_engine, configs=["onnx-cpu"])
