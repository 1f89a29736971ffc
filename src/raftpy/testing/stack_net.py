"""An in-memory network for whole-stack simulation, on a virtual-time loop (for tests).

:class:`SimNetwork` carries two kinds of traffic, both timed by the loop's virtual clock and
faulted by one seeded ``random.Random``:

- **Peer messages**, through :class:`SimTransport`, the node's
  :class:`~raftpy.transport.base.Transport`: each message is encoded and decoded as on the
  wire (the real codec) and may be lost, duplicated, delayed or reordered
  (:class:`LinkFaults`), or cut by a partition. Raft tolerates all of these (Raft §5.3).
- **Client streams**: :meth:`SimNetwork.open` serves ``loop.create_connection`` for the real
  :class:`~raftpy.client.Client`; the node's side speaks the real client protocol (handshake,
  length-prefixed frames, :class:`~raftpy.transport.protocol.ClientRequest`). A stream is in
  order, like TCP; a partition or a node's crash resets it (the client sees the connection
  lost, possibly after sending), and connecting to a node that is down is refused.

Node "addresses" are ``n<id>:7000``; clients live on the far side of the ``CLIENTS`` end, so
a partition can cut clients off from some nodes too.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from raftpy.core.messages import PeerMessage, decode_message, encode_message
from raftpy.errors import RemoteProtocolError
from raftpy.testing.stack_loop import VirtualTimeLoop
from raftpy.transport.base import ClientConnectionLike, ClientRequestCallback, Transport
from raftpy.transport.codec import FrameDecoder, encode_frame
from raftpy.transport.protocol import (
    ClientRequest,
    ClientResponse,
    HelloReply,
    client_decoder,
    decode_hello,
    encode_frame_payload,
)

CLIENTS: Final = 0
"""The network end simulated clients sit on by default (node ids start at 1)."""

client_end: contextvars.ContextVar[int] = contextvars.ContextVar("client_end", default=CLIENTS)
"""The network end of the client running in this context: a simulator sets it (to a number
no node uses) before it creates a client, so a partition can split the clients too."""


def node_address(node_id: int) -> str:
    """The simulated address of node ``node_id``."""
    return f"n{node_id}:7000"


def address_node(host: str) -> int | None:
    """The node id of simulated host ``host`` (``"n3"`` -> 3), or ``None``."""
    if host.startswith("n") and host[1:].isdigit():
        return int(host[1:])
    return None


GRID: Final = 0.001
"""Peer messages arrive on a grid of this many seconds: those due at a node in the same slot
arrive together, in one callback, and the node handles them in one pass of its loop (as a
busy node reads several messages per wake-up); it saves the simulation a good share of its
time."""


@dataclass(slots=True)
class LinkFaults:
    """How peer messages travel: each is lost with ``loss``, sent twice with ``duplicate``,
    and arrives after a delay drawn between ``min_delay`` and ``max_delay`` seconds; without
    ``reorder`` a link keeps its messages in order (a later one never overtakes)."""

    loss: float = 0.0
    duplicate: float = 0.0
    min_delay: float = 0.0005
    max_delay: float = 0.002
    reorder: bool = False


class SimNetwork:
    """The in-memory network (see the module docstring). ``rng`` drives every fault."""

    def __init__(self, loop: VirtualTimeLoop, rng: random.Random) -> None:
        self.loop = loop
        self.rng = rng
        self.faults = LinkFaults()
        self.endpoints: dict[int, SimTransport] = {}
        self._cut: set[tuple[int, int]] = set()  # (a, b) with a < b: no traffic either way
        self._last_arrival: dict[tuple[int, int], float] = {}
        # What is on its way, by receiving process (its context's id) and arrival slot (GRID).
        self._batches: dict[tuple[int, int], list[tuple[Callable[..., None], tuple[Any, ...]]]]
        self._batches = {}
        self.delivered = 0
        self.dropped = 0
        self.duplicated = 0

    # -- partitions ---------------------------------------------------------------------------

    def partition(self, *groups: set[int]) -> None:
        """Cut every link between two different ``groups`` (ends in no group keep their
        links); client streams crossing a cut are reset."""
        self.heal()
        for i, a in enumerate(groups):
            for b in groups[i + 1 :]:
                for x in a:
                    for y in b:
                        self._cut.add((min(x, y), max(x, y)))
        for t in list(self.endpoints.values()):
            t.reset_cut_streams()

    def isolate(self, node_id: int, ends: set[int]) -> None:
        """Cut ``node_id`` off from every other end in ``ends``."""
        self.partition({node_id}, ends - {node_id})

    def heal(self) -> None:
        self._cut.clear()

    def connected(self, a: int, b: int) -> bool:
        if not self._cut:
            return True  # no partition: most of the time
        return ((a, b) if a < b else (b, a)) not in self._cut

    # -- peer messages ------------------------------------------------------------------------

    def _delay(self, link: tuple[int, int], ordered: bool) -> float:
        f = self.faults
        # rng.uniform(min_delay, max_delay), inlined: the same draw, the same number.
        lo = f.min_delay
        at = self.loop._now + (lo + (f.max_delay - lo) * self.rng.random())
        if ordered:
            at = max(at, self._last_arrival.get(link, 0.0))
            self._last_arrival[link] = at
        return at

    def send(self, src: int, message: PeerMessage) -> None:
        dst = message.dst
        target = self.endpoints.get(dst)
        if target is None or (self._cut and not self.connected(src, dst)):
            self.dropped += 1
            return
        f = self.faults
        if f.loss and self.rng.random() < f.loss:
            self.dropped += 1
            return
        data = encode_message(message)
        if f.duplicate and self.rng.random() < f.duplicate:
            self.duplicated += 1
            self.deliver(
                self._delay((src, dst), not f.reorder),
                target.context,
                self._arrive,
                src,
                target,
                data,
            )
        self.deliver(
            self._delay((src, dst), not f.reorder), target.context, self._arrive, src, target, data
        )

    def deliver(
        self, at: float, context: contextvars.Context, fn: Callable[..., None], *args: Any
    ) -> float:
        """Call ``fn(*args)`` in ``context`` (the receiving process: its clock, held while it
        is paused) at the first slot of :data:`GRID` not before ``at``, in one callback with
        whatever else reaches that process in that slot, in the order it was sent. Returns
        the slot's time."""
        slot = math.ceil(at / GRID - 1e-9)
        key = (id(context), slot)  # a pending batch holds its context: the id stays unique
        batch = self._batches.get(key)
        if batch is None:
            batch = self._batches[key] = []
            self.loop.call_at_true(slot * GRID, self._deliver_batch, key, context=context)
        batch.append((fn, args))
        return slot * GRID

    def _deliver_batch(self, key: tuple[int, int]) -> None:
        for fn, args in self._batches.pop(key):
            fn(*args)

    def _arrive(self, src: int, target: SimTransport, data: bytes) -> None:
        # A message in flight is lost if its receiver restarted (a new transport) or a
        # partition came up meanwhile, as a TCP connection's unread bytes would be.
        if target.closed or not self.connected(src, target.node_id):
            self.dropped += 1
            return
        self.delivered += 1
        target.on_message(decode_message(data))

    def factory(
        self, node_id: int
    ) -> Callable[[Callable[[PeerMessage], None], ClientRequestCallback], Transport]:
        """The node's ``transport_factory``."""

        def make(
            on_message: Callable[[PeerMessage], None], on_client: ClientRequestCallback
        ) -> Transport:
            return SimTransport(self, node_id, on_message, on_client)

        return make

    # -- client streams -----------------------------------------------------------------------

    async def open(
        self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: str, port: int
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        """``loop.create_connection`` for a simulated client (see the module docstring)."""
        node_id = address_node(host)
        await asyncio.sleep(self.rng.uniform(self.faults.min_delay, self.faults.max_delay))
        target = None if node_id is None else self.endpoints.get(node_id)
        if node_id is None or target is None:
            raise ConnectionRefusedError(f"connection to {host}:{port} refused (simulated)")
        end = client_end.get()
        if not self.connected(end, node_id):
            # No answer at all, as behind a partition: the client's connect timeout ends it.
            await self.loop.create_future()
        near = StreamEnd(self, end, node_id, contextvars.copy_context())
        server_end = StreamEnd(self, node_id, end, target.context)
        near.other, server_end.other = server_end, near
        server = _ClientServer(target)
        proto = protocol_factory()
        near.attach(proto)
        server_end.attach(server)
        target.streams[server_end] = None
        return near, proto


class StreamEnd(asyncio.Transport):
    """One end of an in-memory, in-order byte stream (a simulated TCP connection)."""

    def __init__(
        self, net: SimNetwork, here: int, there: int, context: contextvars.Context
    ) -> None:
        super().__init__()
        self.net = net
        self.context = context
        """Where what this end receives runs (its process: its clock, its pauses)."""
        self.here = here
        self.there = there
        self.other: StreamEnd | None = None
        self.proto: asyncio.BaseProtocol | None = None
        self._closing = False
        self._lost = False
        self._last = 0.0

    def attach(self, proto: asyncio.BaseProtocol) -> None:
        self.proto = proto
        proto.connection_made(self)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return (f"n{self.there}", 7000)
        return default

    def is_closing(self) -> bool:
        return self._closing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self.other is None:
            return
        if not self.net.connected(self.here, self.there):
            self.reset("connection reset (simulated partition)")
            return
        f = self.net.faults
        now = self.net.loop.true_time()
        at = max(now + self.net.rng.uniform(f.min_delay, f.max_delay), self._last)
        other = self.other
        self._last = self.net.deliver(at, other.context, other._receive, bytes(data))

    def _receive(self, data: bytes) -> None:
        if self._lost or self.proto is None:
            return
        proto = self.proto
        if isinstance(proto, asyncio.BufferedProtocol):
            view = memoryview(data)
            while view:
                buf = memoryview(proto.get_buffer(len(view)))
                n = min(len(buf), len(view))
                buf[:n] = view[:n]
                proto.buffer_updated(n)
                view = view[n:]
        else:
            assert isinstance(proto, asyncio.Protocol)
            proto.data_received(data)

    def close(self) -> None:
        """Close after what was written arrives: the other end then sees the end of the
        stream."""
        if self._closing:
            return
        self._closing = True
        other = self.other
        loop = self.net.loop
        loop.call_soon(self._gone, None, context=self.context)
        if other is not None:
            # After the last bytes written: in their batch or a later one.
            self.net.deliver(max(loop.true_time(), self._last), other.context, other._gone, None)

    def abort(self) -> None:
        self.reset("connection aborted")

    def reset(self, reason: str) -> None:
        """Break the stream at once, both ends (unsent and unread bytes are lost)."""
        for end in (self, self.other):
            if end is not None and not end._closing:
                end._closing = True
                self.net.loop.call_soon(
                    end._gone, ConnectionResetError(reason), context=end.context
                )

    def _gone(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        if self.proto is not None:
            self.proto.connection_lost(exc)

    # asyncio.Transport's flow control: the simulated stream never pushes back.
    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


class _ClientServer(asyncio.Protocol):
    """The node's side of a client stream: the handshake, then requests to the node."""

    def __init__(self, owner: SimTransport) -> None:
        self.owner = owner
        self.decoder = FrameDecoder(owner.max_client_frame_bytes)
        self.stream: StreamEnd | None = None
        self.ready = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, StreamEnd)
        self.stream = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stream is not None:
            self.owner.streams.pop(self.stream, None)

    def data_received(self, data: bytes) -> None:
        stream = self.stream
        assert stream is not None
        try:
            for payload in self.decoder.feed(data):
                self._on_frame(stream, payload)
        except Exception as exc:  # a malformed frame costs this connection only
            stream.reset(f"protocol error: {exc}")

    def _on_frame(self, stream: StreamEnd, payload: bytes) -> None:
        owner = self.owner
        if not self.ready:
            decode_hello(payload)
            self.ready = True
            reply = HelloReply(True, owner.node_id, max_frame_bytes=owner.max_client_frame_bytes)
            stream.write(encode_frame(encode_frame_payload(reply)))
            return
        request = client_decoder.decode(payload)
        if not isinstance(request, ClientRequest):
            raise RemoteProtocolError("a client sent a frame that is not a ClientRequest")
        owner.on_client(_Answerer(stream), request)


class _Answerer:
    """Answers one client stream's requests (the node's ``ClientConnectionLike``)."""

    __slots__ = ("stream",)

    def __init__(self, stream: StreamEnd) -> None:
        self.stream = stream

    def respond(self, response: ClientResponse) -> None:
        self.stream.write(encode_frame(encode_frame_payload(response)))


class SimTransport:
    """One node's end of a :class:`SimNetwork`: its peer messages and its client streams."""

    def __init__(
        self,
        net: SimNetwork,
        node_id: int,
        on_message: Callable[[PeerMessage], None],
        on_client: ClientRequestCallback,
        max_client_frame_bytes: int = 1 << 20,
    ) -> None:
        self.net = net
        self.node_id = node_id
        self.on_message = on_message
        self.on_client = on_client
        self.max_client_frame_bytes = max_client_frame_bytes
        self.closed = False
        self.context = contextvars.copy_context()
        """The node's context (it makes its transport while starting): deliveries run there."""
        # Insertion-ordered (a dict, not a set): resets happen in an order that does not
        # depend on object addresses, so runs repeat exactly.
        self.streams: dict[StreamEnd, None] = {}
        self.rejected: list[tuple[int, str]] = []

    async def start(self) -> None:
        self.net.endpoints[self.node_id] = self

    def send(self, message: PeerMessage) -> None:
        if not self.closed:
            self.net.send(self.node_id, message)

    def flush(self) -> None:
        """Messages are already scheduled."""

    def reject_peer(self, peer_id: int, reason: str) -> None:
        self.rejected.append((peer_id, reason))

    def reset_cut_streams(self) -> None:
        for stream in list(self.streams):
            if not self.net.connected(stream.here, stream.there):
                stream.reset("connection reset (simulated partition)")

    def kill(self) -> None:
        """The node's process died: every stream resets and nothing more is sent."""
        self.closed = True
        if self.net.endpoints.get(self.node_id) is self:
            del self.net.endpoints[self.node_id]
        for stream in list(self.streams):
            stream.reset("connection reset (simulated crash)")
        self.streams.clear()

    async def close(self) -> None:
        self.kill()


_CHECK: Callable[[SimTransport], Transport] = lambda t: t  # noqa: E731 - checked by mypy
_ANSWER: Callable[[_Answerer], ClientConnectionLike] = lambda a: a  # noqa: E731
