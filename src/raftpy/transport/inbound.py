"""Connections others dial to us: the handshake, then either a peer's messages or a client's
requests.

Every accepted connection starts the same way (its first frame must be a
:class:`~raftpy.transport.protocol.Hello`, within ``handshake_timeout``); the handshake decides
what follows. A peer connection only carries :data:`~raftpy.core.messages.PeerMessage` frames from
that peer to us, each handed to ``on_message``; a client connection carries
:class:`~raftpy.transport.protocol.ClientRequest` frames, each handed to ``on_client_request``
with the :class:`~raftpy.transport.clients.ClientConnection` that answers it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

import msgspec

from raftpy.core.messages import MESSAGE_CHECKS, PeerMessage
from raftpy.errors import MessageDecodeError, RemoteProtocolError
from raftpy.transport.clients import ClientConnection
from raftpy.transport.connection import FrameReader, tune_socket
from raftpy.transport.protocol import (
    ClientRequest,
    ConnectionRole,
    HelloReply,
    client_decoder,
    decode_hello,
)

if TYPE_CHECKING:
    from raftpy.transport.tcp import TcpTransport

log = logging.getLogger("raftpy.transport")

_CLIENT_BUFFER: Final = 32 << 10  # handshaking and client connections (grows for big frames)
_PEER_BUFFER: Final = 1 << 20  # accepted peer connections: the replication stream

# The same decoder and checks as raftpy.core.messages.decode_message, inlined on the hot path.
_message_decoder: msgspec.msgpack.Decoder[PeerMessage] = msgspec.msgpack.Decoder(PeerMessage)


class InboundConnection(FrameReader):
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
        tune_socket(transport, outbound=False)
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
        frame = decode_hello(view)
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
            self.write_frame(HelloReply(False, owner.node_id, reason))
            self.close()
            return
        self.write_frame(HelloReply(True, owner.node_id))
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
        check = MESSAGE_CHECKS.get(type(message))
        if check is not None:
            problem = check(message)
            if problem is not None:
                raise MessageDecodeError(f"invalid {type(message).__name__}: {problem}")
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

    def close(self) -> None:
        if self._client is not None and not self._client._closed:
            self._client._flush()
            self._client._closed = True
        super().close()
