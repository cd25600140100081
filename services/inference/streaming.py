"""A generation as it happens: text pieces from the serving thread to the event loop, as SSE events.

The job runs on the service's serving thread (one at a time, as every generation); each piece the
watcher releases crosses to the event loop through ``call_soon_threadsafe`` and is sent at once. When
the client goes away, Starlette cancels the response's iterator: the job is cancelled, the engine stops
at its next token and the serving thread is free for the next request (nothing waits for a reader).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future

from fastapi.sse import format_sse_event
from starlette.responses import StreamingResponse

from services.inference.generation import Generation, GenerationJob

DONE_EVENT = format_sse_event(data_str="[DONE]")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy holds the events back
_END = object()


def sse(payload: dict) -> bytes:
    """One ``data: {json}`` event."""
    return format_sse_event(data_str=json.dumps(payload, separators=(",", ":")))


class TokenStream:
    """The pieces of one job's text, in order: ``async for piece, finish, tokens in stream.pieces()``; the
    last carries the finish reason ("stop" | "eos" | "length"); ``tokens`` is how many tokens the engine had
    made when the piece was released. ``generation`` is set once the job ended.
    ``on_start()`` is called when the job is submitted, ``on_end(future, job)`` on the serving thread when
    it ended, cancelled or not (metrics): a stream never iterated never counts as started."""

    def __init__(self, on_start: Callable[[], None] | None = None,
                 on_end: Callable[[Future, GenerationJob], None] | None = None):
        self.on_start, self.on_end = on_start, on_end
        self.job: GenerationJob | None = None
        self.generation: Generation | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._future: Future | None = None
        self._queue: asyncio.Queue | None = None

    def on_text(self, piece: str, finish: str | None) -> None:
        """The watcher's listener (serving thread)."""
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (piece, finish, self.job.watcher.tokens))

    async def pieces(self) -> AsyncIterator[tuple[str, str | None, int]]:
        self._loop, self._queue = asyncio.get_running_loop(), asyncio.Queue()
        if self.on_start is not None:
            self.on_start()
        future = self.job.submit()

        def ended(f: Future) -> None:
            try:
                if self.on_end is not None:
                    self.on_end(f, self.job)
            finally:  # the reader is woken whatever the accounting did
                self._loop.call_soon_threadsafe(self._queue.put_nowait, _END)

        future.add_done_callback(ended)
        self._future = future
        try:
            while (item := await self._queue.get()) is not _END:
                yield item
            self.generation = future.result()  # the engine's exception, if it failed
        finally:
            self.close()

    def close(self) -> None:
        """Cancel the job unless it has ended (the client went away, or nobody reads any more)."""
        if self._future is not None and not self._future.done():
            self.job.cancel()


class EventStreamResponse(StreamingResponse):
    """``text/event-stream`` of ``events``; however the response ends (finished, client gone, server
    stopping), the stream's job is cancelled at once, not when the iterator is garbage-collected."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], stream: TokenStream):
        super().__init__(events, headers=SSE_HEADERS)
        self.stream = stream

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.stream.close()
