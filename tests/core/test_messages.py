"""Wire messages: every kind round-trips; malformed input raises one documented error."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftpy.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    ConfState,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    PeerMessage,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
    TimeoutNow,
    decode_message,
    encode_message,
)
from raftpy.errors import MessageDecodeError, RemoteProtocolError

EXAMPLES: list[PeerMessage] = [
    RequestVote(3, 1, 2, 10, 2, pre_vote=True),
    RequestVoteResponse(3, 2, 1, True, pre_vote=False),
    AppendEntries(
        4, 1, 2, 5, 3, (Entry(4, 6, EntryKind.COMMAND, b"x"), Entry(4, 7, EntryKind.NOOP, b"")), 5
    ),
    AppendEntriesResponse(4, 2, 1, False, 5, hint_index=3, hint_term=2),
    Heartbeat(4, 1, 2, 5, context=b"r1"),
    HeartbeatResponse(4, 2, 1, None),
    InstallSnapshot(4, 1, 2, SnapshotMeta(9, 3, ConfState((1, 2, 3))), 0, b"abc", True),
    InstallSnapshotResponse(4, 2, 1, 9, 3, True),
    TimeoutNow(4, 1, 2),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_kind_round_trips(message: PeerMessage) -> None:
    assert decode_message(encode_message(message)) == message


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never-used msgpack byte
        b"\x93\x01\x00",  # RequestVote with too few fields
        b"\x96\x63\x00\x00\x00\x00\x00",  # unknown tag 99
        encode_message(TimeoutNow(1, 2, 3))[:-1],  # truncated
        msgspec.msgpack.encode([9, -1, 2, 3]),  # negative term
        msgspec.msgpack.encode([9, "1", 2, 3]),  # wrong type
        msgspec.msgpack.encode({"term": 1}),
    ],
    ids=["empty", "bad-byte", "short", "unknown-tag", "truncated", "negative", "type", "map"],
)
def test_malformed_input_raises_message_decode_error(data: bytes) -> None:
    with pytest.raises(MessageDecodeError):
        decode_message(data)


@given(st.binary(max_size=64))
def test_random_bytes_never_raise_anything_but_remote_protocol_error(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_message(data)


def test_messages_are_frozen() -> None:
    m = TimeoutNow(1, 2, 3)
    with pytest.raises(AttributeError):
        m.term = 5  # type: ignore[misc]
