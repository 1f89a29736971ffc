"""The virtual-time loop's per-process clocks and pauses (raftpy.testing.stack_loop)."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from raftpy.testing.stack_loop import ProcessClock, VirtualTimeLoop, process_clock, run


def _in(clock: ProcessClock) -> contextvars.Context:
    context = contextvars.copy_context()
    context.run(process_clock.set, clock)
    return context


def test_a_process_reads_its_own_clock_and_sleeps_on_it() -> None:
    loop = VirtualTimeLoop()
    clock = ProcessClock(offset=100.0, rate=2.0)
    seen: list[tuple[float, float]] = []

    async def process() -> None:
        began = loop.time()
        await asyncio.sleep(1.0)  # one second of its clock: half a true second
        seen.append((began, loop.time()))

    async def main() -> None:
        await loop.create_task(process(), context=_in(clock))
        seen.append((loop.true_time(), loop.time()))

    run(main(), loop)
    (began, ended), (true, outside) = seen
    assert began == pytest.approx(100.0)
    assert ended == pytest.approx(101.0)
    assert true == pytest.approx(0.5) and outside == pytest.approx(0.5)


def test_set_rate_keeps_the_reading_continuous() -> None:
    clock = ProcessClock(offset=5.0, rate=1.0)
    clock.set_rate(10.0, 0.5)
    assert clock.local(10.0) == pytest.approx(15.0)
    assert clock.local(12.0) == pytest.approx(16.0)
    assert clock.true(16.0) == pytest.approx(12.0)
    with pytest.raises(ValueError):
        clock.set_rate(12.0, 0.0)


def test_a_paused_process_runs_nothing_until_it_resumes_and_sees_its_timers_late() -> None:
    loop = VirtualTimeLoop()
    paused, other = ProcessClock(), ProcessClock()
    ticks: dict[str, list[float]] = {"paused": [], "other": []}

    async def ticker(name: str) -> None:
        for _ in range(10):
            await asyncio.sleep(0.1)
            ticks[name].append(loop.true_time())

    async def main() -> None:
        a = loop.create_task(ticker("paused"), context=_in(paused))
        b = loop.create_task(ticker("other"), context=_in(other))
        await asyncio.sleep(0.25)
        loop.pause(paused, 1.0)
        await asyncio.gather(a, b)

    run(main(), loop)
    assert ticks["other"][-1] == pytest.approx(1.0)  # the other process ran on
    resumed = [t for t in ticks["paused"] if t > 0.25]
    assert resumed[0] == pytest.approx(1.25)  # nothing ran during the pause
    assert len(ticks["paused"]) == 10


def test_a_callback_handed_to_a_paused_process_waits_for_it() -> None:
    loop = VirtualTimeLoop()
    clock = ProcessClock()
    ran: list[float] = []

    async def main() -> None:
        loop.pause(clock, 0.5)
        loop.call_soon(lambda: ran.append(loop.true_time()), context=_in(clock))
        loop.call_soon(lambda: ran.append(-loop.true_time()))
        await asyncio.sleep(1.0)

    run(main(), loop)
    assert ran == [0.0, 0.5] or ran == [-0.0, 0.5]


def test_a_callback_that_raises_goes_to_the_exception_handler_and_the_loop_runs_on() -> None:
    loop = VirtualTimeLoop()
    seen: list[dict[str, object]] = []
    ran: list[float] = []

    def boom() -> None:
        raise ValueError("boom")

    async def main() -> None:
        loop.set_exception_handler(lambda _loop, context: seen.append(context))
        loop.call_soon(boom)
        loop.call_later(0.5, boom)
        loop.call_later(1.0, lambda: ran.append(loop.time()))
        await asyncio.sleep(2.0)

    run(main(), loop)
    assert ran == [1.0]  # both failures were handled, and what came after them ran
    assert len(seen) == 2
    for context in seen:
        assert isinstance(context["exception"], ValueError)
        assert "Exception in callback" in str(context["message"])
        assert isinstance(context["handle"], asyncio.Handle)


def test_timers_due_together_run_in_the_order_asyncio_would_run_them() -> None:
    # The heap holds (when, timer) pairs: ties must come out as a heap of timers gives them.
    import heapq

    loop = VirtualTimeLoop()
    order: list[int] = []
    whens = [0.3, 0.1, 0.3, 0.2, 0.1, 0.3, 0.2, 0.1, 0.3, 0.3]

    async def main() -> None:
        for i, when in enumerate(whens):
            loop.call_at(when, order.append, i)
        await asyncio.sleep(1.0)

    run(main(), loop)
    # The same pushes on a heap of timers (the sleep's timer last), popped in turn.
    reference: list[asyncio.TimerHandle] = []
    for i, when in enumerate(whens):
        heapq.heappush(reference, asyncio.TimerHandle(when, order.append, (i,), loop))
    heapq.heappush(reference, asyncio.TimerHandle(1.0, order.append, (-1,), loop))
    expected = [heapq.heappop(reference)._args[0] for _ in whens]  # type: ignore[attr-defined]
    assert order == expected
    assert order != sorted(range(len(whens)), key=lambda i: whens[i])  # ties do come up
