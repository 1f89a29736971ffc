"""Every message Raft peers exchange, as frozen msgspec Structs in tagged unions.

:data:`Message` is what the consensus core steps and sends (:meth:`raftpy.core.raft.Raft.step`,
``Ready.messages``). :data:`PeerMessage` is everything on the wire between peers: those, plus
the snapshot chunks (:class:`InstallSnapshot`) and their answers that drivers exchange to move
a snapshot file (:mod:`raftpy.node.transfer`); the core never sees those two.

All structs here are ``gc=False``: they are frozen and hold only ints, bytes, enums and tuples
of such structs, so they can never be part of a reference cycle, and leaving millions of log
entries out of the cycle collector's scans keeps collection pauses away (measured: about 40% of
simulator CPU time before).

Each message carries ``term``, ``src`` and ``dst``. ``None`` (never 0) means "none". Index and
term fields are non-negative; node ids are non-negative integers. Encoding is msgpack with the
struct laid out as an array whose first element is the message's integer tag, so a message
costs a few bytes of framing. No pickle anywhere.

The wire format is versioned by the transport handshake (``PROTOCOL_VERSION``); adding a message
kind means adding a new tag, never renumbering one.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Annotated, Final

import msgspec

from raftpy.errors import MessageDecodeError

PROTOCOL_VERSION: Final = 1

NonNeg = Annotated[int, msgspec.Meta(ge=0)]
NodeId = Annotated[int, msgspec.Meta(ge=0)]


class EntryKind(enum.IntEnum):
    """What a log entry holds."""

    COMMAND = 0
    """A user command, handed to ``StateMachine.apply``."""
    NOOP = 1
    """The empty entry a new leader appends to commit its term (Raft §8, Thesis §6.4)."""
    CONFIG = 2
    """A membership change (Thesis §4); its payload is an encoded :class:`ConfState`."""


class Entry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One log entry (Raft Figure 2: 'log[]').

    ``index`` is its position (the first entry is 1), ``term`` the leader's term when it was
    created, ``kind`` what ``data`` holds.
    """

    term: NonNeg
    index: NonNeg
    kind: EntryKind
    data: bytes


