"""The asyncio TCP transport: one listening port for peers and clients, lazy outbound peer
connections with reconnect, bounded send queues and coalesced writes.

Wire format and handshake: see :mod:`raftpy.transport.protocol` and
:mod:`raftpy.transport.codec`. In short, every frame is a 4-byte big-endian length and that many
bytes of msgpack; a dialer's first frame is :class:`~raftpy.transport.protocol.Hello`, answered
by :class:`~raftpy.transport.protocol.HelloReply`.

- **Peers.** Node *i* sends its messages to node *j* on a connection *i* dials (one per peer,
  made on the first send and kept); messages *j* sends to *i* travel on *j*'s own connection.
  An accepted peer connection only carries :data:`~raftpy.core.messages.PeerMessage` frames towards
  the acceptor, each handed to ``on_message``.
- **Clients.** After a client ``Hello``, each :class:`~raftpy.transport.protocol.ClientRequest`
  is handed to ``on_client_request(conn, request)``; :meth:`ClientConnection.respond` sends the
  answer. Many requests may be outstanding; answers may come in any order.
- **Faults stay local.** Garbage, an oversized length, a frame cut short by EOF, an undecodable
  payload or a message that is not addressed from the handshaken peer to us closes that one
  connection (logged on ``raftpy.transport`` and counted); the transport serves on.
- **Bounded memory.** Each peer has a send queue of at most ``peer_queue_bytes`` (bytes waiting
  for a connection plus bytes the socket has not taken yet); a message that does not fit is
  dropped and counted. Raft retries, so a drop costs time, never safety.
- **Write coalescing.** Everything sent to one connection during one event-loop iteration goes
  out in one ``transport.write``, from a single ``loop.call_soon`` flush per iteration.
- **Reading** uses :class:`asyncio.BufferedProtocol` with one reusable ``bytearray`` per
  connection; payloads are decoded straight from ``memoryview`` slices of it (no copy).

The transport works on any asyncio event loop; choosing uvloop is the application's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import socket
import time
from collections.abc import Callable, Mapping
from typing import Final, cast

import msgspec

from raftpy.core.messages import PROTOCOL_VERSION, PeerMessage
from raftpy.errors import LocalProtocolError, MessageDecodeError, RemoteProtocolError
from raftpy.transport.address import format_address, parse_address
from raftpy.transport.codec import HEADER, HEADER_SIZE, FrameTooLarge
from raftpy.transport.protocol import (
    ClientRequest,
    ClientResponse,
    ConnectionRole,
    Hello,
    HelloReply,
    client_decoder,
    hello_decoder,
)

__all__ = ["ClientConnection", "TcpTransport", "parse_address"]  # parse_address: old path

log = logging.getLogger("raftpy.transport")

HANDSHAKE_TIMEOUT: Final = 5.0
"""Seconds a connection may take from accept (or dial) to a completed handshake."""
CLOSE_TIMEOUT: Final = 1.0
"""Seconds :meth:`TcpTransport.close` lets connections flush before it aborts them."""
DROP_LOG_INTERVAL: Final = 10.0
"""Seconds between two warnings about one peer's full send queue (each counts the drops)."""
HANDSHAKE_MAX_BYTES: Final = 16 << 10
"""The largest frame accepted before a handshake completes (and as the handshake reply)."""
TCP_USER_TIMEOUT_MS: Final = 15_000
"""Linux: drop an outbound connection whose sent data stays unacknowledged this long (a peer
behind a partition), so that it is redialed instead of waiting out TCP's ~15-minute limit."""

_SMALL_BUFFER: Final = 4 << 10  # outbound connections: they only read the HelloReply
_CLIENT_BUFFER: Final = 32 << 10  # handshaking and client connections (grows for big frames)
_PEER_BUFFER: Final = 1 << 20  # accepted peer connections: the replication stream

