"""The harness's membership nemesis (``member``): the proxy's member ports and leader-hint
rewriting, the faults' steps and the repair, against a scripted cluster (no processes).

Two tests start real processes (``-m process``): members recorded at their member ports keep an
isolated leader isolated, and a few seconds of the workload on 3 nodes with the ``member``
nemesis give a history checked like every other nemesis run.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import msgspec
import pytest

from raftpy.errors import ProposalDropped, RemoteProtocolError
from raftpy.node import RaftNode
from raftpy.testing.history import HistoryRecorder
from raftpy.testing.jepsen import (
    FAULTS,
    MEMBER_FAULTS,
    NEMESES,
    Cluster,
    FaultProxy,
    JepsenConfig,
    run_jepsen,
)
from raftpy.testing.jepsen.members import MemberFaults
from raftpy.testing.jepsen.nemesis import Nemesis
from raftpy.testing.jepsen.workload import Workload
from raftpy.transport.protocol import (
    ClientResponse,
    ConnectionRole,
    Hello,
    Members,
    ResponseStatus,
)

# --- Names ------------------------------------------------------------------------------------


def test_member_is_a_nemesis_and_all_includes_its_faults() -> None:
    assert NEMESES["member"] == MEMBER_FAULTS == ("member-remove-add", "member-replace-wiped")
    assert set(MEMBER_FAULTS) <= set(FAULTS) == set(NEMESES["all"])
    JepsenConfig(nemesis="member").validate()
    for fault in MEMBER_FAULTS:
        JepsenConfig(nemesis=fault).validate()


# --- The proxy's member ports -------------------------------------------------------------------


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def _hello(node_id: int | None, role: ConnectionRole = ConnectionRole.PEER) -> bytes:
    return _frame(msgspec.msgpack.encode(Hello(version=1, role=role, node_id=node_id)))


async def _read_frame(reader: asyncio.StreamReader, timeout: float) -> bytes | None:
    try:
        async with asyncio.timeout(timeout):
            size = int.from_bytes(await reader.readexactly(4), "big")
            return await reader.readexactly(size)
    except TimeoutError:
        return None


def test_a_member_port_applies_the_faults_of_the_dialers_link() -> None:
    """Node 3 listens behind its member port: a dialer that says it is node 1 crosses link
    (1, 3), one that says it is node 2 crosses (2, 3); a client (or anything that is not
    another member's handshake) passes unfaulted."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(4), "big")
                writer.write(_frame(await reader.readexactly(size)))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def run() -> None:
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        proxy = FaultProxy([1, 2, 3], seed=1)
        await proxy.start()
        for node in (1, 2, 3):
            proxy.set_target(node, "127.0.0.1", port)
        host, _, p = proxy.member_address(3).rpartition(":")
        assert proxy.member_addresses(1)[3] == proxy.member_address(3)
        assert proxy.member_address(3) not in {proxy.address(1, 3), proxy.address(2, 3)}
        try:
            dialers = {}
            for who, hello in (
                (1, _hello(1)),
                (2, _hello(2)),
                ("client", _hello(None, ConnectionRole.CLIENT)),
                ("itself", _hello(3)),
                ("stranger", _hello(7)),
                ("garbage", _frame(b"\xc1 not msgpack")),
            ):
                reader, writer = await asyncio.open_connection(host, int(p))
                writer.write(hello)
                await writer.drain()
                assert await _read_frame(reader, 2.0) == hello[4:]  # the handshake passes
                dialers[who] = (reader, writer)

            async def roundtrip(who: int | str, payload: bytes, timeout: float = 1.0) -> bool:
                reader, writer = dialers[who]
                writer.write(_frame(payload))
                await writer.drain()
                return await _read_frame(reader, timeout) == payload

            proxy.block(1, 3)
            assert not await roundtrip(1, b"cut", 0.3)
            assert await roundtrip(2, b"through")
            for who in ("client", "itself", "stranger", "garbage"):
                assert await roundtrip(who, b"through")
            assert proxy.stats()[(1, 3)].dropped == 1
            assert proxy.stats()[(2, 3)].forwarded == 2  # its handshake and one frame
            proxy.heal()
            proxy.set_faults(3, 2, drop=1.0)  # the way back to node 2 loses everything
            assert await roundtrip(1, b"back")
            assert not await roundtrip(2, b"lost", 0.3)
            proxy.partition([[1, 2], [3]])
            # A new connection across the partition is swallowed after its handshake.
            reader, writer = await asyncio.open_connection(host, int(p))
            writer.write(_hello(1))
            await writer.drain()
            assert await _read_frame(reader, 0.3) is None
            assert proxy.stats()[(1, 3)].swallowed == 1
            writer.close()
            for _, w in dialers.values():
                w.close()
        finally:
            await proxy.close()
            server.close()

    asyncio.run(run())


def test_leader_hints_are_rewritten_to_the_clients_own_links() -> None:
    """A client living on node 1 reaches node 1 through its home port and node 2 through link
    (1, 2): a hint naming node 3's member port (the address the membership records) reaches
    it as link (1, 3), and one naming node 1 as its home port, so a redirected client stays
    partitioned with its home. Frames that are not client answers pass unchanged."""

    def response(leader: int | None, address: str | None) -> bytes:
        resp = ClientResponse(
            7, ResponseStatus.NOT_LEADER, leader_id=leader, leader_address=address
        )
        return _frame(msgspec.msgpack.encode(resp))

    async def run() -> None:
        answers: list[bytes] = []

        async def node(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.readexactly(4 + int.from_bytes(await reader.readexactly(4), "big"))
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            for answer in answers:
                writer.write(answer)
            await writer.drain()

        server = await asyncio.start_server(node, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        proxy = FaultProxy([1, 2, 3], seed=1)
        await proxy.start()
        for n in (1, 2, 3):
            proxy.set_target(n, "127.0.0.1", port)
        answers[:] = [
            _frame(b"\xc1 not a client frame"),
            response(3, proxy.member_address(3)),
            response(1, proxy.member_address(1)),
            response(None, None),
            response(9, "127.0.0.1:1"),  # not a member the proxy knows: unchanged
        ]
        try:
            for port_of in (proxy.home_address(1), proxy.address(1, 2)):
                host, _, p = port_of.rpartition(":")
                reader, writer = await asyncio.open_connection(host, int(p))
                writer.write(_hello(None, ConnectionRole.CLIENT) + _frame(b"request"))
                await writer.drain()
                got = [await _read_frame(reader, 2.0) or b"" for _ in answers]
                writer.close()
                assert got[0] == answers[0][4:]
                hints = [
                    msgspec.msgpack.decode(g, type=ClientResponse).leader_address for g in got[1:]
                ]
                assert hints == [proxy.address(1, 3), proxy.home_address(1), None, "127.0.0.1:1"]
            assert proxy.hints_rewritten == 4
        finally:
            await proxy.close()
            server.close()

    asyncio.run(run())


def test_a_wiped_node_only_ever_starts_joining(tmp_path: Path) -> None:
    """Once its data dir is deleted, a node restarted by anything (the nemesis, the final
    heal) starts with ``--join`` and a member list of itself alone, never with the bootstrap
    member list (with an empty data dir that would make it a voter of a new cluster)."""

    class Recorder:
        def __init__(self, argv: list[str], port: int) -> None:
            self.argv = argv
            self.address = f"127.0.0.1:{port}"
            self.started: list[list[str]] = []
            self.running = False

        def start(self, argv: list[str] | None = None) -> None:
            self.started.append(self.argv if argv is None else list(argv))

    async def run() -> None:
        c = Cluster(3, tmp_path)
        await c.proxy.start()
        try:
            for i in c.ids:
                c.proxy.set_target(i, "127.0.0.1", 10000 + i)
                c.nodes[i] = cast(Any, Recorder([f"usual {i}"], 10000 + i))
            (tmp_path / "data2").mkdir()
            c.start_node(2)
            c.wipe(2)
            assert not (tmp_path / "data2").exists()
            c.start_node(2)
            c.wiped.discard(2)  # a member again (the repair's last step)
            c.start_node(2)
            usual, joining, again = cast(Recorder, c.nodes[2]).started
            assert usual == again == ["usual 2"]
            join = joining.index("--join")
            assert joining[join + 1 :] == [c.proxy.address(2, 1), c.proxy.address(2, 3)]
            server = joining.index("server")
            assert joining[server + 1 : server + 4] == ["2", "2", c.address(2)]
            assert joining[server + 4] == "--data-dir"
        finally:
            await c.proxy.close()

    asyncio.run(run())


# --- The faults and the repair, against a scripted cluster ---------------------------------


class FakeProcess:
    def __init__(self, cluster: FakeCluster, node_id: int) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.running = True

    def start(self, argv: object = None) -> None:
        assert not self.running
        self.running = True
        self.cluster.events.append(f"start {self.node_id}")

    async def wait_ready(self, timeout: float = 15.0) -> None:
        assert self.running


class FakeAdmin:
    """A leader's membership rules, scripted: ``refuse`` counts down refusals of the next
    calls (ProposalDropped); a learner may be promoted once ``caught_up`` holds it."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.voters = set(cluster.ids)
        self.learners: set[int] = set()
        self.addresses = {i: cluster.member_address(i) for i in cluster.ids}
        self.caught_up: set[int] = set()
        self.refuse = 0
        self.unsupported = False

    def _members(self) -> Members:
        return Members(
            voters=tuple(sorted(self.voters)),
            learners=tuple(sorted(self.learners)),
            addresses=dict(self.addresses),
            leader_id=1,
        )

    def _check(self, what: str) -> None:
        self.cluster.events.append(what)
        if self.unsupported:
            raise RemoteProtocolError("node 1 does not serve membership requests")
        if self.refuse:
            self.refuse -= 1
            raise ProposalDropped("another change is pending")

    async def members(self, *, timeout: float | None = None) -> Members:
        if self.unsupported:
            raise RemoteProtocolError("node 1 does not serve membership requests")
        return self._members()

    async def remove_member(self, node: int, *, timeout: float | None = None) -> Members:
        self._check(f"remove {node}")
        self.voters.discard(node)
        self.learners.discard(node)
        self.addresses.pop(node, None)
        return self._members()

    async def add_member(
        self, node: int, address: str, voter: bool = False, *, timeout: float | None = None
    ) -> Members:
        self._check(f"add {node} {'voter' if voter else 'learner'} {address}")
        if voter:
            self.voters.add(node)
            self.learners.discard(node)
        elif node not in self.voters:
            self.learners.add(node)
        self.addresses[node] = address
        return self._members()

    async def promote(self, node: int, *, timeout: float | None = None) -> Members:
        self._check(f"promote {node}")
        if node in self.learners:
            if node not in self.caught_up:
                raise ProposalDropped(f"learner {node} has not caught up")
            self.learners.discard(node)
            self.voters.add(node)
        return self._members()


class FakeCluster:
    def __init__(self, n: int = 3, leader: int | None = 2) -> None:
        self.ids = list(range(1, n + 1))
        self.events: list[str] = []
        self.nodes = {i: FakeProcess(self, i) for i in self.ids}
        self.wiped: set[int] = set()
        self.problems: list[str] = []
        self._leader = leader
        self.admin = FakeAdmin(self)

    def member_address(self, i: int) -> str:
        return f"127.0.0.1:{9000 + i}"

    async def leader(self, timeout: float = 3.0) -> int | None:
        return self._leader

    async def stop(self, i: int) -> None:
        self.nodes[i].running = False
        self.events.append(f"stop {i}")

    async def kill(self, i: int) -> None:
        self.nodes[i].running = False
        self.events.append(f"kill {i}")

    def wipe(self, i: int) -> None:
        assert not self.nodes[i].running
        self.wiped.add(i)
        self.events.append(f"wipe {i}")

    def start_node(self, i: int) -> None:
        self.nodes[i].start()
        if i in self.wiped:
            self.events[-1] += " joining"


def _faults(cluster: FakeCluster, seed: int = 0, **kw: float) -> MemberFaults:
    kw.setdefault("step_timeout", 2.0)
    kw.setdefault("repair_timeout", 3.0)
    kw.setdefault("join_grace", 1.0)
    return MemberFaults(cast(Cluster, cluster), random.Random(seed), **kw)


def _seed_picking(leader: bool) -> int:
    """A seed whose first draw targets the leader (or not)."""
    return next(s for s in range(100) if (random.Random(s).random() < 0.5) == leader)


def test_remove_add_removes_stops_adds_a_learner_restarts_and_the_repair_promotes() -> None:
    c = FakeCluster(leader=2)
    m = _faults(c, _seed_picking(leader=True))
    c.admin.refuse = 2  # the first calls are refused (a change pending): retried

    label = asyncio.run(m.inject("member-remove-add"))
    assert label == (
        "member-remove-add: leader 2: removed, stopped, added as learner, restarted with its data"
    )
    assert c.events == [
        "remove 2",
        "remove 2",
        "remove 2",
        "stop 2",
        f"add 2 learner {c.member_address(2)}",
        "start 2",
    ]
    assert m.active and c.admin.learners == {2}

    async def repair() -> None:
        async def catch_up() -> None:
            await asyncio.sleep(0.3)
            c.admin.caught_up.add(2)

        task = asyncio.get_running_loop().create_task(catch_up())
        await m.repair()
        await task

    asyncio.run(repair())
    assert c.admin.voters == {1, 2, 3} and not c.admin.learners
    assert c.events.count("promote 2") >= 2  # refused while it lagged
    assert not m.problems and not m.active


def test_replace_wiped_kills_wipes_and_starts_a_joiner_that_the_repair_waits_for() -> None:
    c = FakeCluster(leader=1)
    m = _faults(c, _seed_picking(leader=False), join_grace=2.0)
    label = asyncio.run(m.inject("member-replace-wiped"))
    target = int(c.events[0].split()[1])
    assert label.startswith(f"member-replace-wiped: node {target}: removed, killed")
    assert label.endswith("data dir deleted, restarted empty with --join")
    assert c.events[1:] == [f"kill {target}", f"wipe {target}", f"start {target} joining"]

    async def joiner() -> None:
        # The joiner adds itself at its real port, catches up and promotes itself.
        await asyncio.sleep(0.2)
        await c.admin.add_member(target, "127.0.0.1:1", voter=False)
        await asyncio.sleep(0.2)
        c.admin.caught_up.add(target)
        await c.admin.promote(target)

    async def repair() -> None:
        task = asyncio.get_running_loop().create_task(joiner())
        await m.repair()
        await task

    asyncio.run(repair())
    # The harness never added or promoted the joiner itself: it only fixed its address.
    harness = [e for e in c.events if e.startswith(("add", "promote"))]
    assert harness == [
        f"add {target} learner 127.0.0.1:1",
        f"promote {target}",
        f"add {target} voter {c.member_address(target)}",
    ]
    assert c.admin.voters == {1, 2, 3} and c.admin.addresses[target] == c.member_address(target)
    assert not m.problems and target not in c.wiped


def test_a_joiner_that_never_promotes_itself_is_promoted_and_reported() -> None:
    c = FakeCluster(leader=None)
    m = _faults(c, 0, join_grace=0.3)
    asyncio.run(m.inject("member-replace-wiped"))
    target = m.target
    assert target is not None
    c.admin.caught_up.add(target)
    asyncio.run(m.repair())
    assert c.admin.voters == {1, 2, 3}
    assert len(m.problems) == 1 and "did not promote itself" in m.problems[0]


def test_the_repair_starts_from_whatever_a_cancelled_fault_left() -> None:
    """The run ends in the middle of a fault (its task is cancelled): removed and stopped,
    never added back. The repair starts the node, adds it and promotes it."""
    c = FakeCluster(leader=3)
    m = _faults(c, _seed_picking(leader=True))

    async def interrupted() -> None:
        async def slow_add(*args: Any, **kwargs: Any) -> Members:
            await asyncio.sleep(10)
            raise AssertionError("not reached")

        real_add = c.admin.add_member
        c.admin.add_member = slow_add  # type: ignore[method-assign]
        task = asyncio.get_running_loop().create_task(m.inject("member-remove-add"))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        c.admin.add_member = real_add  # type: ignore[method-assign]
        c.admin.caught_up.add(3)
        await m.repair()

    asyncio.run(interrupted())
    assert c.events[:2] == ["remove 3", "stop 3"]
    assert "start 3" in c.events and "promote 3" in c.events
    assert c.admin.voters == {1, 2, 3} and not m.problems


def test_a_repair_cancelled_half_way_is_finished_by_the_next_one() -> None:
    """The run ends while the repair waits for a learner to catch up: the final heal's repair
    must finish it, not find nothing to do."""
    c = FakeCluster(leader=2)
    m = _faults(c, _seed_picking(leader=True), repair_timeout=10.0)

    async def run() -> None:
        await m.inject("member-remove-add")
        task = asyncio.get_running_loop().create_task(m.repair())
        await asyncio.sleep(0.3)  # promotion refused: it has not caught up
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert m.active and c.admin.learners == {2}
        c.admin.caught_up.add(2)
        await m.repair()

    asyncio.run(run())
    assert c.admin.voters == {1, 2, 3} and not m.active and not m.problems


def test_a_failed_step_ends_the_fault_and_a_repair_that_cannot_finish_is_a_problem() -> None:
    c = FakeCluster(leader=2)
    c.admin.unsupported = True
    m = _faults(c, _seed_picking(leader=True))
    started = time.monotonic()
    label = asyncio.run(m.inject("member-remove-add"))
    assert label.startswith("member-remove-add: leader 2: not removed (RemoteProtocolError")
    assert c.events == ["remove 2"] and c.nodes[2].running
    asyncio.run(m.repair())
    assert time.monotonic() - started < 2.0  # no waiting for a server that cannot do it
    assert len(m.problems) == 1 and "membership not repaired" in m.problems[0]

    # A change refused until the step's deadline: the fault ends there, bounded.
    c = FakeCluster(leader=2)
    c.admin.refuse = 10**6
    m = _faults(c, _seed_picking(leader=True), step_timeout=0.5)
    started = time.monotonic()
    label = asyncio.run(m.inject("member-remove-add"))
    assert time.monotonic() - started < 2.0
    assert label == "member-remove-add: leader 2: not removed (TimeoutError: )"


def test_the_nemesis_repairs_a_membership_fault_before_the_next_fault() -> None:
    c = FakeCluster(leader=2)
    nemesis = Nemesis(cast(Cluster, c), ["member-remove-add"], random.Random(1))
    for node in c.ids:
        c.admin.caught_up.add(node)

    async def twice() -> None:
        await nemesis.inject()
        assert nemesis.active
        await nemesis.inject()  # repairs the first one first
        await nemesis.repair()

    asyncio.run(twice())
    assert c.admin.voters == {1, 2, 3} and not nemesis.active and not nemesis.members.problems
    assert sum(e.startswith("promote") for e in c.events) == 2 == nemesis.members.injected


def test_final_reads_stop_once_their_budget_is_spent() -> None:
    """A cluster left without a quorum (the member nemesis can leave one so: see its
    problems) answers no read: the final reads give up on every key once their budget is
    spent, instead of one timed-out read per key (hundreds of keys, minutes each run)."""

    async def run() -> None:
        async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # accepts and never answers

        server = await asyncio.start_server(swallow, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        cluster = SimpleNamespace(addresses=[f"127.0.0.1:{port}"], cluster_id=None, ids=[1])
        workload = Workload(JepsenConfig(), cast(Cluster, cluster), HistoryRecorder(), 1)
        keys = [f"k{i}" for i in range(20)]
        started = time.monotonic()
        try:
            missing = await workload.final_reads(keys, 99, random.Random(1), 0.5)
        finally:
            server.close()
        assert missing == keys
        assert time.monotonic() - started < 8.0  # one 2 s read per key would take 40 s

    asyncio.run(run())


# --- Real processes ---------------------------------------------------------------------------


@pytest.mark.process
@pytest.mark.timeout(120)
@pytest.mark.skipif(
    not hasattr(RaftNode, "add_member"), reason="the servers do not serve membership changes yet"
)
def test_members_are_recorded_at_their_member_ports_so_isolation_holds(tmp_path: Path) -> None:
    """The leader records the addresses its command line gives, its own real port included;
    the harness records every member at its member port instead. Isolated, the old leader
    then hears nothing from the others: its term stays below the new leader's (dialed at its
    real port, the others' messages would reach it around the proxy and raise its term)."""

    async def run() -> None:
        async with Cluster(3, tmp_path, seed=3) as c:
            old = await c.leader(timeout=10)
            assert old is not None
            assert await c.record_member_addresses()
            members = await c.admin.members()
            assert members.addresses == {i: c.member_address(i) for i in c.ids}
            c.proxy.isolate(old)
            deadline = time.monotonic() + 20
            new = None
            while time.monotonic() < deadline:
                new = await c.leader(timeout=0.5)
                if new is not None and new != old:
                    break
                await asyncio.sleep(0.05)
            assert new is not None and new != old, "no leader on the majority side"
            new_status = await c.status(new)
            assert new_status is not None and new_status.term is not None
            for _ in range(10):  # about a second: long enough for heartbeats to arrive
                st = await c.status(old)
                assert st is not None and st.term is not None
                assert st.term < new_status.term, (st, new_status)
                await asyncio.sleep(0.1)

    asyncio.run(run())


# --- A real run ---------------------------------------------------------------------------------


@pytest.mark.process
@pytest.mark.timeout(300)
@pytest.mark.skipif(
    not hasattr(RaftNode, "add_member"), reason="the servers do not serve membership changes yet"
)
def test_a_short_member_nemesis_run_is_linearizable(tmp_path: Path) -> None:
    """A few seconds of the workload on 3 real nodes while the member nemesis removes a node
    (the leader when the seed says so) and adds it back, or replaces it after wiping its disk:
    the history is linearizable, every acknowledged write is read back, and every node is a
    voter again at the end."""
    seed = 11
    config = JepsenConfig(
        nodes=3,
        clients=4,
        keys=3,
        seconds=8,
        interval=1.5,
        nemesis="member",
        seed=seed,
        out_dir=tmp_path,
        op_timeout=2.0,
        server_args=("--snapshot-entries", "200"),
    )
    result = asyncio.run(run_jepsen(config))
    print(result.summary)
    assert result.valid, result.summary
    faults = [w for w in result.windows if w.fault]
    assert faults, "the nemesis injected no fault"
    assert all(w.label.startswith("member-") for w in faults), result.summary
    assert any(", restarted" in w.label for w in faults), result.summary
    assert result.counts["ok"] > 50, result.summary
    assert result.checks[-1].name == "membership restored" and result.checks[-1].passed
