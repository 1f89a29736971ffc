"""Clients for a raftpy cluster: :class:`Client` (asyncio) and :class:`SyncClient` (blocking).

Both start from any list of node addresses, find the leader, follow its redirects, retry with
jittered exponential backoff under one overall deadline, and tell a *definite* failure (the
command did not happen) from an *indeterminate* one (it may have happened). DESIGN §4.

Connections. One TCP connection per node, opened lazily on first use and kept. The first frame
is :class:`~raftpy.transport.protocol.Hello` (role ``CLIENT``); a refused handshake makes that
node unreachable for this attempt. Requests are pipelined: any number may be outstanding on a
connection, each matched to its response by a per-connection ``id``. Requests issued in the
same event-loop iteration are written with one ``write`` call. A connection that breaks fails
its outstanding requests; a proposal that had been written counts as "sent, outcome unknown".

Finding the leader. A call goes first to the last known leader, else to the next address in
rotation. A ``NOT_LEADER`` answer naming the leader's address sends the next attempt there
(the address is added to the known list); without a hint the next address is tried. Moving on
to an address not yet tried is immediate; coming back to one that already failed since the
last pause (a whole round without success, a redirect loop, a leader shedding load) first
sleeps a jittered backoff: ``backoff_initial`` doubling up to ``backoff_max``, each sleep drawn
uniformly from ``[b/2, b]``. Everything happens under one deadline per call (``timeout``); each
request tells the node how much of it remains (``ClientRequest.timeout``) so the node gives up
too.

Outcomes of :meth:`Client.propose`:

- the result of ``StateMachine.apply`` on success;
- :class:`~raftpy.errors.ClusterUnavailableError` when the deadline passed and the command was
  never handed to a node that could have appended it (every attempt was refused, answered
  ``NOT_LEADER`` or ``DROPPED``, or never left this process). Definite: it did not happen;
- :class:`~raftpy.errors.ProposalDropped` at once when the leader refused it for a reason a
  retry cannot fix (an entry larger than the leader accepts). Definite;
- :class:`~raftpy.errors.IndeterminateError` when the command was written to a node and its
  fate is unknown: the node answered ``INDETERMINATE``, the connection broke after the request
  was written, or the deadline passed while waiting for the answer. It may have been applied,
  and may still be applied later;
- :class:`~raftpy.errors.RemoteProtocolError` when the node answered ``ERROR``.

Retried writes. By default a proposal whose outcome became unknown is *not* sent again:
sending it again could apply it twice. With ``retry_indeterminate=True`` the client resends it
until it succeeds or the deadline passes, and **a command resent after an indeterminate
outcome may be applied twice** (or more): use it only for idempotent commands (a ``put`` of
the same value, a ``cas`` whose second application is harmless) until client sessions with
exactly-once semantics land. Even then a call that ends in ``IndeterminateError`` may have
been applied any number of times up to the number of attempts.

Queries (:meth:`Client.query`) and :meth:`Client.status` change nothing, so they are retried on
any failure until the deadline, and one that cannot be answered in time raises
``ClusterUnavailableError``. A single read attempt waits at most ``attempt_timeout`` for its
answer before moving on to another node (so a hung node does not eat the whole deadline);
proposals always wait for their answer until the overall deadline, since giving up early
would only turn a possible success into an unknown outcome.

Cancellation: cancelling a call abandons its request (a late answer is ignored); the
connection stays usable for the other requests on it. A cancelled proposal that had been
written may still be applied.

A :class:`Client` belongs to the event loop it is first used on. :class:`SyncClient` wraps one
for code without an event loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
import weakref
from collections.abc import Coroutine, Sequence
from types import TracebackType
from typing import Any, Final, Self, TypeVar, cast

import msgspec

from raftpy.core.messages import PROTOCOL_VERSION
from raftpy.errors import (
    ClusterUnavailableError,
    IndeterminateError,
    LocalProtocolError,
    ProposalDropped,
    RemoteProtocolError,
)
from raftpy.transport.address import parse_address
from raftpy.transport.codec import DEFAULT_MAX_FRAME_BYTES, FrameDecoder, encode_frame
from raftpy.transport.protocol import (
    ClientOp,
    ClientRequest,
    ClientResponse,
    ConnectionRole,
    Consistency,
    Hello,
    HelloReply,
    ResponseStatus,
    client_decoder,
    encode_frame_payload,
    hello_decoder,
)

__all__ = ["Client", "SyncClient", "parse_address"]

log = logging.getLogger(__name__)

# How often a connection checks its outstanding requests' deadlines.
_SWEEP_INTERVAL: Final = 0.02

_T = TypeVar("_T")


class _ConnectFailed(Exception):
    """Internal: a node could not be reached or refused the handshake. Nothing was sent."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"{address}: {reason}")
        self.address = address
        self.reason = reason


