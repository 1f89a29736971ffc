"""NodeStatus: what a running node says about itself, for operators, tests and tools.

:meth:`raftpy.node.RaftNode.status` returns it; a client asks any node for it with
``Client.status()`` (``ClientOp.STATUS``), which carries it as msgpack of the Struct (a map
of the field names below, ``msgspec.msgpack.encode(status)``) and reads it back with
:func:`decode_status`. It is a picture taken at one moment of the node's own view: a
follower's may lag behind the leader's.

Indexes are log indexes (the first entry is 1; 0 means "none yet"); terms count from 0.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from raftpy.core.messages import DECODE_ERRORS, NodeId, NonNeg, SnapshotMeta
from raftpy.core.status import Status
from raftpy.errors import RemoteProtocolError
from raftpy.node.lag import AppendTimes, LastContact
from raftpy.node.leadership import LeadershipEvent
from raftpy.node.stats import NodeStats


class PeerReplication(msgspec.Struct, frozen=True, kw_only=True):
    """The leader's view of how far one member's log is replicated (Raft §5.3)."""

    address: str | None
    """The member's ``host:port`` (``None`` if the node does not know it)."""
    match: NonNeg
    """The highest index known to be in that member's log."""
    next: NonNeg
    """The next index the leader sends it."""
    state: str
    """How the leader sends to it: ``"probe"`` (looking for where the logs match),
    ``"replicate"`` (streaming appends) or ``"snapshot"`` (a snapshot is on its way)."""
    lag: int
    """Entries the member is behind the leader's log: ``last_index - match``."""
    active: bool
    """Whether the member was heard from within the last election timeout."""
    lost_entries: NonNeg = 0
    """How often the member refused entries it had acknowledged: it lost part of its log (a
    wiped or restored disk; README.md, "Changing members")."""
    inflight: NonNeg = 0
    """AppendEntries messages sent to it and not acknowledged yet (the window is
    ``RaftConfig.max_inflight_msgs``)."""
    last_contact: float | None = None
    """Seconds since the leader last heard from it (any message); ``None``: never since this
    node started (and for the leader itself: 0.0)."""
    lag_seconds: float | None = None
    """Seconds since the leader appended the first entry the member lacks (0.0 when caught
    up): how stale its copy is (:mod:`raftpy.node.lag`). ``None`` from a node too old to
    report it."""


class TransferStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot transfer in progress (:mod:`raftpy.node.transfer`)."""

    peer: NodeId
    """The other end: the follower it goes to, or the leader it comes from."""
    direction: str
    """``"send"`` (this node leads and streams it) or ``"receive"``."""
    index: NonNeg
    """The last index the snapshot covers."""
    bytes_done: NonNeg
    """Bytes the receiver holds (acknowledged ones, when sending)."""
    size: NonNeg
    """The snapshot file's whole size in bytes."""
    started: float
    """When the transfer started, in unix seconds."""


class SnapshotStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The node's newest snapshot and its snapshot counters (see
    :class:`~raftpy.node.stats.SnapshotStats` for what each counts)."""

    index: NonNeg
    """The last index the snapshot covers."""
    term: NonNeg
    """The term of that entry."""
    taken: NonNeg
    """Snapshots this node wrote of its own state since it started."""
    installed: NonNeg
    """Snapshots received from a leader and installed since it started."""
    sent: NonNeg
    """Snapshot transfers to followers started since it started."""
    bytes_sent: NonNeg
    """Snapshot bytes sent to followers, resends included."""
    bytes_received: NonNeg
    """Snapshot bytes received from leaders, duplicates included."""


class NodeStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One node's picture of itself (see the module docstring).

    The consensus fields (``role`` to ``peers``) are ``None`` only before the node started;
    a node that stopped still reports its last state, with ``running`` false.
    """

    id: NodeId
    """The node's id."""
    address: str
    """Where it serves peers and clients (``host:port``)."""
    running: bool
    """Whether it is started and not stopping."""
    role: str | None
    """``"follower"``, ``"pre-candidate"``, ``"candidate"`` or ``"leader"`` (the values of
    :class:`~raftpy.core.ready.Role`)."""
    term: NonNeg | None
    """Its current term."""
    leader: NodeId | None
    """The leader it knows of in that term; also ``None`` when it knows none."""
    leader_address: str | None
    """That leader's address; also ``None`` when it knows no leader."""
    commit: NonNeg | None
    """Its commit index: the highest index it knows to be committed."""
    applied: NonNeg | None
    """The highest index its state machine applied (a snapshot's index counts as applied)."""
    last_index: NonNeg | None
    """The index of the last entry in its log (durable or not yet)."""
    first_index: NonNeg | None
    """The index of the first entry still in its log (earlier ones were compacted into a
    snapshot)."""
    snapshot: SnapshotStatus | None
    """Its newest snapshot with the snapshot counters; also ``None`` while it has none."""
    members: tuple[NodeId, ...] | None
    """The voting members, sorted."""
    learners: tuple[NodeId, ...] | None = None
    """The learners (members that receive the log but never vote), sorted."""
    voters_outgoing: tuple[NodeId, ...] | None = None
    """The old configuration's voters during a joint-consensus change (Thesis §4.3); empty
    otherwise."""
    member: bool | None = None
    """Whether this node is a member (voter or learner) of the membership in force: false on a
    node that was removed, or that is still joining."""
    peers: dict[NodeId, PeerReplication] | None
    """Replication to every member (itself included) while it leads; empty otherwise."""
    disk_full: bool
    """Whether the last sync failed for lack of space: proposals are refused until a retry
    succeeds."""
    failed: str | None
    """Why the node failed (a fatal storage error, or a crash of its loop); ``None`` while it
    has not."""
    stats: NodeStats
    """Every counter of the node, copied when the status was taken."""
    refused_members: dict[NodeId, str] = msgspec.field(default_factory=dict)
    """Members this node refuses because they came back with another data directory (they
    lost their disk and must not vote as their old selves): id -> why, with the fix (remove
    the member and add it back; README.md, "Changing members"). Empty when there are none
    (and from a node too old to report it)."""
    sessions: NonNeg | None = None
    """Client sessions open in this node's applied session table (README.md, "Sessions");
    ``None`` when not running (or from a node too old to report it)."""
    fsync_p99: float | None = None
    """The 99th percentile of its last 1,000 fsyncs of the log, in seconds (the whole
    history is in ``stats.fsync``); ``None`` before its first fsync."""
    elections: tuple[LeadershipEvent, ...] = ()
    """The last 32 changes of its role or of the leader it knows, oldest first, each with why
    (:class:`~raftpy.node.leadership.LeadershipEvent`)."""
    last_error: str | None = None
    """Its latest warning-or-worse event (a full disk, a rejected peer message, a failed
    snapshot transfer, a state machine that raised, a fatal error); ``None``: none since it
    started."""
    last_error_time: float | None = None
    """When ``last_error`` happened, in unix seconds."""
    transfers: tuple[TransferStatus, ...] = ()
    """Snapshot transfers in progress, sending and receiving."""
    healthy: bool = True
    """Whether the node's disk lets it lead: false while its fsync p99 exceeds
    ``NodeConfig.max_fsync_p99`` or its disk is full; it then hands leadership over and does
    not campaign (docs/health.md)."""
    unhealthy_reason: str | None = None
    """Why it is unhealthy (e.g. ``"disk full"``); ``None`` while healthy."""


