"""The user's state machine raising, in a running node: an exception from ``apply``,
``query``, ``prepare_snapshot`` or ``snapshot`` fails the one request (or snapshot attempt)
that called it, and the node keeps serving; a ``restore`` that raises on a verified snapshot,
or any other exception in the loop, ends the node (here ``exit_on_fatal`` is off, so the test
sees it refuse requests; tests/node/test_fatal_exit_process.py checks the real exit).

Some tests go through the real client and the TCP transport against an in-process node, as a
user's client would. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import msgspec
import pytest

from raftpy.client import Client
from raftpy.errors import ClusterUnavailableError, ProposalDropped, RemoteProtocolError
from raftpy.examples.hashmap import HashMapStateMachine
from raftpy.examples.register import RegisterStateMachine
from raftpy.node import RaftNode
from raftpy.node.config import NodeConfig
from raftpy.statemachine import StateMachine
from raftpy.storage.errors import FatalStorageError
from raftpy.storage.fs import FaultyFileSystem
from raftpy.storage.snapshots import SnapshotStore
from raftpy.transport.address import free_port
from raftpy.transport.protocol import (
    ClientOp,
    ClientRequest,
    ClientResponse,
    Consistency,
    ResponseStatus,
)
from tests.nodehelpers import (
    FAST,
    KV,
    LocalNetwork,
    make_cluster,
    running,
    set_cmd,
    wait_for,
    wait_leader,
)

MANUAL = dataclasses.replace(FAST, snapshot_entries=None, snapshot_bytes=None)


class Faulty(KV):
    """A KV whose methods raise on demand (for tests): ``query`` for the key ``boom``,
    ``apply`` for the key ``boom``, and ``snapshot`` / ``prepare_snapshot`` / ``restore``
    while their flag is set."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_snapshot = False
        self.fail_restore = False

    def query(self, query: bytes) -> bytes:
        if query == b"boom":
            raise KeyError("boom is not allowed")
        return super().query(query)

    def apply(self, command: bytes) -> bytes:
        if b'"boom"' in command:
            raise ValueError("cannot set boom")
        return super().apply(command)

    def snapshot(self, out: BinaryIO) -> None:
        if self.fail_snapshot:
            raise OSError("the state machine's snapshot failed")
        super().snapshot(out)

    def restore(self, inp: BinaryIO) -> None:
        if self.fail_restore:
            raise RuntimeError("cannot restore")
        super().restore(inp)


class FaultyPrepare(Faulty):
    def prepare_snapshot(self) -> Callable[[BinaryIO], None]:
        if self.fail_snapshot:
            raise MemoryError("prepare_snapshot failed")
        data = dict(self.data)

        def write(out: BinaryIO) -> None:
            out.write(msgspec.json.encode(data))

        return write


def one_node(sm: StateMachine, config: NodeConfig = MANUAL) -> RaftNode:
    net = LocalNetwork()
    peers = {1: "local:1"}
    return RaftNode(1, "local:1", peers, sm, None, config, transport_factory=net.factory(1))


async def leading(node: RaftNode) -> None:
    await wait_for(lambda: node.role.value == "leader", timeout=3)


def test_a_raising_query_fails_that_read_only_at_every_consistency() -> None:
    async def main() -> None:
        async with running([one_node(Faulty())]) as (node,):
            await leading(node)
            await node.propose(set_cmd("a", "1"))
            for level in ("linearizable", "lease", "stale"):
                with pytest.raises(KeyError, match="boom is not allowed"):
                    await node.query(b"boom", level, timeout=2)
                assert await node.query(b"a", level, timeout=2) == b"1"
            # Reads batched into one ReadIndex round: the bad one fails alone.
            reads = [node.submit_query(q, "linearizable", 2) for q in (b"a", b"boom", b"a")]
            results = await asyncio.gather(*reads, return_exceptions=True)
            assert results[0] == results[2] == b"1"
            assert isinstance(results[1], KeyError)
            assert node.status().failed is None
            assert await node.propose(set_cmd("a", "2")) == b"1"

    asyncio.run(main())


