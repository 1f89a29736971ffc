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

from raftpy.core.messages import DECODE_ERRORS, decode_message
from raftpy.errors import RemoteProtocolError
from raftpy.logtext import untrusted
from raftpy.transport.clients import ClientConnection
from raftpy.transport.codec import HEADER_SIZE
from raftpy.transport.connection import FrameReader, tune_socket
from raftpy.transport.protocol import (
    ClientRequest,
    ConnectionRole,
    Hello,
    HelloReply,
    client_decoder,
    decode_hello,
)
from raftpy.transport.stats import PeerTraffic
from raftpy.transport.tls import PeerIdentity

if TYPE_CHECKING:
    from raftpy.transport.tcp import TcpTransport

log = logging.getLogger("raftpy.transport")

_BASE_BUFFER: Final = 4 << 10
"""Every accepted connection starts with this much (a handshake is small; a connection that
sends nothing, or announces a large frame and stops, costs no more)."""
_CLIENT_STREAM: Final = 256 << 10
"""A client connection's buffer grows to this when reads keep filling it (a pipelining
client); larger only for a frame in progress that large."""
_PEER_STREAM: Final = 1 << 20
"""As :data:`_CLIENT_STREAM` for a peer connection: the replication stream."""


class InboundConnection(FrameReader):
    """An accepted connection: a handshake, then a peer's messages or a client's requests."""

    def __init__(self, owner: TcpTransport) -> None:
        super().__init__(owner, _BASE_BUFFER)
        self._handle = self._on_hello
        self._timer: asyncio.TimerHandle | None = None
        self._peer_id: int | None = None
        self._client: ClientConnection | None = None
        self._paused = False
        self._handshaking = False  # counted in owner._handshaking
        self._idle_since = 0.0  # loop time of the idle sweep that last saw it read nothing
        self._identity: PeerIdentity | None = None
        self._traffic = PeerTraffic()  # the peer's own, once the handshake names the peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        owner = self._owner
        self._stats.connections_accepted += 1
        if owner._closing:
            self.abort()
            return
        if owner._handshaking >= owner._caps.handshakes:
            # Too many strangers at once: each costs a descriptor, which storage needs too.
            self._stats.handshakes_over_cap += 1
            owner._badlog.warning(
                "over-cap",
                "closing connection %s: %d connections are already shaking hands",
                self._name,
                owner._handshaking,
            )
            self.abort()
            return
        owner._handshaking += 1
        self._handshaking = True
        tune_socket(transport, outbound=False)
        if owner._tls is not None:
            # The TLS handshake is done (asyncio calls us after it): the certificate is verified.
            self._identity = owner._tls.identity(transport.get_extra_info("peercert"))
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(owner._handshake_timeout, self._handshake_expired)
        owner._watch_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._handshake_done()
        if self._client is not None:
            self._owner._clients -= 1
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

    def _handshake_done(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._handshaking:
            self._handshaking = False
            self._owner._handshaking -= 1

    def _handshake_expired(self) -> None:
        self._timer = None
        if self._closed:
            return
        self._stats.handshake_timeouts += 1
        self._owner._badlog.warning(
            "handshake-timeout",
            "closing connection %s: no handshake within %.1f s",
            self._name,
            self._owner._handshake_timeout,
        )
        self.abort()

    def _on_hello(self, view: memoryview) -> None:
        frame = decode_hello(view)
        self._handshake_done()
        owner = self._owner
        refusal = owner._check_hello(frame, self._identity) or self._over_cap(frame)
        transport = self._transport
        assert transport is not None
        if refusal is not None:
            reply, detail = refusal
            self._stats.handshakes_refused += 1
            if detail is not None:
                owner._badlog.warning(
                    "refused",
                    "refused %s connection from %s: %s",
                    frame.role.value,
                    self._name,
                    untrusted(detail, quote=False),
                )
            self.write_frame(HelloReply(False, owner.node_id, reply))
            self.close()
            return
        self._idle_since = asyncio.get_running_loop().time()
        if frame.role is ConnectionRole.PEER:
            assert frame.node_id is not None
            self.write_frame(HelloReply(True, owner.node_id, incarnation=owner.incarnation))
            self._become_peer(frame.node_id)
        else:
            limit = owner._max_client_frame_bytes
            self.write_frame(
                HelloReply(
                    True,
                    owner.node_id,
                    max_frame_bytes=limit,
                    idle_timeout=owner._client_idle_timeout,
                )
            )
            # A client's frames are commands and queries: far smaller than a peer's.
            self._limit = limit
            self._stream_max = _CLIENT_STREAM
            self._stats.client_connections += 1
            owner._clients += 1
            self._client = ClientConnection(owner, self, transport)
            self._handle = self._on_request
            log.debug("client connection from %s", self._name)

    def _over_cap(self, hello: Hello) -> tuple[str, str] | None:
        """Why a handshake that passed the checks is refused for lack of room (the reason sent
        back and the one logged, here the same), or None."""
        owner = self._owner
        if hello.role is ConnectionRole.CLIENT:
            if owner._clients >= owner._caps.clients:
                self._stats.client_connections_over_cap += 1
                reason = f"too many client connections (at most {owner._caps.clients})"
                return reason, reason
            return None
        # A peer replaces its own older connection, so only a new peer id takes room.
        if hello.node_id not in owner._inbound_peers and (
            len(owner._inbound_peers) >= owner._caps.peers
        ):
            self._stats.peer_connections_over_cap += 1
            reason = f"too many peer connections (at most {owner._caps.peers})"
            return reason, reason
        return None

    def _become_peer(self, peer_id: int) -> None:
        owner = self._owner
        self._stats.peer_connections += 1
        self._peer_id = peer_id
        self._traffic = owner.traffic_of(peer_id)
        self._limit = owner._max_frame_bytes
        self._stream_max = _PEER_STREAM
        self._handle = self._on_message
        # A peer that dials again has given up on its old connection (it restarted, or the
        # old one broke in a way we have not noticed yet): keep only the newest.
        old = owner._inbound_peers.get(peer_id)
        owner._inbound_peers[peer_id] = self
        link = owner._links.get(peer_id)
        if link is not None:
            link.poke()
        if old is not None and old is not self:
            owner._badlog.log(
                logging.INFO,
                "peer-reconnect",
                "peer %d reconnected from %s; closing its older connection",
                peer_id,
                self._name,
            )
            old.close()
        log.debug("peer %d connected from %s", peer_id, self._name)

    def check_idle(self, now: float) -> None:
        """Called by the transport's idle sweep: close a connection that read nothing for its
        idle timeout (a client only with no request outstanding)."""
        if self._active:
            self._active = False
            self._idle_since = now
            return
        owner = self._owner
        if self._peer_id is not None:
            timeout = owner._peer_idle_timeout
            if timeout is None or now - self._idle_since < timeout:
                return
            self._stats.peer_idle_closed += 1
            what = f"peer {self._peer_id}"
        elif self._client is not None:
            timeout = owner._client_idle_timeout
            if timeout is None or now - self._idle_since < timeout or self._client._outstanding:
                return
            self._stats.client_idle_closed += 1
            what = "client"
        else:
            return  # still shaking hands: the handshake timeout's business
        owner._badlog.log(
            logging.INFO,
            "idle",
            "closing %s connection %s: idle for %.0f s",
            what,
            self._name,
            now - self._idle_since,
        )
        self.close()

    def _on_message(self, view: memoryview) -> None:
        message = decode_message(view)  # MessageDecodeError: this connection closes
        owner = self._owner
        if message.src != self._peer_id or message.dst != owner.node_id:
            raise RemoteProtocolError(
                f"message {type(message).__name__} from {message.src} to {message.dst} on the "
                f"connection of peer {self._peer_id} to node {owner.node_id}"
            )
        self._stats.messages_received += 1
        traffic = self._traffic
        traffic.messages_received += 1
        traffic.bytes_received += len(view) + HEADER_SIZE
        try:
            owner._on_message(message)
        except Exception:
            log.exception(
                "on_message raised for %s from peer %d", type(message).__name__, message.src
            )

    def _on_request(self, view: memoryview) -> None:
        try:
            request = client_decoder.decode(view)
        except DECODE_ERRORS as exc:
            raise RemoteProtocolError(f"malformed client request: {exc}") from None
        if not isinstance(request, ClientRequest):
            raise RemoteProtocolError("a client sent a frame that is not a ClientRequest")
        self._stats.client_requests += 1
        client = self._client
        assert client is not None
        client._outstanding += 1
        try:
            self._owner._on_client_request(client, request)
        except Exception:
            log.exception("on_client_request raised for request %d from %s", request.id, self._name)

    def close(self) -> None:
        if self._client is not None and not self._client._closed:
            self._client._flush()
            self._client._closed = True
        super().close()