def stopped_status(
    node_id: int, address: str, disk_full: bool, failed: str | None, stats: NodeStats
) -> NodeStatus:
    """The status of a node that is not running (before start)."""
    return NodeStatus(
        id=node_id,
        address=address,
        running=False,
        role=None,
        term=None,
        leader=None,
        leader_address=None,
        commit=None,
        applied=None,
        last_index=None,
        first_index=None,
        snapshot=None,
        members=None,
        peers=None,
        disk_full=disk_full,
        failed=failed,
        stats=stats,
    )


def replication(
    st: Status,
    address_of: Callable[[int | None], str | None],
    times: AppendTimes | None = None,
    contact: LastContact | None = None,
) -> dict[int, PeerReplication]:
    """Each member's replication as the core's status ``st`` shows it (empty unless it
    leads), with the lag in seconds from ``times`` and the last contact from ``contact``.

    The leader lists itself as active with no lag: it holds every entry it has (its
    ``match`` is what it synced; a tail not synced yet is not a lag behind anyone).
    """
    peers: dict[int, PeerReplication] = {}
    for node, p in st.peers.items():
        if node == st.id:
            peers[node] = PeerReplication(
                address=address_of(node),
                match=p.match,
                next=p.next,
                state=p.state,
                lag=0,
                active=True,
                lost_entries=p.lost_entries,
                inflight=0,
                last_contact=0.0,
                lag_seconds=0.0,
            )
            continue
        peers[node] = PeerReplication(
            address=address_of(node),
            match=p.match,
            next=p.next,
            state=p.state,
            lag=st.last_index - p.match,
            active=p.recent_active,
            lost_entries=p.lost_entries,
            inflight=p.inflight,
            last_contact=None if contact is None else contact.seconds_since(node),
            lag_seconds=None if times is None else times.lag_seconds(p.match, st.last_index),
        )
    if times is not None and peers:
        times.trim(min(p.match for p in peers.values()))
    return peers


def snapshot_status(latest: SnapshotMeta | None, stats: NodeStats) -> SnapshotStatus | None:
    """The newest snapshot ``latest`` with the snapshot counters, or ``None`` without one."""
    if latest is None:
        return None
    counts = stats.snapshots
    return SnapshotStatus(
        index=latest.index,
        term=latest.term,
        taken=counts.taken,
        installed=counts.installed,
        sent=counts.sent,
        bytes_sent=counts.bytes_sent,
        bytes_received=counts.bytes_received,
    )


_DECODER = msgspec.msgpack.Decoder(NodeStatus)


def decode_status(data: bytes) -> NodeStatus:
    """The status in a STATUS response, checked field by field against :class:`NodeStatus`.
    Raises :class:`~raftpy.errors.RemoteProtocolError` for anything else (the node sent
    garbage, or something that is not a status)."""
    try:
        return _DECODER.decode(data)
    except DECODE_ERRORS as exc:
        raise RemoteProtocolError(f"malformed status from the node: {exc}") from None
