"""The asyncio TCP transport on 127.0.0.1: delivery both ways, handshake refusals, malformed
input closing one connection only, reconnect with a bounded queue, client pipelining, and a
bounded, cancellation-safe close. Every wait has a deadline; ordering is awaited by polling a
condition, never by sleeping a fixed time."""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftpy.core.messages import (
    PROTOCOL_VERSION,
    AppendEntries,
    ConfState,
    Entry,
    EntryKind,
    Heartbeat,
    InstallSnapshot,
    PeerMessage,
    SnapshotMeta,
    encode_message,
)
from raftpy.errors import LocalProtocolError
from raftpy.transport.address import free_port, parse_address
from raftpy.transport.codec import encode_frame
from raftpy.transport.protocol import (
    ClientOp,
    ClientRequest,
    ClientResponse,
    ConnectionRole,
    Hello,
    HelloReply,
    ResponseStatus,
    client_decoder,
    encode_frame_payload,
    hello_decoder,
)
from raftpy.transport.tcp import ClientConnection, TcpTransport, _FrameReader

CLUSTER = "test-cluster"
T = TypeVar("T")


# -- helpers -----------------------------------------------------------------------------------


LOOP_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop] | None] = {"asyncio": None}
try:
    import uvloop

    LOOP_FACTORIES["uvloop"] = uvloop.new_event_loop
except ImportError:  # pragma: no cover - uvloop is optional
    pass
_loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None


@pytest.fixture(autouse=True, params=sorted(LOOP_FACTORIES))
def event_loop_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test runs on the default asyncio loop and, when installed, on uvloop: the
    transport must work on any loop."""
    global _loop_factory
    _loop_factory = LOOP_FACTORIES[request.param]
    yield request.param
    _loop_factory = None


def run(coro: Coroutine[Any, Any, T], seconds: float = 10.0) -> T:
    """Run one test body on a fresh event loop, bounded as a whole."""

    async def bounded() -> T:
        async with asyncio.timeout(seconds):
            return await coro

    with asyncio.Runner(loop_factory=_loop_factory) as runner:
        return runner.run(bounded())


async def until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll ``cond`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


class Node:
    """A transport plus what it received."""

    def __init__(self, node_id: int, peers: dict[int, str], **kw: Any) -> None:
        self.inbox: list[PeerMessage] = []
        self.requests: list[tuple[ClientConnection, ClientRequest]] = []
        on_request = kw.pop("on_client_request", None) or self._on_request
        self.t = TcpTransport(
            node_id,
            kw.pop("address", "127.0.0.1:0"),
            peers,
            cluster_id=kw.pop("cluster_id", CLUSTER),
            on_message=self.inbox.append,
            on_client_request=on_request,
            **kw,
        )

    def _on_request(self, conn: ClientConnection, req: ClientRequest) -> None:
        """Records every request; answers STATUS at once (the others wait for the test)."""
        self.requests.append((conn, req))
        if req.op is ClientOp.STATUS:
            conn.respond(ClientResponse(req.id, ResponseStatus.OK, result=b"fine"))

    def stat(self, name: str) -> int:
        return self.t.stats()[name]


@asynccontextmanager
async def cluster(n: int, **kw: Any) -> AsyncIterator[dict[int, Node]]:
    """``n`` started transports (ids 1..n) that know each other's real addresses."""
    placeholder = {i: "127.0.0.1:1" for i in range(1, n + 1)}
    nodes = {i: Node(i, placeholder, **kw) for i in range(1, n + 1)}
    try:
        for node in nodes.values():
            await node.t.start()
        real = {i: node.t.bound_address for i, node in nodes.items()}
        for node in nodes.values():
            node.t.update_peers(real)
        yield nodes
    finally:
        for node in nodes.values():
            await node.t.close()


def hb(src: int, dst: int, commit: int = 0) -> Heartbeat:
    return Heartbeat(term=1, src=src, dst=dst, commit=commit)


def append(src: int, dst: int, n: int, size: int, first: int = 1) -> AppendEntries:
    entries = tuple(Entry(1, i, EntryKind.COMMAND, b"x" * size) for i in range(first, first + n))
    return AppendEntries(1, src, dst, first - 1, 1 if first > 1 else 0, entries, 0)


