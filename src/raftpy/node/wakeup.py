"""The node loop's wake-up flag: ``asyncio.Event`` for exactly one waiter, cheaper.

Every message, proposal and read sets it, and the node's loop waits on it once per pass, so it
is on the hottest path of a node. ``asyncio.Event`` keeps a list of waiters, looks up its loop
on every wait and walks the list on every set; with one waiter known in advance none of that
is needed.
"""

from __future__ import annotations

import asyncio


class Wakeup:
    """Set by anyone, waited on by one task (the node's loop) at a time.

    :meth:`set` before :meth:`wait` makes the wait return at once; several sets before the
    waiter runs wake it once; :meth:`clear` re-arms it (the waiter clears it, then does
    everything that was asked, so a set after the clear is never lost).
    """

    __slots__ = ("_is_set", "_waiter")

    def __init__(self) -> None:
        self._is_set = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        if self._is_set:
            return
        self._is_set = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def is_set(self) -> bool:
        return self._is_set

    def clear(self) -> None:
        self._is_set = False

    async def wait(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Return once the flag is set (at once if it already is). ``loop``: the running
        loop, when the caller has it (asking asyncio costs a system call in Python 3.11)."""
        if self._is_set:
            return
        if self._waiter is not None:
            raise RuntimeError("Wakeup has one waiter at a time")
        if loop is None:
            loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None
