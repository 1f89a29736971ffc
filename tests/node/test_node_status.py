"""NodeStatus and NodeStats: what a node reports, on the wire and in process.

The status travels as msgpack of the Struct (``ClientOp.STATUS``) and is decoded strictly by
the client: these tests pin the round trip, refuse malformed answers, and check that the
node's counters live in one object (its own, its snapshot work's, its transport's).
"""

from __future__ import annotations

import asyncio
import dataclasses

import msgspec
import pytest

from raftpy import NodeStats as ExportedNodeStats
from raftpy import NodeStatus as ExportedNodeStatus
from raftpy.client import Client
from raftpy.errors import RemoteProtocolError
from raftpy.node import RaftNode
from raftpy.node.stats import NodeStats, SnapshotStats
from raftpy.node.status import NodeStatus, PeerReplication, SnapshotStatus, decode_status
from raftpy.transport.address import free_port
from raftpy.transport.stats import TransportStats
from tests.nodehelpers import FAST, KV, LocalNetwork, leader_status, set_cmd, wait_for

FULL = leader_status(
    snapshot=SnapshotStatus(
        index=10, term=2, taken=1, installed=0, sent=2, bytes_sent=4096, bytes_received=0
    ),
    peers={
        1: PeerReplication(
            address="127.0.0.1:7001", match=42, next=43, state="replicate", lag=0, active=True
        ),
        2: PeerReplication(
            address="127.0.0.1:7002", match=5, next=6, state="snapshot", lag=37, active=False
        ),
        3: PeerReplication(address=None, match=0, next=1, state="probe", lag=42, active=True),
    },
    stats=NodeStats(
        proposals=40,
        batches=7,
        syncs=9,
        reads=3,
        applied=40,
        snapshots=SnapshotStats(taken=1, sent=2, bytes_sent=4096),
        transport=TransportStats(messages_sent=120, messages_received=118, dials=2),
    ),
)
"""A status with every field set (peers, snapshot, counters with a transport part)."""

NOT_STARTED = NodeStatus(
    id=2,
    address="127.0.0.1:7002",
    running=False,
    role=None,
    term=None,
    leader=None,
    leader_address=None,
    commit=None,
    applied=None,
    last_index=None,
    first_index=None,
    snapshot=None,
    members=None,
    peers=None,
    disk_full=False,
    failed=None,
    stats=NodeStats(),
)


def wire(status: NodeStatus) -> dict[str, object]:
    """The status as the map that goes on the wire (to corrupt it field by field)."""
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(status))
    assert isinstance(decoded, dict)
    return decoded


# -- the wire format ---------------------------------------------------------------------------


def test_the_public_names_are_the_status_types() -> None:
    assert ExportedNodeStatus is NodeStatus and ExportedNodeStats is NodeStats


@pytest.mark.parametrize("status", [FULL, NOT_STARTED], ids=["full", "not-started"])
def test_a_status_survives_the_wire(status: NodeStatus) -> None:
    data = msgspec.msgpack.encode(status)
    back = decode_status(data)
    assert back == status
    assert msgspec.msgpack.encode(back) == data


def test_the_wire_carries_a_map_of_the_field_names() -> None:
    """As the untyped status did: a reader that knows no Struct still finds every field."""
    on_wire = wire(FULL)
    assert list(on_wire) == [f.name for f in msgspec.structs.fields(NodeStatus)]
    assert on_wire["role"] == "leader" and on_wire["members"] == [1, 2, 3]
    snapshot = on_wire["snapshot"]
    assert isinstance(snapshot, dict) and snapshot["bytes_sent"] == 4096
    peers = on_wire["peers"]
    assert isinstance(peers, dict) and peers[2]["state"] == "snapshot"
    stats = on_wire["stats"]
    assert isinstance(stats, dict) and stats["transport"]["messages_sent"] == 120


def _without(key: str) -> dict[str, object]:
    out = wire(FULL)
    del out[key]
    return out


def _with(**changes: object) -> dict[str, object]:
    return {**wire(FULL), **changes}


def _snapshot_with(**changes: object) -> dict[str, object]:
    out = wire(FULL)
    snapshot = out["snapshot"]
    assert isinstance(snapshot, dict)
    return {**out, "snapshot": {**snapshot, **changes}}


MALFORMED = [
    pytest.param(b"\xc1", id="not-msgpack"),
    pytest.param(b"", id="empty"),
    pytest.param(msgspec.msgpack.encode(FULL) + b"\x00", id="trailing-bytes"),
    pytest.param([1, 2], id="an-array"),
    pytest.param(_without("stats"), id="missing-stats"),
    pytest.param(_without("commit"), id="missing-commit"),
    pytest.param(_with(role=1), id="role-not-a-string"),
    pytest.param(_with(commit=-1), id="negative-index"),
    pytest.param(_with(commit="41"), id="index-as-a-string"),
    pytest.param(_with(running=1), id="int-for-bool"),
    pytest.param(_with(members=[1, "2"]), id="member-not-an-id"),
    pytest.param(_with(peers={"2": wire(FULL)["peers"][2]}), id="peer-key-not-an-id"),  # type: ignore[index]
    pytest.param(_with(peers={2: {"match": 1}}), id="peer-fields-missing"),
    pytest.param(_snapshot_with(term=None), id="snapshot-term-none"),
    pytest.param(_with(stats={"proposals": "many"}), id="counter-not-an-int"),
    pytest.param(_with(stats={"transport": {"dials": 1.5}}), id="transport-counter-a-float"),
]


