"""Client and SyncClient against fake in-process nodes.

Each :class:`FakeNode` is an asyncio server on 127.0.0.1 (port 0) speaking the real framing,
handshake and client protocol, with a scripted handler deciding each answer: leader, not the
leader (with or without a hint), DROPPED, INDETERMINATE, silence, closing the connection after
a request, answering a pipelined burst in reverse order. Fakes for tests only.

A fake leader grants sessions (``OPEN_SESSION``) and answers keep-alives and closes; those
requests are kept apart (``FakeNode.session_requests``) so the tests of writes see only the
writes. The session tests themselves are in ``test_client_sessions.py``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import msgspec
import pytest

from raftpy.client import Client, SyncClient, parse_address
from raftpy.client.call import SESSION_WRITES
from raftpy.core.messages import PROTOCOL_VERSION
from raftpy.errors import (
    ClusterUnavailableError,
    IndeterminateError,
    LocalProtocolError,
    ProposalDropped,
    RemoteProtocolError,
)
from raftpy.node.stats import NodeStats
from raftpy.node.status import NodeStatus
from raftpy.transport.codec import HEADER, encode_frame
from raftpy.transport.protocol import (
    ClientOp,
    ClientRequest,
    ClientResponse,
    ConnectionRole,
    Consistency,
    Hello,
    HelloReply,
    ResponseStatus,
    SessionGranted,
    client_decoder,
    encode_frame_payload,
    hello_decoder,
)

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")

FAST: dict[str, Any] = {"backoff_initial": 0.01, "backoff_max": 0.05, "connect_timeout": 0.5}


class NoJitter(random.Random):
    """Backoff pauses of exactly the nominal length, so deadlines fall far from any attempt
    (a proposal in flight at the deadline is rightly indeterminate, which would flake a test
    expecting a definite failure)."""

    def random(self) -> float:
        return 1.0


# Rounds of attempts at about 0, 0.025, 0.075 and 0.175 s; the pause after that is cut short
# by a 0.3 s deadline, 125 ms after the last attempt.
STEADY: dict[str, Any] = {"backoff_initial": 0.025, "backoff_max": 1.0, "connect_timeout": 0.5}


def run(coro: Coroutine[Any, Any, T], limit: float = 15.0) -> T:
    """Run a scenario in a fresh event loop, bounded."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, limit)

    return asyncio.run(bounded())


# -- the fake node ------------------------------------------------------------------------


class FakeConn:
    """The node's side of one client connection."""

    def __init__(self, node: FakeNode, writer: asyncio.StreamWriter) -> None:
        self.node = node
        self.writer = writer

    def respond(self, resp: ClientResponse) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode_frame(encode_frame_payload(resp)))

    def close(self) -> None:
        self.writer.close()


Handler = Callable[[FakeConn, ClientRequest], Awaitable[None]]


class FakeNode:
    """A scripted raftpy node for client tests (for tests only)."""

    def __init__(self, node_id: int, *, refuse: str | None = None) -> None:
        self.node_id = node_id
        self.refuse = refuse
        self.handler: Handler = leader(self)
        self.requests: list[ClientRequest] = []
        self.session_requests: list[ClientRequest] = []  # OPEN_SESSION, KEEP_ALIVE, CLOSE
        self.next_session = 100 * node_id
        self.session_timeout = 60.0
        self.hellos: list[Hello] = []
        self.connections = 0
        self.address = ""
        self.accepted = asyncio.Event()
        self.hello_gate: asyncio.Event | None = None  # when set: answer Hello only once it fires
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def ops(self, op: ClientOp) -> list[ClientRequest]:
        return [r for r in self.requests + self.session_requests if r.op is op]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{port}"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            hello = hello_decoder.decode(await read_frame(reader))
            assert isinstance(hello, Hello)
            self.hellos.append(hello)
            self.accepted.set()
            if self.hello_gate is not None:
                await asyncio.wait_for(self.hello_gate.wait(), 5)
            if self.refuse is not None:
                reply = HelloReply(ok=False, node_id=self.node_id, reason=self.refuse)
                writer.write(encode_frame(encode_frame_payload(reply)))
                return
            reply = HelloReply(ok=True, node_id=self.node_id)
            writer.write(encode_frame(encode_frame_payload(reply)))
            conn = FakeConn(self, writer)
            while not writer.is_closing():
                req = client_decoder.decode(await read_frame(reader))
                assert isinstance(req, ClientRequest)
                if req.op in SESSION_WRITES:
                    self.session_requests.append(req)
                else:
                    self.requests.append(req)
                await self.handler(conn, req)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    return await reader.readexactly(size)


