"""One generation: the validated request as a job on the serving thread, and what it produced.

A job is made (and refused, InvalidRequest) before anything runs, so a stream can still answer 422
before its first byte; it then runs on the service's single serving thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from services.inference.watcher import GenerationWatcher

if TYPE_CHECKING:
    from services.inference.service import InferenceService


class InvalidRequest(ValueError):
    """A request the service refuses (HTTP 422), with a message that says what is wrong; ``field``
    names the request field at fault (None: the combination)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    prompt_tokens: int
    completion_tokens: int
    started_at: float
    finished_at: float
    finish_reason: str  # "stop" (a stop string), "eos" (the model's end of sequence), "length" (the limit)
    first_token_at: float | None = None  # when the first new token existed (engine streamer), epoch s
    last_token_at: float | None = None  # when the last one did

    @property
    def decode_s(self) -> float | None:
        """Decode time: first token to last token (0 for a single token; None without a first token)."""
        if self.first_token_at is None or self.last_token_at is None:
            return None
        return self.last_token_at - self.first_token_at

    @property
    def openai_finish_reason(self) -> str:
        """OpenAI says "stop" for a stop string and for end-of-sequence alike."""
        return "length" if self.finish_reason == "length" else "stop"

    @property
    def latency_s(self) -> float:
        return self.finished_at - self.started_at


T = TypeVar("T")


def _nothing() -> None:
    """A wake-up's callback: the event loop's thread wakes to run it and finds nothing else to do yet."""


class GenerationJob:
    """One validated request, run on the service's serving thread (``submit``). Jobs run one at a time,
    in the order submitted: the single serving thread is the service's one-at-a-time lock, held by a
    job until its generation ends, whether it streams or not. ``cancel`` (a client gone) ends the
    generation at the next token, or skips it if it has not started."""

    def __init__(self, service: InferenceService, ids: list[int], new: int, ignore_eos: bool,
                 watcher: GenerationWatcher):
        self.service, self.ids, self.new, self.ignore_eos, self.watcher = service, ids, new, ignore_eos, watcher

    def submit(self) -> Future:
        """A Future of the Generation (it raises what the engine raised)."""
        return self.service.executor.submit(self.run)

    def run_on_loop(self, then: Callable[[Generation], T]) -> asyncio.Future[T]:
        """``then(generation)``, run on the serving thread right after the job, awaited on the running event
        loop (services/inference/serving_thread.py). The loop is woken as the last token is heard, so that
        its thread is awake (not waking from idle: ~0.1 ms on a small VM, docs/latency.md) when the result
        reaches it a moment later."""
        loop = asyncio.get_running_loop()
        self.watcher.on_last_token = lambda: loop.call_soon_threadsafe(_nothing)
        return self.service.executor.run_on_loop(lambda: then(self.run()))

    def cancel(self) -> None:
        self.watcher.cancel()

    @property
    def cancelled(self) -> bool:
        return self.watcher.cancelled

    def run(self) -> Generation:
        service, watcher = self.service, self.watcher
        started = time.time()
        out = [] if watcher.cancelled else service.engine.generate(
            self.ids, self.new, self.new if self.ignore_eos else 0, streamer=watcher,
            should_stop=watcher.should_stop if (watcher.stops or watcher.on_text) else None)
        finished = time.time()
        if watcher.stopped:
            reason = "stop"
        elif out and out[-1] in service.eos_ids and not self.ignore_eos:
            reason = "eos"
        else:
            reason = "length"
        return Generation(
            text=watcher.text if watcher.stops else service.decode(out),
            token_ids=out,
            prompt_tokens=len(self.ids),
            completion_tokens=len(out),
            started_at=started,
            finished_at=finished,
            finish_reason=reason,
            first_token_at=watcher.first_token_at,
            last_token_at=watcher.last_token_at,
        )
