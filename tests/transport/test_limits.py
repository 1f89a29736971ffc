"""Bounded resources in the TCP transport, over real sockets on 127.0.0.1: receive buffers
that grow with the bytes that arrive, memory that a reconnecting peer cannot pile up, the
client frame limit, idle timeouts, connection caps fitted to the descriptor limit, and log
lines that network text cannot forge and bad connections cannot flood. Every wait is bounded."""

from __future__ import annotations

import asyncio
import gc
import logging
import struct
import tracemalloc
from typing import Any

import pytest

from raftpy.core.messages import PROTOCOL_VERSION, AppendEntries, Entry, EntryKind
from raftpy.logtext import RateLimitedLog, untrusted
from raftpy.transport import descriptors
from raftpy.transport.codec import DEFAULT_MAX_CLIENT_FRAME_BYTES, encode_frame
from raftpy.transport.descriptors import STORAGE_DESCRIPTORS, ConnectionCaps, fit_caps
from raftpy.transport.inbound import InboundConnection
from raftpy.transport.protocol import (
    ClientOp,
    ClientRequest,
    ClientResponse,
    ConnectionRole,
    Hello,
    ResponseStatus,
)
from tests.transport.test_tcp_transport import (
    CLIENT_HELLO,
    CLIENT_PREFIX,
    Node,
    closed_by_peer,
    cluster,
    connect,
    event_loop_kind,  # noqa: F401 - the autouse fixture: every test runs on each loop
    frame,
    hb,
    msg_frame,
    peer_hello,
    read_reply,
    read_response,
    run,
    until,
)

MiB = 1 << 20


def inbound(node: Node) -> list[InboundConnection]:
    return [p for p in node.t._protocols if isinstance(p, InboundConnection)]


# -- receive buffers grow with what arrives ----------------------------------------------------


@pytest.mark.parametrize("sent", [2 << 10, 40 << 10], ids=["2KiB", "40KiB"])
def test_announcing_64_mib_costs_only_what_arrived(sent: int) -> None:
    """16 peers each announce a 64 MiB frame and send a little of it: the node holds about
    what arrived, not the gigabyte the headers claim (it used to allocate each whole frame at
    its header)."""

    async def body() -> None:
        fake_peers = {i: "127.0.0.1:1" for i in range(2, 18)}
        node = Node(1, fake_peers)
        await node.t.start()
        writers = []
        try:
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            for peer in fake_peers:
                reader, writer = await connect(node.t.bound_address)
                writer.write(frame(peer_hello(peer, target=1)))
                assert (await read_reply(reader)).ok
                # The header alone, then the bytes: two reads.
                got = node.stat("bytes_received")
                writer.write(struct.pack(">I", 64 * MiB - 100))
                await until(lambda got=got: node.stat("bytes_received") >= got + 4, "a header")
                writer.write(b"\x00" * sent)
                await writer.drain()
                writers.append(writer)
            hello = len(frame(peer_hello(2, target=1)))
            total = 16 * (hello + 4 + sent)
            await until(lambda: node.stat("bytes_received") >= total, "every byte sent", 5)
            grown = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
            assert grown < 4 * MiB, f"16 announced 64 MiB frames cost {grown} bytes"
            # At most about twice what arrived (or the small base buffer).
            assert all(len(p._buf) <= max(3 * sent, 8 << 10) for p in inbound(node))
        finally:
            tracemalloc.stop()
            for writer in writers:
                writer.close()
            await node.t.close()

    run(body(), 30)


