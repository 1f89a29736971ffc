"""Every message Raft peers exchange, as frozen msgspec Structs in tagged unions.

:data:`Message` is what the consensus core steps and sends (:meth:`raftpy.core.raft.Raft.step`,
``Ready.messages``). :data:`PeerMessage` is everything on the wire between peers: those, plus
the snapshot chunks (:class:`InstallSnapshot`) and their answers that drivers exchange to move
a snapshot file (:mod:`raftpy.node.transfer`); the core never sees those two.

All structs here are ``gc=False``: they are frozen and hold only ints, bytes, enums and tuples
of such structs, so they can never be part of a reference cycle, and leaving millions of log
entries out of the cycle collector's scans keeps collection pauses away (measured: about 40% of
simulator CPU time before).

Each message carries ``term``, ``src`` and ``dst``. ``None`` (never 0) means "none". Encoding is
msgpack with the struct laid out as an array whose first element is the message's integer tag,
so a message costs a few bytes of framing. No pickle anywhere.

Decoding checks every field (a peer's bytes are input, not trusted state): each number lies in
its range (:data:`MAX_TERM`, :data:`MAX_INDEX`, :data:`MAX_NODE_ID`, :data:`MAX_SIZE`,
enforced by msgspec while it parses), and :func:`validate_message` checks what one field cannot
say alone (an AppendEntries' entries follow ``prev_index`` one by one, with terms that never
decrease and never pass the message's term, ...). Whatever fails is a
:class:`~raftpy.errors.MessageDecodeError`, which costs the sender its connection.

The wire format is versioned by the transport handshake (``PROTOCOL_VERSION``); adding a message
kind means adding a new tag, never renumbering one.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Final

import msgspec

from raftpy.errors import MessageDecodeError

PROTOCOL_VERSION: Final = 1

DECODE_ERRORS: Final = (msgspec.DecodeError, RecursionError)
"""What decoding untrusted msgpack raises for malformed input: ``msgspec.DecodeError`` (bad
msgpack, and its subclass ``ValidationError``: a wrong type or range) and ``RecursionError``
(nesting deeper than the interpreter allows: a 1 KB payload can nest 1,000 levels, even in a
field the decoder skips). Every decoder of bytes from a connection or a file catches these."""

INT64_MAX: Final = (1 << 63) - 1
"""The largest integer every field fits in: storage and the wire hold signed 64-bit integers."""

MAX_TERM: Final = 1 << 62
"""The largest term a message may carry and a node may reach. Far below :data:`INT64_MAX` on
purpose: a node persists the terms it sees and campaigns at ``term + 1``, so an accepted term
must leave room to be incremented and still be written (a peer's term of 2^64 - 1 once made
every node fail at its next election, and again after each restart). 2^62 leaves 2^62
elections of headroom, which no cluster reaches; a node never campaigns past it (Raft core,
``Raft._campaign``)."""

MAX_TERM_JUMP: Final = 1 << 31
"""How far past a node's own term a message's term may lie. Terms grow by one per election
(Raft §5.2), so a real peer is never 2^31 elections (decades of one a second) ahead of a node
that hears from it; a message claiming to be is forged. The bound turns "one packet of term
MAX_TERM wedges every election for good" into billions of packets: plain TCP still cannot
authenticate a member (README.md, "Security"), but one stray frame cannot end a cluster.
"""

MAX_INDEX: Final = 1 << 62
"""The largest log index a message may carry: a leader appends at ``last_index + 1`` and a
snapshot covers ``index + 1`` onwards, which must still be stored."""

MAX_NODE_ID: Final = INT64_MAX
"""Node ids are any non-negative signed 64-bit integer (``RaftConfig.validate`` agrees)."""

MAX_SIZE: Final = 1 << 62
"""The largest byte count or offset a message may carry (a snapshot's size or position)."""

NonNeg = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
"""A non-negative integer that fits a signed 64-bit field (counters, versions, request ids)."""
Term = Annotated[int, msgspec.Meta(ge=0, le=MAX_TERM)]
Index = Annotated[int, msgspec.Meta(ge=0, le=MAX_INDEX)]
NodeId = Annotated[int, msgspec.Meta(ge=0, le=MAX_NODE_ID)]
Size = Annotated[int, msgspec.Meta(ge=0, le=MAX_SIZE)]

MAX_ADDRESS_CHARS: Final = 4096
"""The longest member address a membership may hold (``host:port``; far below this)."""
Address = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ADDRESS_CHARS)]


