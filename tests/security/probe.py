"""A wire-level attacker for the security regression tests: it speaks only the protocol.

:class:`Probe` dials a node (optionally over TLS, with whatever certificate the attacker holds,
or none), completes the handshake as any peer id or as a client of any cluster id, and then
sends forged peer messages (:mod:`raftpy.core.messages`), client requests
(:mod:`raftpy.transport.protocol`) or raw bytes, reading what comes back. It uses blocking
sockets so the tests need no event loop, and every wait is bounded by a timeout.

A node that refuses shows up as :class:`Refused` (a ``HelloReply`` with ``ok`` false, the
connection closed during the handshake, or a TLS handshake that failed).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from pathlib import Path
from types import TracebackType

import msgspec

from raftpy.core.messages import PROTOCOL_VERSION, PeerMessage, encode_message
from raftpy.transport.codec import HEADER, HEADER_SIZE, encode_frame
from raftpy.transport.protocol import (
    ClientRequest,
    ClientResponse,
    ConnectionRole,
    Hello,
    HelloReply,
    client_decoder,
    decode_hello_reply,
    encode_frame_payload,
)

DEFAULT_TIMEOUT = 5.0


class Refused(Exception):
    """The node refused the connection or its handshake (the attack was stopped at the door)."""


def attacker_context(cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """A TLS client context for the attacker: it verifies nothing about the node (it does not
    care who answers) and presents ``cert``/``key`` when it has them (a stolen client
    certificate, another node's certificate) or no certificate at all."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


class Probe:
    """One connection to a node, driven frame by frame (see the module docstring)."""

    def __init__(
        self,
        address: str,
        *,
        tls: ssl.SSLContext | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        host, _, port = address.rpartition(":")
        self.host = host
        self.port = int(port)
        self.tls = tls
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self._buf = bytearray()

    # -- connecting ---------------------------------------------------------------------------

    def connect(self) -> Probe:
        """Open the TCP (and TLS) connection; :class:`Refused` if TLS refuses us."""
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.settimeout(self.timeout)
        if self.tls is not None:
            try:
                sock = self.tls.wrap_socket(sock, server_hostname=None)
            except (ssl.SSLError, OSError) as exc:
                sock.close()
                raise Refused(f"TLS handshake failed: {exc}") from None
        self.sock = sock
        return self

    def hello(
        self,
        role: ConnectionRole,
        *,
        cluster_id: str | None = None,
        node_id: int | None = None,
        target_id: int | None = None,
        version: int = PROTOCOL_VERSION,
    ) -> HelloReply:
        """Send a Hello and read the answer; :class:`Refused` unless the node accepts."""
        hello = Hello(version, role, cluster_id, node_id, target_id)
        return self.handshake(encode_frame_payload(hello))

    def handshake(self, payload: bytes) -> HelloReply:
        """Send ``payload`` as the first frame (any bytes: a forged Hello) and read the answer."""
        try:
            self.send_frame(payload)
            answer = self.read_frame()
        except (ssl.SSLError, OSError) as exc:
            raise Refused(f"connection failed during the handshake: {exc}") from None
        if answer is None:
            raise Refused("the node closed the connection during the handshake")
        reply = decode_hello_reply(answer)
        if not reply.ok:
            raise Refused(f"handshake refused: {reply.reason}")
        return reply

    def as_peer(self, node_id: int, target_id: int, cluster_id: str = "raftpy") -> Probe:
        """Connect and pass the handshake as peer ``node_id`` dialing node ``target_id``."""
        self.connect()
        self.hello(ConnectionRole.PEER, cluster_id=cluster_id, node_id=node_id, target_id=target_id)
        return self

    def as_client(self, cluster_id: str | None = None) -> Probe:
        """Connect and pass the handshake as a client (``None``: any cluster)."""
        self.connect()
        self.hello(ConnectionRole.CLIENT, cluster_id=cluster_id)
        return self

    # -- sending ------------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        assert self.sock is not None, "connect first"
        self.sock.sendall(data)

    def send_frame(self, payload: bytes) -> None:
        self.send_raw(encode_frame(payload))

    def announce(self, size: int, body: bytes = b"") -> None:
        """Send a frame header claiming ``size`` bytes, then only ``body``."""
        self.send_raw(HEADER.pack(size) + body)

    def send_message(self, message: PeerMessage) -> None:
        """Send one (forged) peer message on a peer connection."""
        self.send_frame(encode_message(message))

    def send_request(self, request: ClientRequest) -> None:
        self.send_frame(encode_frame_payload(request))

    def request(self, request: ClientRequest) -> ClientResponse:
        """Send a client request and read its response (the connection carries only this
        request, so the next response is its answer)."""
        self.send_request(request)
        frame = self.read_frame()
        if frame is None:
            raise Refused(f"the node closed the connection instead of answering {request.id}")
        response = client_decoder.decode(frame)
        assert isinstance(response, ClientResponse), response
        return response

    # -- receiving ----------------------------------------------------------------------------

    def _recv(self, deadline: float) -> bytes:
        """Some bytes, or b"" at end of stream; ``TimeoutError`` at the deadline."""
        assert self.sock is not None, "connect first"
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no data before the deadline")
        self.sock.settimeout(left)
        try:
            return self.sock.recv(1 << 16)
        except TimeoutError:
            raise TimeoutError("no data before the deadline") from None
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return b""

    def read_frame(self, timeout: float | None = None) -> bytes | None:
        """The next frame's payload; ``None`` if the node closed the connection first."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if len(self._buf) >= HEADER_SIZE:
                (size,) = HEADER.unpack_from(self._buf)
                if len(self._buf) >= HEADER_SIZE + size:
                    payload = bytes(self._buf[HEADER_SIZE : HEADER_SIZE + size])
                    del self._buf[: HEADER_SIZE + size]
                    return payload
            data = self._recv(deadline)
            if not data:
                return None
            self._buf += data

    def closed_by_node(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """Whether the node closes this connection within ``timeout`` (anything it sends
        meanwhile is discarded; a failed send counts as closed)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                data = self._recv(deadline)
            except TimeoutError:
                return False
            except OSError:
                return True
            if not data:
                return True

    def still_open(self) -> bool:
        """Whether the connection is still open: a zero-length probe read would block."""
        return not self.closed_by_node(timeout=0.05)

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):  # closing a broken socket
                self.sock.close()
            self.sock = None

    def __enter__(self) -> Probe:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def raw_hello(fields: dict[str, object]) -> bytes:
    """A handshake frame's payload from raw fields (a forged tag, a wrong type): msgpack of a
    map, as :class:`~raftpy.transport.protocol.Hello` is encoded."""
    return msgspec.msgpack.encode(fields)
