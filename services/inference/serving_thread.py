"""The service's one serving thread: every generation runs on it, one at a time, in the order submitted.

It is an Executor (``submit`` gives a concurrent Future: warm-up, streams, in-process callers), and it can
hand a result straight to an event loop (``run_on_loop``): the job's outcome is set on an asyncio future
by one ``call_soon_threadsafe`` from this thread, with no concurrent Future, condition variable or
callback chain between them. A request crosses threads twice (to this thread and back), and on a small
VM each crossing costs a thread wake-up and cold caches after the engine's work: keeping the hand-over
this short took ~0.1 ms off each request against a ThreadPoolExecutor (docs/latency.md).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future

log = logging.getLogger("wattserve.inference")

_STOP = object()


class ServingThread(Executor):
    """One daemon thread running submitted calls in order (``max_workers=1`` of a ThreadPoolExecutor,
    with a lighter hand-over). Started on first use."""

    def __init__(self, name: str = "wattserve-generate"):
        self.name = name
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._shutdown = False

    def _serve(self) -> None:
        while (item := self._jobs.get()) is not _STOP:
            fn, deliver = item
            try:
                result, error = fn(), None
            except BaseException as exc:  # handed to whoever waits, as a Future would
                result, error = None, exc
            try:
                deliver(result, error)
            except Exception:  # a hand-over that fails must not end the thread every later job waits on
                log.exception("handing over a serving-thread result failed")
            del item, fn, deliver, result, error  # nothing of this job is kept alive until the next one

    def submit(self, fn: Callable, /, *args, **kwargs) -> Future:
        """``fn(*args, **kwargs)`` on the serving thread; a Future of its result (or exception)."""
        future: Future = Future()

        def deliver(result, error) -> None:
            if not future.set_running_or_notify_cancel():
                return
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

        self._put(lambda: fn(*args, **kwargs), deliver)
        return future

    def run_on_loop(self, fn: Callable[[], object]) -> asyncio.Future:
        """``fn()`` on the serving thread, awaited on the running event loop: its result (or exception)
        is set on the returned asyncio future from the serving thread with one ``call_soon_threadsafe``."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._put(fn, lambda result, error: _hand_over(loop, future, result, error))
        return future

    def _put(self, fn: Callable[[], object], deliver: Callable[[object, BaseException | None], None]) -> None:
        with self._lock:  # nothing is queued behind the stop
            if self._shutdown:
                raise RuntimeError("the serving thread has been shut down")
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
                self._thread.start()
            self._jobs.put((fn, deliver))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new jobs; the ones queued still run, then the thread ends (joined if ``wait``)."""
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
            thread = self._thread
            if thread is not None:
                self._jobs.put(_STOP)
        if thread is not None and wait and thread is not threading.current_thread():
            thread.join()


def _hand_over(loop: asyncio.AbstractEventLoop, future: asyncio.Future, result, error) -> None:
    try:
        loop.call_soon_threadsafe(_settle, future, result, error)
    except RuntimeError:  # the loop has closed (the server stopped): nobody is waiting any more
        log.debug("a generation ended after its event loop closed; its result is dropped")


def _settle(future: asyncio.Future, result, error) -> None:
    if future.done():  # the awaiting request was cancelled meanwhile
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
