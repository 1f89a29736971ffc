"""Live fuzz of the wire surface: hostile frames on real loopback connections, then proof
that the node still serves. Two targets: a bare :class:`~raftpy.transport.tcp.TcpTransport`
(the transport alone: what it does with any bytes), and node 1 of three real
:class:`~raftpy.node.RaftNode` instances (valid frames reach the consensus core; an expected
failure until forged peer messages are refused, see its reason).

Each connection is fresh and speaks one of three phases: frames before any handshake, frames
after a client handshake, frames after a peer handshake as member 2. Its frames come from
``tests/wirefuzz.py`` (valid, mutated, damaged, random, zero-length) and may end with a wrong
length (2^31, 2^32 - 1, longer than what follows) or a cut header before EOF. A connection stops
at its first frame the node must refuse (so nearly every frame sent is read by the node), and
several connections run at once. After each batch:

- a real :class:`~raftpy.client.Client` on a fresh connection writes a key and reads it back,
  and a real peer's message still arrives (the peer's own connection may have been replaced
  by the fuzz's, so it redials);
- memory traced since the first batch (``tracemalloc``, after a collection) has not grown by
  more than :data:`GROWTH_BOUND`;
- no exception reached the event loop's handler (a decoder or callback raising anything but a
  protocol error shows up there, even though asyncio then closes only that connection).

``RAFTPY_FUZZ_FRAMES`` sets how many frames (default 3,000 for the transport and 2,000 for the
nodes, seconds each);
``RAFTPY_FUZZ_FRAMES=1000000`` is the long run. The seed is printed; ``RAFTPY_SEED=N`` replays
it (the order in which parallel connections are served may differ; the frames do not).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import struct
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO, Final, Protocol

import msgspec
import pytest

from raftpy.client import Client
from raftpy.core.messages import (
    DECODE_ERRORS,
    PROTOCOL_VERSION,
    Heartbeat,
    PeerMessage,
    decode_message,
)
from raftpy.errors import RemoteProtocolError
from raftpy.node import RaftNode
from raftpy.node.config import NODE_RAFT_DEFAULTS, NodeConfig
from raftpy.transport.address import free_ports, parse_address
from raftpy.transport.codec import encode_frame
from raftpy.transport.protocol import (
    ClientOp,
    ClientRequest,
    ClientResponse,
    ConnectionRole,
    Hello,
    ResponseStatus,
    client_decoder,
    decode_hello,
    encode_frame_payload,
)
from raftpy.transport.tcp import ClientConnection, TcpTransport
from tests.wirefuzz import Kind, WireFuzzer, frames_from_env, seed_from_env

# A whole run is bounded too, by its length: at least 25 frames/s even on a loaded machine.
pytestmark = pytest.mark.timeout(max(300, frames_from_env(3000) // 25))

CLUSTER: Final = "fuzz-cluster"
CHECK_PREFIX: Final = b"check:"
GROWTH_BOUND: Final = 8 << 20
"""Traced memory may exceed the first batch's by this much at a batch's end (the long run's
logs, counters and allocator noise; a leak of one buffer per connection is far above it)."""
BATCH_FRAMES: Final = 1000
PARALLEL: Final = 16
VALID_SHARE: Final = 0.7
"""After a handshake, the share of frames that are valid (so a connection carries several
frames, served, before the hostile one that ends it)."""
CONNECTION_DEADLINE: Final = 15.0
"""Seconds one fuzz connection may take to be closed by the node after our EOF."""

PEER_HELLO: Final = encode_frame(
    encode_frame_payload(Hello(PROTOCOL_VERSION, ConnectionRole.PEER, CLUSTER, 2, 1))
)
CLIENT_HELLO: Final = encode_frame(
    encode_frame_payload(Hello(PROTOCOL_VERSION, ConnectionRole.CLIENT, CLUSTER))
)


class Phase:
    """What a fuzz connection has said before its fuzzed frames."""

    NONE = "before-handshake"
    CLIENT = "client"
    PEER = "peer"


class CheckStore:
    """The node's side for the fuzz: answers every client request at once; keeps only the
    health check's keys (``check:KEY=VALUE``), so what fuzz frames propose cannot look like
    a leak, and counts peer messages instead of keeping them."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.messages = 0
        self.requests = 0

    def on_message(self, message: PeerMessage) -> None:
        self.messages += 1

    def on_request(self, conn: ClientConnection, req: ClientRequest) -> None:
        self.requests += 1
        result = b""
        if req.data.startswith(CHECK_PREFIX):
            key, _, value = req.data[len(CHECK_PREFIX) :].partition(b"=")
            if req.op is ClientOp.PROPOSE:
                self.data[key] = value
            elif req.op is ClientOp.QUERY:
                result = self.data.get(key, b"")
        conn.respond(ClientResponse(req.id, ResponseStatus.OK, result=result))