class _ConnectionLost(Exception):
    """Internal: the connection broke while a request was outstanding. ``sent`` says whether
    the request had been written to the socket."""

    def __init__(self, address: str, reason: str, sent: bool) -> None:
        super().__init__(f"{address}: {reason}")
        self.address = address
        self.reason = reason
        self.sent = sent


class _AttemptTimeout(Exception):
    """Internal: no answer before the attempt's deadline."""

    def __init__(self, sent: bool) -> None:
        super().__init__("no answer in time")
        self.sent = sent


class _Slot:
    """One outstanding request on a connection."""

    __slots__ = ("deadline", "frame", "future", "id", "sent")

    def __init__(
        self, rid: int, frame: bytes, future: asyncio.Future[ClientResponse], deadline: float
    ) -> None:
        self.id = rid
        self.frame = frame
        self.future = future
        self.sent = False
        self.deadline = deadline


class _Connection(asyncio.Protocol):
    """A client connection to one node: handshake, pipelined requests, response dispatch."""

    def __init__(self, address: str, loop: asyncio.AbstractEventLoop, max_frame_bytes: int) -> None:
        self.address = address
        self.node_id: int | None = None
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._decoder = FrameDecoder(max_frame_bytes)
        self._hello: asyncio.Future[HelloReply] = loop.create_future()
        # Mark a failed handshake as retrieved even if its opener already gave up.
        self._hello.add_done_callback(_retrieve)
        self._lost: asyncio.Future[None] = loop.create_future()
        self._ready = False
        self._closing = False
        self._reason = "connection closed"
        self._next_id = 0
        self._pending: dict[int, _Slot] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._outbox: list[_Slot] = []
        self._flush_scheduled = False

    @property
    def usable(self) -> bool:
        return self._ready and not self._closing

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            for payload in self._decoder.feed(data):
                self._on_frame(payload)
        except (RemoteProtocolError, msgspec.DecodeError) as exc:
            log.warning("closing connection to %s: bad frame: %s", self.address, exc)
            self.abort(f"protocol error from the node: {exc}")

    def eof_received(self) -> bool | None:
        self._closing = True  # nothing more may be written; connection_lost follows
        self._reason = "the node closed the connection"
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if exc is not None and self._reason == "connection closed":
            self._reason = f"connection lost: {exc}"
        reason = self._reason
        if not self._hello.done():
            self._hello.set_exception(_ConnectFailed(self.address, reason))
        pending, self._pending = self._pending, {}
        self._outbox = []
        for slot in pending.values():
            if not slot.future.done():
                slot.future.set_exception(_ConnectionLost(self.address, reason, slot.sent))
        if not self._lost.done():
            self._lost.set_result(None)

    # -- frames -----------------------------------------------------------------------------

    def _on_frame(self, payload: bytes) -> None:
        if not self._ready:
            hello = hello_decoder.decode(payload)
            if not isinstance(hello, HelloReply):
                raise RemoteProtocolError(f"expected a HelloReply, got {type(hello).__name__}")
            if self._hello.done():
                raise RemoteProtocolError("unexpected frame before the handshake completed")
            self.node_id = hello.node_id
            self._ready = hello.ok
            self._hello.set_result(hello)
            return
        frame = client_decoder.decode(payload)
        if not isinstance(frame, ClientResponse):
            raise RemoteProtocolError(f"expected a ClientResponse, got {type(frame).__name__}")
        slot = self._pending.pop(frame.id, None)
        # No slot: the caller gave up (cancelled or timed out); the late answer is dropped.
        if slot is not None and not slot.future.done():
            slot.future.set_result(frame)

    def _write(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)

    # -- handshake --------------------------------------------------------------------------

    async def handshake(self, cluster_id: str | None) -> HelloReply:
        """Send Hello and wait for the reply (the caller bounds the wait)."""
        hello = Hello(version=PROTOCOL_VERSION, role=ConnectionRole.CLIENT, cluster_id=cluster_id)
        self._write(encode_frame(encode_frame_payload(hello)))
        return await self._hello

    # -- requests ---------------------------------------------------------------------------

    def submit(
        self,
        op: ClientOp,
        data: bytes,
        consistency: Consistency,
        timeout: float,
        deadline: float = math.inf,
    ) -> _Slot:
        """Queue a request for the next flush; raise :class:`_ConnectionLost` (not sent) if
        the connection is already unusable. Past ``deadline`` (loop time) the slot fails with
        :class:`_AttemptTimeout`, checked by one sweep timer per connection."""
        if not self.usable:
            raise _ConnectionLost(self.address, self._reason, sent=False)
        rid = self._next_id
        self._next_id += 1
        payload = encode_frame_payload(ClientRequest(rid, op, data, consistency, timeout))
        slot = _Slot(rid, encode_frame(payload), self._loop.create_future(), deadline)
        self._pending[rid] = slot
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(_SWEEP_INTERVAL, self._sweep)
        self._outbox.append(slot)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return slot

    def _flush(self) -> None:
        """Write every queued request still wanted in one call (one syscall for a burst)."""
        self._flush_scheduled = False
        outbox, self._outbox = self._outbox, []
        if self._closing or self._transport is None or self._transport.is_closing():
            return  # connection_lost fails them as not sent
        frames = []
        for slot in outbox:
            if not slot.future.done():  # done here: abandoned before it left; never sent
                frames.append(slot.frame)
                slot.sent = True
            slot.frame = b""
        if frames:
            self._write(b"".join(frames))

    async def request(
        self, op: ClientOp, data: bytes, consistency: Consistency, deadline: float
    ) -> ClientResponse:
        """One request/response exchange, bounded by ``deadline`` (loop time). Raises
        :class:`_ConnectionLost` or :class:`_AttemptTimeout`, each saying whether the request
        was written."""
        slot = self.submit(op, data, consistency, max(deadline - self._loop.time(), 1e-3), deadline)
        try:
            # No per-request timer: the connection's sweep fails the slot at its deadline
            # (a timer per request cost about a quarter of the client's CPU at load).
            return await slot.future
        finally:
            # Cancelled or timed out: forget the slot so a late answer is dropped. An unsent
            # slot's future is done (cancelled), so _flush will not write it.
            self._pending.pop(slot.id, None)

    def _sweep(self) -> None:
        """Fail every slot past its deadline; re-arm while requests are outstanding."""
        self._sweeper = None
        now = self._loop.time()
        for slot in list(self._pending.values()):
            if slot.deadline <= now and not slot.future.done():
                slot.future.set_exception(_AttemptTimeout(slot.sent))
        if self._pending and not self._closing:
            self._sweeper = self._loop.call_later(_SWEEP_INTERVAL, self._sweep)

    # -- closing ----------------------------------------------------------------------------

    def abort(self, reason: str) -> None:
        """Close at once; outstanding requests fail with ``reason``."""
        if not self._closing:
            self._closing = True
            self._reason = reason
        if self._transport is not None:
            self._transport.abort()
        elif not self._lost.done():
            self.connection_lost(None)

    async def wait_closed(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._lost)
        except TimeoutError:
            log.warning("connection to %s did not close within %ss", self.address, timeout)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _parse_consistency(consistency: str | Consistency) -> Consistency:
    if isinstance(consistency, Consistency):
        return consistency
    try:
        return Consistency(consistency)
    except ValueError:
        choices = ", ".join(repr(c.value) for c in Consistency)
        raise ValueError(f"consistency must be one of {choices}, got {consistency!r}") from None