_encoder = msgspec.msgpack.Encoder()
_encode_into = _encoder.encode_into
# The same decoder as raftpy.core.messages.decode_message, called directly on the hot path.
_message_decoder: msgspec.msgpack.Decoder[PeerMessage] = msgspec.msgpack.Decoder(PeerMessage)
_pack_into = HEADER.pack_into
_unpack_from = HEADER.unpack_from
_PLACEHOLDER: Final = bytes(HEADER_SIZE)


def _peername(transport: asyncio.BaseTransport) -> str:
    name = transport.get_extra_info("peername")
    if isinstance(name, tuple) and len(name) >= 2:
        return format_address(str(name[0]), int(name[1]))
    return str(name)


def _tune_socket(transport: asyncio.BaseTransport, *, outbound: bool) -> None:
    """Keepalive on every connection (so a vanished peer is noticed) and, for outbound peer
    connections on Linux, a TCP user timeout. Best effort: a loop without a real socket is
    fine."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    if outbound and hasattr(socket, "TCP_USER_TIMEOUT"):
        options.append((socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, TCP_USER_TIMEOUT_MS))
    for level, option, value in options:
        with contextlib.suppress(OSError, AttributeError):  # platform dependent
            sock.setsockopt(level, option, value)


@dataclasses.dataclass(slots=True)
class _Stats:
    """Counters (plain ints: the hot paths increment them directly)."""

    bytes_received: int = 0
    bytes_sent: int = 0
    client_connections: int = 0
    client_requests: int = 0
    client_responses: int = 0
    connections_accepted: int = 0
    dial_failures: int = 0
    dials: int = 0
    dropped_no_route: int = 0
    dropped_queue_full: int = 0
    dropped_too_large: int = 0
    handshake_timeouts: int = 0
    handshakes_refused: int = 0
    handshakes_rejected: int = 0
    malformed_frames: int = 0
    messages_received: int = 0
    messages_sent: int = 0
    peer_connections: int = 0
    peer_connects: int = 0
    reconnects: int = 0

    def as_dict(self) -> dict[str, int]:
        out = dataclasses.asdict(self)
        out["messages_dropped"] = (
            self.dropped_no_route + self.dropped_queue_full + self.dropped_too_large
        )
        return out


class _FrameReader(asyncio.BufferedProtocol):
    """Reads length-prefixed frames into one reusable buffer.

    ``self._handle`` gets each payload as a ``memoryview`` into the buffer, valid only during
    the call (decoders copy what they keep). The buffer holds ``[_start, _end)`` unparsed bytes;
    ``_need`` is the full size (header included) of the incomplete frame at ``_start`` once
    its header has arrived, else 0. A frame larger than the buffer grows it to fit (bounded by
    ``max_frame_bytes``), with room for what follows; it shrinks back once no large frame came
    for a while (a stream of large frames, such as snapshot chunks, reuses one buffer instead
    of allocating and copying twice per frame).
    """

    def __init__(self, owner: TcpTransport, bufsize: int) -> None:
        self._owner = owner
        self._stats = owner._stats
        # Until the handshake is done a frame may not be large: a stranger must not make us
        # allocate max_frame_bytes per connection.
        self._limit = min(HANDSHAKE_MAX_BYTES, owner._max_frame_bytes)
        self._bufsize = bufsize
        self._min_free = bufsize // 4
        self._buf = bytearray(bufsize)
        self._idle_big = 0  # reads since the buffer last had to hold a large frame
        self._start = 0
        self._end = 0
        self._need = 0
        self._transport: asyncio.Transport | None = None
        self._closed = False
        self._name = "?"
        self._handle: Callable[[memoryview], None] = self._on_unexpected_frame

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports do not subclass asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)
        self._name = _peername(transport)
        self._owner._protocols.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._owner._protocol_gone(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        buf = self._buf
        if self._need:
            if self._start + self._need > len(buf):
                buf = self._make_room()
        elif len(buf) - self._end < self._min_free:
            buf = self._make_room()
        elif len(buf) != self._bufsize:
            self._idle_big += 1
            if self._idle_big > _SHRINK_AFTER_READS:
                buf = self._make_room()
        return memoryview(buf)[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        if self._closed:
            return
        self._stats.bytes_received += nbytes
        end = self._end = self._end + nbytes
        pos = self._start
        need = self._need
        if need and end - pos < need:
            return  # the middle of a large frame: nothing to parse yet
        buf = self._buf
        try:
            with memoryview(buf) as view:
                while end - pos >= HEADER_SIZE:
                    (size,) = _unpack_from(buf, pos)
                    if size > self._limit:  # read each time: the handshake raises it
                        raise FrameTooLarge(
                            f"frame of {size} bytes exceeds the limit of {self._limit} bytes"
                        )
                    stop = pos + HEADER_SIZE + size
                    if stop > end:
                        need = stop - pos
                        break
                    self._handle(view[pos + HEADER_SIZE : stop])
                    pos = stop
                    if self._is_closed():
                        return
                else:
                    need = 0
        except RemoteProtocolError as exc:
            self._protocol_error(str(exc))
            return
        if pos == end:
            self._start = self._end = 0
        else:
            self._start = pos
        self._need = need

    def eof_received(self) -> bool | None:
        if not self._closed and self._end > self._start:
            self._truncated(self._end - self._start)
        return None  # close the transport

    # -- helpers -----------------------------------------------------------------------------

    def _make_room(self) -> bytearray:
        """Move the unparsed bytes to the front of a buffer big enough for the frame in
        progress (a new one when the size must change: a buffer the loop may still export
        is never resized in place)."""
        buf = self._buf
        start, end = self._start, self._end
        tail = end - start
        need = self._need
        if need:
            self._idle_big = 0
            size = max(len(buf), need + self._bufsize) if need > self._bufsize else len(buf)
            size = max(size, self._bufsize)
        elif len(buf) > self._bufsize and self._idle_big <= _SHRINK_AFTER_READS:
            size = len(buf)
        else:
            size = self._bufsize
        if size == len(buf):
            if start:
                buf[:tail] = buf[start:end]
        else:
            new = bytearray(size)
            if tail:
                with memoryview(buf) as view:
                    new[:tail] = view[start:end]
            self._buf = buf = new
        self._start, self._end = 0, tail
        return buf

    def _is_closed(self) -> bool:
        return self._closed

    def _on_unexpected_frame(self, view: memoryview) -> None:
        raise RemoteProtocolError("unexpected frame after the handshake")

    def _truncated(self, nbytes: int) -> None:
        self._protocol_error(f"connection closed in the middle of a frame ({nbytes} bytes)")

    def _protocol_error(self, reason: str) -> None:
        self._stats.malformed_frames += 1
        log.warning("closing connection %s: %s", self._name, reason)
        self.abort()

    def close(self) -> None:
        """Close gracefully: what is already written still goes out."""
        self._closed = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Close at once, discarding unsent data."""
        self._closed = True
        if self._transport is not None:
            self._transport.abort()


