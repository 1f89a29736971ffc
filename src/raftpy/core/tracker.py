"""ProgressTracker: the one home of a node's membership and what it knows of each member.

It holds the configuration in force (a :class:`ConfState`, and the :class:`JointConfig`
derived from it, so the two can never disagree), the leader's :class:`Progress` of every
member (Raft Figure 2: nextIndex, matchIndex), and the votes of the current election. The
quorum arithmetic itself lives in :mod:`raftpy.core.quorum`; this module applies it to the
members' state. The design follows etcd raft's ``tracker.ProgressTracker``.

Invariant: the progress map has one entry per member (voter or learner), always; the
configuration only changes through :meth:`ProgressTracker.set_config`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping

from raftpy.core.messages import ConfState
from raftpy.core.progress import Progress
from raftpy.core.quorum import JointConfig, VoteResult
from raftpy.errors import InvariantViolation


class ProgressTracker:
    """Membership, per-member progress and election votes, as seen by node ``self_id``."""

    __slots__ = (
        "_conf",
        "_joint",
        "_max_inflight",
        "_max_inflight_bytes",
        "_members",
        "_progress",
        "_votes",
        "self_id",
    )

    def __init__(
        self,
        self_id: int,
        conf: ConfState,
        last_index: int,
        max_inflight: int,
        max_inflight_bytes: int | None,
    ) -> None:
        self.self_id = self_id
        self._max_inflight = max_inflight
        self._max_inflight_bytes = max_inflight_bytes
        self._progress: dict[int, Progress] = {}
        self._votes: dict[int, bool] = {}
        self._conf: ConfState
        self._joint: JointConfig
        self._members: tuple[int, ...]
        self.set_config(conf, last_index)

    # ------------------------------------------------------------------------------------------
    # Configuration
    # ------------------------------------------------------------------------------------------

    def set_config(self, conf: ConfState, last_index: int) -> None:
        """Adopt ``conf`` (Thesis §4: from storage at start, from a snapshot, later from a
        configuration entry). Members that stay keep their progress; new members start
        probing after ``last_index``; removed members are forgotten."""
        joint = JointConfig(frozenset(conf.voters), frozenset(conf.voters_outgoing))
        learners = frozenset(conf.learners)
        members = tuple(sorted(joint.voters() | learners))
        progress: dict[int, Progress] = {}
        for node in members:
            pr = self._progress.get(node)
            if pr is None:
                pr = self._new_progress(last_index)
            pr.is_learner = node in learners
            progress[node] = pr
        self._conf = conf
        self._joint = joint
        self._members = members
        self._progress = progress

    def conf_state(self) -> ConfState:
        """The configuration in force, as it is stored in snapshots."""
        return self._conf

    def voters(self) -> frozenset[int]:
        """Every voter, of both halves of a joint configuration (Thesis §4.3)."""
        return self._joint.voters()

    def is_voter(self, node: int) -> bool:
        """Whether ``node`` votes (Thesis §4.2.2: learners and removed servers never do)."""
        return node in self._joint.incoming or node in self._joint.outgoing

    def members(self) -> tuple[int, ...]:
        """Every voter and learner, in id order (determinism)."""
        return self._members

    def peers(self) -> Iterator[int]:
        """Every member but ourselves, in id order: whom the leader replicates to."""
        return (node for node in self._members if node != self.self_id)

    def voter_peers(self) -> Iterator[int]:
        """Every voter but ourselves, in id order: whom a candidate asks for votes."""
        return (node for node in sorted(self._joint.voters()) if node != self.self_id)

    def has_quorum(self, ids: Collection[int]) -> bool:
        """Whether ``ids`` hold a majority of each half of the configuration (Thesis §4.3)."""
        return self._joint.has_quorum(ids)

    # ------------------------------------------------------------------------------------------
    # Progress
    # ------------------------------------------------------------------------------------------

    def _new_progress(self, last_index: int) -> Progress:
        return Progress(last_index + 1, self._max_inflight, self._max_inflight_bytes)

    @property
    def progress(self) -> Mapping[int, Progress]:
        """Every member's progress, by id in id order. Read-only: members change only
        through :meth:`set_config`; the Progress objects themselves are the leader's to
        update."""
        return self._progress

    def visit_peers(self) -> Iterator[tuple[int, Progress]]:
        """``(id, progress)`` of every member but ourselves, in id order."""
        return ((node, pr) for node, pr in self._progress.items() if node != self.self_id)

    def reset_progress(self, last_index: int, self_match: int) -> None:
        """Forget everything known of the members (a new term): every follower starts
        probing after ``last_index``. Our own ``match`` is ``self_match``, the last index we
        hold durably (Thesis §10.2.1: our own entries count only once durable)."""
        progress: dict[int, Progress] = {}
        for node, old in self._progress.items():
            pr = self._new_progress(last_index)
            pr.is_learner = old.is_learner
            if node == self.self_id:
                pr.match = self_match
                pr.next = max(last_index + 1, self_match + 1)
            progress[node] = pr
        self._progress = progress

    def committed(self) -> int:
        """The largest index a quorum of voters hold (Raft §5.3; Thesis §4.3: a majority of
        each half of a joint configuration)."""
        return self._joint.committed_index({node: pr.match for node, pr in self._progress.items()})

    def quorum_active(self) -> bool:
        """Whether a quorum heard from us since :meth:`reset_recent_active` (we count
        ourselves): Thesis §6.2 CheckQuorum."""
        active = [
            node for node, pr in self._progress.items() if node == self.self_id or pr.recent_active
        ]
        return self._joint.has_quorum(active)

    def reset_recent_active(self) -> None:
        """Start a new CheckQuorum period: no peer counts as heard from yet."""
        for _, pr in self.visit_peers():
            pr.recent_active = False

    def check_invariants(self, last_index: int) -> None:
        """Raise :class:`InvariantViolation` unless the progress map tracks exactly the
        members and, for a leader whose log ends at ``last_index``, every member's progress
        satisfies ``0 <= match < next`` and ``match <= last_index``."""
        if tuple(self._progress) != self._members:
            raise InvariantViolation(
                f"node {self.self_id}: progress of {tuple(self._progress)}, members {self._members}"
            )
        for node, pr in self._progress.items():
            if not 0 <= pr.match < pr.next:
                raise InvariantViolation(f"leader {self.self_id}: progress of {node}: {pr}")
            if pr.match > last_index:
                raise InvariantViolation(
                    f"leader {self.self_id}: {node} matched {pr.match} past our last index"
                )

    # ------------------------------------------------------------------------------------------
    # Votes
    # ------------------------------------------------------------------------------------------

    def reset_votes(self) -> None:
        """A new election (or none): forget every vote."""
        self._votes = {}

    def record_vote(self, node: int, granted: bool) -> None:
        """Record ``node``'s answer; only its first answer of an election counts (Raft §5.2:
        a server votes at most once per term)."""
        self._votes.setdefault(node, granted)

    def votes(self) -> Mapping[int, bool]:
        return self._votes

    def vote_result(self) -> VoteResult:
        """Raft §5.2: won with a majority of grants, lost once a majority refused (Thesis
        §4.3: of each half of a joint configuration)."""
        return self._joint.vote_result(self._votes)
