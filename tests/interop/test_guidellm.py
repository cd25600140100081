"""guidellm (its own venv from the registry, cached) runs a synchronous profile of paper prompts against the
live service over /v1/completions with streaming; its own report says how many requests it completed and
their TTFT, ITL and latency."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from services.inference.equivalence import PAPER_PROMPTS, read_prompts
from tests.interop.venvs import RegistryUnreachable, tool_venv

pytestmark = pytest.mark.interop
VERSION = "0.8.1"
CONSTRAINTS = Path(__file__).with_name("constraints-guidellm.txt")
REQUESTS = 5
OUTPUT_TOKENS = 24


@pytest.fixture(scope="module")
def guidellm(cache_dir) -> Path:
    try:
        return tool_venv("guidellm", VERSION, "guidellm", CONSTRAINTS, cache_dir)
    except RegistryUnreachable as exc:
        pytest.skip(f"the package registry is unreachable, so guidellm cannot be installed: {exc}")


def test_guidellm_synchronous_profile_streams_and_times(start_server, guidellm, tiny, tmp_path):
    server = start_server("torch-cpu")
    data = tmp_path / "paper-prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "output_tokens_count": OUTPUT_TOKENS}) + "\n"
                            for p in read_prompts(PAPER_PROMPTS)[:REQUESTS]))
    report = tmp_path / "benchmarks.json"
    t0 = time.monotonic()
    run = subprocess.run(
        [str(guidellm), "run",
         "--backend", f"kind=openai_http,target={server.url},model=tiny,request_format=/v1/completions,"
                      "http2=false,stream=true",
         "--profile", "kind=synchronous", "--constraint", f"kind=max_requests,count={REQUESTS}",
         "--data", f"kind=json_file,path={data}",
         "--tokenizer", f"kind=huggingface_auto,model={tiny.load_source}",  # local: no hub
         "--output", f"kind=json,path={report}", "--disable-console-interactive"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.monotonic() - t0
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-6000:]
    bench = json.loads(report.read_text())["benchmarks"][0]
    m = bench["metrics"]
    ttft, itl = m["time_to_first_token_ms"]["successful"], m["inter_token_latency_ms"]["successful"]
    latency_ms = {k: v * 1000 for k, v in m["request_latency"]["successful"].items() if k in ("mean", "median")}
    print(f"\nguidellm {VERSION}: {m['request_totals']['successful']} requests in {seconds:.1f} s; TTFT median "
          f"{ttft['median']:.1f} ms, ITL median {itl['median']:.1f} ms, request latency median "
          f"{latency_ms['median']:.1f} ms; {m['request_streaming_iterations_count']['successful']['median']:.0f} "
          "stream iterations per request")
    assert m["request_totals"] == {"successful": REQUESTS, "errored": 0, "incomplete": 0, "total": REQUESTS}
    assert m["output_token_count"]["successful"]["median"] == OUTPUT_TOKENS  # the usage chunk, read by guidellm
    assert 0 < ttft["median"] < latency_ms["median"]
    assert 0 < itl["median"] < latency_ms["median"]
    for request in bench["requests"]["successful"]:  # each request streamed: its first token before its end
        timings = request["info"]["timings"]
        assert timings["request_start"] < timings["first_token_iteration"] < timings["last_token_iteration"]
        assert json.loads(request["request_args"])["stream"] is True
        assert 0 < request["time_to_first_token_ms"] < request["request_latency"] * 1000
