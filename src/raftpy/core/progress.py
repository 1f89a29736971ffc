"""Per-follower replication state, as the leader tracks it (Raft Figure 2: nextIndex,
matchIndex; the probe/replicate/snapshot flow control follows etcd raft's design).

Invariant: ``0 <= match < next``. Every index the follower is known to hold is ``<= match``;
``next`` is the next index to send.
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.Enum):
    """How the leader currently sends to one follower."""

    PROBE = "probe"
    """Where the follower's log matches is unknown: send one message per heartbeat interval
    and wait for its answer."""
    REPLICATE = "replicate"
    """The follower is in sync: stream entries optimistically, up to the inflight window."""
    SNAPSHOT = "snapshot"
    """The follower needs entries we no longer hold: a snapshot is on its way; send nothing
    else until it is acknowledged."""


class Inflights:
    """The AppendEntries messages sent to one follower and not yet acknowledged: at most
    ``max_count`` messages and ``max_bytes`` bytes (``None``: no byte limit)."""

    __slots__ = ("_bytes", "_queue", "max_bytes", "max_count")

    def __init__(self, max_count: int, max_bytes: int | None = None) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._queue: deque[tuple[int, int]] = deque()
        self._bytes = 0

    def add(self, last_index: int, size: int) -> None:
        self._queue.append((last_index, size))
        self._bytes += size

    def free_le(self, index: int) -> None:
        """Forget every message whose last entry is ``<= index`` (acknowledged)."""
        q = self._queue
        while q and q[0][0] <= index:
            self._bytes -= q.popleft()[1]

    def free_first_one(self) -> None:
        """Forget the oldest message (assume it lost), freeing one slot of a full window."""
        if self._queue:
            self._bytes -= self._queue.popleft()[1]

    def full(self) -> bool:
        return len(self._queue) >= self.max_count or (
            self.max_bytes is not None and self._bytes >= self.max_bytes
        )

    def count(self) -> int:
        return len(self._queue)

    def reset(self) -> None:
        self._queue.clear()
        self._bytes = 0


class Progress:
    """What the leader knows of one follower's log, and how to send to it."""

    __slots__ = (
        "inflights",
        "is_learner",
        "loss_check",
        "lost_entries",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "resume_on_heartbeat",
        "state",
    )

    def __init__(
        self, next_index: int, max_inflight: int, max_inflight_bytes: int | None = None
    ) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.recent_active = False
        # Set when a periodic heartbeat goes out; the first answer to it may resume a paused
        # flow (at most once per heartbeat interval, however many ReadIndex heartbeats fly).
        self.resume_on_heartbeat = False
        self.is_learner = False
        # How often the follower was found to have lost entries it had acknowledged, and the
        # match it had when such a loss was last suspected, until confirmed (maybe_decr_to).
        self.lost_entries = 0
        self.loss_check: int | None = None
        self.inflights = Inflights(max_inflight, max_inflight_bytes)

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match}, next={self.next}, state={self.state.value}, "
            f"inflight={self.inflights.count()}, paused={self.is_paused()})"
        )

    def _reset_state(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, index: int) -> bool:
        """The follower acknowledged holding entries up to ``index``. Returns whether ``match``
        advanced; a stale acknowledgement never moves ``match`` or ``next`` backwards."""
        updated = False
        if index > self.match:
            self.match = index
            updated = True
            self.probe_sent = False
        if self.loss_check is not None and index >= self.loss_check:
            self.loss_check = None  # it still holds what it acknowledged: the answer was stale
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """The follower rejected an append whose ``prev_index`` was ``rejected``; its log may
        match up to ``match_hint``. Returns whether ``next`` moved (False for a stale
        rejection, which is ignored)."""
        if self.state is ProgressState.REPLICATE:
            # Stale: we already know the follower holds more than ``rejected``.
            if rejected < self.match:
                return False
            if rejected > self.match:
                self.next = self.match + 1
                return True
            # ``rejected == match``: handled below, as in probe state.
        elif self.next - 1 != rejected:
            return False  # in probe state only the answer to the latest probe counts
        if rejected > self.match or self.match == 0:
            self.next = max(min(rejected, match_hint + 1), self.match + 1)
            self.probe_sent = False
            return True
        # ``rejected == match > 0``: the follower refuses the entry it acknowledged last.
        if self.loss_check is None:
            # Either it lost part of its log (a wiped disk, a restored backup; README
            # "Changing members") or this answer is older than its acknowledgement (delayed or
            # duplicated). Ask again one entry lower, claiming one entry less meanwhile: a
            # follower that holds its log accepts and acknowledges again; one that lost it
            # refuses that too. A stale copy of this answer cannot confirm it: it names
            # another index than the probe now waited for.
            self.loss_check = self.match
            self._reset_state(ProgressState.PROBE)
            self.match -= 1
            self.next = self.match + 1
            return True
        # Refused again, one entry lower: it lost what it acknowledged. Nothing it held is
        # known any more; find where the logs match now (probing at ``match`` for ever would
        # never get there).
        self.lost_entries += 1
        self.loss_check = None
        self.match = 0
        self.next = max(1, min(rejected, match_hint + 1))
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        """Whether the leader must hold back AppendEntries to this follower for now."""
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def sent_entries(self, count: int, size: int) -> None:
        """Record that an AppendEntries with ``count`` entries (``size`` bytes) was sent."""
        if self.state is ProgressState.REPLICATE:
            if count:
                self.next += count
                self.inflights.add(self.next - 1, size)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True
