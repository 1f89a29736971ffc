"""ClientService against a fake node: every request op gets exactly one response, with the
status raftpy.outcomes gives its error."""

from __future__ import annotations

import asyncio

import msgspec

from raftpy.core.messages import ConfState, SnapshotMeta
from raftpy.errors import NotLeaderError, ProposalDropped
from raftpy.node.service import ClientService
from raftpy.transport.protocol import (
    ClientOp,
    ClientRequest,
    ClientResponse,
    Consistency,
    ResponseStatus,
)


class FakeNode:
    """Answers as told: ``refuse`` is raised at once, otherwise the future in ``futures``."""

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

    def submit(self, command: bytes, timeout: float | None = None) -> asyncio.Future[bytes]:
        self.calls.append(("submit", command, timeout))
        return self._future()

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
