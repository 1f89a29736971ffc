"""The node's side of one client connection: queueing responses and writing them out, many
per write.

Accepting the connection, its handshake and reading the client's requests belong to
:class:`~raftpy.transport.inbound.InboundConnection`, which creates a
:class:`ClientConnection` once the client has shaken hands.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from raftpy.transport.codec import HEADER_SIZE
from raftpy.transport.connection import HEADER_PLACEHOLDER, encode_into, pack_header_into
from raftpy.transport.protocol import ClientResponse

if TYPE_CHECKING:
    from raftpy.transport.inbound import InboundConnection
    from raftpy.transport.tcp import TcpTransport


class ClientConnection:
    """One accepted client connection, handed to ``on_client_request`` with each request.

    :meth:`respond` may be called any number of times, in any order, from the event loop's
    thread; responses queued in one loop iteration go out in one write, at the end of the
    iteration, or at once with the response that leaves the client awaiting nothing else on
    this connection.
    """

    __slots__ = (
        "_closed",
        "_dirty",
        "_out",
        "_outstanding",
        "_owner",
        "_proto",
        "_transport",
        "peername",
    )

    def __init__(
        self, owner: TcpTransport, proto: InboundConnection, transport: asyncio.Transport
    ) -> None:
        self._owner = owner
        self._proto = proto
        self._transport = transport
        self._out = bytearray()
        self._dirty = False
        self._closed = False
        # Requests handed to the node and not answered yet: a connection waiting for an
        # answer is not idle, however long the answer takes.
        self._outstanding = 0
        self.peername: str = proto._name
        """The client's ``host:port``, for logs."""

    @property
    def closed(self) -> bool:
        """True once the connection is closed; :meth:`respond` then does nothing."""
        return self._closed

    def respond(self, response: ClientResponse) -> None:
        """Queue ``response`` for the client. Never blocks; does nothing once closed."""
        if self._outstanding:
            self._outstanding -= 1
        if self._closed:
            return
        buf = self._out
        start = len(buf)
        buf += HEADER_PLACEHOLDER
        encode_into(response, buf, start + HEADER_SIZE)
        pack_header_into(buf, start, len(buf) - start - HEADER_SIZE)
        self._owner._stats.client_responses += 1
        if not self._outstanding:
            # The client awaits nothing else here (a single writer, or the last answer of a
            # burst): write now. Marked dirty, the answers would wait for the flush at the end
            # of the loop pass after this one.
            self._flush()
        elif not self._dirty:
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