@pytest.mark.parametrize("answer", MALFORMED)
def test_a_malformed_status_is_a_remote_protocol_error(answer: object) -> None:
    data = answer if isinstance(answer, bytes) else msgspec.msgpack.encode(answer)
    with pytest.raises(RemoteProtocolError, match="malformed status from the node"):
        decode_status(data)


def test_fields_from_a_newer_node_are_ignored() -> None:
    """New fields are only ever added (the client protocol's rule): an older client still
    reads what it knows."""
    assert decode_status(msgspec.msgpack.encode(_with(future_field=[1, 2]))) == FULL


# -- the node ----------------------------------------------------------------------------------


def test_status_before_start_after_start_and_after_stop() -> None:
    async def main() -> None:
        net = LocalNetwork()
        peers = {1: "local:1"}
        node = RaftNode(1, "local:1", peers, KV(), None, FAST, transport_factory=net.factory(1))
        assert node.status() == msgspec.structs.replace(NOT_STARTED, id=1, address="local:1")
        async with node:
            await wait_for(lambda: node.role.value == "leader", timeout=2)
            assert await node.propose(set_cmd("a", "1")) == b""
            st = node.status()
            assert st.running and st.role == "leader" and st.leader == 1
            assert st.leader_address == "local:1" and st.members == (1,)
            assert st.commit == st.applied == st.last_index == 2  # the leader's no-op, then "a"
            assert st.first_index == 1 and st.snapshot is None
            assert set(st.peers or {}) == {1}
            assert st.stats.proposals == 1 and st.stats.applied == 2
            assert st.stats.transport is None  # the in-process fake keeps no counters
        after = node.status()
        assert not after.running and after.commit == 2 and after.role == "leader"

    asyncio.run(main())


def test_the_status_over_tcp_is_the_nodes_own() -> None:
    """Client.status() returns what RaftNode.status() says (only the transport's counters
    move between the two: the status request itself is counted)."""

    async def main() -> None:
        address = f"127.0.0.1:{free_port()}"
        node = RaftNode(1, address, {1: address}, KV(), None, FAST)
        async with node:
            await wait_for(lambda: node.role.value == "leader", timeout=2)
            await node.propose(set_cmd("a", "1"))
            await node.snapshot()
            async with Client([address], timeout=5) as client:
                remote = await client.status(address)
            local = node.status()
            assert isinstance(remote, NodeStatus)
            assert remote.snapshot is not None and remote.snapshot.taken == 1
            assert remote.stats.transport is not None and local.stats.transport is not None
            assert remote.stats.transport.client_requests >= 1
            same_counters = dataclasses.replace(
                remote.stats.transport,
                bytes_received=local.stats.transport.bytes_received,
                bytes_sent=local.stats.transport.bytes_sent,
                client_responses=local.stats.transport.client_responses,
            )
            assert same_counters == local.stats.transport
            stats = msgspec.structs.replace(remote.stats, transport=local.stats.transport)
            assert msgspec.structs.replace(remote, stats=stats) == local

    asyncio.run(main())


# -- the counters: one object per node -----------------------------------------------------------


def test_a_copy_of_the_stats_no_longer_moves() -> None:
    live = NodeStats(transport=TransportStats())
    assert live.transport is not None
    copy = live.copy()
    live.proposals += 1
    live.snapshots.taken += 1
    live.transport.dials += 1
    assert copy == NodeStats(transport=TransportStats())
    assert live.copy() == live and live.copy() is not live


def test_the_node_reads_its_transports_counters_and_counts_its_snapshots() -> None:
    async def main() -> None:
        address = f"127.0.0.1:{free_port()}"
        node = RaftNode(1, address, {1: address}, KV(), None, FAST)
        assert node.stats.transport is None  # no transport yet
        async with node:
            transport = node._transport
            assert transport is not None
            # The transport owns the counters; the node holds the very same object.
            assert node.stats.transport is transport.counters  # type: ignore[attr-defined]
            await wait_for(lambda: node.role.value == "leader", timeout=2)
            # Without a session: opening and closing one would be requests too.
            async with Client([address], timeout=5, sessions=False) as client:
                await client.propose(set_cmd("a", "1"))
                await client.status(address)
            assert node.stats.transport.client_requests == 2
            assert node.stats.proposals == 1
            snaps = node._snaps
            assert snaps is not None and snaps.stats is node.stats.snapshots
            await node.snapshot()
            assert node.stats.snapshots.taken == 1
            snapshot = node.status().snapshot
            assert snapshot is not None and snapshot.taken == 1

    asyncio.run(main())
