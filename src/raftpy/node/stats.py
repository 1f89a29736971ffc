"""NodeStats: every counter of one node in one typed object, so a metrics exporter reads one
place (``RaftNode.stats``, or ``RaftNode.status().stats`` for a copy, also over the wire).

Each part is written by the component that counts and read by everyone else:

- the top-level counters by the node's loop (:mod:`raftpy.node.node`);
- :class:`SnapshotStats` by the node's snapshot work (:mod:`raftpy.node.snapshots`);
- ``transport``: the transport's own :class:`~raftpy.transport.stats.TransportStats`, owned
  and written by the transport (:class:`~raftpy.transport.tcp.TcpTransport` keeps one); the
  node only holds a reference to it.

Counters are plain ints that only grow, incremented in place on hot paths (no locking: the
node and its transport run on one event loop).
"""

from __future__ import annotations

import dataclasses

import msgspec

from raftpy.node.latency import Histogram
from raftpy.transport.stats import TransportStats


class SnapshotStats(msgspec.Struct, kw_only=True):
    """Snapshot work since the node started (see :mod:`raftpy.node.snapshots`)."""

    taken: int = 0
    """Snapshots this node wrote of its own state (automatic and operators' ones)."""
    installed: int = 0
    """Snapshots received from a leader and installed in place of the state machine."""
    sent: int = 0
    """Transfers of a snapshot to a follower started by this node as leader."""
    bytes_sent: int = 0
    """Snapshot bytes put on the wire in chunks, resends included."""
    bytes_received: int = 0
    """Snapshot bytes that arrived in chunks, duplicates and refused chunks included."""
    chunks_refused: int = 0
    """Snapshot chunks refused unwritten: not from the current leader of the current term, or
    past the snapshot's announced size (:mod:`raftpy.node.transfer`)."""


class NodeStats(msgspec.Struct, kw_only=True):
    """Counters of one node since it was created (the live object is ``RaftNode.stats``;
    :meth:`copy` takes a picture that no longer moves)."""

    proposals: int = 0
    """Commands appended to the log as leader (each is one entry)."""
    batches: int = 0
    """Appends of queued proposals: each is one write and one AppendEntries per follower for
    a whole batch, so ``proposals / batches`` is the mean batch size."""
    syncs: int = 0
    """Successful fsyncs of the log by the loop: one per Ready that had to be durable, for all
    of its entries and hard state together (group commit). The syncs that precede a snapshot
    are not counted."""
    reads: int = 0
    """Linearizable reads answered after their ReadIndex round (Thesis §6.4); stale reads,
    answered at once from local state, are not counted."""
    applied: int = 0
    """Committed entries handed to the state machine (no-ops and configuration entries
    included; entries covered by an installed snapshot are not)."""
    rejected_messages: int = 0
    """Peer messages the core rejected as impossible from a correct peer (a second leader in
    one term, entries contradicting the committed log, ...): each was dropped and its sender's
    connection closed (see :mod:`raftpy.node.rejections`)."""
    leader_changes: int = 0
    """Times this node saw the leader change to a new one (etcd's ``leader_changes_seen``;
    losing the leader and finding the same one again counts again)."""
    elections: dict[str, int] = msgspec.field(default_factory=dict)
    """Campaigns this node started, by reason: ``"election timeout"``, ``"leader transfer"``
    (the core's own count, which the node holds a reference to)."""
    snapshots: SnapshotStats = msgspec.field(default_factory=SnapshotStats)
    """Snapshot work."""
    fsync: Histogram = msgspec.field(default_factory=Histogram)
    """How long each counted fsync of the log took (``syncs`` of them)."""
    wal_append: Histogram = msgspec.field(default_factory=Histogram)
    """How long writing one Ready's entries and hard state to the log took, before its
    fsync (the write system calls; with the file storage, buffered in the page cache)."""
    proposal: Histogram = msgspec.field(default_factory=Histogram)
    """A write's time on the leader's node, from its arrival to its answer (applied, or
    refused by the state machine): what a client sees, less its own round trip."""
    transport: TransportStats | None = None
    """The transport's counters (see :class:`~raftpy.transport.stats.TransportStats`).
    ``None`` until the node started, and for a transport that keeps no counters (in-process
    fakes)."""

    def copy(self) -> NodeStats:
        """A copy that the node's work no longer changes (nested parts included)."""
        transport = None if self.transport is None else dataclasses.replace(self.transport)
        return msgspec.structs.replace(
            self,
            snapshots=msgspec.structs.replace(self.snapshots),
            transport=transport,
            elections=dict(self.elections),
            fsync=self.fsync.copy(),
            wal_append=self.wal_append.copy(),
            proposal=self.proposal.copy(),
        )
