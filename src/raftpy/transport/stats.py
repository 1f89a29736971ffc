"""The TCP transport's counters: one typed object, shared by the transport and all its
connections, read through :attr:`raftpy.transport.tcp.TcpTransport.counters` (live; a node
shows it as the ``transport`` part of its :class:`~raftpy.node.stats.NodeStats`) or
:meth:`~raftpy.transport.tcp.TcpTransport.stats` (by name)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(slots=True)
class PeerTraffic:
    """Peer frames to and from one peer since the transport was created (live in
    :attr:`raftpy.transport.tcp.TcpTransport.peer_traffic`; client traffic is not counted
    here). Bytes are whole frames, headers included."""

    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    messages_received: int = 0


@dataclasses.dataclass(slots=True)
class TransportStats:
    """Counters since the transport was created.

    Plain ints in one slotted object: the hot paths increment them in place
    (``stats.messages_sent += n``), at no cost beyond the addition.
    """

    bytes_received: int = 0
    """Every byte read on every connection (headers, handshakes and client traffic included)."""
    bytes_sent: int = 0
    """Every byte handed to a socket on every connection (as for ``bytes_received``)."""
    client_connections: int = 0
    """Accepted connections whose handshake made them client connections."""
    client_connections_over_cap: int = 0
    """Client handshakes refused because ``max_client_connections`` were open."""
    client_idle_closed: int = 0
    """Client connections closed for sending nothing, with nothing outstanding, for
    ``client_idle_timeout``."""
    client_requests: int = 0
    """Client requests handed to ``on_client_request``."""
    client_responses: int = 0
    """Responses queued through :meth:`~raftpy.transport.clients.ClientConnection.respond`."""
    connections_accepted: int = 0
    """Connections accepted on the listening port (before any handshake)."""
    dial_failures: int = 0
    """Dials to a peer that failed: refused, unreachable, timed out or a bad reply."""
    dials: int = 0
    """Dials to a peer attempted."""
    dropped_no_route: int = 0
    """Messages dropped because their destination is not a known peer."""
    dropped_queue_full: int = 0
    """Messages dropped because their peer's send queue was at its bound."""
    dropped_too_large: int = 0
    """Messages dropped because their frame exceeds ``max_frame_bytes``."""
    handshake_timeouts: int = 0
    """Accepted connections closed for not completing a handshake in time."""
    handshakes_over_cap: int = 0
    """Connections closed at accept because ``max_handshakes`` were already shaking hands."""
    handshakes_refused: int = 0
    """Handshakes this node refused (wrong cluster, version, target or unknown peer, a peer
    that came back with another data directory, or over a connection cap: those are counted
    again by their ``*_over_cap`` counter)."""
    handshakes_rejected: int = 0
    """Handshakes of ours that a peer refused (or answered as another node, or from another
    data directory than the one pinned for it)."""
    malformed_frames: int = 0
    """Connections closed for garbage, an oversized length, a truncated frame or a bad
    payload."""
    messages_received: int = 0
    """Peer message frames handed to ``on_message``."""
    messages_sent: int = 0
    """Peer message frames handed to sockets. Messages inside a connection when it breaks are
    lost uncounted."""
    peer_connections: int = 0
    """Accepted connections whose handshake made them peer connections."""
    peer_connections_over_cap: int = 0
    """Peer handshakes refused because ``max_peer_connections`` peers were connected."""
    peer_idle_closed: int = 0
    """Accepted peer connections closed for carrying no frame for ``peer_idle_timeout``."""
    peer_connects: int = 0
    """Completed outbound handshakes."""
    reconnects: int = 0
    """Completed outbound handshakes after a link's first."""

    @property
    def messages_dropped(self) -> int:
        """Messages dropped for any reason: the sum of the three ``dropped_*`` counters."""
        return self.dropped_no_route + self.dropped_queue_full + self.dropped_too_large

    def as_dict(self) -> dict[str, int]:
        """Every counter by name, plus ``messages_dropped``."""
        out = dataclasses.asdict(self)
        out["messages_dropped"] = self.messages_dropped
        return out