def test_a_raising_apply_fails_its_proposal_only_and_the_log_goes_on() -> None:
    async def main() -> None:
        async with running([one_node(Faulty())]) as (node,):
            await leading(node)
            with pytest.raises(ValueError, match="cannot set boom"):
                await node.propose(set_cmd("boom", "1"))
            assert await node.propose(set_cmd("a", "1")) == b""
            assert node.status().failed is None

    asyncio.run(main())


class Conn:
    def __init__(self) -> None:
        self.answers: list[ClientResponse] = []

    def respond(self, response: ClientResponse) -> None:
        self.answers.append(response)


def test_the_service_answers_a_state_machine_exception_with_its_type_not_retryable() -> None:
    async def main() -> None:
        async with running([one_node(Faulty())]) as (node,):
            await leading(node)
            conn = Conn()
            service = node._service
            service.handle(conn, ClientRequest(1, ClientOp.QUERY, b"boom"))
            service.handle(conn, ClientRequest(2, ClientOp.PROPOSE, set_cmd("boom", "x")))
            # A stale read is answered at once from local state: it used to raise here.
            service.handle(conn, ClientRequest(3, ClientOp.QUERY, b"boom", Consistency.STALE))
            await wait_for(lambda: len(conn.answers) == 3, timeout=3)
            by_id = {a.id: a for a in conn.answers}
            for i, kind in ((1, "KeyError"), (2, "ValueError"), (3, "KeyError")):
                a = by_id[i]
                assert a.status is ResponseStatus.ERROR, a
                assert a.retryable is False, a
                assert a.message is not None and f"state machine raised {kind}" in a.message

    asyncio.run(main())


def test_a_raising_snapshot_fails_that_attempt_and_the_node_serves_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        for sm in (Faulty(), FaultyPrepare()):
            auto = dataclasses.replace(MANUAL, snapshot_entries=5)
            async with running([one_node(sm, auto)]) as (node,):
                await leading(node)
                sm.fail_snapshot = True
                # Automatic snapshots fail, are logged, and the node serves on.
                for i in range(12):
                    await node.propose(set_cmd(f"k{i}", str(i)))
                await wait_for(lambda: any(r.name == "raftpy.snapshot" for r in caplog.records))
                assert node.status().failed is None
                assert await node.query(b"k11") == b"11"
                assert await node.propose(set_cmd("k", "v")) == b""
                # The operator's snapshot gets the error.
                with pytest.raises((OSError, MemoryError)):
                    await node.snapshot()
                assert node.status().failed is None
                sm.fail_snapshot = False
                meta = await node.snapshot()
                assert meta.index >= 12
            caplog.clear()

    with caplog.at_level(logging.ERROR, logger="raftpy"):
        asyncio.run(main())


def test_a_raising_restore_of_a_verified_snapshot_ends_that_node(tmp_path: Path) -> None:
    from tests.node.test_node_snapshots import SNAP, cluster, cut_off_past_compaction

    async def main() -> None:
        net = LocalNetwork()
        async with running(cluster(net, tmp_path, SNAP, Faulty)) as nodes:
            leader, lagger, _ = await cut_off_past_compaction(net, nodes)
            sm = lagger.state_machine
            assert isinstance(sm, Faulty)
            sm.fail_restore = True
            net.isolated.clear()
            await wait_for(lambda: lagger.status().failed is not None, timeout=10)
            failed = lagger.status().failed
            assert failed is not None
            assert "state machine error" in failed and "restore() raised RuntimeError" in failed
            with pytest.raises(ProposalDropped, match="has failed"):
                await lagger.query(b"k1", "stale")
            # The rest of the cluster still serves.
            leader = await wait_leader([n for n in nodes if n is not lagger])
            assert await leader.propose(set_cmd("after", "1"), timeout=5) == b""

    asyncio.run(main())


