"""Decoding the handshake frames, a snapshot result and the membership request and answer:
anything malformed is the remote's fault (RemoteProtocolError), never a crash of the reader."""

from __future__ import annotations

import msgspec
import pytest

from raftpy.core.messages import MAX_ADDRESS_CHARS, PROTOCOL_VERSION
from raftpy.errors import RemoteProtocolError
from raftpy.transport.protocol import (
    MAX_MEMBERS,
    ClientOp,
    ClientRequest,
    ConnectionRole,
    Hello,
    HelloReply,
    MemberRequest,
    Members,
    SessionGranted,
    SnapshotTaken,
    client_decoder,
    decode_hello,
    decode_hello_reply,
    decode_member_request,
    decode_members,
    decode_session_granted,
    decode_snapshot_taken,
    encode_frame_payload,
    session_fields_problem,
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


# -- membership requests and answers ---------------------------------------------------------

MEMBERS = Members(
    voters=(1, 2, 3),
    learners=(4,),
    addresses={1: "10.0.0.1:7000", 2: "10.0.0.2:7000", 3: "10.0.0.3:7000", 4: "10.0.0.4:7000"},
    leader_id=1,
    node_id=2,
    index=12,
)


def test_member_request_and_members_round_trip_as_maps() -> None:
    req = MemberRequest(node_id=4, address="10.0.0.4:7000", voter=True, force=True)
    assert decode_member_request(msgspec.msgpack.encode(req)) == req
    assert decode_member_request(msgspec.msgpack.encode({"node_id": 5})) == MemberRequest(node_id=5)
    # Unknown fields are skipped, so newer clients and nodes can add some.
    assert decode_member_request(msgspec.msgpack.encode({"node_id": 5, "later": 1})).node_id == 5
    wire = msgspec.msgpack.encode(MEMBERS)
    assert decode_members(wire) == MEMBERS
    assert msgspec.msgpack.decode(wire)["addresses"] == {
        1: "10.0.0.1:7000",
        2: "10.0.0.2:7000",
        3: "10.0.0.3:7000",
        4: "10.0.0.4:7000",
    }
    assert MEMBERS.members() == [1, 2, 3, 4]
    assert [MEMBERS.role(i) for i in (1, 4, 9)] == ["voter", "learner", None]
    joint = Members(voters=(1, 2), voters_outgoing=(1, 2, 3))
    assert decode_members(msgspec.msgpack.encode(joint)) == joint
    assert joint.role(3) == "outgoing"


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"node_id": -1},
        {"node_id": (1 << 64) - 1},
        {"node_id": "1"},
        {"node_id": True},
        {"node_id": 1, "address": ""},
        {"node_id": 1, "address": "h" * (MAX_ADDRESS_CHARS + 1)},
        {"node_id": 1, "voter": 1},
        {"node_id": 1, "force": "yes"},
    ],
    ids=[
        "no-id",
        "negative-id",
        "huge-id",
        "id-text",
        "id-bool",
        "empty-address",
        "long-address",
        "voter-int",
        "force-text",
    ],
)
def test_bad_member_requests_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(RemoteProtocolError, match="malformed membership request"):
        decode_member_request(msgspec.msgpack.encode(fields))


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"voters": [-1]}, "malformed"),
        ({"voters": [1], "leader_id": -2}, "malformed"),
        ({"voters": [1], "index": -1}, "malformed"),
        ({"voters": [1], "addresses": {1: ""}}, "malformed"),
        ({"voters": [1], "addresses": {-1: "a:1"}}, "malformed"),
        ({"voters": [1], "addresses": {1: "a" * (MAX_ADDRESS_CHARS + 1)}}, "malformed"),
        ({"voters": list(range(MAX_MEMBERS + 1))}, "malformed"),
        ({"voters": []}, "without voters"),
        ({"voters": [1], "learners": [1]}, "both learners and voters"),
        ({"voters": [1, 1]}, "twice"),
        ({"voters": [1], "addresses": {2: "b:2"}}, "not members"),
    ],
    ids=[
        "negative-voter",
        "negative-leader",
        "negative-index",
        "empty-address",
        "negative-address-id",
        "long-address",
        "too-many-voters",
        "no-voters",
        "learner-and-voter",
        "voter-twice",
        "stranger-address",
    ],
)
def test_bad_members_answers_are_the_remotes_fault(fields: dict[str, object], why: str) -> None:
    with pytest.raises(RemoteProtocolError, match=why):
        decode_members(msgspec.msgpack.encode(fields))
    with pytest.raises(RemoteProtocolError):
        decode_members(b"\xc1")


