"""What the service hears while an engine generates: the first token's time, stop strings, a cancel.

Every engine speaks transformers' streamer protocol (``put`` the prompt, then each new token;
``end``) and asks ``should_stop()`` after each token (a transformers ``StoppingCriteria`` or the jit
loop's own check). The watcher turns the tokens into text pieces (only when someone needs them:
stop strings or a stream), cuts the text before the first stop string, and holds back the tail that
could still become one, so a stream never sends text that a later token turns into a stop. It knows
when a token is the last one (the limit, an end-of-sequence, a stop string), so a stream's last
token piece carries the finish reason without waiting for anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from services.inference.detokenize import IncrementalDetokenizer

MAX_STOP_SEQUENCES = 4  # as OpenAI's API
MAX_STOP_CHARS = 256


def first_stop(text: str, stops: list[str], start: int = 0) -> int | None:
    """Where the earliest stop string begins in ``text[start:]`` (None: no stop string in it)."""
    found = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(found) if found else None


def partial_stop(text: str, stops: list[str]) -> int:
    """How many trailing characters of ``text`` are the beginning of some stop string (held back)."""
    longest = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:k]):
                longest = k
                break
    return longest


#: ``on_text(piece, finish)``: finish is None until the last token's call, then "stop" | "eos" | "length"
TextListener = Callable[[str, "str | None"], None]


class GenerationWatcher:
    """A transformers-style streamer for one generation. ``on_text`` (if given) receives each piece of
    text as soon as it is certain (stop strings cut, the holdback released at the end), and exactly one
    call with the finish reason: the last token's (its piece may be empty, as an end-of-sequence's is).
    ``limit`` (new tokens at most) and ``eos_ids`` let it recognise the last token as it arrives;
    ``decode`` (the service's ids -> text) is needed only for stop strings or ``on_text``."""

    def __init__(self, decode: Callable[[list[int]], str] | None = None, stops: list[str] | None = None,
                 on_text: TextListener | None = None,
                 limit: int | None = None, eos_ids: set[int] | frozenset[int] = frozenset(),
                 ignore_eos: bool = False):
        self.stops = [s for s in (stops or []) if s]
        self.on_text = on_text
        self.limit, self.eos_ids, self.ignore_eos = limit, eos_ids, ignore_eos
        self.tokens = 0  # new tokens heard
        self.last_token: int | None = None
        self.finish: str | None = None  # set once the last token has been heard (or at end())
        self.detok = IncrementalDetokenizer(decode) if (self.stops or on_text) and decode else None
        self.puts = 0
        self.first_token_at: float | None = None  # epoch s, the service's clock
        self.last_token_at: float | None = None  # the latest new token's time (the last one's, once ended)
        self.stopped = False  # a stop string appeared
        self.cancelled = False  # the client went away
        self.text = ""  # the text so far, cut before a stop string
        self.sent = 0  # characters of text given to on_text
        self.longest_stop = max(map(len, self.stops), default=0)
        #: called once, on the serving thread, as the last token is heard (before the engine has returned)
        self.on_last_token: Callable[[], None] | None = None

    # -- the streamer protocol ---------------------------------------------------------------------
    def put(self, value) -> None:
        self.puts += 1
        if self.puts == 1:
            return  # the prompt
        self.last_token_at = time.time()
        if self.puts == 2:
            self.first_token_at = self.last_token_at
        if self.finish is not None:
            return
        ids = value.reshape(-1).tolist() if hasattr(value, "reshape") else list(value)
        for token in ids:
            self.tokens += 1
            self.last_token = int(token)
            if self.detok is not None and not self.stopped:  # the last token's piece waits for _finish
                self._add(self.detok.push(token), final=self._is_eos() or self._at_limit())
            reason = self._last_reason()
            if reason is not None:
                self._finish(reason)
                return

    def end(self) -> None:
        if self.finish is None:  # the engine ended for a reason the watcher did not see coming
            self._finish(self._last_reason() or ("eos" if self._is_eos() else "length"))

    def _is_eos(self) -> bool:
        return self.last_token in self.eos_ids and not self.ignore_eos

    def _last_reason(self) -> str | None:
        """Why the token just heard is the last one, or None while more can follow."""
        if self.stopped:
            return "stop"
        if self._is_eos():
            return "eos"
        if self._at_limit():
            return "length"
        return None

    def _at_limit(self) -> bool:
        return self.limit is not None and self.tokens >= self.limit

    def _finish(self, reason: str) -> None:
        self.finish = reason
        if self.on_last_token is not None:
            self.on_last_token()
        if self.detok is not None and not self.stopped:
            self._add(self.detok.flush(), final=True)
        if self.on_text is not None:
            self.on_text(self.text[self.sent:], reason)
            self.sent = len(self.text)

    def should_stop(self) -> bool:
        return self.stopped or self.cancelled

    def cancel(self) -> None:
        self.cancelled = True

    # -- text --------------------------------------------------------------------------------------
    def _add(self, piece: str, final: bool = False) -> None:
        if piece:
            start = max(0, len(self.text) - self.longest_stop + 1)
            self.text += piece
            cut = first_stop(self.text, self.stops, start) if self.stops else None
            if cut is not None:
                self.text, self.stopped = self.text[:cut], True
        if self.on_text is None or final or self.stopped:
            return  # the rest goes with the finish reason (_finish)
        ready = len(self.text) - partial_stop(self.text, self.stops)
        if ready > self.sent:
            piece, self.sent = self.text[self.sent:ready], ready
            self.on_text(piece, None)


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """The text before the first stop string, and whether there was one."""
    cut = first_stop(text, [s for s in stops if s])
    return (text, False) if cut is None else (text[:cut], True)
