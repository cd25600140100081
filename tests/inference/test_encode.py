"""The prompt encoder gives exactly the ids of tokenizer(text)["input_ids"], and falls back where it cannot."""

from __future__ import annotations

import pytest

from services.inference.encode import AWKWARD_TEXTS, prompt_encoder
from services.inference.equivalence import PAPER_PROMPTS, read_prompts
from services.inference.service import workload_texts

HUMANEVAL = PAPER_PROMPTS.with_name("humaneval-prompts.jsonl")


@pytest.fixture(scope="module")
def tokenizer(tiny):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny.load_source)


def test_the_fast_encoder_equals_call_on_every_paper_and_humaneval_prompt(tokenizer):
    texts = read_prompts(PAPER_PROMPTS) + workload_texts(HUMANEVAL)
    assert len(texts) == 164 + 164
    encode = prompt_encoder(tokenizer, texts[:10])
    assert encode.__name__ == "fast"  # tiny's tokenizer is a fast one: the Rust encode is used
    for text in [*texts, *AWKWARD_TEXTS, "<|endoftext|>def f():", "\u00a0\u2028x"]:
        assert encode(text) == tokenizer(text)["input_ids"], text[:60]


def test_a_difference_or_a_slow_tokenizer_falls_back_to_call(tokenizer, caplog):
    class Differs:  # a fast tokenizer whose backend encodes one text otherwise than __call__
        is_fast = True
        backend_tokenizer = tokenizer.backend_tokenizer

        def __call__(self, text):
            ids = tokenizer(text)["input_ids"]
            return {"input_ids": ids + [0] if "odd" in text else ids}

    encode = prompt_encoder(Differs(), ["def even():", "def odd():"])
    assert encode.__name__ == "slow" and encode("def odd():") == tokenizer("def odd():")["input_ids"] + [0]
    assert "differs from tokenizer.__call__" in caplog.text

    class Slow:
        is_fast = False

        def __call__(self, text):
            return {"input_ids": [len(text)]}

    assert prompt_encoder(Slow(), ["x"])("abc") == [3]


def test_a_backend_that_truncates_is_not_used(tokenizer):
    class Truncating:
        is_fast = True

        class backend_tokenizer:  # noqa: N801 - stands for a tokenizers.Tokenizer with truncation set
            truncation = {"max_length": 4}
            padding = None

        def __call__(self, text):
            return tokenizer(text)

    assert prompt_encoder(Truncating(), ["def f():"]).__name__ == "slow"