def test_an_exception_in_the_loop_ends_the_node_and_every_waiting_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        net = LocalNetwork()
        async with running(make_cluster(net)) as nodes:
            node = await wait_leader(nodes)
            await node.propose(set_cmd("a", "1"))
            # Cut the followers off: a read now waits for a heartbeat quorum that never comes.
            net.isolated.update(n.node_id for n in nodes if n is not node)
            read = node.submit_query(b"a", "linearizable", 10)
            raft = node._raft
            assert raft is not None

            def broken(*args: object) -> None:
                raise AssertionError("planted invariant failure")

            raft.tick = broken  # type: ignore[method-assign]
            await wait_for(lambda: node.status().failed is not None, timeout=3)
            failed = node.status().failed
            assert failed == "internal error: AssertionError: planted invariant failure"
            with pytest.raises(ClusterUnavailableError, match="internal error"):
                await asyncio.wait_for(read, 3)
            with pytest.raises(ProposalDropped, match="has failed: internal error"):
                await node.propose(set_cmd("a", "2"))

    with caplog.at_level(logging.CRITICAL, logger="raftpy.node"):
        asyncio.run(main())
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert any("planted invariant failure" in r.getMessage() for r in critical)


# ----------------------------------------------------------------------------------------------
# The examples' state machines, through the real client and TCP
# ----------------------------------------------------------------------------------------------


def tcp_node(sm: StateMachine) -> RaftNode:
    address = f"127.0.0.1:{free_port()}"
    return RaftNode(1, address, {1: address}, sm, None, MANUAL)


@pytest.mark.parametrize("consistency", ["linearizable", "stale"])
def test_hashmap_get_of_a_key_that_is_not_utf8_is_answered_with_an_error(
    consistency: str,
) -> None:
    async def main() -> None:
        async with running([tcp_node(HashMapStateMachine())]) as (node,):
            await leading(node)
            client = Client([node.address], timeout=5)
            try:
                put = msgspec.msgpack.encode(("put", "k", '"v"'))
                assert await client.propose(put) == b"null"
                with pytest.raises(RemoteProtocolError, match="not UTF-8"):
                    await client.query(b"\xff\xfe", consistency=consistency)
                # Malformed commands: each fails alone, with what was wrong.
                for bad, why in (
                    (b"\xc1", "malformed hashmap command"),
                    (msgspec.msgpack.encode(()), "empty"),
                    (msgspec.msgpack.encode(("del", "k")), "unknown hashmap command"),
                ):
                    with pytest.raises(RemoteProtocolError, match=why):
                        await client.propose(bad)
                assert await client.query(b"k", consistency=consistency) == b'"v"'
                assert node.status().failed is None
            finally:
                await client.close()

    asyncio.run(main())


def test_register_malformed_commands_are_answered_with_an_error() -> None:
    async def main() -> None:
        async with running([tcp_node(RegisterStateMachine())]) as (node,):
            await leading(node)
            client = Client([node.address], timeout=5)
            try:
                for bad in (b"", b"\xc1", msgspec.msgpack.encode(()), b"\x91\x01"):
                    with pytest.raises(RemoteProtocolError, match="malformed register command"):
                        await client.propose(bad)
                assert await client.propose(msgspec.msgpack.encode(("put", "x"))) == b""
                assert await client.query(b"\xff") == b"x"
            finally:
                await client.close()

    asyncio.run(main())


def test_a_failed_fsync_of_a_snapshot_file_ends_the_node() -> None:
    """A storage error the node cannot survive, met off the loop (the snapshot file is written
    in a worker thread), takes the same fatal path as one in the loop."""

    async def main() -> None:
        async with running([one_node(KV())]) as (node,):
            await leading(node)
            await node.propose(set_cmd("a", "1"))
            snaps = node._snaps
            assert snaps is not None
            fs = FaultyFileSystem(seed=1)
            snaps.store = SnapshotStore("/snapshots", fs=fs)
            fs.fail_next_fsync()
            with pytest.raises(FatalStorageError):
                await node.snapshot()
            failed = node.status().failed
            assert failed is not None and failed.startswith("fatal storage error: ")
            with pytest.raises(ProposalDropped, match="has failed: fatal storage error"):
                await node.propose(set_cmd("a", "2"))

    asyncio.run(main())
