"""The client's sessions against real RaftNodes in this process, over TCP on 127.0.0.1: a write
whose answer was lost when its leader stopped is resent and applied once; an evicted session
gets the definite SessionExpiredError and the next write opens a new one; keep-alives carry
an idle session past its timeout; close() ends the session. Every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from raftpy.client import Client
from raftpy.errors import SessionExpiredError
from raftpy.node import RaftNode
from raftpy.node.config import NodeConfig
from raftpy.transport.address import free_port, parse_address
from tests.nodehelpers import FAST, CountingKV, applies, set_cmd, wait_for, wait_leader

pytestmark = pytest.mark.timeout(120)


@contextlib.asynccontextmanager
async def tcp_cluster(n: int = 3, config: NodeConfig = FAST) -> AsyncIterator[list[RaftNode]]:
    """``n`` nodes with TCP transports on free ports, started; all stopped on the way out."""
    peers = {i: f"127.0.0.1:{free_port()}" for i in range(1, n + 1)}
    nodes = [RaftNode(i, peers[i], peers, CountingKV(), None, config) for i in peers]
    try:
        for node in nodes:
            await node.start()
        yield nodes
    finally:
        for node in nodes:
            await node.stop()


class AnswerEater:
    """A TCP proxy in front of one node that can stop passing the node's answers on: the
    request reaches the node, its answer is lost, as when a leader dies mid-write."""

    def __init__(self, target: str) -> None:
        self.target = parse_address(target)
        self.eat = False
        self.address = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:  # the node is stopped: as if the proxy were down too
            writer.close()
            return
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, answers=False)),
            asyncio.create_task(self._pump(up_reader, writer, answers=True)),
        ]
        self._tasks.update(pumps)

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, answers: bool
    ) -> None:
        try:
            while data := await src.read(1 << 16):
                if answers and self.eat:
                    continue
                dst.write(data)
                await dst.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            dst.close()


def test_a_write_whose_leader_stopped_before_answering_is_resent_and_applied_once() -> None:
    async def main() -> None:
        async with tcp_cluster() as nodes:
            leader = await wait_leader(nodes)
            proxy = AnswerEater(leader.address)
            await proxy.start()
            others = [n.address for n in nodes if n is not leader]
            try:
                async with Client([proxy.address, *others], timeout=20) as client:
                    assert await client.propose(set_cmd("x", "1")) == b""
                    assert client.leader_address == proxy.address
                    session = client.session_id
                    proxy.eat = True
                    write = asyncio.create_task(client.propose(set_cmd("x", "2")))
                    # Applied everywhere (opening the session was not a user command)...
                    await wait_for(lambda: all(applies(n) == 2 for n in nodes), timeout=10)
                    await asyncio.sleep(0.05)
                    assert not write.done()  # ...but the answer was lost
                    await leader.stop()
                    # Resent with the same (session, seq) to the next leader, which answers
                    # with the result of the one application: x was "1" before it.
                    assert await asyncio.wait_for(write, 20) == b"1"
                    assert client.session_id == session
                    rest = [n for n in nodes if n is not leader]
                    assert [applies(n) for n in rest] == [2, 2]
                    assert await client.query(b"x") == b"2"
            finally:
                await proxy.stop()

    asyncio.run(main())


def test_an_evicted_session_gets_the_definite_error_and_the_next_write_a_new_one() -> None:
    async def main() -> None:
        async with tcp_cluster(1, replace(FAST, max_sessions=1)) as (node,):
            await wait_leader([node])
            async with Client([node.address], timeout=10) as a, Client([node.address]) as b:
                await a.propose(set_cmd("k", "a1"))
                first = a.session_id
                await b.propose(set_cmd("k", "b1"))  # the cluster keeps one session: a's goes
                with pytest.raises(SessionExpiredError):
                    await a.propose(set_cmd("k", "lost"))
                assert a.session_id is None
                assert applies(node) == 2 and await a.query(b"k") == b"b1"  # not applied
                assert await a.propose(set_cmd("k", "a2")) == b"b1"
                assert a.session_id not in (None, first)

    asyncio.run(main())


def test_keep_alives_carry_an_idle_session_past_its_timeout() -> None:
    async def main() -> None:
        config = replace(FAST, session_timeout=0.4)
        async with tcp_cluster(1, config) as (node,):
            await wait_leader([node])
            async with Client([node.address], timeout=10) as client:
                await client.propose(set_cmd("k", "1"))
                session = client.session_id
                await asyncio.sleep(1.5)  # idle for almost four session timeouts
                assert await client.propose(set_cmd("k", "2")) == b"1"
                assert client.session_id == session
                assert node.status().sessions == 1

    asyncio.run(main())


def test_close_ends_the_session_on_the_cluster() -> None:
    async def main() -> None:
        async with tcp_cluster(1) as (node,):
            await wait_leader([node])
            client = Client([node.address], timeout=10)
            await client.propose(set_cmd("k", "1"))
            assert node.status().sessions == 1
            await client.close()
            await wait_for(lambda: node.status().sessions == 0, timeout=5)

    asyncio.run(main())
