"""The fault proxy: an asyncio TCP proxy (no root needed) with one listening port per ordered
pair of nodes, which blocks, delays and drops each direction of each link on its own.

Node *i* listens on its real port. Every node also has one *member port* on the proxy, the
address the others know it by: the member list a node is started with names itself at its real
address and every other member *j* at *j*'s member port, and the membership the cluster records
(members' addresses live in the log, so every node dials *j* at the same address) names *j* at
its member port too. The proxy tells who dials a member port from the handshake (the dialer's
node id is in its first frame), so a message from *i* to *j* crosses link (i, j) whichever
address book it was dialed from (a node dials each peer for its own outbound messages, see
:mod:`raftpy.transport.tcp`). Clients use the ports of the links instead: one port per ordered
pair, so a client "living on" node *i* reaches *j* through link (i, j) and is partitioned with
*i*, and it reaches *i* itself through *i*'s *home port* (never faulted). A node that does not
lead names the leader's recorded address (its member port) in its answers; on the links and
home ports the proxy rewrites that hint to the port the client should use (the link from its
home to the leader), so that a redirected client keeps crossing its home's links. A client
that dials a member port anyway (one given every node's real address) passes unfaulted.

The proxy understands the framing (a 4-byte length before each frame), so it drops whole
messages, never a stream's bytes in the middle of a frame; the first frame in each direction
(the handshake) is never dropped. A connection opened while its link is blocked is swallowed
(accepted and never answered), as a partition swallows a SYN.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from raftpy.transport.address import format_address
from raftpy.transport.protocol import ClientResponse, ConnectionRole, client_decoder, decode_hello

__all__ = ["HOST", "FaultProxy", "LinkFaults", "LinkStats"]

HOST: Final = "127.0.0.1"
"""Where the harness runs everything: the proxy ports and the servers."""

_READ_CHUNK: Final = 1 << 16
_DELAY_QUEUE_BYTES: Final = 16 << 20  # per direction of a connection; more is dropped
_DIAL_TIMEOUT: Final = 2.0
_HANDSHAKE_TIMEOUT: Final = 5.0  # a member port waits this long for the dialer's first frame
_MAX_HANDSHAKE_BYTES: Final = 64 << 10


@dataclass
class LinkFaults:
    """The faults of one direction of one link (messages from ``src`` to ``dst``).

    ``blocked``: every message is dropped and new connections are swallowed. ``delay`` (plus a
    uniform ``[0, jitter)``) seconds are added to each message, order kept (as TCP keeps it).
    ``drop``: the probability that a message is lost.
    """

    blocked: bool = False
    delay: float = 0.0
    jitter: float = 0.0
    drop: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.blocked and self.delay <= 0 and self.jitter <= 0 and self.drop <= 0


@dataclass
class LinkStats:
    """What crossed one direction of one link."""

    connections: int = 0
    swallowed: int = 0
    refused: int = 0
    forwarded: int = 0
    dropped: int = 0
    bytes: int = 0


@dataclass
class _Link:
    src: int
    dst: int
    faults: LinkFaults = field(default_factory=LinkFaults)
    stats: LinkStats = field(default_factory=LinkStats)
    port: int = 0


class _Pump:
    """Copies frames from ``reader`` to ``writer`` under the faults of ``link``."""

    def __init__(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        rng: random.Random,
        *,
        handshake_sent: bool = False,
        rewrite: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self._link = link
        self._first = not handshake_sent
        self._rewrite = rewrite
        self._reader = reader
        self._writer = writer
        self._rng = rng
        self._queue: deque[tuple[float, bytes]] = deque()
        self._queued_bytes = 0
        self._last_release = 0.0
        self._sender: asyncio.Task[None] | None = None

    async def run(self) -> None:
        buf = bytearray()
        first = self._first
        link = self._link
        stats = link.stats
        rng = self._rng
        try:
            while True:
                data = await self._reader.read(_READ_CHUNK)
                if not data:
                    break
                buf += data
                out = bytearray()
                pos = 0
                size = len(buf)
                faults = link.faults
                while size - pos >= 4:
                    end = pos + 4 + int.from_bytes(buf[pos : pos + 4], "big")
                    if end > size:
                        break
                    if first:  # the handshake always passes
                        first = False
                        keep = True
                    elif faults.blocked:
                        keep = False
                    else:
                        keep = not (faults.drop > 0 and rng.random() < faults.drop)
                    if keep:
                        if self._rewrite is not None:
                            out += self._rewrite(bytes(buf[pos:end]))
                        else:
                            out += buf[pos:end]
                        stats.forwarded += 1
                    else:
                        stats.dropped += 1
                    pos = end
                if pos:
                    del buf[:pos]
                if out:
                    stats.bytes += len(out)
                    await self._send(bytes(out), faults)
        finally:
            if self._sender is not None:
                self._sender.cancel()

    async def _send(self, data: bytes, faults: LinkFaults) -> None:
        delay = faults.delay
        if faults.jitter > 0:
            delay += self._rng.random() * faults.jitter
        if delay <= 0 and not self._queue:
            self._writer.write(data)
            await self._writer.drain()
            return
        if self._queued_bytes + len(data) > _DELAY_QUEUE_BYTES:
            self._link.stats.dropped += 1  # a congested slow link loses what does not fit
            return
        loop = asyncio.get_running_loop()
        release = max(self._last_release, loop.time() + delay)
        self._last_release = release
        self._queue.append((release, data))
        self._queued_bytes += len(data)
        if self._sender is None or self._sender.done():
            self._sender = loop.create_task(self._drain_queue())

    async def _drain_queue(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):
            while self._queue:
                release, data = self._queue[0]
                wait = release - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._queue.popleft()
                self._queued_bytes -= len(data)
                self._writer.write(data)
                await self._writer.drain()


class FaultProxy:
    """A proxy with one port per ordered pair of nodes and one member port per node, to block,
    delay and drop each direction of each link (see the module docstring).

    ``nodes``: the member ids. Call :meth:`start` (binds the proxy ports), then
    :meth:`set_target` for every node (where the node really listens), then hand each node
    :meth:`member_addresses` as its member list. A connection accepted on the port of link
    (a, b) is dialed on to node b; frames from the dialer to b obey the faults of (a, b), the
    frames coming back obey those of (b, a), with leader hints rewritten for a client living
    on a. A connection accepted on b's member port does the same for the link (a, b) of the
    node a named in its handshake (one that names no other member passes unfaulted); one on
    b's home port passes unfaulted, with hints rewritten for a client living on b.
    """

    def __init__(self, nodes: Iterable[int], *, host: str = HOST, seed: int | None = None):
        self.nodes = sorted(set(nodes))
        if len(self.nodes) < 1:
            raise ValueError("a proxy needs at least one node")
        self.host = host
        self._rng = random.Random(seed)
        self._links: dict[tuple[int, int], _Link] = {
            (a, b): _Link(a, b) for a in self.nodes for b in self.nodes if a != b
        }
        # What dials a member port without naming a member in its handshake (a client given
        # real addresses, following a leader hint): never faulted. A client's home port: the
        # same, with hints rewritten.
        self._client_links: dict[int, tuple[_Link, _Link]] = {
            n: (_Link(0, n), _Link(n, 0)) for n in self.nodes
        }
        self._home_ports: dict[int, int] = {}
        self.hints_rewritten = 0
        """Leader hints rewritten to a client's own link so far."""
        self._member_ports: dict[int, int] = {}
        self._targets: dict[int, tuple[str, int]] = {}
        self._servers: list[asyncio.Server] = []
        self._handlers: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._started = False

    async def start(self) -> None:
        """Bind a port for every link (chosen by the kernel)."""
        if self._started:
            raise RuntimeError("the proxy is already started")
        self._started = True
        for link in self._links.values():

            async def handle(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link = link
            ) -> None:
                await self._handle(link, reader, writer)

            server = await asyncio.start_server(handle, self.host, 0)
            self._servers.append(server)
            link.port = int(server.sockets[0].getsockname()[1])
        for node in self.nodes:

            async def handle_member(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dst: int = node
            ) -> None:
                await self._handle_member(dst, reader, writer)

            server = await asyncio.start_server(handle_member, self.host, 0)
            self._servers.append(server)
            self._member_ports[node] = int(server.sockets[0].getsockname()[1])

            async def handle_home(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, home: int = node
            ) -> None:
                link, back = self._client_links[home]
                await self._handle(link, reader, writer, back=back, hints_for=home)

            server = await asyncio.start_server(handle_home, self.host, 0)
            self._servers.append(server)
            self._home_ports[node] = int(server.sockets[0].getsockname()[1])

    def set_target(self, node: int, host: str, port: int) -> None:
        """Where ``node`` really listens (connections to it are dialed on there)."""
        if node not in self.nodes:
            raise KeyError(f"node {node} is not a member")
        self._targets[node] = (host, port)

    def address(self, src: int, dst: int) -> str:
        """The address at which ``src`` (or a client living on ``src``) dials ``dst``."""
        link = self._links[(src, dst)]
        if not link.port:
            raise RuntimeError("the proxy is not started")
        return format_address(self.host, link.port)

    def member_address(self, node: int) -> str:
        """``node``'s member port: the address every other node dials it at, and the one the
        cluster's membership should record for it."""
        port = self._member_ports.get(node)
        if port is None:
            raise RuntimeError("the proxy is not started")
        return format_address(self.host, port)

    def home_address(self, node: int) -> str:
        """Where a client living on ``node`` reaches ``node`` itself (never faulted)."""
        port = self._home_ports.get(node)
        if port is None:
            raise RuntimeError("the proxy is not started")
        return format_address(self.host, port)

    def client_address(self, home: int, node: int) -> str:
        """Where a client living on ``home`` reaches ``node``: the home port, or the link."""
        return self.home_address(home) if node == home else self.address(home, node)

    def member_addresses(self, node: int) -> dict[int, str]:
        """The member list to start ``node`` with: itself at its real address, every other
        member at its member port."""
        host, port = self._targets[node]
        members = {node: format_address(host, port)}
        for other in self.nodes:
            if other != node:
                members[other] = self.member_address(other)
        return members

    # -- faults ------------------------------------------------------------------------------

    def faults(self, src: int, dst: int) -> LinkFaults:
        """The faults of the direction ``src`` -> ``dst`` (a live object; changes apply to the
        next message)."""
        return self._links[(src, dst)].faults

    def set_faults(
        self,
        src: int,
        dst: int,
        *,
        blocked: bool | None = None,
        delay: float | None = None,
        jitter: float | None = None,
        drop: float | None = None,
    ) -> None:
        """Change some faults of the direction ``src`` -> ``dst``."""
        f = self._links[(src, dst)].faults
        if blocked is not None:
            f.blocked = blocked
        if delay is not None:
            f.delay = max(0.0, delay)
        if jitter is not None:
            f.jitter = max(0.0, jitter)
        if drop is not None:
            if not 0.0 <= drop <= 1.0:
                raise ValueError(f"drop must be a probability, got {drop}")
            f.drop = drop

    def block(self, src: int, dst: int) -> None:
        """Drop every message from ``src`` to ``dst`` (one direction)."""
        self._links[(src, dst)].faults.blocked = True

    def unblock(self, src: int, dst: int) -> None:
        self._links[(src, dst)].faults.blocked = False

    def partition(self, groups: Sequence[Iterable[int]]) -> None:
        """Cut the network into ``groups``: messages cross no group boundary, either way.
        A node in no group is cut off from every other node. Replaces earlier blocks."""
        side: dict[int, int] = {}
        for k, group in enumerate(groups):
            for node in group:
                if node in side:
                    raise ValueError(f"node {node} is in two groups")
                if node not in self.nodes:
                    raise ValueError(f"node {node} is not a member")
                side[node] = k
        for (a, b), link in self._links.items():
            sa, sb = side.get(a, -1 - a), side.get(b, -1 - b)
            link.faults.blocked = sa != sb

    def isolate(self, node: int) -> None:
        """Cut ``node`` off from every other node (both directions)."""
        self.partition([[n for n in self.nodes if n != node]])

    def heal(self) -> None:
        """Remove every fault of every link."""
        for link in self._links.values():
            link.faults = LinkFaults()

    @property
    def healthy(self) -> bool:
        return all(link.faults.clean for link in self._links.values())

    def stats(self) -> dict[tuple[int, int], LinkStats]:
        """Per-direction counters, by (src, dst)."""
        return {key: link.stats for key, link in self._links.items()}

    # -- connections -------------------------------------------------------------------------

    async def _handle_member(
        self, dst: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """A connection to ``dst``'s member port: the dialer's handshake says which link it
        crosses."""
        try:
            async with asyncio.timeout(_HANDSHAKE_TIMEOUT):
                header = await reader.readexactly(4)
                size = int.from_bytes(header, "big")
                if size > _MAX_HANDSHAKE_BYTES:
                    raise ValueError("handshake frame too large")
                payload = await reader.readexactly(size)
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
            writer.transport.abort()
            return
        src = self._sender(payload, dst)
        if src is None:
            link, back = self._client_links[dst]
        else:
            link, back = self._links[(src, dst)], self._links[(dst, src)]
        await self._handle(link, reader, writer, back=back, handshake=header + payload)

    def _sender(self, payload: bytes, dst: int) -> int | None:
        """The member that sent handshake ``payload`` to ``dst`` (None: a client, or not a
        peer's handshake the proxy understands)."""
        try:
            hello = decode_hello(payload)
        except Exception:
            return None
        if hello.role is not ConnectionRole.PEER or hello.node_id is None:
            return None
        if hello.node_id == dst or hello.node_id not in self.nodes:
            return None
        return hello.node_id

    def _hint_rewriter(self, home: int) -> Callable[[bytes], bytes]:
        """Rewrites the leader hint in a client response frame to the address a client living
        on ``home`` should dial (other frames pass unchanged)."""

        def rewrite(frame: bytes) -> bytes:
            try:
                msg = client_decoder.decode(memoryview(frame)[4:])
            except Exception:
                return frame
            if (
                not isinstance(msg, ClientResponse)
                or msg.leader_address is None
                or msg.leader_id not in self._home_ports
            ):
                return frame
            address = self.client_address(home, msg.leader_id)
            if msg.leader_address == address:
                return frame
            self.hints_rewritten += 1
            payload = msgspec.msgpack.encode(msgspec.structs.replace(msg, leader_address=address))
            return len(payload).to_bytes(4, "big") + payload

        return rewrite

    async def _handle(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        back: _Link | None = None,
        handshake: bytes | None = None,
        hints_for: int | None = None,
    ) -> None:
        """Serve one accepted connection on ``link`` (frames coming back on ``back``, by
        default the reverse link). ``handshake``: the dialer's first frame, already read.
        ``hints_for``: rewrite leader hints for a client living on that node (by default, on
        a link's port, its source)."""
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self._writers.add(writer)
        link.stats.connections += 1
        if back is None:
            back = self._links[(link.dst, link.src)]
            hints_for = link.src
        up_writer: asyncio.StreamWriter | None = None
        try:
            if link.faults.blocked or back.faults.blocked:
                # A partition swallows the connection attempt: accept, never answer.
                link.stats.swallowed += 1
                while await reader.read(_READ_CHUNK):
                    pass
                return
            target = self._targets.get(link.dst)
            if target is None:
                link.stats.refused += 1
                return
            try:
                up_reader, upstream = await asyncio.wait_for(
                    asyncio.open_connection(*target), _DIAL_TIMEOUT
                )
            except (OSError, TimeoutError):
                link.stats.refused += 1  # the node is down: the dialer sees a closed socket
                return
            up_writer = upstream
            self._writers.add(upstream)
            if handshake is not None:  # the handshake always passes
                link.stats.forwarded += 1
                link.stats.bytes += len(handshake)
                upstream.write(handshake)
                await upstream.drain()
            pump = _Pump(link, reader, upstream, self._rng, handshake_sent=handshake is not None)
            tasks = [
                asyncio.ensure_future(pump.run()),
                asyncio.ensure_future(
                    _Pump(
                        back,
                        up_reader,
                        writer,
                        self._rng,
                        rewrite=None if hints_for is None else self._hint_rewriter(hints_for),
                    ).run()
                ),
            ]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    self._writers.discard(w)
                    w.transport.abort()
            if task is not None:
                self._handlers.discard(task)

    async def close(self) -> None:
        """Stop listening and cut every connection."""
        for server in self._servers:
            server.close()
        for w in list(self._writers):
            w.transport.abort()
        for t in list(self._handlers):
            t.cancel()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=2.0)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)
        self._servers.clear()
