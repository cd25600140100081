"""A request's two tokenizer calls — prompt text to ids, generated ids to text — exactly as transformers
gives them, at less cost per request.

A fast (Rust) tokenizer's ``__call__`` wraps one ``encode`` in transformers' batch machinery (padding and
truncation strategies, a BatchEncoding, conversions): on tiny about 0.2 ms of Python per request, more
than the encoding itself, paid before every generation. The Rust tokenizer's own ``encode`` with the
special tokens added gives the same ids, provided truncation and padding are off in it, as ``__call__``
leaves them. Its ``decode`` is what ``tokenizer.decode`` calls too, which then only converts arguments and,
where the tokenizer asks for it, cleans up spaces: a fourth of the cost, paid after every generation (and
twice per token of a stream). Each is checked when it is made, on the texts given (the warm-up prompts), a
few awkward ones and, for decoding, every token alone; any difference, or a slow tokenizer, and
transformers' own call is used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

log = logging.getLogger("wattserve.inference")

#: texts that exercise what could differ: whitespace runs, tabs and newlines, non-ASCII, an emoji, a lone space
AWKWARD_TEXTS = ("def f(x):\n\treturn  x  \n\n", "  # naïve café — Σ 😀\n", " ", "x" * 300)
SINGLE_TOKENS_CHECKED = 65536  # decoding checks every id alone up to this vocabulary size (then a sample)


def _backend(tokenizer):
    return getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None


def prompt_encoder(tokenizer, texts: Iterable[str] = ()) -> Callable[[str], list[int]]:
    """``text -> token ids`` equal to ``tokenizer(text)["input_ids"]`` on ``texts`` and AWKWARD_TEXTS."""

    def slow(text: str) -> list[int]:
        return tokenizer(text)["input_ids"]

    backend = _backend(tokenizer)
    if backend is None:
        return slow
    slow(AWKWARD_TEXTS[0])  # __call__ turns truncation and padding off in the backend: as every request finds it
    if backend.truncation is not None or backend.padding is not None:
        log.info("tokenizer backend truncates or pads: prompts go through tokenizer.__call__")
        return slow

    def fast(text: str) -> list[int]:
        return backend.encode(text, add_special_tokens=True).ids

    for text in (*texts, *AWKWARD_TEXTS):
        if fast(text) != slow(text):
            log.warning("the Rust tokenizer's encode differs from tokenizer.__call__ on %r: prompts go "
                        "through tokenizer.__call__", text[:80])
            return slow
    return fast


def text_decoder(tokenizer, texts: Iterable[str] = ()) -> Callable[[list[int]], str]:
    """``token ids -> text`` equal to ``tokenizer.decode(ids, skip_special_tokens=True)`` on the ids of
    ``texts`` and AWKWARD_TEXTS (with the special tokens added), on every token alone (a sample of a
    vocabulary above SINGLE_TOKENS_CHECKED) and on every special token between two others."""

    def slow(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=True)

    backend = _backend(tokenizer)
    if backend is None or getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return slow  # a slow tokenizer, or one whose decode rewrites spaces after the backend's

    def fast(ids: list[int]) -> str:
        return backend.decode(ids, skip_special_tokens=True)

    vocab = backend.get_vocab_size(with_added_tokens=True)
    step = max(1, vocab // SINGLE_TOKENS_CHECKED)
    special = [int(i) for i in getattr(tokenizer, "all_special_ids", [])][:64]
    cases = [tokenizer(text)["input_ids"] for text in (*texts, *AWKWARD_TEXTS)]
    cases += [[i] for i in range(0, vocab, step)] + [[cases[0][0], s, cases[0][-1]] for s in special if cases[0]]
    for ids in cases:
        if fast(ids) != slow(ids):
            log.warning("the Rust tokenizer's decode differs from tokenizer.decode on %s: generated text goes "
                        "through tokenizer.decode", ids[:16])
            return slow
    return fast
