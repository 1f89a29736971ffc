"""The simulator's cluster-wide safety checks: Raft's guarantees (Figure 3), checked across all
nodes of a :class:`~raftpy.testing.sim.SimCluster` as they happen.

A single node checks its own invariants (``Raft.check_invariants``); what only the whole
cluster can see is checked here, each property by one small class named for it:

- :class:`ElectionSafety`: at most one leader per term (Raft §5.2);
- :class:`OneVotePerTerm`: a server grants at most one vote per term, whatever crashes
  happen between (Raft §5.2, Figure 2: votedFor is persistent);
- :class:`LogMatching`: two stored entries with the same index and term are identical
  (Raft §5.3);
- :class:`LeaderCompleteness`: a new leader holds every committed entry (Raft §5.4);
- :class:`StateMachineSafety`: every node applies the same entry at each index, in order
  (Raft §5.4.3);
- :class:`SnapshotRestoreSafety`: a restored snapshot holds exactly what was committed
  (Raft §7);
- :class:`TermAndCommitMonotonic`: a node's term and commit index never go backwards, also
  across restarts (Raft §5.1, Figure 2);
- :class:`ReadIndexSafety`: a linearizable read reflects every write committed before it
  began (Thesis §6.4);
- :class:`MembershipAgreement`: every node has the same membership at the same applied
  index (Thesis §4: the configuration lives in the log, so it is as agreed as the log).

The node drivers (:mod:`raftpy.testing.sim_node`) feed them from the Ready loop, after every
event. A violation raises :class:`~raftpy.errors.InvariantViolation` at once; ``tag`` puts the
seed and the virtual time in its message, so the run can be replayed. No checker draws random
numbers: checking never changes a run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from raftpy.core.log import RaftLog
from raftpy.core.messages import ConfState, Entry, RequestVoteResponse, SnapshotMeta
from raftpy.core.ready import ReadState
from raftpy.core.storage import HardState
from raftpy.errors import InvariantViolation

__all__ = [
    "ElectionSafety",
    "LeaderCompleteness",
    "LogMatching",
    "MembershipAgreement",
    "OneVotePerTerm",
    "ReadIndexSafety",
    "SafetyCheckers",
    "SnapshotRestoreSafety",
    "StateMachineSafety",
    "TermAndCommitMonotonic",
]

Tag = Callable[[str], str]
"""Prefixes a violation's message with the seed and the virtual time."""


class ElectionSafety:
    """Raft §5.2, Figure 3 "Election Safety": at most one leader can be elected in a given
    term."""

    def __init__(self, tag: Tag) -> None:
        self._tag = tag
        self._leaders: dict[int, int] = {}  # term -> the node that led it

    def on_leader(self, node_id: int, term: int) -> None:
        """``node_id`` became leader of ``term``."""
        other = self._leaders.setdefault(term, node_id)
        if other != node_id:
            raise InvariantViolation(
                self._tag(f"nodes {other} and {node_id} both lead term {term} (election safety)")
            )


class OneVotePerTerm:
    """Raft §5.2 and Figure 2: "each server will vote for at most one candidate in a given
    term", and votedFor is persistent, so the rule holds across crashes. Checked on every
    granted vote reply that leaves a node, so a forgotten vote (not persisted, or not synced,
    before the reply) is caught when the second grant leaves, not only in the rarer runs
    where both candidates go on to win (which :class:`ElectionSafety` catches).

    Pre-votes are not checked (Thesis §9.6: a granted pre-vote is hypothetical and changes no
    state, so a server may grant several in a term). Granting the same candidate again is
    fine: a duplicated request, or one answered again after a restart from the persisted
    vote."""

    def __init__(self, tag: Tag) -> None:
        self._tag = tag
        self._votes: dict[tuple[int, int], int] = {}  # (voter, term) -> candidate

    def on_reply(self, m: RequestVoteResponse) -> None:
        """Node ``m.src`` sends the vote reply ``m`` (granted or not, pre-vote or not)."""
        if not m.granted or m.pre_vote:
            return
        voter, term, candidate = m.src, m.term, m.dst
        other = self._votes.setdefault((voter, term), candidate)
        if other != candidate:
            raise InvariantViolation(
                self._tag(
                    f"node {voter} granted its vote in term {term} to both {other} and "
                    f"{candidate} (one vote per term)"
                )
            )

    def on_wipe(self, node_id: int) -> None:
        """``node_id`` lost its disk on purpose (a test replacing a dead disk): it is a new
        server with no votes, which the others refuse to count as the old one until it is
        added again (:meth:`~raftpy.testing.sim.SimCluster.wipe`), so its old votes no
        longer bind it."""
        self._votes = {key: c for key, c in self._votes.items() if key[0] != node_id}


