"""What the TCP transport does with peer messages that must not reach the node: frames that
fail decode-time validation close that connection only, and ``reject_peer`` (the node's call
for a message its core rejected) closes the inbound connection of that peer, which may dial
again."""

from __future__ import annotations

import msgspec
import pytest

from raftpy.core.messages import AppendEntries, Entry, EntryKind, Heartbeat
from raftpy.transport.codec import encode_frame
from tests.transport.test_tcp_transport import (
    PEER_PREFIX,
    closed_by_peer,
    cluster,
    connect,
    hb,
    msg_frame,
    read_reply,
    run,
    until,
)

U64_MAX = (1 << 64) - 1


@pytest.mark.parametrize(
    "payload",
    [
        msgspec.msgpack.encode([5, U64_MAX, 2, 1, 0, None]),  # Heartbeat of term 2^64-1
        msgspec.msgpack.encode([5, 1, 2, 1, 1 << 63, None]),  # commit past MAX_INDEX
        msgspec.msgpack.encode(  # entries that skip an index (validate_message)
            AppendEntries(
                2,
                2,
                1,
                0,
                0,
                (Entry(2, 1, EntryKind.NOOP, b""), Entry(2, 3, EntryKind.NOOP, b"")),
                0,
            )
        ),
    ],
    ids=["term-2^64-1", "commit-2^63", "entries-gap"],
)
def test_invalid_peer_message_closes_only_that_connection(payload: bytes) -> None:
    async def body() -> None:
        async with cluster(2) as nodes:
            node = nodes[1]
            reader, writer = await connect(node.t.bound_address)
            writer.write(PEER_PREFIX)
            assert (await read_reply(reader)).ok
            writer.write(msg_frame(hb(2, 1)) + encode_frame(payload) + msg_frame(hb(2, 1)))
            assert await closed_by_peer(reader)
            writer.close()
            await until(lambda: node.stat("malformed_frames") == 1, "the count")
            assert node.inbox == [hb(2, 1)]  # the one before; none of it nor after it
            nodes[2].t.send(hb(2, 1, commit=7))  # the real peer still gets through
            await until(lambda: len(node.inbox) == 2, "a peer message")

    run(body())


def test_reject_peer_closes_that_peers_inbound_connection_and_it_redials() -> None:
    async def body() -> None:
        async with cluster(3) as nodes:
            node = nodes[1]
            nodes[2].t.send(hb(2, 1))
            nodes[3].t.send(hb(3, 1))
            await until(lambda: len(node.inbox) == 2, "both peers' messages")
            assert node.stat("peer_connections") == 2
            node.t.reject_peer(2, "a test says so")
            node.t.reject_peer(9, "no such peer: nothing happens")
            await until(lambda: 2 not in node.t._inbound_peers, "peer 2's connection closed")
            assert 3 in node.t._inbound_peers
            # Peer 2 notices, dials again and is served (what it sent into the closed
            # connection is lost, as Raft allows): keep sending until one arrives.

            def delivered_again() -> bool:
                nodes[2].t.send(hb(2, 1, commit=1))
                return any(isinstance(m, Heartbeat) and m.commit == 1 for m in node.inbox)

            await until(delivered_again, "peer 2 to redial and deliver")
            assert node.stat("peer_connections") == 3

    run(body())
