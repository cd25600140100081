"""The serving thread runs jobs one at a time in order, on one thread, and hands each outcome over whole:
to a concurrent Future, or straight to an event loop, even when nobody waits any more."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from services.inference.serving_thread import ServingThread


def test_jobs_run_in_order_one_at_a_time_on_one_named_thread():
    st = ServingThread("wattserve-test")
    seen, running = [], []

    def job(i):
        running.append(i)
        assert len(running) == 1, running  # never two at once
        seen.append((i, threading.current_thread().name))
        time.sleep(0.002)
        running.pop()
        return i * i

    futures = [st.submit(job, i) for i in range(20)]
    assert [f.result(timeout=10) for f in futures] == [i * i for i in range(20)]
    assert [i for i, _ in seen] == list(range(20)) and {name for _, name in seen} == {"wattserve-test"}
    st.shutdown()


def test_an_exception_reaches_the_caller_and_the_thread_serves_on():
    st = ServingThread()
    failing = st.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(timeout=10)
    assert st.submit(lambda: "next").result(timeout=10) == "next"
    st.shutdown()


def test_run_on_loop_delivers_results_and_exceptions_to_the_awaiting_coroutine():
    st = ServingThread()

    async def main():
        loop_thread = threading.current_thread()
        ran_on = []
        value = await st.run_on_loop(lambda: ran_on.append(threading.current_thread()) or 42)
        assert value == 42 and ran_on[0] is not loop_thread and ran_on[0].name == st.name
        with pytest.raises(KeyError):
            await st.run_on_loop(lambda: {}["missing"])
        # order is kept between the two kinds of submission
        order = []
        a = st.submit(lambda: order.append("a"))
        b = st.run_on_loop(lambda: order.append("b"))
        await b
        assert a.done() and order == ["a", "b"]

    asyncio.run(main())
    st.shutdown()


def test_a_cancelled_waiter_or_a_closed_loop_leaves_the_thread_serving():
    st = ServingThread()
    gate = threading.Event()

    async def cancel_while_running():
        waiter = st.run_on_loop(lambda: gate.wait(10) and "late")
        waiter.cancel()
        gate.set()
        await asyncio.sleep(0.05)  # the late result is settled on a cancelled future: ignored
        assert waiter.cancelled()

    asyncio.run(cancel_while_running())
    gate.clear()

    async def leave_before_the_end():
        st.run_on_loop(lambda: gate.wait(10))  # nobody awaits it; the loop closes first

    asyncio.run(leave_before_the_end())
    gate.set()
    assert st.submit(lambda: "still serving").result(timeout=10) == "still serving"
    st.shutdown()


def test_shutdown_runs_what_is_queued_then_refuses_new_jobs():
    st = ServingThread()
    gate = threading.Event()
    first = st.submit(gate.wait, 10)
    queued = st.submit(lambda: "queued")
    stopper = threading.Thread(target=st.shutdown)
    stopper.start()
    gate.set()
    stopper.join(10)
    assert first.result(timeout=1) is True and queued.result(timeout=1) == "queued"
    with pytest.raises(RuntimeError, match="shut down"):
        st.submit(lambda: None)
    st.shutdown()  # twice is fine


def test_a_hand_over_that_raises_is_logged_and_the_thread_serves_on(caplog):
    st = ServingThread()

    def broken_hand_over(result, error):
        raise ValueError("broken")

    st._put(lambda: 1, broken_hand_over)  # as a hand-over whose waiter is in a broken state would
    assert st.submit(lambda: "next").result(timeout=10) == "next"
    assert "handing over a serving-thread result failed" in caplog.text
    st.shutdown()