class Client:
    """An asyncio client for a raftpy cluster (see the module docstring for the behaviour).

    ``addresses``: where to start looking (``"host:port"``); any subset of the cluster will do,
    since redirects name the leader. ``cluster_id``: sent in the handshake (``None``: accept
    any cluster). ``timeout``: the default overall deadline of a call, in seconds.
    ``connect_timeout``: bound on opening a connection and its handshake. ``backoff_initial`` /
    ``backoff_max``: the pause between rounds of retries. ``retry_indeterminate``: resend a
    proposal whose outcome became unknown (it may then apply twice; see the module docstring).
    ``attempt_timeout``: how long one query or status attempt waits for its answer before
    trying another node. ``rng``: the source of backoff jitter (seed it for reproducible
    tests).

    Use as ``async with Client([...]) as client:`` or call :meth:`close`.
    """

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        cluster_id: str | None = None,
        timeout: float = 10.0,
        connect_timeout: float = 1.0,
        backoff_initial: float = 0.02,
        backoff_max: float = 0.2,
        retry_indeterminate: bool = False,
        attempt_timeout: float = 2.0,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        rng: random.Random | None = None,
    ) -> None:
        if isinstance(addresses, str):
            raise TypeError("addresses must be a sequence of 'host:port' strings, not a str")
        known: list[str] = []
        for address in addresses:
            parse_address(address)
            if address not in known:
                known.append(address)
        if not known:
            raise ValueError("at least one address is needed")
        for name, value in (
            ("timeout", timeout),
            ("connect_timeout", connect_timeout),
            ("backoff_initial", backoff_initial),
            ("attempt_timeout", attempt_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if backoff_max < backoff_initial:
            raise ValueError(f"backoff_max ({backoff_max}) must be >= backoff_initial")
        self._addresses = known
        self._cursor = 0
        self._leader: str | None = None
        self._cluster_id = cluster_id
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._retry_indeterminate = retry_indeterminate
        self._attempt_timeout = attempt_timeout
        self._max_frame_bytes = max_frame_bytes
        self._rng = rng if rng is not None else random.Random()
        self._conns: dict[str, _Connection] = {}
        self._connecting: dict[str, asyncio.Task[_Connection]] = {}
        self._closed = False
        self._closed_event = asyncio.Event()

    # -- public API -------------------------------------------------------------------------

    @property
    def leader_address(self) -> str | None:
        """The last known leader's address (``None`` when unknown)."""
        return self._leader

    @property
    def addresses(self) -> list[str]:
        """The known addresses: those given, plus leaders learned from redirects."""
        return list(self._addresses)

    async def propose(
        self,
        command: bytes,
        *,
        timeout: float | None = None,
        retry_indeterminate: bool | None = None,
    ) -> bytes:
        """Replicate ``command`` and return what ``StateMachine.apply`` returned.

        Raises ``ClusterUnavailableError`` (definitely not done), ``ProposalDropped``
        (definitely not done, retrying cannot help), ``IndeterminateError`` (may or may not
        be done) or ``RemoteProtocolError``. ``retry_indeterminate`` overrides the client's
        setting for this call.
        """
        retry = self._retry_indeterminate if retry_indeterminate is None else retry_indeterminate
        resp = await self._call(
            ClientOp.PROPOSE, command, Consistency.LINEARIZABLE, timeout, None, retry
        )
        return resp.result if resp.result is not None else b""

    async def query(
        self,
        query: bytes,
        *,
        consistency: str | Consistency = "linearizable",
        timeout: float | None = None,
    ) -> bytes:
        """Answer ``query`` with ``StateMachine.query`` at ``consistency`` (``"linearizable"``,
        ``"lease"`` or ``"stale"``). Retried until the deadline; raises
        ``ClusterUnavailableError`` if no node answered in time."""
        level = _parse_consistency(consistency)
        resp = await self._call(ClientOp.QUERY, query, level, timeout, None, True)
        return resp.result if resp.result is not None else b""

    async def status(
        self, address: str | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """The status map of the node at ``address`` (default: the last known leader, else
        the first node that answers). Retried until the deadline."""
        if address is not None:
            parse_address(address)
        resp = await self._call(
            ClientOp.STATUS, b"", Consistency.LINEARIZABLE, timeout, address, True
        )
        try:
            decoded = msgspec.msgpack.decode(resp.result or b"")
        except msgspec.DecodeError as exc:
            raise RemoteProtocolError(f"status from the node is not msgpack: {exc}") from None
        if not isinstance(decoded, dict):
            raise RemoteProtocolError(f"status is not a map: {type(decoded).__name__}")
        return cast(dict[str, Any], decoded)

    async def snapshot(self, address: str, *, timeout: float | None = None) -> tuple[int, int]:
        """Ask the node at ``address`` to take a snapshot of its state now and compact its
        log; return the snapshot's ``(index, term)``. Any node will do, not only the leader:
        each node snapshots its own state (operators: ``raftpy snapshot ADDRESS``).

        Connecting is retried until the deadline. Once the request is written the call waits
        for the answer until the deadline, not just ``attempt_timeout``: a large state takes a
        while to write, and asking again would only take another snapshot after it. A request
        lost with a broken connection is sent again (a second snapshot is harmless). Raises
        ``ClusterUnavailableError`` when the node could not be reached or did not answer in
        time, and ``RemoteProtocolError`` when it answered anything but the snapshot (a full
        disk, a failed or stopping node, a state machine that cannot write it).
        """
        parse_address(address)
        if self._closed:
            raise LocalProtocolError("the client is closed")
        budget = self._timeout if timeout is None else timeout
        if not budget > 0:
            raise ValueError(f"timeout must be > 0, got {budget}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        backoff = self._backoff_initial
        last = "no attempt was made in time"
        while not self._closed and loop.time() < deadline:
            try:
                conn = await self._connection(address, deadline)
                resp = await conn.request(
                    ClientOp.SNAPSHOT, b"", Consistency.LINEARIZABLE, deadline
                )
            except TimeoutError:
                last = f"still connecting to {address} at the deadline"
                break
            except (_ConnectFailed, _ConnectionLost) as exc:
                last = str(exc)
            except _AttemptTimeout:
                last = f"{address}: no answer in time"
                break
            else:
                if resp.status is ResponseStatus.OK:
                    try:
                        answer = msgspec.msgpack.decode(resp.result or b"")
                        return int(answer["index"]), int(answer["term"])
                    except (msgspec.DecodeError, TypeError, KeyError, ValueError) as exc:
                        raise RemoteProtocolError(
                            f"{address} answered the snapshot request with {resp.result!r}: {exc!r}"
                        ) from None
                # Any other answer comes from the node itself (a failed or stopping node, a
                # full disk, a state machine that cannot write): asking again will not help.
                message = resp.message or resp.status.value
                raise RemoteProtocolError(f"{address} failed the snapshot: {message}")
            log.debug("snapshot: %s", last)
            jittered = backoff * (0.5 + 0.5 * self._rng.random())
            backoff = min(backoff * 2, self._backoff_max)
            await self._pause(max(0.0, min(jittered, deadline - loop.time())))
        if self._closed:
            raise ClusterUnavailableError("the client was closed before the snapshot was taken")
        raise ClusterUnavailableError(f"no snapshot from {address} within {budget}s (last: {last})")

    async def close(self) -> None:
        """Close every connection. Calls in flight fail (a proposal already written with
        ``IndeterminateError``); later calls raise ``LocalProtocolError``."""
        if self._closed:
            return
        self._closed = True
        self._closed_event.set()
        tasks = list(self._connecting.values())
        for task in tasks:
            task.cancel()
        conns = list(self._conns.values())
        self._conns.clear()
        for conn in conns:
            conn.abort("the client was closed")
        if tasks:
            await asyncio.wait(tasks, timeout=self._connect_timeout + 1.0)
        for conn in conns:
            await conn.wait_closed(1.0)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- connections ------------------------------------------------------------------------

    async def _connection(self, address: str, deadline: float) -> _Connection:
        """The open connection to ``address``, opening it if needed. Concurrent callers share
        one opening; a caller's cancellation does not abort it for the others. Raises
        :class:`_ConnectFailed`, or ``TimeoutError`` at ``deadline``."""
        conn = self._conns.get(address)
        if conn is not None:
            if conn.usable:
                return conn
            del self._conns[address]
        task = self._connecting.get(address)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._open(address))
            self._connecting[address] = task
            task.add_done_callback(lambda t: self._opened(address, t))
        async with asyncio.timeout_at(deadline):
            return await asyncio.shield(task)

    def _opened(self, address: str, task: asyncio.Task[_Connection]) -> None:
        if self._connecting.get(address) is task:
            del self._connecting[address]
        if task.cancelled() or task.exception() is not None:
            return  # exception() marks it retrieved; callers waiting on it see it themselves
        conn = task.result()
        if self._closed:
            conn.abort("the client was closed")
        else:
            self._conns[address] = conn

    async def _open(self, address: str) -> _Connection:
        host, port = parse_address(address)
        loop = asyncio.get_running_loop()
        conn = _Connection(address, loop, self._max_frame_bytes)
        try:
            async with asyncio.timeout(self._connect_timeout):
                await loop.create_connection(lambda: conn, host, port)
                reply = await conn.handshake(self._cluster_id)
        except TimeoutError:
            conn.abort("connect timeout")
            raise _ConnectFailed(
                address, f"no connection and handshake within {self._connect_timeout}s"
            ) from None
        except OSError as exc:
            conn.abort(str(exc))
            raise _ConnectFailed(address, f"cannot connect: {exc}") from None
        except BaseException:
            conn.abort("connect abandoned")
            raise
        if not reply.ok:
            conn.abort("handshake refused")
            log.warning("%s refused the handshake: %s", address, reply.reason)
            raise _ConnectFailed(address, f"handshake refused: {reply.reason}")
        log.debug("connected to %s (node %s)", address, reply.node_id)
        return conn

    # -- the retry loop ---------------------------------------------------------------------

    def _next_after(self, address: str) -> str:
        """The address after ``address`` in rotation (moves the shared cursor)."""
        try:
            index = self._addresses.index(address) + 1
        except ValueError:
            index = self._cursor
        self._cursor = index % len(self._addresses)
        return self._addresses[self._cursor]

    def _first_target(self) -> str:
        if self._leader is not None:
            return self._leader
        return self._addresses[self._cursor % len(self._addresses)]

    def _learn_leader(self, address: str) -> None:
        if address not in self._addresses:
            self._addresses.append(address)
        self._leader = address

    def _forget_leader(self, address: str) -> None:
        if self._leader == address:
            self._leader = None

    async def _pause(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or less if the client is closed meanwhile."""
        try:
            async with asyncio.timeout(delay):
                await self._closed_event.wait()
        except TimeoutError:
            pass

    async def _call(
        self,
        op: ClientOp,
        data: bytes,
        consistency: Consistency,
        timeout: float | None,
        pinned: str | None,
        retry_indeterminate: bool,
    ) -> ClientResponse:
        """Send one request until a node answers it, under one deadline."""
        if self._closed:
            raise LocalProtocolError("the client is closed")
        budget = self._timeout if timeout is None else timeout
        if not budget > 0:
            raise ValueError(f"timeout must be > 0, got {budget}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        call = _Call(self, op, pinned, retry_indeterminate)
        backoff = self._backoff_initial
        while not self._closed:
            if call.target in call.tried:
                # Back at a node that already failed since the last pause: a whole round went
                # by, a redirect loop, or the leader shedding load. Wait before going on.
                jittered = backoff * (0.5 + 0.5 * self._rng.random())
                backoff = min(backoff * 2, self._backoff_max)
                delay = min(jittered, deadline - loop.time())
                if delay > 0:
                    await self._pause(delay)
                call.tried.clear()
                continue
            if loop.time() >= deadline:
                break
            target = call.target
            call.tried.add(target)
            try:
                conn = await self._connection(target, deadline)
            except TimeoutError:
                # Keep the earlier, more telling reason (a refusal, a redirect) in front.
                call.last = f"{call.last}; then still connecting to {target} at the deadline"
                break
            except _ConnectFailed as exc:
                call.on_unreachable(str(exc))
                continue
            attempt_deadline = deadline
            if op is not ClientOp.PROPOSE:
                attempt_deadline = min(deadline, loop.time() + self._attempt_timeout)
            try:
                resp = await conn.request(op, data, consistency, attempt_deadline)
            except _ConnectionLost as exc:
                call.on_connection_lost(exc)
                continue
            except _AttemptTimeout as exc:
                call.on_attempt_timeout(exc.sent)
                continue
            if call.on_response(resp, consistency):
                return resp
        raise call.final_error(budget)


class _Call:
    """The bookkeeping of one :meth:`Client._call`: where to go next, what failed, and whether
    an earlier attempt of a proposal may have been appended. Each ``on_*`` method either
    raises the call's final error or decides the next ``target``."""

    __slots__ = (
        "client",
        "is_write",
        "last",
        "op",
        "pinned",
        "retry",
        "target",
        "tried",
        "uncertain",
    )

    def __init__(
        self, client: Client, op: ClientOp, pinned: str | None, retry_indeterminate: bool
    ) -> None:
        self.client = client
        self.op = op
        self.is_write = op is ClientOp.PROPOSE
        self.pinned = pinned
        self.retry = retry_indeterminate
        self.target = pinned if pinned is not None else client._first_target()
        self.tried: set[str] = set()
        self.last = "no attempt was made in time"
        # Why an earlier attempt of this proposal may have been appended. Sticky: a later
        # definite failure does not make an earlier unknown outcome definite.
        self.uncertain: str | None = None

    def _move_on(self) -> None:
        """Try the next address in rotation (or the pinned one again)."""
        if self.pinned is None:
            self.target = self.client._next_after(self.target)

    def _indeterminate(self, why: str) -> IndeterminateError:
        return IndeterminateError(f"outcome of the proposal is unknown: {why}")

    def _unknown_outcome(self, why: str) -> None:
        """This attempt of a proposal may have been appended: stop unless told to resend."""
        self.uncertain = why
        if not self.retry:
            raise self._indeterminate(why)

    def on_unreachable(self, reason: str) -> None:
        """Could not connect or the handshake was refused: nothing was sent."""
        self.last = reason
        log.debug("%s", reason)
        self.client._forget_leader(self.target)
        self._move_on()

    def on_connection_lost(self, exc: _ConnectionLost) -> None:
        self.last = str(exc)
        log.debug("%s", self.last)
        if self.is_write and exc.sent:
            self._unknown_outcome(
                f"the connection to {self.target} broke after it was sent ({exc.reason})"
            )
        self.client._forget_leader(self.target)
        self._move_on()

    def on_attempt_timeout(self, sent: bool) -> None:
        if self.is_write and sent:
            # A proposal's attempt lasts until the overall deadline: nothing is left to retry.
            self.uncertain = f"no answer from {self.target} before the deadline"
            raise self._indeterminate(self.uncertain)
        self.last = f"{self.target}: no answer in time"
        if not self.is_write:  # a read that hangs: the node may be stopped; prefer others
            self.client._forget_leader(self.target)
        self._move_on()

    def on_response(self, resp: ClientResponse, consistency: Consistency) -> bool:
        """Judge an answer: True to return it, False to go on, or raise."""
        target = self.target
        status = resp.status
        if status is ResponseStatus.OK:
            # Only a leader answers proposals and linearizable or lease reads.
            leads = self.is_write or (
                self.op is ClientOp.QUERY and consistency is not Consistency.STALE
            )
            if leads and self.pinned is None:
                self.client._learn_leader(target)
            return True
        if status is ResponseStatus.NOT_LEADER:
            self._on_not_leader(resp)
        elif status is ResponseStatus.DROPPED:
            message = resp.message or "dropped"
            # The node says whether a retry can help (a command too large never fits).
            if self.is_write and not resp.retryable:
                if self.uncertain is not None:
                    raise self._indeterminate(f"{self.uncertain}; then dropped: {message}")
                raise ProposalDropped(message)
            # Back-pressure or a transfer: the same node again, after a pause (it is in
            # `tried`); a redirect, if any, comes with its next answer.
            self.last = f"{target}: dropped: {message}"
        elif status is ResponseStatus.INDETERMINATE or status is ResponseStatus.TIMEOUT:
            detail = f": {resp.message}" if resp.message else ""
            self.last = f"{target} answered {status.value}{detail}"
            if self.is_write:  # TIMEOUT is for reads; on a proposal, assume the worst
                self._unknown_outcome(self.last)
            self._move_on()
        else:
            message = resp.message or "unspecified error"
            if self.uncertain is not None:
                raise self._indeterminate(f"{self.uncertain}; then {target} failed: {message}")
            raise RemoteProtocolError(f"{target} failed the request: {message}")
        return False

    def _on_not_leader(self, resp: ClientResponse) -> None:
        hint = resp.leader_address
        leader = hint or (resp.leader_id if resp.leader_id is not None else "unknown")
        self.last = f"{self.target}: not the leader (leader: {leader})"
        if hint is not None and hint != self.target and _valid_address(hint):
            self.client._learn_leader(hint)
            if self.pinned is None:
                self.target = hint
            return
        self.client._forget_leader(self.target)
        self._move_on()

    def final_error(self, budget: float) -> Exception:
        """The error for a call that ran out of time (or was cut short by close())."""
        if self.uncertain is not None:
            return self._indeterminate(self.uncertain)
        if self.client._closed:
            return ClusterUnavailableError("the client was closed before the request was answered")
        what = "no node" if self.op is ClientOp.STATUS else "no leader"
        return ClusterUnavailableError(f"{what} answered within {budget}s (last: {self.last})")


def _valid_address(address: str) -> bool:
    try:
        parse_address(address)
    except ValueError:
        log.warning("ignoring malformed leader address %r", address)
        return False
    return True


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def _stop_loop(loop: asyncio.AbstractEventLoop) -> None:
    if not loop.is_closed():
        loop.call_soon_threadsafe(loop.stop)


class SyncClient:
    """A blocking :class:`Client` for code without an event loop.

    It runs a private event loop in a daemon background thread (``raftpy-sync-client``) and
    hands each call to it, so it works from plain code, from any number of threads at once,
    and even from inside a coroutine of another event loop (that loop is blocked for the
    duration of the call). Connections persist between calls. Arguments and errors are those
    of :class:`Client`; :meth:`close` (or the ``with`` statement) stops the thread.
    """

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        cluster_id: str | None = None,
        timeout: float = 10.0,
        connect_timeout: float = 1.0,
        backoff_initial: float = 0.02,
        backoff_max: float = 0.2,
        retry_indeterminate: bool = False,
        attempt_timeout: float = 2.0,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        rng: random.Random | None = None,
    ) -> None:
        self._client = Client(
            addresses,
            cluster_id=cluster_id,
            timeout=timeout,
            connect_timeout=connect_timeout,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            retry_indeterminate=retry_indeterminate,
            attempt_timeout=attempt_timeout,
            max_frame_bytes=max_frame_bytes,
            rng=rng,
        )
        self._timeout = timeout
        self._grace = connect_timeout + 5.0
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=_run_loop, args=(self._loop,), name="raftpy-sync-client", daemon=True
        )
        self._thread.start()
        # If the SyncClient is dropped without close(), at least stop its thread.
        self._finalizer = weakref.finalize(self, _stop_loop, self._loop)

    @property
    def leader_address(self) -> str | None:
        """The last known leader's address (``None`` when unknown)."""
        return self._client.leader_address

    def propose(
        self,
        command: bytes,
        *,
        timeout: float | None = None,
        retry_indeterminate: bool | None = None,
    ) -> bytes:
        """Blocking :meth:`Client.propose`."""
        coro = self._client.propose(
            command, timeout=timeout, retry_indeterminate=retry_indeterminate
        )
        return self._run(coro, timeout, write=True)

    def query(
        self,
        query: bytes,
        *,
        consistency: str | Consistency = "linearizable",
        timeout: float | None = None,
    ) -> bytes:
        """Blocking :meth:`Client.query`."""
        _parse_consistency(consistency)
        return self._run(
            self._client.query(query, consistency=consistency, timeout=timeout), timeout
        )

    def status(self, address: str | None = None, *, timeout: float | None = None) -> dict[str, Any]:
        """Blocking :meth:`Client.status`."""
        return self._run(self._client.status(address, timeout=timeout), timeout)

    def close(self) -> None:
        """Close the connections and stop the background thread (bounded; idempotent)."""
        if self._closed:
            return
        self._closed = True
        if threading.current_thread() is not self._thread and self._loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._client.close(), self._loop)
            try:
                fut.result(timeout=self._grace)
            except Exception as exc:  # closing must not fail; say why it was not clean
                log.warning("SyncClient: closing the connections failed: %r", exc)
        self._finalizer()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=self._grace)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(
        self, coro: Coroutine[Any, Any, _T], timeout: float | None, *, write: bool = False
    ) -> _T:
        if self._closed:
            coro.close()
            raise LocalProtocolError("the client is closed")
        if threading.current_thread() is self._thread:
            coro.close()
            raise LocalProtocolError("a SyncClient cannot be called from its own loop thread")
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        budget = (self._timeout if timeout is None else timeout) + self._grace
        try:
            return fut.result(timeout=budget)
        except TimeoutError:
            if not fut.done():
                # The call outlived its own deadline by the grace period: a bug, but the
                # caller still gets a bounded wait and an honest classification.
                fut.cancel()
                if write:
                    raise IndeterminateError("the client did not finish in time") from None
                raise ClusterUnavailableError("the client did not finish in time") from None
            raise
        except BaseException:
            fut.cancel()  # e.g. KeyboardInterrupt: do not leave the request running
            raise
