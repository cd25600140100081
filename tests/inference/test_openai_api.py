"""The OpenAI surface over real HTTP on tiny (torch-cpu): unsupported fields refused by name, ignore_eos
honoured, seed accepted, /v1/models, /v1/chat/completions (a 400 for a tokenizer without a chat template)."""

from __future__ import annotations

import pytest

PROMPT = "def fibonacci(n):\n"


@pytest.fixture(scope="module")
def client(start_server):
    return start_server("torch-cpu").client


@pytest.mark.parametrize("field, value", [
    ("echo", True), ("logprobs", 1), ("logprobs", 0), ("best_of", 2), ("suffix", "\n    return x"),
    ("n", 2), ("stream", 1), ("temperature", 0.7),
])
def test_unsupported_fields_are_refused_by_name(client, field, value):
    r = client.post("/v1/completions", json={"prompt": PROMPT, field: value})
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    assert [e["loc"] for e in errors] == [["body", field]], errors
    if field in ("echo", "logprobs", "best_of", "suffix"):
        assert "not supported" in errors[0]["msg"] and field in errors[0]["msg"]


@pytest.mark.parametrize("field, value", [("echo", False), ("logprobs", None), ("best_of", 1), ("best_of", None),
                                          ("suffix", None), ("n", 1), ("seed", 1234), ("user", "someone")])
def test_defaults_and_harmless_fields_are_accepted(client, field, value):
    r = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 4, field: value})
    assert r.status_code == 200, r.text


def test_seed_changes_nothing_greedy(client):
    texts = {client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 12, "seed": s}).json()
             ["choices"][0]["text"] for s in (None, 1, 2**31)}
    assert len(texts) == 1


def test_ignore_eos_runs_past_end_of_sequence(client):
    from services.inference.equivalence import PAPER_PROMPTS, read_prompts

    for prompt in read_prompts(PAPER_PROMPTS):  # a prompt whose greedy continuation ends with EOS
        body = client.post("/v1/generate", json={"prompt": prompt}).json()
        if body["finish_reason"] == "eos":
            break
    else:
        pytest.skip("no paper prompt ends with EOS on tiny")
    room = 128 - body["prompt_tokens"]
    plain = client.post("/v1/completions", json={"prompt": prompt, "max_tokens": room}).json()
    assert plain["usage"]["completion_tokens"] == body["completion_tokens"] < room
    forced = client.post("/v1/completions", json={"prompt": prompt, "max_tokens": room, "ignore_eos": True}).json()
    assert forced["usage"]["completion_tokens"] == room and forced["choices"][0]["finish_reason"] == "length"


def test_models_lists_the_served_model(client):
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    assert [(m["id"], m["object"], m["owned_by"]) for m in body["data"]] == [("tiny", "model", "wattserve")]
    assert isinstance(body["data"][0]["created"], int)


def test_chat_without_a_template_is_a_clear_400(client):
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and "chat template" in r.json()["detail"]
    bad = client.post("/v1/chat/completions", json={"messages": []})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "messages"]
    wrong = client.post("/v1/chat/completions", json={"model": "other", "messages": [{"role": "user", "content": "x"}]})
    assert wrong.status_code == 404


def test_max_completion_tokens_is_max_tokens(client):
    """OpenAI's newer name (AIPerf sends it on /v1/completions too): the same limit, never silently the default."""
    body = client.post("/v1/completions", json={"prompt": PROMPT, "max_completion_tokens": 5, "ignore_eos": True})
    assert body.status_code == 200 and body.json()["usage"]["completion_tokens"] == 5, body.text
    same = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 5, "max_completion_tokens": 5,
                                                "ignore_eos": True})
    assert same.json()["choices"][0]["text"] == body.json()["choices"][0]["text"]
    clash = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 6, "max_completion_tokens": 5})
    assert clash.status_code == 422 and "disagree" in clash.text
    assert client.post("/v1/completions", json={"prompt": PROMPT, "max_completion_tokens": 0}).status_code == 422
    chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}],
                                                     "max_completion_tokens": 0})
    assert chat.status_code == 422 and chat.json()["detail"][0]["loc"] == ["body", "max_completion_tokens"]
