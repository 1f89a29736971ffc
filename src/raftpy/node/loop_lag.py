"""LoopLag: how late the node's event loop wakes a periodic sleep, a measure of its saturation
(exported as ``raftpy_event_loop_lag_seconds``, docs/metrics.md).

Everything a node does runs on one event loop: a callback that holds it (a large encode, a
slow state machine, a snapshot written inline) delays every heartbeat, append and answer. A
sleep of ``interval`` that wakes ``lag`` seconds late shows exactly that delay. A node runs
this task only while it serves metrics: it costs one wake-up per ``interval``.
"""

from __future__ import annotations

import asyncio
import contextlib

LAG_BOUNDS = tuple(0.0005 * 2**k for k in range(14))
"""Upper bounds of the lag buckets in seconds: 0.5 ms .. 4.1 s (an overflow bucket follows)."""


class LagHistogram:
    """Lag samples in buckets: ``counts[i]`` samples were at most ``bounds[i]`` (and above the
    bound before it; not cumulative); the last count is the overflow bucket."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = LAG_BOUNDS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        i = 0
        bounds = self.bounds
        while i < len(bounds) and seconds > bounds[i]:
            i += 1
        self.counts[i] += 1
        self.sum += seconds
        self.count += 1


class LoopLag:
    """Measures the running loop's wake-up lag every ``interval`` seconds into
    :attr:`histogram`, from :meth:`start` to :meth:`stop`."""

    def __init__(self, interval: float = 0.1) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self.interval = interval
        self.histogram = LagHistogram()
        self.last: float | None = None
        """The latest lag measured, seconds (``None`` before the first)."""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="raftpy-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.interval
        while True:
            asked = loop.time() + interval
            await asyncio.sleep(interval)
            # Timers fire up to a clock resolution early on some loops: never a negative lag.
            lag = max(0.0, loop.time() - asked)
            self.last = lag
            self.histogram.observe(lag)
