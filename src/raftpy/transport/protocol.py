"""The frames that travel on a raftpy TCP connection besides peer messages: the handshake and
the client protocol. One port serves peers and clients; the handshake says which.

Framing (see ``raftpy.transport.codec``): every frame is a 4-byte big-endian length followed by
that many bytes of msgpack. The first frame a dialer sends is :class:`Hello`; the acceptor
answers :class:`HelloReply` and, when it refuses, closes the connection. After that:

- a *peer* connection carries :data:`raftpy.core.messages.PeerMessage` frames one way (each node
  dials every other node for its outbound messages);
- a *client* connection carries :class:`ClientRequest` frames to the node and
  :class:`ClientResponse` frames back. Requests are pipelined: many may be outstanding, and
  responses may come back in any order, matched by ``id``.

Versioning: ``Hello.version`` must equal :data:`raftpy.core.messages.PROTOCOL_VERSION`;
otherwise the acceptor refuses with a reason. New fields are only ever added with defaults.
"""

from __future__ import annotations

import enum
from typing import Annotated, Final

import msgspec

from raftpy.core.messages import (
    DECODE_ERRORS,
    MAX_INDEX,
    Address,
    ConfState,
    Index,
    MemberAddress,
    NodeId,
    NonNeg,
    Term,
    validate_conf_state,
)
from raftpy.errors import RemoteProtocolError
from raftpy.storage.identity import Incarnation

MAX_NAME_CHARS: Final = 256
"""The longest cluster id a handshake may carry."""
MAX_TEXT_CHARS: Final = 4096
"""The longest refusal reason or address a frame may carry."""
MAX_REQUEST_TIMEOUT: Final = 86_400.0
"""The longest ``ClientRequest.timeout`` (seconds) a node accepts: a day. A request holds
memory on the node until its deadline, so the deadline must be finite (and not NaN)."""

MAX_SESSION_TIMEOUT: Final = 366 * 86_400.0
"""The longest session timeout (seconds) a grant may carry: a year, so it is finite."""

Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME_CHARS)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT_CHARS)]


class ConnectionRole(enum.Enum):
    """What the dialer of a connection is."""

    PEER = "peer"
    CLIENT = "client"


class Hello(msgspec.Struct, frozen=True, tag="hello"):
    """The dialer's first frame.

    ``cluster_id`` must match the acceptor's (``None`` from a client means "any cluster").
    ``node_id`` is the dialing peer's id (``None`` for clients). ``target_id`` is the node the
    dialer believes it reached (``None``: any), so a peer that dialed the wrong address is
    refused instead of delivering messages to the wrong node. ``incarnation`` is the dialing
    peer's data directory incarnation (32 hex digits; ``None``: it has none, or it is a client
    or an older node), which the acceptor checks against the one it pinned for that peer
    (:mod:`raftpy.storage.peers`).
    """

    version: NonNeg
    role: ConnectionRole
    cluster_id: Name | None = None
    node_id: NodeId | None = None
    target_id: NodeId | None = None
    incarnation: Incarnation | None = None


MIN_FRAME_BYTES = 1024
"""The smallest frame limit a node may have (and announce): below it not even a small request
fits, so a smaller announced limit is malformed, not a limit."""
FrameLimit = Annotated[int, msgspec.Meta(ge=MIN_FRAME_BYTES, le=(1 << 32) - 1)]
"""A frame limit as announced: a frame's length header is 32 bits."""


class HelloReply(msgspec.Struct, frozen=True, tag="hello-reply"):
    """The acceptor's answer. ``ok`` false comes with a ``reason`` and the connection closes.

    To a client that was accepted, the acceptor announces the largest request frame it
    accepts (``max_frame_bytes``, so a client refuses a larger request before sending it) and
    how long it keeps a connection with nothing outstanding open (``idle_timeout``, seconds;
    ``None``: for ever), so the client stops using it before then. ``None`` in either: not
    announced (an older node). To an accepted peer it announces its data directory's
    ``incarnation`` (as :attr:`Hello.incarnation`), which the dialer checks in turn."""

    ok: bool
    node_id: NodeId
    reason: Text | None = None
    max_frame_bytes: FrameLimit | None = None
    idle_timeout: Annotated[float, msgspec.Meta(gt=0)] | None = None
    incarnation: Incarnation | None = None


