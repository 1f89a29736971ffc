"""ClientService: the node's side of the client protocol.

The transport hands every :class:`~raftpy.transport.protocol.ClientRequest` to
:meth:`ClientService.handle` with the connection to answer on. Each request gets exactly one
:class:`~raftpy.transport.protocol.ClientResponse`: ``STATUS`` at once, ``PROPOSE`` and
``QUERY`` when their future resolves (or at once when the node refuses them), ``SNAPSHOT`` when
the snapshot is written, ``MEMBERS`` at once, and the membership changes (``ADD_MEMBER``,
``PROMOTE``, ``REMOVE_MEMBER``, ``TRANSFER_LEADER``) when the node's coroutine ends. Which status
an error becomes is :mod:`raftpy.outcomes`' business, so the client reads it back as the same
error. A change the membership rules refuse (:class:`~raftpy.errors.ConfChangeError`) is a
definite ``DROPPED`` that retrying cannot fix; a request whose ``data`` is not a valid
:class:`~raftpy.transport.protocol.MemberRequest` fails alone with ``ERROR``.

Client sessions (Thesis §6.3): ``OPEN_SESSION``, ``KEEP_ALIVE`` and ``CLOSE_SESSION`` go to
the node's session methods and are answered when their entry is applied (``OPEN_SESSION``
with a :class:`~raftpy.transport.protocol.SessionGranted`); a ``PROPOSE`` that names a
session is submitted with its ``(session, seq, ack)``, so the node answers a resent write
from its session table. A session the cluster does not know is ``SESSION_EXPIRED``. Session
fields that do not fit the op (:func:`~raftpy.transport.protocol.session_fields_problem`)
fail that request alone with ``ERROR``, before the node sees it.

An exception that is not a raftpy error comes from the user's state machine (``apply``,
``query``, ``prepare_snapshot``, ``snapshot``): it fails that one request with ``ERROR``,
naming the exception's type and message, and ``retryable`` false, since the same request
would raise again (README.md, "Failures").
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol, runtime_checkable

import msgspec

from raftpy.core.messages import ConfState, SnapshotMeta
from raftpy.errors import (
    ConfChangeError,
    IndeterminateError,
    NotLeaderError,
    ProposalDropped,
    RaftError,
    RemoteProtocolError,
)
from raftpy.node.requests import Answered
from raftpy.outcomes import response_for_error
from raftpy.transport.address import parse_address
from raftpy.transport.base import ClientConnectionLike
from raftpy.transport.protocol import (
    MEMBERSHIP_CHANGES,
    ClientOp,
    ClientRequest,
    ClientResponse,
    Consistency,
    MemberRequest,
    Members,
    ResponseStatus,
    SessionGranted,
    SnapshotTaken,
    decode_member_request,
    session_fields_problem,
)


class ServedNode(Protocol):
    """What the service needs from the node it serves (:class:`~raftpy.node.RaftNode`)."""

    def submit(
        self,
        command: bytes,
        timeout: float | None = None,
        *,
        on_done: Answered | None = None,
    ) -> asyncio.Future[bytes]:
        """Queue a command; raises a RaftError at once when the node refuses it. The node
        calls ``on_done`` with the future the moment it resolves it."""
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

    @property
    def node_id(self) -> int:
        """This node's id."""
        ...

    @property
    def leader_id(self) -> int | None:
        """The leader this node knows of (``None``: none)."""
        ...


class Grant(Protocol):
    """A session the node opened (:class:`raftpy.node.sessions.SessionGrant`)."""

    @property
    def id(self) -> int: ...

    @property
    def timeout(self) -> float: ...


@runtime_checkable
class SessionNode(ServedNode, Protocol):
    """A served node that keeps client sessions (:class:`~raftpy.node.RaftNode`; the service
    answers session requests with ``ERROR`` for a node without these methods)."""

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
        """Queue a command, deduplicated by its ``(session, seq)`` when ``session`` is set."""
        ...

    async def open_session(self, timeout: float | None = None) -> Grant:
        """Open a session through the log (leader only); its grant once applied."""
        ...

    async def keep_alive(self, session: int, ack: int, timeout: float | None = None) -> None:
        """Keep ``session`` alive, acknowledging results below ``ack``."""
        ...

    async def close_session(self, session: int, timeout: float | None = None) -> None:
        """End ``session``."""
        ...


@runtime_checkable
class MembershipNode(ServedNode, Protocol):
    """A served node that also changes its membership (:class:`~raftpy.node.RaftNode`; the
    service answers membership requests with ``ERROR`` for a node without these methods)."""

    def members(self) -> ConfState:
        """The membership in force on this node (the latest in its log, Thesis §4.1)."""
        ...

    def membership_index(self) -> int:
        """The log index of that membership (0: a new cluster's bootstrap membership)."""
        ...

    async def add_member(
        self,
        node_id: int,
        address: str,
        voter: bool = False,
        *,
        force: bool = False,
        timeout: float | None = None,
    ) -> ConfState:
        """Add a member (a learner unless ``voter``); the membership once committed."""
        ...

    async def promote(
        self, node_id: int, *, force: bool = False, timeout: float | None = None
    ) -> ConfState:
        """Make a learner a voter; the membership once committed."""
        ...

    async def remove_member(
        self, node_id: int, *, force: bool = False, timeout: float | None = None
    ) -> ConfState:
        """Remove a member; the membership once committed."""
        ...

    async def transfer_leadership(self, node_id: int, *, timeout: float | None = None) -> None:
        """Hand leadership to ``node_id``; returns once it leads."""
        ...


