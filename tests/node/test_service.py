"""ClientService against a fake node: every request op gets exactly one response, with the
status raftpy.outcomes gives its error."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import msgspec
import pytest

from raftpy.core.messages import ConfState, MemberAddress, SnapshotMeta
from raftpy.errors import (
    ConfChangeError,
    IndeterminateError,
    LocalProtocolError,
    NotLeaderError,
    ProposalDropped,
    SessionExpiredError,
)
from raftpy.node.requests import Answered
from raftpy.node.service import ClientService, MembershipNode, SessionNode
from raftpy.transport.protocol import (
    ClientOp,
    ClientRequest,
    ClientResponse,
    Consistency,
    MemberRequest,
    Members,
    ResponseStatus,
    SessionGranted,
    decode_members,
    decode_session_granted,
)


class FakeNode:
    """Answers as told: ``refuse`` is raised at once, otherwise the future in ``futures``."""

    node_id = 1
    leader_id: int | None = 1

    def __init__(self) -> None:
        self.refuse: Exception | None = None
        self.futures: list[asyncio.Future[bytes]] = []
        self.calls: list[tuple[object, ...]] = []
        self.snapshot_error: Exception | None = None

    def _future(self) -> asyncio.Future[bytes]:
        if self.refuse is not None:
            raise self.refuse
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        return fut

    def submit(
        self,
        command: bytes,
        timeout: float | None = None,
        *,
        on_done: Answered | None = None,
    ) -> asyncio.Future[bytes]:
        self.calls.append(("submit", command, timeout))
        return self._answered_by(on_done)

    def _answered_by(self, on_done: Answered | None) -> asyncio.Future[bytes]:
        fut = self._future()
        if on_done is not None:  # the real node calls it as it resolves the future
            fut.add_done_callback(on_done)
        return fut

    def submit_query(
        self, query: bytes, consistency: str | Consistency, timeout: float | None = None
    ) -> asyncio.Future[bytes]:
        self.calls.append(("query", query, consistency, timeout))
        return self._future()

    def status(self) -> object:
        return {"id": 1, "role": "leader"}

    async def snapshot(self) -> SnapshotMeta:
        if self.snapshot_error is not None:
            raise self.snapshot_error
        return SnapshotMeta(7, 2, ConfState((1,)))


class Conn:
    def __init__(self) -> None:
        self.answers: list[ClientResponse] = []

    def respond(self, response: ClientResponse) -> None:
        self.answers.append(response)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_status_is_answered_at_once() -> None:
    async def main() -> None:
        conn = Conn()
        ClientService(FakeNode()).handle(conn, ClientRequest(1, ClientOp.STATUS))
        (answer,) = conn.answers
        assert answer.status is ResponseStatus.OK and answer.result is not None
        assert msgspec.msgpack.decode(answer.result) == {"id": 1, "role": "leader"}

    asyncio.run(main())


def test_propose_and_query_are_answered_when_their_future_resolves() -> None:
    async def main() -> None:
        node, conn = FakeNode(), Conn()
        service = ClientService(node)
        service.handle(conn, ClientRequest(1, ClientOp.PROPOSE, b"cmd", timeout=2.0))
        service.handle(conn, ClientRequest(2, ClientOp.QUERY, b"q", Consistency.STALE, timeout=3.0))
        assert node.calls == [("submit", b"cmd", 2.0), ("query", b"q", Consistency.STALE, 3.0)]
        await settle()
        assert conn.answers == []
        node.futures[1].set_result(b"answer")
        node.futures[0].cancel()  # a cancelled proposal may have been appended
        await settle()
        assert [(a.id, a.status, a.result) for a in conn.answers] == [
            (2, ResponseStatus.OK, b"answer"),
            (1, ResponseStatus.INDETERMINATE, None),
        ]

    asyncio.run(main())


def test_a_write_is_answered_the_moment_the_node_resolves_it() -> None:
    """The service hands the node an ``on_done`` and answers from it: the answer is written
    while the node applies, not a loop pass later (before the AppendEntries that carry the new
    commit index leave)."""

    class Node(FakeNode):
        def __init__(self) -> None:
            super().__init__()
            self.done: list[Answered | None] = []

        def submit(
            self,
            command: bytes,
            timeout: float | None = None,
            *,
            on_done: Answered | None = None,
        ) -> asyncio.Future[bytes]:
            self.done.append(on_done)
            return self._future()

    async def main() -> None:
        node, conn = Node(), Conn()
        ClientService(node).handle(conn, ClientRequest(1, ClientOp.PROPOSE, b"cmd"))
        (on_done,) = node.done
        assert on_done is not None
        node.futures[0].set_result(b"applied")
        on_done(node.futures[0])  # as the node does, with no loop pass in between
        assert [(a.id, a.status, a.result) for a in conn.answers] == [
            (1, ResponseStatus.OK, b"applied")
        ]

    asyncio.run(main())


def test_refusals_are_answered_at_once_with_their_status() -> None:
    async def main() -> None:
        node, conn = FakeNode(), Conn()
        node.refuse = NotLeaderError(2, "10.0.0.2:7000")
        ClientService(node).handle(conn, ClientRequest(1, ClientOp.PROPOSE, b"cmd"))
        (answer,) = conn.answers
        assert (answer.status, answer.leader_id, answer.leader_address) == (
            ResponseStatus.NOT_LEADER,
            2,
            "10.0.0.2:7000",
        )

    asyncio.run(main())


def test_snapshot_answers_with_its_index_and_term_or_its_error() -> None:
    async def main() -> None:
        node, conn = FakeNode(), Conn()
        service = ClientService(node)
        service.handle(conn, ClientRequest(1, ClientOp.SNAPSHOT))
        await settle()
        node.snapshot_error = ProposalDropped("node 1 has failed")
        service.handle(conn, ClientRequest(2, ClientOp.SNAPSHOT))
        await settle()
        ok, failed = conn.answers
        assert ok.status is ResponseStatus.OK and ok.result is not None
        assert msgspec.msgpack.decode(ok.result) == {"index": 7, "term": 2}
        assert (failed.id, failed.status) == (2, ResponseStatus.DROPPED)

    asyncio.run(main())


# -- membership --------------------------------------------------------------------------------

CONF = ConfState(
    (1, 2, 3),
    learners=(4,),
    addresses=(
        MemberAddress(1, "10.0.0.1:7000"),
        MemberAddress(2, "10.0.0.2:7000"),
        MemberAddress(3, "10.0.0.3:7000"),
        MemberAddress(4, "10.0.0.4:7000"),
    ),
)


class FakeMemberNode(FakeNode):
    """A FakeNode that also changes members: each change waits for the test to resolve the
    future it leaves in ``changes`` (with the ConfState after it, or an error)."""

    def __init__(self) -> None:
        super().__init__()
        self.conf = CONF
        self.changes: list[asyncio.Future[ConfState]] = []

    def members(self) -> ConfState:
        return self.conf

    def membership_index(self) -> int:
        return 41

    async def _wait(self, *call: object) -> ConfState:
        self.calls.append(call)
        fut: asyncio.Future[ConfState] = asyncio.get_running_loop().create_future()
        self.changes.append(fut)
        return await fut

    async def add_member(
        self,
        node_id: int,
        address: str,
        voter: bool = False,
        *,
        force: bool = False,
        timeout: float | None = None,
    ) -> ConfState:
        return await self._wait("add", node_id, address, voter, force, timeout)

    async def promote(
        self, node_id: int, *, force: bool = False, timeout: float | None = None
    ) -> ConfState:
        return await self._wait("promote", node_id, force, timeout)

    async def remove_member(
        self, node_id: int, *, force: bool = False, timeout: float | None = None
    ) -> ConfState:
        return await self._wait("remove", node_id, force, timeout)

    async def transfer_leadership(self, node_id: int, *, timeout: float | None = None) -> None:
        await self._wait("transfer", node_id, timeout)
        self.leader_id = node_id


def member_request(op: ClientOp, request_id: int = 1, **fields: object) -> ClientRequest:
    return ClientRequest(request_id, op, msgspec.msgpack.encode(fields), timeout=5.0)


def test_the_fake_is_a_membership_node_and_the_plain_fake_is_not() -> None:
    assert isinstance(FakeMemberNode(), MembershipNode)
    assert not isinstance(FakeNode(), MembershipNode)


def test_members_from_the_leader_or_any_node_when_stale() -> None:
    async def main() -> None:
        node, conn = FakeMemberNode(), Conn()
        service = ClientService(node)
        service.handle(conn, ClientRequest(1, ClientOp.MEMBERS))
        node.node_id = 2  # now a follower of 1
        service.handle(conn, ClientRequest(2, ClientOp.MEMBERS, consistency=Consistency.STALE))
        service.handle(conn, ClientRequest(3, ClientOp.MEMBERS))
        ok, stale, redirect = conn.answers
        assert ok.status is ResponseStatus.OK and ok.result is not None
        assert decode_members(ok.result) == Members.from_conf(
            CONF, leader_id=1, node_id=1, index=41
        )
        assert stale.status is ResponseStatus.OK and stale.result is not None
        assert decode_members(stale.result).node_id == 2
        assert (redirect.status, redirect.leader_id, redirect.leader_address) == (
            ResponseStatus.NOT_LEADER,
            1,
            "10.0.0.1:7000",
        )

    asyncio.run(main())


def test_each_change_calls_the_node_and_answers_with_the_membership_after_it() -> None:
    async def main() -> None:
        node, conn = FakeMemberNode(), Conn()
        service = ClientService(node)
        service.handle(
            conn, member_request(ClientOp.ADD_MEMBER, 1, node_id=5, address="h:5", voter=True)
        )
        service.handle(conn, member_request(ClientOp.PROMOTE, 2, node_id=4, force=True))
        service.handle(conn, member_request(ClientOp.REMOVE_MEMBER, 3, node_id=3))
        service.handle(conn, member_request(ClientOp.TRANSFER_LEADER, 4, node_id=2))
        await settle()
        assert node.calls == [
            ("add", 5, "h:5", True, False, 5.0),
            ("promote", 4, True, 5.0),
            ("remove", 3, False, 5.0),
            ("transfer", 2, 5.0),
        ]
        assert conn.answers == []
        after = ConfState((1, 2), addresses=(MemberAddress(1, "10.0.0.1:7000"),))
        for fut in node.changes:
            fut.set_result(after)
        await settle()
        assert [a.status for a in conn.answers] == [ResponseStatus.OK] * 4
        results = {a.id: decode_members(a.result or b"") for a in conn.answers}
        assert results[1].voters == (1, 2)
        # The transfer answers with the membership in force and the new leader.
        assert (results[4].voters, results[4].leader_id) == ((1, 2, 3), 2)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("error", "status", "retryable"),
    [
        (NotLeaderError(3, "10.0.0.3:7000"), ResponseStatus.NOT_LEADER, True),
        (ProposalDropped("a change is pending"), ResponseStatus.DROPPED, True),
        (ConfChangeError("node 4 lags 5000 entries"), ResponseStatus.DROPPED, False),
        (IndeterminateError("leadership lost"), ResponseStatus.INDETERMINATE, True),
        (LocalProtocolError("node is not running"), ResponseStatus.ERROR, True),
        (ValueError("bug"), ResponseStatus.ERROR, False),
        (None, ResponseStatus.INDETERMINATE, True),  # cancelled: may have been appended
    ],
    ids=["not-leader", "dropped", "refused", "indeterminate", "stopped", "bug", "cancelled"],
)
def test_change_errors_map_as_for_proposals(
    error: Exception | None, status: ResponseStatus, retryable: bool
) -> None:
    async def main() -> None:
        node, conn = FakeMemberNode(), Conn()
        ClientService(node).handle(conn, member_request(ClientOp.PROMOTE, node_id=4))
        await settle()
        (fut,) = node.changes
        if error is None:
            fut.cancel()
        else:
            fut.set_exception(error)
        await settle()
        (answer,) = conn.answers
        assert (answer.status, answer.retryable) == (status, retryable)
        if isinstance(error, NotLeaderError):
            assert (answer.leader_id, answer.leader_address) == (3, "10.0.0.3:7000")
        if isinstance(error, ConfChangeError):
            assert answer.message == "node 4 lags 5000 entries"

    asyncio.run(main())


@pytest.mark.parametrize(
    ("op", "data"),
    [
        (ClientOp.ADD_MEMBER, msgspec.msgpack.encode({"node_id": 5})),
        (ClientOp.ADD_MEMBER, msgspec.msgpack.encode({"node_id": 5, "address": "no-port"})),
        (ClientOp.PROMOTE, msgspec.msgpack.encode({"node_id": -1})),
        (ClientOp.REMOVE_MEMBER, b"\xc1"),
        (ClientOp.TRANSFER_LEADER, b""),
    ],
    ids=["add-without-address", "add-bad-address", "negative-id", "not-msgpack", "empty"],
)
def test_bad_request_data_fails_that_request_only(op: ClientOp, data: bytes) -> None:
    async def main() -> None:
        node, conn = FakeMemberNode(), Conn()
        service = ClientService(node)
        service.handle(conn, ClientRequest(1, op, data))
        service.handle(conn, ClientRequest(2, ClientOp.MEMBERS))
        await settle()
        bad, good = conn.answers
        assert (bad.id, bad.status, bad.retryable) == (1, ResponseStatus.ERROR, False)
        assert (good.id, good.status) == (2, ResponseStatus.OK)
        assert node.calls == []

    asyncio.run(main())


def test_a_node_without_membership_methods_fails_those_requests() -> None:
    async def main() -> None:
        conn = Conn()
        service = ClientService(FakeNode())
        service.handle(conn, ClientRequest(1, ClientOp.MEMBERS))
        service.handle(conn, member_request(ClientOp.PROMOTE, 2, node_id=4))
        assert [(a.status, a.retryable) for a in conn.answers] == [
            (ResponseStatus.ERROR, False)
        ] * 2

    asyncio.run(main())


def test_member_request_helper_encodes_a_member_request() -> None:
    req = member_request(ClientOp.PROMOTE, node_id=4)
    assert msgspec.msgpack.decode(req.data, type=MemberRequest) == MemberRequest(node_id=4)


# -- client sessions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    id: int
    timeout: float


class FakeSessionNode(FakeNode):
    """A fake that keeps sessions: each session call is recorded and waits for ``gate``
    (when set), then raises ``session_error`` or answers."""

    def __init__(self) -> None:
        super().__init__()
        self.session_error: Exception | None = None
        self.gate: asyncio.Event | None = None

    def submit(
        self,
        command: bytes,
        timeout: float | None = None,
        *,
        session: int = 0,
        seq: int = 0,
        ack: int = 0,
        on_done: Answered | None = None,
    ) -> asyncio.Future[bytes]:
        self.calls.append(("submit", command, timeout, session, seq, ack))
        return self._answered_by(on_done)

    async def _session_call(self, *call: object) -> None:
        self.calls.append(call)
        if self.gate is not None:
            await self.gate.wait()
        if self.session_error is not None:
            raise self.session_error

    async def open_session(self, timeout: float | None = None) -> Grant:
        await self._session_call("open", timeout)
        return Grant(17, 90.0)

    async def keep_alive(self, session: int, ack: int, timeout: float | None = None) -> None:
        await self._session_call("keep-alive", session, ack, timeout)

    async def close_session(self, session: int, timeout: float | None = None) -> None:
        await self._session_call("close", session, timeout)


def test_session_requests_reach_the_node_and_are_answered_once_applied() -> None:
    async def main() -> None:
        node, conn = FakeSessionNode(), Conn()
        assert isinstance(node, SessionNode) and not isinstance(FakeNode(), SessionNode)
        service = ClientService(node)
        node.gate = asyncio.Event()
        service.handle(conn, ClientRequest(1, ClientOp.OPEN_SESSION, timeout=2.0))
        service.handle(conn, ClientRequest(2, ClientOp.KEEP_ALIVE, session=17, ack=4))
        service.handle(conn, ClientRequest(3, ClientOp.CLOSE_SESSION, session=17, timeout=1.0))
        service.handle(
            conn, ClientRequest(4, ClientOp.PROPOSE, b"w", timeout=2.0, session=17, seq=5, ack=3)
        )
        service.handle(conn, ClientRequest(5, ClientOp.PROPOSE, b"plain"))
        await settle()
        assert conn.answers == []  # nothing answered before it is applied
        assert node.calls == [
            ("submit", b"w", 2.0, 17, 5, 3),
            ("submit", b"plain", None, 0, 0, 0),
            ("open", 2.0),
            ("keep-alive", 17, 4, None),
            ("close", 17, 1.0),
        ]
        node.gate.set()
        node.futures[0].set_result(b"once")
        node.futures[1].set_result(b"too")
        await settle()
        by_id = {a.id: a for a in conn.answers}
        assert sorted(by_id) == [1, 2, 3, 4, 5]
        assert all(a.status is ResponseStatus.OK for a in conn.answers)
        assert decode_session_granted(by_id[1].result or b"") == SessionGranted(17, 90.0)
        assert (by_id[2].result, by_id[3].result, by_id[4].result) == (b"", b"", b"once")

    asyncio.run(main())


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (SessionExpiredError("session 17 expired"), ResponseStatus.SESSION_EXPIRED),
        (NotLeaderError(2, "10.0.0.2:7000"), ResponseStatus.NOT_LEADER),
        (ProposalDropped("busy"), ResponseStatus.DROPPED),
        (IndeterminateError("leadership lost"), ResponseStatus.INDETERMINATE),
    ],
    ids=lambda v: getattr(v, "value", type(v).__name__),
)
def test_session_request_errors_map_to_their_status(
    error: Exception, status: ResponseStatus
) -> None:
    async def main() -> None:
        node, conn = FakeSessionNode(), Conn()
        node.session_error = error
        service = ClientService(node)
        service.handle(conn, ClientRequest(1, ClientOp.OPEN_SESSION))
        service.handle(conn, ClientRequest(2, ClientOp.KEEP_ALIVE, session=3, ack=1))
        await settle()
        assert [(a.id, a.status) for a in conn.answers] == [(1, status), (2, status)]
        # A write's own future failing with it answers the same.
        service.handle(conn, ClientRequest(3, ClientOp.PROPOSE, b"w", session=3, seq=1, ack=1))
        node.futures[0].set_exception(error)
        await settle()
        assert conn.answers[-1].status is status

    asyncio.run(main())


@pytest.mark.parametrize(
    "req",
    [
        ClientRequest(1, ClientOp.PROPOSE, b"w", session=3, seq=0),
        ClientRequest(1, ClientOp.PROPOSE, b"w", session=3, seq=2, ack=3),
        ClientRequest(1, ClientOp.PROPOSE, b"w", seq=2),
        ClientRequest(1, ClientOp.KEEP_ALIVE, ack=1),
        ClientRequest(1, ClientOp.QUERY, b"k", session=3),
    ],
    ids=["seq-0", "ack-above-seq", "seq-without-session", "keep-alive-no-session", "query"],
)
def test_bad_session_fields_fail_that_request_before_the_node_sees_it(req: ClientRequest) -> None:
    async def main() -> None:
        node, conn = FakeSessionNode(), Conn()
        ClientService(node).handle(conn, req)
        (answer,) = conn.answers
        assert (answer.status, answer.retryable) == (ResponseStatus.ERROR, False)
        assert answer.message is not None and "bad session fields" in answer.message
        assert node.calls == []

    asyncio.run(main())


def test_a_node_without_sessions_fails_session_requests_and_serves_plain_writes() -> None:
    async def main() -> None:
        node, conn = FakeNode(), Conn()
        service = ClientService(node)
        service.handle(conn, ClientRequest(1, ClientOp.OPEN_SESSION))
        service.handle(conn, ClientRequest(2, ClientOp.PROPOSE, b"w", session=3, seq=1))
        service.handle(conn, ClientRequest(3, ClientOp.PROPOSE, b"w"))
        assert [(a.id, a.status) for a in conn.answers] == [
            (1, ResponseStatus.ERROR),
            (2, ResponseStatus.ERROR),
        ]
        assert "does not serve sessions" in (conn.answers[0].message or "")
        assert node.calls == [("submit", b"w", None)]

    asyncio.run(main())