@dataclass
class Run:
    """What one fuzz run did."""

    seed: int
    frames: int = 0
    connections: int = 0
    by_phase: dict[str, int] = field(default_factory=dict)
    checks: int = 0
    baseline: int = 0
    worst_growth: int = 0
    peak: int = 0
    loop_errors: list[dict[str, Any]] = field(default_factory=list)


def _accepted(phase: str, payload: bytes) -> bool:
    """Whether the node keeps a connection open after this frame (so more may follow)."""
    if phase == Phase.CLIENT:
        try:
            return isinstance(client_decoder.decode(payload), ClientRequest)
        except DECODE_ERRORS:
            return False
    if phase == Phase.PEER:
        try:
            message = decode_message(payload)
        except RemoteProtocolError:
            return False
        return message.src == 2 and message.dst == 1
    return False  # before the handshake: the Hello is the one frame that matters


def _role_after(payload: bytes) -> str | None:
    """The phase a connection enters when ``payload`` is its first frame (the node accepts
    the Hello), or None when the node refuses it. Node ids other than 2 are not predicted
    (the connection then just ends)."""
    try:
        hello = decode_hello(payload)
    except RemoteProtocolError:
        return None
    if hello.version != PROTOCOL_VERSION or hello.target_id not in (None, 1):
        return None
    if hello.role is ConnectionRole.CLIENT:
        return Phase.CLIENT if hello.cluster_id in (None, CLUSTER) else None
    return Phase.PEER if hello.cluster_id == CLUSTER and hello.node_id == 2 else None


def connection_bytes(fuzzer: WireFuzzer, phase: str, budget: int) -> tuple[bytes, int]:
    """One connection's bytes: the phase's handshake, then up to ``budget`` frames, ending at
    the first the node must refuse, sometimes with a bad last frame. Before the handshake the
    first frame is a generated Hello; when the node would accept it, the connection goes on
    in the role it claimed. Returns (bytes, frames)."""
    rng = fuzzer.rng
    prefix = {Phase.NONE: b"", Phase.CLIENT: CLIENT_HELLO, Phase.PEER: PEER_HELLO}[phase]
    parts = [prefix]
    frames = 0
    while frames < budget:
        if rng.random() < 0.05:
            parts.append(fuzzer.bad_ending())
            frames += 1
            break
        kind = {Phase.NONE: Kind.HANDSHAKE, Phase.CLIENT: Kind.CLIENT, Phase.PEER: Kind.PEER}[phase]
        if phase != Phase.NONE and rng.random() < VALID_SHARE:
            payload = fuzzer.encode(fuzzer.valid(kind, src=2, dst=1))
        else:
            payload = fuzzer.payload(kind, src=2, dst=1)
        parts.append(fuzzer.frame(payload))
        frames += 1
        if phase == Phase.NONE:
            role = _role_after(payload)
            if role is None:
                break
            phase = role
        elif not _accepted(phase, payload):
            break
    return b"".join(parts), frames


async def _drain_until_closed(reader: asyncio.StreamReader) -> None:
    try:
        while await reader.read(1 << 16):
            pass
    except ConnectionError:
        pass


async def send_one(address: str, data: bytes) -> None:
    """Write ``data`` on a fresh connection, half-close, and wait for the node to close."""
    host, port = parse_address(address)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        try:
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except ConnectionError:
            pass  # the node closed first: that is its answer
        async with asyncio.timeout(CONNECTION_DEADLINE):
            await _drain_until_closed(reader)
    finally:
        writer.transport.abort()


class Target(Protocol):
    """What the fuzz attacks: node 1 of a cluster whose member 2 the fuzz impersonates."""

    address: str

    def running(self) -> AbstractAsyncContextManager[Any]:
        """Start the cluster; stop it on the way out."""

    async def check(self, n: int) -> None:
        """Raise unless the node still serves a real client and a real peer."""

    def counters(self) -> dict[str, int]:
        """Node 1's transport counters."""


async def write_and_read_back(addresses: list[str], n: int) -> None:
    """A real client writes ``check:kN=vN`` on fresh connections and reads it back."""
    # Without a session: the transport target answers every request itself (CheckStore), so
    # it has no session to open; what is checked is that a plain write still gets through.
    async with Client(addresses, cluster_id=CLUSTER, timeout=20, sessions=False) as client:
        await client.propose(CHECK_PREFIX + b"k%d=v%d" % (n % 16, n))
        got = await client.query(CHECK_PREFIX + b"k%d" % (n % 16))
        assert got == b"v%d" % n, f"check {n}: read {got!r} back"