def frame(obj: Hello | HelloReply | ClientRequest | ClientResponse) -> bytes:
    return encode_frame(encode_frame_payload(obj))


def msg_frame(message: PeerMessage) -> bytes:
    return encode_frame(encode_message(message))


def peer_hello(node_id: int, target: int | None = None, **kw: Any) -> Hello:
    fields: dict[str, Any] = {"version": PROTOCOL_VERSION, "cluster_id": CLUSTER}
    fields.update(kw)
    return Hello(role=ConnectionRole.PEER, node_id=node_id, target_id=target, **fields)


CLIENT_HELLO = Hello(PROTOCOL_VERSION, ConnectionRole.CLIENT)


async def connect(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = parse_address(address)
    return await asyncio.open_connection(host, port)


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">I", await reader.readexactly(4))
    return await reader.readexactly(size)


async def read_reply(reader: asyncio.StreamReader) -> HelloReply:
    reply = hello_decoder.decode(await read_frame(reader))
    assert isinstance(reply, HelloReply)
    return reply


async def read_response(reader: asyncio.StreamReader) -> ClientResponse:
    resp = client_decoder.decode(await read_frame(reader))
    assert isinstance(resp, ClientResponse)
    return resp


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """True once the other side closed (EOF or reset); reads and discards what comes first."""
    try:
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass
    return True


async def served(address: str) -> None:
    """A fresh client connection gets a handshake reply and an answer to a STATUS request."""
    reader, writer = await connect(address)
    try:
        writer.write(frame(CLIENT_HELLO) + frame(ClientRequest(1, ClientOp.STATUS)))
        assert (await read_reply(reader)).ok
        assert (await read_response(reader)).id == 1
    finally:
        writer.close()


# -- addresses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "want"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:9000", ("::1", 9000)),
        ("node-3.example:65535", ("node-3.example", 65535)),
    ],
    ids=["ipv4", "port0", "ipv6", "hostname"],
)
def test_parse_address(address: str, want: tuple[str, int]) -> None:
    assert parse_address(address, listen=True) == want


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "not of the form host:port"),
        (":8080", "no host"),
        ("h:port", "not a number"),
        ("h:-1", "not a number"),
        ("h:70000", "out of range"),
        ("::1:80", "brackets"),
        ("[]:80", "empty host"),
        ("h:0", "port 0"),
    ],
)
def test_parse_address_rejects_with_a_reason(address: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_address(address)


def test_bad_peer_address_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="peer 2"):
        Node(1, {1: "127.0.0.1:1", 2: "nowhere"})


# -- the zero-copy reader ----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.binary(max_size=700), max_size=12),
    st.lists(st.integers(min_value=1, max_value=900), min_size=1, max_size=8),
    st.sampled_from([16, 64, 1024]),
)
def test_reader_reassembles_frames_across_any_reads(
    payloads: list[bytes], cuts: list[int], bufsize: int
) -> None:
    """Whatever the read sizes and however small the buffer, every payload comes out whole and
    in order (the buffer grows for big frames and shrinks back)."""
    reader = _FrameReader(Node(1, {}).t, bufsize)
    got: list[bytes] = []
    reader._handle = lambda view: got.append(bytes(view))
    stream = b"".join(encode_frame(p) for p in payloads)
    pos = k = 0
    while pos < len(stream):
        buf = reader.get_buffer(-1)
        n = min(len(buf), cuts[k % len(cuts)], len(stream) - pos)
        assert n > 0
        buf[:n] = stream[pos : pos + n]
        del buf
        reader.buffer_updated(n)
        pos += n
        k += 1
    assert got == payloads
    assert reader._start == reader._end == 0


# -- delivery ----------------------------------------------------------------------------------


