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
moves the clock forward from inside a callback, as when the whole machine is blocked.

**One clock per simulated process.** Code running in a context where :data:`process_clock`
is set (a node's tasks and callbacks: they inherit the context the node was started in) reads
that :class:`ProcessClock` from ``loop.time()``, and its ``call_at``/``call_later`` deadlines
are in that clock: each process has its own offset (nothing may compare two processes'
readings) and its own rate (drift). :meth:`VirtualTimeLoop.pause` freezes one process: none
of its callbacks run until it resumes, while its clock keeps running (a monotonic clock counts
the time a process was stopped, so on resuming it sees every timer overdue). The loop itself,
and code outside any process, run on the true virtual time (:meth:`VirtualTimeLoop.true_time`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import heapq
import selectors
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class SimulationDeadlock(RuntimeError):
    """Nothing is ready and no timer is pending, yet the awaited work is not done: the
    simulated program can never make progress again."""


class ProcessClock:
    """A simulated process's monotonic clock: its reading at true virtual time ``t`` is
    ``offset + rate * t`` (piecewise: :meth:`set_rate` keeps the reading continuous). It never
    goes back. ``paused_until``: true time at which the process resumes (see
    :meth:`VirtualTimeLoop.pause`)."""

    __slots__ = ("_base_local", "_base_true", "paused_until", "rate")

    def __init__(self, offset: float = 0.0, rate: float = 1.0) -> None:
        if rate <= 0:
            raise ValueError(f"a clock's rate must be positive, not {rate}")
        self._base_true = 0.0
        self._base_local = float(offset)
        self.rate = float(rate)
        self.paused_until = 0.0

    def local(self, true: float) -> float:
        """The reading at true virtual time ``true``."""
        return self._base_local + (true - self._base_true) * self.rate

    def true(self, local: float) -> float:
        """The true virtual time at which this clock reads ``local``."""
        return self._base_true + (local - self._base_local) / self.rate

    def set_rate(self, now: float, rate: float) -> None:
        """From true time ``now`` on, run at ``rate`` (1.0: true speed)."""
        if rate <= 0:
            raise ValueError(f"a clock's rate must be positive, not {rate}")
        self._base_local = self.local(now)
        self._base_true = now
        self.rate = rate


process_clock: contextvars.ContextVar[ProcessClock | None] = contextvars.ContextVar(
    "process_clock", default=None
)
"""The clock of the simulated process running in this context (``None``: true time)."""


class Connector(Protocol):
    """Opens in-memory stream connections for :meth:`VirtualTimeLoop.create_connection`."""

    async def open(
        self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: str, port: int
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]: ...


class _Handle(asyncio.Handle):
    """An ``asyncio.Handle`` made without asking the loop whether it is in debug mode (the
    virtual loop never is): every task step and future callback makes one."""

    __slots__ = ()

    def __init__(
        self,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        context: contextvars.Context | None,
    ) -> None:
        self._context = context if context is not None else contextvars.copy_context()
        self._loop = loop
        self._callback = callback
        self._args = args
        self._cancelled = False
        self._repr = None
        self._source_traceback = None


class _Timer(asyncio.TimerHandle):
    """An ``asyncio.TimerHandle`` made as :class:`_Handle` is."""

    __slots__ = ()

    def __init__(
        self,
        when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        context: contextvars.Context | None,
    ) -> None:
        _Handle.__init__(self, callback, args, loop, context)  # type: ignore[arg-type]
        self._when = when
        self._scheduled = False


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
        self._paused: list[ProcessClock] = []

    def time(self) -> float:
        clock = process_clock.get()
        if clock is None:
            return self._now
        return clock._base_local + (self._now - clock._base_true) * clock.rate  # clock.local

    def true_time(self) -> float:
        """The true virtual time, whoever asks."""
        return self._now

    # -- per-process clocks and pauses ------------------------------------------------------

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        """As ``BaseEventLoop.call_at``, ``when`` read on the caller's clock."""
        clock = process_clock.get()
        if clock is not None:
            when = clock.true(when)
        return self.call_at_true(when, callback, *args, context=context)

    def call_at_true(
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        """``call_at`` with ``when`` in true virtual time (after any pause of the process
        the callback belongs to)."""
        if self._paused:
            until = self._paused_until(context)
            if until > when:
                when = until
        if self._closed:  # type: ignore[attr-defined]
            raise RuntimeError("Event loop is closed")
        timer = _Timer(when, callback, args, self, context)
        # The heap holds (when, timer): the C tuple comparison orders it as TimerHandle's own
        # (Python) comparison would, by ``when`` alone, at a fraction of the cost (a tie
        # compares the timers, which is what the heap of timers did).
        heapq.heappush(self._scheduled, (when, timer))  # type: ignore[attr-defined]
        timer._scheduled = True
        return timer

    def call_later(  # type: ignore[override]
        self,
        delay: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        """As ``BaseEventLoop.call_later``, ``delay`` on the caller's clock."""
        return self.call_at(self.time() + delay, callback, *args, context=context)

    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        if self._paused:
            until = self._paused_until(context)
            if until > self._now:
                return self.call_at_true(until, callback, *args, context=context)
        if self._closed:  # type: ignore[attr-defined]
            raise RuntimeError("Event loop is closed")
        # BaseEventLoop.call_soon without its debug checks (every task step comes here).
        handle = _Handle(callback, args, self, context)
        self._ready.append(handle)  # type: ignore[attr-defined]
        return handle

    def _paused_until(self, context: contextvars.Context | None) -> float:
        clock = process_clock.get() if context is None else context.get(process_clock)
        if clock is None:
            return 0.0
        if clock.paused_until <= self._now:
            self._paused = [c for c in self._paused if c.paused_until > self._now]
            return 0.0
        return clock.paused_until

    def pause(self, clock: ProcessClock, seconds: float) -> None:
        """Stop the process whose clock is ``clock`` for ``seconds`` of true virtual time: its
        callbacks that are ready or fall due meanwhile run when it resumes (a stopped virtual
        machine, a long garbage collection); its clock keeps counting. The callback calling
        this finishes first."""
        if seconds < 0:
            raise ValueError(f"cannot pause for {seconds} s")
        until = self._now + seconds
        if until <= clock.paused_until:
            return
        clock.paused_until = until
        if clock not in self._paused:
            self._paused.append(clock)
        # What was already ready: run it at the resumption instead (the deque is being
        # walked by _run_once: cancel and re-schedule, never remove).
        ready: Any = self._ready  # type: ignore[attr-defined]
        for handle in list(ready):
            ctx = handle._context
            if not handle._cancelled and ctx is not None and ctx.get(process_clock) is clock:
                callback, args = handle._callback, handle._args
                handle.cancel()
                self.call_at_true(until, callback, *args, context=ctx)
        # The heap holds (when, timer) (see call_at_true).
        scheduled: list[tuple[float, Any]] = self._scheduled  # type: ignore[attr-defined]
        for i, (when, timer) in enumerate(scheduled):
            ctx = timer._context
            if ctx is not None and when < until and ctx.get(process_clock) is clock:
                timer._when = until
                scheduled[i] = (until, timer)
        heapq.heapify(scheduled)

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` now, as if the process had been blocked for
        that long (timers that fell due run late, as they would)."""
        if seconds < 0:
            raise ValueError(f"the clock never goes back (asked to move by {seconds})")
        self._now += seconds

    # -- what BaseEventLoop asks of a concrete loop -----------------------------------------

    def _run_once(self) -> None:
        """``BaseEventLoop._run_once`` without what a virtual clock does not need (polling,
        debug timing), and repeated until the loop is told to stop (``run_forever`` checks
        ``_stopping`` after each round, and so does this: the same rounds, one call): drop
        cancelled timers at the head, jump the clock to the next timer when nothing is ready,
        move due timers to the ready queue, run what is ready. The simulation spends a good
        share of its own time here. The heap holds ``(when, timer)`` (see
        :meth:`call_at_true`)."""
        base: Any = self  # BaseEventLoop's private state, untyped
        ready: Any = base._ready
        pop = heapq.heappop
        popleft = ready.popleft
        resolution = self._clock_resolution
        while True:
            scheduled: list[tuple[float, Any]] = base._scheduled
            if len(scheduled) > 100 and base._timer_cancelled_count * 2 > len(scheduled):
                for _, handle in scheduled:
                    if handle._cancelled:
                        handle._scheduled = False
                scheduled = [entry for entry in scheduled if not entry[1]._cancelled]
                heapq.heapify(scheduled)
                base._scheduled = scheduled
                base._timer_cancelled_count = 0
            else:
                while scheduled and scheduled[0][1]._cancelled:
                    base._timer_cancelled_count -= 1
                    pop(scheduled)[1]._scheduled = False
            if not ready and not base._stopping:
                if not scheduled:
                    raise SimulationDeadlock("no callback is ready and no timer is pending")
                when = scheduled[0][0]
                if when > self._now:
                    self._now = when
            end = self._now + resolution
            while scheduled and scheduled[0][0] < end:
                handle = pop(scheduled)[1]
                handle._scheduled = False
                ready.append(handle)
            for _ in range(len(ready)):
                handle = popleft()
                if handle._cancelled:
                    continue
                # Handle._run, inlined (a Python call less for every callback).
                try:
                    handle._context.run(handle._callback, *handle._args)
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:
                    self.call_exception_handler(
                        {
                            "message": f"Exception in callback {handle!r}",
                            "exception": exc,
                            "handle": handle,
                        }
                    )
            if base._stopping:
                return

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