_SHRINK_AFTER_READS = 64
"""Reads without a large frame after which a grown receive buffer goes back to its normal
size (so one large message does not pin a large buffer to a connection for ever)."""


class ClientConnection:
    """One accepted client connection, handed to ``on_client_request`` with each request.

    :meth:`respond` may be called any number of times, in any order, from the event loop's
    thread; responses queued in one loop iteration go out in one write.
    """

    __slots__ = ("_closed", "_dirty", "_out", "_owner", "_proto", "_transport", "peername")

    def __init__(self, owner: TcpTransport, proto: _Inbound, transport: asyncio.Transport) -> None:
        self._owner = owner
        self._proto = proto
        self._transport = transport
        self._out = bytearray()
        self._dirty = False
        self._closed = False
        self.peername: str = proto._name
        """The client's ``host:port``, for logs."""

    @property
    def closed(self) -> bool:
        """True once the connection is closed; :meth:`respond` then does nothing."""
        return self._closed

    def respond(self, response: ClientResponse) -> None:
        """Queue ``response`` for the client. Never blocks; does nothing once closed."""
        if self._closed:
            return
        buf = self._out
        start = len(buf)
        buf += _PLACEHOLDER
        _encode_into(response, buf, start + HEADER_SIZE)
        _pack_into(buf, start, len(buf) - start - HEADER_SIZE)
        self._owner._stats.client_responses += 1
        if not self._dirty:
            self._dirty = True
            self._owner._mark_dirty(self)

    def close(self) -> None:
        """Close the connection after the queued responses are written."""
        if not self._closed:
            self._flush()
            self._closed = True
            self._proto.close()

    def _flush(self) -> None:
        self._dirty = False
        if self._closed or not self._out or self._transport.is_closing():
            return
        data = self._out
        self._out = bytearray()  # never mutate a buffer handed to transport.write
        self._owner._stats.bytes_sent += len(data)
        self._transport.write(data)

    def _lost(self) -> None:
        self._closed = True
        self._out = bytearray()