def test_three_transports_exchange_messages_every_way_in_order() -> None:
    async def body() -> None:
        async with cluster(3) as nodes:
            for src in nodes:
                for dst in nodes:
                    if src != dst:
                        for k in range(50):
                            nodes[src].t.send(hb(src, dst, commit=k))
                nodes[src].t.send(append(src, src % 3 + 1, n=64, size=100))
            await until(lambda: all(len(n.inbox) == 101 for n in nodes.values()), "delivery")
            for dst, node in nodes.items():
                for src in nodes:
                    if src != dst:
                        beats = [m for m in node.inbox if isinstance(m, Heartbeat) and m.src == src]
                        assert [m.commit for m in beats] == list(range(50))
                appends = [m for m in node.inbox if isinstance(m, AppendEntries)]
                assert len(appends) == 1 and len(appends[0].entries) == 64
            for node in nodes.values():
                stats = node.t.stats()
                assert stats["messages_sent"] == stats["messages_received"] == 101
                assert stats["peer_connects"] == 2 and stats["messages_dropped"] == 0

    run(body())


def test_messages_sent_in_one_iteration_go_out_in_one_write() -> None:
    async def body() -> None:
        async with cluster(2) as nodes:
            a, b = nodes[1], nodes[2]
            a.t.send(hb(1, 2))
            await until(lambda: len(b.inbox) == 1, "the connection")
            proto = a.t._links[2]._proto
            assert proto is not None
            writes: list[int] = []

            class CountingTransport:
                """Forwards to the real transport, counting writes (works on any loop)."""

                def __init__(self, real: asyncio.Transport) -> None:
                    self.real = real

                def write(self, data: bytes | bytearray | memoryview) -> None:
                    writes.append(len(data))
                    self.real.write(data)

                def __getattr__(self, name: str) -> Any:
                    return getattr(self.real, name)

            proto._transport = CountingTransport(proto.transport)  # type: ignore[assignment]
            for k in range(200):
                a.t.send(hb(1, 2, commit=k))
            await until(lambda: len(b.inbox) == 201, "delivery")
            assert len(writes) == 1, writes

    run(body())


def test_a_large_message_grows_the_buffer_and_smaller_ones_follow() -> None:
    async def body() -> None:
        async with cluster(2) as nodes:
            a, b = nodes[1], nodes[2]
            blob = bytes(range(256)) * (5 * 4096)  # 5 MiB: far beyond the read buffer
            meta = SnapshotMeta(10, 1, ConfState(voters=(1, 2)))
            snap = InstallSnapshot(1, 1, 2, meta, 0, blob, True)
            a.t.send(snap)
            a.t.send(hb(1, 2, commit=7))
            await until(lambda: len(b.inbox) == 2, "the snapshot and a heartbeat", timeout=10)
            assert b.inbox[0] == snap and b.inbox[1] == hb(1, 2, commit=7)

    run(body())


def test_unknown_destination_and_oversized_messages_are_dropped_and_counted() -> None:
    async def body() -> None:
        async with cluster(2, max_frame_bytes=10_000) as nodes:
            a, b = nodes[1], nodes[2]
            a.t.send(hb(1, 9))  # not a peer
            a.t.send(hb(1, 1))  # ourselves
            a.t.send(append(1, 2, n=1, size=20_000))
            a.t.send(hb(1, 2))
            await until(lambda: len(b.inbox) == 1, "the heartbeat")
            stats = a.t.stats()
            assert stats["dropped_no_route"] == 2
            assert stats["dropped_too_large"] == 1
            assert stats["messages_dropped"] == 3

    run(body())


def test_a_callback_that_raises_is_logged_and_the_connection_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> None:
        async with cluster(2) as nodes:
            a, b = nodes[1], nodes[2]
            real_append = b.inbox.append

            def flaky(message: PeerMessage) -> None:
                real_append(message)
                if len(b.inbox) == 1:
                    raise RuntimeError("node bug")

            b.t._on_message = flaky
            a.t.send(hb(1, 2, commit=1))
            a.t.send(hb(1, 2, commit=2))
            await until(lambda: len(b.inbox) == 2, "both messages")
            assert b.stat("malformed_frames") == 0 and b.stat("peer_connections") == 1

    with caplog.at_level(logging.ERROR, logger="raftpy.transport"):
        run(body())
    assert "on_message raised" in caplog.text and "node bug" in caplog.text