class LogMatching:
    """Raft §5.3, Figure 3 "Log Matching": if two logs contain an entry with the same index
    and term, the entries are identical (so are the logs up to it)."""

    def __init__(self, tag: Tag) -> None:
        self._tag = tag
        # _stored[index] is the first entry stored at index by any node; entries of other
        # terms at that index (rare: conflicting leaders) go to _stored_other.
        self._stored: list[Entry | None] = [None]
        self._stored_other: dict[tuple[int, int], Entry] = {}

    def on_stored(self, node_id: int, entries: Sequence[Entry]) -> None:
        """``node_id`` appends ``entries`` (consecutive, non-empty) to its stable log."""
        stored = self._stored
        lo = entries[0].index
        if stored[lo : lo + len(entries)] == list(entries):
            return  # the common case, compared at once
        for e in entries:
            index = e.index
            if index >= len(stored):
                stored.extend([None] * (index + 1 - len(stored)))
            first = stored[index]
            if first is None:
                stored[index] = e
                continue
            other = (
                first if first.term == e.term else self._stored_other.setdefault((index, e.term), e)
            )
            if other != e:
                raise InvariantViolation(
                    self._tag(
                        f"node {node_id} stored a different entry at index {index} term "
                        f"{e.term} (log matching)"
                    )
                )


class StateMachineSafety:
    """Raft §5.4.3, Figure 3 "State Machine Safety": if a server has applied a log entry at a
    given index, no other server ever applies a different entry at that index. Each node also
    applies in index order, without gaps (Raft §5.3: "apply log[lastApplied]" in turn).

    :attr:`committed` is the cluster's record of what was applied (hence committed) at each
    index; :class:`LeaderCompleteness` and :class:`SnapshotRestoreSafety` check against it."""

    def __init__(self, tag: Tag) -> None:
        self._tag = tag
        # committed[index]: the entry some node applied at index (None: not applied yet).
        self.committed: list[Entry | None] = [None]

    def on_core_applied(self, node_id: int, core_applied: int, last_applied: int) -> None:
        """The core's applied index (Raft Figure 2, lastApplied, moved by the driver's
        ``applied_to``) must be what ``node_id``'s state machine really applied: this checker
        counts on its own so that it never has to trust the core."""
        if core_applied != last_applied:
            raise InvariantViolation(
                self._tag(
                    f"node {node_id}: the core says applied {core_applied}, its state machine "
                    f"applied {last_applied}"
                )
            )

    def on_apply(self, node_id: int, last_applied: int, entries: Sequence[Entry]) -> None:
        """``node_id``, which applied up to ``last_applied``, applies ``entries`` (non-empty).
        Whole batches are compared at once (in C): this runs for every entry of every node."""
        lo = entries[0].index
        hi = lo + len(entries)
        if lo != last_applied + 1 or [e.index for e in entries] != list(range(lo, hi)):
            raise InvariantViolation(
                self._tag(
                    f"node {node_id} applied indexes {[e.index for e in entries][:10]}... after "
                    f"{last_applied} (out of order)"
                )
            )
        committed = self.committed
        known = committed[lo:hi]
        if known != entries[: len(known)]:
            for entry, seen in zip(entries, known, strict=False):
                if seen is not None and seen != entry:
                    raise InvariantViolation(
                        self._tag(
                            f"node {node_id} applied {entry} at index {entry.index}, but another "
                            f"node applied {seen} there (state machine safety)"
                        )
                    )
                if seen is None:
                    committed[entry.index] = entry
        if len(committed) < lo:
            committed.extend([None] * (lo - len(committed)))
        committed.extend(entries[len(committed) - lo :])


