"""The handshake carries each peer's data directory incarnation, both ways: a member that comes
back with another one (it lost its disk) is refused by the node it dials and dropped by the node
that dials it, with one ERROR line saying what happened and what to do, and it is listed by
``refused_peers`` until it is removed from the membership."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
import pytest

from raftpy.core.messages import PROTOCOL_VERSION
from raftpy.errors import RemoteProtocolError
from raftpy.storage.peers import PeerIncarnations
from raftpy.transport.base import refused_peers
from raftpy.transport.protocol import (
    ConnectionRole,
    Hello,
    HelloReply,
    decode_hello,
    decode_hello_reply,
    encode_frame_payload,
)
from tests.transport.test_tcp_transport import (
    Node,
    closed_by_peer,
    connect,
    frame,
    hb,
    peer_hello,
    read_reply,
    run,
    until,
)

INC = {1: "1" * 32, 2: "2" * 32, 3: "3" * 32}
NEW_DISK = "f" * 32
CHANGED = "node 2 came back with a different data directory"


@asynccontextmanager
async def cluster(incarnations: dict[int, PeerIncarnations]) -> AsyncIterator[dict[int, Node]]:
    """Started transports (ids from ``incarnations``), each with its own pins."""
    placeholder = {i: "127.0.0.1:1" for i in incarnations}
    nodes = {
        i: Node(i, placeholder, incarnations=pins, backoff_max=0.1)
        for i, pins in incarnations.items()
    }
    try:
        for node in nodes.values():
            await node.t.start()
        real = {i: node.t.bound_address for i, node in nodes.items()}
        for node in nodes.values():
            node.t.update_peers(real)
        yield nodes
    finally:
        for node in nodes.values():
            await node.t.close()


def pins_of(own: str | None, **pinned: str) -> PeerIncarnations:
    pins = PeerIncarnations(own=own)
    for name, inc in pinned.items():
        assert pins.check(int(name[1:]), inc) is None
    return pins


# -- the wire -------------------------------------------------------------------------------


def test_hello_and_reply_carry_an_incarnation_as_a_trailing_optional_field() -> None:
    hello = Hello(PROTOCOL_VERSION, ConnectionRole.PEER, "c", 2, 1, INC[2])
    assert decode_hello(encode_frame_payload(hello)) == hello
    reply = HelloReply(True, 1, incarnation=INC[1])
    assert decode_hello_reply(encode_frame_payload(reply)) == reply
    # What a node from before incarnations sends: no such field, read as None.
    old = msgspec.msgpack.encode({"type": "hello", "version": PROTOCOL_VERSION, "role": "peer"})
    assert decode_hello(old).incarnation is None
    old_reply = msgspec.msgpack.encode({"type": "hello-reply", "ok": True, "node_id": 1})
    assert decode_hello_reply(old_reply).incarnation is None


@pytest.mark.parametrize("bad", ["A" * 32, "a" * 31, "a" * 33, "g" * 32, "", 5, b"a" * 32])
def test_a_malformed_incarnation_is_refused_at_decode(bad: object) -> None:
    hello = {"type": "hello", "version": PROTOCOL_VERSION, "role": "peer", "incarnation": bad}
    with pytest.raises(RemoteProtocolError, match="incarnation"):
        decode_hello(msgspec.msgpack.encode(hello))
    reply = {"type": "hello-reply", "ok": True, "node_id": 1, "incarnation": bad}
    with pytest.raises(RemoteProtocolError, match="incarnation"):
        decode_hello_reply(msgspec.msgpack.encode(reply))


# -- the acceptor ---------------------------------------------------------------------------


def test_acceptor_refuses_a_peer_that_came_back_with_another_data_directory(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> None:
        async with cluster({1: pins_of(INC[1], n2=INC[2]), 2: pins_of(INC[2])}) as nodes:
            node = nodes[1]
            for _ in range(3):  # it redials; one line says it
                reader, writer = await connect(node.t.bound_address)
                writer.write(frame(peer_hello(2, 1, incarnation=NEW_DISK)))
                reply = await read_reply(reader)
                assert not reply.ok and reply.reason is not None
                assert "knows node 2 by another data directory" in reply.reason
                assert "remove it from the cluster and add it back" in reply.reason
                assert INC[2] not in reply.reason and reply.incarnation is None
                assert await closed_by_peer(reader)
                writer.close()
            assert node.stat("handshakes_refused") == 3 and node.inbox == []
            assert list(node.t.refused_peers()) == [2]
            assert refused_peers(node.t) == node.t.refused_peers()  # what a status shows
            assert node.t.refused_peers()[2].startswith(
                f"{CHANGED} (incarnation ffffffff..., expected 22222222...)"
            )
            # The one it knows is accepted (and told ours); so is one that announces none.
            for inc in (INC[2], None):
                reader, writer = await connect(node.t.bound_address)
                writer.write(frame(peer_hello(2, 1, incarnation=inc)))
                reply = await read_reply(reader)
                assert reply.ok and reply.incarnation == INC[1]
                writer.close()
            assert node.t.refused_peers() == {}

    with caplog.at_level(logging.WARNING, logger="raftpy.transport"):
        run(body())
    lines = [r for r in caplog.records if CHANGED in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.ERROR], caplog.text
    assert "it lost its disk and must not vote as its old self" in lines[0].getMessage()
    assert '(README.md, "Changing members")' in lines[0].getMessage()


def test_a_peer_is_pinned_only_once_it_passed_the_other_checks() -> None:
    async def body() -> None:
        pins = pins_of(INC[1])
        async with cluster({1: pins, 2: pins_of(None)}) as nodes:  # 2 does not dial by itself
            reader, writer = await connect(nodes[1].t.bound_address)
            writer.write(frame(peer_hello(2, 1, incarnation=NEW_DISK, cluster_id="other")))
            assert not (await read_reply(reader)).ok
            writer.close()
            assert 2 not in pins.pinned()

    run(body())


# -- the dialer -----------------------------------------------------------------------------


def test_dialer_drops_a_peer_whose_reply_names_another_data_directory(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> None:
        # Node 2 lost its disk: its new incarnation is not the one node 1 pinned.
        a_pins = pins_of(INC[1], n2=INC[2])
        async with cluster({1: a_pins, 2: pins_of(NEW_DISK)}) as nodes:
            a, b = nodes[1], nodes[2]
            a.t.send(hb(1, 2))
            await until(lambda: a.stat("handshakes_rejected") >= 3, "three dropped dials")
            assert b.inbox == [] and a.stat("queued_bytes") > 0  # nothing of ours reached it
            assert list(a.t.refused_peers()) == [2]
            # And the other way: 2 dials 1 and is refused.
            b.t.send(hb(2, 1))
            await until(lambda: a.stat("handshakes_refused") >= 1, "the refusal")
            assert a.inbox == []
            # Removed from the membership, it is forgotten; added back, it is pinned afresh.
            real = {i: n.t.bound_address for i, n in nodes.items()}
            a.t.update_peers({1: real[1]})
            assert a.t.refused_peers() == {} and a_pins.pinned() == {}
            a.t.update_peers(real)
            a.t.send(hb(1, 2, commit=1))
            b.t.send(hb(2, 1, commit=1))
            await until(lambda: len(b.inbox) >= 1 and len(a.inbox) >= 1, "both ways")
            assert a_pins.pinned() == {2: NEW_DISK}

    with caplog.at_level(logging.WARNING, logger="raftpy.transport"):
        run(body())
    lines = [r for r in caplog.records if CHANGED in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.ERROR], caplog.text


def test_peers_without_incarnations_are_not_checked() -> None:
    async def body() -> None:
        async with cluster({1: pins_of(None), 2: pins_of(None, n1=INC[1])}) as nodes:
            nodes[1].t.send(hb(1, 2))
            nodes[2].t.send(hb(2, 1))
            await until(lambda: nodes[1].inbox != [] and nodes[2].inbox != [], "both ways")
            assert nodes[1].t.refused_peers() == nodes[2].t.refused_peers() == {}

    run(body())


def test_members_meet_at_start_and_pin_each_other_before_any_message() -> None:
    """Two followers may never exchange a message until one campaigns, which is just when a
    member that lost its disk must already be known: every node with an incarnation dials
    every member at start, so all pairs are pinned without any message sent."""

    async def body() -> None:
        pins = {i: pins_of(INC[i]) for i in (1, 2, 3)}
        async with cluster(pins) as nodes:

            def all_pinned() -> bool:
                return all(pins[i].pinned() == {j: INC[j] for j in pins if j != i} for i in pins)

            await until(all_pinned, "every pair pinned")
            assert all(n.inbox == [] for n in nodes.values())

    run(body())


def test_a_transport_that_does_not_check_refuses_no_one() -> None:
    class Plain:
        refused_peers = None  # not a method: not a refusing transport

    assert refused_peers(object()) == {}
    assert refused_peers(Plain()) == {}
    assert refused_peers(None) == {}
