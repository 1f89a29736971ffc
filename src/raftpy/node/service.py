"""ClientService: the node's side of the client protocol.

The transport hands every :class:`~raftpy.transport.protocol.ClientRequest` to
:meth:`ClientService.handle` with the connection to answer on. Each request gets exactly one
:class:`~raftpy.transport.protocol.ClientResponse`: ``STATUS`` at once, ``PROPOSE`` and
``QUERY`` when their future resolves (or at once when the node refuses them), ``SNAPSHOT`` when
the snapshot is written. Which status an error becomes is :mod:`raftpy.outcomes`' business, so
the client reads it back as the same error.

An exception that is not a raftpy error comes from the user's state machine (``apply``,
``query``, ``prepare_snapshot``, ``snapshot``): it fails that one request with ``ERROR``,
naming the exception's type and message, and ``retryable`` false, since the same request
would raise again (README.md, "Failures").
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import msgspec

from raftpy.core.messages import SnapshotMeta
from raftpy.errors import IndeterminateError, RaftError
from raftpy.outcomes import response_for_error
from raftpy.transport.base import ClientConnectionLike
from raftpy.transport.protocol import (
    ClientOp,
    ClientRequest,
    ClientResponse,
    Consistency,
    ResponseStatus,
    SnapshotTaken,
)


class ServedNode(Protocol):
    """What the service needs from the node it serves (:class:`~raftpy.node.RaftNode`)."""

    def submit(self, command: bytes, timeout: float | None = None) -> asyncio.Future[bytes]:
        """Queue a command; raises a RaftError at once when the node refuses it."""
        ...

    def submit_query(
        self, query: bytes, consistency: str | Consistency, timeout: float | None = None
    ) -> asyncio.Future[bytes]:
        """Queue a read; raises a RaftError at once when the node refuses it."""
        ...

    def status(self) -> object:
        """The node's status report, sent to the client as msgpack."""
        ...

    async def snapshot(self) -> SnapshotMeta:
        """Take a snapshot now; its metadata."""
        ...


class ClientService:
    """Answers client requests on behalf of ``node``."""

    def __init__(self, node: ServedNode) -> None:
        self._node = node
        # The loop keeps only weak references to tasks: hold snapshot tasks until they end.
        self._tasks: set[asyncio.Task[SnapshotMeta]] = set()

    def handle(self, conn: ClientConnectionLike, req: ClientRequest) -> None:
        """Serve ``req``; the answer goes to ``conn``, now or when the request resolves."""
        node = self._node
        try:
            if req.op is ClientOp.STATUS:
                data = msgspec.msgpack.encode(node.status())
                conn.respond(ClientResponse(req.id, ResponseStatus.OK, data))
                return
            if req.op is ClientOp.SNAPSHOT:
                task = asyncio.get_running_loop().create_task(node.snapshot())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                task.add_done_callback(lambda t: conn.respond(_snapshot_response(req.id, t)))
                return
            if req.op is ClientOp.PROPOSE:
                fut = node.submit(req.data, req.timeout)
            else:
                fut = node.submit_query(req.data, req.consistency, req.timeout)
        except RaftError as exc:
            conn.respond(response_for_error(req.id, exc))
            return
        fut.add_done_callback(lambda f: conn.respond(_future_response(req.id, f)))


def _snapshot_response(request_id: int, task: asyncio.Task[SnapshotMeta]) -> ClientResponse:
    if task.cancelled():
        return ClientResponse(request_id, ResponseStatus.ERROR, message="snapshot cancelled")
    exc = task.exception()
    if exc is not None:
        # Not only the state machine's snapshot() or prepare_snapshot(): the file may fail.
        return _error_response(request_id, exc, "the snapshot failed:")
    meta = task.result()
    data = msgspec.msgpack.encode(SnapshotTaken(meta.index, meta.term))
    return ClientResponse(request_id, ResponseStatus.OK, data)


def _future_response(request_id: int, fut: asyncio.Future[bytes]) -> ClientResponse:
    if fut.cancelled():
        # A cancelled proposal may have been appended already.
        return response_for_error(request_id, IndeterminateError("cancelled"))
    exc = fut.exception()
    if exc is not None:
        return _error_response(request_id, exc, "the state machine raised")
    return ClientResponse(request_id, ResponseStatus.OK, fut.result())


def _error_response(request_id: int, exc: BaseException, what: str) -> ClientResponse:
    """The answer to a request that failed with ``exc``; ``what`` says who raised an
    exception that is not a raftpy error."""
    if isinstance(exc, RaftError):
        return response_for_error(request_id, exc)
    # The same request would raise again: retrying cannot help.
    return ClientResponse(
        request_id,
        ResponseStatus.ERROR,
        message=f"{what} {type(exc).__name__}: {exc}",
        retryable=False,
    )