class ClientOp(enum.Enum):
    """What a client asks for."""

    # Members are singletons compared by identity: hash them by identity too, in C, instead
    # of Enum's hash of the name in Python (every request is counted by op and outcome).
    __hash__ = object.__hash__

    PROPOSE = "propose"
    """Replicate ``data`` as a command; the result is what ``StateMachine.apply`` returned."""
    QUERY = "query"
    """Answer ``data`` with ``StateMachine.query`` at the requested consistency."""
    STATUS = "status"
    """The node's status, as a msgpack-encoded map (no ``data`` needed; never fails)."""
    SNAPSHOT = "snapshot"
    """Operators: take a snapshot now and compact the log; the answer is a msgpack map with
    the snapshot's ``index`` and ``term``."""
    MEMBERS = "members"
    """The membership (a :class:`Members` map). ``STALE`` consistency: any node answers with
    its own view; otherwise only the leader answers (others redirect), since the newest
    membership is the latest one in the leader's log (Thesis §4.1)."""
    ADD_MEMBER = "add-member"
    """Leader only: add ``MemberRequest.node_id`` at ``address``, as a learner unless
    ``voter``; answered with the :class:`Members` after the change, once it is committed."""
    PROMOTE = "promote"
    """Leader only: make the learner ``MemberRequest.node_id`` a voter (Thesis §4.2.1)."""
    REMOVE_MEMBER = "remove-member"
    """Leader only: remove ``MemberRequest.node_id`` from the cluster."""
    TRANSFER_LEADER = "transfer-leader"
    """Leader only: hand leadership to the voter ``MemberRequest.node_id`` (Thesis §3.10);
    answered with the :class:`Members` once it leads."""
    OPEN_SESSION = "open-session"
    """Leader only: register a client session through the log (Thesis §6.3); answered with a
    :class:`SessionGranted` once its entry is applied. No ``data``."""
    KEEP_ALIVE = "keep-alive"
    """Leader only: keep the idle session ``ClientRequest.session`` alive and acknowledge
    every result below ``ack``; answered with no result, or ``SESSION_EXPIRED``."""
    CLOSE_SESSION = "close-session"
    """Leader only: end the session ``ClientRequest.session`` and free what it holds."""


class Consistency(enum.Enum):
    """How fresh a query's answer must be (Thesis §6.4 for linearizable reads)."""

    LINEARIZABLE = "linearizable"
    """ReadIndex: the leader confirms it still leads with a heartbeat quorum (Thesis §6.4).
    Any node that knows the leader answers: a follower asks the leader for the read index."""
    LEASE = "lease"
    """Served by the leader alone, at once while its lease holds (Thesis §6.4.1: it counts on
    clocks drifting less than ``NodeConfig.max_clock_drift``), as LINEARIZABLE otherwise."""
    STALE = "stale"
    """The local state machine as it is: may lag behind; any node answers."""


SESSION_OPS: Final = frozenset({ClientOp.KEEP_ALIVE, ClientOp.CLOSE_SESSION})
"""The ops about one existing session: ``ClientRequest.session`` names it."""


