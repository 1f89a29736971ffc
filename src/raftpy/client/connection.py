"""A client's connection to one node: handshake, pipelined requests, deadlines.

The first frame is :class:`~raftpy.transport.protocol.Hello` (role ``CLIENT``); a refused
handshake makes the node unreachable for this attempt (:class:`ConnectFailed`), and for the
whole call when asking again cannot change the answer (``ConnectFailed.permanent``: any refusal
but the node having no room for another connection, or a node certificate this client does not
trust). Requests are
pipelined: any number may be outstanding, each matched to its response by a per-connection
``id``, and the requests issued in one event-loop iteration are written with one ``write``
call (a lone writer's request, with nothing else outstanding, at once). A connection that
breaks fails its outstanding requests with :class:`ConnectionLost`, which says whether each
had been written: a proposal that was written may have been appended.
A request with no answer by its deadline fails with :class:`AttemptTimeout`.

Internal to :mod:`raftpy.client`; the retry logic that reads these errors is in
:mod:`raftpy.client.call`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from typing import Any, Final, cast

from raftpy.core.messages import DECODE_ERRORS, PROTOCOL_VERSION
from raftpy.errors import RemoteProtocolError
from raftpy.logtext import untrusted
from raftpy.transport.address import parse_address
from raftpy.transport.codec import FrameDecoder, encode_frame
from raftpy.transport.protocol import (
    MAX_REQUEST_TIMEOUT,
    ClientOp,
    ClientRequest,
    ClientResponse,
    ConnectionRole,
    Consistency,
    Hello,
    HelloReply,
    client_decoder,
    decode_hello_reply,
    encode_frame_payload,
)
from raftpy.transport.tls import TlsContexts

log = logging.getLogger(__name__)

# A request this close to its deadline when the sweep runs fails with it: a loop may run a
# timer a little before its time (uvloop rounds to milliseconds), and the sweep must not
# re-arm itself for a deadline that is already, to the clock's resolution, now.
_SWEEP_SLACK: Final = 0.001
# A connection is given up once idle for this share of the idle timeout the node announced.
_IDLE_MARGIN: Final = 0.5
# The receive buffer of a connection (a larger response arrives in several reads).
_READ_BUFFER: Final = 64 << 10


# The start of the one refusal that can pass: the node had no room for another connection
# (raftpy.transport's connection caps). Every other refusal (another cluster id, a protocol
# version the node does not speak) is the same however often the client asks.
_PASSING_REFUSAL: Final = "too many "


class ConnectFailed(Exception):
    """A node could not be reached or refused the handshake. Nothing was sent. ``permanent``:
    it refused for a reason asking again cannot change (see the module docstring)."""

    def __init__(self, address: str, reason: str, *, permanent: bool = False) -> None:
        super().__init__(f"{address}: {reason}")
        self.address = address
        self.reason = reason
        self.permanent = permanent


class ConnectionLost(Exception):
    """The connection broke while a request was outstanding. ``sent`` says whether the request
    had been written to the socket."""

    def __init__(self, address: str, reason: str, sent: bool) -> None:
        super().__init__(f"{address}: {reason}")
        self.address = address
        self.reason = reason
        self.sent = sent


class RequestTooLarge(Exception):
    """The node announced a smaller frame limit than this request needs. Nothing was sent."""

    def __init__(self, address: str, size: int, limit: int) -> None:
        super().__init__(
            f"{address}: a request of {size} bytes exceeds the node's limit of {limit} bytes"
        )
        self.address = address
        self.size = size
        self.limit = limit


class AttemptTimeout(Exception):
    """No answer before the attempt's deadline. ``sent`` as for :class:`ConnectionLost`."""

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


