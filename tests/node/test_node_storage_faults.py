"""RaftNode under storage faults: a full disk stalls a node without corrupting it and
it recovers once space is free; a failed fsync is fatal (never retried)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from raftpy.errors import IndeterminateError, NotLeaderError, ProposalDropped
from raftpy.node import RaftNode
from raftpy.storage.fs import FaultyFileSystem
from raftpy.storage.wal import FileStorage
from tests.nodehelpers import FAST, KV, LocalNetwork, set_cmd, wait_for, wait_leader


def _cluster(net: LocalNetwork, fss: dict[int, FaultyFileSystem]) -> list[RaftNode]:
    peers = {i: f"local:{i}" for i in (1, 2, 3)}
    nodes = []
    for i in peers:
        storage = FileStorage(f"/data{i}", sorted(peers), fs=fss[i], segment_size=1 << 16)
        nodes.append(
            RaftNode(
                i,
                peers[i],
                peers,
                KV(),
                None,
                FAST,
                storage=storage,
                transport_factory=net.factory(i),
            )
        )
    return nodes


def test_full_disk_on_leader_hands_over_leadership_and_recovers_when_space_is_free() -> None:
    async def main() -> None:
        net = LocalNetwork()
        fss = {i: FaultyFileSystem(seed=i) for i in (1, 2, 3)}
        nodes = _cluster(net, fss)
        for n in nodes:
            await n.start()
        try:
            old = await wait_leader(nodes)
            await old.propose(set_cmd("a", "1"), timeout=2)
            fs = fss[old.node_id]
            fs.set_capacity(fs.used_bytes())  # the disk is now full
            stuck = asyncio.ensure_future(old.propose(set_cmd("b", "x" * 100_000), timeout=3))
            # The stalled leader sends no heartbeats: the others elect a new leader.
            new = await wait_leader([n for n in nodes if n is not old], timeout=5)
            assert await new.propose(set_cmd("c", "3"), timeout=2) == b""
            with pytest.raises((IndeterminateError, ProposalDropped, NotLeaderError)):
                await asyncio.wait_for(stuck, 5)
            assert old.status().disk_full is True
            with pytest.raises((ProposalDropped, NotLeaderError)):
                await old.propose(set_cmd("d", "4"))
            fs.set_capacity(None)  # space is free again
            await wait_for(lambda: old.state_machine.data.get("c") == "3", timeout=5)  # type: ignore[attr-defined]
            assert old.status().disk_full is False
            assert old.role.value == "follower"
        finally:
            for n in nodes:
                await n.stop()

    asyncio.run(main())


def test_failed_fsync_is_fatal_and_never_retried() -> None:
    async def main() -> None:
        net = LocalNetwork()
        fs = FaultyFileSystem(seed=1)
        peers = {1: "local:1"}
        storage = FileStorage("/d", [1], fs=fs, segment_size=1 << 16)
        node = RaftNode(
            1,
            "local:1",
            peers,
            KV(),
            None,
            replace(FAST, exit_on_fatal=False),
            storage=storage,
            transport_factory=net.factory(1),
        )
        async with node:
            await wait_for(lambda: node.role.value == "leader", timeout=2)
            await node.propose(set_cmd("a", "1"))
            fs.fail_next_fsync()
            with pytest.raises((IndeterminateError, ProposalDropped)):
                await node.propose(set_cmd("b", "2"), timeout=2)
            assert node.failed is None or node.failed == node.status().failed
            await wait_for(lambda: node.status().failed is not None, timeout=2)
            assert node.failed == node.status().failed
            assert node.failed.startswith("fatal storage error")
            with pytest.raises(ProposalDropped, match="has failed"):
                await node.propose(set_cmd("c", "3"))

    asyncio.run(main())
