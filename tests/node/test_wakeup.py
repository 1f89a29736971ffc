"""The node loop's wake-up flag (raftpy.node.wakeup): a set is never lost, and many sets wake
the one waiter once."""

from __future__ import annotations

import asyncio

import pytest

from raftpy.node.wakeup import Wakeup


def test_a_set_before_the_wait_returns_at_once_and_clear_rearms() -> None:
    async def main() -> None:
        w = Wakeup()
        w.set()
        await asyncio.wait_for(w.wait(), 1.0)  # already set: no waiting
        w.clear()
        assert not w.is_set()
        waiter = asyncio.ensure_future(w.wait())
        await asyncio.sleep(0)
        assert not waiter.done()  # cleared: it waits
        w.set()
        w.set()  # a second set before the waiter runs changes nothing
        await asyncio.wait_for(waiter, 1.0)
        assert w.is_set()

    asyncio.run(main())


def test_a_cancelled_wait_leaves_it_usable_and_one_waiter_at_a_time() -> None:
    async def main() -> None:
        w = Wakeup()
        first = asyncio.ensure_future(w.wait())
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError):
            await w.wait()  # a second waiter would never be woken: refused
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        again = asyncio.ensure_future(w.wait())
        await asyncio.sleep(0)
        w.set()
        await asyncio.wait_for(again, 1.0)

    asyncio.run(main())