class LeaderCompleteness:
    """Raft §5.4, Figure 3 "Leader Completeness": if a log entry is committed in a given term,
    it is present in the logs of the leaders of all higher terms (the election restriction of
    Raft §5.4.1 is what ensures it)."""

    def __init__(self, tag: Tag, applied: StateMachineSafety) -> None:
        self._tag = tag
        self._applied = applied

    def on_leader(self, node_id: int, term: int, log: RaftLog) -> None:
        """``node_id`` became leader of ``term`` with ``log``: it must hold every entry any
        node applied (entries below its snapshot are covered by the snapshot)."""
        committed = self._applied.committed
        for index in range(log.first_index(), len(committed)):
            entry = committed[index]
            if entry is not None and log.term(index) != entry.term:
                raise InvariantViolation(
                    self._tag(
                        f"leader {node_id} of term {term} lacks committed entry {index} "
                        f"(term {entry.term}); it has term {log.term(index)} (leader completeness)"
                    )
                )


class SnapshotRestoreSafety:
    """Raft §7: a snapshot stands for a prefix of the committed log, so restoring one must
    give a state machine holding exactly what was applied at those indexes (State Machine
    Safety through snapshots), never less than a node already applied, and the snapshot a
    log was compacted to must exist (its file is durable before the log refers to it)."""

    def __init__(self, tag: Tag, applied: StateMachineSafety) -> None:
        self._tag = tag
        self._applied = applied

    def on_boot(self, node_id: int, meta: SnapshotMeta, has_file: bool) -> None:
        """``node_id`` starts from a log compacted to ``meta``."""
        if not has_file:
            raise InvariantViolation(
                self._tag(f"node {node_id}: no snapshot file for index {meta.index}")
            )

    def on_install(self, node_id: int, meta: SnapshotMeta, last_applied: int) -> None:
        """``node_id``, which applied up to ``last_applied``, installs the leader's ``meta``."""
        if meta.index < last_applied:
            raise InvariantViolation(
                self._tag(f"node {node_id} installs snapshot {meta.index} below applied")
            )

    def on_restore(
        self, node_id: int, meta: SnapshotMeta, applied: Sequence[tuple[int, bytes]]
    ) -> None:
        """``node_id`` restores snapshot ``meta``, whose state machine applied ``applied``
        (``(index, command)`` in order)."""
        committed = self._applied.committed
        for index, command in applied:
            seen = committed[index] if index < len(committed) else None
            if seen is not None and seen.data != command:
                raise InvariantViolation(
                    self._tag(
                        f"node {node_id} restored a snapshot holding {command!r} at index {index},"
                        f" but {seen.data!r} was applied there (state machine safety)"
                    )
                )
        if applied and applied[-1][0] > meta.index:
            raise InvariantViolation(self._tag(f"snapshot {meta.index} holds later entries"))


class TermAndCommitMonotonic:
    """Raft §5.1 and Figure 2: a server's current term only increases, and an index once
    committed stays committed, so neither the persisted term nor the persisted commit index
    ever goes backwards. Across a crash only synced writes must survive: a restart is
    compared with what was last synced, and continues from what survived."""

    def __init__(self, tag: Tag, n: int) -> None:
        self._tag = tag
        # Per node (nodes may be added later: absent means nothing written yet).
        self._written: dict[int, tuple[int, int]] = dict.fromkeys(range(n), (0, 0))
        self._synced: dict[int, tuple[int, int]] = dict.fromkeys(range(n), (0, 0))

    def on_persist(self, node_id: int, hs: HardState) -> None:
        """``node_id`` writes hard state ``hs``."""
        self._check(node_id, hs, self._written.get(node_id, (0, 0)), "persisted")
        self._written[node_id] = (hs.term, hs.commit)

    def on_sync(self, node_id: int) -> None:
        """``node_id``'s writes so far are durable."""
        self._synced[node_id] = self._written.get(node_id, (0, 0))

    def on_restart(self, node_id: int, hs: HardState) -> None:
        """``node_id`` starts again with the hard state ``hs`` its storage recovered."""
        self._check(node_id, hs, self._synced.get(node_id, (0, 0)), "restarted with")
        # Writes that were not synced may be gone: monotonicity restarts from what survived.
        self._written[node_id] = (hs.term, hs.commit)

    def on_wipe(self, node_id: int) -> None:
        """``node_id`` lost its disk on purpose (a test replacing a dead disk): it starts from
        nothing, which is not a regression of the node that had the old disk."""
        self._written[node_id] = self._synced[node_id] = (0, 0)

    def _check(self, node_id: int, hs: HardState, before: tuple[int, int], what: str) -> None:
        if hs.term < before[0] or hs.commit < before[1]:
            raise InvariantViolation(
                self._tag(
                    f"node {node_id} {what} term {hs.term} commit {hs.commit}, below term "
                    f"{before[0]} commit {before[1]}"
                )
            )