class TransportTarget:
    """Node 1 (the target) and node 2 (a real peer): bare transports, node 1 answering
    clients with :class:`CheckStore`."""

    def __init__(self) -> None:
        self.store = CheckStore()
        self.peer_inbox = CheckStore()
        placeholder = {1: "127.0.0.1:1", 2: "127.0.0.1:1"}
        self.node = TcpTransport(1, "127.0.0.1:0", placeholder, cluster_id=CLUSTER,
                                 on_message=self.store.on_message,
                                 on_client_request=self.store.on_request,
                                 backoff_initial=0.01, backoff_max=0.1)  # fmt: skip
        self.peer = TcpTransport(2, "127.0.0.1:0", placeholder, cluster_id=CLUSTER,
                                 on_message=self.peer_inbox.on_message,
                                 on_client_request=self.peer_inbox.on_request,
                                 backoff_initial=0.01, backoff_max=0.1)  # fmt: skip
        self.address = ""

    @asynccontextmanager
    async def running(self) -> AsyncIterator[TransportTarget]:
        try:
            await self.node.start()
            await self.peer.start()
            real = {1: self.node.bound_address, 2: self.peer.bound_address}
            self.node.update_peers(real)
            self.peer.update_peers(real)
            self.address = self.node.bound_address
            yield self
        finally:
            await self.peer.close()
            await self.node.close()

    async def check(self, n: int) -> None:
        await write_and_read_back([self.address], n)
        before = self.store.messages
        deadline = time.monotonic() + 10
        while self.store.messages == before:
            # Resent until it arrives: the fuzz may have replaced the peer's connection (as
            # member 2), and a message sent on a connection the node just closed is lost.
            self.peer.send(Heartbeat(term=1, src=2, dst=1, commit=0))
            await asyncio.sleep(0.01)
            assert time.monotonic() < deadline, f"check {n}: the real peer no longer gets through"

    def counters(self) -> dict[str, int]:
        return self.node.stats()

    def served(self, run: Run) -> None:
        # Valid frames among the hostile ones reached the callbacks.
        assert self.store.requests > run.checks * 2 and self.store.messages > run.checks