class ClientService:
    """Answers client requests on behalf of ``node``."""

    def __init__(self, node: ServedNode) -> None:
        self._node = node
        # Whether the node keeps sessions, checked at the first session request (not here: the
        # node builds its service before all its attributes exist) and remembered, since an
        # isinstance against a runtime protocol costs about 20 us, as much as serving a write.
        self._session_node: SessionNode | None = None
        self._session_checked = False
        # The loop keeps only weak references to tasks: hold them until they end.
        self._tasks: set[asyncio.Task[Any]] = set()
        self.answered: dict[tuple[ClientOp, ResponseStatus], int] = {}
        """Requests answered, by op and outcome (read by :mod:`raftpy.node.metrics`)."""

    def _respond(self, conn: ClientConnectionLike, op: ClientOp, response: ClientResponse) -> None:
        """Send ``response`` to a request of ``op`` and count it: every answer passes here."""
        key = (op, response.status)
        answered = self.answered
        answered[key] = answered.get(key, 0) + 1
        conn.respond(response)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def handle(self, conn: ClientConnectionLike, req: ClientRequest) -> None:
        """Serve ``req``; the answer goes to ``conn``, now or when the request resolves."""
        problem = session_fields_problem(req)
        if problem is not None:
            # The request's own fault: it fails alone, and the same request would fail again.
            self._respond(conn, req.op, _refuse(req.id, f"bad session fields: {problem}"))
            return
        op = req.op

        def answer(f: asyncio.Future[bytes]) -> None:
            self._respond(conn, op, _future_response(req.id, f))

        try:
            if op is _PROPOSE:  # nearly every request: tested first, on a module constant
                # The node answers from its apply step (on_done), not a loop pass later:
                # the answer leaves before the AppendEntries that carry the new commit index.
                if req.session:
                    sessions = self._sessions()
                    if sessions is None:
                        self._respond(conn, op, self._no_sessions(req))
                        return
                    sessions.submit(
                        req.data,
                        req.timeout,
                        session=req.session,
                        seq=req.seq,
                        ack=req.ack,
                        on_done=answer,
                    )
                else:
                    self._node.submit(req.data, req.timeout, on_done=answer)
                return
            fut = self._serve_other(conn, req)
            if fut is None:
                return  # answered, or answered when its task ends
        except RaftError as exc:
            self._respond(conn, op, response_for_error(req.id, exc))
            return
        fut.add_done_callback(answer)

    def _sessions(self) -> SessionNode | None:
        """The node, if it keeps sessions (checked at the first session request)."""
        if not self._session_checked:
            self._session_checked = True
            node = self._node
            self._session_node = node if isinstance(node, SessionNode) else None
        return self._session_node

    def _no_sessions(self, req: ClientRequest) -> ClientResponse:
        return _refuse(req.id, f"node {self._node.node_id} does not serve sessions")

    def _serve_other(
        self, conn: ClientConnectionLike, req: ClientRequest
    ) -> asyncio.Future[bytes] | None:
        """Serve a request other than ``PROPOSE``: the future of a query (the caller answers
        when it resolves), or ``None`` when it was answered or will be by its own task.
        Raises a RaftError the caller answers with."""
        node = self._node
        op = req.op
        if op is ClientOp.STATUS:
            data = msgspec.msgpack.encode(node.status())
            self._respond(conn, op, ClientResponse(req.id, _OK, data))
            return None
        if op is ClientOp.SNAPSHOT:
            task = self._spawn(node.snapshot())
            task.add_done_callback(lambda t: self._respond(conn, op, _snapshot_response(req.id, t)))
            return None
        if op is ClientOp.MEMBERS or op in MEMBERSHIP_CHANGES:
            self._membership(conn, req)
            return None
        if op in _SESSION_REQUESTS:
            sessions = self._sessions()
            if sessions is None:
                self._respond(conn, op, self._no_sessions(req))
                return None
            session_task = self._spawn(_session_op(sessions, req))
            session_task.add_done_callback(
                lambda t: self._respond(conn, op, _session_response(req.id, t))
            )
            return None
        return node.submit_query(req.data, req.consistency, req.timeout)

    def _membership(self, conn: ClientConnectionLike, req: ClientRequest) -> None:
        """Serve a ``MEMBERS`` request at once, or start a membership change."""
        node = self._node
        if not isinstance(node, MembershipNode):
            self._respond(
                conn,
                req.op,
                _refuse(req.id, f"node {node.node_id} does not serve membership requests"),
            )
            return
        if req.op is ClientOp.MEMBERS:
            self._respond(
                conn, req.op, ClientResponse(req.id, ResponseStatus.OK, _members(node, req))
            )
            return
        try:
            change = _member_request(req)
        except RemoteProtocolError as exc:
            # The request's own fault: it fails alone, and the same bytes would fail again.
            self._respond(conn, req.op, _refuse(req.id, str(exc)))
            return
        task = self._spawn(_change(node, req, change))
        task.add_done_callback(lambda t: self._respond(conn, req.op, _change_response(req.id, t)))


