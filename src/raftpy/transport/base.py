"""The typed edge between a :class:`~raftpy.node.RaftNode` and its transport.

The node talks to the network only through :class:`Transport`, built by a
:data:`TransportFactory` that receives the node's two inbound callbacks. The production
implementation is :class:`raftpy.transport.tcp.TcpTransport`; tests plug in in-process fakes.

The contract, in short:

- **Lifecycle.** ``await start()`` once, then :meth:`Transport.send` and
  :meth:`Transport.flush` any number of times from the event loop, then ``await close()``.
- **Sending is message-agnostic.** The transport reads a message's destination
  (``message.dst``) and nothing else: it never interprets, reorders, merges or retries
  messages. Sending never blocks and never raises for network trouble; a message it cannot
  carry is dropped, because Raft already tolerates loss (Raft §5.3: the leader retries until
  the follower answers).
- **Inbound callbacks** run on the event loop and must not block: one for each peer message
  addressed to this node, one for each client request (answered through the
  :class:`ClientConnectionLike` it came with, in any order and at any later time).
- **A rejected peer loses its connection**: a message the node's core rejects costs its
  sender the inbound connection (:meth:`Transport.reject_peer`), never the node.
- **Refusing changed peers is optional.** A transport that refuses members which came back with
  another data directory (:class:`RefusingTransport`) lists them; the node shows them in its
  status (:func:`refused_peers`).
- **Counters are optional.** A transport that counts exposes its
  :class:`~raftpy.transport.stats.TransportStats` as ``counters`` (:class:`CountingTransport`);
  the node shows them in its stats. In-process fakes need not count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from raftpy.core.messages import PeerMessage
from raftpy.transport.protocol import ClientRequest, ClientResponse
from raftpy.transport.stats import TransportStats


class ClientConnectionLike(Protocol):
    """What the node needs from a client connection: a way to answer."""

    def respond(self, response: ClientResponse) -> None:
        """Queue ``response`` for the client. Never blocks; does nothing once the connection
        is closed."""
        ...


MessageCallback = Callable[[PeerMessage], None]
"""Called with each peer message addressed to this node."""

ClientRequestCallback = Callable[[ClientConnectionLike, ClientRequest], None]
"""Called with each client request and the connection that answers it."""


class Transport(Protocol):
    """The message-agnostic transport the node drives."""

    async def start(self) -> None:
        """Start serving (for TCP: bind and listen). Called once, before anything else."""
        ...

    def send(self, message: PeerMessage) -> None:
        """Queue ``message`` for the node ``message.dst``. Never blocks and never raises for
        network trouble: what cannot be delivered is dropped (Raft retries)."""
        ...

    def flush(self) -> None:
        """Put queued messages on the wire now (called before a blocking fsync)."""
        ...

    def reject_peer(self, peer_id: int, reason: str) -> None:
        """The node rejected a message from ``peer_id`` (``reason`` says why): close the
        connection that peer's messages arrive on, so whatever sent it must reconnect. Never
        blocks or raises; does nothing when there is no such connection."""
        ...

    async def close(self) -> None:
        """Stop serving and release every connection. Idempotent; afterwards :meth:`send`
        does nothing."""
        ...


@runtime_checkable
class CountingTransport(Protocol):
    """A transport that keeps counters: it owns and updates ``counters`` in place; the node
    only reads them (``RaftNode.stats.transport``)."""

    @property
    def counters(self) -> TransportStats:
        """The live counters (the same object for the transport's whole life)."""
        ...


@runtime_checkable
class RefusingTransport(Protocol):
    """A transport that refuses members whose data directory changed (they lost their disk;
    see :mod:`raftpy.storage.peers`) and says which."""

    def refused_peers(self) -> dict[int, str]:
        """The members refused now: id -> why."""
        ...


def refused_peers(transport: object) -> dict[int, str]:
    """The members ``transport`` refuses for a changed data directory (none for a transport
    that does not check)."""
    # What isinstance(transport, RefusingTransport) checks, without its cost (a runtime
    # protocol check walks the protocol's attributes each time; status() asks at each call).
    method = getattr(transport, "refused_peers", None)
    return method() if callable(method) else {}


TransportFactory = Callable[[MessageCallback, ClientRequestCallback], Transport]
"""Builds the transport given the node's two inbound callbacks (peer message, client request)."""
