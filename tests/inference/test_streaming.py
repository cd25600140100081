"""SSE streaming on /v1/completions over real HTTP, every CPU engine on tiny: the same text and tokens as
without streaming, in one chunk per piece, the last token's chunk carrying finish_reason, the usage chunk,
[DONE]; refusals before the first byte; a client that disconnects mid-stream frees the serving thread
(the engine stops early, nothing leaks, the next request is served)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.inference.configs import CPU_CONFIGS
from services.inference.equivalence import PAPER_PROMPTS, read_prompts

PROMPT = read_prompts(PAPER_PROMPTS)[0]


def sse_events(response: httpx.Response) -> list:
    """The ``data:`` payloads of an event stream, parsed (``[DONE]`` kept as the string)."""
    events, data = [], []
    for line in response.iter_lines():
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line == "" and data:
            payload = "\n".join(data)
            events.append(payload if payload == "[DONE]" else json.loads(payload))
            data = []
    return events


def stream(client: httpx.Client, body: dict) -> tuple[httpx.Response, list]:
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        return r, (sse_events(r) if r.status_code == 200 else json.loads(r.read()))


def scrape(client: httpx.Client) -> dict[str, float]:
    return {s.name + json.dumps(s.labels, sort_keys=True): s.value
            for f in text_string_to_metric_families(client.get("/metrics").text) for s in f.samples}


@pytest.mark.parametrize("config", CPU_CONFIGS)
def test_every_engine_streams_what_it_generates(start_server, config):
    client = start_server(config).client
    for body in ({"prompt": PROMPT, "max_tokens": 30, "ignore_eos": True},   # ends at the limit
                 {"prompt": PROMPT, "max_tokens": 30, "stop": ["\n"]},        # ends at a stop string
                 {"prompt": PROMPT, "max_tokens": 60}):                      # may end with end-of-sequence
        whole = client.post("/v1/completions", json=body).json()
        r, events = stream(client, {**body, "stream_options": {"include_usage": True}})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert events[-1] == "[DONE]"
        *chunks, usage = events[:-1]
        assert usage["choices"] == [] and usage["usage"] == whole["usage"], usage
        assert len(chunks) > 1 and all(c["object"] == "text_completion" and c["id"] == usage["id"] for c in chunks)
        assert "".join(c["choices"][0]["text"] for c in chunks) == whole["choices"][0]["text"], body
        reasons = [c["choices"][0]["finish_reason"] for c in chunks]
        assert reasons[:-1] == [None] * (len(chunks) - 1) and reasons[-1] == whole["choices"][0]["finish_reason"]
        # one chunk per token at most (a token that completes no character adds none), the last one's included
        assert len(chunks) <= whole["usage"]["completion_tokens"]
        if body.get("ignore_eos"):
            assert reasons[-1] == "length" and whole["usage"]["completion_tokens"] == 30
            assert chunks[-1]["choices"][0]["text"], "the last token's own piece carries finish_reason"
        if body.get("stop"):
            assert reasons[-1] == "stop" and "\n" not in "".join(c["choices"][0]["text"] for c in chunks)


def test_stream_without_usage_and_refusals_before_the_first_byte(start_server):
    client = start_server("torch-cpu").client
    r, events = stream(client, {"prompt": PROMPT, "max_tokens": 5})
    assert events[-1] == "[DONE]" and all("usage" not in e for e in events[:-1]), events
    r, body = stream(client, {"prompt": PROMPT, "max_tokens": 100000})
    assert r.status_code == 422 and body["detail"][0]["loc"] == ["body", "max_tokens"], body
    r, body = stream(client, {"prompt": PROMPT, "model": "someone-else"})
    assert r.status_code == 404
    no_stream = client.post("/v1/completions", json={"prompt": PROMPT, "stream_options": {"include_usage": True}})
    assert no_stream.status_code == 422 and "stream_options" in no_stream.text
    for bad in (1, "true", None):
        assert client.post("/v1/completions", json={"prompt": PROMPT, "stream": bad}).status_code == 422, bad


def test_continuous_usage_stats_count_the_tokens_so_far(start_server):
    """vLLM's stream_options.continuous_usage_stats (guidellm asks for it): every chunk carries the usage so far."""
    client = start_server("torch-cpu").client
    r, events = stream(client, {"prompt": PROMPT, "max_tokens": 20, "ignore_eos": True,
                                "stream_options": {"include_usage": True, "continuous_usage_stats": True}})
    *chunks, final, done = events
    counts = [c["usage"]["completion_tokens"] for c in chunks]
    assert counts == sorted(counts) and counts[0] >= 1 and counts[-1] == final["usage"]["completion_tokens"] == 20
    assert {c["usage"]["prompt_tokens"] for c in chunks} == {final["usage"]["prompt_tokens"]}
    assert all(c["usage"]["total_tokens"] == c["usage"]["prompt_tokens"] + c["usage"]["completion_tokens"]
               for c in chunks)
    _, plain = stream(client, {"prompt": PROMPT, "max_tokens": 20, "ignore_eos": True,
                               "stream_options": {"include_usage": True}})
    assert all(c["usage"] is None for c in plain[:-2]) and plain[-2]["usage"] == final["usage"]


