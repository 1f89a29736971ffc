"""The node's fsync of its log (group commit: one per Ready), timed for the counters and the
health check, and a full disk waited out without losing anything (docs/health.md).

Raft Figure 2 / Thesis §11.7: what a Ready asks to persist is durable before any message that
depends on it leaves; the node's loop awaits :meth:`DiskSync.sync` between the two.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from raftpy.core.raft import Raft
from raftpy.node.health import NodeHealth
from raftpy.node.last_error import LastError
from raftpy.node.latency import RecentDurations
from raftpy.node.requests import PendingRequests
from raftpy.node.stats import NodeStats
from raftpy.storage.base import LogStore
from raftpy.storage.errors import StorageFullError
from raftpy.transport.base import Transport

logger = logging.getLogger("raftpy.node")

FULL_DISK_RETRY = 0.2
"""Seconds between attempts to sync while the disk is full."""


class DiskSync:
    """Syncs one node's log. ``recent`` holds the last 1,000 fsyncs' durations (seconds, for
    the fsync p99 of a status); ``full`` says whether the disk is full now (the last sync
    failed for lack of space and has not succeeded since)."""

    def __init__(
        self,
        node_id: int,
        stats: NodeStats,
        health: NodeHealth,
        recent: RecentDurations,
        requests: PendingRequests,
        errors: LastError,
        clock: Callable[[], float],
    ) -> None:
        self.node_id = node_id
        self.recent = recent
        self.full = False
        self._stats = stats
        self._health = health
        self._requests = requests
        self._errors = errors
        self._clock = clock

    async def sync(self, storage: LogStore, raft: Raft | None, transport: Transport | None) -> None:
        """Make what ``storage`` buffered durable. A full disk is retried until space frees:
        nothing is corrupted and the buffer is kept, so no acknowledged write is at risk;
        meanwhile queued proposals are refused and a leader hands over (docs/health.md)."""
        while True:
            try:
                began = self._clock()
                storage.sync()
                took = self._clock() - began
                self._stats.fsync.observe(took)
                self.recent.observe(took)
                self._stats.syncs += 1
                self._health.on_sync()
                if self.full:
                    logger.warning("node %d: disk space is available again", self.node_id)
                    self.full = False
                return
            except StorageFullError as exc:
                if not self.full:
                    logger.error("node %d: %s; waiting for free space", self.node_id, exc)
                    self._errors.note(f"disk full: {exc}")
                self.full = True
                self._requests.drop_queued("the disk is full")
                # A leader parked here hands over at once, from here (docs/health.md).
                loop = asyncio.get_running_loop()
                self._health.on_disk_full(raft, transport, loop.time())
                await asyncio.sleep(FULL_DISK_RETRY)
                # The loop is parked here: keep deadlines honest so no proposer waits forever.
                self._requests.expire(loop.time())
