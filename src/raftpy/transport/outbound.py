"""Sending to peers: one :class:`PeerLink` per peer (its bounded send queue, its connection, and
the task that dials and redials it with jittered exponential backoff), and the
:class:`OutboundConnection` it dials.

Node *i* sends its messages to node *j* only on a connection *i* dialed; whatever *j* sends
to *i* travels on *j*'s own connection. So an outbound connection carries messages one way,
and reads nothing but the handshake reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Final

from raftpy.core.messages import PROTOCOL_VERSION, PeerMessage
from raftpy.errors import RemoteProtocolError
from raftpy.logtext import untrusted
from raftpy.transport.address import parse_address
from raftpy.transport.codec import HEADER_SIZE
from raftpy.transport.connection import (
    HEADER_PLACEHOLDER,
    FrameReader,
    encode_into,
    pack_header_into,
    tune_socket,
)
from raftpy.transport.protocol import ConnectionRole, Hello, HelloReply, decode_hello_reply

if TYPE_CHECKING:
    from raftpy.transport.tcp import TcpTransport

log = logging.getLogger("raftpy.transport")

DROP_LOG_INTERVAL: Final = 10.0
"""Seconds between two warnings about one peer's full send queue (each counts the drops)."""

_SMALL_BUFFER: Final = 4 << 10  # outbound connections: they only read the HelloReply


class OutboundConnection(FrameReader):
    """The connection a node dials to send its messages to one peer."""

    def __init__(self, owner: TcpTransport, link: PeerLink) -> None:
        super().__init__(owner, _SMALL_BUFFER)
        loop = asyncio.get_running_loop()
        self._link = link
        self.handshake: asyncio.Future[HelloReply] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self._handle = self._on_reply

    @property
    def transport(self) -> asyncio.Transport:
        assert self._transport is not None
        return self._transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        owner = self._owner
        if owner._closing or self._link.closed:
            self.abort()
            return
        tune_socket(transport, outbound=True)
        tls = owner._tls
        if tls is not None:
            # Check whom we reached before telling it anything: the acceptor's certificate
            # must name the node we meant to dial (see raftpy.transport.tls).
            identity = tls.identity(transport.get_extra_info("peercert"))
            if identity is None or identity.node_id != self._link.peer_id:
                named = (
                    "no node"
                    if identity is None or identity.node_id is None
                    else f"node {identity.node_id}"
                )
                self.handshake.set_exception(
                    RemoteProtocolError(
                        f"its certificate names {named}, not node {self._link.peer_id}"
                    )
                )
                self.handshake.exception()
                self.abort()
                return
        hello = Hello(
            PROTOCOL_VERSION,
            ConnectionRole.PEER,
            cluster_id=owner.cluster_id,
            node_id=owner.node_id,
            target_id=self._link.peer_id,
            incarnation=owner.incarnation,
        )
        self.write_frame(hello)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._link._detach(self)
        if not self.handshake.done():
            self.handshake.set_exception(
                ConnectionError(f"connection closed before the handshake reply ({exc})")
            )
            self.handshake.exception()  # retrieved: no "never retrieved" warning
        if not self.lost.done():
            self.lost.set_result(None)

    def eof_received(self) -> bool | None:
        return None  # the peer closed; whatever is half-read does not matter

    def _on_reply(self, view: memoryview) -> None:
        frame = decode_hello_reply(view)
        self._handle = self._on_unexpected_frame
        if not self.handshake.done():
            self.handshake.set_result(frame)

    def _protocol_error(self, reason: str) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(RemoteProtocolError(reason))
            self.handshake.exception()
        super()._protocol_error(reason)