class _Inbound(_FrameReader):
    """An accepted connection: a handshake, then a peer's messages or a client's requests."""

    def __init__(self, owner: TcpTransport) -> None:
        super().__init__(owner, _CLIENT_BUFFER)
        self._handle = self._on_hello
        self._timer: asyncio.TimerHandle | None = None
        self._peer_id: int | None = None
        self._client: ClientConnection | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        owner = self._owner
        self._stats.connections_accepted += 1
        if owner._closing:
            self.abort()
            return
        _tune_socket(transport, outbound=False)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(owner._handshake_timeout, self._handshake_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._client is not None:
            self._client._lost()
        if self._peer_id is not None and self._owner._inbound_peers.get(self._peer_id) is self:
            del self._owner._inbound_peers[self._peer_id]

    def pause_writing(self) -> None:
        # A client that does not read its responses stops being read from: its requests
        # cannot pile up responses in our memory.
        if self._client is not None and self._transport is not None and not self._paused:
            self._paused = True
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._paused and self._transport is not None and not self._closed:
            self._paused = False
            self._transport.resume_reading()

    def eof_received(self) -> bool | None:
        if self._client is not None:
            self._client._flush()
        return super().eof_received()

    def _handshake_expired(self) -> None:
        self._timer = None
        if self._closed:
            return
        self._stats.handshake_timeouts += 1
        log.warning(
            "closing connection %s: no handshake within %.1f s",
            self._name,
            self._owner._handshake_timeout,
        )
        self.abort()

    def _on_hello(self, view: memoryview) -> None:
        try:
            frame = hello_decoder.decode(view)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise RemoteProtocolError(f"malformed handshake: {exc}") from None
        if not isinstance(frame, Hello):
            raise RemoteProtocolError("the first frame is not a Hello")
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        owner = self._owner
        reason = owner._check_hello(frame)
        transport = self._transport
        assert transport is not None
        if reason is not None:
            self._stats.handshakes_refused += 1
            log.warning("refused %s connection from %s: %s", frame.role.value, self._name, reason)
            self._write_frame(HelloReply(False, owner.node_id, reason))
            self.close()
            return
        self._write_frame(HelloReply(True, owner.node_id))
        self._limit = owner._max_frame_bytes
        if frame.role is ConnectionRole.PEER:
            assert frame.node_id is not None
            self._become_peer(frame.node_id)
        else:
            self._stats.client_connections += 1
            self._client = ClientConnection(owner, self, transport)
            self._handle = self._on_request
            log.debug("client connection from %s", self._name)

    def _become_peer(self, peer_id: int) -> None:
        owner = self._owner
        self._stats.peer_connections += 1
        self._peer_id = peer_id
        self._bufsize = _PEER_BUFFER
        self._min_free = _PEER_BUFFER // 4
        self._handle = self._on_message
        # A peer that dials again has given up on its old connection (it restarted, or the
        # old one broke in a way we have not noticed yet): keep only the newest.
        old = owner._inbound_peers.get(peer_id)
        owner._inbound_peers[peer_id] = self
        link = owner._links.get(peer_id)
        if link is not None:
            link.poke()
        if old is not None and old is not self:
            log.info(
                "peer %d reconnected from %s; closing its older connection", peer_id, self._name
            )
            old.close()
        log.debug("peer %d connected from %s", peer_id, self._name)

    def _on_message(self, view: memoryview) -> None:
        try:
            message = _message_decoder.decode(view)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise MessageDecodeError(f"malformed message: {exc}") from None
        owner = self._owner
        if message.src != self._peer_id or message.dst != owner.node_id:
            raise RemoteProtocolError(
                f"message {type(message).__name__} from {message.src} to {message.dst} on the "
                f"connection of peer {self._peer_id} to node {owner.node_id}"
            )
        self._stats.messages_received += 1
        try:
            owner._on_message(message)
        except Exception:
            log.exception(
                "on_message raised for %s from peer %d", type(message).__name__, message.src
            )

    def _on_request(self, view: memoryview) -> None:
        try:
            request = client_decoder.decode(view)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise RemoteProtocolError(f"malformed client request: {exc}") from None
        if not isinstance(request, ClientRequest):
            raise RemoteProtocolError("a client sent a frame that is not a ClientRequest")
        self._stats.client_requests += 1
        client = self._client
        assert client is not None
        try:
            self._owner._on_client_request(client, request)
        except Exception:
            log.exception("on_client_request raised for request %d from %s", request.id, self._name)

    def _write_frame(self, frame: HelloReply) -> None:
        assert self._transport is not None
        buf = bytearray(_PLACEHOLDER)
        _encode_into(frame, buf, HEADER_SIZE)
        _pack_into(buf, 0, len(buf) - HEADER_SIZE)
        self._stats.bytes_sent += len(buf)
        self._transport.write(buf)

    def close(self) -> None:
        if self._client is not None and not self._client._closed:
            self._client._flush()
            self._client._closed = True
        super().close()


class _Outbound(_FrameReader):
    """The connection a node dials to send its messages to one peer."""

    def __init__(self, owner: TcpTransport, link: _PeerLink) -> None:
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
        _tune_socket(transport, outbound=True)
        hello = Hello(
            PROTOCOL_VERSION,
            ConnectionRole.PEER,
            cluster_id=owner.cluster_id,
            node_id=owner.node_id,
            target_id=self._link.peer_id,
        )
        buf = bytearray(_PLACEHOLDER)
        _encode_into(hello, buf, HEADER_SIZE)
        _pack_into(buf, 0, len(buf) - HEADER_SIZE)
        self._stats.bytes_sent += len(buf)
        self.transport.write(buf)

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
        try:
            frame = hello_decoder.decode(view)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise RemoteProtocolError(f"malformed handshake reply: {exc}") from None
        if not isinstance(frame, HelloReply):
            raise RemoteProtocolError("the handshake reply is not a HelloReply")
        self._handle = self._on_unexpected_frame
        if not self.handshake.done():
            self.handshake.set_result(frame)

    def _protocol_error(self, reason: str) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(RemoteProtocolError(reason))
            self.handshake.exception()
        super()._protocol_error(reason)


class _PeerLink:
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
        "address",
        "closed",
        "host",
        "peer_id",
        "port",
        "task",
    )

    def __init__(self, owner: TcpTransport, peer_id: int, address: str) -> None:
        self._owner = owner
        self.peer_id = peer_id
        self.address = address
        self.host, self.port = parse_address(address)
        self._pending = bytearray()
        self._pending_frames = 0
        self._proto: _Outbound | None = None
        self._dirty = False
        self._ever_connected = False
        self._max_frame_bytes = owner._max_frame_bytes
        self._room = owner._peer_queue_bytes
        self._drops = 0
        self._drop_logged_at = -DROP_LOG_INTERVAL
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        # Set when the peer dials us: it is back, so stop waiting out the backoff.
        self._retry_now = asyncio.Event()

    def push(self, message: PeerMessage) -> None:
        if self.closed:
            return
        buf = self._pending
        start = len(buf)
        buf += _PLACEHOLDER
        _encode_into(message, buf, start + HEADER_SIZE)
        end = len(buf)
        size = end - start - HEADER_SIZE
        # Fast path: ``_room`` is a lower bound of the space left (the socket's buffer only
        # shrinks between our flushes), so passing it never breaks the bound.
        if (end > self._room or size > self._max_frame_bytes) and not self._admit(
            message, start, size
        ):
            del buf[start:]
            return
        _pack_into(buf, start, size)
        self._pending_frames += 1
        if not self._dirty and self._proto is not None:
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
        self._pending_frames = 0
        proto.transport.write(data)
        self._measure_room()

    def _attach(self, proto: _Outbound) -> None:
        self._proto = proto
        self._flush()

    def _detach(self, proto: _Outbound) -> None:
        if self._proto is proto:
            self._proto = None
            self._measure_room()

    def close(self) -> None:
        """Stop dialing; hand queued frames to the socket and close it."""
        if self.closed:
            return
        self._flush()
        self.closed = True
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
        while not self.closed:
            proto: _Outbound | None = None
            stats.dials += 1
            try:
                async with asyncio.timeout(owner._handshake_timeout):
                    _, proto = await loop.create_connection(
                        lambda: _Outbound(owner, self), self.host, self.port
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
                if reply.ok and reply.node_id == self.peer_id:
                    self._connected(proto, failures)
                    failures = 0
                    backoff = owner._backoff_initial
                    await proto.lost
                    if self._owner._closing:
                        return
                    log.info("connection to peer %d at %s lost", self.peer_id, self.address)
                else:
                    proto.close()
                    stats.handshakes_rejected += 1
                    failures += 1
                    why = reply.reason if not reply.ok else f"it is node {reply.node_id}"
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

    def poke(self) -> None:
        """The peer just connected to us, so it is up: redial now if we are backing off."""
        if self._proto is None:
            self._retry_now.set()

    def _connected(self, proto: _Outbound, failures: int) -> None:
        stats = self._owner._stats
        stats.peer_connects += 1
        if self._ever_connected:
            stats.reconnects += 1
        self._ever_connected = True
        level = logging.INFO if failures else logging.DEBUG
        log.log(level, "connected to peer %d at %s", self.peer_id, self.address)
        self._attach(proto)


class TcpTransport:
    """The node's network endpoint: one listening port for peers and clients, and one
    outbound connection per peer for the messages this node sends.

    Call order: ``await start()``; then :meth:`send` (from the event loop) as often as needed;
    finally ``await close()``. Callbacks run on the event loop and must not block; an
    exception from a callback is logged and the connection carries on.

    ``peers`` maps every member's id to its ``host:port``; it may include this node itself.
    Inbound peer handshakes are accepted from the ids in ``peers`` other than ``node_id``.
    """

    def __init__(
        self,
        node_id: int,
        address: str,
        peers: Mapping[int, str],
        *,
        cluster_id: str,
        on_message: Callable[[PeerMessage], None],
        on_client_request: Callable[[ClientConnection, ClientRequest], None],
        max_frame_bytes: int = 64 << 20,
        peer_queue_bytes: int = 64 << 20,
        backoff_initial: float = 0.05,
        backoff_max: float = 10.0,
        rng: random.Random | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        if max_frame_bytes < 1 or peer_queue_bytes < 1:
            raise ValueError("max_frame_bytes and peer_queue_bytes must be >= 1")
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError("backoff must satisfy 0 < backoff_initial <= backoff_max")
        if handshake_timeout <= 0 or close_timeout <= 0:
            raise ValueError("handshake_timeout and close_timeout must be > 0")
        self.node_id = node_id
        self.cluster_id = cluster_id
        self._listen = parse_address(address, listen=True)
        self._peers: dict[int, str] = {}
        self._set_peer_map(peers)
        self._on_message = on_message
        self._on_client_request = on_client_request
        self._max_frame_bytes = max_frame_bytes
        self._peer_queue_bytes = peer_queue_bytes
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._rng = rng if rng is not None else random.Random()
        self._handshake_timeout = handshake_timeout
        self._close_timeout = close_timeout
        self._stats = _Stats()
        self._server: asyncio.Server | None = None
        self._bound: str | None = None
        self._links: dict[int, _PeerLink] = {}
        self._protocols: set[_FrameReader] = set()
        self._inbound_peers: dict[int, _Inbound] = {}
        self._dirty: list[_PeerLink | ClientConnection] = []
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._all_gone: asyncio.Event | None = None
        self._warned_no_route: set[int] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and listen on ``address``. Raises ``OSError`` when it cannot (port in use)."""
        if self._server is not None or self._closing:
            raise LocalProtocolError("TcpTransport.start() may be called once, before close()")
        loop = self._loop = asyncio.get_running_loop()
        host, port = self._listen
        self._server = await loop.create_server(
            lambda: _Inbound(self), host, port, reuse_address=True, backlog=1024
        )
        sockname = self._server.sockets[0].getsockname()
        self._bound = format_address(str(sockname[0]), int(sockname[1]))
        log.info("node %d listening on %s", self.node_id, self._bound)

    async def close(self) -> None:
        """Close the listener and every connection. Idempotent.

        Queued messages and responses are handed to their sockets first; connections get
        ``close_timeout`` seconds to flush, then are aborted. If the caller is cancelled while
        waiting, every connection is aborted at once and the cancellation propagates; either
        way no task of the transport outlives it by more than a loop iteration.
        """
        if not self._closing:
            self._closing = True
            self._shutdown()
        try:
            async with asyncio.timeout(self._close_timeout):
                await self._wait_shut()
        except TimeoutError:
            log.warning(
                "close: connections did not finish in %.1f s; aborting them", self._close_timeout
            )
            self._abort_all()
        except asyncio.CancelledError:
            self._abort_all()
            raise

    def _shutdown(self) -> None:
        self._all_gone = asyncio.Event()
        if self._server is not None:
            self._server.close()
        self._flush_dirty()
        for link in self._links.values():
            link.close()
        for proto in list(self._protocols):
            proto.close()
        if not self._protocols:
            self._all_gone.set()

    async def _wait_shut(self) -> None:
        tasks = [link.task for link in self._links.values() if link.task is not None]
        if tasks:
            await asyncio.wait(tasks)
        assert self._all_gone is not None
        await self._all_gone.wait()
        if self._server is not None:
            await self._server.wait_closed()

    def _abort_all(self) -> None:
        for proto in list(self._protocols):
            proto.abort()

    def _protocol_gone(self, proto: _FrameReader) -> None:
        self._protocols.discard(proto)
        if self._all_gone is not None and not self._protocols:
            self._all_gone.set()

    # -- sending -----------------------------------------------------------------------------

    def send(self, message: PeerMessage) -> None:
        """Queue ``message`` for ``message.dst``. Never blocks and never raises for network
        trouble: a message that cannot be queued (unknown destination, queue full, larger than
        ``max_frame_bytes``) is dropped, counted and logged. After :meth:`close` it does
        nothing."""
        link = self._links.get(message.dst)
        if link is None:
            link = self._new_link(message.dst)
            if link is None:
                return
        link.push(message)

    def _new_link(self, peer_id: int) -> _PeerLink | None:
        if self._closing:
            return None
        address = self._peers.get(peer_id)
        if address is None or peer_id == self.node_id:
            self._stats.dropped_no_route += 1
            if peer_id not in self._warned_no_route:
                self._warned_no_route.add(peer_id)
                log.warning("dropping messages to node %d: not a known peer", peer_id)
            return None
        loop = self._loop = self._loop or asyncio.get_running_loop()
        link = _PeerLink(self, peer_id, address)
        link.task = loop.create_task(link.run(), name=f"raftpy-transport-peer-{peer_id}")
        self._links[peer_id] = link
        return link

    def _mark_dirty(self, writer: _PeerLink | ClientConnection) -> None:
        self._dirty.append(writer)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop = self._loop or asyncio.get_running_loop()
            loop.call_soon(self._flush_dirty)

    def flush(self) -> None:
        """Hand every queued frame to its socket now instead of at the end of this loop
        iteration. The node calls it before a blocking fsync, so the leader's appends travel
        while it syncs its own copy (Thesis §10.2.1)."""
        if self._dirty:
            self._flush_dirty()

    def _flush_dirty(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for writer in dirty:
            writer._flush()

    # -- peers and handshakes ----------------------------------------------------------------

    def _set_peer_map(self, peers: Mapping[int, str]) -> None:
        parsed = {int(node): str(address) for node, address in peers.items()}
        for node, address in parsed.items():
            if node < 0:
                raise ValueError(f"peer id {node} must be >= 0")
            try:
                parse_address(address)
            except ValueError as exc:
                raise ValueError(f"peer {node}: {exc}") from None
        self._peers = parsed

    def update_peers(self, peers: Mapping[int, str]) -> None:
        """Replace the member map (for membership changes). Connections to removed members are
        closed; a member whose address changed is redialed at the new one."""
        self._set_peer_map(peers)
        for peer_id, link in list(self._links.items()):
            address = self._peers.get(peer_id)
            if address is None or peer_id == self.node_id:
                link.close()
                del self._links[peer_id]
            elif address != link.address:
                link.redial(address)
        for peer_id, proto in list(self._inbound_peers.items()):
            if peer_id not in self._peers:
                proto.close()
        self._warned_no_route.clear()

    def _check_hello(self, hello: Hello) -> str | None:
        """Why ``hello`` is refused, or None to accept it."""
        if hello.version != PROTOCOL_VERSION:
            return (
                f"protocol version {hello.version} is not supported "
                f"(this node speaks version {PROTOCOL_VERSION})"
            )
        if hello.target_id is not None and hello.target_id != self.node_id:
            return f"this is node {self.node_id}, not node {hello.target_id}"
        if hello.role is ConnectionRole.CLIENT:
            if hello.cluster_id is not None and hello.cluster_id != self.cluster_id:
                return f"cluster id {hello.cluster_id!r} does not match {self.cluster_id!r}"
            return None
        if hello.cluster_id != self.cluster_id:
            return f"cluster id {hello.cluster_id!r} does not match {self.cluster_id!r}"
        if hello.node_id is None:
            return "a peer must give its node id"
        if hello.node_id == self.node_id or hello.node_id not in self._peers:
            return f"node {hello.node_id} is not a peer of node {self.node_id}"
        return None

    # -- introspection -----------------------------------------------------------------------

    @property
    def bound_address(self) -> str:
        """The ``host:port`` actually listened on (the real port when 0 was asked for)."""
        if self._bound is None:
            raise LocalProtocolError("bound_address is known only after start()")
        return self._bound

    def stats(self) -> dict[str, int]:
        """Counters since creation, plus the ``queued_bytes`` gauge.

        - ``messages_sent`` / ``messages_received``: peer message frames written to sockets /
          handed to ``on_message``; ``bytes_sent`` / ``bytes_received``: every byte on every
          connection (headers, handshakes and client traffic included).
        - ``messages_dropped``: the sum of ``dropped_queue_full`` (peer queue at its bound),
          ``dropped_too_large`` (over ``max_frame_bytes``) and ``dropped_no_route`` (unknown
          destination). Messages inside a connection when it breaks are lost uncounted.
        - ``dials``, ``dial_failures``, ``peer_connects`` (completed outbound handshakes),
          ``reconnects`` (those after a link's first); ``handshakes_rejected`` (peers that
          refused ours).
        - ``connections_accepted``, ``peer_connections``, ``client_connections``,
          ``handshakes_refused`` (we refused), ``handshake_timeouts``, ``malformed_frames``
          (connections closed for garbage, an oversized length, a truncated frame or a bad
          payload); ``client_requests``, ``client_responses``.
        - ``queued_bytes``: bytes now waiting to be sent to peers.
        """
        out = self._stats.as_dict()
        out["queued_bytes"] = sum(link.queued_bytes() for link in self._links.values())
        return out