def test_update_peers_forgets_a_removed_member() -> None:
    async def body() -> None:
        async with cluster(3) as nodes:
            a = nodes[1]
            for dst in (2, 3):
                a.t.send(hb(1, dst))
            nodes[2].t.send(hb(2, 1))
            await until(lambda: len(nodes[2].inbox) == len(a.inbox) == 1, "delivery")
            real = {i: n.t.bound_address for i, n in nodes.items()}
            a.t.update_peers({1: real[1], 3: real[3]})
            a.t.send(hb(1, 2))
            a.t.send(hb(1, 3))
            await until(lambda: len(nodes[3].inbox) == 2, "delivery to the remaining member")
            assert a.stat("dropped_no_route") == 1 and len(nodes[2].inbox) == 1
            # 2's connection to 1 was closed, and 1 now refuses 2 as a stranger.
            nodes[2].t.send(hb(2, 1))
            await until(lambda: a.stat("handshakes_refused") >= 1, "the refusal")
            assert len(a.inbox) == 1

    run(body())


def test_start_on_a_busy_port_raises_oserror() -> None:
    async def body() -> None:
        async with cluster(1) as nodes:
            other = Node(2, {}, address=nodes[1].t.bound_address)
            with pytest.raises(OSError):
                await other.t.start()
            await other.t.close()
            with pytest.raises(LocalProtocolError):
                await nodes[1].t.start()

    run(body())


# -- reconnect and queue bounds ----------------------------------------------------------------


def test_reconnects_after_the_listener_restarts_and_delivers_what_was_queued() -> None:
    """Messages sent while the peer is down wait in the queue up to its bound (the excess is
    dropped and counted) and are delivered, in order, once the peer listens again."""

    async def body() -> None:
        b = Node(2, {1: "127.0.0.1:1"})
        await b.t.start()
        address = b.t.bound_address
        frame_size = len(msg_frame(hb(1, 2, commit=1)))
        a = Node(1, {2: address}, backoff_max=0.2, peer_queue_bytes=20 * frame_size)
        b2 = Node(2, {1: "127.0.0.1:1"}, address=address)
        try:
            a.t.send(hb(1, 2, commit=0))
            await until(lambda: len(b.inbox) == 1, "first delivery")
            await b.t.close()
            # Wait until a knows the peer is gone; it redials only once it has something to
            # send (the messages below), and that fails while b is down.
            await until(lambda: a.t._links[2]._proto is None, "a to notice the loss")
            for k in range(1, 31):
                a.t.send(hb(1, 2, commit=k))
            stats = a.t.stats()
            assert stats["queued_bytes"] == 20 * frame_size
            assert stats["dropped_queue_full"] == 10
            await until(lambda: a.stat("dial_failures") >= 1, "a failed redial")
            await b2.t.start()  # the same port again
            await until(lambda: len(b2.inbox) == 20, "the queued messages")
            assert [m.commit for m in b2.inbox if isinstance(m, Heartbeat)] == list(range(1, 21))
            stats = a.t.stats()
            assert stats["reconnects"] == 1 and stats["queued_bytes"] == 0
            a.t.send(hb(1, 2, commit=99))  # the queue has room again
            await until(lambda: len(b2.inbox) == 21, "a message after the reconnect")
        finally:
            for node in (a, b, b2):
                await node.t.close()

    run(body())


def test_unreachable_peer_queue_is_bounded_and_the_excess_dropped() -> None:
    async def body() -> None:
        peers = {1: "127.0.0.1:1", 2: f"127.0.0.1:{free_port()}"}
        a = Node(1, peers, peer_queue_bytes=1 << 20)
        try:
            message = append(1, 2, n=100, size=1000)  # about 100 KB
            size = len(encode_message(message)) + 4
            sent = 100  # 10 MB
            for _ in range(sent):
                a.t.send(message)
            stats = a.t.stats()
            kept = (1 << 20) // size
            assert stats["queued_bytes"] == kept * size <= 1 << 20
            assert stats["dropped_queue_full"] == sent - kept
            assert stats["messages_dropped"] == sent - kept
        finally:
            await a.t.close()

    run(body())


