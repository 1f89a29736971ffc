"""A virtual-time asyncio event loop for whole-stack simulation (for tests).

:class:`VirtualTimeLoop` is an ordinary asyncio event loop whose clock is a number it owns:
when no callback is ready it jumps the clock to the next timer instead of sleeping, so a
program that spends most of its time waiting (a Raft cluster: ticks, heartbeats, client
backoff) runs many times faster than real time, and the same inputs give the same run.

What it does not have: sockets, threads and subprocesses. ``create_connection`` goes to a
pluggable :attr:`VirtualTimeLoop.connector` (the in-memory network of
:mod:`raftpy.testing.stack_net`); ``run_in_executor`` (and so ``asyncio.to_thread``, which
the node uses to write and restore snapshots) runs the function inline, at once, on the
loop: deterministic, and the caller still gets a future. :meth:`VirtualTimeLoop.advance`
moves the clock forward from inside a callback, as when the process is blocked (a slow
fsync, a paused virtual machine).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import selectors
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class SimulationDeadlock(RuntimeError):
    """Nothing is ready and no timer is pending, yet the awaited work is not done: the
    simulated program can never make progress again."""


class Connector(Protocol):
    """Opens in-memory stream connections for :meth:`VirtualTimeLoop.create_connection`."""

    async def open(
        self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: str, port: int
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]: ...


class _VirtualSelector(selectors.BaseSelector):
    """The "selector" of the loop: there is nothing to wait for but time, so waiting for
    ``timeout`` seconds is moving the clock by that much."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise SimulationDeadlock("no callback is ready and no timer is pending")
        if timeout > 0:
            self._loop._now += timeout
        return []

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        raise NotImplementedError("the virtual-time loop has no file descriptors")

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        raise NotImplementedError("the virtual-time loop has no file descriptors")

    def get_map(self) -> Any:
        return {}

    def close(self) -> None:
        pass


class VirtualTimeLoop(asyncio.BaseEventLoop):
    """An asyncio loop on a virtual clock (see the module docstring). ``start`` is the clock's
    first reading, in seconds."""

    def __init__(self, start: float = 0.0) -> None:
        super().__init__()
        self._now = float(start)
        self._selector = _VirtualSelector(self)
        self._clock_resolution = 1e-9
        self.connector: Connector | None = None
        """Where ``create_connection`` goes; ``None``: every connection is refused."""

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` now, as if the process had been blocked for
        that long (timers that fell due run late, as they would)."""
        if seconds < 0:
            raise ValueError(f"the clock never goes back (asked to move by {seconds})")
        self._now += seconds

    # -- what BaseEventLoop asks of a concrete loop -----------------------------------------

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass  # call_soon_threadsafe: there are no other threads to wake us

    # -- no threads: executors run inline ---------------------------------------------------

    def run_in_executor(  # type: ignore[override]
        self,
        executor: concurrent.futures.Executor | None,
        func: Callable[..., T],
        *args: Any,
    ) -> asyncio.Future[T]:
        """Run ``func(*args)`` now, on the loop, and return its outcome as a done future:
        what would run in a worker thread runs at a deterministic point instead."""
        fut: asyncio.Future[T] = self.create_future()
        try:
            fut.set_result(func(*args))
        except BaseException as exc:  # handed to the awaiting caller
            fut.set_exception(exc)
        return fut

    # -- no sockets: connections go to the in-memory network --------------------------------

    async def create_connection(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: str | None = None,
        port: int | None = None,
        **kwargs: Any,
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        if kwargs.get("ssl") is not None:
            raise NotImplementedError("TLS is not simulated")
        if self.connector is None or host is None or port is None:
            raise ConnectionRefusedError(f"no simulated network to reach {host}:{port}")
        return await self.connector.open(protocol_factory, host, port)


def run(main: Awaitable[T], loop: VirtualTimeLoop) -> T:
    """Run ``main`` to completion on ``loop``, then cancel what it left running and close
    the loop (like ``asyncio.run``, minus the executor and the real clock)."""
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
