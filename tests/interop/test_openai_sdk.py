"""The OpenAI Python SDK against the live service (torch-cpu, tiny): streamed and not, the same text and
completion-token count; stop=["\\n"]; models.list(); refusals arrive as the SDK's own errors."""

from __future__ import annotations

import time

import openai
import pytest

from services.inference.equivalence import PAPER_PROMPTS, read_prompts

pytestmark = pytest.mark.interop
PROMPT = read_prompts(PAPER_PROMPTS)[0]


@pytest.fixture(scope="module")
def sdk(start_server):
    server = start_server("torch-cpu")
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="not-checked", max_retries=0, timeout=120) as client:
        yield client


def streamed(sdk, **kw):
    t0 = time.perf_counter()
    chunks = list(sdk.completions.create(model="tiny", prompt=PROMPT, stream=True,
                                         stream_options={"include_usage": True}, **kw))
    return chunks, time.perf_counter() - t0


@pytest.mark.parametrize("extra", [{"extra_body": {"ignore_eos": True}}, {}], ids=["to-the-limit", "as-generated"])
def test_stream_and_non_stream_give_the_same_completion(sdk, extra):
    whole = sdk.completions.create(model="tiny", prompt=PROMPT, max_tokens=48, **extra)
    chunks, seconds = streamed(sdk, max_tokens=48, **extra)
    pieces = [c for c in chunks if c.choices]
    text = "".join(c.choices[0].text for c in pieces)
    print(f"\n{len(pieces)} chunks for {whole.usage.completion_tokens} tokens in {seconds:.2f} s")
    assert len(pieces) > 1
    assert text == whole.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert pieces[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in pieces[:-1])
    assert len({c.id for c in chunks}) == 1 and all(c.object == "text_completion" for c in chunks)


def test_stop_at_the_first_newline(sdk):
    full = sdk.completions.create(model="tiny", prompt=PROMPT, max_tokens=48, extra_body={"ignore_eos": True})
    text = full.choices[0].text
    assert "\n" in text, "the prompt's continuation must cross a line for this test to mean anything"
    stopped = sdk.completions.create(model="tiny", prompt=PROMPT, max_tokens=48, stop=["\n"])
    assert stopped.choices[0].text == text[:text.index("\n")]
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.usage.completion_tokens < full.usage.completion_tokens
    chunks, _ = streamed(sdk, max_tokens=48, stop=["\n"])
    assert "".join(c.choices[0].text for c in chunks if c.choices) == stopped.choices[0].text
    assert [c for c in chunks if c.choices][-1].choices[0].finish_reason == "stop"


def test_models_list_names_the_served_model(sdk):
    models = list(sdk.models.list())
    assert [(m.id, m.object, m.owned_by) for m in models] == [("tiny", "model", "wattserve")]
    assert sdk.completions.create(model=models[0].id, prompt=PROMPT, max_tokens=2).model == "tiny"


def test_refusals_are_the_sdks_errors(sdk):
    """A refusal is the SDK's exception for its status, its body naming the field (a 422's detail list)."""
    cases = [(openai.UnprocessableEntityError, "max_tokens",
              lambda: sdk.completions.create(model="tiny", prompt=PROMPT, max_tokens=100000, stream=True)),
             (openai.UnprocessableEntityError, "echo",
              lambda: sdk.completions.create(model="tiny", prompt=PROMPT, max_tokens=2, echo=True)),
             (openai.NotFoundError, "gpt-4o",
              lambda: sdk.completions.create(model="gpt-4o", prompt=PROMPT, max_tokens=2)),
             (openai.BadRequestError, "chat template",
              lambda: sdk.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                  stream=True))]
    for error, mention, call in cases:
        with pytest.raises(error) as caught:
            call()
        assert mention in str(caught.value.body) + str(caught.value), (error, caught.value.body)