def test_a_peer_that_stops_reading_cannot_grow_the_queue() -> None:
    """A connected peer that never reads (say, SIGSTOPped): what the socket does not take stays
    within the bound, and the rest is dropped."""

    async def body() -> None:
        stalled: list[asyncio.StreamWriter] = []

        async def fake_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_frame(reader)
            writer.write(frame(HelloReply(True, 2)))
            stalled.append(writer)  # never read again

        server = await asyncio.start_server(fake_peer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        a = Node(1, {2: f"127.0.0.1:{port}"}, peer_queue_bytes=1 << 20, close_timeout=0.2)
        try:
            a.t.send(hb(1, 2))
            await until(lambda: a.stat("peer_connects") == 1, "the handshake")
            message = append(1, 2, n=100, size=1000)
            for _ in range(400):  # 40 MB: more than the kernel's socket buffers take
                a.t.send(message)
                await asyncio.sleep(0)
                assert a.stat("queued_bytes") <= 1 << 20
            assert a.stat("dropped_queue_full") > 0
        finally:
            await a.t.close()
            for w in stalled:
                w.close()
            server.close()

    run(body())


# -- handshakes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hello", "reason", "logged"),
    [
        (peer_hello(2, cluster_id="other"), "cluster id does not match", "'other' does not match"),
        (peer_hello(2, cluster_id=None), "cluster id does not match", "None does not match"),
        (peer_hello(7), "node 7 is not a peer of node 1", None),
        (peer_hello(1), "node 1 is not a peer of node 1", None),
        (peer_hello(2, target=3), "this is node 1, not node 3", None),
        (peer_hello(2, version=PROTOCOL_VERSION + 1), "protocol version", None),
        (Hello(PROTOCOL_VERSION, ConnectionRole.PEER, CLUSTER), "must give its node id", None),
        (
            Hello(PROTOCOL_VERSION, ConnectionRole.CLIENT, cluster_id="other"),
            "cluster id does not match",
            "cluster id 'other'",
        ),
    ],
    ids=[
        "wrong-cluster",
        "peer-without-cluster",
        "unknown-node",
        "own-id",
        "wrong-target",
        "wrong-version",
        "peer-without-id",
        "client-wrong-cluster",
    ],
)
def test_handshake_refused_with_a_reason(
    hello: Hello, reason: str, logged: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """The refusal says why, but never what the dialer should have sent: the expected
    cluster id is logged on the node only."""

    async def body() -> None:
        async with cluster(2) as nodes:
            node = nodes[1]
            reader, writer = await connect(node.t.bound_address)
            writer.write(frame(hello))
            reply = await read_reply(reader)
            assert not reply.ok and reply.node_id == 1
            assert reply.reason is not None and reason in reply.reason
            assert CLUSTER not in reply.reason
            assert await closed_by_peer(reader)
            writer.close()
            assert node.stat("handshakes_refused") == 1
            await served(node.t.bound_address)

    with caplog.at_level(logging.WARNING, logger="raftpy.transport"):
        run(body())
    expected = reason if logged is None else logged
    assert any(expected in r.getMessage() for r in caplog.records), caplog.text
    if logged is not None:
        assert any(repr(CLUSTER) in r.getMessage() for r in caplog.records), caplog.text


def test_dialer_refused_by_a_peer_of_another_cluster_counts_and_delivers_nothing() -> None:
    async def body() -> None:
        other = Node(2, {1: "127.0.0.1:1", 2: "127.0.0.1:1"}, cluster_id="other")
        await other.t.start()
        a = Node(1, {2: other.t.bound_address}, backoff_max=0.1)
        try:
            a.t.send(hb(1, 2))
            await until(lambda: a.stat("handshakes_rejected") >= 2, "two refused dials")
            assert other.stat("handshakes_refused") >= 2 and other.inbox == []
            assert a.stat("queued_bytes") > 0  # still waiting for a peer that accepts
        finally:
            await a.t.close()
            await other.t.close()

    run(body())


def test_dialing_the_wrong_node_is_refused() -> None:
    async def body() -> None:
        async with cluster(3, backoff_max=0.1) as nodes:
            real = {i: n.t.bound_address for i, n in nodes.items()}
            nodes[1].t.update_peers({**real, 2: real[3]})  # 1 believes 2 lives at 3's address
            nodes[1].t.send(hb(1, 2))
            await until(lambda: nodes[3].stat("handshakes_refused") >= 1, "the refusal")
            await until(lambda: nodes[1].stat("handshakes_rejected") >= 1, "the rejection")
            assert nodes[3].inbox == [] and nodes[2].inbox == []

    run(body())


def test_a_silent_connection_is_closed_after_the_handshake_timeout() -> None:
    async def body() -> None:
        async with cluster(1, handshake_timeout=0.2) as nodes:
            reader, writer = await connect(nodes[1].t.bound_address)
            assert await closed_by_peer(reader)
            writer.close()
            assert nodes[1].stat("handshake_timeouts") == 1

    run(body())


# -- malformed input closes that connection only -----------------------------------------------

PEER_PREFIX = frame(peer_hello(2, target=1))
CLIENT_PREFIX = frame(CLIENT_HELLO)


@pytest.mark.parametrize(
    ("data", "eof"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False),
        (b"\x00\x00\x00\x05\xc1\xc1\xc1\xc1\xc1", False),
        (struct.pack(">I", 100 << 20), False),
        (struct.pack(">I", 1 << 20) + b"\x00" * 4096, False),
        (encode_frame(b"x" * 100)[:50], True),
        (PEER_PREFIX + encode_frame(b"\x93\x01\x02"), False),
        (PEER_PREFIX + encode_frame(b"\x99\x09\xff"), False),
        (PEER_PREFIX + msg_frame(hb(3, 1)), False),
        (PEER_PREFIX + msg_frame(hb(2, 5)), False),
        (PEER_PREFIX + struct.pack(">I", 65 << 20), False),
        (PEER_PREFIX + msg_frame(hb(2, 1))[:-1], True),
        (CLIENT_PREFIX + encode_frame(b"\xa3abc"), False),
        (CLIENT_PREFIX + frame(ClientResponse(1, ResponseStatus.OK)), False),
        (frame(HelloReply(True, 3)), False),
    ],
    ids=[
        "garbage-http",
        "garbage-payload",
        "oversized-length",
        "large-frame-before-handshake",
        "truncated-then-eof",
        "peer-bad-msgpack",
        "peer-unknown-tag",
        "peer-wrong-src",
        "peer-wrong-dst",
        "peer-oversized",
        "peer-truncated-then-eof",
        "client-garbage",
        "client-sends-response",
        "reply-instead-of-hello",
    ],
)
def test_malformed_input_closes_only_that_connection(data: bytes, eof: bool) -> None:
    async def body() -> None:
        async with cluster(2) as nodes:
            node = nodes[1]
            address = node.t.bound_address
            # A healthy client connection that must survive the bad one.
            good_reader, good_writer = await connect(address)
            good_writer.write(CLIENT_PREFIX)
            assert (await read_reply(good_reader)).ok

            reader, writer = await connect(address)
            writer.write(data)
            if eof:
                writer.write_eof()
            assert await closed_by_peer(reader)
            writer.close()
            await until(lambda: node.stat("malformed_frames") == 1, "the count")
            assert node.inbox == []

            good_writer.write(frame(ClientRequest(5, ClientOp.QUERY, b"k")))
            await until(lambda: len(node.requests) == 1, "the healthy connection's request")
            conn, req = node.requests[0]
            conn.respond(ClientResponse(req.id, ResponseStatus.OK, result=b"v"))
            assert (await read_response(good_reader)).result == b"v"
            good_writer.close()
            # Peers still get through, on a fresh connection.
            nodes[2].t.send(hb(2, 1))
            await until(lambda: len(node.inbox) == 1, "a peer message")

    run(body())