def answer(
    req: ClientRequest, status: ResponseStatus = ResponseStatus.OK, **kw: Any
) -> ClientResponse:
    return ClientResponse(req.id, status, **kw)


def leader_result(req: ClientRequest, node: FakeNode, role: str = "leader") -> ClientResponse:
    if req.op is ClientOp.OPEN_SESSION:
        node.next_session += 1
        grant = SessionGranted(session=node.next_session, timeout=node.session_timeout)
        return answer(req, result=msgspec.msgpack.encode(grant))
    if req.op in SESSION_WRITES:
        return answer(req)
    if req.op is ClientOp.PROPOSE:
        return answer(req, result=b"applied:" + req.data)
    if req.op is ClientOp.QUERY:
        return answer(req, result=b"value:" + req.data)
    return answer(req, result=msgspec.msgpack.encode(fake_status(node, role)))


def fake_status(node: FakeNode, role: str) -> NodeStatus:
    """What a fake node says about itself: a running member at commit index 7."""
    return NodeStatus(
        id=node.node_id,
        address=node.address,
        running=True,
        role=role,
        term=1,
        leader=None,
        leader_address=None,
        commit=7,
        applied=7,
        last_index=7,
        first_index=1,
        snapshot=None,
        members=(node.node_id,),
        peers={},
        disk_full=False,
        failed=None,
        stats=NodeStats(),
    )


def leader(node: FakeNode) -> Handler:
    async def handle(conn: FakeConn, req: ClientRequest) -> None:
        conn.respond(leader_result(req, node))

    return handle


def follower(node: FakeNode, hint: FakeNode | None) -> Handler:
    """Answers NOT_LEADER (with the hint's address) to proposes and queries; status works."""

    async def handle(conn: FakeConn, req: ClientRequest) -> None:
        if req.op is ClientOp.STATUS:
            conn.respond(leader_result(req, node, role="follower"))
        elif hint is None:
            conn.respond(answer(req, ResponseStatus.NOT_LEADER))
        else:
            conn.respond(
                answer(
                    req,
                    ResponseStatus.NOT_LEADER,
                    leader_id=hint.node_id,
                    leader_address=hint.address,
                )
            )

    return handle


def scripted(node: FakeNode, *first: Callable[[FakeConn, ClientRequest], None]) -> Handler:
    """Apply the given actions to the first requests in turn (session ops aside: those are
    granted), then behave as the leader."""
    actions = list(first)

    async def handle(conn: FakeConn, req: ClientRequest) -> None:
        if actions and req.op not in SESSION_WRITES:
            actions.pop(0)(conn, req)
        else:
            conn.respond(leader_result(req, node))

    return handle


def status_of(
    status: ResponseStatus, message: str | None = None, retryable: bool = True
) -> Callable[..., None]:
    def act(conn: FakeConn, req: ClientRequest) -> None:
        conn.respond(answer(req, status, message=message, retryable=retryable))

    return act


def silent(conn: FakeConn, req: ClientRequest) -> None:
    """Never answer."""


def hang_up(conn: FakeConn, req: ClientRequest) -> None:
    """Close the connection right after receiving the request."""
    conn.close()


def garbage(conn: FakeConn, req: ClientRequest) -> None:
    """Answer with a frame that is not msgpack."""
    conn.writer.write(encode_frame(b"\xc1\xc1\xc1"))


@contextlib.asynccontextmanager
async def nodes(n: int, **kw: Any) -> AsyncIterator[list[FakeNode]]:
    fakes = [FakeNode(i + 1, **kw) for i in range(n)]
    for fake in fakes:
        await fake.start()
    try:
        yield fakes
    finally:
        for fake in fakes:
            await fake.stop()


