"""Status and PeerStatus: a read-only picture of one node's consensus state, for operators and
tests (``Raft.status()``; the node serves it as JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field

from raftpy.core.progress import Progress
from raftpy.core.ready import Role


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """The leader's view of one peer's replication."""

    match: int
    next: int
    state: str
    recent_active: bool
    learner: bool = False
    lost_entries: int = 0
    """How often the peer refused entries it had acknowledged (it lost data)."""
    inflight: int = 0
    """AppendEntries messages sent to the peer and not acknowledged yet."""

    @classmethod
    def of(cls, pr: Progress) -> PeerStatus:
        return cls(
            pr.match,
            pr.next,
            pr.state.value,
            pr.recent_active,
            pr.is_learner,
            pr.lost_entries,
            pr.inflights.count(),
        )


@dataclass(frozen=True, slots=True)
class Status:
    """A snapshot of a node's consensus state, for operators and tests."""

    id: int
    role: Role
    term: int
    vote: int | None
    leader_id: int | None
    commit: int
    applied: int
    last_index: int
    voters: tuple[int, ...]
    peers: dict[int, PeerStatus]
    learners: tuple[int, ...] = ()
    voters_outgoing: tuple[int, ...] = ()
    """Non-empty during a joint-consensus change (Thesis §4.3): the old configuration's voters."""
    role_reason: str = "start"
    """Why the role last changed: ``"election timeout"`` or ``"leader transfer"`` (a campaign
    started; a leader keeps the reason of the campaign it won), ``"election lost"``, ``"leader
    found"`` (a candidate met the leader of its term), ``"higher term"``, ``"check quorum"``
    (a leader lost touch with a majority, Thesis §6.2), ``"removed"`` (a leader no longer a
    voter, Thesis §4.2.2), or ``"start"``."""
    campaigns: dict[str, int] = field(default_factory=dict)
    """Campaigns started since the core was created, by reason (``"election timeout"``,
    ``"leader transfer"``)."""