def test_a_large_frame_still_arrives_whole_and_the_buffer_shrinks_back() -> None:
    """The fast path for real large frames (snapshot chunks): the buffer doubles as the bytes
    arrive, the frame is delivered whole, and light traffic afterwards returns the buffer to
    its base size."""

    async def body() -> None:
        async with cluster(2) as nodes:
            a, b = nodes[1], nodes[2]
            blob = bytes(range(256)) * (20 * 4096)  # 20 MiB
            a.t.send(append(1, 2, blob))
            await until(lambda: len(b.inbox) == 1, "the 20 MiB message", timeout=20)
            assert b.inbox[0].entries[0].data == blob
            (proto,) = [p for p in inbound(b) if p._peer_id == 1]
            assert len(proto._buf) >= 20 * MiB
            for i in range(200):  # light reads, one heartbeat at a time
                a.t.send(hb(1, 2, commit=i))
                await until(lambda i=i: len(b.inbox) == i + 2, "a heartbeat")
            assert len(proto._buf) <= 1 * MiB

    run(body(), 40)


def test_a_busy_replication_stream_reads_many_frames_per_call() -> None:
    """Frames larger than the small starting buffer, arriving faster than they are read, grow
    the buffer to the streaming size (one read per frame would halve throughput)."""

    async def body() -> None:
        async with cluster(2) as nodes:
            a, b = nodes[1], nodes[2]
            entries = tuple(Entry(1, i, EntryKind.COMMAND, b"x" * 100) for i in range(1, 65))
            for k in range(300):  # ~7 KB each, all written at once
                a.t.send(AppendEntries(1, 1, 2, 0, 0, entries, k))
            await until(lambda: len(b.inbox) == 300, "the 300 appends", timeout=10)
            (proto,) = [p for p in inbound(b) if p._peer_id == 1]
            assert len(proto._buf) >= 256 << 10, len(proto._buf)

    run(body())


def append(src: int, dst: int, blob: bytes) -> AppendEntries:
    return AppendEntries(1, src, dst, 0, 0, (Entry(1, 1, EntryKind.COMMAND, blob),), 0)


def test_3000_peer_handshakes_retain_nothing() -> None:
    """A peer (or anyone who knows the cluster id) reconnecting over and over costs memory
    only while a connection lives: 3,000 handshakes leave nothing behind and never hold more
    than a few connections' small buffers at once."""

    async def body() -> None:
        node = Node(1, {2: "127.0.0.1:1"})
        await node.t.start()
        try:
            hello = frame(peer_hello(2, target=1))
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(3000):
                reader, writer = await connect(node.t.bound_address)
                writer.write(hello)
                assert (await read_reply(reader)).ok
                writer.close()
            await until(lambda: len(node.t._protocols) <= 1, "the closed connections to go")
            gc.collect()
            now, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert now - before < 1 * MiB, f"3000 handshakes retained {now - before} bytes"
            assert peak - before < 16 * MiB, f"3000 handshakes peaked at +{peak - before} bytes"
            assert node.stat("peer_connections") == 3000
        finally:
            tracemalloc.stop()
            await node.t.close()

    run(body(), 120)


# -- the client frame limit --------------------------------------------------------------------


def test_client_frames_have_a_smaller_limit_announced_in_the_handshake() -> None:
    async def body() -> None:
        async with cluster(2, max_client_frame_bytes=1 * MiB) as nodes:
            node = nodes[1]
            reader, writer = await connect(node.t.bound_address)
            writer.write(CLIENT_PREFIX)
            reply = await read_reply(reader)
            assert reply.ok and reply.max_frame_bytes == 1 * MiB
            big = ClientRequest(1, ClientOp.PROPOSE, b"x" * (MiB - 100))
            writer.write(frame(big))
            await until(lambda: len(node.requests) == 1, "a request at the limit")
            writer.write(struct.pack(">I", MiB + 1))
            assert await closed_by_peer(reader)
            writer.close()
            assert node.stat("malformed_frames") == 1
            # Peers keep the large limit: a 2 MiB message between them goes through.
            blob = b"y" * (2 * MiB)
            nodes[2].t.send(append(2, 1, blob))
            await until(lambda: len(node.inbox) == 1, "a 2 MiB peer message", timeout=10)

    run(body())


def test_the_default_client_limit_fits_the_largest_command() -> None:
    assert 16 * MiB < DEFAULT_MAX_CLIENT_FRAME_BYTES < 17 * MiB


# -- idle timeouts -----------------------------------------------------------------------------


