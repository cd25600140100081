"""A prompt's token ids, exactly as ``tokenizer(text)["input_ids"]`` gives them, at less cost per request.

A fast (Rust) tokenizer's ``__call__`` wraps one ``encode`` in transformers' batch machinery (padding and
truncation strategies, a BatchEncoding, conversions): on tiny about 0.2 ms of Python per request, more
than the encoding itself, paid before every generation. The Rust tokenizer's own ``encode`` with the
special tokens added gives the same ids, provided truncation and padding are off in it, as ``__call__``
leaves them. That is checked when the encoder is made, on the texts given (the warm-up prompts) and a few
awkward ones; any difference, or a slow tokenizer, and ``__call__`` itself is used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

log = logging.getLogger("wattserve.inference")

#: texts that exercise what could differ: whitespace runs, tabs and newlines, non-ASCII, an emoji, a lone space
AWKWARD_TEXTS = ("def f(x):\n\treturn  x  \n\n", "  # naïve café — Σ 😀\n", " ", "x" * 300)


def prompt_encoder(tokenizer, texts: Iterable[str] = ()) -> Callable[[str], list[int]]:
    """``text -> token ids`` equal to ``tokenizer(text)["input_ids"]`` on ``texts`` and AWKWARD_TEXTS."""

    def slow(text: str) -> list[int]:
        return tokenizer(text)["input_ids"]

    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
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
