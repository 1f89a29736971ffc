"""RaftConfig: the core's tunables, validated."""

from __future__ import annotations

from dataclasses import dataclass

from raftpy.core.messages import MAX_NODE_ID


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Settings for one node's consensus core.

    - ``id``: this node's id among the members. The driver that builds the core always sets
      it from its own node id: :class:`~raftpy.node.RaftNode` fills it into
      ``NodeConfig.raft`` (one config shared by every member, whose ``id`` is a placeholder),
      the simulator gives each simulated node its own.
    - ``election_ticks``: a follower that hears nothing for a random number of ticks in
      ``[election_ticks, 2 * election_ticks)`` starts an election (Raft §5.2).
    - ``heartbeat_ticks``: the leader's heartbeat interval; must be well below
      ``election_ticks`` (Raft §5.6: broadcastTime << electionTimeout).
    - ``pre_vote`` (Thesis §9.6) and ``check_quorum`` (Thesis §6.2): on by default.
    - ``max_msg_bytes``: entry bytes per AppendEntries.
    - ``max_inflight_msgs`` / ``max_inflight_bytes``: the per-follower window of unacknowledged
      appends in replicate state.
    - ``max_uncommitted_bytes``: the leader refuses proposals beyond this many bytes appended
      but not committed (back-pressure; ``None`` disables it).
    - ``max_apply_bytes``: committed entry bytes handed out per Ready. A node applies one
      Ready's entries as one batch, all decoded in memory at once: a restart that replays a
      long log, or a follower catching up, holds this many bytes of entries (about twice that
      as Python objects), so it stays small, as etcd's ``MaxCommittedSizePerReady`` (which
      defaults to its message size).
    - ``max_entry_bytes``: the largest single command accepted.
    - ``max_learner_lag``: a membership change making a server a voter is refused (unless
      forced) while it is more than this many entries behind the leader (Thesis §4.2.1).
    - ``lease_ticks``: how many of the leader's ticks a lease lasts from the send of the
      heartbeat round a quorum acknowledged (Thesis §6.4.1; :mod:`raftpy.core.lease` says
      how long is safe). 0 (the default) turns lease reads off; they also need
      ``check_quorum``. At most ``election_ticks - 1``.
    """

    id: int
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_msg_bytes: int = 1 << 20
    max_inflight_msgs: int = 256
    max_inflight_bytes: int | None = None
    max_uncommitted_bytes: int | None = 64 << 20
    max_apply_bytes: int = 1 << 20
    max_entry_bytes: int = 16 << 20
    max_learner_lag: int = 1000
    lease_ticks: int = 0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        if not 0 <= self.id <= MAX_NODE_ID:
            raise ValueError(f"id must be in [0, {MAX_NODE_ID}], got {self.id}")
        if self.heartbeat_ticks < 1:
            raise ValueError(f"heartbeat_ticks must be >= 1, got {self.heartbeat_ticks}")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ValueError(
                f"election_ticks ({self.election_ticks}) must exceed heartbeat_ticks "
                f"({self.heartbeat_ticks})"
            )
        if not 0 <= self.lease_ticks < self.election_ticks:
            # Followers refuse votes for at least election_ticks - 1 ticks after a heartbeat.
            raise ValueError(
                f"lease_ticks must be in [0, election_ticks - 1 = {self.election_ticks - 1}], "
                f"got {self.lease_ticks}"
            )
        if self.max_learner_lag < 0:
            raise ValueError(f"max_learner_lag must be >= 0, got {self.max_learner_lag}")
        for name in ("max_msg_bytes", "max_inflight_msgs", "max_apply_bytes", "max_entry_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_inflight_bytes", "max_uncommitted_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
