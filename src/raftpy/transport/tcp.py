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
- **Lost disks.** Each peer announces its data directory's incarnation in the handshake (both
  ways); the first one seen from a member is pinned (:mod:`raftpy.storage.peers`) and a member
  that comes back with another one is refused both ways, said in one ERROR line (rate-limited)
  and shown by :meth:`TcpTransport.refused_peers`, until it is removed from the membership.
  A node with an incarnation dials every member at start (and each member added later), so
  that the pins exist before anyone needs them.
- **Faults stay local.** Garbage, an oversized length, a frame cut short by EOF, an undecodable
  payload or a message that is not addressed from the handshaken peer to us closes that one
  connection (logged on ``raftpy.transport`` and counted); the transport serves on.
- **Bounded memory.** Each peer has a send queue of at most ``peer_queue_bytes`` (bytes waiting
  for a connection plus bytes the socket has not taken yet); a message that does not fit is
  dropped and counted. Raft retries, so a drop costs time, never safety.
- **Write coalescing.** Everything sent to one connection during one event-loop iteration goes
  out in one ``transport.write``, from a single ``loop.call_soon`` flush per iteration (a
  client's answers go out at once when it awaits nothing else on that connection).
- **Reading** uses :class:`asyncio.BufferedProtocol` with one reusable ``bytearray`` per
  connection; payloads are decoded straight from ``memoryview`` slices of it (no copy).

The transport works on any asyncio event loop; choosing uvloop is the application's business.

This module holds :class:`TcpTransport` itself: the lifecycle, routing each message to its
peer's link, the flush of everything written in one iteration, and the handshake rules. The
rest of the package, one concern per module: :mod:`~raftpy.transport.connection` (reading
frames, socket options), :mod:`~raftpy.transport.inbound` (accepted connections),
:mod:`~raftpy.transport.outbound` (peer links and the connections they dial),
:mod:`~raftpy.transport.clients` (answering clients), :mod:`~raftpy.transport.stats` (the
counters) and :mod:`~raftpy.transport.base` (the protocol the node drives).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

from raftpy.core.messages import PROTOCOL_VERSION, PeerMessage
from raftpy.errors import LocalProtocolError
from raftpy.logtext import RateLimitedLog
from raftpy.storage.peers import PeerIncarnations
from raftpy.transport.address import format_address, parse_address
from raftpy.transport.base import (
    ClientConnectionLike,
    CountingTransport,
    RefusingTransport,
    Transport,
)
from raftpy.transport.clients import ClientConnection
from raftpy.transport.codec import DEFAULT_MAX_CLIENT_FRAME_BYTES, DEFAULT_MAX_FRAME_BYTES
from raftpy.transport.connection import FrameReader
from raftpy.transport.descriptors import ConnectionCaps, fit_to_this_process
from raftpy.transport.inbound import InboundConnection
from raftpy.transport.outbound import PeerLink
from raftpy.transport.protocol import MIN_FRAME_BYTES, ClientRequest, ConnectionRole, Hello
from raftpy.transport.stats import PeerTraffic, TransportStats
from raftpy.transport.tls import PeerIdentity, TlsConfig, TlsContexts, is_loopback

__all__ = ["ClientConnection", "TcpTransport", "parse_address"]  # parse_address: old path

_FrameReader = FrameReader  # its old name here (the tests use it)

log = logging.getLogger("raftpy.transport")

HANDSHAKE_TIMEOUT: Final = 5.0
"""Seconds a connection may take from accept (or dial) to a completed handshake."""
CLOSE_TIMEOUT: Final = 1.0
"""Seconds :meth:`TcpTransport.close` lets connections flush before it aborts them."""
MAX_PEER_CONNECTIONS: Final = 64
"""Accepted peer connections at once (each peer has at most one: a newer one replaces it)."""
MAX_CLIENT_CONNECTIONS: Final = 1024
"""Accepted client connections at once; more are refused at the handshake."""
MAX_HANDSHAKES: Final = 256
"""Accepted connections still shaking hands at once; more are closed at accept."""
PEER_IDLE_TIMEOUT: Final = 300.0
"""Seconds an accepted peer connection may carry no frame before it is closed. A leader's
followers hear from it every heartbeat; a follower that sends nothing for this long (to
another follower, after an election) redials when it has something to say."""
CLIENT_IDLE_TIMEOUT: Final = 300.0
"""Seconds a client connection with no request outstanding may send nothing before it is
closed. Announced in the handshake reply so the client stops using it well before."""
INCARNATION_LOG_INTERVAL: Final = 60.0
"""Seconds between two log lines about the same member refused for its incarnation (it redials
every few seconds; one line says it all)."""
_IDLE_SWEEPS_PER_TIMEOUT: Final = 4
"""Idle connections are found by a sweep this many times per timeout: one is closed between
one and 1.25 timeouts after its last read."""


class TcpTransport:
    """The node's network endpoint: one listening port for peers and clients, and one
    outbound connection per peer for the messages this node sends.

    Call order: ``await start()``; then :meth:`send` (from the event loop) as often as needed;
    finally ``await close()``. Callbacks run on the event loop and must not block; an
    exception from a callback is logged and the connection carries on.

    ``peers`` maps every member's id to its ``host:port``; it may include this node itself.
    Inbound peer handshakes are accepted from the ids in ``peers`` other than ``node_id``.
    ``incarnations`` holds this node's incarnation and the ones pinned for its peers (default:
    none of its own, pins in memory); :meth:`update_peers` forgets the pins of removed members.
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
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_client_frame_bytes: int = DEFAULT_MAX_CLIENT_FRAME_BYTES,
        peer_queue_bytes: int = 64 << 20,
        backoff_initial: float = 0.05,
        backoff_max: float = 10.0,
        rng: random.Random | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        close_timeout: float = CLOSE_TIMEOUT,
        max_peer_connections: int = MAX_PEER_CONNECTIONS,
        max_client_connections: int = MAX_CLIENT_CONNECTIONS,
        max_handshakes: int = MAX_HANDSHAKES,
        peer_idle_timeout: float | None = PEER_IDLE_TIMEOUT,
        client_idle_timeout: float | None = CLIENT_IDLE_TIMEOUT,
        tls: TlsConfig | None = None,
        insecure: bool = False,
        incarnations: PeerIncarnations | None = None,
    ) -> None:
        if min(max_frame_bytes, max_client_frame_bytes) < MIN_FRAME_BYTES or peer_queue_bytes < 1:
            raise ValueError(
                f"max_frame_bytes and max_client_frame_bytes must be >= {MIN_FRAME_BYTES}, "
                "peer_queue_bytes >= 1"
            )
        if min(max_peer_connections, max_client_connections, max_handshakes) < 1:
            raise ValueError(
                "max_peer_connections, max_client_connections and max_handshakes must be >= 1"
            )
        for name, value in (
            ("peer_idle_timeout", peer_idle_timeout),
            ("client_idle_timeout", client_idle_timeout),
        ):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, got {value}")
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError("backoff must satisfy 0 < backoff_initial <= backoff_max")
        if handshake_timeout <= 0 or close_timeout <= 0:
            raise ValueError("handshake_timeout and close_timeout must be > 0")
        self.node_id = node_id
        self.cluster_id = cluster_id
        self._listen = parse_address(address, listen=True)
        check_plaintext_bind(self._listen[0], tls=tls, insecure=insecure)
        # Read the certificate files now: a bad file fails the node's start, not each dial.
        self._tls: TlsContexts | None = tls.load() if tls is not None else None
        self._peers: dict[int, str] = {}
        self._set_peer_map(peers)
        self._on_message = on_message
        self._on_client_request = on_client_request
        self._max_frame_bytes = max_frame_bytes
        self._max_client_frame_bytes = min(max_client_frame_bytes, max_frame_bytes)
        self._peer_queue_bytes = peer_queue_bytes
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._rng = rng if rng is not None else random.Random()
        self._handshake_timeout = handshake_timeout
        self._close_timeout = close_timeout
        self._stats = TransportStats()
        self.peer_traffic: dict[int, PeerTraffic] = {}
        """Frames to and from each peer (live; read by :mod:`raftpy.node.metrics`)."""
        self._server: asyncio.Server | None = None
        self._bound: str | None = None
        self._links: dict[int, PeerLink] = {}
        self._protocols: set[FrameReader] = set()
        self._inbound_peers: dict[int, InboundConnection] = {}
        self._dirty: list[PeerLink | ClientConnection] = []
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._all_gone: asyncio.Event | None = None
        self._warned_no_route: set[int] = set()
        self._peer_idle_timeout = peer_idle_timeout
        self._client_idle_timeout = client_idle_timeout
        # The caps must leave descriptors for storage (see raftpy.transport.descriptors).
        self._caps = fit_to_this_process(
            ConnectionCaps(max_peer_connections, max_client_connections, max_handshakes),
            outbound=len(self._peers),
        )
        self._clients = 0  # live client connections (handshake done)
        self._handshaking = 0  # accepted connections still shaking hands
        self._idle_sweep: asyncio.TimerHandle | None = None
        # Lines about bad connections: a stranger must not be able to flood the log.
        self._badlog = RateLimitedLog(log)
        self._incarnations = incarnations if incarnations is not None else PeerIncarnations()
        # Members refused for their incarnation: id -> (the incarnation they announced, why).
        self._refused: dict[int, tuple[str, str]] = {}
        self._incarnation_log = RateLimitedLog(log, burst=1, interval=INCARNATION_LOG_INTERVAL)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and listen on ``address``. Raises ``OSError`` when it cannot (port in use)."""
        if self._server is not None or self._closing:
            raise LocalProtocolError("TcpTransport.start() may be called once, before close()")
        loop = self._loop = asyncio.get_running_loop()
        host, port = self._listen
        tls = self._tls
        self._server = await loop.create_server(
            lambda: InboundConnection(self),
            host,
            port,
            reuse_address=True,
            backlog=1024,
            ssl=tls.server if tls is not None else None,
            ssl_handshake_timeout=self._handshake_timeout if tls is not None else None,
        )
        sockname = self._server.sockets[0].getsockname()
        self._bound = format_address(str(sockname[0]), int(sockname[1]))
        if tls is not None:
            log.info("node %d listening on %s (mutual TLS)", self.node_id, self._bound)
        else:
            # Say it every time: a cluster without TLS takes any peer that knows the cluster id.
            log.log(
                logging.INFO if is_loopback(host) else logging.WARNING,
                "node %d listening on %s WITHOUT TLS: peers and clients are unauthenticated "
                "(see README.md, Security)",
                self.node_id,
                self._bound,
            )
        self._meet_peers()

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
        if self._idle_sweep is not None:
            self._idle_sweep.cancel()
            self._idle_sweep = None
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

    def _protocol_gone(self, proto: FrameReader) -> None:
        self._protocols.discard(proto)
        if self._all_gone is not None and not self._protocols:
            self._all_gone.set()

    def _watch_idle(self) -> None:
        """Start the idle sweep if it is not running (on each accepted connection, so a
        transport that accepts nothing never wakes up for it)."""
        if self._idle_sweep is None and not self._closing:
            loop = self._loop or asyncio.get_running_loop()
            self._idle_sweep = loop.call_later(self._sweep_period(), self._sweep_idle)

    def _sweep_period(self) -> float:
        timeouts = [t for t in (self._peer_idle_timeout, self._client_idle_timeout) if t]
        # Without idle timeouts the sweep still reports rate-limited log lines now and then.
        return min(timeouts) / _IDLE_SWEEPS_PER_TIMEOUT if timeouts else 10.0

    def _sweep_idle(self) -> None:
        self._idle_sweep = None
        if self._closing:
            return
        loop = self._loop or asyncio.get_running_loop()
        now = loop.time()
        for proto in list(self._protocols):
            if isinstance(proto, InboundConnection) and not proto._closed:
                proto.check_idle(now)
        self._badlog.flush()
        if self._protocols:
            self._idle_sweep = loop.call_later(self._sweep_period(), self._sweep_idle)

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

    def _new_link(self, peer_id: int) -> PeerLink | None:
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
        link = PeerLink(self, peer_id, address)
        link.task = loop.create_task(link.run(), name=f"raftpy-transport-peer-{peer_id}")
        self._links[peer_id] = link
        return link

    def _mark_dirty(self, writer: PeerLink | ClientConnection) -> None:
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

    def reject_peer(self, peer_id: int, reason: str) -> None:
        """Close the connection peer ``peer_id``'s messages arrive on: the node rejected one
        of them (``reason``; the node logs it). The peer may dial again."""
        proto = self._inbound_peers.get(peer_id)
        if proto is not None:
            log.debug("closing the connection of peer %d: %s", peer_id, reason)
            proto.close()

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
        # A removed member added back later is a new member: whatever disk it has is pinned then.
        self._incarnations.retain(i for i in self._peers if i != self.node_id)
        if self._server is not None:
            self._meet_peers()

    def _meet_peers(self) -> None:
        """Dial every member we have no link to yet, with nothing to send, so that both sides
        pin each other's incarnation now: two followers may otherwise never speak until one
        campaigns, which is just when a member that lost its disk must already be known. Only
        a node with an incarnation of its own does (one without has no disk to lose)."""
        if self._incarnations.own is None:
            return
        for peer_id in sorted(self._peers):
            if peer_id != self.node_id and peer_id not in self._links:
                self._new_link(peer_id)

    @property
    def incarnation(self) -> str | None:
        """The incarnation this node announces to its peers (``None``: none)."""
        return self._incarnations.own

    def _changed_peer(self, peer_id: int, incarnation: str | None) -> str | None:
        """Whether peer ``peer_id``, announcing ``incarnation`` in a handshake, lost its disk
        since this node pinned it: the reason (logged at ERROR, rate-limited, and recorded for
        :meth:`refused_peers`), or ``None`` to accept it (pinned now if it is new)."""
        reason = self._incarnations.check(peer_id, incarnation)
        if reason is None:
            self._refused.pop(peer_id, None)
            return None
        assert incarnation is not None
        self._refused[peer_id] = (incarnation, reason)
        self._incarnation_log.log(logging.ERROR, f"incarnation-{peer_id}", "%s", reason)
        return reason

    def refused_peers(self) -> dict[int, str]:
        """The members refused because they came back with another data directory: id -> the
        reason. A member leaves the list once it is accepted again, or once it is no longer
        pinned (it was removed from the membership)."""
        pins = self._incarnations.pinned()
        return {
            peer_id: reason
            for peer_id, (announced, reason) in self._refused.items()
            if pins.get(peer_id, announced) != announced
        }

    def _check_hello(
        self, hello: Hello, identity: PeerIdentity | None
    ) -> tuple[str, str | None] | None:
        """Why ``hello`` is refused, or None to accept it: the reason sent back, and the one
        logged here (``None``: logged already). The reply never holds what the dialer should
        have sent (the cluster id is a shared secret of sorts: a refusal must not teach it)."""
        if hello.version != PROTOCOL_VERSION:
            reason = (
                f"protocol version {hello.version} is not supported "
                f"(this node speaks version {PROTOCOL_VERSION})"
            )
            return reason, reason
        if hello.target_id is not None and hello.target_id != self.node_id:
            reason = f"this is node {self.node_id}, not node {hello.target_id}"
            return reason, reason
        if hello.cluster_id != self.cluster_id and (
            hello.role is ConnectionRole.PEER or hello.cluster_id is not None
        ):
            return (
                "cluster id does not match",
                f"cluster id {hello.cluster_id!r} does not match this node's {self.cluster_id!r}",
            )
        if hello.role is ConnectionRole.CLIENT:
            return None  # with TLS, any verified certificate may be a client's
        if hello.node_id is None:
            return "a peer must give its node id", "a peer must give its node id"
        if hello.node_id == self.node_id or hello.node_id not in self._peers:
            reason = f"node {hello.node_id} is not a peer of node {self.node_id}"
            return reason, reason
        if self._tls is not None and (identity is None or identity.node_id != hello.node_id):
            # Only a node certificate naming this very id may speak for the node: neither a
            # client certificate nor another member's.
            named = (
                "a client"
                if identity is None or identity.node_id is None
                else f"node {identity.node_id}"
            )
            return (
                f"the certificate does not name node {hello.node_id}",
                f"a peer claimed to be node {hello.node_id} with the certificate of {named}"
                f" ({identity.name if identity is not None else '?'!r})",
            )
        if self._changed_peer(hello.node_id, hello.incarnation) is not None:
            # Checked last: only a peer that passed every other check may be pinned.
            return (
                f"node {self.node_id} knows node {hello.node_id} by another data directory: "
                "a node that lost its disk must not vote as its old self; remove it from the "
                'cluster and add it back (README.md, "Changing members")',
                None,
            )
        return None

    # -- introspection -----------------------------------------------------------------------

    @property
    def bound_address(self) -> str:
        """The ``host:port`` actually listened on (the real port when 0 was asked for)."""
        if self._bound is None:
            raise LocalProtocolError("bound_address is known only after start()")
        return self._bound

    def traffic_of(self, peer_id: int) -> PeerTraffic:
        """The live :class:`PeerTraffic` of ``peer_id`` (made at its first use)."""
        traffic = self.peer_traffic.get(peer_id)
        if traffic is None:
            traffic = self.peer_traffic[peer_id] = PeerTraffic()
        return traffic

    @property
    def counters(self) -> TransportStats:
        """The live counters (see :class:`~raftpy.transport.stats.TransportStats`), updated in
        place; a node shows them as ``RaftNode.stats.transport``."""
        return self._stats

    def stats(self) -> dict[str, int]:
        """Counters since creation, by name (each is described on
        :class:`~raftpy.transport.stats.TransportStats`), with ``messages_dropped`` (every
        drop), the ``queued_bytes`` gauge (bytes now waiting to be sent to peers) and
        ``log_lines_suppressed`` (lines about bad connections left out by rate limiting)."""
        out = self._stats.as_dict()
        out["queued_bytes"] = sum(link.queued_bytes() for link in self._links.values())
        out["log_lines_suppressed"] = self._badlog.suppressed
        return out


if TYPE_CHECKING:
    # Checked by mypy: the node drives this class through the Transport protocol, and hands
    # each ClientConnection to code written against ClientConnectionLike.
    _transport_contract: type[Transport] = TcpTransport
    _counting_contract: type[CountingTransport] = TcpTransport
    _refusing_contract: type[RefusingTransport] = TcpTransport
    _client_contract: type[ClientConnectionLike] = ClientConnection


def check_plaintext_bind(host: str, *, tls: TlsConfig | None, insecure: bool) -> None:
    """Refuse to serve plain TCP on an address reachable from other machines unless the
    caller said ``insecure``: without TLS, anyone who can reach the port and knows the cluster
    id can join as a peer (see README.md, Security). ``ValueError`` says what to do."""
    if tls is None and not insecure and not is_loopback(host):
        raise ValueError(
            f"refusing to serve plain TCP on {host or '*'!r}, which other machines can reach: "
            "configure TLS (tls=TlsConfig(...), --tls-cert/--tls-key/--tls-ca) or accept an "
            "unauthenticated cluster explicitly (insecure=True, --insecure)"
        )
