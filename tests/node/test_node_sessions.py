"""Client sessions on real RaftNodes in one process (tests/nodehelpers.py's LocalNetwork):
duplicates through leader changes, snapshots, installs and restarts; expiry; keep-alives."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from raftpy import SessionExpiredError, SessionGrant
from raftpy.errors import LocalProtocolError, NotLeaderError, ProposalDropped
from raftpy.node import RaftNode
from raftpy.node.config import NodeConfig
from raftpy.node.session_machine import SessionStateMachine
from tests.nodehelpers import (
    FAST,
    CountingKV,
    LocalNetwork,
    applies,
    running,
    set_cmd,
    wait_for,
    wait_leader,
)

PEERS3 = {i: f"local:{i}" for i in (1, 2, 3)}

SNAP = dataclasses.replace(
    FAST,
    snapshot_entries=30,
    snapshot_bytes=None,
    segment_size=8192,
    snapshot_chunk_bytes=512,
    snapshot_window_bytes=2048,
)


def table_of(node: RaftNode) -> list[int]:
    machine = node._sessions.machine
    assert isinstance(machine, SessionStateMachine)
    return machine.table.sessions()


def nodes_at(
    net: LocalNetwork,
    base: Path | None,
    config: NodeConfig = SNAP,
    ids: tuple[int, ...] = (1, 2, 3),
) -> list[RaftNode]:
    return [
        RaftNode(
            i,
            PEERS3[i],
            PEERS3,
            CountingKV(),
            None if base is None else base / f"n{i}",
            config,
            transport_factory=net.factory(i),
        )
        for i in ids
    ]


def test_duplicate_write_resent_after_a_leader_change_is_applied_once() -> None:
    async def main() -> None:
        net = LocalNetwork()
        async with running(nodes_at(net, None, FAST)) as nodes:
            leader = await wait_leader(nodes)
            grant = await leader.open_session(timeout=5)
            assert isinstance(grant, SessionGrant) and grant.timeout == FAST.session_timeout
            first = await leader.propose(set_cmd("x", "1"), 5, session=grant.id, seq=1, ack=1)
            await wait_for(lambda: all(applies(n) == 1 for n in nodes))
            # The client lost the answer; the leader changes; it resends the same seq.
            other = next(n for n in nodes if n is not leader)
            await leader.transfer_leadership(other.node_id, timeout=5)
            await wait_for(lambda: other.role.value == "leader")
            again = await other.propose(set_cmd("x", "1"), 5, session=grant.id, seq=1, ack=1)
            assert again == first
            # A new write in the same session still applies.
            await other.propose(set_cmd("y", "2"), 5, session=grant.id, seq=2, ack=2)
            await wait_for(lambda: all(applies(n) == 2 for n in nodes))

    asyncio.run(main())


def test_resend_while_the_first_attempt_is_still_pending_is_applied_once() -> None:
    async def main() -> None:
        net = LocalNetwork()
        async with running(nodes_at(net, None, FAST)) as nodes:
            leader = await wait_leader(nodes)
            s = (await leader.open_session(timeout=5)).id
            attempts = [
                leader.submit(set_cmd("k", "v"), 5, session=s, seq=1, ack=1) for _ in range(3)
            ]
            results = await asyncio.gather(*attempts)
            assert results == [b""] * 3
            await wait_for(lambda: all(applies(n) == 1 for n in nodes))

    asyncio.run(main())


def test_session_table_survives_snapshot_install_and_restart(tmp_path: Path) -> None:
    async def main() -> None:
        net = LocalNetwork()
        nodes = nodes_at(net, tmp_path)
        async with running(nodes):
            leader = await wait_leader(nodes)
            s = (await leader.open_session(timeout=5)).id
            # Seq 1's answer is never acknowledged: the table must keep it throughout.
            kept = await leader.propose(set_cmd("a", "1"), 5, session=s, seq=1, ack=1)
            lagger = next(n for n in nodes if n is not leader)
            lagger_last = lagger.status().last_index
            net.isolated.add(lagger.node_id)
            for i in range(2, 120):
                await leader.propose(set_cmd(f"k{i}", str(i)), 5, session=s, seq=i, ack=1)
            await wait_for(lambda: leader.status().first_index > lagger_last + 1)
            installed = lagger.stats.snapshots.installed
            net.isolated.discard(lagger.node_id)
            await wait_for(lambda: lagger.stats.snapshots.installed > installed, timeout=10)
            await wait_for(lambda: lagger.status().applied == leader.status().applied)
            assert table_of(lagger) == table_of(leader) == [s]
            await leader.transfer_leadership(lagger.node_id, timeout=5)
            await wait_for(lambda: lagger.role.value == "leader")
            n = applies(lagger)
            again = await lagger.propose(set_cmd("a", "1"), 5, session=s, seq=1, ack=1)
            assert again == kept and applies(lagger) == n
        # Every node restarts from its snapshot and log tail; the table comes back.
        nodes = nodes_at(LocalNetwork(), tmp_path)
        async with running(nodes):
            leader = await wait_leader(nodes)
            await wait_for(lambda: all(table_of(x) == [s] for x in nodes))
            before = applies(leader)
            again = await leader.propose(set_cmd("a", "1"), 5, session=s, seq=1, ack=1)
            assert again == kept and applies(leader) == before
            assert leader.status().sessions == 1

    asyncio.run(main())


SHORT = dataclasses.replace(FAST, session_timeout=0.3)


def test_expired_session_gets_the_definite_error_and_keep_alive_keeps_one() -> None:
    async def main() -> None:
        net = LocalNetwork()
        async with running(nodes_at(net, None, SHORT)) as nodes:
            leader = await wait_leader(nodes)
            idle = (await leader.open_session(timeout=5)).id
            kept = (await leader.open_session(timeout=5)).id
            await leader.propose(set_cmd("a", "1"), 5, session=idle, seq=1, ack=1)
            loop = asyncio.get_running_loop()
            end = loop.time() + 0.9
            while loop.time() < end:
                await leader.keep_alive(kept, 1, timeout=5)
                await asyncio.sleep(0.05)
            # Cluster time moves with every record: the idle session has expired by now.
            await leader.propose(set_cmd("tick", "1"), 5)
            await wait_for(lambda: all(table_of(n) == [kept] for n in nodes))
            n = applies(leader)
            with pytest.raises(SessionExpiredError):
                await leader.propose(set_cmd("a", "1"), 5, session=idle, seq=1, ack=1)
            with pytest.raises(SessionExpiredError):
                await leader.propose(set_cmd("b", "1"), 5, session=idle, seq=2, ack=2)
            with pytest.raises(SessionExpiredError):
                await leader.keep_alive(idle, 1, timeout=5)
            assert applies(leader) == n
            await leader.propose(set_cmd("c", "1"), 5, session=kept, seq=1, ack=1)
            assert applies(leader) == n + 1

    asyncio.run(main())


def test_status_counts_sessions_and_close_ends_one() -> None:
    async def main() -> None:
        net = LocalNetwork()
        nodes = nodes_at(net, None, FAST)
        assert nodes[0].status().sessions is None
        async with running(nodes):
            leader = await wait_leader(nodes)
            assert leader.status().sessions == 0
            a = (await leader.open_session(timeout=5)).id
            b = (await leader.open_session(timeout=5)).id
            assert leader.status().sessions == 2
            await leader.close_session(a, timeout=5)
            assert leader.status().sessions == 1
            await wait_for(lambda: all(n.status().sessions == 1 for n in nodes))
            with pytest.raises(SessionExpiredError):
                await leader.close_session(a, timeout=5)
            with pytest.raises(SessionExpiredError):
                await leader.propose(set_cmd("x", "1"), 5, session=a, seq=1, ack=1)
            assert table_of(leader) == [b]

    asyncio.run(main())


def test_sessions_are_leader_only_and_misuse_is_refused() -> None:
    async def main() -> None:
        net = LocalNetwork()
        async with running(nodes_at(net, None, FAST)) as nodes:
            leader = await wait_leader(nodes)
            follower = next(n for n in nodes if n is not leader)
            with pytest.raises(NotLeaderError):
                await follower.open_session(timeout=5)
            with pytest.raises(NotLeaderError):
                await follower.keep_alive(1, 0, timeout=5)
            for kwargs in (
                {"seq": 1},
                {"ack": 1},
                {"session": 5},
                {"session": 5, "seq": 1, "ack": 2},
            ):
                with pytest.raises(LocalProtocolError):
                    leader.submit(b"x", 5, **kwargs)
            with pytest.raises(LocalProtocolError):
                await leader.keep_alive(0, 0, timeout=5)

    asyncio.run(main())


def test_a_command_of_max_entry_bytes_still_fits_in_its_session_record() -> None:
    async def main() -> None:
        config = dataclasses.replace(FAST, raft=dataclasses.replace(FAST.raft, max_entry_bytes=64))
        net = LocalNetwork()
        async with running(nodes_at(net, None, config)) as nodes:
            leader = await wait_leader(nodes)
            s = (await leader.open_session(timeout=5)).id
            largest = set_cmd("k", "v" * (64 - len(set_cmd("k", ""))))
            assert len(largest) == 64
            await leader.propose(largest, 5, session=s, seq=2**63 - 1, ack=2**63 - 1)
            with pytest.raises(ProposalDropped, match="max_entry_bytes") as info:
                leader.submit(largest + b" ", 5)
            assert info.value.retryable is False

    asyncio.run(main())
