"""Decoding the handshake frames and a snapshot result: anything malformed is the remote's
fault (RemoteProtocolError), never a crash of the reader."""

from __future__ import annotations

import msgspec
import pytest

from raftpy.core.messages import PROTOCOL_VERSION
from raftpy.errors import RemoteProtocolError
from raftpy.transport.protocol import (
    ConnectionRole,
    Hello,
    HelloReply,
    SnapshotTaken,
    decode_hello,
    decode_hello_reply,
    decode_snapshot_taken,
    encode_frame_payload,
)

HELLO = Hello(version=PROTOCOL_VERSION, role=ConnectionRole.PEER, cluster_id="c", node_id=2)
REPLY = HelloReply(True, 1)


def test_handshake_frames_round_trip() -> None:
    assert decode_hello(encode_frame_payload(HELLO)) == HELLO
    assert decode_hello_reply(encode_frame_payload(REPLY)) == REPLY


@pytest.mark.parametrize(
    ("decode", "payload", "why"),
    [
        (decode_hello, encode_frame_payload(REPLY), "expected a Hello, got HelloReply"),
        (decode_hello_reply, encode_frame_payload(HELLO), "expected a HelloReply, got Hello"),
        (decode_hello, b"\xc1", "malformed handshake frame"),
        (decode_hello_reply, msgspec.msgpack.encode({"type": "nope"}), "malformed handshake"),
    ],
    ids=["reply-for-hello", "hello-for-reply", "not-msgpack", "unknown-tag"],
)
def test_a_wrong_handshake_frame_is_the_remotes_fault(decode, payload, why) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RemoteProtocolError, match=why):
        decode(payload)


def test_snapshot_result_round_trip_and_refusals() -> None:
    assert decode_snapshot_taken(msgspec.msgpack.encode(SnapshotTaken(7, 2))) == (
        SnapshotTaken(7, 2)
    )
    # The wire form is a map: older readers of {"index", "term"} understand it.
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(SnapshotTaken(7, 2))) == {
        "index": 7,
        "term": 2,
    }
    for bad in (b"", msgspec.msgpack.encode({"index": -1, "term": 1}), msgspec.msgpack.encode([1])):
        with pytest.raises(RemoteProtocolError, match="malformed snapshot result"):
            decode_snapshot_taken(bad)
