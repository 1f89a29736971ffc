"""StatusReport: builds a running node's :class:`~raftpy.node.status.NodeStatus` from its parts.

:meth:`raftpy.node.RaftNode.status` asks it for a picture of the node at one moment: the
core's view (role, term, indexes, each peer's replication while it leads, Raft §5.3), the
newest snapshot and the transfers in progress, the counters, the health check, and the
operator history the node keeps beside the core (role changes, append times, peers' last
contact, the latest error). Each field is described on :class:`~raftpy.node.status.NodeStatus`.

The report holds the parts that live as long as the node; what a start or stop replaces (the
core, the snapshot driver, the transport) and the node's flags are passed to :meth:`build`.
It only reads: building a status changes nothing but the append-time record, which drops
times every member has passed (see :func:`~raftpy.node.status.replication`).
"""

from __future__ import annotations

from raftpy.core.raft import Raft
from raftpy.node.health import NodeHealth
from raftpy.node.lag import AppendTimes, LastContact
from raftpy.node.last_error import LastError
from raftpy.node.latency import RecentDurations
from raftpy.node.leadership import LeadershipHistory
from raftpy.node.members import NodeMembers
from raftpy.node.sessions import NodeSessions
from raftpy.node.snapshots import NodeSnapshots
from raftpy.node.stats import NodeStats
from raftpy.node.status import NodeStatus, replication, snapshot_status, stopped_status
from raftpy.transport.base import Transport, refused_peers

__all__ = ["StatusReport"]


class StatusReport:
    """One node's status builder (see the module docstring)."""

    def __init__(
        self,
        node_id: int,
        address: str,
        *,
        members: NodeMembers,
        sessions: NodeSessions,
        health: NodeHealth,
        last_error: LastError,
        recent_fsync: RecentDurations,
        leadership: LeadershipHistory,
        appends: AppendTimes,
        contact: LastContact,
    ) -> None:
        self._node_id = node_id
        self._address = address
        self._members = members
        self._sessions = sessions
        self._health = health
        self._last_error = last_error
        self._recent_fsync = recent_fsync
        self._leadership = leadership
        self._appends = appends
        self._contact = contact

    def build(
        self,
        raft: Raft | None,
        snaps: NodeSnapshots | None,
        transport: Transport | None,
        stats: NodeStats,
        *,
        running: bool,
        disk_full: bool,
        failed: str | None,
    ) -> NodeStatus:
        """The status now. ``raft`` is ``None`` before the node started (a short status);
        ``stats`` is a copy of the node's counters (the status keeps it)."""
        if raft is None:
            return stopped_status(self._node_id, self._address, disk_full, failed, stats)
        st = raft.status()
        address_of = self._members.address_of
        health = self._health.health
        return NodeStatus(
            id=self._node_id,
            address=self._address,
            running=running,
            role=st.role.value,
            term=st.term,
            leader=st.leader_id,
            leader_address=address_of(st.leader_id),
            commit=st.commit,
            applied=raft.log.applied,
            last_index=st.last_index,
            first_index=raft.log.first_index(),
            snapshot=snapshot_status(None if snaps is None else snaps.latest, stats),
            members=st.voters,
            learners=st.learners,
            voters_outgoing=st.voters_outgoing,
            member=self._node_id in raft.conf_state().members(),
            peers=replication(st, address_of, self._appends, self._contact),
            disk_full=disk_full,
            failed=failed,
            stats=stats,
            refused_members=refused_peers(transport),
            sessions=len(self._sessions),
            healthy=health.healthy,
            unhealthy_reason=health.reason,
            fsync_p99=self._recent_fsync.quantile(0.99),
            elections=self._leadership.events(),
            last_error=self._last_error.message,
            last_error_time=self._last_error.time,
            transfers=() if snaps is None else snaps.transfers(),
        )
