"""Incremental detokenization: text pieces as tokens arrive, whose concatenation is the text.

Decoding one token at a time is wrong for most tokenizers (a byte-level token can hold half a UTF-8
character; SentencePiece drops a token's leading space when it is decoded alone), and decoding every
id again at each step costs O(n²). So each step decodes a short window: the ids since the last
emitted piece plus the ids of the piece before them as context, and emits what the window adds to its context —
only once it no longer ends in an incomplete character (U+FFFD).
"""

from __future__ import annotations

from collections.abc import Callable

REPLACEMENT = "\ufffd"  # what a decoder yields for an incomplete UTF-8 sequence


class IncrementalDetokenizer:
    """``push(token_id) -> piece`` (possibly ""), ``flush() -> rest``; ``text`` is everything emitted.
    ``decode`` is the whole-text decode (ids -> text, special tokens skipped: the service's
    ``decode``), so the pieces add up to it."""

    def __init__(self, decode: Callable[[list[int]], str]):
        self._decode = decode
        self.ids: list[int] = []
        self.prefix = 0  # ids[prefix:read]: already emitted, decoded again as context
        self.read = 0
        self.text = ""

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        before = self._decode(self.ids[self.prefix:self.read])
        after = self._decode(self.ids[self.prefix:])
        if len(after) <= len(before) or after.endswith(REPLACEMENT):
            return ""  # nothing new yet, or a character still incomplete
        piece = after[len(before):]
        self.prefix, self.read = self.read, len(self.ids)
        self.text += piece
        return piece

    def flush(self) -> str:
        """What the last ids decode to even if incomplete (the end of generation)."""
        before = self._decode(self.ids[self.prefix:self.read])
        after = self._decode(self.ids[self.prefix:])
        piece = after[len(before):] if after.startswith(before) else ""
        self.prefix = self.read = len(self.ids)
        self.text += piece
        return piece
