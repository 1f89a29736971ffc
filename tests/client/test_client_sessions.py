"""The client's sessions against fake nodes: one session opened lazily and shared, writes
numbered, the ack the lowest outstanding seq, the same (session, seq) resent through every
unknown outcome under one deadline, SESSION_EXPIRED definite only when no earlier attempt may
have been appended, keep-alives while idle, and the session closed on close().

The fakes (``tests.client.test_client``) do not deduplicate: these tests check what the
client sends. That a resent write is applied once is tested against real nodes
(``tests/node/test_sessions_client.py``, ``tests/examples``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from raftpy.client import Client, SyncClient
from raftpy.errors import (
    ClusterUnavailableError,
    IndeterminateError,
    LocalProtocolError,
    ProposalDropped,
    SessionExpiredError,
)
from raftpy.transport.protocol import ClientOp, ClientRequest, ResponseStatus
from tests.client.test_client import (
    FAST,
    FakeConn,
    FakeNode,
    answer,
    follower,
    hang_up,
    leader_result,
    nodes,
    nodes_in_thread,
    run,
    scripted,
    silent,
    status_of,
)

pytestmark = pytest.mark.timeout(60)


def fields(reqs: list[ClientRequest]) -> list[tuple[int, int, int]]:
    return [(r.session, r.seq, r.ack) for r in reqs]


def redirect_to(leader: FakeNode) -> Callable[[FakeConn, ClientRequest], None]:
    """A scripted action: "not the leader; ``leader`` is"."""

    def not_leader(conn: FakeConn, req: ClientRequest) -> None:
        conn.respond(
            answer(
                req,
                ResponseStatus.NOT_LEADER,
                leader_id=leader.node_id,
                leader_address=leader.address,
            )
        )

    return not_leader


def held_writes(node: FakeNode) -> list[tuple[FakeConn, ClientRequest]]:
    """Make ``node`` grant sessions but hold every write until the test answers it."""
    held: list[tuple[FakeConn, ClientRequest]] = []

    async def handle(conn: FakeConn, req: ClientRequest) -> None:
        if req.op is ClientOp.PROPOSE:
            held.append((conn, req))
        else:
            conn.respond(leader_result(req, node))

    node.handler = handle
    return held


async def wait_for(condition: object, limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


# -- opening and numbering ----------------------------------------------------------------


def test_one_session_opened_lazily_and_writes_numbered_from_one() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):
            async with Client([a.address], **FAST) as client:
                assert await client.query(b"k") == b"value:k"
                assert client.session_id is None and a.session_requests == []  # reads need none
                for i in range(3):
                    assert await client.propose(b"w%d" % i) == b"applied:w%d" % i
                assert client.session_id == 101
            (opened, closed) = a.session_requests
            assert opened.op is ClientOp.OPEN_SESSION and opened.session == 0
            # Each write acknowledges everything before it: nothing else was outstanding.
            assert fields(a.ops(ClientOp.PROPOSE)) == [(101, 1, 1), (101, 2, 2), (101, 3, 3)]
            assert (closed.op, closed.session) == (ClientOp.CLOSE_SESSION, 101)

    run(scenario())


def test_concurrent_first_writes_share_one_opening() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,), Client([a.address], **FAST) as client:
            results = await asyncio.gather(*(client.propose(b"%d" % i) for i in range(20)))
            assert results == [b"applied:%d" % i for i in range(20)]
            assert [r.op for r in a.session_requests] == [ClientOp.OPEN_SESSION]
            assert sorted(r.seq for r in a.requests) == list(range(1, 21))
            assert {r.session for r in a.requests} == {101}

    run(scenario())


def test_ack_is_the_lowest_outstanding_seq() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,), Client([a.address], timeout=5, **FAST) as client:
            held = held_writes(a)
            first = asyncio.create_task(client.propose(b"one"))
            await wait_for(lambda: len(held) == 1)
            second = asyncio.create_task(client.propose(b"two"))
            await wait_for(lambda: len(held) == 2)
            conn, req = held[1]
            conn.respond(leader_result(req, a))
            assert await second == b"applied:two"
            # One is still outstanding: later writes must not acknowledge it.
            third = asyncio.create_task(client.propose(b"three"))
            await wait_for(lambda: len(held) == 3)
            for conn, req in (held[0], held[2]):
                conn.respond(leader_result(req, a))
            assert (await first, await third) == (b"applied:one", b"applied:three")
            a.handler = scripted(a)
            await client.propose(b"four")
            assert fields(a.requests) == [(101, 1, 1), (101, 2, 1), (101, 3, 1), (101, 4, 4)]

    run(scenario())


def test_a_resent_write_carries_the_current_ack_never_above_its_own_seq() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,), Client([a.address], timeout=5, **FAST) as client:
            held = held_writes(a)
            first = asyncio.create_task(client.propose(b"one"))
            await wait_for(lambda: len(held) == 1)
            second = asyncio.create_task(client.propose(b"two"))
            await wait_for(lambda: len(held) == 2)
            # Write 1 ends first; write 2's answer is lost: it is resent acknowledging 1.
            held[0][0].respond(leader_result(held[0][1], a))
            assert await first == b"applied:one"
            a.handler = scripted(a)
            conn, req = held[1]
            conn.respond(answer(req, ResponseStatus.INDETERMINATE, message="leadership lost"))
            assert await second == b"applied:two"
            assert fields(a.requests) == [(101, 1, 1), (101, 2, 1), (101, 2, 2)]

    run(scenario())


def test_a_cancelled_write_stops_holding_the_ack_back() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,), Client([a.address], timeout=5, **FAST) as client:
            held = held_writes(a)
            task = asyncio.create_task(client.propose(b"one"))
            await wait_for(lambda: len(held) == 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            a.handler = scripted(a)
            await client.propose(b"two")
            assert fields(a.requests) == [(101, 1, 1), (101, 2, 2)]

    run(scenario())


# -- resending the same (session, seq) --------------------------------------------------------


def test_same_session_and_seq_resent_through_every_unknown_outcome() -> None:
    async def scenario() -> None:
        async with nodes(2) as (a, b):
            indeterminate = status_of(ResponseStatus.INDETERMINATE, "leadership lost")

            # a: answer lost with the connection, then INDETERMINATE, then silence (the
            # attempt times out), then "not the leader, b is"; b answers.
            a.handler = scripted(a, hang_up, indeterminate, silent, redirect_to(b))
            client = Client([a.address], timeout=10, attempt_timeout=0.3, **FAST)
            async with client:
                start = time.monotonic()
                assert await client.propose(b"x") == b"applied:x"
                assert time.monotonic() - start < 5
            writes = a.ops(ClientOp.PROPOSE) + b.ops(ClientOp.PROPOSE)
            assert len(a.ops(ClientOp.PROPOSE)) == 4 and len(b.ops(ClientOp.PROPOSE)) == 1
            assert set(fields(writes)) == {(101, 1, 1)}
            assert {r.data for r in writes} == {b"x"}
            # Each attempt was told only what is left of the one deadline.
            timeouts = [r.timeout for r in writes]
            assert all(t is not None and t <= 10 for t in timeouts)

    run(scenario())


def test_a_write_to_the_known_leader_follows_its_first_answer_like_any_attempt() -> None:
    # Once the leader is known, a write's first attempt goes out before the call's retry
    # state exists (the client's fast path); its answer must still be judged as Call.run
    # judges any: a redirect is followed with the same (session, seq), a refusal that retrying
    # cannot help ends the write at once, definitely.
    async def scenario() -> None:
        async with nodes(2) as (a, b):
            client = Client([a.address], timeout=5, **FAST)
            async with client:
                assert await client.propose(b"one") == b"applied:one"
                assert client.leader_address == a.address

                a.handler = scripted(a, redirect_to(b))
                assert await client.propose(b"two") == b"applied:two"
                assert client.leader_address == b.address
                b.handler = scripted(b, status_of(ResponseStatus.DROPPED, "too big", False))
                with pytest.raises(ProposalDropped, match="too big") as info:
                    await client.propose(b"three")
                assert not info.value.retryable
            assert fields(a.ops(ClientOp.PROPOSE)) == [(101, 1, 1), (101, 2, 2)]
            assert fields(b.ops(ClientOp.PROPOSE)) == [(101, 2, 2), (101, 3, 3)]

    run(scenario())


def test_without_sessions_a_write_to_the_known_leader_is_never_resent() -> None:
    # The fast path serves writes without a session too: its first attempt's unknown
    # outcome must end the write (IndeterminateError), never be resent.
    async def scenario() -> None:
        async with nodes(1) as (a,):
            client = Client([a.address], timeout=5, sessions=False, **FAST)
            async with client:
                assert await client.propose(b"one") == b"applied:one"
                assert client.leader_address == a.address
                a.handler = scripted(a, hang_up)
                with pytest.raises(IndeterminateError, match="broke after it was sent"):
                    await client.propose(b"two")
                assert await client.propose(b"three") == b"applied:three"
            assert [r.data for r in a.requests] == [b"one", b"two", b"three"]
            assert fields(a.requests) == [(0, 0, 0)] * 3 and a.session_requests == []

    run(scenario())


def test_unknown_outcomes_until_the_deadline_are_indeterminate() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):
            a.handler = scripted(a, *[status_of(ResponseStatus.INDETERMINATE, "lost")] * 1000)
            async with Client([a.address], timeout=0.3, **FAST) as client:
                start = time.monotonic()
                with pytest.raises(IndeterminateError, match="lost"):
                    await client.propose(b"x")
                assert time.monotonic() - start < 2
            assert len(a.requests) > 1 and set(fields(a.requests)) == {(101, 1, 1)}

    run(scenario())


def test_without_sessions_nothing_is_opened_and_nothing_resent() -> None:
    async def scenario() -> None:
        async with nodes(2) as (a, b):
            a.handler = scripted(a, hang_up)
            client = Client([a.address, b.address], timeout=5, sessions=False, **FAST)
            async with client:
                with pytest.raises(IndeterminateError, match="broke after it was sent"):
                    await client.propose(b"x")
                assert await client.propose(b"y") == b"applied:y"
                assert client.session_id is None
            assert a.session_requests == b.session_requests == []
            assert fields(a.requests + b.requests) == [(0, 0, 0), (0, 0, 0)]

    run(scenario())


# -- expired sessions ----------------------------------------------------------------------


def test_session_expired_on_a_first_attempt_is_definite_and_a_new_session_follows() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,), Client([a.address], timeout=5, **FAST) as client:
            await client.propose(b"one")
            a.handler = scripted(a, status_of(ResponseStatus.SESSION_EXPIRED, "session 101"))
            with pytest.raises(SessionExpiredError, match="session 101"):
                await client.propose(b"two")
            assert client.session_id is None
            assert await client.propose(b"three") == b"applied:three"
            assert client.session_id == 102
            assert fields(a.requests) == [(101, 1, 1), (101, 2, 2), (102, 1, 1)]

    run(scenario())


def test_session_expired_after_definite_failures_only_is_still_definite() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,), Client([a.address], timeout=5, **FAST) as client:
            a.handler = scripted(
                a,
                status_of(ResponseStatus.NOT_LEADER),
                status_of(ResponseStatus.DROPPED, "busy"),
                status_of(ResponseStatus.SESSION_EXPIRED, "gone"),
            )
            with pytest.raises(SessionExpiredError, match="gone"):
                await client.propose(b"x")

    run(scenario())


@pytest.mark.parametrize("first", ["hang-up", "indeterminate", "silent"])
def test_session_expired_after_a_possibly_appended_attempt_is_indeterminate(first: str) -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):
            action = {
                "hang-up": hang_up,
                "indeterminate": status_of(ResponseStatus.INDETERMINATE),
                "silent": silent,
            }[first]
            expired = status_of(ResponseStatus.SESSION_EXPIRED, "gone")
            a.handler = scripted(a, action, expired)
            client = Client([a.address], timeout=5, attempt_timeout=0.2, **FAST)
            async with client:
                # The first attempt may have been applied before the session expired.
                with pytest.raises(IndeterminateError, match="gone"):
                    await client.propose(b"x")
                assert client.session_id is None
                assert await client.propose(b"y") == b"applied:y"
            assert [r.session for r in a.requests] == [101, 101, 102]

    run(scenario())


def test_open_session_refused_everywhere_is_definite_and_sends_no_write() -> None:
    async def scenario() -> None:
        async with nodes(2) as (a, b):
            a.handler = follower(a, hint=None)
            b.handler = follower(b, hint=None)
            async with Client([a.address, b.address], timeout=0.3, **FAST) as client:
                with pytest.raises(ClusterUnavailableError):
                    await client.propose(b"x")
            assert a.requests == b.requests == []

    run(scenario())


def test_open_session_unanswered_is_definite_for_the_write() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):

            async def mute(conn: FakeConn, req: ClientRequest) -> None:
                pass  # the opening may have been applied; the write was never sent

            a.handler = mute
            async with Client([a.address], timeout=0.3, attempt_timeout=0.1, **FAST) as client:
                with pytest.raises(ClusterUnavailableError, match="no session opened"):
                    await client.propose(b"x")
            assert a.requests == [] and len(a.session_requests) > 1

    run(scenario())


def test_a_node_that_cannot_open_sessions_fails_the_write_definitely() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):

            async def no_sessions(conn: FakeConn, req: ClientRequest) -> None:
                if req.op is ClientOp.OPEN_SESSION:
                    message = "node 1 does not serve sessions"
                    conn.respond(answer(req, ResponseStatus.ERROR, message=message))
                else:
                    conn.respond(leader_result(req, a))

            a.handler = no_sessions
            async with Client([a.address], timeout=5, **FAST) as client:
                with pytest.raises(ProposalDropped, match="does not serve sessions") as caught:
                    await client.propose(b"x")
                assert not caught.value.retryable
            assert a.requests == []

    run(scenario())


# -- keep-alive and close -------------------------------------------------------------------


def test_an_idle_session_is_kept_alive_and_acknowledges_its_results() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):
            a.session_timeout = 0.2  # a keep-alive every 50 ms while idle
            async with Client([a.address], timeout=5, **FAST) as client:
                await client.propose(b"x")
                await client.propose(b"y")
                await asyncio.sleep(0.5)
                keep_alives = a.ops(ClientOp.KEEP_ALIVE)
                assert 4 <= len(keep_alives) <= 15
                assert set(fields(keep_alives)) == {(101, 0, 3)}
                # While writes keep coming faster than that, none is needed. A busy machine
                # may still hold the loop for a keep-alive interval (50 ms) between two
                # answers: each such pause allows one keep-alive more, and no others.
                loop = asyncio.get_running_loop()
                before = len(a.ops(ClientOp.KEEP_ALIVE))
                allowed = 1
                last = loop.time()
                for _ in range(20):
                    await client.propose(b"z")
                    now = loop.time()
                    allowed += int((now - last) // 0.05)
                    last = now
                    await asyncio.sleep(0.01)
                assert len(a.ops(ClientOp.KEEP_ALIVE)) - before <= allowed

    run(scenario())


def test_a_keep_alive_answered_session_expired_ends_the_session() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):
            a.session_timeout = 0.2
            expired = asyncio.Event()

            async def handle(conn: FakeConn, req: ClientRequest) -> None:
                if req.op is ClientOp.KEEP_ALIVE and req.session == 101:
                    conn.respond(answer(req, ResponseStatus.SESSION_EXPIRED))
                    expired.set()
                else:
                    conn.respond(leader_result(req, a))

            a.handler = handle
            async with Client([a.address], timeout=5, **FAST) as client:
                await client.propose(b"x")
                await asyncio.wait_for(expired.wait(), 5)
                await wait_for(lambda: client.session_id is None)
                await client.propose(b"y")
                assert client.session_id == 102
            assert [r.session for r in a.requests] == [101, 102]

    run(scenario())


def test_close_closes_the_session_within_a_bound_even_if_unanswered() -> None:
    async def scenario() -> None:
        async with nodes(1) as (a,):
            client = Client([a.address], timeout=30, **FAST)
            await client.propose(b"x")

            async def mute_close(conn: FakeConn, req: ClientRequest) -> None:
                if req.op is not ClientOp.CLOSE_SESSION:
                    conn.respond(leader_result(req, a))

            a.handler = mute_close
            start = time.monotonic()
            await client.close()
            assert time.monotonic() - start < 2.5  # best effort, at most about a second
            assert [(r.op, r.session) for r in a.session_requests][-1] == (
                ClientOp.CLOSE_SESSION,
                101,
            )
            with pytest.raises(LocalProtocolError):
                await client.propose(b"y")

    run(scenario())


def test_sync_client_uses_one_session_and_closes_it() -> None:
    with nodes_in_thread(1) as (a,):
        with SyncClient([a.address], timeout=5, **FAST) as client:
            assert client.propose(b"x") == b"applied:x"
            assert client.propose(b"y") == b"applied:y"
            assert client.session_id == 101
        assert fields(a.requests) == [(101, 1, 1), (101, 2, 2)]
        assert [r.op for r in a.session_requests] == [
            ClientOp.OPEN_SESSION,
            ClientOp.CLOSE_SESSION,
        ]