def test_500_idle_clients_are_closed_and_a_busy_one_is_not() -> None:
    async def body() -> None:
        async with cluster(1, client_idle_timeout=0.4) as nodes:
            node = nodes[1]
            address = node.t.bound_address
            idle = []
            for _ in range(500):
                reader, writer = await connect(address)
                writer.write(CLIENT_PREFIX)
                idle.append((reader, writer))
            for reader, _ in idle:
                assert (await read_reply(reader)).ok
            # One client waits for an answer the whole time: it is not idle.
            busy_reader, busy_writer = await connect(address)
            busy_writer.write(CLIENT_PREFIX + frame(ClientRequest(7, ClientOp.QUERY, b"k")))
            assert (await read_reply(busy_reader)).ok
            await until(lambda: node.stat("client_idle_closed") == 500, "500 idle closes", 10)
            for reader, writer in idle:
                assert await closed_by_peer(reader)
                writer.close()
            (conn, req) = node.requests[-1]
            assert req.id == 7 and not conn.closed
            conn.respond(ClientResponse(7, ResponseStatus.OK, result=b"v"))
            assert (await read_response(busy_reader)).result == b"v"
            busy_writer.close()

    run(body(), 60)


def test_an_idle_peer_connection_is_closed_and_a_heartbeating_one_is_not() -> None:
    async def body() -> None:
        async with cluster(3, peer_idle_timeout=0.4) as nodes:
            a = nodes[1]
            nodes[2].t.send(hb(2, 1))  # then silence from node 2
            nodes[3].t.send(hb(3, 1))
            await until(lambda: len(a.inbox) == 2, "both first heartbeats")
            loop = asyncio.get_running_loop()
            end = loop.time() + 1.2
            while loop.time() < end:  # node 3 keeps talking
                nodes[3].t.send(hb(3, 1))
                await asyncio.sleep(0.05)
            assert a.stat("peer_idle_closed") == 1
            # Node 2 redials when it has something to say, and is heard.
            nodes[2].t.send(hb(2, 1, commit=5))
            await until(lambda: hb(2, 1, commit=5) in a.inbox, "node 2 after the idle close")

    run(body(), 20)


# -- connection caps ---------------------------------------------------------------------------


def test_clients_over_the_cap_are_refused_while_peers_are_served() -> None:
    async def body() -> None:
        async with cluster(2, max_client_connections=5) as nodes:
            node = nodes[1]
            address = node.t.bound_address
            clients = []
            for _ in range(5):
                reader, writer = await connect(address)
                writer.write(CLIENT_PREFIX)
                assert (await read_reply(reader)).ok
                clients.append((reader, writer))
            for _ in range(20):
                reader, writer = await connect(address)
                writer.write(CLIENT_PREFIX)
                reply = await read_reply(reader)
                assert not reply.ok and reply.reason == "too many client connections (at most 5)"
                assert await closed_by_peer(reader)
                writer.close()
            assert node.stat("client_connections_over_cap") == 20
            # The node keeps serving its peers (and its clients).
            nodes[2].t.send(hb(2, 1))
            await until(lambda: len(node.inbox) == 1, "a peer message")
            # A slot freed is a slot taken.
            clients.pop()[1].close()
            await until(lambda: node.t._clients == 4, "the closed client to go")
            reader, writer = await connect(address)
            writer.write(CLIENT_PREFIX + frame(ClientRequest(1, ClientOp.STATUS)))
            assert (await read_reply(reader)).ok
            assert (await read_response(reader)).result == b"fine"
            writer.close()
            for _, w in clients:
                w.close()

    run(body(), 30)