_SESSION_REQUESTS = frozenset({ClientOp.OPEN_SESSION, ClientOp.KEEP_ALIVE, ClientOp.CLOSE_SESSION})
# Read on every request: in Python 3.11 ``ClientOp.PROPOSE`` costs ~0.1 us (EnumType's
# __getattr__ sends every class attribute lookup through a Python-level hook), a global ~0.01.
_PROPOSE = ClientOp.PROPOSE
_OK = ResponseStatus.OK


async def _session_op(node: SessionNode, req: ClientRequest) -> bytes:
    """Carry out one session request; its result, encoded."""
    if req.op is ClientOp.OPEN_SESSION:
        grant = await node.open_session(req.timeout)
        return msgspec.msgpack.encode(SessionGranted(session=grant.id, timeout=grant.timeout))
    if req.op is ClientOp.KEEP_ALIVE:
        await node.keep_alive(req.session, req.ack, req.timeout)
    else:
        await node.close_session(req.session, req.timeout)
    return b""


def _session_response(request_id: int, task: asyncio.Task[bytes]) -> ClientResponse:
    if task.cancelled():
        # Its entry may have been appended before the node stopped waiting for it.
        return response_for_error(request_id, IndeterminateError("cancelled"))
    exc = task.exception()
    if exc is not None:
        return _error_response(request_id, exc, "the node failed the session request:")
    return ClientResponse(request_id, ResponseStatus.OK, task.result())


def _refuse(request_id: int, message: str) -> ClientResponse:
    return ClientResponse(request_id, ResponseStatus.ERROR, message=message, retryable=False)


def _members(node: MembershipNode, req: ClientRequest) -> bytes:
    """The membership this node sees; unless the request accepts a stale view, only the
    leader answers (the newest membership is the latest in the leader's log)."""
    conf = node.members()
    leader = node.leader_id
    if req.consistency is not Consistency.STALE and leader != node.node_id:
        address = None if leader is None else conf.address_map().get(leader)
        raise NotLeaderError(leader, address)
    return _encode_members(conf, node)


async def _change(node: MembershipNode, req: ClientRequest, change: MemberRequest) -> bytes:
    """Carry out one membership request; the membership after it, encoded."""
    timeout = req.timeout
    if req.op is ClientOp.ADD_MEMBER:
        assert change.address is not None  # checked by _member_request
        conf = await node.add_member(
            change.node_id, change.address, change.voter, force=change.force, timeout=timeout
        )
    elif req.op is ClientOp.PROMOTE:
        conf = await node.promote(change.node_id, force=change.force, timeout=timeout)
    elif req.op is ClientOp.REMOVE_MEMBER:
        conf = await node.remove_member(change.node_id, force=change.force, timeout=timeout)
    else:
        await node.transfer_leadership(change.node_id, timeout=timeout)
        conf = node.members()
    return _encode_members(conf, node)


def _encode_members(conf: ConfState, node: MembershipNode) -> bytes:
    members = Members.from_conf(
        conf, leader_id=node.leader_id, node_id=node.node_id, index=node.membership_index()
    )
    return msgspec.msgpack.encode(members)


def _member_request(req: ClientRequest) -> MemberRequest:
    """The request's :class:`MemberRequest`, checked; RemoteProtocolError if it is not one."""
    change = decode_member_request(req.data)
    if req.op is ClientOp.ADD_MEMBER:
        if change.address is None:
            raise RemoteProtocolError("adding a member needs its address")
        try:
            parse_address(change.address)
        except ValueError as exc:
            raise RemoteProtocolError(f"bad member address: {exc}") from None
    return change


def _change_response(request_id: int, task: asyncio.Task[bytes]) -> ClientResponse:
    if task.cancelled():
        # The change may have been appended before the node stopped waiting for it.
        return response_for_error(request_id, IndeterminateError("cancelled"))
    exc = task.exception()
    if isinstance(exc, ConfChangeError):
        # Refused by the membership rules before anything was appended: definite, and the
        # same change would be refused again (unless forced, or once a learner caught up).
        exc = ProposalDropped(str(exc), retryable=False)
    if exc is not None:
        return _error_response(request_id, exc, "the node failed the change:")
    return ClientResponse(request_id, ResponseStatus.OK, task.result())


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
    return ClientResponse(request_id, _OK, fut.result())


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