class ClientRequest(msgspec.Struct, frozen=True, array_like=True, tag="request"):
    """One client request. ``id`` is chosen by the client, unique per connection.
    ``timeout`` (seconds) bounds how long the node works on it before answering TIMEOUT.

    ``session``, ``seq`` and ``ack`` make a ``PROPOSE`` exactly-once (Thesis §6.3):
    ``session`` is the id :class:`SessionGranted` gave (0: no session, the command is applied
    once per time it is appended), ``seq`` (>= 1) numbers the session's writes, and a resent
    write carries the same pair, so the node answers it from its session table instead of
    applying it again; ``ack`` is the lowest ``seq`` whose result the client has not received
    (the node may forget the results below it). ``KEEP_ALIVE`` carries ``session`` and
    ``ack``, ``CLOSE_SESSION`` ``session``. :func:`session_fields_problem` says which
    combinations are valid."""

    id: NonNeg
    op: ClientOp
    data: bytes = b""
    consistency: Consistency = Consistency.LINEARIZABLE
    timeout: Annotated[float, msgspec.Meta(gt=0, le=MAX_REQUEST_TIMEOUT)] | None = None
    session: Index = 0
    seq: NonNeg = 0
    ack: NonNeg = 0


def session_fields_problem(req: ClientRequest) -> str | None:
    """What is wrong with ``req``'s session fields (``None``: nothing). Decoding checked
    each field's range; this checks they fit the op: a write with a session numbers itself
    (``seq`` >= 1) and cannot have received its own result (``ack`` <= ``seq``); a write
    without one, and every op but ``PROPOSE``, ``KEEP_ALIVE`` and ``CLOSE_SESSION``, carries
    none; keep-alive and close name a session."""
    if req.op is _PROPOSE:
        if req.session == 0:
            if req.seq or req.ack:
                return "a write without a session carries no seq or ack"
            return None
        if req.seq < 1:
            return "a session's write needs a seq >= 1"
        if req.ack > req.seq:
            return f"ack {req.ack} is above the write's own seq {req.seq}"
        return None
    if req.op in SESSION_OPS:
        if req.session == 0:
            return f"{req.op.value} needs a session"
        if req.seq:
            return f"{req.op.value} carries no seq"
        if req.op is ClientOp.CLOSE_SESSION and req.ack:
            return "close-session carries no ack"
        return None
    if req.session or req.seq or req.ack:
        return f"{req.op.value} carries no session fields"
    return None


# Members of the hottest enums, for code run on every request: in Python 3.11 reading
# ``ClientOp.PROPOSE`` costs ~0.1 us (EnumType's __getattr__ routes every class attribute
# lookup through a Python-level hook), a module global ~0.01 us.
_PROPOSE: Final = ClientOp.PROPOSE


class ResponseStatus(enum.Enum):
    """The outcome of a request, split by whether the command definitely did not happen."""

    __hash__ = object.__hash__  # as ClientOp's

    OK = "ok"
    NOT_LEADER = "not-leader"
    """Definite: this node is not the leader; ``leader_id``/``leader_address`` hint where."""
    DROPPED = "dropped"
    """Definite: the leader refused before appending (back-pressure, transfer, disk full)."""
    INDETERMINATE = "indeterminate"
    """The command was appended but its fate is unknown (leadership lost, deadline passed)."""
    TIMEOUT = "timeout"
    """A query or status ran out of time; nothing changed (queries never change state)."""
    ERROR = "error"
    """The request was malformed or the node failed; ``message`` says why."""
    SESSION_EXPIRED = "session-expired"
    """Definite for *this* request: it was not applied because its session is unknown to the
    cluster (expired, evicted or closed), or its ``seq`` was already acknowledged. An earlier
    attempt of the same write may still have been applied: the client judges that."""


class ClientResponse(msgspec.Struct, frozen=True, array_like=True, tag="response"):
    """The node's answer to the request with the same ``id``. ``retryable`` is false when
    retrying cannot help (a DROPPED command larger than the node accepts)."""

    id: NonNeg
    status: ResponseStatus
    result: bytes | None = None
    leader_id: NodeId | None = None
    leader_address: Text | None = None
    message: str | None = None
    retryable: bool = True


class SnapshotTaken(msgspec.Struct, frozen=True):
    """The result of a SNAPSHOT request: the snapshot's last included index and term (a map on
    the wire, so fields can be added)."""

    index: Index
    term: Term