def test_a_new_peer_over_the_peer_cap_is_refused_but_a_known_one_may_reconnect() -> None:
    async def body() -> None:
        async with cluster(3, max_peer_connections=1) as nodes:
            node = nodes[1]
            r2, w2 = await connect(node.t.bound_address)
            w2.write(frame(peer_hello(2, target=1)))
            assert (await read_reply(r2)).ok
            r3, w3 = await connect(node.t.bound_address)
            w3.write(frame(peer_hello(3, target=1)))
            reply = await read_reply(r3)
            assert not reply.ok and reply.reason == "too many peer connections (at most 1)"
            w3.close()
            assert node.stat("peer_connections_over_cap") == 1
            # Peer 2 replaces its own connection: no new room needed.
            r2b, w2b = await connect(node.t.bound_address)
            w2b.write(frame(peer_hello(2, target=1)) + msg_frame(hb(2, 1)))
            assert (await read_reply(r2b)).ok
            await until(lambda: node.inbox == [hb(2, 1)], "peer 2's message")
            w2.close()
            w2b.close()

    run(body())


def test_connections_over_the_handshake_cap_are_closed_at_accept() -> None:
    async def body() -> None:
        async with cluster(1, max_handshakes=3) as nodes:
            node = nodes[1]
            silent = [await connect(node.t.bound_address) for _ in range(3)]
            await until(lambda: node.stat("connections_accepted") == 3, "3 accepted")
            reader, writer = await connect(node.t.bound_address)
            writer.write(CLIENT_PREFIX)
            assert await closed_by_peer(reader)
            writer.close()
            assert node.stat("handshakes_over_cap") == 1
            for _, w in silent:
                w.close()
            await until(lambda: node.t._handshaking == 0, "the silent ones to go")
            reader, writer = await connect(node.t.bound_address)
            writer.write(CLIENT_PREFIX)
            assert (await read_reply(reader)).ok
            writer.close()

    run(body())


def test_caps_that_fit_are_kept() -> None:
    wanted = ConnectionCaps(peers=4, clients=1000, handshakes=100)
    assert fit_caps(wanted, 4, limit=None, in_use=None) == wanted
    assert fit_caps(wanted, 4, limit=20000, in_use=30) == wanted


def test_caps_that_do_not_fit_the_descriptor_limit_are_lowered_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wanted = ConnectionCaps(peers=4, clients=1000, handshakes=100)
    with caplog.at_level(logging.WARNING, logger="raftpy.transport"):
        fitted = fit_caps(wanted, 4, limit=512, in_use=20)
    room = 512 - 20 - 4 - STORAGE_DESCRIPTORS
    assert fitted.peers == 4
    assert fitted.peers + fitted.clients + fitted.handshakes <= room
    assert fitted.clients >= 300 and fitted.handshakes >= 8
    assert "ulimit -n" in caplog.text and "accepting at most" in caplog.text


def test_a_descriptor_limit_too_low_for_the_peers_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"file descriptor limit \(100, 30 open\).*ulimit -n"):
        fit_caps(ConnectionCaps(peers=30, clients=100, handshakes=10), 10, limit=100, in_use=30)


def test_a_low_limit_lowers_the_peer_cap_to_what_the_members_can_use() -> None:
    # 128 descriptors (a limit met in the field) must still run a 3-node cluster: the peer
    # cap of 64 is lowered towards two connections per member instead of refusing to start.
    wanted = ConnectionCaps(peers=64, clients=1024, handshakes=256)
    fitted = fit_caps(wanted, 2, limit=128, in_use=12)
    room = 128 - 12 - 2 - STORAGE_DESCRIPTORS
    assert 2 * 2 + 2 <= fitted.peers < 64
    assert fitted.peers + fitted.clients + fitted.handshakes <= room
    assert fitted.clients >= 8 and fitted.handshakes >= 8


def test_the_transport_lowers_its_caps_to_the_process_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(descriptors, "descriptor_limit", lambda: 256)
    monkeypatch.setattr(descriptors, "open_descriptors", lambda: 16)
    caps = Node(1, {2: "127.0.0.1:1"}).t._caps
    assert caps.peers == 64
    assert caps.peers + caps.clients + caps.handshakes <= 256 - 16 - 1 - STORAGE_DESCRIPTORS


# -- logs --------------------------------------------------------------------------------------

FORGED = "x\n2026-12-06 13:00:00 CRITICAL raftpy.node: fatal storage error\r\x1b[2J"


