"""PeerRtt: the round-trip time to each peer, from the leader's heartbeats and their answers
(exported as ``raftpy_network_peer_round_trip_time_seconds``, docs/metrics.md).

The leader numbers each heartbeat broadcast (the lease's rounds, Thesis §6.4.1) and every
follower echoes the number in its answer, so a heartbeat and its answer pair up exactly: the
time between them is the network both ways plus the follower's loop getting to it, which is
what a leader waits for in every round of replication. The last :data:`OUTSTANDING` heartbeats
per peer are remembered, so round trips longer than many heartbeat intervals are still
measured and memory stays bounded. Without a lease (CheckQuorum off, or a clock drift that
leaves none: ``NodeConfig.lease_ticks``) heartbeats carry no number: the answer is then paired
with the oldest heartbeat not yet answered, which overstates the round trip only when a
heartbeat was lost. A node keeps this only while it serves metrics: otherwise the loop does
not call it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from raftpy.core.messages import Heartbeat, HeartbeatResponse, PeerMessage
from raftpy.node.latency import Histogram

OUTSTANDING = 64
"""Unanswered heartbeats remembered per peer (over 3 s of heartbeats at the defaults)."""


class PeerRtt:
    """Round trips to each peer, in one :class:`Histogram` per peer (``by_peer``)."""

    def __init__(self) -> None:
        self.by_peer: dict[int, Histogram] = {}
        # peer -> (round, loop time sent) of its unanswered heartbeats, oldest first.
        self._sent: dict[int, deque[tuple[int, float]]] = {}

    def on_sent(self, messages: Iterable[PeerMessage], now: float) -> None:
        """Note the heartbeats among ``messages``, handed to the transport at ``now``."""
        for m in messages:
            if type(m) is Heartbeat:
                waiting = self._sent.get(m.dst)
                if waiting is None:
                    waiting = self._sent[m.dst] = deque(maxlen=OUTSTANDING)
                if m.round or not waiting:  # numberless: only the oldest unanswered counts
                    waiting.append((m.round, now))

    def on_received(self, messages: Iterable[PeerMessage], now: float) -> None:
        """Measure the answers among ``messages`` that arrived by ``now``."""
        for m in messages:
            if type(m) is HeartbeatResponse:
                waiting = self._sent.get(m.src)
                # Older rounds than the answer's will not be answered any more (or their
                # answers were overtaken, which TCP does not do): forget them.
                while waiting and waiting[0][0] < m.round:
                    waiting.popleft()
                if waiting and waiting[0][0] == m.round:
                    sent = waiting.popleft()[1]
                    h = self.by_peer.get(m.src)
                    if h is None:
                        h = self.by_peer[m.src] = Histogram()
                    h.observe(max(0.0, now - sent))
