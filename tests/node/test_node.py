"""RaftNode driver over an in-process network: proposals, reads, errors, leadership changes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

import pytest

from raftpy.core.messages import AppendEntries, AppendEntriesResponse, Entry, PeerMessage
from raftpy.errors import IndeterminateError, NotLeaderError, ProposalDropped
from raftpy.node import RaftNode
from raftpy.storage.memory import MemoryStorage
from tests.nodehelpers import (
    FAST,
    KV,
    LocalNetwork,
    LocalTransport,
    make_cluster,
    running,
    set_cmd,
    wait_for,
    wait_leader,
)


def test_propose_commits_and_returns_the_state_machine_result() -> None:
    async def main() -> None:
        net = LocalNetwork()
        async with running(make_cluster(net)) as nodes:
            leader = await wait_leader(nodes)
            assert await leader.propose(set_cmd("a", "1"), timeout=2) == b""
            assert await leader.propose(set_cmd("a", "2"), timeout=2) == b"1"
            assert await leader.query(b"a") == b"2"
            # Every node applies the same commands.
            await wait_for(lambda: all(n.state_machine.data == {"a": "2"} for n in nodes))  # type: ignore[attr-defined]

    asyncio.run(main())


def test_concurrent_proposals_are_batched_and_all_applied_once() -> None:
    async def main() -> None:
        net = LocalNetwork()
        async with running(make_cluster(net)) as nodes:
            leader = await wait_leader(nodes)
            results = await asyncio.gather(
                *(leader.propose(set_cmd(f"k{i}", str(i)), timeout=5) for i in range(500))
            )
            assert results == [b""] * 500
            assert leader.stats.batches < 100  # many proposals per append
            sm = leader.state_machine
            assert isinstance(sm, KV) and len(sm.data) == 500

    asyncio.run(main())


def test_follower_refuses_with_leader_hint() -> None:
    async def main() -> None:
        net = LocalNetwork()
        async with running(make_cluster(net)) as nodes:
            leader = await wait_leader(nodes)
            follower = next(n for n in nodes if n is not leader)
            await wait_for(lambda: follower.leader_id == leader.node_id)
            with pytest.raises(NotLeaderError) as info:
                await follower.propose(b"x")
            assert info.value.leader_id == leader.node_id
            assert info.value.leader_address == leader.address
            with pytest.raises(NotLeaderError):
                await follower.query(b"a", consistency="lease")  # only the leader's lease
            assert await follower.query(b"a") == b""  # ReadIndex through the leader
            assert await follower.query(b"a", consistency="stale") == b""

    asyncio.run(main())


def test_isolated_leader_fails_pending_proposals_and_serves_no_stale_read() -> None:
    async def main() -> None:
        net = LocalNetwork()
        async with running(make_cluster(net)) as nodes:
            old = await wait_leader(nodes)
            await old.propose(set_cmd("x", "old"), timeout=2)
            net.isolated.add(old.node_id)
            pending = asyncio.ensure_future(old.propose(set_cmd("x", "lost"), timeout=10))
            read = asyncio.ensure_future(old.query(b"x", timeout=10))
            others = [n for n in nodes if n is not old]
            new = await wait_leader(others)
            await new.propose(set_cmd("x", "new"), timeout=2)
            # CheckQuorum: the old leader steps down; its proposal's fate is unknown and its
            # read is refused instead of answered from stale state.
            with pytest.raises(IndeterminateError):
                await asyncio.wait_for(pending, 5)
            with pytest.raises(NotLeaderError):
                await asyncio.wait_for(read, 5)
            net.isolated.clear()
            await wait_for(lambda: old.state_machine.data.get("x") == "new")  # type: ignore[attr-defined]

    asyncio.run(main())


def test_single_member_cluster_elects_itself_at_once() -> None:
    async def main() -> None:
        net = LocalNetwork()
        peers = {1: "local:1"}
        node = RaftNode(1, "local:1", peers, KV(), None, FAST, transport_factory=net.factory(1))
        async with node:
            await wait_for(lambda: node.role.value == "leader", timeout=1)
            assert await node.propose(set_cmd("a", "b")) == b""
            assert await node.query(b"a") == b"b"
            assert node.status().commit >= 2

    asyncio.run(main())


def test_file_storage_node_restarts_with_its_data(tmp_path: object) -> None:
    async def main() -> None:
        net = LocalNetwork()
        peers = {1: "local:1"}
        data_dir = str(tmp_path)

        def node() -> RaftNode:
            return RaftNode(
                1, "local:1", peers, KV(), data_dir, FAST, transport_factory=net.factory(1)
            )

        async with node() as n1:
            await wait_for(lambda: n1.role.value == "leader", timeout=2)
            for i in range(20):
                await n1.propose(set_cmd(f"k{i}", str(i)))
        async with node() as n2:
            await wait_for(lambda: n2.role.value == "leader", timeout=2)
            assert await n2.query(b"k19") == b"19"
            assert await n2.query(b"k0") == b"0"

    asyncio.run(main())


def test_bad_member_list_is_refused() -> None:
    with pytest.raises(ValueError, match="not among the members"):
        RaftNode(9, "a:1", {1: "a:1"}, KV(), None)
    with pytest.raises(ValueError, match="listens on"):
        RaftNode(1, "a:2", {1: "a:1"}, KV(), None)


def test_unsafe_stale_reads_switch_serves_a_deposed_leaders_stale_value() -> None:
    """The test-only switch really breaks ReadIndex (so harnesses can prove they catch it)."""
    from dataclasses import replace

    async def main() -> None:
        net = LocalNetwork()
        async with running(
            make_cluster(
                net,
                config=replace(
                    FAST, raft=replace(FAST.raft, check_quorum=False), unsafe_stale_reads=True
                ),
            )
        ) as nodes:
            old = await wait_leader(nodes)
            await old.propose(set_cmd("x", "old"), timeout=2)
            await wait_for(lambda: all(n.state_machine.data.get("x") == "old" for n in nodes))  # type: ignore[attr-defined]
            net.isolated.add(old.node_id)
            new = await wait_leader([n for n in nodes if n is not old])
            await new.propose(set_cmd("x", "new"), timeout=2)
            # Without CheckQuorum the isolated leader still believes it leads and, with the
            # switch on, answers from its stale state.
            assert old.role.value == "leader"
            assert await old.query(b"x") == b"old"

    asyncio.run(main())


def test_oversized_command_is_refused_as_not_retryable() -> None:
    """The leader refuses a command above max_entry_bytes before appending it, and says a
    retry cannot help (the client then raises at once instead of retrying)."""
    from raftpy.core.config import RaftConfig
    from raftpy.transport.protocol import ClientOp, ClientRequest, ClientResponse

    async def main() -> None:
        net = LocalNetwork()
        peers = {1: "local:1"}
        node = RaftNode(1, "local:1", peers, KV(), None, FAST, transport_factory=net.factory(1))
        async with node:
            await wait_for(lambda: node.role.value == "leader", timeout=1)
            too_big = b"x" * (RaftConfig(id=1).max_entry_bytes + 1)
            with pytest.raises(ProposalDropped) as info:
                await node.propose(too_big)
            assert info.value.retryable is False
            answers: list[ClientResponse] = []

            class Conn:
                def respond(self, response: ClientResponse) -> None:
                    answers.append(response)

            node._service.handle(Conn(), ClientRequest(1, ClientOp.PROPOSE, too_big))
            await wait_for(lambda: bool(answers), timeout=2)
            assert answers[0].status.value == "dropped" and answers[0].retryable is False

    asyncio.run(main())


async def propose_bursts(leader: RaftNode, bursts: int, size: int) -> None:
    """``bursts`` rounds of ``size`` concurrent writes through ``leader``, each round awaited
    (so each goes out as one batch)."""
    for burst in range(bursts):
        await asyncio.gather(
            *(leader.propose(set_cmd(f"k{i}", str(burst)), timeout=5) for i in range(size))
        )


def test_follower_acknowledgement_leaves_before_it_applies() -> None:
    """A follower's AppendEntriesResponse is flushed to the transport before the follower
    applies what the same Ready commits: the leader commits on it, and applying may take
    long (the acknowledgement is sent after the fsync all the same)."""
    late: list[int] = []

    class Recording(LocalTransport):
        unflushed = 0

        def send(self, message: PeerMessage) -> None:
            if isinstance(message, AppendEntriesResponse):
                self.unflushed += 1
            super().send(message)

        def flush(self) -> None:
            self.unflushed = 0

    class Watched(KV):
        def __init__(self, node_id: int) -> None:
            super().__init__()
            self.node_id = node_id

        def apply(self, command: bytes) -> bytes:
            transport = net.endpoints[self.node_id]
            assert isinstance(transport, Recording)
            if transport.unflushed:
                late.append(self.node_id)
            return super().apply(command)

    net = LocalNetwork()
    net.transport_class = Recording
    peers = {i: f"local:{i}" for i in (1, 2, 3)}
    nodes = [
        RaftNode(i, peers[i], peers, Watched(i), None, FAST, transport_factory=net.factory(i))
        for i in peers
    ]

    async def main() -> None:
        async with running(nodes):
            leader = await wait_leader(nodes)
            await propose_bursts(leader, 5, 50)
            followers = [n for n in nodes if n is not leader]
            await wait_for(lambda: all(n.stats.applied >= 250 for n in followers))

    asyncio.run(main())
    assert late == []


def test_leader_appends_leave_before_it_writes_and_syncs_its_own_copy() -> None:
    """Thesis §10.2.1: the leader replicates while it persists. Its AppendEntries carrying new
    entries are handed to the transport (flushed) before it encodes its own copy into the log
    and before its fsync: a commit waits for a follower's fsync as much as for the leader's."""
    late: list[str] = []

    class Recording(LocalTransport):
        unflushed = 0

        def send(self, message: PeerMessage) -> None:
            if isinstance(message, AppendEntries) and message.entries:
                self.unflushed += 1
            super().send(message)

        def flush(self) -> None:
            self.unflushed = 0

    class Watched(MemoryStorage):
        def __init__(self, node_id: int, voters: tuple[int, ...]) -> None:
            super().__init__(voters)
            self.node_id = node_id

        def _check(self, what: str) -> None:
            transport = net.endpoints.get(self.node_id)
            if isinstance(transport, Recording) and transport.unflushed:
                late.append(f"node {self.node_id}: {what} with appends not yet flushed")

        def append(self, entries: Sequence[Entry]) -> None:
            self._check("append")
            super().append(entries)

        def sync(self) -> None:
            self._check("sync")
            super().sync()

    net = LocalNetwork()
    net.transport_class = Recording
    nodes = make_cluster(net, 3, FAST, storage=lambda i: Watched(i, (1, 2, 3)))

    async def main() -> None:
        async with running(nodes):
            await propose_bursts(await wait_leader(nodes), 5, 20)

    asyncio.run(main())
    assert late == []


def test_a_long_replay_at_restart_leaves_the_loop_free_between_batches(tmp_path: object) -> None:
    """A restart applies its log in Readys of at most ``max_apply_bytes``; between them the
    event loop runs (sockets are read, requests answered), rather than the node going silent
    until the whole log is replayed."""
    config = replace(FAST, raft=replace(FAST.raft, max_apply_bytes=8192))
    data_dir = str(tmp_path)

    def node(net: LocalNetwork) -> RaftNode:
        return RaftNode(
            1, "local:1", {1: "local:1"}, KV(), data_dir, config, transport_factory=net.factory(1)
        )

    async def main() -> list[int]:
        async with node(LocalNetwork()) as n1:
            await wait_for(lambda: n1.role.value == "leader", timeout=2)
            await asyncio.gather(*(n1.propose(set_cmd(f"k{i}", "v" * 1000)) for i in range(200)))
        seen: list[int] = []
        async with node(LocalNetwork()) as n2:
            while n2.stats.applied < 200:
                seen.append(n2.stats.applied)
                await asyncio.sleep(0)
            assert await n2.query(b"k199") == b"v" * 1000
        return seen

    seen = asyncio.run(main())
    assert any(0 < applied < 200 for applied in seen), seen