# -- clients -----------------------------------------------------------------------------------


def test_client_pipelines_100_requests_answered_in_reverse_order() -> None:
    async def body() -> None:
        async with cluster(1) as nodes:
            node = nodes[1]
            reader, writer = await connect(node.t.bound_address)
            # The Hello and all requests in one write, without waiting for the reply.
            requests = [ClientRequest(i, ClientOp.PROPOSE, b"cmd%d" % i) for i in range(100)]
            writer.write(CLIENT_PREFIX + b"".join(frame(r) for r in requests))
            assert (await read_reply(reader)).ok
            await until(lambda: len(node.requests) == 100, "all requests")
            assert [r for _, r in node.requests] == requests
            for conn, req in reversed(node.requests):
                conn.respond(ClientResponse(req.id, ResponseStatus.OK, result=req.data.upper()))
            got = [await read_response(reader) for _ in range(100)]
            assert [r.id for r in got] == list(reversed(range(100)))
            assert all(r.result == b"CMD%d" % r.id for r in got)
            stats = node.t.stats()
            assert stats["client_requests"] == stats["client_responses"] == 100
            # After the handshake, large requests are fine (up to max_frame_bytes).
            big = ClientRequest(100, ClientOp.PROPOSE, b"v" * (1 << 20))
            writer.write(frame(big))
            await until(lambda: len(node.requests) == 101, "the large request")
            assert node.requests[-1][1] == big
            writer.close()
            conn = node.requests[0][0]
            await until(lambda: conn.closed, "the connection to close")
            conn.respond(ClientResponse(0, ResponseStatus.OK))  # a no-op once closed

    run(body())