class Connection(asyncio.BufferedProtocol):
    """A client connection to one node: handshake, pipelined requests, response dispatch.

    A ``BufferedProtocol``: the event loop reads into one fixed buffer instead of handing over
    a new ``bytes`` per read. Over TLS that matters: asyncio's and uvloop's TLS layer would
    otherwise allocate a 256 KiB object for every read (README.md, Security, says what TLS
    costs)."""

    def __init__(
        self,
        address: str,
        loop: asyncio.AbstractEventLoop,
        max_frame_bytes: int,
        tls: TlsContexts | None = None,
    ) -> None:
        self.address = address
        self.node_id: int | None = None
        self._tls = tls
        self._cert_node_id: int | None = None
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
        self._sweep_at = math.inf  # the deadline the sweeper is set for
        self._outbox: list[_Slot] = []
        self._flush_scheduled = False
        self._last_burst = 0  # requests in the last write
        # What the node announced in its HelloReply (None: an older node said nothing).
        self.max_request_bytes: int | None = None
        self._idle_limit: float | None = None
        self._last_sent = loop.time()
        self._rbuf = memoryview(bytearray(_READ_BUFFER))

    @property
    def usable(self) -> bool:
        if (
            self._idle_limit is not None
            and not self._pending
            and self._ready
            and not self._closing
            and self._loop.time() - self._last_sent > self._idle_limit
        ):
            # The node closes a connection idle for its announced timeout; a request written
            # just as it does would be lost with an unknown outcome. Stop using it well before.
            self.abort("idle: the node is about to close it")
        return self._ready and not self._closing

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        if self._tls is not None:
            # Only a node of the cluster may answer: a certificate of the cluster CA that
            # names a node id (a client certificate cannot pose as a node).
            identity = self._tls.identity(transport.get_extra_info("peercert"))
            if identity is None or identity.node_id is None:
                self.abort("its certificate is not a node certificate of the cluster")
                return
            self._cert_node_id = identity.node_id

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._rbuf

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._rbuf[:nbytes])  # the decoder copies what it keeps

    def data_received(self, data: bytes | memoryview) -> None:
        try:
            for payload in self._decoder.feed(data):
                self._on_frame(payload)
        except (RemoteProtocolError, *DECODE_ERRORS) as exc:
            log.warning(
                "closing connection to %s: bad frame: %s",
                self.address,
                untrusted(str(exc), quote=False),
            )
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
            self._hello.set_exception(ConnectFailed(self.address, reason))
        pending, self._pending = self._pending, {}
        self._outbox = []
        for slot in pending.values():
            if not slot.future.done():
                slot.future.set_exception(ConnectionLost(self.address, reason, slot.sent))
        if not self._lost.done():
            self._lost.set_result(None)

    # -- frames -----------------------------------------------------------------------------

    def _on_frame(self, payload: bytes) -> None:
        if not self._ready:
            hello = decode_hello_reply(payload)
            if self._hello.done():
                raise RemoteProtocolError("unexpected frame before the handshake completed")
            if self._tls is not None and hello.node_id != self._cert_node_id:
                raise RemoteProtocolError(
                    f"node {hello.node_id} answered with the certificate of node "
                    f"{self._cert_node_id}"
                )
            self.node_id = hello.node_id
            self._ready = hello.ok
            self.max_request_bytes = hello.max_frame_bytes
            if hello.idle_timeout is not None:
                self._idle_limit = hello.idle_timeout * _IDLE_MARGIN
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
        if self._closing:  # refused already (the node's certificate)
            return await self._hello
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
        session: tuple[int, int, int] = (0, 0, 0),
    ) -> _Slot:
        """Queue a request for the next flush; raise :class:`ConnectionLost` (not sent) if
        the connection is already unusable, :class:`RequestTooLarge` (not sent) if the
        request exceeds the frame limit the node announced. Past ``deadline`` (loop time) the
        slot fails with :class:`AttemptTimeout`, checked by one sweep timer per connection.
        ``session`` is the request's ``(session, seq, ack)``."""
        if not self.usable:
            raise ConnectionLost(self.address, self._reason, sent=False)
        rid = self._next_id
        # The node refuses a frame whose timeout exceeds a day; a longer wait is still ours to
        # keep (``deadline``), the node just works on the request for at most that long.
        timeout = min(timeout, MAX_REQUEST_TIMEOUT)
        sid, seq, ack = session
        request = ClientRequest(rid, op, data, consistency, timeout, sid, seq, ack)
        payload = encode_frame_payload(request)
        limit = self.max_request_bytes
        if limit is not None and len(payload) > limit:
            # The node would close the connection on it, leaving a proposal's outcome
            # unknown; refused here, it definitely did not happen.
            raise RequestTooLarge(self.address, len(payload), limit)
        self._next_id += 1
        self._last_sent = self._loop.time()
        slot = _Slot(rid, encode_frame(payload), self._loop.create_future(), deadline)
        self._pending[rid] = slot
        if deadline != math.inf:
            self._arm_sweep(deadline)
        self._outbox.append(slot)
        if self._last_burst <= 1 and len(self._pending) == 1 and len(self._outbox) == 1:
            # A lone writer (nothing else outstanding, and the last write carried one
            # request): write now rather than on the next loop pass, which costs a single
            # writer a loop pass (a poll) of latency per request. Under load the requests of
            # one loop pass still go out in one write.
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return slot

    def _flush(self) -> None:
        """Write every queued request still wanted in one call (one syscall for a burst):
        on the loop pass after they were queued, or at once for a lone writer (submit)."""
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
        self._last_burst = len(frames)
        if frames:
            self._write(b"".join(frames))

    async def request(
        self,
        op: ClientOp,
        data: bytes,
        consistency: Consistency,
        deadline: float,
        session: tuple[int, int, int] = (0, 0, 0),
    ) -> ClientResponse:
        """One request/response exchange, bounded by ``deadline`` (loop time). Raises
        :class:`ConnectionLost` or :class:`AttemptTimeout`, each saying whether the request
        was written. ``session`` is the request's ``(session, seq, ack)``."""
        slot = self.send(op, data, consistency, deadline, session)
        try:
            # No per-request timer: the connection's sweep fails the slot at its deadline
            # (a timer per request cost about a quarter of the client's CPU at load).
            return await slot.future
        finally:
            self.forget(slot)

    def send(
        self,
        op: ClientOp,
        data: bytes,
        consistency: Consistency,
        deadline: float,
        session: tuple[int, int, int] = (0, 0, 0),
    ) -> _Slot:
        """:meth:`request` without its coroutine: queue the request and return its slot, whose
        future ends as :meth:`request` does; the caller awaits it, then calls :meth:`forget`
        whatever happened."""
        timeout = max(deadline - self._loop.time(), 1e-3)
        return self.submit(op, data, consistency, timeout, deadline, session)

    def forget(self, slot: _Slot) -> None:
        """The caller is done with ``slot`` (answered, cancelled or timed out): a late answer
        is dropped. An unsent slot's future is done (cancelled), so _flush will not write
        it."""
        self._pending.pop(slot.id, None)

    def _arm_sweep(self, deadline: float) -> None:
        """Have the sweep run by ``deadline``: one timer per connection, set for the earliest
        deadline outstanding. Requests mostly end long before their deadline, and a timer
        already set for an earlier one covers a new request without a new timer."""
        sweeper = self._sweeper
        if sweeper is not None:
            # Our own record of when, on this loop's clock (a handle's ``when()`` may be on
            # another: the simulator keeps its timers in true time).
            if self._sweep_at <= deadline:
                return
            sweeper.cancel()
        self._sweep_at = deadline
        self._sweeper = self._loop.call_at(deadline, self._sweep)

    def _sweep(self) -> None:
        """Fail every slot past its deadline; re-arm for the earliest one still to come."""
        self._sweeper = None
        due = self._loop.time() + _SWEEP_SLACK
        later = math.inf
        for slot in list(self._pending.values()):
            if slot.future.done():
                continue
            if slot.deadline <= due:
                slot.future.set_exception(AttemptTimeout(slot.sent))
            elif slot.deadline < later:
                later = slot.deadline
        if later != math.inf and not self._closing:
            self._arm_sweep(later)

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


