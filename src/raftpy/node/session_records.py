"""The log records of client sessions (Thesis §6.3): what a
:attr:`~raftpy.core.messages.EntryKind.SESSION` entry holds, and how it is encoded.

Every client write a node accepts becomes one SESSION entry holding one record, a frozen
msgspec Struct encoded as a msgpack array whose first element is the record's tag:

- :class:`OpenSession` registers a session; its id is the entry's log index.
- :class:`SessionCommand` wraps a client command with ``(session, seq, ack)``; ``session == 0``
  is a plain write without a session (applied once per entry).
- :class:`KeepAlive` keeps an idle session alive; :class:`CloseSession` ends one.

Each record carries ``time_ms``, the *cluster time* the leader stamped when it accepted the
request (:class:`~raftpy.node.session_table.ClusterClock`), so that every replica expires the
same sessions at the same log index. Limits that must be equal on every replica (a session's
timeout, its result memory, the session count) travel in :class:`OpenSession` rather than in
each node's configuration.

Decoding checks every field's range and the rules between fields (:func:`decode_record`);
a record that fails is refused by the table as a deterministic no-op on every replica. The
table's own snapshot image (:class:`TableHead`, :class:`SessionImage`) is defined here too.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from raftpy.core.messages import DECODE_ERRORS, INT64_MAX, MAX_INDEX
from raftpy.errors import RemoteProtocolError

__all__ = [
    "MAX_ERROR_CHARS",
    "MAX_RESULTS_LIMIT",
    "MAX_SESSIONS_LIMIT",
    "MAX_TIMEOUT_MS",
    "RECORD_OVERHEAD",
    "CachedFailure",
    "CachedResult",
    "CloseSession",
    "KeepAlive",
    "OpenSession",
    "SessionCommand",
    "SessionImage",
    "SessionRecord",
    "TableHead",
    "command_fields_problem",
    "decode_record",
    "encode_command",
    "encode_record",
    "failure_of",
]

MAX_TIMEOUT_MS: Final = 30 * 24 * 3600 * 1000
"""The longest session timeout a record may ask for: 30 days of cluster time."""
MAX_RESULTS_LIMIT: Final = 1_000_000
"""The most unacknowledged results a session may be allowed to keep."""
MAX_SESSIONS_LIMIT: Final = 10_000_000
"""The most sessions a cluster may be configured to keep."""
RECORD_OVERHEAD: Final = 64
"""Bytes a :class:`SessionCommand` adds around its command, at most (the array, its tag and
four integers of up to 9 bytes each, the command's length): the node lets the core take
entries this much larger than ``max_entry_bytes``, so the limit stays the user's command's."""
MAX_ERROR_CHARS: Final = 1000
"""A cached failure keeps at most this many characters of the exception's message (the
state machine's message can be anything; the table must stay bounded)."""

TimeMs = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
SessionId = Annotated[int, msgspec.Meta(ge=0, le=MAX_INDEX)]
LiveSessionId = Annotated[int, msgspec.Meta(ge=1, le=MAX_INDEX)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
TimeoutMs = Annotated[int, msgspec.Meta(ge=1, le=MAX_TIMEOUT_MS)]
ResultsLimit = Annotated[int, msgspec.Meta(ge=1, le=MAX_RESULTS_LIMIT)]
SessionsLimit = Annotated[int, msgspec.Meta(ge=1, le=MAX_SESSIONS_LIMIT)]
TypeName = Annotated[str, msgspec.Meta(max_length=200)]
ErrorText = Annotated[str, msgspec.Meta(max_length=MAX_ERROR_CHARS)]


class OpenSession(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=1):
    """Register a session (its id is this entry's index), idle for at most ``timeout_ms`` of
    cluster time, keeping at most ``max_results`` unacknowledged results; when
    ``max_sessions`` sessions exist, the least recently active one is evicted first."""

    time_ms: TimeMs
    timeout_ms: TimeoutMs
    max_results: ResultsLimit
    max_sessions: SessionsLimit


_COMMAND_TAG: Final = 2


class SessionCommand(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=_COMMAND_TAG):
    """A client command. With ``session`` (not 0): ``seq`` (>= 1) numbers the session's
    writes, and every seq below ``ack`` was acknowledged by the client (its result may be
    discarded); ``ack <= seq``. Without a session, ``seq`` and ``ack`` are 0."""

    time_ms: TimeMs
    session: SessionId
    seq: Seq
    ack: Seq
    data: bytes

    def __post_init__(self) -> None:
        problem = command_fields_problem(self.session, self.seq, self.ack)
        if problem is not None:
            raise ValueError(problem)


def command_fields_problem(session: int, seq: int, ack: int) -> str | None:
    """What is wrong with a command's ``(session, seq, ack)`` (``None``: nothing): the rules of
    :class:`SessionCommand`, checked on decode and by the node before it encodes a write."""
    if session == 0:
        if seq or ack:
            return "a command without a session carries no seq or ack"
        return None
    if not 0 < session <= MAX_INDEX:
        return f"session {session} is not in 1 .. {MAX_INDEX}"
    if not 1 <= seq <= INT64_MAX:
        return f"a session's command needs 1 <= seq < 2**63, got {seq}"
    if not 0 <= ack <= seq:
        return f"ack {ack} is not in 0 .. the command's own seq {seq}"
    return None


class KeepAlive(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=3):
    """An idle client's sign of life; every seq below ``ack`` is acknowledged."""

    time_ms: TimeMs
    session: LiveSessionId
    ack: Seq


class CloseSession(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=4):
    """The client is done with ``session``: forget it and its results."""

    time_ms: TimeMs
    session: LiveSessionId


SessionRecord = OpenSession | SessionCommand | KeepAlive | CloseSession

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[SessionRecord] = msgspec.msgpack.Decoder(SessionRecord)


def encode_record(record: SessionRecord) -> bytes:
    """The bytes of a SESSION entry holding ``record``."""
    return _encoder.encode(record)


def encode_command(time_ms: int, session: int, seq: int, ack: int, data: bytes) -> bytes:
    """The bytes of ``SessionCommand(time_ms, session, seq, ack, data)`` (a tagged array),
    encoded without building the Struct: the caller has checked the fields (every write
    takes this path, so it is kept short)."""
    return _encoder.encode((_COMMAND_TAG, time_ms, session, seq, ack, data))


def decode_record(data: bytes) -> SessionRecord:
    """The record a SESSION entry holds; :class:`RemoteProtocolError` naming what is wrong
    when the bytes are not one well-formed record."""
    try:
        return _decoder.decode(data)
    except DECODE_ERRORS as exc:
        raise RemoteProtocolError(f"malformed session record: {exc}") from None


# -- the table's snapshot image -----------------------------------------------------------------


class CachedResult(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What the state machine answered to one seq: ``result``, or when its ``apply`` raised,
    the exception's type name and message (``error_type`` is then not empty)."""

    seq: Seq
    result: bytes = b""
    error_type: TypeName = ""
    error_message: ErrorText = ""


class SessionImage(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One session as a snapshot keeps it (see :class:`~raftpy.node.session_table.SessionTable`
    for the meaning of each field)."""

    id: LiveSessionId
    timeout_ms: TimeoutMs
    max_results: ResultsLimit
    last_ms: TimeMs
    floor: Seq
    results: tuple[CachedResult, ...]


class TableHead(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """The start of the table's image: its clock and how many sessions follow."""

    clock_ms: TimeMs
    sessions: Annotated[int, msgspec.Meta(ge=0, le=MAX_SESSIONS_LIMIT)]


class CachedFailure(Exception):
    """The answer to a duplicate of a command whose ``apply`` raised: the same failure again,
    from the session's result cache (the command was not applied a second time).
    ``error_type`` and ``error_message`` are the original exception's type name and message."""

    def __init__(self, error_type: str, error_message: str) -> None:
        super().__init__(f"{error_type}: {error_message}")
        self.error_type = error_type
        self.error_message = error_message


def failure_of(exc: BaseException) -> CachedResult:
    """What a cache keeps of ``exc`` (for any seq; the caller sets it): its type name and
    message, both bounded."""
    return CachedResult(0, b"", type(exc).__name__[:200] or "Exception", str(exc)[:MAX_ERROR_CHARS])