def dead_address() -> str:
    """An address where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


# -- redirects, rotation, the known leader ------------------------------------------------


def test_follows_redirect_to_a_leader_missing_from_the_list() -> None:
    async def scenario() -> None:
        async with nodes(3) as (a, b, c):
            a.handler = follower(a, hint=c)
            b.handler = follower(b, hint=c)
            async with Client([a.address, b.address], rng=random.Random(1), **FAST) as client:
                assert await client.propose(b"x") == b"applied:x"
                assert client.leader_address == c.address
                assert c.address in client.addresses
                # The known leader is tried first from now on.
                assert await client.propose(b"y") == b"applied:y"
                assert await client.query(b"k") == b"value:k"
            # The redirect came with opening the session; the writes went to the leader.
            assert len(a.session_requests) == 1 and a.requests == b.requests == []
            assert [r.data for r in c.requests] == [b"x", b"y", b"k"]

    run(scenario())


def test_a_follower_answering_a_linearizable_read_is_not_taken_for_the_leader() -> None:
    """Followers serve linearizable reads (ReadIndex through the leader, Thesis §6.4), so
    such an answer says nothing about who leads; a lease read is served by the leader only,
    so its answer does name the leader."""

    def reads_only(node: FakeNode) -> Handler:
        async def handle(conn: FakeConn, req: ClientRequest) -> None:
            if req.op is ClientOp.QUERY and req.consistency is Consistency.LINEARIZABLE:
                conn.respond(leader_result(req, node, role="follower"))
            else:
                conn.respond(answer(req, ResponseStatus.NOT_LEADER))

        return handle

    async def scenario() -> None:
        async with nodes(2) as (b, a):
            b.handler = reads_only(b)
            async with Client([b.address, a.address], rng=random.Random(1), **FAST) as client:
                assert await client.query(b"k") == b"value:k"
                assert [r.data for r in b.requests] == [b"k"]
                assert client.leader_address is None
                assert await client.propose(b"x") == b"applied:x"
                assert client.leader_address == a.address
                assert await client.query(b"j", consistency="lease") == b"value:j"
                assert client.leader_address == a.address

    run(scenario())


def test_rotates_without_hint_and_without_pausing_within_a_round() -> None:
    async def scenario() -> None:
        async with nodes(3) as (a, b, c):
            a.handler = follower(a, hint=None)
            b.handler = follower(b, hint=None)
            client = Client([a.address, b.address, c.address], backoff_initial=0.5, backoff_max=1.0)
            start = time.monotonic()
            assert await client.propose(b"x") == b"applied:x"
            # Each address tried once; no backoff (0.25-0.5 s) before trying a new address.
            assert time.monotonic() - start < 0.25
            # Opening the session found the leader; the write went straight to it.
            assert [len(n.session_requests) for n in (a, b, c)] == [1, 1, 1]
            assert [len(n.requests) for n in (a, b, c)] == [0, 0, 1]
            assert client.leader_address == c.address
            await client.close()

    run(scenario())


def test_skips_a_refused_address() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,), Client([dead_address(), a.address], **FAST) as client:
            assert await client.propose(b"x") == b"applied:x"

    run(scenario())


def test_redirect_loop_backs_off_and_ends_at_the_deadline() -> None:
    async def scenario() -> None:
        async with nodes(2) as (a, b):
            a.handler = follower(a, hint=b)
            b.handler = follower(b, hint=a)
            client = Client([a.address], timeout=0.3, rng=NoJitter(), **STEADY)
            start = time.monotonic()
            with pytest.raises(ClusterUnavailableError, match="not the leader"):
                await client.propose(b"x")
            elapsed = time.monotonic() - start
            assert 0.28 <= elapsed < 1.0
            # Backoff: four rounds of a -> b -> (a again: pause), not a storm (opening the
            # session, which the write needs first).
            assert len(a.session_requests) + len(b.session_requests) == 8
            await client.close()

    run(scenario())


# -- definite versus indeterminate ----------------------------------------------------------


def test_all_not_leader_until_the_deadline_is_definite() -> None:
    async def scenario() -> None:
        async with nodes(2) as (a, b):
            a.handler = follower(a, hint=None)
            b.handler = follower(b, hint=None)
            client = Client([a.address, b.address], timeout=0.3, rng=NoJitter(), **STEADY)
            async with client:
                start = time.monotonic()
                with pytest.raises(ClusterUnavailableError):
                    await client.propose(b"x")
                assert 0.28 <= time.monotonic() - start < 1.0
                with pytest.raises(ClusterUnavailableError):
                    await client.query(b"k")

    run(scenario())


def test_no_node_reachable_is_definite() -> None:
    async def scenario() -> None:
        async with Client([dead_address(), dead_address()], timeout=0.3, **FAST) as client:
            start = time.monotonic()
            with pytest.raises(ClusterUnavailableError, match="cannot connect"):
                await client.propose(b"x")
            assert 0.28 <= time.monotonic() - start < 1.0

    run(scenario())


def test_refused_handshake_is_definite_and_says_why() -> None:
    async def scenario() -> None:
        async with nodes(1, refuse="cluster id mismatch") as (a,):
            client = Client([a.address], cluster_id="blue", timeout=0.3, rng=NoJitter(), **STEADY)
            async with client:
                with pytest.raises(ClusterUnavailableError, match="cluster id mismatch"):
                    await client.propose(b"x")
            assert a.requests == []
            hello = a.hellos[0]
            assert hello.version == PROTOCOL_VERSION
            assert hello.role is ConnectionRole.CLIENT
            assert hello.cluster_id == "blue"

    run(scenario())


def test_retryable_drop_is_retried_after_a_pause() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):
            busy = status_of(ResponseStatus.DROPPED, "too many uncommitted bytes; retry")
            a.handler = scripted(a, busy, busy)
            async with Client([a.address], **FAST) as client:
                assert await client.propose(b"x") == b"applied:x"
            assert len(a.requests) == 3

    run(scenario())


def test_drop_until_the_deadline_is_definite() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):
            a.handler = scripted(a, *[status_of(ResponseStatus.DROPPED, "disk full")] * 1000)
            client = Client([a.address], timeout=0.3, rng=NoJitter(), **STEADY)
            async with client:
                with pytest.raises(ClusterUnavailableError, match="disk full"):
                    await client.propose(b"x")

    run(scenario())


def test_drop_for_size_is_raised_at_once() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):
            too_big = "command of 99 bytes exceeds max_entry_bytes (10)"
            a.handler = scripted(a, status_of(ResponseStatus.DROPPED, too_big, retryable=False))
            async with Client([a.address], timeout=5, **FAST) as client:
                start = time.monotonic()
                with pytest.raises(ProposalDropped, match="max_entry_bytes"):
                    await client.propose(b"x" * 99)
                assert time.monotonic() - start < 1.0
            assert len(a.requests) == 1

    run(scenario())


def test_indeterminate_answer_is_not_retried_without_sessions() -> None:
    async def scenario() -> None:
        async with nodes(2) as (a, b):
            a.handler = scripted(a, status_of(ResponseStatus.INDETERMINATE, "leadership lost"))
            client = Client([a.address, b.address], timeout=5, sessions=False, **FAST)
            async with client:
                with pytest.raises(IndeterminateError, match="leadership lost"):
                    await client.propose(b"x")
            assert len(a.requests) == 1 and b.requests == []

    run(scenario())


def test_unknown_outcome_stays_unknown_after_later_definite_failures() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):
            not_leader = status_of(ResponseStatus.NOT_LEADER)
            a.handler = scripted(a, status_of(ResponseStatus.INDETERMINATE), *[not_leader] * 1000)
            async with Client([a.address], timeout=0.3, **FAST) as client:
                with pytest.raises(IndeterminateError):
                    await client.propose(b"x")
            assert len(a.requests) > 1

    run(scenario())


def test_no_answer_before_the_deadline_after_sending_is_indeterminate() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):
            a.handler = scripted(a, silent)
            async with Client([a.address], timeout=0.3, **FAST) as client:
                start = time.monotonic()
                with pytest.raises(IndeterminateError, match="deadline"):
                    await client.propose(b"x")
                assert 0.28 <= time.monotonic() - start < 1.0
                # The node was told how long the client waits.
                (req,) = a.requests
                assert req.timeout is not None and 0.2 < req.timeout <= 0.3
                # The connection is still fine for the next request.
                assert await client.propose(b"y") == b"applied:y"
            assert a.connections == 1

    run(scenario())


def test_slow_answer_arriving_after_the_deadline_is_ignored() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):
            late: list[tuple[FakeConn, ClientRequest]] = []

            def hold(conn: FakeConn, req: ClientRequest) -> None:
                late.append((conn, req))

            a.handler = scripted(a, hold)
            async with Client([a.address], timeout=0.2, **FAST) as client:
                with pytest.raises(IndeterminateError):
                    await client.propose(b"slow")
                conn, req = late[0]
                conn.respond(leader_result(req, a))  # after the deadline
                assert await client.propose(b"next") == b"applied:next"

    run(scenario())


def test_connection_closed_after_a_propose_is_indeterminate() -> None:
    async def scenario() -> None:
        async with nodes(2) as (a, b):
            a.handler = scripted(a, hang_up)
            client = Client([a.address, b.address], timeout=5, sessions=False, **FAST)
            async with client:
                with pytest.raises(IndeterminateError, match="broke after it was sent"):
                    await client.propose(b"x")
            assert len(a.requests) == 1 and b.requests == []

    run(scenario())


def test_connection_closed_after_a_query_is_retried() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):
            a.handler = scripted(a, hang_up)
            async with Client([a.address], timeout=5, **FAST) as client:
                assert await client.query(b"k") == b"value:k"
            assert a.connections == 2

    run(scenario())


def test_garbage_from_the_node_closes_that_connection_and_queries_retry() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):
            a.handler = scripted(a, garbage, lambda c, r: c.respond(leader_result(r, a)), garbage)
            async with Client([a.address], timeout=5, sessions=False, **FAST) as client:
                assert await client.query(b"k") == b"value:k"
                with pytest.raises(IndeterminateError, match="protocol error"):
                    await client.propose(b"x")
            assert a.connections == 2

    run(scenario())


def test_silent_query_moves_on_after_attempt_timeout() -> None:
    async def scenario() -> None:
        async with nodes(2) as (a, b):
            a.handler = scripted(a, silent)
            client = Client([a.address, b.address], attempt_timeout=0.2, timeout=5, **FAST)
            start = time.monotonic()
            assert await client.query(b"k") == b"value:k"
            assert 0.18 <= time.monotonic() - start < 1.0
            assert a.requests[0].timeout is not None and a.requests[0].timeout <= 0.2
            await client.close()

    run(scenario())


def test_query_that_cannot_be_answered_in_time_is_definite() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):
            a.handler = scripted(a, *[silent] * 100)
            async with Client([a.address], timeout=0.3, **FAST) as client:
                start = time.monotonic()
                with pytest.raises(ClusterUnavailableError):
                    await client.query(b"k")
                assert 0.28 <= time.monotonic() - start < 1.0

    run(scenario())


def test_a_shorter_deadline_behind_a_longer_one_still_ends_on_time() -> None:
    # One sweep timer per connection, set for the earliest deadline outstanding: a request
    # with a short deadline sent after one with a long deadline must not wait for the
    # longer one's sweep.
    async def scenario() -> None:
        async with nodes(1) as (a,):
            a.handler = scripted(a, *[silent] * 100)
            # A plain write waits for its answer until its own deadline (no attempt timeout).
            async with Client([a.address], timeout=5, sessions=False, **FAST) as client:
                slow = asyncio.ensure_future(client.propose(b"x", timeout=5.0))
                await asyncio.sleep(0.05)  # the first one is sent and waits
                start = time.monotonic()
                with pytest.raises(ClusterUnavailableError):
                    await client.query(b"k", timeout=0.3)
                assert 0.28 <= time.monotonic() - start < 3.0  # not the 5 s of the first
                slow.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await slow

    run(scenario())


def test_query_timeout_answer_is_retried() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):
            a.handler = scripted(a, status_of(ResponseStatus.TIMEOUT))
            async with Client([a.address], **FAST) as client:
                assert await client.query(b"k") == b"value:k"

    run(scenario())


def test_error_answer_raises_remote_protocol_error() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):
            a.handler = scripted(a, status_of(ResponseStatus.ERROR, "bad request: nope"))
            async with Client([a.address], **FAST) as client:
                with pytest.raises(RemoteProtocolError, match="bad request: nope"):
                    await client.propose(b"x")

    run(scenario())


# -- pipelining and cancellation ---------------------------------------------------------------


def test_200_concurrent_proposes_pipelined_on_one_connection_answered_in_reverse() -> None:
    n = 200

    async def scenario() -> None:
        async with nodes(1) as (a,):
            held: list[tuple[FakeConn, ClientRequest]] = []

            async def reverse(conn: FakeConn, req: ClientRequest) -> None:
                if req.op in SESSION_WRITES:
                    conn.respond(leader_result(req, a))
                    return
                held.append((conn, req))
                if len(held) == n:  # all 200 outstanding at once
                    for c, r in reversed(held):
                        c.respond(leader_result(r, a))

            a.handler = reverse
            async with Client([a.address], timeout=10, **FAST) as client:
                commands = [f"cmd-{i}".encode() for i in range(n)]
                results = await asyncio.gather(*(client.propose(c) for c in commands))
                assert results == [b"applied:" + c for c in commands]
            assert a.connections == 1
            assert len({r.id for r in a.requests}) == n

    run(scenario())


def test_writes_after_the_first_do_not_ask_asyncio_for_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client keeps its loop: ``asyncio.get_running_loop()`` costs a getpid system call
    in Python 3.11, and a write used to ask three times."""
    asked = 0
    real = asyncio.get_running_loop

    def counting() -> asyncio.AbstractEventLoop:
        nonlocal asked
        asked += 1
        return real()

    async def scenario() -> None:
        async with nodes(1) as (a,), Client([a.address], timeout=5, **FAST) as client:
            assert await client.propose(b"first") == b"applied:first"
            monkeypatch.setattr(asyncio, "get_running_loop", counting)
            for i in range(20):
                assert await client.propose(b"w%d" % i) == b"applied:w%d" % i
            monkeypatch.undo()

    run(scenario())
    assert asked == 0


