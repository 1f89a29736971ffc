"""What every connection of the TCP transport shares: reading length-prefixed frames into one
reusable buffer (:class:`FrameReader`, the base of both inbound and outbound connections),
encoding frames in place into an output buffer, and socket options.

Frames are those of :mod:`raftpy.transport.codec`: a 4-byte big-endian length, then that many
bytes of msgpack. The encoding primitives are module-level names, not functions wrapping them:
each message sent pays for one global lookup, not for an extra call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

import msgspec

from raftpy.errors import RemoteProtocolError
from raftpy.logtext import untrusted
from raftpy.transport.address import format_address
from raftpy.transport.codec import HEADER, HEADER_SIZE, FrameTooLarge
from raftpy.transport.protocol import Hello, HelloReply

if TYPE_CHECKING:
    from raftpy.transport.tcp import TcpTransport

log = logging.getLogger("raftpy.transport")

HANDSHAKE_MAX_BYTES: Final = 16 << 10
"""The largest frame accepted before a handshake completes (and as the handshake reply)."""
TCP_USER_TIMEOUT_MS: Final = 15_000
"""Linux: drop an outbound connection whose sent data stays unacknowledged this long (a peer
behind a partition), so that it is redialed instead of waiting out TCP's ~15-minute limit."""

_SHRINK_AFTER_READS = 64
"""Consecutive light reads (each leaving three quarters of the buffer empty) after which a
grown receive buffer goes back to its base size (so one burst or one large message does not
pin a large buffer to a connection for ever)."""

_encoder = msgspec.msgpack.Encoder()
encode_into = _encoder.encode_into
"""``encode_into(obj, buf, offset)``: msgpack ``obj`` into ``buf`` from ``offset`` on."""
pack_header_into = HEADER.pack_into
"""``pack_header_into(buf, offset, size)``: write a frame's length header in place."""
HEADER_PLACEHOLDER: Final = bytes(HEADER_SIZE)
"""Appended before encoding a payload; overwritten by its length once the size is known."""
_unpack_from = HEADER.unpack_from


def peername(transport: asyncio.BaseTransport) -> str:
    """The other end's ``host:port``, for logs."""
    name = transport.get_extra_info("peername")
    if isinstance(name, tuple) and len(name) >= 2:
        return format_address(str(name[0]), int(name[1]))
    return str(name)


def tune_socket(transport: asyncio.BaseTransport, *, outbound: bool) -> None:
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


class FrameReader(asyncio.BufferedProtocol):
    """Reads length-prefixed frames into one reusable buffer.

    ``self._handle`` gets each payload as a ``memoryview`` into the buffer, valid only during
    the call (decoders copy what they keep). The buffer holds ``[_start, _end)`` unparsed bytes;
    ``_need`` is the full size (header included) of the incomplete frame at ``_start`` once
    its header has arrived, else 0.

    The buffer grows with the bytes that actually arrive, never with what a header claims: a
    frame larger than the buffer doubles it each time the buffer fills up (up to the frame's
    size, bounded by ``_limit``), so a header announcing 64 MiB followed by 2 KiB costs the
    small buffer, while a real large frame (a snapshot chunk) still arrives in a few large
    reads. Between frames, a read that fills the buffer doubles it too, up to ``_stream_max``
    (a busy replication stream reads many frames per call); after ``_SHRINK_AFTER_READS``
    light reads a grown buffer goes back to ``_base``, so one burst does not pin memory to a
    connection for ever.
    """

    def __init__(self, owner: TcpTransport, bufsize: int) -> None:
        self._owner = owner
        self._stats = owner._stats
        # Until the handshake is done a frame may not be large: a stranger must not make us
        # allocate max_frame_bytes per connection.
        self._limit = min(HANDSHAKE_MAX_BYTES, owner._max_frame_bytes)
        self._base = bufsize
        self._stream_max = bufsize
        self._min_free = max(bufsize // 4, 1)
        self._buf = bytearray(bufsize)
        self._light_reads = 0  # consecutive reads that left a grown buffer mostly empty
        self._grow = False  # the last read filled the buffer: more is waiting in the socket
        self._start = 0
        self._end = 0
        self._need = 0
        self._active = True  # set by every read; the idle sweep clears it
        self._transport: asyncio.Transport | None = None
        self._closed = False
        self._name = "?"
        self._handle: Callable[[memoryview], None] = self._on_unexpected_frame

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports do not subclass asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)
        self._name = peername(transport)
        self._owner._protocols.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._buf = bytearray()  # a closed connection keeps no buffer, whoever holds it
        self._start = self._end = self._need = 0
        self._owner._protocol_gone(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        buf = self._buf
        if (
            self._grow
            or len(buf) - self._end < self._min_free
            or (
                self._light_reads > _SHRINK_AFTER_READS and not self._need and len(buf) > self._base
            )
        ):
            buf = self._make_room()
        return memoryview(buf)[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        if self._closed:
            return
        self._active = True
        self._stats.bytes_received += nbytes
        end = self._end = self._end + nbytes
        size = len(self._buf)
        if end * 4 <= size:
            self._light_reads += 1
        else:
            self._light_reads = 0
            self._grow = end == size and size < self._stream_max
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
        """Move the unparsed bytes to the front of the buffer, growing it when they fill it
        (a new buffer when the size must change: one the loop may still export is never
        resized in place). Every size is at most about twice the bytes actually held."""
        buf = self._buf
        start, end = self._start, self._end
        tail = end - start
        size = len(buf)
        need = self._need
        min_free = self._min_free
        target = size
        if need and size - tail < min_free:
            # Full of the frame in progress: double, up to the frame's size (and room for
            # the next header). The frame's bytes arrived; only then is memory spent on them.
            target = min(size * 2, need + min_free)
        if self._grow:
            # The last read filled the buffer: the socket holds more. Read more per call.
            target = max(target, min(size * 2, self._stream_max))
        if target != size:
            size = max(target, tail + min_free)
            self._light_reads = 0
        elif not need and self._light_reads > _SHRINK_AFTER_READS:
            size = max(self._base, tail + min_free)
            self._light_reads = 0
        self._grow = False
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
        self._owner._badlog.warning(
            "malformed", "closing connection %s: %s", self._name, untrusted(reason, quote=False)
        )
        self.abort()

    def write_frame(self, frame: Hello | HelloReply) -> None:
        """Write one handshake frame at once (it is alone on the connection: nothing to
        coalesce it with)."""
        assert self._transport is not None
        buf = bytearray(HEADER_PLACEHOLDER)
        encode_into(frame, buf, HEADER_SIZE)
        pack_header_into(buf, 0, len(buf) - HEADER_SIZE)
        self._stats.bytes_sent += len(buf)
        self._transport.write(buf)

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
