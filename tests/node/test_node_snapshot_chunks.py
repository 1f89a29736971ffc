"""Snapshot chunks a running RaftNode refuses (in-process, real data dirs): chunks that are not
from its current leader in its current term write nothing at all, however many arrive; a
chunk from the leader past the snapshot's announced size ends that transfer and deletes its
partial file. Refusals are counted (``NodeStats.snapshots.chunks_refused``) and logged once per
transfer; the node keeps serving. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from raftpy.core.messages import ConfState, InstallSnapshot, SnapshotMeta
from raftpy.node import RaftNode
from tests.node.test_node_snapshots import SNAP, cluster, kv, write
from tests.nodehelpers import LocalNetwork, running, set_cmd, wait_for, wait_leader

META = SnapshotMeta(10_000, 1, ConfState((1, 2, 3)))


def snapshot_dir_bytes(node: RaftNode, base: Path) -> int:
    """Bytes in the node's snapshot directory, partial files included."""
    d = base / f"n{node.node_id}" / "snapshots"
    return sum(os.path.getsize(d / n) for n in os.listdir(d))


def partial_files(node: RaftNode, base: Path) -> list[str]:
    d = base / f"n{node.node_id}" / "snapshots"
    return [n for n in os.listdir(d) if n.endswith(".partial")]


def refused(node: RaftNode) -> int:
    return node.status().stats.snapshots.chunks_refused


def test_chunks_not_from_the_current_leader_of_the_current_term_write_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        net = LocalNetwork()
        async with running(cluster(net, tmp_path)) as nodes:
            leader = await wait_leader(nodes)
            await write(leader, range(5))
            follower = next(n for n in nodes if n is not leader)
            other = next(n for n in nodes if n is not leader and n is not follower)
            await wait_for(lambda: len(kv(follower)) == 5)
            term = follower.status().term
            assert term is not None and term >= 1
            before = snapshot_dir_bytes(follower, tmp_path)
            block = b"z" * 65536
            sources = [
                (leader.node_id, term - 1),  # a deposed term of the leader
                (leader.node_id, term + 1),  # a term the follower has not learned
                (other.node_id, term),  # a member that does not lead
                (follower.node_id + 10, term),  # nobody
            ]
            sent = 0
            for src, t in sources:
                # A "never-ending" transfer: 16 MiB per source, far past any real file.
                for k in range(256):
                    follower._on_message(
                        InstallSnapshot(
                            t, src, follower.node_id, META, k * len(block), block, False, 1 << 40
                        )
                    )
                    sent += 1
                await asyncio.sleep(0)
            await wait_for(lambda: refused(follower) == sent, timeout=5)
            assert snapshot_dir_bytes(follower, tmp_path) == before
            assert partial_files(follower, tmp_path) == []
            # One line per transfer, not per chunk.
            lines = [r for r in caplog.records if "refused, unwritten" in r.getMessage()]
            assert 1 <= len(lines) <= len(sources), [r.getMessage() for r in lines]
            # The node serves on, and so does the cluster.
            assert follower.status().failed is None
            assert await leader.propose(set_cmd("after", "1"), timeout=5) == b""
            await wait_for(lambda: kv(follower).get("after") == "1")

    with caplog.at_level(logging.WARNING, logger="raftpy.snapshot"):
        asyncio.run(main())


def test_a_leader_chunk_past_the_announced_size_deletes_the_partial(tmp_path: Path) -> None:
    async def main() -> None:
        net = LocalNetwork()
        async with running(cluster(net, tmp_path)) as nodes:
            leader = await wait_leader(nodes)
            await write(leader, range(5))
            follower = next(n for n in nodes if n is not leader)
            await wait_for(lambda: follower.status().leader == leader.node_id)
            term = follower.status().term
            assert term is not None
            src, dst = leader.node_id, follower.node_id

            def send(offset: int, data: bytes, size: int) -> None:
                m = InstallSnapshot(term, src, dst, META, offset, data, False, size)
                follower._on_message(m)

            send(0, b"a" * 100, 1000)  # the leader's transfer begins
            await wait_for(lambda: partial_files(follower, tmp_path) != [])
            assert snapshot_dir_bytes(follower, tmp_path) == 100
            send(100, b"b" * 901, 1000)  # one byte past the announced size
            await wait_for(lambda: refused(follower) == 1)
            assert partial_files(follower, tmp_path) == []
            assert follower.status().failed is None
            assert await leader.propose(set_cmd("after", "1"), timeout=5) == b""
            await wait_for(lambda: kv(follower).get("after") == "1")

    asyncio.run(main())


def test_snapshot_transfers_still_complete_between_real_nodes(tmp_path: Path) -> None:
    """The checks refuse nothing a real leader sends: a cut-off follower catches up by
    installing the leader's snapshot, with no chunk refused on the way."""
    from tests.node.test_node_snapshots import cut_off_past_compaction, expected

    async def main() -> None:
        net = LocalNetwork()
        async with running(cluster(net, tmp_path, SNAP)) as nodes:
            leader, lagger, _ = await cut_off_past_compaction(net, nodes)
            term = leader.status().term
            net.isolated.clear()
            await wait_for(lambda: kv(lagger) == expected(range(300)), timeout=10)
            snaps = lagger.status().stats.snapshots
            assert snaps.installed >= 1
            if leader.status().term == term and leader.role.value == "leader":
                # One leader all along (a loaded machine may force an election: then chunks
                # of the old term may rightly be refused).
                assert snaps.chunks_refused == 0

    asyncio.run(main())
