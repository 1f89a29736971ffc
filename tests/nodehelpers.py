"""An in-process network for RaftNode tests: fakes, not mocks (for tests).

``LocalNetwork`` delivers messages between nodes of one event loop with ``call_soon``; links
can be cut. ``KV`` is a tiny deterministic state machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import BinaryIO

import msgspec

from raftpy.core.messages import PeerMessage, decode_message, encode_message
from raftpy.node import RaftNode
from raftpy.node.config import NODE_RAFT_DEFAULTS, NodeConfig
from raftpy.node.stats import NodeStats
from raftpy.node.status import NodeStatus
from raftpy.storage.base import LogStore
from raftpy.transport.base import ClientConnectionLike, Transport
from raftpy.transport.protocol import ClientRequest


class KV:
    """set k v -> previous value; get k -> value (for tests)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def apply(self, command: bytes) -> bytes:
        op, key, value = json.loads(command)
        assert op == "set"
        prev = self.data.get(key, "")
        self.data[key] = value
        return prev.encode()

    def query(self, query: bytes) -> bytes:
        return self.data.get(query.decode(), "").encode()

    def snapshot(self, out: BinaryIO) -> None:
        out.write(json.dumps(self.data).encode())

    def restore(self, inp: BinaryIO) -> None:
        self.data = json.loads(inp.read())


class CountingKV(KV):
    """A :class:`KV` that counts its applies in its state (key ``#n``), so a command applied
    twice shows (and the count travels in snapshots like the rest of the state)."""

    def apply(self, command: bytes) -> bytes:
        result = super().apply(command)
        self.data["#n"] = str(int(self.data.get("#n", "0")) + 1)
        return result


def applies(node: RaftNode) -> int:
    """How many commands ``node``'s :class:`CountingKV` applied."""
    sm = node.state_machine
    assert isinstance(sm, CountingKV)
    return int(sm.data.get("#n", "0"))


def set_cmd(key: str, value: str) -> bytes:
    return json.dumps(["set", key, value]).encode()


class LocalTransport:
    """One node's end of a LocalNetwork (for tests)."""

    def __init__(self, net: LocalNetwork, node_id: int, on_message: Callable[[PeerMessage], None]):
        self.net = net
        self.node_id = node_id
        self.on_message = on_message
        self.closed = False
        self.rejected: list[tuple[int, str]] = []

    async def start(self) -> None:
        self.net.endpoints[self.node_id] = self

    def send(self, message: PeerMessage) -> None:
        self.net.deliver(self.node_id, message)

    def flush(self) -> None:
        """Messages are already scheduled for delivery."""

    def reject_peer(self, peer_id: int, reason: str) -> None:
        """Record the rejection; the "connection" (delivery from that peer) stays usable."""
        self.rejected.append((peer_id, reason))

    async def close(self) -> None:
        self.closed = True
        self.net.endpoints.pop(self.node_id, None)


class LocalNetwork:
    """Delivers encoded messages between in-process nodes; ``cut`` isolates a node (for tests).
    ``transport_class`` is what :meth:`factory` builds (a subclass may follow ``update_peers``)."""

    transport_class: type[LocalTransport] = LocalTransport

    def __init__(self) -> None:
        self.endpoints: dict[int, LocalTransport] = {}
        self.isolated: set[int] = set()

    def factory(
        self, node_id: int
    ) -> Callable[
        [Callable[[PeerMessage], None], Callable[[ClientConnectionLike, ClientRequest], None]],
        Transport,
    ]:
        def make(
            on_message: Callable[[PeerMessage], None],
            on_client: Callable[[ClientConnectionLike, ClientRequest], None],
        ) -> Transport:
            return self.transport_class(self, node_id, on_message)

        return make

    def deliver(self, src: int, message: PeerMessage) -> None:
        if src in self.isolated or message.dst in self.isolated:
            return
        dst = self.endpoints.get(message.dst)
        if dst is None or dst.closed:
            return
        data = encode_message(message)
        asyncio.get_running_loop().call_soon(dst.on_message, decode_message(data))


FAST = NodeConfig(
    tick_seconds=0.01, raft=replace(NODE_RAFT_DEFAULTS, election_ticks=10), exit_on_fatal=False
)


def make_cluster(
    net: LocalNetwork,
    n: int = 3,
    config: NodeConfig = FAST,
    storage: Callable[[int], LogStore] | None = None,
) -> list[RaftNode]:
    """``n`` nodes on ``net``; ``storage(node_id)`` gives each its log (default: in memory)."""
    peers = {i: f"local:{i}" for i in range(1, n + 1)}
    return [
        RaftNode(
            i,
            peers[i],
            peers,
            KV(),
            None,
            config,
            storage=None if storage is None else storage(i),
            transport_factory=net.factory(i),
        )
        for i in peers
    ]


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds (every wait is bounded)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def wait_leader(nodes: list[RaftNode], timeout: float = 5.0) -> RaftNode:
    def one() -> bool:
        return sum(1 for n in nodes if n.role.value == "leader") == 1

    await wait_for(one, timeout)
    return next(n for n in nodes if n.role.value == "leader")


@contextlib.asynccontextmanager
async def running(nodes: list[RaftNode]) -> AsyncIterator[list[RaftNode]]:
    """Start ``nodes``; stop them all on the way out, also when the test fails."""
    try:
        for n in nodes:
            await n.start()
        yield nodes
    finally:
        for n in nodes:
            await n.stop()


def leader_status(**fields: object) -> NodeStatus:
    """A running leader's :class:`NodeStatus`, for tests of what reads one (the wire, the
    metrics, the CLI): node 1 at ``127.0.0.1:7001`` leading members (1, 2, 3) in term 3, log
    11..42 with commit 41 and applied 40, no snapshot, no peers, fresh counters. ``fields``
    replace any of these (or set the optional ones)."""
    base = NodeStatus(
        id=1,
        address="127.0.0.1:7001",
        running=True,
        role="leader",
        term=3,
        leader=1,
        leader_address="127.0.0.1:7001",
        commit=41,
        applied=40,
        last_index=42,
        first_index=11,
        snapshot=None,
        members=(1, 2, 3),
        peers={},
        disk_full=False,
        failed=None,
        stats=NodeStats(),
    )
    return msgspec.structs.replace(base, **fields)