def test_cancelled_propose_leaves_the_connection_usable() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):
            held: list[tuple[FakeConn, ClientRequest]] = []
            got_it = asyncio.Event()

            def hold(conn: FakeConn, req: ClientRequest) -> None:
                held.append((conn, req))
                got_it.set()

            a.handler = scripted(a, hold)
            async with Client([a.address], timeout=5, **FAST) as client:
                task = asyncio.create_task(client.propose(b"held"))
                await asyncio.wait_for(got_it.wait(), 2)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert await client.propose(b"next") == b"applied:next"
                # The cancelled request's late answer is ignored.
                conn, req = held[0]
                conn.respond(leader_result(req, a))
                assert await client.query(b"k") == b"value:k"
                assert await client.propose(b"after") == b"applied:after"
            assert a.connections == 1

    run(scenario())


def test_cancelled_while_connecting_does_not_break_other_callers() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):
            a.hello_gate = asyncio.Event()
            async with Client([a.address], timeout=5, **FAST) as client:
                first = asyncio.create_task(client.propose(b"one"))
                second = asyncio.create_task(client.propose(b"two"))
                # Both are now waiting for the one handshake, which the node holds back.
                await asyncio.wait_for(a.accepted.wait(), 2)
                first.cancel()
                a.hello_gate.set()
                assert await asyncio.wait_for(second, 5) == b"applied:two"
                with pytest.raises(asyncio.CancelledError):
                    await first
            assert a.connections == 1

    run(scenario())