# -- client sessions ---------------------------------------------------------------------------


def test_session_fields_round_trip_and_default_to_none() -> None:
    req = ClientRequest(5, ClientOp.PROPOSE, b"x", timeout=1.0, session=12, seq=3, ack=2)
    assert client_decoder.decode(encode_frame_payload(req)) == req
    # An older client's request (no trailing session fields) reads as "no session".
    old = msgspec.msgpack.encode(["request", 5, "propose", b"x", "linearizable", 1.0])
    decoded = client_decoder.decode(old)
    assert isinstance(decoded, ClientRequest)
    assert (decoded.session, decoded.seq, decoded.ack) == (0, 0, 0)
    assert session_fields_problem(decoded) is None


@pytest.mark.parametrize(
    "fields",
    [[-1, 1, 0], [(1 << 62) + 1, 1, 0], [1, -1, 0], [1, 1, -1], [1, 1, 1 << 63], ["1", 1, 0]],
    ids=["session<0", "session>max-index", "seq<0", "ack<0", "ack>int64", "session-str"],
)
def test_session_fields_out_of_range_fail_decoding(fields: list[object]) -> None:
    frame = msgspec.msgpack.encode(["request", 5, "propose", b"x", "linearizable", 1.0, *fields])
    with pytest.raises(msgspec.ValidationError):
        client_decoder.decode(frame)


@pytest.mark.parametrize(
    ("op", "session", "seq", "ack", "problem"),
    [
        (ClientOp.PROPOSE, 0, 0, 0, None),
        (ClientOp.PROPOSE, 7, 1, 1, None),
        (ClientOp.PROPOSE, 7, 5, 0, None),
        (ClientOp.PROPOSE, 7, 5, 5, None),
        (ClientOp.PROPOSE, 0, 1, 0, "without a session carries no seq"),
        (ClientOp.PROPOSE, 0, 0, 1, "without a session carries no seq"),
        (ClientOp.PROPOSE, 7, 0, 0, "needs a seq >= 1"),
        (ClientOp.PROPOSE, 7, 5, 6, "ack 6 is above the write's own seq 5"),
        (ClientOp.KEEP_ALIVE, 7, 0, 9, None),
        (ClientOp.KEEP_ALIVE, 0, 0, 1, "keep-alive needs a session"),
        (ClientOp.KEEP_ALIVE, 7, 2, 1, "keep-alive carries no seq"),
        (ClientOp.CLOSE_SESSION, 7, 0, 0, None),
        (ClientOp.CLOSE_SESSION, 7, 0, 3, "close-session carries no ack"),
        (ClientOp.CLOSE_SESSION, 0, 0, 0, "close-session needs a session"),
        (ClientOp.OPEN_SESSION, 0, 0, 0, None),
        (ClientOp.OPEN_SESSION, 7, 0, 0, "open-session carries no session fields"),
        (ClientOp.QUERY, 0, 1, 0, "query carries no session fields"),
    ],
)
def test_session_fields_must_fit_the_op(
    op: ClientOp, session: int, seq: int, ack: int, problem: str | None
) -> None:
    found = session_fields_problem(ClientRequest(1, op, session=session, seq=seq, ack=ack))
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_session_grant_round_trips_as_a_map_and_refuses_garbage() -> None:
    grant = SessionGranted(session=41, timeout=120.0)
    payload = msgspec.msgpack.encode(grant)
    assert msgspec.msgpack.decode(payload) == {"session": 41, "timeout": 120.0}
    assert decode_session_granted(payload) == grant
    bad = [
        b"",
        b"\xc1",
        msgspec.msgpack.encode({"session": 0, "timeout": 1.0}),  # ids are log indexes >= 1
        msgspec.msgpack.encode({"session": 3, "timeout": 0.0}),
        msgspec.msgpack.encode({"session": 3, "timeout": float("nan")}),
        msgspec.msgpack.encode({"session": 3, "timeout": float("inf")}),
        msgspec.msgpack.encode({"session": 3}),
    ]
    for payload in bad:
        with pytest.raises(RemoteProtocolError, match="malformed session grant"):
            decode_session_granted(payload)
