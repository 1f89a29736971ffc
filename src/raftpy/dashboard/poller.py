"""The dashboard's poller: asks every member for its status, over and over, and remembers the
answers.

Each address has its own loop, which asks once per ``interval`` (bounded by ``timeout``), so
a dead or slow member never delays the picture of the others. Members the leader names that
were not given are found through its replication table and asked too (at most
``max_nodes`` addresses in all, so a node that names many addresses costs a bounded amount).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from raftpy.dashboard.samples import NodeHistory, Sample, histogram_counts
from raftpy.node.status import NodeStatus

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_WINDOW",
    "MAX_NODES",
    "NodeView",
    "Poller",
    "StatusFetcher",
]

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 0.5
"""Seconds between two status requests to one member."""
DEFAULT_WINDOW = 600.0
"""Seconds of history kept: the last 10 minutes."""
MAX_NODES = 64
"""At most this many addresses are polled, given and discovered together."""

StatusFetcher = Callable[[str, float], Awaitable[NodeStatus]]
"""``fetch(address, timeout)``: the status of the node at ``address``, or an exception."""


@dataclass
class NodeView:
    """What the dashboard knows of one address."""

    address: str
    history: NodeHistory
    status: NodeStatus | None = None
    """Its last answer (kept after it stops answering, to show what it was)."""
    answered: float | None = None
    """When it last answered (unix seconds)."""
    error: str | None = None
    """Why the last request failed; ``None`` when it answered."""
    discovered: bool = False
    """Found through the leader's replication table rather than given."""
    asked: int = 0
    failures: int = 0

    @property
    def alive(self) -> bool:
        """It answered the last request."""
        return self.status is not None and self.error is None


class Poller:
    """Polls ``addresses`` with ``fetch`` every ``interval`` seconds; :attr:`views` holds what
    it learnt. Run it with :meth:`run` (until cancelled) or step it with :meth:`poll_once`."""

    def __init__(
        self,
        addresses: Sequence[str],
        fetch: StatusFetcher,
        *,
        interval: float = DEFAULT_INTERVAL,
        timeout: float | None = None,
        window: float = DEFAULT_WINDOW,
        clock: Callable[[], float] = time.time,
        max_nodes: int = MAX_NODES,
    ) -> None:
        if not addresses:
            raise ValueError("at least one address is needed")
        if not (interval > 0 and math.isfinite(interval)):
            raise ValueError(f"interval must be a positive number of seconds, got {interval}")
        self.interval = interval
        # A member that answers within a second is alive; a slower poll interval waits longer.
        self.timeout = timeout if timeout is not None else max(1.0, 2 * interval)
        self.window = window
        self.clock = clock
        self.max_nodes = max_nodes
        self._fetch = fetch
        # Room for every answer of the window at the poll rate, and some slack.
        self._max_samples = int(window / interval) + 16
        self.views: dict[str, NodeView] = {}
        self.version = 0
        """Grows with every answer or failure, so a picture can be cached until it moves."""
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running = False
        for address in addresses:
            self._add(address, discovered=False)

    def _add(self, address: str, *, discovered: bool) -> NodeView | None:
        if address in self.views:
            return self.views[address]
        if len(self.views) >= self.max_nodes:
            return None
        view = NodeView(address, NodeHistory(self.window, self._max_samples), discovered=discovered)
        self.views[address] = view
        if self._running:
            self._tasks[address] = asyncio.create_task(self._loop(view))
        return view

    async def poll_once(self, address: str) -> None:
        """Ask ``address`` once and record the answer or the failure."""
        view = self.views[address]
        view.asked += 1
        try:
            status = await asyncio.wait_for(self._fetch(address, self.timeout), self.timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure is shown, none stops the dashboard
            view.error = str(exc) or type(exc).__name__
            view.failures += 1
            self.version += 1
            return
        self.record(view, status)

    def record(self, view: NodeView, status: NodeStatus) -> None:
        """Record one answer of ``view``'s node."""
        now = self.clock()
        view.status = status
        view.answered = now
        view.error = None
        stats = getattr(status, "stats", None)
        proposal = histogram_counts(getattr(stats, "proposal", None))
        if status.commit is not None:
            view.history.add(Sample(now, status.commit, proposal))
        self.version += 1
        if status.role == "leader":
            self._discover(status)

    def _discover(self, status: NodeStatus) -> None:
        """Poll the members the leader replicates to that were not given (Raft §5.3: the
        leader knows every member it sends to)."""
        for peer in (status.peers or {}).values():
            if isinstance(peer.address, str) and peer.address not in self.views:
                self._add(peer.address, discovered=True)

    async def _loop(self, view: NodeView) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self.poll_once(view.address)
            await asyncio.sleep(max(0.0, started + self.interval - loop.time()))

    async def run(self) -> None:
        """Poll every address until cancelled."""
        self._running = True
        for view in list(self.views.values()):
            self._tasks[view.address] = asyncio.create_task(self._loop(view))
        try:
            await asyncio.Event().wait()
        finally:
            self._running = False
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._tasks.clear()

    @property
    def histories(self) -> list[NodeHistory]:
        return [v.history for v in self.views.values()]


def client_fetcher(client: Any) -> StatusFetcher:
    """A fetcher that asks with a :class:`~raftpy.client.Client`'s ``status(address)``."""

    async def fetch(address: str, timeout: float) -> NodeStatus:
        status: NodeStatus = await client.status(address, timeout=timeout)
        return status

    return fetch