class Lines(logging.Handler):
    """Every record, formatted the way a log file would show it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def lines() -> Any:
    handler = Lines()
    root = logging.getLogger("raftpy")
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old)


@pytest.mark.parametrize(
    "data",
    [
        frame(Hello(PROTOCOL_VERSION, ConnectionRole.CLIENT, cluster_id=FORGED)),
        frame(Hello(PROTOCOL_VERSION, ConnectionRole.PEER, cluster_id=FORGED, node_id=2)),
        encode_frame(b"\x81\xa4type\xd9" + bytes([len(FORGED)]) + FORGED.encode()),
        CLIENT_PREFIX + encode_frame(b"\x94\xa7request\x01" + b"\xd9\x40" + FORGED.encode()[:64]),
    ],
    ids=["client-cluster-id", "peer-cluster-id", "unknown-hello-tag", "bad-client-op"],
)
def test_network_text_cannot_forge_a_log_line(data: bytes, lines: Lines) -> None:
    async def body() -> None:
        async with cluster(1) as nodes:
            reader, writer = await connect(nodes[1].t.bound_address)
            writer.write(data)
            assert await closed_by_peer(reader)
            writer.close()
            await until(
                lambda: any("closing" in line or "refused" in line for line in lines.lines),
                "the refusal's log line",
            )

    run(body())
    for line in lines.lines:
        assert "\n" not in line and "\r" not in line and "\x1b" not in line, line
    assert any("\\n2026-12-06" in line for line in lines.lines), lines.lines


def test_1000_bad_connections_make_a_bounded_number_of_log_lines(lines: Lines) -> None:
    async def body() -> None:
        async with cluster(1) as nodes:
            node = nodes[1]
            for _ in range(1000):
                reader, writer = await connect(node.t.bound_address)
                writer.write(b"GET / HTTP/1.1\r\n\r\n")
                assert await closed_by_peer(reader)
                writer.close()
            await until(lambda: node.stat("malformed_frames") == 1000, "1000 counted")
            assert node.stat("log_lines_suppressed") >= 990
            await served(node.t.bound_address)

    run(body(), 60)
    bad = [line for line in lines.lines if "closing connection" in line]
    assert 1 <= len(bad) <= 10, len(bad)


async def served(address: str) -> None:
    reader, writer = await connect(address)
    writer.write(frame(CLIENT_HELLO) + frame(ClientRequest(1, ClientOp.STATUS)))
    assert (await read_reply(reader)).ok
    assert (await read_response(reader)).id == 1
    writer.close()


def test_untrusted_escapes_and_bounds_network_text() -> None:
    assert untrusted("a\nb") == "'a\\nb'"
    assert untrusted("a\nb", quote=False) == "a\\nb"
    assert untrusted("\x1b[2J\r") == "'\\x1b[2J\\r'"
    assert untrusted(b"\x00\n") == "b'\\x00\\n'"
    long = untrusted("z" * 1000)
    assert len(long) < 250 and long.endswith("...(+802 chars)")


def test_rate_limited_log_lets_a_burst_through_and_summarizes_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    limited = RateLimitedLog(
        logging.getLogger("raftpy.test"), burst=3, interval=10.0, clock=lambda: now[0]
    )
    with caplog.at_level(logging.INFO, logger="raftpy.test"):
        for i in range(100):
            limited.warning("bad", "bad connection %d", i)
        limited.warning("other", "another kind")  # its own budget
        assert [r.getMessage() for r in caplog.records] == [
            "bad connection 0",
            "bad connection 1",
            "bad connection 2",
            "another kind",
        ]
        limited.flush()  # the interval is not over: nothing yet
        assert len(caplog.records) == 4
        now[0] = 10.0
        limited.flush()
        assert caplog.records[-1].getMessage() == (
            "suppressed 97 similar log lines (bad) in the last 10 s"
        )
        limited.warning("bad", "bad connection again")
        assert caplog.records[-1].getMessage() == "bad connection again"
    assert limited.suppressed == 97