class ReadIndexSafety:
    """Thesis §6.4: a linearizable read must reflect every write committed before the read
    began. With ReadIndex the leader answers a read with a :class:`ReadState` whose index the
    read is served at, so that index must be at least the highest commit index any node had
    reached when the read was issued. A stale leader (cut off from the majority, or elected
    but without an entry of its own term committed yet) would answer below it.

    Also: a ReadState answers a read issued at that node, and each read is answered or
    dropped at most once."""

    def __init__(self, tag: Tag) -> None:
        self._tag = tag
        self._highest_commit = 0  # the highest commit index any node has persisted
        self._open: dict[bytes, tuple[int, int]] = {}  # context -> (node, commit at issue)

    def on_commit(self, index: int) -> None:
        """Some node reached commit index ``index`` (it persists it in its hard state)."""
        if index > self._highest_commit:
            self._highest_commit = index

    def on_issue(self, node_id: int, context: bytes) -> None:
        """A read tagged ``context`` (unique) is issued at ``node_id``, the leader."""
        if context in self._open:
            raise ValueError(f"read context {context!r} is already open")
        self._open[context] = (node_id, self._highest_commit)

    def on_read_state(self, node_id: int, rs: ReadState) -> None:
        """``node_id``'s Ready says the read ``rs.context`` may be served at ``rs.index``."""
        floor = self._take(node_id, rs.context, "answered")
        if rs.index < floor:
            raise InvariantViolation(
                self._tag(
                    f"node {node_id} answered read {rs.context!r} at index {rs.index}, but "
                    f"index {floor} was committed before the read was issued (stale read)"
                )
            )

    def on_dropped(self, node_id: int, context: bytes) -> None:
        """``node_id`` lost leadership before the read ``context`` was confirmed."""
        self._take(node_id, context, "dropped")

    def on_crash(self, node_id: int) -> None:
        """``node_id`` stopped: its open reads are lost with its core."""
        self._open = {c: v for c, v in self._open.items() if v[0] != node_id}

    def _take(self, node_id: int, context: bytes, what: str) -> int:
        """Close the read ``context`` open at ``node_id``; return its commit floor."""
        issued = self._open.pop(context, None)
        if issued is None or issued[0] != node_id:
            raise InvariantViolation(
                self._tag(f"node {node_id} {what} read {context!r}, which is not open there")
            )
        return issued[1]


class MembershipAgreement:
    """Thesis §4: the membership is part of the replicated log (configuration entries, and
    snapshots), so two nodes that applied the log up to the same index must have the same
    membership in force there. A core that mistracks it (a configuration entry not undone when
    truncated, a snapshot restoring another membership, a joint configuration left on one
    node only) breaks this before it breaks anything else."""

    def __init__(self, tag: Tag) -> None:
        self._tag = tag
        self._at: dict[int, tuple[int, ConfState]] = {}  # index -> (first node, membership)

    def on_applied(self, node_id: int, index: int, conf: ConfState) -> None:
        """``node_id`` applied up to ``index`` (or restored a snapshot there) and has ``conf``
        in force at ``index``. A membership without voters is not checked: it is a node that
        joined with an empty disk and has not yet reached a configuration entry (the cluster's
        bootstrap membership is not in the log; the joiner learns it from the first one)."""
        if not conf.voters:
            return
        first = self._at.setdefault(index, (node_id, conf))
        if first[1] != conf:
            raise InvariantViolation(
                self._tag(
                    f"node {node_id} has membership {conf} at index {index}, node {first[0]} "
                    f"had {first[1]} there (membership agreement)"
                )
            )


class SafetyCheckers:
    """Every cluster-wide check of one simulated cluster of ``n`` nodes, for its node
    drivers to feed."""

    def __init__(self, n: int, tag: Tag) -> None:
        self.election = ElectionSafety(tag)
        self.votes = OneVotePerTerm(tag)
        self.log_matching = LogMatching(tag)
        self.state_machine = StateMachineSafety(tag)
        self.leader_completeness = LeaderCompleteness(tag, self.state_machine)
        self.snapshots = SnapshotRestoreSafety(tag, self.state_machine)
        self.monotonic = TermAndCommitMonotonic(tag, n)
        self.reads = ReadIndexSafety(tag)
        self.membership = MembershipAgreement(tag)
