"""Status and PeerStatus: a read-only picture of one node's consensus state, for operators and
tests (``Raft.status()``; the node serves it as JSON)."""

from __future__ import annotations

from dataclasses import dataclass

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

    @classmethod
    def of(cls, pr: Progress) -> PeerStatus:
        return cls(
            pr.match, pr.next, pr.state.value, pr.recent_active, pr.is_learner, pr.lost_entries
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
