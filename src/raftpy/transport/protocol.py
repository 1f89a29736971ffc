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

from raftpy.core.messages import DECODE_ERRORS, Index, NodeId, NonNeg, Term
from raftpy.errors import RemoteProtocolError
from raftpy.storage.identity import Incarnation

MAX_NAME_CHARS: Final = 256
"""The longest cluster id a handshake may carry."""
MAX_TEXT_CHARS: Final = 4096
"""The longest refusal reason or address a frame may carry."""
MAX_REQUEST_TIMEOUT: Final = 86_400.0
"""The longest ``ClientRequest.timeout`` (seconds) a node accepts: a day. A request holds
memory on the node until its deadline, so the deadline must be finite (and not NaN)."""

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

    PROPOSE = "propose"
    """Replicate ``data`` as a command; the result is what ``StateMachine.apply`` returned."""
    QUERY = "query"
    """Answer ``data`` with ``StateMachine.query`` at the requested consistency."""
    STATUS = "status"
    """The node's status, as a msgpack-encoded map (no ``data`` needed; never fails)."""
    SNAPSHOT = "snapshot"
    """Operators: take a snapshot now and compact the log; the answer is a msgpack map with
    the snapshot's ``index`` and ``term``."""


class Consistency(enum.Enum):
    """How fresh a query's answer must be (Thesis §6.4 for linearizable reads)."""

    LINEARIZABLE = "linearizable"
    """ReadIndex: the leader confirms it still leads with a heartbeat quorum (Thesis §6.4)."""
    LEASE = "lease"
    """Served by the leader while its lease holds (an opt-in; until lease reads are built it
    is served exactly like LINEARIZABLE, which is always safe)."""
    STALE = "stale"
    """The local state machine as it is: may lag behind; any node answers."""


class ClientRequest(msgspec.Struct, frozen=True, array_like=True, tag="request"):
    """One client request. ``id`` is chosen by the client, unique per connection.
    ``timeout`` (seconds) bounds how long the node works on it before answering TIMEOUT."""

    id: NonNeg
    op: ClientOp
    data: bytes = b""
    consistency: Consistency = Consistency.LINEARIZABLE
    timeout: Annotated[float, msgspec.Meta(gt=0, le=MAX_REQUEST_TIMEOUT)] | None = None


class ResponseStatus(enum.Enum):
    """The outcome of a request, split by whether the command definitely did not happen."""

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


def decode_snapshot_taken(payload: bytes) -> SnapshotTaken:
    """Read a SNAPSHOT result; :class:`RemoteProtocolError` if it is malformed."""
    try:
        return _snapshot_decoder.decode(payload)
    except DECODE_ERRORS as exc:
        raise RemoteProtocolError(f"malformed snapshot result {payload!r}: {exc}") from None


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
