"""The prompt encoder gives exactly the ids of tokenizer(text)["input_ids"], the text decoder exactly the text of
tokenizer.decode(ids, skip_special_tokens=True), and each falls back where it cannot."""

from __future__ import annotations

import pytest

from services.inference.tokens import AWKWARD_TEXTS, prompt_encoder, text_decoder
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


def test_the_fast_decoder_equals_decode_on_prompts_generations_and_special_tokens(tokenizer):
    texts = read_prompts(PAPER_PROMPTS) + workload_texts(HUMANEVAL)
    decode = text_decoder(tokenizer, texts[:10])
    assert decode.__name__ == "fast"
    eos = tokenizer.eos_token_id
    cases = [tokenizer(t)["input_ids"] for t in texts] + [[eos], [eos, eos], list(range(0, 400, 3)) + [eos, 50]]
    cases += [tokenizer("def f():\n  return '😀'")["input_ids"][:k] for k in range(1, 12)]  # cut inside a character
    for ids in cases:
        assert decode(ids) == tokenizer.decode(ids, skip_special_tokens=True), ids[:20]
    assert decode([eos]) == ""  # a special token is skipped, as in every answer's text


def test_a_decoder_difference_or_a_space_cleanup_falls_back_to_decode(tokenizer, caplog):
    class Differs:  # a fast tokenizer whose decode differs from its backend's on one token
        is_fast = True
        backend_tokenizer = tokenizer.backend_tokenizer
        all_special_ids = tokenizer.all_special_ids
        clean_up_tokenization_spaces = False

        def __call__(self, text):
            return tokenizer(text)

        def decode(self, ids, skip_special_tokens=False):
            text = tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
            return text + "!" if 77 in ids else text

    decode = text_decoder(Differs(), ["def f():"])
    assert decode.__name__ == "slow" and decode([77]).endswith("!")
    assert "decode differs from tokenizer.decode" in caplog.text

    class CleansUp(Differs):
        clean_up_tokenization_spaces = True

        def decode(self, ids, skip_special_tokens=False):
            return tokenizer.decode(ids, skip_special_tokens=skip_special_tokens).replace(" ,", ",")

    assert text_decoder(CleansUp(), ["def f():"]).__name__ == "slow"