# -- close -------------------------------------------------------------------------------------


def test_close_is_idempotent_bounded_and_stops_everything() -> None:
    async def body() -> None:
        nodes_cm = cluster(3)
        nodes = await nodes_cm.__aenter__()
        try:
            for i in nodes:
                nodes[i].t.send(hb(i, i % 3 + 1))
            await until(lambda: all(len(n.inbox) == 1 for n in nodes.values()), "delivery")
            reader, writer = await connect(nodes[1].t.bound_address)
            writer.write(CLIENT_PREFIX)
            assert (await read_reply(reader)).ok
            t = nodes[1].t
            address = t.bound_address
            start = time.monotonic()
            async with asyncio.timeout(3):
                await t.close()
                await t.close()
            assert time.monotonic() - start < 2.5
            assert await closed_by_peer(reader)
            writer.close()
            with pytest.raises(OSError):
                await connect(address)
            t.send(hb(1, 2))  # no error after close
            assert t.stats()["queued_bytes"] == 0
        finally:
            await nodes_cm.__aexit__(None, None, None)

    run(body())


def test_cancelling_a_task_awaiting_close_leaves_no_tasks_behind() -> None:
    async def body() -> None:
        peers = {1: "127.0.0.1:1", 2: "127.0.0.1:1", 3: f"127.0.0.1:{free_port()}"}
        async with cluster(2) as nodes:
            a = nodes[1]
            a.t.update_peers({**peers, 2: nodes[2].t.bound_address})
            a.t.send(hb(1, 2))
            a.t.send(hb(1, 3))  # a link stuck redialing a dead port
            await until(lambda: len(nodes[2].inbox) == 1, "delivery")
            await until(lambda: a.stat("dial_failures") >= 1, "a failed dial")
            reader, writer = await connect(a.t.bound_address)
            writer.write(CLIENT_PREFIX)
            assert (await read_reply(reader)).ok

            closing = asyncio.create_task(a.t.close())
            await asyncio.sleep(0)  # close() has begun
            closing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await closing
            me = asyncio.current_task()
            await until(lambda: asyncio.all_tasks() == {me}, "every transport task to end")
            assert await closed_by_peer(reader)
            writer.close()
            await a.t.close()  # still fine afterwards

    run(body())


def test_inbound_connection_from_a_peer_cuts_our_redial_backoff_short() -> None:
    """A restarted peer that dials us is up: our link to it redials at once instead of
    sleeping out a long backoff (so a restarted follower catches up promptly)."""

    async def body() -> None:
        port_b = free_port()
        a = Node(1, {2: f"127.0.0.1:{port_b}"}, backoff_initial=30.0, backoff_max=30.0)
        await a.t.start()
        b = Node(2, {1: a.t.bound_address}, address=f"127.0.0.1:{port_b}")
        try:
            a.t.send(hb(1, 2, commit=1))  # b is down: the dial fails, a backs off ~15-30 s
            await until(lambda: a.stat("dial_failures") >= 1, "a failed dial")
            await b.t.start()
            b.t.send(hb(2, 1, commit=7))  # b dials a
            await until(lambda: len(a.inbox) == 1, "b's message at a")
            # Without the poke a would still be asleep for 15+ s.
            await until(lambda: len(b.inbox) == 1, "a's queued message at b", timeout=3.0)
        finally:
            await a.t.close()
            await b.t.close()

    run(body())