class PeerLink:
    """Everything about sending to one peer: the queue, the connection, the dialing task.

    ``_pending`` holds complete frames not yet handed to a socket. The queue bound covers
    those plus whatever the socket's transport still buffers.
    """

    __slots__ = (
        "_dirty",
        "_drop_logged_at",
        "_drops",
        "_ever_connected",
        "_max_frame_bytes",
        "_owner",
        "_pending",
        "_pending_frames",
        "_proto",
        "_retry_now",
        "_room",
        "_work",
        "address",
        "closed",
        "host",
        "peer_id",
        "port",
        "task",
        "traffic",
    )

    def __init__(self, owner: TcpTransport, peer_id: int, address: str) -> None:
        self._owner = owner
        self.peer_id = peer_id
        self.address = address
        self.host, self.port = parse_address(address)
        self._pending = bytearray()
        self._pending_frames = 0
        self._proto: OutboundConnection | None = None
        self._dirty = False
        self._ever_connected = False
        self._max_frame_bytes = owner._max_frame_bytes
        self._room = owner._peer_queue_bytes
        self._drops = 0
        self._drop_logged_at = -DROP_LOG_INTERVAL
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        self.traffic = owner.traffic_of(peer_id)
        # Set when the peer dials us: it is back, so stop waiting out the backoff.
        self._retry_now = asyncio.Event()
        # Set when a message is queued while there is no connection (see _wait_for_work).
        self._work = asyncio.Event()

    def push(self, message: PeerMessage) -> None:
        if self.closed:
            return
        buf = self._pending
        start = len(buf)
        buf += HEADER_PLACEHOLDER
        encode_into(message, buf, start + HEADER_SIZE)
        end = len(buf)
        size = end - start - HEADER_SIZE
        # Fast path: ``_room`` is a lower bound of the space left (the socket's buffer only
        # shrinks between our flushes), so passing it never breaks the bound.
        if (end > self._room or size > self._max_frame_bytes) and not self._admit(
            message, start, size
        ):
            del buf[start:]
            return
        pack_header_into(buf, start, size)
        self._pending_frames += 1
        if self._proto is None:
            self._work.set()
        elif not self._dirty:
            self._dirty = True
            self._owner._mark_dirty(self)

    def _admit(self, message: PeerMessage, start: int, size: int) -> bool:
        """The slow path of :meth:`push`: measure the room exactly; count and log a drop."""
        owner = self._owner
        if size > self._max_frame_bytes:
            owner._stats.dropped_too_large += 1
            log.warning(
                "dropped %s to peer %d: %d bytes exceed max_frame_bytes (%d)",
                type(message).__name__,
                self.peer_id,
                size,
                self._max_frame_bytes,
            )
            return False
        self._measure_room()
        if len(self._pending) <= self._room:
            return True
        owner._stats.dropped_queue_full += 1
        self._drops += 1
        now = time.monotonic()
        if now - self._drop_logged_at >= DROP_LOG_INTERVAL:
            log.warning(
                "send queue to peer %d (%s) is full (%d bytes): dropped %d message(s)",
                self.peer_id,
                self.address,
                owner._peer_queue_bytes,
                self._drops,
            )
            self._drop_logged_at = now
            self._drops = 0
        return False

    def _measure_room(self) -> None:
        proto = self._proto
        in_socket = 0 if proto is None else proto.transport.get_write_buffer_size()
        self._room = self._owner._peer_queue_bytes - in_socket

    def queued_bytes(self) -> int:
        proto = self._proto
        extra = 0 if proto is None else proto.transport.get_write_buffer_size()
        return len(self._pending) + extra

    def _flush(self) -> None:
        self._dirty = False
        proto = self._proto
        if proto is None or not self._pending or proto.transport.is_closing():
            return  # kept for the next connection
        data = self._pending
        self._pending = bytearray()  # never mutate a buffer handed to transport.write
        stats = self._owner._stats
        stats.messages_sent += self._pending_frames
        stats.bytes_sent += len(data)
        traffic = self.traffic
        traffic.messages_sent += self._pending_frames
        traffic.bytes_sent += len(data)
        self._pending_frames = 0
        proto.transport.write(data)
        self._measure_room()

    def _attach(self, proto: OutboundConnection) -> None:
        self._proto = proto
        self._flush()

    def _detach(self, proto: OutboundConnection) -> None:
        if self._proto is proto:
            self._proto = None
            self._measure_room()

    def close(self) -> None:
        """Stop dialing; hand queued frames to the socket and close it."""
        if self.closed:
            return
        self._flush()
        self.closed = True
        self._work.set()
        if self._proto is not None:
            self._proto.close()
        if self.task is not None:
            self.task.cancel()

    def redial(self, address: str) -> None:
        """Use ``address`` from now on; drop the current connection so it is redialed."""
        self.host, self.port = parse_address(address)
        self.address = address
        if self._proto is not None:
            self._proto.abort()

    async def run(self) -> None:
        """Dial, handshake, keep the connection until it breaks, redial with jittered
        exponential backoff (reset by each successful handshake)."""
        owner = self._owner
        stats = owner._stats
        loop = asyncio.get_running_loop()
        backoff = owner._backoff_initial
        failures = 0
        tls = owner._tls
        while not self.closed:
            proto: OutboundConnection | None = None
            stats.dials += 1
            try:
                async with asyncio.timeout(owner._handshake_timeout):
                    _, proto = await loop.create_connection(
                        lambda: OutboundConnection(owner, self),
                        self.host,
                        self.port,
                        ssl=tls.client if tls is not None else None,
                    )
                    reply = await proto.handshake
            except asyncio.CancelledError:
                if proto is not None:
                    proto.abort()
                raise
            except Exception as exc:  # refused, unreachable, timed out, bad reply: retry later
                if proto is not None:
                    proto.abort()
                stats.dial_failures += 1
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(
                    level,
                    "cannot reach peer %d at %s: %s: %s",
                    self.peer_id,
                    self.address,
                    type(exc).__name__,
                    exc,
                )
            else:
                if (
                    reply.ok
                    and reply.node_id == self.peer_id
                    and owner._changed_peer(self.peer_id, reply.incarnation) is not None
                ):
                    # It lost its disk: nothing of ours may reach it as if it were its old self
                    # (the reason is logged; the link keeps redialing, slowly, until removed).
                    proto.close()
                    stats.handshakes_rejected += 1
                    failures += 1
                elif reply.ok and reply.node_id == self.peer_id:
                    self._connected(proto, failures)
                    failures = 0
                    backoff = owner._backoff_initial
                    await proto.lost
                    if self._owner._closing:
                        return
                    log.info("connection to peer %d at %s lost", self.peer_id, self.address)
                    await self._wait_for_work()
                else:
                    proto.close()
                    stats.handshakes_rejected += 1
                    failures += 1
                    # The reason is the acceptor's text: escaped, so it cannot forge a line.
                    why = untrusted(reply.reason) if not reply.ok else f"it is node {reply.node_id}"
                    log.warning(
                        "peer %d at %s refused our handshake: %s", self.peer_id, self.address, why
                    )
            delay = owner._rng.uniform(backoff / 2, backoff)
            backoff = min(backoff * 2, owner._backoff_max)
            self._retry_now.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._retry_now.wait()
            if self._retry_now.is_set():
                backoff = owner._backoff_initial

    async def _wait_for_work(self) -> None:
        """Wait until a message is queued. The peer closes a connection that carried nothing
        for its idle timeout (a follower rarely speaks to another follower): redialing at
        once would only open another idle connection, so the next one waits for a message,
        as the first one did."""
        while not self._pending and not self.closed:
            self._work.clear()
            await self._work.wait()

    def poke(self) -> None:
        """The peer just connected to us, so it is up: redial now if we are backing off."""
        if self._proto is None:
            self._retry_now.set()

    def _connected(self, proto: OutboundConnection, failures: int) -> None:
        stats = self._owner._stats
        stats.peer_connects += 1
        if self._ever_connected:
            stats.reconnects += 1
        self._ever_connected = True
        level = logging.INFO if failures else logging.DEBUG
        log.log(level, "connected to peer %d at %s", self.peer_id, self.address)
        self._attach(proto)