_snapshot_decoder = msgspec.msgpack.Decoder(SnapshotTaken)


class SessionGranted(msgspec.Struct, frozen=True):
    """The result of an OPEN_SESSION request (a map on the wire, so fields can be added):
    the new session's id (the log index of the entry that opened it, Thesis §6.3) and how
    long, in seconds of cluster time, it lives without a request or keep-alive."""

    session: Annotated[int, msgspec.Meta(ge=1, le=MAX_INDEX)]
    timeout: Annotated[float, msgspec.Meta(gt=0, le=MAX_SESSION_TIMEOUT)]


_granted_decoder = msgspec.msgpack.Decoder(SessionGranted)


def decode_session_granted(payload: bytes) -> SessionGranted:
    """Read an OPEN_SESSION result; :class:`RemoteProtocolError` if it is malformed."""
    try:
        return _granted_decoder.decode(payload)
    except DECODE_ERRORS as exc:
        raise RemoteProtocolError(f"malformed session grant {payload[:64]!r}: {exc}") from None


def decode_snapshot_taken(payload: bytes) -> SnapshotTaken:
    """Read a SNAPSHOT result; :class:`RemoteProtocolError` if it is malformed."""
    try:
        return _snapshot_decoder.decode(payload)
    except DECODE_ERRORS as exc:
        raise RemoteProtocolError(f"malformed snapshot result {payload!r}: {exc}") from None


MEMBERSHIP_CHANGES: Final = frozenset(
    {ClientOp.ADD_MEMBER, ClientOp.PROMOTE, ClientOp.REMOVE_MEMBER, ClientOp.TRANSFER_LEADER}
)
"""The ops whose ``data`` is a :class:`MemberRequest` and that only the leader serves."""

MAX_MEMBERS: Final = 4096
"""The most ids one list of a :class:`Members` answer may hold (a sanity bound: a frame is
bounded anyway, but a list of ids should not be allowed to be the whole frame)."""

MemberIds = Annotated[tuple[NodeId, ...], msgspec.Meta(max_length=MAX_MEMBERS)]


class MemberRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The ``data`` of a membership request (a map on the wire, so fields can be added).

    ``node_id`` is the member the request is about. ``address`` (``host:port``) is where it
    listens: needed by ``ADD_MEMBER``, ignored by the others. ``voter`` (``ADD_MEMBER`` only)
    adds it as a voter at once instead of as a learner. ``force`` skips the leader's safety
    checks (a learner still catching up, a change that leaves no reachable quorum)."""

    node_id: NodeId
    address: Address | None = None
    voter: bool = False
    force: bool = False


class Members(msgspec.Struct, frozen=True, kw_only=True):
    """A membership as a node reports it (the result of every membership op; a map on the
    wire, so fields can be added).

    ``voters``, ``learners``, ``voters_outgoing`` and ``learners_next`` are those of
    :class:`~raftpy.core.messages.ConfState` (``voters_outgoing`` is non-empty only during a
    joint change, Thesis §4.3); ``addresses`` maps a member id to where it listens (members
    the cluster has no recorded address for are missing). ``leader_id`` is the leader the
    answering node ``node_id`` knows of (``None``: none known). ``index`` is the log index of
    the membership entry when the node reports it (``None``: not reported)."""

    voters: MemberIds
    learners: MemberIds = ()
    voters_outgoing: MemberIds = ()
    learners_next: MemberIds = ()
    addresses: Annotated[dict[NodeId, Address], msgspec.Meta(max_length=MAX_MEMBERS)] = {}
    leader_id: NodeId | None = None
    node_id: NodeId | None = None
    index: Index | None = None

    @classmethod
    def from_conf(
        cls,
        conf: ConfState,
        *,
        leader_id: int | None = None,
        node_id: int | None = None,
        index: int | None = None,
    ) -> Members:
        """The report of membership ``conf``."""
        return cls(
            voters=conf.voters,
            learners=conf.learners,
            voters_outgoing=conf.voters_outgoing,
            learners_next=conf.learners_next,
            addresses=conf.address_map(),
            leader_id=leader_id,
            node_id=node_id,
            index=index,
        )

    def conf_state(self) -> ConfState:
        """The membership as a :class:`~raftpy.core.messages.ConfState` (``auto_leave`` is
        not reported and reads false)."""
        return ConfState(
            voters=self.voters,
            learners=self.learners,
            voters_outgoing=self.voters_outgoing,
            learners_next=self.learners_next,
            auto_leave=False,
            addresses=tuple(MemberAddress(i, a) for i, a in sorted(self.addresses.items())),
        )

    def members(self) -> list[int]:
        """Every member (voters of both halves and learners), in id order."""
        return sorted(self.conf_state().members())

    def role(self, node_id: int) -> str | None:
        """``"voter"``, ``"learner"`` or ``"outgoing"`` (a voter of the old half of a joint
        change only, on its way out or to be a learner); ``None`` for a non-member."""
        if node_id in self.voters:
            return "voter"
        if node_id in self.learners:
            return "learner"
        if node_id in self.voters_outgoing:
            return "outgoing"
        return None


_member_request_decoder = msgspec.msgpack.Decoder(MemberRequest)
_members_decoder = msgspec.msgpack.Decoder(Members)


def decode_member_request(payload: bytes) -> MemberRequest:
    """Read a membership request's ``data``; :class:`RemoteProtocolError` if it is malformed
    (a node id or address out of range, a field of the wrong type)."""
    try:
        return _member_request_decoder.decode(payload)
    except DECODE_ERRORS as exc:
        raise RemoteProtocolError(f"malformed membership request: {exc}") from None


def decode_members(payload: bytes) -> Members:
    """Read a membership answer; :class:`RemoteProtocolError` if it is malformed or is not a
    valid membership (:func:`~raftpy.core.messages.validate_conf_state`: no voters, a node
    both voter and learner, an address for a non-member, ...)."""
    try:
        members = _members_decoder.decode(payload)
    except DECODE_ERRORS as exc:
        raise RemoteProtocolError(f"malformed membership answer: {exc}") from None
    problem = validate_conf_state(members.conf_state())
    if problem is not None:
        raise RemoteProtocolError(f"invalid membership answer: {problem}")
    return members


HandshakeFrame = Hello | HelloReply
ClientFrame = ClientRequest | ClientResponse

_encoder = msgspec.msgpack.Encoder()
hello_decoder: msgspec.msgpack.Decoder[HandshakeFrame] = msgspec.msgpack.Decoder(HandshakeFrame)
client_decoder: msgspec.msgpack.Decoder[ClientFrame] = msgspec.msgpack.Decoder(ClientFrame)


def decode_hello(payload: bytes | bytearray | memoryview) -> Hello:
    """The dialer's first frame; :class:`RemoteProtocolError` if it is anything else."""
    frame = _decode_handshake(payload, "Hello")
    if not isinstance(frame, Hello):
        raise RemoteProtocolError(f"expected a Hello, got {type(frame).__name__}")
    return frame


def decode_hello_reply(payload: bytes | bytearray | memoryview) -> HelloReply:
    """The acceptor's answer; :class:`RemoteProtocolError` if it is anything else."""
    frame = _decode_handshake(payload, "HelloReply")
    if not isinstance(frame, HelloReply):
        raise RemoteProtocolError(f"expected a HelloReply, got {type(frame).__name__}")
    return frame


def _decode_handshake(payload: bytes | bytearray | memoryview, what: str) -> HandshakeFrame:
    try:
        return hello_decoder.decode(payload)
    except DECODE_ERRORS as exc:
        raise RemoteProtocolError(f"malformed handshake frame (expected a {what}): {exc}") from None


def encode_frame_payload(frame: HandshakeFrame | ClientFrame) -> bytes:
    """Encode a handshake or client frame's payload (without the length prefix)."""
    return _encoder.encode(frame)
