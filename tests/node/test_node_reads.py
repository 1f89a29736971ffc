"""RaftNode reads by consistency level: linearizable on any node that knows a leader (a
follower goes through the leader's ReadIndex, Thesis §6.4), lease only on the leader (Thesis
§6.4.1), stale anywhere."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from raftpy.errors import ClusterUnavailableError, NotLeaderError
from raftpy.node import NODE_RAFT_DEFAULTS
from raftpy.node.config import NodeConfig
from tests.nodehelpers import (
    KV,
    LocalNetwork,
    make_cluster,
    running,
    set_cmd,
    wait_for,
    wait_leader,
)

LEASED = NodeConfig(
    tick_seconds=0.01,
    raft=dataclasses.replace(NODE_RAFT_DEFAULTS, election_ticks=10),
    max_clock_drift=0.02,  # lease_ticks = 10 - 1 - 2
    exit_on_fatal=False,
)


def test_a_follower_serves_linearizable_reads_through_the_leader() -> None:
    """A write acknowledged by the leader is seen by a linearizable read on any follower at
    once, even one that has not applied it yet: it waits for the leader's read index."""

    async def main() -> None:
        net = LocalNetwork()
        async with running(make_cluster(net, config=LEASED)) as nodes:
            leader = await wait_leader(nodes)
            followers = [n for n in nodes if n is not leader]
            await wait_for(lambda: all(f.leader_id == leader.node_id for f in followers))
            for k in range(20):
                await leader.propose(set_cmd("k", str(k)), timeout=2)
                for f in followers:
                    assert await f.query(b"k", timeout=2) == str(k).encode()
            reads = await asyncio.gather(*(f.query(b"k", timeout=2) for f in followers * 50))
            assert set(reads) == {b"19"}
            assert all(f.stats.reads >= 70 for f in followers)

    asyncio.run(main())


def test_lease_reads_are_served_by_the_leader_only() -> None:
    async def main() -> None:
        net = LocalNetwork()
        async with running(make_cluster(net, config=LEASED)) as nodes:
            leader = await wait_leader(nodes)
            raft = leader._raft
            assert raft is not None and raft.config.lease_ticks == 7
            await leader.propose(set_cmd("k", "v"), timeout=2)
            await wait_for(raft.lease_valid, timeout=2)
            assert await leader.query(b"k", consistency="lease", timeout=2) == b"v"
            follower = next(n for n in nodes if n is not leader)
            await wait_for(lambda: follower.leader_id == leader.node_id)
            with pytest.raises(NotLeaderError) as info:
                follower.submit_query(b"k", "lease")
            assert info.value.leader_id == leader.node_id
            assert await follower.query(b"k", consistency="stale") in (b"", b"v")

    asyncio.run(main())


def test_a_follower_cut_off_from_its_leader_serves_no_linearizable_read() -> None:
    """The forwarded read is never answered: it fails at its deadline or when the follower
    learns of a new leader, never from the follower's own (stale) state."""

    async def main() -> None:
        net = LocalNetwork()
        async with running(make_cluster(net, config=LEASED)) as nodes:
            leader = await wait_leader(nodes)
            follower = next(n for n in nodes if n is not leader)
            await wait_for(lambda: follower.leader_id == leader.node_id)
            await leader.propose(set_cmd("k", "old"), timeout=2)
            net.isolated.add(follower.node_id)
            with pytest.raises((ClusterUnavailableError, NotLeaderError)):
                await follower.query(b"k", timeout=0.05)

    asyncio.run(main())


def test_a_node_that_knows_no_leader_refuses_linearizable_reads() -> None:
    async def main() -> None:
        net = LocalNetwork()
        nodes = make_cluster(net, config=LEASED)
        async with running(nodes[:1]) as (lonely,):
            with pytest.raises(NotLeaderError):
                lonely.submit_query(b"k", "linearizable")
            assert await lonely.query(b"k", consistency="stale") == b""
        assert isinstance(lonely.state_machine, KV)

    asyncio.run(main())
