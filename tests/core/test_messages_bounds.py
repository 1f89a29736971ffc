"""Decode-time bounds: every field of every peer, handshake and client frame is range-checked,
and fields that must agree with each other do, before anything reaches a node.

Each table row is raw msgpack (built field by field, as a forging peer would) that must be
refused with a :class:`MessageDecodeError` (peer messages) or :class:`RemoteProtocolError`
(handshake and client frames), next to the boundary value that is still accepted.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from raftpy.core.messages import (
    INT64_MAX,
    MAX_INDEX,
    MAX_NODE_ID,
    MAX_SIZE,
    MAX_TERM,
    AppendEntries,
    AppendEntriesResponse,
    ConfState,
    Entry,
    EntryKind,
    Heartbeat,
    InstallSnapshot,
    RequestVote,
    SnapshotMeta,
    decode_message,
    encode_message,
)
from raftpy.core.storage import HardState
from raftpy.errors import MessageDecodeError, RemoteProtocolError
from raftpy.transport.protocol import (
    MAX_NAME_CHARS,
    MAX_REQUEST_TIMEOUT,
    ClientOp,
    ClientRequest,
    ConnectionRole,
    Hello,
    client_decoder,
    decode_hello,
    encode_frame_payload,
)

U64_MAX = (1 << 64) - 1
enc = msgspec.msgpack.encode

# Tags: RequestVote 1, RequestVoteResponse 2, AppendEntries 3, AppendEntriesResponse 4,
# Heartbeat 5, HeartbeatResponse 6, InstallSnapshot 7, InstallSnapshotResponse 8, TimeoutNow 9.


def heartbeat(term: int = 1, src: int = 2, dst: int = 1, commit: int = 0) -> bytes:
    return enc([5, term, src, dst, commit, None])


def append(
    entries: list[list[Any]], prev_index: int = 5, prev_term: int = 2, term: int = 3
) -> bytes:
    return enc([3, term, 2, 1, prev_index, prev_term, entries, 0])


def entry(term: int, index: int) -> list[Any]:
    return [term, index, 0, b""]


def snapshot_chunk(
    meta_term: int = 2, voters: list[int] | None = None, learners: list[int] | None = None
) -> bytes:
    conf = [voters if voters is not None else [1, 2, 3], learners or [], []]
    return enc([7, 3, 2, 1, [9, meta_term, conf], 0, b"", True])


REFUSED: list[tuple[str, bytes, str]] = [
    # Single fields out of range (checked by msgspec while it parses).
    ("term-2^64-1", heartbeat(term=U64_MAX), "<= 4611686018427387904"),
    ("term-max+1", heartbeat(term=MAX_TERM + 1), "<= 4611686018427387904"),
    ("term-int64-max", heartbeat(term=INT64_MAX), r"at `\$\[1\]`"),
    ("term-negative", heartbeat(term=-1), ">= 0"),
    ("commit-max+1", heartbeat(commit=MAX_INDEX + 1), r"at `\$\[4\]`"),
    ("src-2^63", heartbeat(src=MAX_NODE_ID + 1), r"807 - at `\$\[2\]`"),
    ("dst-2^64-1", heartbeat(dst=U64_MAX), r"at `\$\[3\]`"),
    ("prev-index-max+1", append([], prev_index=MAX_INDEX + 1), r"at `\$\[4\]`"),
    (
        "entry-index-max+1",
        append([entry(3, MAX_INDEX + 1)], prev_index=MAX_INDEX),
        r"at `\$\[6\]\[0\]\[1\]`",
    ),
    ("entry-term-max+1", append([entry(MAX_TERM + 1, 6)]), r"at `\$\[6\]\[0\]\[0\]`"),
    ("vote-last-index-max+1", enc([1, 3, 2, 1, MAX_INDEX + 1, 1, False, False]), r"at `\$\[4\]`"),
    ("response-hint-max+1", enc([4, 3, 2, 1, False, 5, MAX_INDEX + 1, 1]), r"at `\$\[6\]`"),
    (
        "chunk-offset-max+1",
        enc([7, 3, 2, 1, [9, 2, [[1], [], []]], MAX_SIZE + 1, b"", 0]),
        r"at `\$\[5\]`",
    ),
    ("answer-offset-max+1", enc([8, 3, 2, 1, 9, MAX_SIZE + 1, False, False]), r"at `\$\[5\]`"),
    ("voter-id-2^64-1", snapshot_chunk(voters=[U64_MAX]), r"at `\$\[4\]\[2\]\[0\]\[0\]`"),
    # Fields that must agree (validate_message).
    ("entries-gap", append([entry(3, 6), entry(3, 8)]), "entry 8 where 7 should follow"),
    ("entries-not-after-prev", append([entry(3, 1)]), "entry 1 where 6 should follow"),
    ("entries-repeat", append([entry(3, 6), entry(3, 6)]), "entry 6 where 7 should follow"),
    ("entry-terms-decrease", append([entry(3, 6), entry(2, 7)]), "term 2, below the 3"),
    ("entry-term-below-prev", append([entry(1, 6)]), "term 1, below the 2"),
    ("entry-term-past-message", append([entry(4, 6)]), "term 4, past the message's term 3"),
    ("prev-term-past-message", append([], prev_term=4), "prev_term 4 is past"),
    ("prev-term-at-index-0", append([], prev_index=0, prev_term=1), "for index 0"),
    ("vote-log-term-past-term", enc([1, 3, 2, 1, 5, 4, False, False]), "last_log_term 4"),
    ("vote-empty-log-with-term", enc([1, 3, 2, 1, 0, 1, False, False]), "empty log"),
    ("hint-past-index", enc([4, 3, 2, 1, False, 5, 6, 1]), "hint_index 6 is past index 5"),
    ("hint-term-past-term", enc([4, 3, 2, 1, False, 5, 4, 4]), "hint_term 4"),
    ("snapshot-term-past-term", snapshot_chunk(meta_term=4), "snapshot term 4"),
    ("snapshot-no-voters", snapshot_chunk(voters=[]), "without voters"),
    ("snapshot-voter-twice", snapshot_chunk(voters=[1, 1]), "voters lists a node twice"),
    ("snapshot-learner-voter", snapshot_chunk(learners=[3]), r"\[3\] are both"),
]


@pytest.mark.parametrize(("data", "why"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_out_of_range_or_inconsistent_messages_are_refused_at_decode(data: bytes, why: str) -> None:
    with pytest.raises(MessageDecodeError, match=why):
        decode_message(data)


ACCEPTED = [
    Heartbeat(MAX_TERM, MAX_NODE_ID, 0, MAX_INDEX),
    RequestVote(MAX_TERM, 2, 1, MAX_INDEX, MAX_TERM),
    RequestVote(1, 2, 1, 0, 0),
    AppendEntries(3, 2, 1, 0, 0, (), 0),
    AppendEntries(3, 2, 1, 5, 2, (Entry(2, 6, EntryKind.COMMAND, b""),), 9),
    AppendEntries(
        MAX_TERM,
        2,
        1,
        MAX_INDEX - 2,
        1,
        tuple(Entry(t, MAX_INDEX - 2 + k, EntryKind.NOOP, b"") for k, t in ((1, 1), (2, MAX_TERM))),
        MAX_INDEX,
    ),
    AppendEntriesResponse(3, 2, 1, False, 5, 5, 3),
    InstallSnapshot(
        3, 2, 1, SnapshotMeta(9, 3, ConfState((1, 2), (4,), (1, 3))), MAX_SIZE, b"", True
    ),
]


@pytest.mark.parametrize("message", ACCEPTED, ids=lambda m: type(m).__name__)
def test_boundary_values_are_accepted(message: Any) -> None:
    assert decode_message(encode_message(message)) == message


def test_hard_state_bounds_hold_in_storage_too() -> None:
    """Storage decodes the hard state with the same bounds: a term no node may reach is
    never loaded as if it were state."""
    decode = msgspec.msgpack.Decoder(HardState).decode
    assert decode(enc([MAX_TERM, 3, MAX_INDEX])) == HardState(MAX_TERM, 3, MAX_INDEX)
    with pytest.raises(msgspec.ValidationError):
        decode(enc([U64_MAX, None, 0]))


# -- handshake and client frames ---------------------------------------------------------------


def hello(**fields: Any) -> bytes:
    base: dict[str, Any] = {"type": "hello", "version": 1, "role": "peer", "cluster_id": "c"}
    base.update(fields)
    return enc(base)


HELLO_REFUSED = [
    ("cluster-id-too-long", hello(cluster_id="x" * (MAX_NAME_CHARS + 1))),
    ("node-id-2^64-1", hello(node_id=U64_MAX)),
    ("target-id-negative", hello(target_id=-1)),
    ("version-2^64-1", hello(version=U64_MAX)),
]


@pytest.mark.parametrize("data", [r[1] for r in HELLO_REFUSED], ids=[r[0] for r in HELLO_REFUSED])
def test_out_of_range_hello_is_refused(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_hello(data)


def test_longest_cluster_id_is_accepted() -> None:
    name = "x" * MAX_NAME_CHARS
    payload = encode_frame_payload(Hello(1, ConnectionRole.PEER, cluster_id=name))
    assert decode_hello(payload).cluster_id == name


@pytest.mark.parametrize(
    "fields",
    [
        ["request", U64_MAX, "query", b"", "stale", None],
        ["request", 1, "query", b"", "stale", float("inf")],
        ["request", 1, "query", b"", "stale", float("nan")],
        ["request", 1, "query", b"", "stale", MAX_REQUEST_TIMEOUT * 2],
        ["request", 1, "query", b"", "stale", 0.0],
    ],
    ids=["id-2^64-1", "timeout-inf", "timeout-nan", "timeout-two-days", "timeout-zero"],
)
def test_out_of_range_client_request_is_refused(fields: list[Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        client_decoder.decode(enc(fields))


def test_longest_client_timeout_is_accepted() -> None:
    request = ClientRequest(INT64_MAX, ClientOp.QUERY, timeout=MAX_REQUEST_TIMEOUT)
    assert client_decoder.decode(encode_frame_payload(request)) == request


def test_membership_entry_must_hold_a_valid_membership() -> None:
    """Storage reads every membership entry it appends (the newest is the membership after a
    restart), so an AppendEntries whose CONFIG entry is not a valid membership is refused."""
    bad = [
        b"\xc1",
        msgspec.msgpack.encode(ConfState(())),
        msgspec.msgpack.encode(ConfState((1, 2), (2,))),
    ]
    for data in bad:
        m = AppendEntries(3, 2, 1, 0, 0, (Entry(3, 1, EntryKind.CONFIG, data),), 0)
        with pytest.raises(MessageDecodeError, match="entry 1: "):
            decode_message(encode_message(m))
    good = AppendEntries(
        3, 2, 1, 0, 0, (Entry(3, 1, EntryKind.CONFIG, encode_conf(ConfState((1, 2)))),), 0
    )
    assert decode_message(encode_message(good)) == good


def encode_conf(conf: ConfState) -> bytes:
    return msgspec.msgpack.encode(conf)
