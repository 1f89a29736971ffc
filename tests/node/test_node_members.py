"""Membership changes on running nodes: RaftNode.add_member / promote / remove_member /
transfer_leadership / members, the transport following the membership, joining, and what the
node says about it.

Most tests run in-process nodes over :class:`FollowingNetwork`, a LocalNetwork whose links
behave like the TCP transport's: a node reaches only the peers its transport was told of
(``update_peers``) and accepts messages only from them. One test runs real TCP on loopback.
Every wait is bounded and waits on a condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace

import pytest

from raftpy.client import Client
from raftpy.core.messages import ConfState, PeerMessage
from raftpy.errors import (
    ClusterUnavailableError,
    ConfChangeError,
    IndeterminateError,
    LocalProtocolError,
    NotLeaderError,
    ProposalDropped,
    RaftError,
)
from raftpy.node import RaftNode
from raftpy.node.config import NodeConfig
from raftpy.node.join import MembersView
from raftpy.storage.memory import MemoryStorage
from raftpy.transport.address import free_ports
from tests.nodehelpers import (
    FAST,
    KV,
    LocalNetwork,
    LocalTransport,
    set_cmd,
    wait_for,
)


class FollowingTransport(LocalTransport):
    """A LocalTransport that follows ``update_peers`` like TcpTransport (for tests)."""

    def __init__(
        self, net: LocalNetwork, node_id: int, on_message: Callable[[PeerMessage], None]
    ) -> None:
        super().__init__(net, node_id, on_message)
        self.peers: dict[int, str] = {}
        self.updates: list[dict[int, str]] = []

    def update_peers(self, peers: Mapping[int, str]) -> None:
        self.peers = dict(peers)
        self.updates.append(dict(peers))


class FollowingNetwork(LocalNetwork):
    """Delivers a message only when the sender knows the receiver and the receiver knows the
    sender, as TCP links do (the dialer needs an address; the listener refuses unknown ids)."""

    transport_class = FollowingTransport

    def deliver(self, src: int, message: PeerMessage) -> None:
        sender = self.endpoints.get(src)
        receiver = self.endpoints.get(message.dst)
        if not isinstance(sender, FollowingTransport) or not isinstance(
            receiver, FollowingTransport
        ):
            return
        if message.dst not in sender.peers or src not in receiver.peers:
            return
        super().deliver(src, message)

    def transport(self, node_id: int) -> FollowingTransport:
        t = self.endpoints[node_id]
        assert isinstance(t, FollowingTransport)
        return t


def addr(i: int) -> str:
    return f"127.0.0.1:{9000 + i}"


def make_nodes(net: LocalNetwork, n: int = 3, config: NodeConfig = FAST) -> list[RaftNode]:
    peers = {i: addr(i) for i in range(1, n + 1)}
    return [
        RaftNode(i, peers[i], peers, KV(), None, config, transport_factory=net.factory(i))
        for i in peers
    ]


def leader_of(nodes: list[RaftNode]) -> RaftNode | None:
    leaders = [n for n in nodes if n.role.value == "leader" and n.status().running]
    return leaders[0] if len(leaders) == 1 else None


def new_leader(nodes: list[RaftNode]) -> RaftNode:
    """The leader, or any running node while there is none (for conditions)."""
    return leader_of(nodes) or next(n for n in nodes if n.status().running)


async def settled_leader(nodes: list[RaftNode], timeout: float = 5.0) -> RaftNode:
    """One leader, whose membership records every member's address (so no change of its own is
    pending and the next change is ours)."""

    def ready() -> bool:
        leader = leader_of(nodes)
        if leader is None:
            return False
        conf = leader.members()
        st = leader.status()
        return set(conf.address_map()) == conf.members() and st.commit == st.last_index

    await wait_for(ready, timeout)
    leader = leader_of(nodes)
    assert leader is not None
    return leader


class NodesJoin:
    """A JoinClient that asks the in-process nodes directly (the client API's stand-in)."""

    def __init__(self, nodes: list[RaftNode]) -> None:
        self.nodes = nodes
        self.calls: list[str] = []

    def _leader(self) -> RaftNode:
        leader = leader_of(self.nodes)
        if leader is None:
            raise ClusterUnavailableError("no leader yet")
        return leader

    def _view(self, leader: RaftNode, conf: ConfState) -> MembersView:
        st = leader.status()
        assert st.last_index is not None
        return MembersView(
            conf.voters, conf.learners, conf.address_map(), leader.node_id, st.last_index
        )

    async def members(self) -> MembersView:
        self.calls.append("members")
        leader = self._leader()
        return self._view(leader, leader.members())

    async def add_member(self, node_id: int, address: str, voter: bool = False) -> MembersView:
        self.calls.append("add")
        leader = self._leader()
        return self._view(leader, await leader.add_member(node_id, address, voter))

    async def promote(self, node_id: int) -> MembersView:
        self.calls.append("promote")
        leader = self._leader()
        try:
            return self._view(leader, await leader.promote(node_id))
        except ConfChangeError:
            self.calls.append("promote refused")
            raise

    async def close(self) -> None:
        pass


def joiner(
    net: LocalNetwork,
    node_id: int,
    nodes: list[RaftNode],
    config: NodeConfig = FAST,
    promote: bool = True,
) -> RaftNode:
    return RaftNode(
        node_id,
        addr(node_id),
        {node_id: addr(node_id)},
        KV(),
        None,
        config,
        transport_factory=net.factory(node_id),
        join=[addr(1)],
        promote=promote,
        join_client=NodesJoin(nodes),
    )


@contextlib.asynccontextmanager
async def running(nodes: list[RaftNode]) -> AsyncIterator[list[RaftNode]]:
    """Start ``nodes``; stop every node in the list on the way out (also ones appended to it
    later), also when the test fails."""
    try:
        for n in nodes:
            await n.start()
        yield nodes
    finally:
        for n in nodes:
            await n.stop()


async def write(nodes: list[RaftNode], key: str, value: str, timeout: float = 5.0) -> None:
    """Write through whichever node leads, retrying definite refusals until ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            leader = leader_of(nodes)
            if leader is not None:
                try:
                    await leader.propose(set_cmd(key, value), timeout=1.0)
                    return
                except (NotLeaderError, ProposalDropped, LocalProtocolError):
                    pass
            await asyncio.sleep(0.01)


# ----------------------------------------------------------------------------------------------
# Learners
# ----------------------------------------------------------------------------------------------


def test_learner_replicates_and_never_counts() -> None:
    async def main() -> None:
        net = FollowingNetwork()
        nodes = make_nodes(net)
        async with running(nodes):
            leader = await settled_leader(nodes)
            for k in range(20):
                await leader.propose(set_cmd(f"k{k}", "v"))
            learner = joiner(net, 4, nodes, promote=False)
            nodes.append(learner)
            await learner.start()
            await wait_for(lambda: 4 in leader.members().learners)
            # It receives the log (over the links the membership made) and applies it.
            await wait_for(lambda: learner.status().applied == leader.status().commit)
            assert learner.state_machine.data == leader.state_machine.data  # type: ignore[attr-defined]
            st = learner.status()
            assert st.learners == (4,) and st.member and 4 not in (st.members or ())
            assert 4 in net.transport(leader.node_id).peers
            assert all(4 in net.transport(n.node_id).peers for n in nodes[:3])
            # It never counts: with it and one voter stopped, two of the three voters commit.
            # Had the learner counted, four voters would need three and this would hang.
            other = next(n for n in nodes[:3] if n is not leader)
            await learner.stop()
            await other.stop()
            await asyncio.wait_for(leader.propose(set_cmd("after", "x")), 3.0)
            assert leader.role.value == "leader"

    asyncio.run(main())


def test_promote_refused_while_lagging_and_accepted_once_caught_up() -> None:
    config = replace(FAST, raft=replace(FAST.raft, max_learner_lag=5))

    async def main() -> None:
        net = FollowingNetwork()
        nodes = make_nodes(net, config=config)
        async with running(nodes):
            leader = await settled_leader(nodes)
            await leader.add_member(4, addr(4))  # not running: it holds nothing
            for k in range(20):
                await leader.propose(set_cmd(f"k{k}", "v"))
            with pytest.raises(ConfChangeError, match="behind"):
                await leader.promote(4)
            assert 4 in leader.members().learners  # refused: nothing changed
            learner = joiner(net, 4, nodes, config=config, promote=False)
            nodes.append(learner)
            await learner.start()
            await wait_for(lambda: learner.status().applied == leader.status().commit)
            conf = await leader.promote(4)
            assert 4 in conf.voters and 4 not in conf.learners
            await wait_for(lambda: 4 in learner.members().voters)
            # Promoting a voter again changes nothing (a retry after an unknown outcome).
            assert 4 in (await leader.promote(4)).voters
            with pytest.raises(ConfChangeError, match="not a learner"):
                await leader.promote(7)

    asyncio.run(main())


def test_join_adds_a_learner_then_promotes_it_once_caught_up() -> None:
    config = replace(FAST, raft=replace(FAST.raft, max_learner_lag=5, max_msg_bytes=64))

    async def main() -> None:
        net = FollowingNetwork()
        nodes = make_nodes(net, config=config)
        async with running(nodes):
            leader = await settled_leader(nodes)
            for k in range(50):
                await leader.propose(set_cmd(f"k{k}", "v"))
            new = joiner(net, 4, nodes, config=config)
            nodes.append(new)
            await new.start()
            await wait_for(lambda: 4 in leader.members().voters, 10.0)
            assert new.status().member
            # It asked once it was caught up: the leader never had to refuse it.
            join = new._join_client
            assert isinstance(join, NodesJoin)
            assert join.calls == ["members", "add", "promote"]
            # It reached the members at the addresses the membership records.
            assert net.transport(4).peers == {i: addr(i) for i in (1, 2, 3)}
            await wait_for(lambda: new.status().applied == leader.status().commit)

    asyncio.run(main())


class EarlyJoin(NodesJoin):
    """Answers its first ``early`` members() calls as a cluster that has not recorded its
    members' addresses yet (only those added with one)."""

    def __init__(self, nodes: list[RaftNode], early: int, recorded: dict[int, str]) -> None:
        super().__init__(nodes)
        self.early = early
        self.recorded = recorded

    async def members(self) -> MembersView:
        view = await super().members()
        if self.early > 0:
            self.early -= 1
            return replace(view, addresses=self.recorded)
        return view


def test_a_joiner_waits_until_it_knows_where_every_member_listens() -> None:
    async def main() -> None:
        net = FollowingNetwork()
        nodes = make_nodes(net)
        async with running(nodes):
            leader = await settled_leader(nodes)
            await leader.add_member(4, addr(4))  # an operator added it before it started
            for k in range(10):
                await leader.propose(set_cmd(f"k{k}", "v"))
            new = RaftNode(
                4,
                addr(4),
                {4: addr(4)},
                KV(),
                None,
                FAST,
                transport_factory=net.factory(4),
                join=[addr(1)],
                promote=False,
                join_client=EarlyJoin(nodes, 2, {4: addr(4)}),
            )
            nodes.append(new)
            await new.start()
            await wait_for(lambda: new.status().applied == leader.status().commit, 10.0)
            assert net.transport(4).peers == {i: addr(i) for i in (1, 2, 3)}

    asyncio.run(main())


def test_a_joiner_restarted_with_its_log_does_not_join_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    storage = MemoryStorage([])

    def node4(net: LocalNetwork, nodes: list[RaftNode]) -> RaftNode:
        return RaftNode(
            4,
            addr(4),
            {4: addr(4)},
            KV(),
            None,
            FAST,
            storage=storage,
            transport_factory=net.factory(4),
            join=[addr(1)],
            join_client=NodesJoin(nodes),
        )

    async def main() -> None:
        net = FollowingNetwork()
        nodes = make_nodes(net)
        async with running(nodes):
            leader = await settled_leader(nodes)
            first = node4(net, nodes)
            nodes.append(first)
            await first.start()
            await wait_for(lambda: 4 in new_leader(nodes).members().voters, 10.0)
            await first.stop()
            caplog.clear()
            again = node4(net, nodes)
            nodes.append(again)
            await again.start()
            await leader.propose(set_cmd("after", "restart"))
            await wait_for(lambda: again.status().applied == leader.status().commit, 10.0)
            join = again._join_client
            assert isinstance(join, NodesJoin) and join.calls == []
            assert 4 in again.members().voters

    with caplog.at_level(logging.INFO):
        asyncio.run(main())
    assert [r for r in caplog.records if "has a log already: not joining" in r.message]
    assert not [r for r in caplog.records if "differs from the command line" in r.message]


# ----------------------------------------------------------------------------------------------
# Removal and transfer
# ----------------------------------------------------------------------------------------------


def test_removed_follower_is_dropped_by_the_transport_and_cannot_disrupt() -> None:
    async def main() -> None:
        net = FollowingNetwork()
        nodes = make_nodes(net)
        async with running(nodes):
            leader = await settled_leader(nodes)
            gone = next(n for n in nodes if n is not leader)
            conf = await leader.remove_member(gone.node_id)
            assert gone.node_id not in conf.members()
            stay = [n for n in nodes if n is not gone]
            # Each drops it once it knows the removal committed.
            await wait_for(
                lambda: all(gone.node_id not in net.transport(n.node_id).peers for n in stay)
            )
            assert all(gone.node_id not in n.members().members() for n in stay)
            term = leader.status().term
            # The removed node hears from nobody; it must not raise the others' terms.
            await asyncio.sleep(FAST.tick_seconds * FAST.raft.election_ticks * 4)
            assert leader.role.value == "leader" and leader.status().term == term
            await leader.propose(set_cmd("after", "x"))

    asyncio.run(main())


def test_removed_leader_steps_down_and_another_leads(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        net = FollowingNetwork()
        nodes = make_nodes(net)
        async with running(nodes):
            leader = await settled_leader(nodes)
            await leader.propose(set_cmd("before", "1"))
            conf = await leader.remove_member(leader.node_id)
            assert leader.node_id not in conf.members()
            rest = [n for n in nodes if n is not leader]
            await wait_for(lambda: leader_of(rest) is not None)
            assert leader.role.value != "leader"
            assert leader.status().member is False
            await write(rest, "after", "2")
            new = leader_of(rest)
            assert new is not None
            assert await new.query(b"before") == b"1"

    with caplog.at_level(logging.INFO, logger="raftpy.node.members"):
        asyncio.run(main())
    removed = [r for r in caplog.records if "was removed from the membership" in r.message]
    assert len(removed) == 1


def test_transfer_leadership() -> None:
    async def main() -> None:
        net = FollowingNetwork()
        nodes = make_nodes(net)
        async with running(nodes):
            leader = await settled_leader(nodes)
            target = next(n for n in nodes if n is not leader)
            await leader.transfer_leadership(target.node_id, timeout=5.0)
            assert target.role.value == "leader"
            with pytest.raises(NotLeaderError):
                await leader.transfer_leadership(target.node_id)
            with pytest.raises(LocalProtocolError, match="non-voter"):
                await target.transfer_leadership(9)
            await target.transfer_leadership(target.node_id)  # to itself: nothing to do
            # A transfer to a voter that is down is aborted after an election timeout.
            down = next(n for n in nodes if n is not target)
            await down.stop()
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(ProposalDropped, match="aborted"):
                await target.transfer_leadership(down.node_id, timeout=10.0)
            assert loop.time() - started < 5.0
            assert target.role.value == "leader"

    asyncio.run(main())


def test_second_change_while_one_is_pending_is_refused() -> None:
    async def main() -> None:
        net = FollowingNetwork()
        nodes = make_nodes(net)
        async with running(nodes):
            leader = await settled_leader(nodes)
            first, second = await asyncio.gather(
                leader.add_member(4, addr(4)), leader.add_member(5, addr(5)), return_exceptions=True
            )
            assert isinstance(first, ConfState) and 4 in first.learners
            assert isinstance(second, ProposalDropped) and second.retryable
            assert 5 not in leader.members().members()  # definite: nothing appended
            assert 5 in (await leader.add_member(5, addr(5))).learners  # and now it may
            with pytest.raises(NotLeaderError) as info:
                await next(n for n in nodes if n is not leader).add_member(6, addr(6))
            assert info.value.leader_id == leader.node_id
            assert info.value.leader_address == addr(leader.node_id)
            with pytest.raises(ConfChangeError, match="port"):
                await leader.add_member(6, "127.0.0.1:notaport")

    asyncio.run(main())


def test_change_appended_then_leadership_lost_is_indeterminate() -> None:
    async def main() -> None:
        net = FollowingNetwork()
        nodes = make_nodes(net)
        async with running(nodes):
            leader = await settled_leader(nodes)
            net.isolated.add(leader.node_id)
            # Forced: the leader still believes its followers reachable for a while anyway.
            change = asyncio.ensure_future(leader.add_member(4, addr(4), force=True, timeout=30))
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(IndeterminateError, match="leadership lost"):
                await asyncio.wait_for(change, 10.0)
            # As soon as it stops leading (CheckQuorum, Thesis §6.2), not at the deadline.
            assert loop.time() - started < 5.0

    asyncio.run(main())


# ----------------------------------------------------------------------------------------------
# The command line only bootstraps
# ----------------------------------------------------------------------------------------------


def test_leader_records_every_members_address_once() -> None:
    async def main() -> None:
        net = FollowingNetwork()
        nodes = make_nodes(net)
        async with running(nodes):
            leader = await settled_leader(nodes)
            want = {i: addr(i) for i in (1, 2, 3)}
            await wait_for(lambda: all(n.members().address_map() == want for n in nodes))
            before = leader.status().last_index
            await asyncio.sleep(FAST.tick_seconds * 10)
            assert leader.status().last_index == before  # once: no further changes

    asyncio.run(main())


def test_stored_membership_wins_over_the_command_line_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    storages = {i: MemoryStorage([1, 2, 3]) for i in (1, 2, 3)}

    def build(peers: dict[int, str]) -> list[RaftNode]:
        return [
            RaftNode(
                i,
                peers[i],
                peers,
                KV(),
                None,
                FAST,
                storage=storages[i],
                transport_factory=net.factory(i),
            )
            for i in (1, 2, 3)
        ]

    net = FollowingNetwork()

    async def main() -> None:
        async with running(build({i: addr(i) for i in (1, 2, 3)})) as nodes:
            await settled_leader(nodes)
        caplog.clear()
        # The same command line again: nothing to say.
        async with running(build({i: addr(i) for i in (1, 2, 3)})) as nodes:
            await settled_leader(nodes)
        assert not [r for r in caplog.records if "differs from the command line" in r.message]
        # A fourth member on every command line is not a member: the stored membership is used.
        wider = {i: addr(i) for i in (1, 2, 3, 4)}
        async with running(build(wider)) as nodes:
            leader = await settled_leader(nodes)
            assert leader.members().voters == (1, 2, 3)

    with caplog.at_level(logging.INFO):
        asyncio.run(main())
    lines = [r for r in caplog.records if "differs from the command line" in r.message]
    assert len(lines) == 3  # one per node, one line each
    assert all("using the stored one" in r.message and "4=" in r.message for r in lines)


# ----------------------------------------------------------------------------------------------
# Growing and shrinking while writing
# ----------------------------------------------------------------------------------------------


def test_grow_3_to_5_and_shrink_to_3_while_writing() -> None:
    async def main() -> None:
        net = FollowingNetwork()
        nodes = make_nodes(net)
        acked: dict[str, str] = {}
        stop = asyncio.Event()

        async def writer() -> None:
            k = 0
            while not stop.is_set():
                leader = leader_of(nodes)
                if leader is None:
                    await asyncio.sleep(0.01)
                    continue
                key, value = f"w{k}", f"v{k}"
                k += 1
                try:
                    await leader.propose(set_cmd(key, value), timeout=1.0)
                except RaftError:
                    await asyncio.sleep(0.005)
                    continue
                acked[key] = value

        async with running(nodes):
            await settled_leader(nodes)
            task = asyncio.ensure_future(writer())
            for i in (4, 5):
                new = joiner(net, i, nodes)
                nodes.append(new)
                await new.start()
                await wait_for(lambda i=i: i in new_leader(nodes).members().voters, 20.0)
            assert len(acked) > 0
            grown = len(acked)
            for old in (1, 2):
                await change_anywhere(nodes, lambda n, old=old: n.remove_member(old))
            survivors = [n for n in nodes if n.node_id in (3, 4, 5)]
            await wait_for(lambda: leader_of(survivors) is not None, 10.0)
            count = len(acked)
            await wait_for(lambda: len(acked) > count + 5, 10.0)
            stop.set()
            await asyncio.wait_for(task, 5.0)
            assert len(acked) > grown
            leader = leader_of(survivors)
            assert leader is not None
            assert leader.members().voters == (3, 4, 5)
            for key, value in acked.items():
                assert (await leader.query(key.encode())).decode() == value, key

    asyncio.run(main())


async def change_anywhere(
    nodes: list[RaftNode], change: Callable[[RaftNode], object], timeout: float = 20.0
) -> None:
    """Make a change at whichever node leads, retrying refusals that may pass."""
    async with asyncio.timeout(timeout):
        while True:
            leader = leader_of(nodes)
            if leader is not None:
                try:
                    await change(leader)  # type: ignore[misc]
                    return
                except (NotLeaderError, ProposalDropped, IndeterminateError):
                    pass
            await asyncio.sleep(0.02)


# ----------------------------------------------------------------------------------------------
# Real TCP on loopback
# ----------------------------------------------------------------------------------------------


def test_tcp_join_then_remove_over_loopback() -> None:
    async def main() -> None:
        ports = free_ports(4)
        peers = {i: f"127.0.0.1:{ports[i - 1]}" for i in (1, 2, 3)}
        nodes = [RaftNode(i, peers[i], peers, KV(), None, FAST) for i in peers]
        async with running(nodes):
            leader = await settled_leader(nodes)
            await leader.propose(set_cmd("a", "1"))
            address = f"127.0.0.1:{ports[3]}"
            new = RaftNode(
                4,
                address,
                {4: address},
                KV(),
                None,
                FAST,
                join=[peers[1]],
                join_client=NodesJoin(nodes),
            )
            nodes.append(new)
            await new.start()
            await wait_for(lambda: 4 in (leader_of(nodes) or leader).members().voters, 20.0)
            kv = new.state_machine
            assert isinstance(kv, KV)
            await wait_for(lambda: kv.data.get("a") == "1", 10.0)
            leader = await settled_leader(nodes, 10.0)
            gone = next(n for n in nodes if n is not leader and n is not new)
            await leader.remove_member(gone.node_id)
            transport = leader._transport
            assert transport is not None
            assert gone.node_id not in transport._peers  # type: ignore[attr-defined]
            await leader.propose(set_cmd("b", "2"))

    asyncio.run(main())


@pytest.mark.skipif(not hasattr(Client, "add_member"), reason="needs Client.add_member")
def test_join_through_the_client_over_loopback() -> None:
    async def main() -> None:
        ports = free_ports(4)
        peers = {i: f"127.0.0.1:{ports[i - 1]}" for i in (1, 2, 3)}
        nodes = [RaftNode(i, peers[i], peers, KV(), None, FAST) for i in peers]
        async with running(nodes):
            await settled_leader(nodes)
            address = f"127.0.0.1:{ports[3]}"
            new = RaftNode(4, address, {4: address}, KV(), None, FAST, join=list(peers.values()))
            nodes.append(new)
            await new.start()
            await wait_for(lambda: 4 in (leader_of(nodes) or new).members().voters, 30.0)

    asyncio.run(main())


def test_a_removed_member_added_back_at_once_is_pinned_afresh() -> None:
    """Reference: Thesis §4 (replacing a server); README.md "Changing members". Each member
    forgets a removed member's data-dir incarnation when it applies the removal, even when the
    member is added back right away and the membership in force never lacks it (found by the
    Jepsen member nemesis: a node kept refusing a member removed and re-added with a new disk
    0.3 s later, and the cluster lost its leader for minutes)."""

    async def main() -> None:
        net = FollowingNetwork()
        nodes = make_nodes(net)
        async with running(nodes):
            leader = await settled_leader(nodes)
            gone = next(n for n in nodes if n is not leader)
            for n in nodes:
                if n is not gone:
                    assert n._incarnations.check(gone.node_id, "a" * 32) is None  # pinned
            await leader.remove_member(gone.node_id)
            await leader.add_member(gone.node_id, gone.address)
            stay = [n for n in nodes if n is not gone]
            await wait_for(lambda: all(gone.node_id not in n._incarnations.pinned() for n in stay))
            for n in stay:  # the new disk is welcome
                assert n._incarnations.check(gone.node_id, "b" * 32) is None

    asyncio.run(main())