def test_close_fails_calls_in_flight_and_refuses_new_ones() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):
            got_it = asyncio.Event()

            def hold(conn: FakeConn, req: ClientRequest) -> None:
                got_it.set()

            a.handler = scripted(a, hold)
            client = Client([a.address], timeout=5, **FAST)
            task = asyncio.create_task(client.propose(b"x"))
            await asyncio.wait_for(got_it.wait(), 2)
            await client.close()
            with pytest.raises(IndeterminateError):
                await asyncio.wait_for(task, 2)
            with pytest.raises(LocalProtocolError):
                await client.propose(b"y")
            await client.close()  # idempotent

    run(scenario())


# -- status, consistency, arguments ------------------------------------------------------------


def test_status_of_the_leader_and_of_a_given_node() -> None:
    async def scenario() -> None:
        async with nodes(2) as (a, b):
            b.handler = follower(b, hint=a)
            async with Client([b.address, a.address], **FAST) as client:
                status = await client.status()
                assert status == fake_status(b, "follower")
                await client.propose(b"x")
                assert (await client.status()).role == "leader"
                assert (await client.status(b.address)).id == 2
            assert [r.op for r in a.requests] == [ClientOp.PROPOSE, ClientOp.STATUS]

    run(scenario())


@pytest.mark.parametrize(
    "result",
    [
        pytest.param(msgspec.msgpack.encode([1, 2]), id="not-a-map"),
        pytest.param(b"\xc1", id="not-msgpack"),
        pytest.param(b"", id="empty"),
        pytest.param(msgspec.msgpack.encode({"id": 1, "role": "leader"}), id="fields-missing"),
    ],
)
def test_status_that_is_not_a_node_status_is_a_protocol_error(result: bytes) -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):

            def weird(conn: FakeConn, req: ClientRequest) -> None:
                conn.respond(answer(req, result=result))

            a.handler = scripted(a, weird)
            async with Client([a.address], **FAST) as client:
                with pytest.raises(RemoteProtocolError, match="malformed status"):
                    await client.status()

    run(scenario())