class ConfState(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A cluster membership (Thesis §4). Lives in the log and in every snapshot.

    ``voters`` count for elections and commitment; ``learners`` receive the log but never vote.
    ``voters_outgoing`` is non-empty only during a joint-consensus change (Thesis §4.3): then
    decisions need a majority of ``voters`` *and* of ``voters_outgoing``.
    """

    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...] = ()
    voters_outgoing: tuple[NodeId, ...] = ()


class SnapshotMeta(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What a snapshot covers: every entry up to ``index`` (whose term is ``term``), and the
    membership ``conf`` in force at that index (Raft §7)."""

    index: NonNeg
    term: NonNeg
    conf: ConfState


class RequestVote(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=1):
    """A candidate asks for a vote (Raft §5.2), or a pre-candidate asks whether it could win
    one (``pre_vote``, Thesis §9.6).

    ``last_log_index``/``last_log_term`` identify the sender's last entry, for the election
    restriction (Raft §5.4.1). For a pre-vote, ``term`` is the term the sender *would* use
    (its current term + 1): receivers do not adopt it. ``transfer`` marks an election started by
    a leadership transfer (Thesis §3.10), which may disrupt a live leader.
    """

    term: NonNeg
    src: NodeId
    dst: NodeId
    last_log_index: NonNeg
    last_log_term: NonNeg
    pre_vote: bool = False
    transfer: bool = False


class RequestVoteResponse(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=2):
    """The answer to :class:`RequestVote` (Raft §5.2). ``granted`` is the vote; ``pre_vote``
    echoes the request's kind. A granted pre-vote carries the request's term, a refusal the
    voter's own term."""

    term: NonNeg
    src: NodeId
    dst: NodeId
    granted: bool
    pre_vote: bool = False


class AppendEntries(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=3):
    """The leader replicates entries (Raft §5.3).

    ``prev_index``/``prev_term`` identify the entry just before ``entries`` (the consistency
    check); ``entries`` may be empty (a probe); ``commit`` is the leader's commit index.
    """

    term: NonNeg
    src: NodeId
    dst: NodeId
    prev_index: NonNeg
    prev_term: NonNeg
    entries: tuple[Entry, ...]
    commit: NonNeg


class AppendEntriesResponse(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=4):
    """The answer to :class:`AppendEntries`.

    On success ``index`` is the last index the follower now shares with the leader. On
    rejection ``index`` echoes the rejected ``prev_index``, and the hint says where the logs
    may match: ``hint_index`` is the largest index at or below ``min(prev_index, last_index)``
    whose term is at most the leader's ``prev_term``, and ``hint_term`` is that entry's term,
    so the leader can skip a whole conflicting term per rejection (Raft §5.3, the optimisation
    described after Figure 7).
    """

    term: NonNeg
    src: NodeId
    dst: NodeId
    success: bool
    index: NonNeg
    hint_index: NonNeg | None = None
    hint_term: NonNeg | None = None


class Heartbeat(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=5):
    """An empty AppendEntries that only asserts leadership (Raft §5.2).

    ``commit`` is at most what the follower is known to hold, so it never points past the
    follower's log. ``context`` ties the heartbeat to a ReadIndex request (Thesis §6.4).
    """

    term: NonNeg
    src: NodeId
    dst: NodeId
    commit: NonNeg
    context: bytes | None = None


class HeartbeatResponse(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=6):
    """The answer to :class:`Heartbeat`; ``context`` is echoed back."""

    term: NonNeg
    src: NodeId
    dst: NodeId
    context: bytes | None = None


class InstallSnapshot(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=7):
    """One chunk of a snapshot sent to a follower that lags behind the leader's log (Raft §7).

    ``data`` holds bytes ``[offset, offset + len(data))`` of the snapshot; ``done`` marks the
    last chunk. Drivers exchange chunks (:mod:`raftpy.node.transfer`); the core asks for a
    transfer with ``Ready.snapshot_requests`` and is handed the whole, verified file with
    ``Raft.install_snapshot``.
    """

    term: NonNeg
    src: NodeId
    dst: NodeId
    meta: SnapshotMeta
    offset: NonNeg
    data: bytes
    done: bool
    size: NonNeg = 0  # the whole file's length: receivers refuse bytes past it


class InstallSnapshotResponse(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=8):
    """The answer to :class:`InstallSnapshot`. ``offset`` is how many bytes the follower holds
    (so a transfer can resume); ``index`` is the snapshot's index; ``rejected`` means the
    follower refused it (for example, it is stale)."""

    term: NonNeg
    src: NodeId
    dst: NodeId
    index: NonNeg
    offset: NonNeg
    done: bool
    rejected: bool = False


class TimeoutNow(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=9):
    """The leader tells an up-to-date follower to start an election at once (Thesis §3.10)."""

    term: NonNeg
    src: NodeId
    dst: NodeId


Message = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | Heartbeat
    | HeartbeatResponse
    | TimeoutNow
)
"""Every message the consensus core steps and sends: a tagged union."""

PeerMessage = Message | InstallSnapshot | InstallSnapshotResponse
"""Every message on the wire between peers: the core's :data:`Message`, plus snapshot chunks
and their answers (the drivers' business, :mod:`raftpy.node.transfer`)."""

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[PeerMessage] = msgspec.msgpack.Decoder(PeerMessage)


def encode_message(message: PeerMessage) -> bytes:
    """Encode one message to bytes (msgpack, tagged)."""
    return _encoder.encode(message)


def decode_message(data: bytes | bytearray | memoryview) -> PeerMessage:
    """Decode bytes produced by :func:`encode_message`.

    Raises :class:`~raftpy.errors.MessageDecodeError` for anything malformed: invalid msgpack,
    an unknown tag, missing fields, wrong types or negative indexes.
    """
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MessageDecodeError(f"malformed message: {exc}") from None


ENTRY_OVERHEAD: Final = 16
"""Bytes an entry counts for in size limits beyond its payload (index, term, kind, framing)."""


def entry_size(entry: Entry) -> int:
    """The bytes an entry counts for in size limits: its payload plus a small fixed overhead."""
    return len(entry.data) + ENTRY_OVERHEAD


def entries_size(entries: Sequence[Entry]) -> int:
    """The total :func:`entry_size` of ``entries``."""
    return sum([len(e.data) for e in entries]) + ENTRY_OVERHEAD * len(entries)


def limit_size(entries: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of ``entries`` within ``max_bytes`` (always at least one entry)."""
    if max_bytes is None or len(entries) <= 1 or entries_size(entries) <= max_bytes:
        return entries
    total = 0
    for k, entry in enumerate(entries):
        total += len(entry.data) + ENTRY_OVERHEAD
        if total > max_bytes and k > 0:
            return entries[:k]
    return entries
