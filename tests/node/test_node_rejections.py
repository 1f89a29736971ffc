"""A peer message the core rejects costs that peer its connection, never the node.

In-process cluster (:mod:`tests.nodehelpers`): forged messages are handed to a node as its
transport would hand them (decoded from bytes), and the node must drop them, ask the transport
to close that peer's connection, count and log them, and go on serving with its data intact.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
import pytest

from raftpy.core.messages import (
    AppendEntries,
    Entry,
    EntryKind,
    Heartbeat,
    PeerMessage,
    decode_message,
    encode_message,
)
from raftpy.errors import MessageDecodeError
from raftpy.node import RaftNode
from raftpy.node.status import decode_status
from tests.nodehelpers import (
    KV,
    LocalNetwork,
    LocalTransport,
    make_cluster,
    running,
    set_cmd,
    wait_for,
    wait_leader,
)


def deliver(node: RaftNode, m: PeerMessage) -> LocalTransport:
    """Hand ``m`` to ``node`` the way its transport does (through the codec); return the
    transport, which records the connections the node asked it to close."""
    transport = node._transport
    assert isinstance(transport, LocalTransport)
    transport.on_message(decode_message(encode_message(m)))
    return transport


def data(node: RaftNode) -> dict[str, str]:
    sm = node.state_machine
    assert isinstance(sm, KV)
    return sm.data


def test_forged_second_leader_and_conflicting_append_cost_the_connection_not_the_node(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        net = LocalNetwork()
        async with running(make_cluster(net)) as nodes:
            leader = await wait_leader(nodes)
            assert await leader.propose(set_cmd("k", "v1"), timeout=2) == b""
            await wait_for(lambda: all(data(n) == {"k": "v1"} for n in nodes))
            follower, other = (n for n in nodes if n is not leader)
            term = leader.status().term
            assert term is not None
            committed = leader.status().commit
            assert committed is not None and committed >= 2

            # A Heartbeat of the leader's own term "from" the other follower, to the leader
            # and to a follower: two leaders in one term is impossible.
            t_leader = deliver(leader, Heartbeat(term, follower.node_id, leader.node_id, 0))
            t_follower = deliver(follower, Heartbeat(term, other.node_id, follower.node_id, 0))
            # An AppendEntries of a later term that rewrites committed entry 1 with a command.
            evil = Entry(term + 1, 1, EntryKind.COMMAND, set_cmd("k", "evil"))
            deliver(
                follower,
                AppendEntries(term + 1, other.node_id, follower.node_id, 0, 0, (evil,), 1),
            )
            await wait_for(lambda: follower.stats.rejected_messages == 2)
            await wait_for(lambda: leader.stats.rejected_messages == 1)
            assert [p for p, _ in t_leader.rejected] == [follower.node_id]
            assert [p for p, _ in t_follower.rejected] == [other.node_id, other.node_id]
            assert "of which node" in t_follower.rejected[0][1]
            assert "committed entry has term" in t_follower.rejected[1][1]

            # Nothing changed: same leader and term, data intact, and the cluster serves.
            assert leader.status().term == follower.status().term == term
            assert follower.leader_id == leader.node_id
            assert await leader.propose(set_cmd("k", "v2"), timeout=2) == b"v1"
            await wait_for(lambda: all(data(n) == {"k": "v2"} for n in nodes))
            assert await leader.query(b"k") == b"v2"

            # Counted in the status (also over the wire), logged once per peer.
            status = decode_status(msgspec.msgpack.encode(follower.status()))
            assert status.stats.rejected_messages == 2
            lines = [r for r in caplog.records if "rejected a message" in r.getMessage()]
            assert len(lines) == 2  # one per (node, peer): the second from `other` is held

    with caplog.at_level(logging.WARNING, logger="raftpy.node"):
        asyncio.run(main())


def test_term_2_to_the_64_heartbeat_is_refused_at_decode() -> None:
    """The heartbeat that once stopped a cluster for good (its term could be persisted but
    never incremented) does not decode, so no node ever sees it."""
    forged = b"\x96\x05\xcf\xff\xff\xff\xff\xff\xff\xff\xff\x02\x01\x00\xc0"
    with pytest.raises(MessageDecodeError, match="<= 4611686018427387904"):
        decode_message(forged)
