"""The HTTP contract, over real HTTP (uvicorn in a subprocess), for every CPU configuration on tiny."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.inference.configs import CPU_CONFIGS
from services.inference.equivalence import PAPER_PROMPTS, read_prompts
from tests.conftest import ROOT, free_port

PROMPTS = read_prompts(PAPER_PROMPTS)
RESPONSE_KEYS = {"text", "token_ids", "prompt_tokens", "completion_tokens", "started_at", "finished_at",
                 "latency_s", "config", "model"}


@pytest.fixture(scope="module")
def torch_outputs(start_server):
    """The torch-cpu reference for all 164 paper prompts (greedy, max_length 128)."""
    server = start_server("torch-cpu")
    return [server.client.post("/v1/generate", json={"prompt": p}).json()["token_ids"] for p in PROMPTS]


@pytest.mark.parametrize("config", CPU_CONFIGS)
def test_generate_contract(start_server, config):
    server = start_server(config)
    before = time.time()
    r = server.client.post("/v1/generate", json={"prompt": PROMPTS[0]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == RESPONSE_KEYS
    assert body["config"] == config and body["model"] == "tiny"
    assert body["prompt_tokens"] + body["completion_tokens"] <= 128  # study default counts the prompt
    assert body["completion_tokens"] == len(body["token_ids"]) > 0
    assert before <= body["started_at"] <= body["finished_at"] <= time.time()
    assert body["latency_s"] == pytest.approx(body["finished_at"] - body["started_at"])
    assert isinstance(body["text"], str) and body["text"]


@pytest.mark.parametrize("config", CPU_CONFIGS)
def test_limits_and_ignore_eos(start_server, config):
    server = start_server(config)
    body = server.client.post("/v1/generate", json={"prompt": "def f(x):", "max_new_tokens": 7,
                                                    "ignore_eos": True}).json()
    assert body["completion_tokens"] == 7
    body = server.client.post("/v1/generate", json={"prompt": "def f(x):", "max_length": 10}).json()
    assert body["prompt_tokens"] + body["completion_tokens"] <= 10


@pytest.mark.parametrize("config", CPU_CONFIGS)
def test_info_describes_the_configuration(start_server, config):
    info = start_server(config).client.get("/info").json()
    engine, provider = config.split("-")
    assert (info["config"], info["engine"], info["provider"], info["device"]) == (config, engine, provider, "cpu")
    assert info["model"]["name"] == "tiny" and len(info["model"]["content_hash"]) == 64
    assert info["precision"] == "fp32" and info["kv_cache"] is True
    assert info["threads"] >= 1 and info["state"] == "ready"
    assert "torch" in info["versions"] and "python" in info["versions"]


@pytest.mark.parametrize("config", [c for c in CPU_CONFIGS if c != "torch-cpu"])
def test_outputs_identical_to_torch_on_all_paper_prompts(start_server, torch_outputs, config):
    server = start_server(config)
    outputs = [server.client.post("/v1/generate", json={"prompt": p}).json()["token_ids"] for p in PROMPTS]
    mismatched = [i for i, (a, b) in enumerate(zip(outputs, torch_outputs)) if a != b]
    assert len(outputs) == 164
    assert mismatched == [], f"{config} differs from torch-cpu on prompts {mismatched[:10]}"


BAD_BODIES = [
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "empty"),
    ({"prompt": 42}, "prompt"),
    ({"prompt": None}, "prompt"),
    ({}, "prompt"),
    ({"prompt": "x", "max_new_tokens": -1}, "max_new_tokens"),
    ({"prompt": "x", "max_new_tokens": 0}, "max_new_tokens"),
    ({"prompt": "x", "max_new_tokens": 10**9}, "at most"),
    ({"prompt": "x", "max_new_tokens": "5"}, "max_new_tokens"),
    ({"prompt": "x", "max_length": 100000}, "context"),
    ({"prompt": "x", "max_new_tokens": 5, "max_length": 50}, "not both"),
    ({"prompt": "x", "ignore_eos": "yes"}, "ignore_eos"),
    ({"prompt": "x", "temperature": 0.7}, "temperature"),  # unknown field: strict
    ({"prompt": "def f(): pass\n" * 2000}, "context"),
    ({"prompt": "a" * 200_000}, "context"),
]


@pytest.mark.parametrize("body, mentions", BAD_BODIES)
def test_bad_input_is_a_clear_4xx(start_server, body, mentions):
    server = start_server("torch-cpu")
    r = server.client.post("/v1/generate", json=body)
    assert r.status_code == 422, r.text
    assert mentions in r.text
    assert server.client.get("/health").status_code == 200


@pytest.mark.parametrize("raw", [b"{bad json", b"\xff\xfe\x00garbage", b"[1, 2]", b'"just a string"', b""])
def test_malformed_bodies_are_refused(start_server, raw):
    server = start_server("torch-cpu")
    r = server.client.post("/v1/generate", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert server.client.get("/ready").status_code == 200


def test_concurrent_requests_never_mix(start_server):
    server = start_server("onnx-cpu")
    prompts = PROMPTS[:12]
    sequential = [server.client.post("/v1/generate", json={"prompt": p}).json() for p in prompts]
    with ThreadPoolExecutor(6) as pool:
        concurrent = list(pool.map(lambda p: server.client.post("/v1/generate", json={"prompt": p}).json(), prompts))
    assert [c["token_ids"] for c in concurrent] == [s["token_ids"] for s in sequential]
    assert [c["text"] for c in concurrent] == [s["text"] for s in sequential]


def test_openai_completions_subset(start_server):
    server = start_server("ov-cpu")
    r = server.client.post("/v1/completions", json={"model": "tiny", "prompt": PROMPTS[3], "max_tokens": 9,
                                                    "temperature": 0, "top_p": 1, "user": "x"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["model"] == "tiny"
    assert body["usage"]["completion_tokens"] <= 9
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    same = server.client.post("/v1/generate", json={"prompt": PROMPTS[3], "max_new_tokens": 9}).json()
    assert body["choices"][0]["text"] == same["text"]
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    for bad, status in [({"prompt": "x", "temperature": 0.8}, 422), ({"prompt": "x", "stream": True}, 422),
                        ({"prompt": "x", "n": 2}, 422), ({"prompt": "x", "model": "gpt-4"}, 404)]:
        assert server.client.post("/v1/completions", json=bad).status_code == status, bad


def test_metrics_are_parseable_and_count(start_server):
    server = start_server("jit-cpu")
    def scrape():
        text = server.client.get("/metrics").text
        return {s.name + json.dumps(s.labels, sort_keys=True): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}
    key = 'wattserve_requests_total{"endpoint": "/v1/generate", "status": "200"}'
    before = scrape()
    server.client.post("/v1/generate", json={"prompt": "def f(x):", "max_new_tokens": 5, "ignore_eos": True})
    server.client.post("/v1/generate", json={"prompt": ""})
    after = scrape()
    assert after[key] - before.get(key, 0) == 1
    assert after["wattserve_generated_tokens_total{}"] - before.get("wattserve_generated_tokens_total{}", 0) == 5
    assert after['wattserve_request_errors_total{"endpoint": "/v1/generate", "kind": "invalid"}'] >= 1
    assert after["wattserve_ready{}"] == 1
    info = [k for k, v in after.items() if k.startswith("wattserve_model_info") and v == 1]
    assert len(info) == 1 and '"config": "jit-cpu"' in info[0] and '"kv_cache": "true"' in info[0]
    assert any(k.startswith("wattserve_request_latency_seconds_bucket") for k in after)


def test_ready_is_503_until_loaded_while_health_answers(tiny):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "services.inference", "--config", "torch-cpu", "--model", "tiny",
                             "--port", str(port), "--warmup", "100", "--log-level", "warning"], cwd=ROOT)
    try:
        seen = set()
        deadline = time.time() + 300
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
            while time.time() < deadline and 200 not in seen:
                try:
                    if c.get("/health").status_code == 200:
                        r = c.get("/ready")
                        seen.add(r.status_code)
                        if r.status_code == 503:
                            assert c.post("/v1/generate", json={"prompt": "x"}).status_code == 503
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        assert seen == {503, 200}
    finally:
        proc.terminate()
        proc.wait(15)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.inference", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("config, message", [
    ("ov-cuda", "OpenVINO has no CUDA"),
    ("tensorrt-cpu", "valid configurations are: torch-cpu"),
])
def test_bad_configs_fail_at_start(config, message):
    r = run_cli("--config", config, "--model", "tiny")
    assert r.returncode == 2 and message in r.stderr


def test_cuda_config_without_gpu_fails_clearly():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a usable GPU")
    r = run_cli("--config", "onnx-cuda", "--model", "tiny")
    assert r.returncode == 2 and "no usable NVIDIA GPU" in r.stderr


def test_unknown_model_fails_at_start():
    r = run_cli("--config", "torch-cpu", "--model", "no such model")
    assert r.returncode == 2 and "unknown model" in r.stderr and "shape:" in r.stderr


def test_a_model_that_cannot_load_exits_non_zero(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 1}))
    r = run_cli("--config", "torch-cpu", "--model", str(tmp_path), "--port", str(free_port()))
    assert r.returncode == 1 and "could not load" in r.stderr