def test_query_consistency_is_sent_and_checked() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):
            async with Client([a.address], **FAST) as client:
                await client.query(b"k")
                await client.query(b"k", consistency="stale")
                await client.query(b"k", consistency=Consistency.LEASE)
                with pytest.raises(ValueError, match="consistency"):
                    await client.query(b"k", consistency="eventual")
            assert [r.consistency for r in a.requests] == [
                Consistency.LINEARIZABLE,
                Consistency.STALE,
                Consistency.LEASE,
            ]

    run(scenario())


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ([], {}),
        (["nohost"], {}),
        (["h:99999"], {}),
        (["h:1"], {"timeout": 0}),
        (["h:1"], {"backoff_initial": 0.5, "backoff_max": 0.1}),
    ],
    ids=["empty", "no-port", "bad-port", "zero-timeout", "backoff-max-below-initial"],
)
def test_bad_arguments_are_refused(args: list[str], kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Client(args, **kwargs)


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_address("[::1]:8080") == ("::1", 8080)
    assert parse_address("node-1.local:9") == ("node-1.local", 9)


# -- SyncClient --------------------------------------------------------------------------------


@contextlib.contextmanager
def nodes_in_thread(n: int) -> Iterator[list[FakeNode]]:
    """Fake nodes served by an event loop in another thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fakes = [FakeNode(i + 1) for i in range(n)]
    try:
        for fake in fakes:
            asyncio.run_coroutine_threadsafe(fake.start(), loop).result(5)
        yield fakes
    finally:
        for fake in fakes:
            asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_sync_client_from_plain_code() -> None:
    with nodes_in_thread(2) as (a, b):
        b.handler = follower(b, hint=a)
        with SyncClient([b.address], timeout=5, **FAST) as client:
            assert client.propose(b"x") == b"applied:x"
            assert client.leader_address == a.address
            assert client.query(b"k") == b"value:k"
            assert client.status(b.address).role == "follower"
        with pytest.raises(LocalProtocolError):
            client.propose(b"y")
        client.close()  # idempotent


def test_sync_client_reports_typed_errors() -> None:
    client = SyncClient([dead_address()], timeout=0.3, **FAST)
    with client, pytest.raises(ClusterUnavailableError):
        client.propose(b"x")


def test_sync_client_from_many_threads_at_once() -> None:
    with nodes_in_thread(1) as (a,), SyncClient([a.address], timeout=5, **FAST) as client:

        def work(k: int) -> list[bytes]:
            return [client.propose(f"{k}-{i}".encode()) for i in range(20)]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(work, range(8), timeout=20))
        assert results == [[f"applied:{k}-{i}".encode() for i in range(20)] for k in range(8)]
        assert a.connections == 1


def test_sync_client_in_a_thread_while_another_event_loop_runs() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):  # served by this running loop

            def work() -> tuple[bytes, bytes]:
                with SyncClient([a.address], timeout=5, **FAST) as client:
                    return client.propose(b"x"), client.query(b"k")

            assert await asyncio.wait_for(asyncio.to_thread(work), 10) == (
                b"applied:x",
                b"value:k",
            )

    run(scenario())


def test_sync_client_called_inside_a_running_event_loop() -> None:
    with nodes_in_thread(1) as (a,):

        async def scenario() -> bytes:
            # Blocks this loop for the call, but works: the client has its own loop.
            with SyncClient([a.address], timeout=5, **FAST) as client:
                return client.propose(b"x")

        assert run(scenario()) == b"applied:x"
