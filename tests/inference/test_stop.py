"""Stop sequences and finish_reason over real HTTP, on every CPU engine with tiny: the engine stops
early (a transformers StoppingCriteria, the jit loop's own check), the text ends before the stop
string, the token count counts what was generated."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from services.inference.configs import CPU_CONFIGS
from services.inference.equivalence import PAPER_PROMPTS, read_prompts
from services.inference.watcher import first_stop, partial_stop

PROMPT = read_prompts(PAPER_PROMPTS)[0]
LONG = {"prompt": PROMPT, "max_new_tokens": 40, "ignore_eos": True}


@pytest.fixture(scope="module")
def tokenizer(tiny):
    return AutoTokenizer.from_pretrained(tiny.load_source)


def tokens_to_stop(tokenizer, ids: list[int], stop: str) -> int:
    """How many tokens a generation needs until its text contains ``stop``."""
    return next(k for k in range(1, len(ids) + 1) if stop in tokenizer.decode(ids[:k], skip_special_tokens=True))


@pytest.mark.parametrize("config", CPU_CONFIGS)
def test_stop_cuts_text_and_stops_the_engine(start_server, tokenizer, config):
    client = start_server(config).client
    ref = client.post("/v1/generate", json=LONG).json()
    assert ref["finish_reason"] == "length" and ref["completion_tokens"] == 40
    text, ids = ref["text"], ref["token_ids"]
    newline = text.index("\n")
    # a stop string that spans several tokens, one that is a single character, and one never produced
    spanning = text[newline - 9:newline + 3]
    assert len(tokenizer(spanning)["input_ids"]) > 2
    for stop in (["\n"], spanning, ["never-generated", spanning], ["zzzz", "\n", spanning]):
        body = client.post("/v1/generate", json={**LONG, "stop": stop}).json()
        stops = [stop] if isinstance(stop, str) else stop
        cut = first_stop(text, stops)
        assert body["text"] == text[:cut], stop
        assert body["finish_reason"] == "stop"
        # the engine stopped at the token that completed the stop string, and counts every token it made
        first_hit = min(tokens_to_stop(tokenizer, ids, s) for s in stops if s in text)
        assert body["token_ids"] == ids[:first_hit] and body["completion_tokens"] == first_hit < 40
    absent = client.post("/v1/generate", json={**LONG, "stop": "never-generated"}).json()
    assert (absent["text"], absent["finish_reason"], absent["completion_tokens"]) == (text, "length", 40)


@pytest.mark.parametrize("config", CPU_CONFIGS)
def test_completions_stop_and_finish_reason(start_server, config):
    client = start_server(config).client
    ref = client.post("/v1/generate", json=LONG).json()["text"]
    body = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 40, "stop": ["\n"]}).json()
    choice = body["choices"][0]
    assert choice["text"] == ref[:ref.index("\n")] and choice["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] < 40
    body = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 5}).json()
    assert body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 5


def test_eos_is_reported_as_eos_and_as_openai_stop(start_server):
    client = start_server("torch-cpu").client
    prompts = read_prompts(PAPER_PROMPTS)
    # find a paper prompt whose greedy continuation ends with EOS within the study's limit
    for prompt in prompts:
        body = client.post("/v1/generate", json={"prompt": prompt}).json()
        if body["finish_reason"] == "eos":
            break
    else:
        pytest.skip("no paper prompt ends with EOS on tiny")
    assert body["prompt_tokens"] + body["completion_tokens"] < 128
    oai = client.post("/v1/completions", json={"prompt": prompt, "max_tokens": 128 - body["prompt_tokens"]}).json()
    assert oai["choices"][0]["finish_reason"] == "stop"
    assert oai["usage"]["completion_tokens"] == body["completion_tokens"]


@pytest.mark.parametrize("endpoint", ["/v1/generate", "/v1/completions"])
@pytest.mark.parametrize("stop, why", [
    (["a", "b", "c", "d", "e"], "at most 4"),
    ("", "at least 1 character"),
    ([""], "at least 1 character"),
    (["x" * 257], "at most 256 characters"),
    ([1], "valid string"),
    (7, "valid string"),
    ({"s": "x"}, "valid string"),
])
def test_bad_stop_is_refused_naming_the_field(start_server, endpoint, stop, why):
    client = start_server("torch-cpu").client
    r = client.post(endpoint, json={"prompt": PROMPT, "stop": stop})
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    assert all(e["loc"][:2] == ["body", "stop"] for e in errors)
    assert any(why in e["msg"] for e in errors), errors
    assert client.post(endpoint, json={"prompt": PROMPT, "stop": None}).status_code == 200
    assert client.post(endpoint, json={"prompt": PROMPT, "stop": []}).status_code == 200


def test_holdback_and_cut_helpers():
    assert first_stop("abc\ndef", ["\n"]) == 3 and first_stop("abc", ["x"]) is None
    assert first_stop("one two three", ["three", "two"]) == 4  # the earliest, not the first listed
    assert partial_stop("def f(x):\n  ", ["\n  return"]) == 3
    assert partial_stop("abc", ["x"]) == 0 and partial_stop("ab", ["abc"]) == 2
