"""PeerRejections: what a node does with a peer's message the core rejected.

The core raises :class:`~raftpy.errors.RejectedMessage` for a well-formed message that no
correct peer sends in its state (a second leader in one term, entries that contradict the
committed log, ...), before changing anything. Such a message costs its sender the connection,
never the node: the node drops it, asks the transport to close that peer's connection
(:meth:`~raftpy.transport.base.Transport.reject_peer`), counts it
(``NodeStats.rejected_messages``) and logs it, at most once per peer every
:data:`LOG_INTERVAL` seconds however many arrive, so a misbehaving peer cannot flood the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from raftpy.errors import RejectedMessage
from raftpy.node.stats import NodeStats
from raftpy.transport.base import Transport

logger = logging.getLogger("raftpy.node")

LOG_INTERVAL: Final = 10.0
"""Seconds between two log lines about one peer's rejected messages."""


class PeerRejections:
    """Drops, counts and reports the messages the core rejected, per peer."""

    def __init__(
        self, node_id: int, stats: NodeStats, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._node_id = node_id
        self._stats = stats
        self._clock = clock
        self._last_logged: dict[int, float] = {}
        self._unlogged: dict[int, int] = {}

    def on_rejected(self, exc: RejectedMessage, transport: Transport) -> None:
        """The core rejected a message from ``exc.peer_id``: count it, close that peer's
        connection, and log it unless this peer was logged lately."""
        self._stats.rejected_messages += 1
        peer = exc.peer_id
        transport.reject_peer(peer, exc.reason)
        now = self._clock()
        last = self._last_logged.get(peer)
        if last is not None and now - last < LOG_INTERVAL:
            self._unlogged[peer] = self._unlogged.get(peer, 0) + 1
            return
        self._last_logged[peer] = now
        more = self._unlogged.pop(peer, 0)
        # The reason is our own text (numbers the message carried), never the peer's bytes.
        logger.warning(
            "node %d rejected a message from node %d and closed its connection: %s%s",
            self._node_id,
            peer,
            exc.reason,
            f" ({more} more since the last report)" if more else "",
        )