def test_first_chunk_arrives_before_the_generation_ends(start_server):
    """Flushed as produced: the first piece reaches the client long before the last one."""
    client = start_server("torch-cpu").client
    with client.stream("POST", "/v1/completions", json={"prompt": PROMPT, "max_tokens": 60, "ignore_eos": True,
                                                        "stream": True}) as r:
        t0, times = time.perf_counter(), []
        for line in r.iter_lines():
            if line.startswith("data:"):
                times.append(time.perf_counter() - t0)
    assert len(times) > 50
    assert times[0] < 0.5 * times[-2], (times[0], times[-2])  # [DONE] excluded


def threads(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


@pytest.mark.parametrize("config", CPU_CONFIGS)
def test_a_client_that_disconnects_frees_the_serving_thread(start_server, config):
    server = start_server(config)
    client = server.client
    room = 512 - len(client.post("/v1/generate", json={"prompt": PROMPT, "max_new_tokens": 1}).json()["token_ids"]) - 20
    long = {"prompt": PROMPT, "max_tokens": room, "ignore_eos": True, "stream": True}

    def disconnect_after(chunks: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as other:  # its own connection, closed mid-stream
            with other.stream("POST", "/v1/completions", json=long) as r:
                lines = r.iter_lines()
                got = 0
                while got < chunks:
                    got += next(lines).startswith("data:")

    disconnect_after(2)  # warms the thread pools, so the thread count below compares like with like
    per_token = client.post("/v1/generate", json={"prompt": PROMPT, "max_new_tokens": 40,
                                                  "ignore_eos": True}).json()["latency_s"] / 40
    time.sleep(0.5)
    before, threads_before = scrape(client), threads(server.proc.pid)
    disconnect_after(3)
    gone = time.time()
    deadline = time.monotonic() + 30
    while (after := scrape(client))["wattserve_requests_in_flight{}"] and time.monotonic() < deadline:
        time.sleep(0.05)
    key = '{"endpoint": "/v1/completions", "status": "499"}'
    assert after["wattserve_requests_total" + key] - before.get("wattserve_requests_total" + key, 0) == 1
    assert after["wattserve_requests_in_flight{}"] == 0
    spent = after["wattserve_generated_tokens_total{}"] - before["wattserve_generated_tokens_total{}"]
    print(f"\n{config}: client gone after 3 chunks; the engine made {spent:.0f} of {room} tokens")
    assert 3 <= spent < room / 2, f"the engine went on generating after the client left: {spent} of {room} tokens"
    # the serving thread is free: the next request starts long before the abandoned one would have ended
    nxt = client.post("/v1/generate", json={"prompt": PROMPT, "max_new_tokens": 8, "ignore_eos": True}).json()
    assert nxt["completion_tokens"] == 8
    assert nxt["started_at"] - gone < room * per_token / 2, (nxt["started_at"] - gone, room * per_token)
    assert threads(server.proc.pid) == threads_before, "a thread outlived the stream"


def test_chat_streams_where_the_tokenizer_has_a_template(tiny, tmp_path):
    """tiny with a chat template added (a local model folder): chat.completion.chunk events, the role first,
    the same content and tokens as the non-streamed chat completion."""
    import shutil

    from tests.conftest import Server

    folder = tmp_path / "tiny-chat"
    shutil.copytree(tiny.load_source, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = ("{% for m in messages %}# {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}def {% endif %}")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    server = Server("torch-cpu", str(folder), "--warmup", "1")
    try:
        body = {"messages": [{"role": "user", "content": "a function that adds two numbers"}], "max_tokens": 24}
        whole = server.client.post("/v1/chat/completions", json=body)
        assert whole.status_code == 200, whole.text
        whole = whole.json()
        with server.client.stream("POST", "/v1/chat/completions",
                                  json={**body, "stream": True, "stream_options": {"include_usage": True}}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = sse_events(r)
    finally:
        server.stop()
    assert events[-1] == "[DONE]"
    first, *chunks, usage = events[:-1]
    assert all(e["object"] == "chat.completion.chunk" for e in events[:-1])
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len(chunks) > 1
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == whole["choices"][0]["message"]["content"]
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == whole["choices"][0]["finish_reason"]
    assert usage["choices"] == [] and usage["usage"] == whole["usage"]


@pytest.mark.parametrize("stops, limit, eos_at, finish", [
    (None, 8, None, "length"),     # the 8th token's own piece carries the finish
    (None, 50, 5, "eos"),          # end-of-sequence: its (empty) piece carries it
    (["fib"], 50, None, "stop"),   # a stop string: the text before it, then the finish
    (["):\n  "], 50, None, "stop"),  # a stop spanning tokens, its beginning held back until it is certain
])
def test_the_watcher_tags_the_last_token_as_it_arrives(tiny, stops, limit, eos_at, finish):
    from transformers import AutoTokenizer

    from services.inference.tokens import text_decoder
    from services.inference.watcher import GenerationWatcher

    tokenizer = AutoTokenizer.from_pretrained(tiny.load_source)
    text = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
    ids = tokenizer(text)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos_at is not None:
        ids = ids[:eos_at - 1] + [eos] + ids[eos_at:]
    heard: list[tuple[str, str | None]] = []
    decode = text_decoder(tokenizer)
    watcher = GenerationWatcher(decode, stops, on_text=lambda piece, f: heard.append((piece, f)), limit=limit,
                                eos_ids={eos})
    woken: list[int] = []  # the event loop's early wake-up (generation.py run_on_loop): once, at the last token
    watcher.on_last_token = lambda: woken.append(watcher.tokens)
    watcher.put([1, 2, 3])  # the prompt
    for n, token in enumerate(ids, 1):
        watcher.put([token])
        assert (watcher.finish is not None) == (heard[-1][1] is not None if heard else False)
        assert woken == ([n] if watcher.finish is not None else [])
        if watcher.finish is not None:
            break
    watcher.end()
    assert woken == [n]
    assert [f for _, f in heard] == [None] * (len(heard) - 1) + [finish], heard
    streamed = "".join(piece for piece, _ in heard)
    whole = tokenizer.decode(ids[:n], skip_special_tokens=True)
    if finish == "stop":
        assert streamed == whole[:whole.index(stops[0])] and n < len(ids)
    else:
        assert streamed == whole and n == (limit if finish == "length" else eos_at)
    if finish == "length":
        assert heard[-1][0], "the last token's piece is not split off into an empty chunk"
