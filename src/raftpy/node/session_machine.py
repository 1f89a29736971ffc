"""The state machine a node really runs: the user's, with the session table beside it.

:class:`SessionStateMachine` applies log entries (SESSION entries through the
:class:`~raftpy.node.session_table.SessionTable`, old COMMAND entries raw) and makes the table
part of every snapshot while the user's :class:`~raftpy.statemachine.StateMachine` stays
unaware of it: a snapshot body is :data:`MARKER`, the table's image, then exactly the bytes
the user's ``snapshot()`` wrote; restoring strips the marker and the table and hands the user
the rest. A body that does not start with the marker (a snapshot from before sessions) restores
the user's state from all of it and an empty table.

The table is captured at the same applied index as the user's state: during a plain
``snapshot()`` the node holds applies back, and ``prepare_snapshot()`` (for state machines that
have it, :class:`ConcurrentSessionStateMachine`) encodes the table on the event loop at the
moment the user's own ``prepare_snapshot()`` is called.

Image format after the marker: a 4-byte big-endian length and a msgpack
:class:`~raftpy.node.session_records.TableHead`, then per session a 4-byte length and a msgpack
:class:`~raftpy.node.session_records.SessionImage` (streamed: one session at a time).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import BinaryIO, Final, cast

import msgspec

from raftpy.core.messages import DECODE_ERRORS, Entry, EntryKind
from raftpy.node.session_records import SessionImage, TableHead
from raftpy.node.session_table import Answer, SessionTable
from raftpy.statemachine import ConcurrentSnapshot, StateMachine

__all__ = [
    "MARKER",
    "ConcurrentSessionStateMachine",
    "SessionStateMachine",
    "with_sessions",
]

MARKER: Final = b"\xc1raftpy-sessions\x01"
"""How a snapshot body holding a session table starts. 0xc1 is a byte msgpack never uses, so a
msgpack-encoded user state cannot start with it; the last byte is the image's version."""

_MAX_IMAGE_RECORD: Final = 1 << 31
_SESSION: Final = EntryKind.SESSION  # a global: ~0.1 us less per entry than the enum's lookup
_encoder = msgspec.msgpack.Encoder()
_head_decoder = msgspec.msgpack.Decoder(TableHead)
_session_decoder = msgspec.msgpack.Decoder(SessionImage)


class SessionStateMachine:
    """The user's state machine ``user`` and the session table ``table``, applied and
    snapshotted together (see the module)."""

    def __init__(self, user: StateMachine, table: SessionTable | None = None) -> None:
        self.user = user
        self.table = table if table is not None else SessionTable()

    def apply_entry(self, entry: Entry) -> Answer:
        """Apply a COMMAND or SESSION entry (other kinds are not the state machine's)."""
        if entry.kind is _SESSION:
            return self.table.apply_bytes(entry.index, entry.data, self.user.apply)
        try:
            return Answer(self.user.apply(entry.data), None, True)
        except Exception as exc:
            return Answer(b"", exc, True)

    def apply(self, command: bytes) -> bytes:
        return self.user.apply(command)

    def query(self, query: bytes) -> bytes:
        return self.user.query(query)

    def snapshot(self, out: BinaryIO) -> None:
        # Runs while the node holds applies back: the table cannot move meanwhile.
        write_image(out, self.table.head(), self.table.images())
        self.user.snapshot(out)

    def restore(self, inp: BinaryIO) -> None:
        image, rest = read_image(inp)
        self.user.restore(rest)
        if image is None:
            self.table.load(TableHead(0, 0), [])  # a snapshot from before sessions
        else:
            self.table.load(*image)


class ConcurrentSessionStateMachine(SessionStateMachine):
    """A :class:`SessionStateMachine` for a user state machine with ``prepare_snapshot()``."""

    def prepare_snapshot(self) -> Callable[[BinaryIO], None]:
        # Both captured now, between two applies: the same applied index.
        header = io.BytesIO()
        write_image(header, self.table.head(), self.table.images())
        image = header.getvalue()
        user = cast(ConcurrentSnapshot, self.user).prepare_snapshot()

        def write(out: BinaryIO) -> None:
            out.write(image)
            user(out)

        return write


def with_sessions(user: StateMachine, table: SessionTable | None = None) -> SessionStateMachine:
    """``user`` wrapped with a session table, keeping its ``prepare_snapshot()`` if it has one."""
    if isinstance(user, ConcurrentSnapshot):
        return ConcurrentSessionStateMachine(user, table)
    return SessionStateMachine(user, table)


def write_image(out: BinaryIO, head: TableHead, images: Iterable[SessionImage]) -> None:
    """Write the marker and the table's image to ``out``."""
    out.write(MARKER)
    _write_record(out, _encoder.encode(head))
    for im in images:
        _write_record(out, _encoder.encode(im))


def _write_record(out: BinaryIO, data: bytes) -> None:
    out.write(len(data).to_bytes(4, "big"))
    out.write(data)


def read_image(inp: BinaryIO) -> tuple[tuple[TableHead, list[SessionImage]] | None, BinaryIO]:
    """The table image at the start of ``inp`` (``None`` when the body has no marker) and the
    stream of the user's bytes after it. A damaged image raises ``ValueError``."""
    start = _read_exactly(inp, len(MARKER))
    if start != MARKER:
        return None, _prefixed(start, inp)
    try:
        head = _head_decoder.decode(_read_record(inp))
        images = [_session_decoder.decode(_read_record(inp)) for _ in range(head.sessions)]
    except DECODE_ERRORS as exc:
        raise ValueError(f"damaged session table in the snapshot: {exc}") from None
    return (head, images), inp


def _read_record(inp: BinaryIO) -> bytes:
    size = int.from_bytes(_read_exactly(inp, 4), "big")
    if size >= _MAX_IMAGE_RECORD:
        raise ValueError(f"damaged session table in the snapshot: a record of {size} bytes")
    data = _read_exactly(inp, size)
    if len(data) != size:
        raise ValueError("damaged session table in the snapshot: it ends early")
    return data


def _read_exactly(inp: BinaryIO, n: int) -> bytes:
    parts: list[bytes] = []
    left = n
    while left:
        chunk = inp.read(left)
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


class _Prefixed(io.RawIOBase):
    """``head`` followed by the rest of ``tail``: the bytes read while looking for the marker
    are given back to the user's restore."""

    def __init__(self, head: bytes, tail: BinaryIO) -> None:
        self._head = head
        self._tail = tail

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._tail.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _prefixed(head: bytes, tail: BinaryIO) -> BinaryIO:
    if not head:
        return tail
    return cast(BinaryIO, io.BufferedReader(_Prefixed(head, tail)))
