"""The HTTP contract, over real HTTP (uvicorn in a subprocess), for every CPU configuration on tiny."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.inference.configs import CPU_CONFIGS
from services.inference.equivalence import PAPER_PROMPTS, read_prompts
from tests.conftest import ROOT, Server, free_port

PROMPTS = read_prompts(PAPER_PROMPTS)
RESPONSE_KEYS = {"text", "token_ids", "prompt_tokens", "completion_tokens", "started_at", "finished_at",
                 "latency_s", "first_token_at", "decode_s", "finish_reason", "config", "model"}


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
    # every engine tells when its first new token existed: after the prefill, before the end
    assert body["started_at"] < body["first_token_at"] <= body["finished_at"]
    long = server.client.post("/v1/generate", json={"prompt": PROMPTS[0], "max_new_tokens": 40,
                                                    "ignore_eos": True}).json()
    ttft = long["first_token_at"] - long["started_at"]
    assert 0 < ttft < long["latency_s"] / 5  # one token of 40 (prefill included), not the whole request
    # decode time: first to last token, inside the request and after its first token, most of the request
    assert 0 < long["decode_s"] <= long["finished_at"] - long["first_token_at"]
    assert long["decode_s"] > long["latency_s"] / 2  # 39 of 40 steps, not the prefill
    one = server.client.post("/v1/generate", json={"prompt": PROMPTS[0], "max_new_tokens": 1}).json()
    assert one["completion_tokens"] == 1 and one["decode_s"] == 0.0  # one token: no decode


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
    # what the libraries report, not what was asked: TF32 off for fp32 (engines/precision.py)
    if engine in ("torch", "jit"):
        assert info["precision_settings"]["torch.backends.cuda.matmul.allow_tf32"] is False
        assert info["precision_settings"]["torch.float32_matmul_precision"] == "highest"
    if engine == "onnx":  # the session's own providers (onnx_engine.verify_session)
        assert info["execution_providers"][0] == "CPUExecutionProvider"
        assert "CPUExecutionProvider" in info["provider_options"]


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


PROBE = {"prompt": "def fib(n):", "max_new_tokens": 6, "ignore_eos": True}
_PROBE_TOKENS: dict[str, list[int]] = {}


def probe_tokens(server) -> list[int]:
    """What the probe generated on ``server`` the first time (greedy: the same ever after, unless broken)."""
    if server.url not in _PROBE_TOKENS:
        _PROBE_TOKENS[server.url] = server.client.post("/v1/generate", json=PROBE).json()["token_ids"]
    return _PROBE_TOKENS[server.url]


def assert_still_serving(server) -> None:
    """The service answers /ready and generates what it generated before."""
    assert server.client.get("/ready").status_code == 200
    r = server.client.post("/v1/generate", json=PROBE)
    assert r.status_code == 200 and r.json()["token_ids"] == probe_tokens(server), r.text


MALFORMED = [
    (b"{bad json", "JSON decode error"),
    (b"\xff\xfe\x00garbage", "JSON decode error"),
    (b"[1, 2]", "must be a JSON object, got an array"),
    (b'"just a string"', "must be a JSON object, got a string"),
    (b"", "Field required"),
    (b"42", "must be a JSON object, got a number"),
    (b"null", "must be a JSON object, got null"),
    (b'{"prompt": "def f(x):', "Unterminated string"),            # truncated
    (b'{"prompt": "def f(x):", "max_new_tokens": 4', "Expecting"),  # truncated after a value
    (b'{"prompt": "\xff\xfe\xfa x"}', "not UTF-8"),                 # Latin-1 bytes, not UTF-8
    (b'{"prompt": "caf\xe9"}', "not UTF-8"),
    (b'{"prompt": "\\ud800"}', "unicode"),                            # a lone surrogate escape
    (b'{"prompt": "x", "max_new_tokens": NaN}', "max_new_tokens"),
    (b'{"prompt": "x", "max_new_tokens": Infinity}', "max_new_tokens"),
    (b'{"prompt": "x", "max_length": -Infinity}', "max_length"),
    (b'{"prompt": "x", "max_new_tokens": 5.0}', "valid integer"),
    (b'{"prompt": "x", "max_new_tokens": 1' + b"0" * 5000 + b"}", "too many digits"),
    (b'{"prompt": "x", "max_new_tokens": 1' + b"0" * 40 + b"}", "at most"),
    (b'{"prompt": "x", "ignore_eos": 1}', "ignore_eos"),
    (b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
]


@pytest.mark.parametrize("raw, mentions", MALFORMED, ids=[f"malformed{i}" for i in range(len(MALFORMED))])
def test_malformed_bodies_are_refused(start_server, raw, mentions):
    server = start_server("torch-cpu")
    probe_tokens(server)
    r = server.client.post("/v1/generate", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert mentions in r.text
    assert isinstance(r.json()["detail"], list)  # the one 422 shape, as the OpenAPI schema says
    assert_still_serving(server)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          None])
@pytest.mark.parametrize("endpoint", ["/v1/generate", "/v1/completions"])
def test_a_body_that_is_not_json_is_415(start_server, endpoint, content_type):
    server = start_server("torch-cpu")
    probe_tokens(server)
    headers = {"content-type": content_type} if content_type else {}
    r = server.client.post(endpoint, content=b'{"prompt": "def f(x):"}', headers=headers)
    assert r.status_code == 415, r.text
    assert "application/json" in r.json()["detail"] and (content_type or "no Content-Type") in r.json()["detail"]
    assert_still_serving(server)


def peak_rss_reset(pid: int) -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of ``pid``; False where this kernel does not allow it."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def test_oversized_bodies_are_413_before_they_are_read(start_server):
    """50 MB with a Content-Length and 20 MB streamed without one: 413 at once, memory untouched."""
    server = start_server("torch-cpu")
    probe_tokens(server)
    measured = peak_rss_reset(server.proc.pid)
    base = peak_rss(server.proc.pid)
    body = b'{"prompt": "' + b"def f(x): return x; " * 2_500_000 + b'"}'
    assert len(body) > 50_000_000
    t = time.monotonic()
    r = server.client.post("/v1/generate", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text[:300]
    assert time.monotonic() - t < 5
    assert f"{len(body)} bytes" in r.json()["detail"] and "at most 1048576 bytes" in r.json()["detail"]
    assert "--max-body-bytes" in r.json()["detail"]

    def stream():  # chunked: no Content-Length to refuse it by, the bytes are counted as they come
        yield b'{"prompt": "'
        for _ in range(400):
            yield b"a" * 50_000
        yield b'"}'

    t = time.monotonic()
    r = server.client.post("/v1/completions", content=stream(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text[:300]
    assert time.monotonic() - t < 5
    assert "more than 1048576 bytes" in r.json()["detail"]
    if measured:  # the service never held either body: its peak RSS rose by well under their sizes
        assert peak_rss(server.proc.pid) - base < 16 << 20, (peak_rss(server.proc.pid) - base) / 2**20
    assert_still_serving(server)
    metrics = server.client.get("/metrics").text
    assert 'wattserve_requests_total{endpoint="/v1/generate",status="413"}' in metrics


def test_a_body_just_under_the_limit_is_read_and_judged(start_server):
    """The limit refuses only what is over it: 1 MiB minus a little is a 422 about the prompt."""
    server = start_server("torch-cpu")
    body = json.dumps({"prompt": "x" * ((1 << 20) - 100)}).encode()
    assert len(body) <= 1 << 20
    r = server.client.post("/v1/generate", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "longer than the model's context" in r.text, r.text[:300]
    assert_still_serving(server)


def test_the_body_limit_is_a_setting(tiny):
    server = Server("torch-cpu", "tiny", "--max-body-bytes", "2048")
    try:
        # /v1/completions ignores unknown fields (as OpenAI clients need): padding that is read, not served
        ok = server.client.post("/v1/completions", json={"prompt": "def f(x):", "max_tokens": 2, "user": "u" * 1900})
        assert ok.status_code == 200, ok.text
        r = server.client.post("/v1/completions", json={"prompt": "def f(x):", "max_tokens": 2, "user": "u" * 2100})
        assert r.status_code == 413 and "at most 2048 bytes" in r.json()["detail"], r.text
    finally:
        server.stop()


def test_concurrent_requests_never_mix(start_server):
    server = start_server("onnx-cpu")
    prompts = PROMPTS[:12]
    sequential = [server.client.post("/v1/generate", json={"prompt": p}).json() for p in prompts]
    with ThreadPoolExecutor(6) as pool:
        concurrent = list(pool.map(lambda p: server.client.post("/v1/generate", json={"prompt": p}).json(), prompts))
    assert [c["token_ids"] for c in concurrent] == [s["token_ids"] for s in sequential]
    assert [c["text"] for c in concurrent] == [s["text"] for s in sequential]


def test_bad_requests_among_good_ones_disturb_nothing(start_server):
    """Valid prompts, malformed, oversized and non-JSON bodies, all at once: every valid answer is the
    one it gets alone, every bad one its own 4xx."""
    server = start_server("torch-cpu")
    prompts = PROMPTS[20:30]
    alone = [server.client.post("/v1/generate", json={"prompt": p, "max_new_tokens": 16}).json()["token_ids"]
             for p in prompts]
    json_type = {"content-type": "application/json"}
    bad = [(b'{"prompt": "\xff\xfe"}', json_type, 422), (b"{bad json", json_type, 422),
           (b'{"prompt": "' + b"a" * 3_000_000 + b'"}', json_type, 413),
           (b'{"prompt": "x"}', {"content-type": "text/plain"}, 415), (b"[]", json_type, 422)]
    jobs = [("good", i) for i in range(len(prompts))] + [("bad", i) for i in range(len(bad))] * 2
    random.Random(3).shuffle(jobs)

    def send(job):
        kind, i = job
        with httpx.Client(base_url=server.url, timeout=120) as c:  # one connection each: truly concurrent
            if kind == "good":
                r = c.post("/v1/generate", json={"prompt": prompts[i], "max_new_tokens": 16})
                return job, r.status_code, r.json().get("token_ids")
            raw, headers, _ = bad[i]
            return job, c.post("/v1/generate", content=raw, headers=headers).status_code, None

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, jobs))
    for (kind, i), status, tokens in results:
        if kind == "good":
            assert status == 200 and tokens == alone[i], (i, status)
        else:
            assert status == bad[i][2], (bad[i][0][:40], status)
    assert server.client.get("/ready").status_code == 200


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
    for bad, status in [({"prompt": "x", "temperature": 0.8}, 422), ({"prompt": "x", "stream_options": {"include_usage": True}}, 422),
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
    port = [] if "--port" in args else ["--port", str(free_port())]  # the port is claimed first: never 8000
    return subprocess.run([sys.executable, "-m", "services.inference", *args, *port], cwd=ROOT, capture_output=True,
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

