"""What no correct peer sends: the checks :meth:`Raft.step <raftpy.core.raft.Raft.step>` and
:meth:`Raft.install_snapshot <raftpy.core.raft.Raft.install_snapshot>` run before they change
anything.

Decoding (:mod:`raftpy.core.messages`) already refused what is wrong in a message alone (a
field out of range, entries not numbered one by one). What is left needs the receiver's state:
a second leader of a term, entries or a snapshot that contradict the committed log, an
acknowledgement of entries the leader never had, a term no real peer can be at. Each raises
:class:`~raftpy.errors.RejectedMessage` naming the sender; the caller has changed nothing yet,
so a forged or buggy peer costs its connection, never the node. Pure functions of the state
they are given.
"""

from __future__ import annotations

from raftpy.core.log import RaftLog
from raftpy.core.messages import (
    MAX_TERM_JUMP,
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    Message,
    SnapshotMeta,
    TimeoutNow,
)
from raftpy.errors import RejectedMessage

_FROM_LEADER = (AppendEntries, Heartbeat, TimeoutNow)


def check_message(m: Message, term: int, lead: int | None, leading: bool, log: RaftLog) -> None:
    """Raise :class:`RejectedMessage` if no correct peer sends ``m`` (of term ``term`` or a
    later one) to a node at ``term`` that knows ``lead`` as its leader (itself when
    ``leading``) and holds ``log``."""
    check_term(m.src, m.term, term)
    if isinstance(m, _FROM_LEADER):
        if m.term == term:
            check_leader_claim(m.src, type(m).__name__, term, lead)
        if isinstance(m, AppendEntries):
            check_append_against_commit(m, log)
    elif isinstance(m, AppendEntriesResponse) and leading and m.term == term:
        check_append_ack(m, log)


def check_snapshot(
    meta: SnapshotMeta, leader: int, snapshot_term: int, term: int, lead: int | None, log: RaftLog
) -> None:
    """The same for a whole snapshot handed to the core, sent by ``leader`` in
    ``snapshot_term``."""
    check_term(leader, snapshot_term, term)
    if snapshot_term == term:
        check_leader_claim(leader, "InstallSnapshot", term, lead)
    # Raft §5.4, as for AppendEntries: a snapshot's last entry, if we committed that index,
    # is our committed entry.
    if meta.index <= log.committed:
        check_committed_term(leader, "snapshot", meta.index, meta.term, log)


def check_term(src: int, their_term: int, term: int) -> None:
    # Raft §5.2: terms grow by one per election; no real peer is this far ahead of us, and
    # adopting such a term could wedge every later election at MAX_TERM (it is persisted).
    if their_term > term + MAX_TERM_JUMP:
        raise RejectedMessage(
            src, f"term {their_term} is more than {MAX_TERM_JUMP} past this node's {term}"
        )


def check_leader_claim(src: int, kind: str, term: int, lead: int | None) -> None:
    # Raft §5.2 (Election Safety): at most one leader per term. We know this term's leader
    # (ourselves, if we lead: then ``lead`` is our id) and it is not the sender: the sender's
    # claim is false.
    if lead is not None and lead != src:
        raise RejectedMessage(src, f"{kind} for term {term}, of which node {lead} is the leader")


def check_append_against_commit(m: AppendEntries, log: RaftLog) -> None:
    # Raft §5.4 (Leader Completeness): a leader of our term or a later one holds every entry we
    # know committed, so its prev entry and entries agree with our committed prefix wherever
    # they overlap (compacted entries cannot be compared and are skipped). Decoding checked
    # that the entries follow prev_index one by one.
    committed = log.committed
    if m.prev_index <= committed:
        check_committed_term(m.src, "AppendEntries", m.prev_index, m.prev_term, log)
    for entry in m.entries:
        if entry.index > committed:
            break
        check_committed_term(m.src, "AppendEntries", entry.index, entry.term, log)


def check_committed_term(src: int, kind: str, index: int, term: int, log: RaftLog) -> None:
    ours = log.term(index)
    if ours is not None and ours != term:
        raise RejectedMessage(
            src,
            f"{kind} has term {term} at index {index}, where the committed entry has term {ours}",
        )


def check_append_ack(m: AppendEntriesResponse, log: RaftLog) -> None:
    # A follower acknowledges at most what the leader sent it in this term, and a leader's
    # log only grows within its term: an acknowledgement past our log is false.
    if m.success and m.index > log.last_index():
        raise RejectedMessage(
            m.src,
            f"AppendEntriesResponse acknowledges index {m.index}, past the leader's last "
            f"index {log.last_index()}",
        )