class CheckMachine:
    """A state machine for the node under fuzz: applies any command without raising (the
    fuzz is about the wire, not about a state machine's input checks) and keeps only the
    health check's keys, so its state stays small."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def apply(self, command: bytes) -> bytes:
        if command.startswith(CHECK_PREFIX):
            key, _, value = command[len(CHECK_PREFIX) :].partition(b"=")
            self.data[key] = value
        return b""

    def query(self, query: bytes) -> bytes:
        return self.data.get(query[len(CHECK_PREFIX) :], b"")

    def snapshot(self, out: BinaryIO) -> None:
        out.write(msgspec.msgpack.encode(self.data))

    def restore(self, inp: BinaryIO) -> None:
        self.data = msgspec.msgpack.decode(inp.read(), type=dict[bytes, bytes])


NODE_CONFIG: Final = NodeConfig(
    cluster_id=CLUSTER,
    tick_seconds=0.01,
    raft=replace(NODE_RAFT_DEFAULTS, election_ticks=20),
    exit_on_fatal=False,
    snapshot_entries=500,  # what the fuzz proposes is compacted away, not kept
)


class NodeTarget:
    """Three real :class:`~raftpy.node.RaftNode` instances in this process, on loopback TCP;
    the fuzz attacks node 1 (and impersonates node 2 to it)."""

    def __init__(self) -> None:
        ports = free_ports(3)
        self.peers = {i: f"127.0.0.1:{port}" for i, port in zip((1, 2, 3), ports, strict=True)}
        self.nodes = [
            RaftNode(i, self.peers[i], self.peers, CheckMachine(), None, NODE_CONFIG)
            for i in self.peers
        ]
        self.address = self.peers[1]

    @asynccontextmanager
    async def running(self) -> AsyncIterator[NodeTarget]:
        try:
            for node in self.nodes:
                await node.start()
            yield self
        finally:
            for node in self.nodes:
                await node.stop()

    async def check(self, n: int) -> None:
        for node in self.nodes:
            failed = node.status().failed
            assert failed is None, f"check {n}: node {node.node_id} has failed: {failed}"
        await write_and_read_back(list(self.peers.values()), n)

    def counters(self) -> dict[str, int]:
        transport = self.nodes[0]._transport
        assert isinstance(transport, TcpTransport)
        return transport.stats()


class FormatAndDiscard(logging.Handler):
    """Formats every record (so network text goes through the log path) and keeps none: a
    capturing handler would hold a record per bad connection and look like a leak."""

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)


@contextmanager
def logs_discarded() -> Iterator[None]:
    logger = logging.getLogger("raftpy")
    handler = FormatAndDiscard()
    saved = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.propagate = saved
        logger.removeHandler(handler)


def traced_now() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def fuzz(target: Target, frames: int, seed: int) -> Run:
    run = Run(seed)
    rng = random.Random(seed)
    fuzzer = WireFuzzer(rng, strings=(CLUSTER,))
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: run.loop_errors.append(context))
    phases = (Phase.NONE, Phase.CLIENT, Phase.PEER)
    address = target.address
    await target.check(0)
    next_check = BATCH_FRAMES
    started = time.perf_counter()
    while run.frames < frames:
        jobs = []
        for _ in range(PARALLEL):
            phase = rng.choice(phases)
            data, n = connection_bytes(fuzzer, phase, rng.randint(1, 40))
            run.frames += n
            run.connections += 1
            run.by_phase[phase] = run.by_phase.get(phase, 0) + n
            jobs.append(send_one(address, data))
        await asyncio.gather(*jobs)
        assert not run.loop_errors, f"seed {seed}: the loop saw {run.loop_errors[:3]}"
        if run.frames >= next_check or run.frames >= frames:
            next_check += BATCH_FRAMES
            run.checks += 1
            await target.check(run.checks)
            now = traced_now()
            if run.checks == 1:
                run.baseline = now  # after warm-up: caches, logging, interned names
            run.worst_growth = max(run.worst_growth, now - run.baseline)
            run.peak = max(run.peak, tracemalloc.get_traced_memory()[1])
            assert now - run.baseline <= GROWTH_BOUND, (
                f"seed {seed}: traced memory grew by {(now - run.baseline) >> 10} KiB "
                f"after {run.frames} frames"
            )
            if run.checks % 50 == 0:
                rate = run.frames / (time.perf_counter() - started)
                print(f"  {run.frames} frames, {rate:,.0f}/s, +{run.worst_growth >> 10} KiB")
    stats = target.counters()
    print(
        f"  node counters: malformed {stats['malformed_frames']}, "
        f"refused handshakes {stats['handshakes_refused']}, client requests "
        f"{stats['client_requests']}, peer messages {stats['messages_received']}"
    )
    assert stats["malformed_frames"] > 0 and stats["client_requests"] > run.checks * 2
    return run


def run_fuzz(
    target: Target,
    default_frames: int,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> Run:
    """The fuzz against ``target`` with the seed and length from the environment, under
    tracemalloc, printing what it did."""
    seed = seed_from_env()
    frames = frames_from_env(default_frames)
    name = type(target).__name__
    print(f"live wire fuzz of a {name}: seed {seed}, {frames} frames (replay: RAFTPY_SEED={seed})")

    async def body() -> Run:
        async with target.running():
            return await fuzz(target, frames, seed)

    tracemalloc.start()
    started = time.perf_counter()
    try:
        with logs_discarded(), asyncio.Runner(loop_factory=loop_factory) as runner:
            run = runner.run(body())
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - started
    print(
        f"  {run.frames} frames on {run.connections} connections {run.by_phase} in "
        f"{elapsed:.1f} s ({run.frames / elapsed:,.0f} frames/s); {run.checks} checks; "
        f"traced memory growth at most {run.worst_growth >> 10} KiB over "
        f"{run.baseline >> 10} KiB, peak {run.peak >> 20} MiB"
    )
    return run


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop] | None] = {"asyncio": None}
try:
    import uvloop

    LOOPS["uvloop"] = uvloop.new_event_loop
except ImportError:  # pragma: no cover - uvloop is optional
    pass


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_live_fuzz_leaves_the_transport_serving_with_bounded_memory(loop: str) -> None:
    """On the default loop and on uvloop: protocols see bytes differently on each."""
    target = TransportTarget()
    run = run_fuzz(target, 3000, LOOPS[loop])
    target.served(run)


def test_live_fuzz_leaves_a_real_node_serving_with_bounded_memory() -> None:
    run_fuzz(NodeTarget(), 2000)


def test_the_announced_lengths_reach_the_node() -> None:
    """The edge lengths the fuzz sends (0, 2^31, 2^32 - 1) are what the node reads: a fuzz
    whose frames were all refused by their length would never reach a decoder."""
    fuzzer = WireFuzzer(random.Random(3))
    lengths = set()
    for _ in range(2000):
        ending = fuzzer.bad_ending()
        if len(ending) >= 4:
            lengths.add(struct.unpack(">I", ending[:4])[0])
    assert {0, 2**31, 2**32 - 1} <= lengths
