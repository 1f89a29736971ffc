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

from raftpy.node.latency import Histogram


class LoopLag:
    """Measures the running loop's wake-up lag every ``interval`` seconds into
    :attr:`histogram`, from :meth:`start` to :meth:`stop`."""

    def __init__(self, interval: float = 0.1) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self.interval = interval
        self.histogram = Histogram()
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