class EntryKind(enum.IntEnum):
    """What a log entry holds."""

    COMMAND = 0
    """A user command, handed to ``StateMachine.apply``."""
    NOOP = 1
    """The empty entry a new leader appends to commit its term (Raft §8, Thesis §6.4)."""
    CONFIG = 2
    """A membership change (Thesis §4); its payload is an encoded :class:`ConfState`."""
    SESSION = 3
    """A client command wrapped with its session bookkeeping and the leader's clock
    (Thesis §6.3; the node's :mod:`raftpy.node.session_records`); the core treats it
    exactly as :attr:`COMMAND`."""


class Entry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One log entry (Raft Figure 2: 'log[]').

    ``index`` is its position (the first entry is 1), ``term`` the leader's term when it was
    created, ``kind`` what ``data`` holds.
    """

    term: Term
    index: Index
    kind: EntryKind
    data: bytes


class MemberAddress(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Where a member listens (``host:port``), as the membership records it (Thesis §4: the
    configuration, addresses included, lives in the log, so every server learns how to reach
    a new member from the entry that adds it)."""

    node_id: NodeId
    address: Address


class ConfState(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A cluster membership (Thesis §4). Lives in the log and in every snapshot.

    ``voters`` count for elections and commitment; ``learners`` receive the log but never vote.
    ``voters_outgoing`` is non-empty only during a joint-consensus change (Thesis §4.3): then
    decisions need a majority of ``voters`` *and* of ``voters_outgoing``.

    Two fields only matter while joint (see :mod:`raftpy.core.confchange`): ``learners_next``
    are outgoing voters being demoted, which become learners when the joint configuration is
    left (until then they still vote in the outgoing half, so they cannot be learners yet);
    ``auto_leave`` says the leader leaves the joint configuration on its own once it commits,
    rather than waiting for an explicit empty change. Both are trailing fields with defaults, so
    a membership without them decodes as before and an older decoder skips them.

    ``addresses`` says where members listen, in id order; a member without one is reached at
    the address its node was configured with (a cluster bootstrapped from a command line
    starts so, until its first leader records them).
    """

    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...] = ()
    voters_outgoing: tuple[NodeId, ...] = ()
    learners_next: tuple[NodeId, ...] = ()
    auto_leave: bool = False
    addresses: tuple[MemberAddress, ...] = ()

    def members(self) -> frozenset[int]:
        """Every voter (of both halves) and learner (pending learners included)."""
        return frozenset((*self.voters, *self.learners, *self.voters_outgoing, *self.learners_next))

    def address_map(self) -> dict[int, str]:
        """The recorded addresses, by member id."""
        return {a.node_id: a.address for a in self.addresses}


def bootstrap_conf(voters: Sequence[int], addresses: Mapping[int, str] | None = None) -> ConfState:
    """The membership a brand-new cluster starts with: ``voters``, with the addresses known for
    them (the first leader writes it down as the log's first entry)."""
    ids = tuple(sorted(voters))
    known = addresses or {}
    return ConfState(
        voters=ids,
        addresses=tuple(MemberAddress(n, known[n]) for n in ids if known.get(n)),
    )


class SnapshotMeta(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What a snapshot covers: every entry up to ``index`` (whose term is ``term``), and the
    membership ``conf`` in force at that index (Raft §7)."""

    index: Index
    term: Term
    conf: ConfState


class RequestVote(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=1):
    """A candidate asks for a vote (Raft §5.2), or a pre-candidate asks whether it could win
    one (``pre_vote``, Thesis §9.6).

    ``last_log_index``/``last_log_term`` identify the sender's last entry, for the election
    restriction (Raft §5.4.1). For a pre-vote, ``term`` is the term the sender *would* use
    (its current term + 1): receivers do not adopt it. ``transfer`` marks an election started by
    a leadership transfer (Thesis §3.10), which may disrupt a live leader.
    """

    term: Term
    src: NodeId
    dst: NodeId
    last_log_index: Index
    last_log_term: Term
    pre_vote: bool = False
    transfer: bool = False


class RequestVoteResponse(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=2):
    """The answer to :class:`RequestVote` (Raft §5.2). ``granted`` is the vote; ``pre_vote``
    echoes the request's kind. A granted pre-vote carries the request's term, a refusal the
    voter's own term."""

    term: Term
    src: NodeId
    dst: NodeId
    granted: bool
    pre_vote: bool = False


class AppendEntries(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=3):
    """The leader replicates entries (Raft §5.3).

    ``prev_index``/``prev_term`` identify the entry just before ``entries`` (the consistency
    check); ``entries`` may be empty (a probe); ``commit`` is the leader's commit index.
    """

    term: Term
    src: NodeId
    dst: NodeId
    prev_index: Index
    prev_term: Term
    entries: tuple[Entry, ...]
    commit: Index


class AppendEntriesResponse(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=4):
    """The answer to :class:`AppendEntries`.

    On success ``index`` is the last index the follower now shares with the leader. On
    rejection ``index`` echoes the rejected ``prev_index``, and the hint says where the logs
    may match: ``hint_index`` is the largest index at or below ``min(prev_index, last_index)``
    whose term is at most the leader's ``prev_term``, and ``hint_term`` is that entry's term,
    so the leader can skip a whole conflicting term per rejection (Raft §5.3, the optimisation
    described after Figure 7).
    """

    term: Term
    src: NodeId
    dst: NodeId
    success: bool
    index: Index
    hint_index: Index | None = None
    hint_term: Term | None = None


class Heartbeat(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=5):
    """An empty AppendEntries that only asserts leadership (Raft §5.2).

    ``commit`` is at most what the follower is known to hold, so it never points past the
    follower's log. ``context`` ties the heartbeat to a ReadIndex request (Thesis §6.4).
    ``transferee`` names the voter this leader is handing leadership to (Thesis §3.10), if
    any: only that voter's ``RequestVote(transfer=True)`` may bypass the leader lease.
    ``round`` numbers the leader's heartbeat rounds of this term (0: not counted), so the
    answers tell when the round they acknowledge was sent (the lease, Thesis §6.4.1).
    """

    term: Term
    src: NodeId
    dst: NodeId
    commit: Index
    context: bytes | None = None
    transferee: NodeId | None = None
    round: NonNeg = 0


class HeartbeatResponse(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=6):
    """The answer to :class:`Heartbeat`; ``context`` and ``round`` are echoed back."""

    term: Term
    src: NodeId
    dst: NodeId
    context: bytes | None = None
    round: NonNeg = 0


class InstallSnapshot(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=7):
    """One chunk of a snapshot sent to a follower that lags behind the leader's log (Raft §7).

    ``data`` holds bytes ``[offset, offset + len(data))`` of the snapshot; ``done`` marks the
    last chunk. Drivers exchange chunks (:mod:`raftpy.node.transfer`); the core asks for a
    transfer with ``Ready.snapshot_requests`` and is handed the whole, verified file with
    ``Raft.install_snapshot``.
    """

    term: Term
    src: NodeId
    dst: NodeId
    meta: SnapshotMeta
    offset: Size
    data: bytes
    done: bool
    size: NonNeg = 0  # the whole file's length: receivers refuse bytes past it
    transfer: NonNeg = 0  # the sender's id for this transfer, echoed in answers (0: none)


class InstallSnapshotResponse(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=8):
    """The answer to :class:`InstallSnapshot`. ``offset`` is how many bytes the follower holds
    (so a transfer can resume); ``index`` is the snapshot's index; ``rejected`` means the
    follower refused it (for example, it is stale)."""

    term: Term
    src: NodeId
    dst: NodeId
    index: Index
    offset: Size
    done: bool
    rejected: bool = False
    transfer: NonNeg = 0  # the answered chunk's ``transfer``: a late answer to another is ignored
    ahead: Size = 0  # the answered chunk's ``offset`` when past ``offset`` (a gap), else 0


class TimeoutNow(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=9):
    """The leader tells an up-to-date follower to start an election at once (Thesis §3.10)."""

    term: Term
    src: NodeId
    dst: NodeId


MAX_READ_CONTEXT: Final = 1024
"""The longest read context a follower may forward to its leader (a node uses 8 bytes)."""
ReadContext = Annotated[bytes, msgspec.Meta(max_length=MAX_READ_CONTEXT)]


class ReadIndexRequest(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=10):
    """A follower forwards a linearizable read to its leader (Thesis §6.4: "followers can
    also serve reads": the leader confirms its leadership and returns its read index).
    ``context`` is the follower's own name for the read."""

    term: Term
    src: NodeId
    dst: NodeId
    context: ReadContext


class ReadIndexResponse(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=11):
    """The leader's answer to :class:`ReadIndexRequest`: once the follower applied ``index``,
    it may serve the read ``context`` from its own state machine."""

    term: Term
    src: NodeId
    dst: NodeId
    context: ReadContext
    index: Index


Message = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | Heartbeat
    | HeartbeatResponse
    | TimeoutNow
    | ReadIndexRequest
    | ReadIndexResponse
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
    """Decode bytes produced by :func:`encode_message`, and check them (:func:`validate_message`).

    Raises :class:`~raftpy.errors.MessageDecodeError` for anything malformed: invalid msgpack,
    an unknown tag, missing fields, wrong types, numbers out of range, or fields that
    contradict each other.
    """
    try:
        message = _decoder.decode(data)
    except DECODE_ERRORS as exc:
        raise MessageDecodeError(f"malformed message: {exc}") from None
    check = MESSAGE_CHECKS.get(type(message))
    if check is not None:
        problem = check(message)
        if problem is not None:
            raise MessageDecodeError(f"invalid {type(message).__name__}: {problem}")
    return message


def validate_message(m: PeerMessage) -> str | None:
    """What is wrong with ``m`` beyond single fields (those msgspec checks while decoding), or
    ``None``. Only rules any message from a correct peer keeps, whatever the receiver's state;
    rules that need the receiver's state are the core's (``RejectedMessage``)."""
    check = MESSAGE_CHECKS.get(type(m))
    return None if check is None else check(m)


def _validate_append(m: AppendEntries) -> str | None:
    if m.prev_term > m.term:
        return f"prev_term {m.prev_term} is past the message's term {m.term}"
    if m.prev_index == 0 and m.prev_term != 0:
        return f"prev_term {m.prev_term} for index 0 (which has none)"
    entries = m.entries
    if not entries:
        return None
    # Raft §5.3: the entries follow prev_index one by one (Log Matching relies on it), and
    # their terms never decrease (a log's terms only grow, Raft §5.4) nor pass the leader's.
    # One plain loop: measured cheaper than building lists of indexes and terms to compare.
    term = m.prev_term
    config = _CONFIG
    for index, entry in enumerate(entries, m.prev_index + 1):
        if entry.index != index:
            return f"entry {entry.index} where {index} should follow prev_index {m.prev_index}"
        if entry.term < term:
            return f"entry {index} has term {entry.term}, below the {term} before it"
        term = entry.term
        if entry.kind is config:
            # Storage reads every membership entry it appends (the latest one is the
            # membership at restart): it must be one.
            problem = _validate_conf_entry(entry.data)
            if problem is not None:
                return f"entry {index}: {problem}"
    if term > m.term:
        return f"entry {entries[-1].index} has term {term}, past the message's term {m.term}"
    return None


def _validate_vote(m: RequestVote) -> str | None:
    # A candidate's log holds no entry of a term later than the one it campaigns in.
    if m.last_log_term > m.term:
        return f"last_log_term {m.last_log_term} is past the message's term {m.term}"
    if m.last_log_index == 0 and m.last_log_term != 0:
        return f"last_log_term {m.last_log_term} for an empty log"
    return None


def _validate_append_response(m: AppendEntriesResponse) -> str | None:
    # A rejection's hint lies at or below the rejected prev_index, in a term no later than ours.
    if m.hint_index is not None and m.hint_index > m.index:
        return f"hint_index {m.hint_index} is past index {m.index}"
    if m.hint_term is not None and m.hint_term > m.term:
        return f"hint_term {m.hint_term} is past the message's term {m.term}"
    return None


def _validate_snapshot_chunk(m: InstallSnapshot) -> str | None:
    meta = m.meta
    if meta.term > m.term:
        return f"snapshot term {meta.term} is past the message's term {m.term}"
    return validate_conf_state(meta.conf)


_CONFIG: Final = EntryKind.CONFIG
_conf_decoder = msgspec.msgpack.Decoder(ConfState)


def encode_conf_state(conf: ConfState) -> bytes:
    """The payload of a configuration entry (:attr:`EntryKind.CONFIG`)."""
    return _encoder.encode(conf)


def decode_conf_state(data: bytes) -> ConfState:
    """A configuration entry's membership. Entries reach the log only after
    :func:`validate_message` (from a peer) or from this node's own leader, so malformed data
    here is a bug or a damaged file: :class:`~raftpy.errors.MessageDecodeError`."""
    conf, problem = _read_conf(data)
    if conf is None or problem is not None:
        raise MessageDecodeError(f"invalid membership entry: {problem}")
    return conf


def _read_conf(data: bytes) -> tuple[ConfState | None, str | None]:
    """A configuration entry's membership and what is wrong with it (``None``: nothing)."""
    try:
        conf = _conf_decoder.decode(data)
    except DECODE_ERRORS as exc:
        return None, f"a membership entry that is not a membership ({exc})"
    return conf, validate_conf_state(conf)


def _validate_conf_entry(data: bytes) -> str | None:
    return _read_conf(data)[1]


def validate_conf_state(conf: ConfState) -> str | None:
    """What is wrong with a membership, or ``None``: the one statement of its invariants, used
    on every membership a peer sends (snapshots, configuration entries) and on every one a
    change produces (:func:`raftpy.core.confchange.check_conf`).

    No id listed twice in a field; at least one voter (an empty majority config decides
    nothing, Thesis §4); no learner is a voter of either half (a learner never votes, Thesis
    §4.2.1); ``learners_next`` holds outgoing voters only, on their way to be learners when the
    joint configuration is left (Thesis §4.3); outside a joint configuration it is empty and
    ``auto_leave`` is false; addresses are listed once each, in id order, for members only.
    """
    for name, ids in (
        ("voters", conf.voters),
        ("learners", conf.learners),
        ("voters_outgoing", conf.voters_outgoing),
        ("learners_next", conf.learners_next),
    ):
        if len(set(ids)) != len(ids):
            return f"{name} lists a node twice: {list(ids)}"
    voters, learners = set(conf.voters), set(conf.learners)
    outgoing, nxt = set(conf.voters_outgoing), set(conf.learners_next)
    if not voters:
        return "a membership without voters"
    if not outgoing and (nxt or conf.auto_leave):
        return "a pending demotion or automatic leave outside a joint configuration"
    for a, b, what in (
        (learners, voters, "both learners and voters"),
        (learners, outgoing, "both learners and outgoing voters"),
        (nxt, voters, "both pending learners and voters"),
    ):
        if a & b:
            return f"nodes {sorted(a & b)} are {what}"
    if not nxt <= outgoing:
        return f"nodes {sorted(nxt - outgoing)} are pending learners but not outgoing voters"
    listed = [a.node_id for a in conf.addresses]
    if any(a >= b for a, b in itertools.pairwise(listed)):
        return f"addresses are not listed once each in id order: {listed}"
    strangers = set(listed) - (voters | learners | outgoing | nxt)
    if strangers:
        return f"addresses of nodes {sorted(strangers)}, which are not members"
    return None


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


MESSAGE_CHECKS: Final[Mapping[type, Callable[[Any], str | None]]] = {
    AppendEntries: _validate_append,
    RequestVote: _validate_vote,
    AppendEntriesResponse: _validate_append_response,
    InstallSnapshot: _validate_snapshot_chunk,
}
"""The check of :func:`validate_message` for each message kind that has rules beyond single
fields; kinds without any are absent, so decoding them costs one dictionary lookup."""
