"""Leadership: the recent role changes of one node, with why each happened, and the count of
leader changes it saw (etcd's ``leader_changes_seen``), for operators.

The node feeds it every soft-state change of its core (a new role or a new leader,
``Ready.soft_state``) with the core's reason (``core.status.Status.role_reason``: ``"election
timeout"``, ``"leader transfer"``, ``"higher term"``, ``"check quorum"``, ...). It keeps the last
:data:`HISTORY` events, oldest first: ``NodeStatus.elections``. Nothing here is read by a rule
of the protocol; losing it (a restart) loses only the operators' picture.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import msgspec

from raftpy.node.stats import NodeStats

__all__ = ["HISTORY", "LeadershipEvent", "LeadershipHistory"]

HISTORY = 32
"""Role changes kept per node."""


class LeadershipEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One change of a node's role or of the leader it knows."""

    time: float
    """When, in unix seconds (the node's wall clock)."""
    term: int
    """The node's term after the change."""
    role: str
    """The role after the change: ``"follower"``, ``"pre-candidate"``, ``"candidate"`` or
    ``"leader"``."""
    leader: int | None
    """The leader the node knows after the change (``None``: none)."""
    reason: str
    """Why: ``"election timeout"`` or ``"leader transfer"`` (it campaigned; a leader keeps the
    reason of the campaign it won), ``"election lost"``, ``"leader found"`` (a candidate met
    the leader of its term), ``"higher term"`` (a message of a newer term: a new leader, or a
    candidate), ``"check quorum"`` (a leader lost touch with a majority and stepped down),
    ``"removed"`` (a leader no longer a voter stepped down), ``"start"``, or a reason another
    part of the node records (``"unhealthy"``)."""


class LeadershipHistory:
    """The last ``size`` role changes of one node, and ``stats.leader_changes``.

    ``clock`` gives unix seconds (tests pass a fake).
    """

    def __init__(
        self,
        stats: NodeStats,
        *,
        size: int = HISTORY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self._stats = stats
        self._clock = clock
        self._events: deque[LeadershipEvent] = deque(maxlen=size)
        self._leader: int | None = None

    def observe(self, role: str, leader: int | None, term: int, reason: str) -> None:
        """The node's role or known leader changed to ``role`` / ``leader`` in ``term``."""
        # As etcd counts leader_changes_seen: a leader that is not the one we knew last
        # (losing the leader and finding the same one again counts again).
        if leader is not None and leader != self._leader:
            self._stats.leader_changes += 1
        self._leader = leader
        self._events.append(
            LeadershipEvent(time=self._clock(), term=term, role=role, leader=leader, reason=reason)
        )

    def events(self) -> tuple[LeadershipEvent, ...]:
        """The kept changes, oldest first."""
        return tuple(self._events)
