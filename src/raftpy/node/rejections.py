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
from raftpy.logtext import RateLimitedLog
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
        # One line per peer per interval; the rest are counted and reported in one
        # "suppressed" line when that peer's next interval begins.
        self._log = RateLimitedLog(logger, burst=1, interval=LOG_INTERVAL, clock=clock)

    def on_rejected(self, exc: RejectedMessage, transport: Transport) -> None:
        """The core rejected a message from ``exc.peer_id``: count it, close that peer's
        connection, and log it unless this peer was logged lately."""
        self._stats.rejected_messages += 1
        peer = exc.peer_id
        transport.reject_peer(peer, exc.reason)
        # The reason is our own text (numbers the message carried), never the peer's bytes.
        self._log.warning(
            f"rejected messages from node {peer}",
            "node %d rejected a message from node %d and closed its connection: %s",
            self._node_id,
            peer,
            exc.reason,
        )