async def connect(
    address: str,
    *,
    cluster_id: str | None,
    connect_timeout: float,
    max_frame_bytes: int,
    tls: TlsContexts | None = None,
) -> Connection:
    """Open a connection to ``address`` and complete the handshake within
    ``connect_timeout``; with ``tls``, mutual TLS to a node certificate of the cluster.
    Raises :class:`ConnectFailed`."""
    host, port = parse_address(address)
    loop = asyncio.get_running_loop()
    conn = Connection(address, loop, max_frame_bytes, tls)
    try:
        async with asyncio.timeout(connect_timeout):
            await loop.create_connection(
                lambda: conn, host, port, ssl=tls.client if tls is not None else None
            )
            reply = await conn.handshake(cluster_id)
    except ssl.SSLCertVerificationError as exc:  # before OSError, of which it is one
        conn.abort("certificate refused")
        raise ConnectFailed(
            address, f"the node's certificate is not trusted: {exc.verify_message}", permanent=True
        ) from None
    except TimeoutError:
        conn.abort("connect timeout")
        raise ConnectFailed(
            address, f"no connection and handshake within {connect_timeout}s"
        ) from None
    except OSError as exc:
        conn.abort(str(exc))
        raise ConnectFailed(address, f"cannot connect: {exc}") from None
    except BaseException:
        conn.abort("connect abandoned")
        raise
    if not reply.ok:
        conn.abort("handshake refused")
        # Network text: escaped before it reaches a terminal. Not logged above debug: the
        # error says it, and a call that retries would repeat the line several times a second.
        reason = untrusted(reply.reason, quote=False)
        log.debug("%s refused the handshake: %s", address, reason)
        raise ConnectFailed(
            address,
            f"handshake refused: {reason}",
            permanent=not (reply.reason or "").startswith(_PASSING_REFUSAL),
        )
    log.debug("connected to %s (node %s)", address, reply.node_id)
    return conn
