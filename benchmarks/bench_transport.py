"""The TCP transport on loopback (``python -m benchmarks transport``).

Two :class:`~raftpy.transport.tcp.TcpTransport` in one process and one event loop, so every
figure pays for both ends (encode, write, read, decode) on one core:

- ``append64_msgs_per_s`` / ``append64_mb_per_s``: one-way AppendEntries carrying 64 entries
  of 100 B (about 7 KB a frame) from node 1 to node 2, with at most ``WINDOW`` messages in
  flight (the sender waits for the receiver, as a leader's inflight window makes it); MB/s
  counts frame bytes (10^6 B);
- ``heartbeat_msgs_per_s``: the same with tiny Heartbeat messages (per-message overhead);
- ``client_rtt_p50_ms`` / ``client_rtt_p99_ms``: a client connection sends one ClientRequest
  and waits for its ClientResponse, ``PINGS`` times; ``on_client_request`` answers at once.

Each figure is measured on the default asyncio loop and, when uvloop is installed, again on
uvloop (the ``_uvloop`` results): choosing the loop is the application's decision.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable

from raftpy.core.messages import (
    PROTOCOL_VERSION,
    AppendEntries,
    Entry,
    EntryKind,
    Heartbeat,
    Message,
    encode_message,
)
from raftpy.transport.codec import encode_frame
from raftpy.transport.protocol import (
    ClientOp,
    ClientRequest,
    ClientResponse,
    ConnectionRole,
    Hello,
    ResponseStatus,
    encode_frame_payload,
)
from raftpy.transport.tcp import ClientConnection, TcpTransport

APPENDS = 100_000
HEARTBEATS = 500_000
WINDOW = 256
PINGS = 10_000
WARMUP = 200

TARGETS: dict[str, tuple[str, float]] = {}
"""No targets of its own: the cluster benchmark carries the end-to-end ones."""


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _Receiver:
    """Counts messages and wakes the sender when the count reaches ``wake_at``."""

    def __init__(self) -> None:
        self.count = 0
        self.wake_at = 0
        self.event = asyncio.Event()

    def __call__(self, message: Message) -> None:
        self.count += 1
        if self.count >= self.wake_at:
            self.event.set()

    async def wait_for(self, count: int) -> None:
        self.wake_at = count
        while self.count < count:
            self.event.clear()
            await self.event.wait()


def _answer(conn: ClientConnection, request: ClientRequest) -> None:
    conn.respond(ClientResponse(request.id, ResponseStatus.OK, result=request.data))


async def _pair(receiver: _Receiver) -> tuple[TcpTransport, TcpTransport]:
    placeholder = {1: "127.0.0.1:1", 2: "127.0.0.1:1"}
    a = TcpTransport(
        1,
        "127.0.0.1:0",
        placeholder,
        cluster_id="bench",
        on_message=lambda m: None,
        on_client_request=_answer,
    )
    b = TcpTransport(
        2,
        "127.0.0.1:0",
        placeholder,
        cluster_id="bench",
        on_message=receiver,
        on_client_request=_answer,
    )
    await a.start()
    await b.start()
    real = {1: a.bound_address, 2: b.bound_address}
    a.update_peers(real)
    b.update_peers(real)
    return a, b


async def _one_way(make: Callable[[int], Message], total: int) -> tuple[float, int]:
    """Messages per second and frame bytes of one message, for ``total`` messages."""
    receiver = _Receiver()
    a, b = await _pair(receiver)
    try:
        a.send(make(0))
        await receiver.wait_for(1)
        frame_bytes = len(encode_message(make(0))) + 4
        sent = 0  # not counting the warm-up message
        start = time.perf_counter()
        while sent < total:
            # Refill the window when half of it is acknowledged, as a leader's inflight
            # window refills on replication responses.
            await receiver.wait_for(1 + max(0, sent - WINDOW // 2))
            in_flight = sent - (receiver.count - 1)
            for _ in range(min(total - sent, WINDOW - in_flight)):
                a.send(make(sent))
                sent += 1
        await receiver.wait_for(total + 1)
        seconds = time.perf_counter() - start
        assert a.stats()["messages_dropped"] == 0
        return total / seconds, frame_bytes
    finally:
        await a.close()
        await b.close()


class _Client(asyncio.Protocol):
    """A minimal client: one request at a time, answered through ``waiter``."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiter: asyncio.Future[bytes] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 4:
            (size,) = struct.unpack_from(">I", self.buf)
            if len(self.buf) < 4 + size:
                return
            payload = bytes(self.buf[4 : 4 + size])
            del self.buf[: 4 + size]
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(payload)

    async def call(self, data: bytes) -> bytes:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


async def _ping_pong() -> tuple[float, float]:
    receiver = _Receiver()
    a, b = await _pair(receiver)
    loop = asyncio.get_running_loop()
    host, port = b.bound_address.rsplit(":", 1)
    transport, client = await loop.create_connection(_Client, host, int(port))
    try:
        hello = Hello(PROTOCOL_VERSION, ConnectionRole.CLIENT, cluster_id="bench")
        await client.call(encode_frame(encode_frame_payload(hello)))
        samples: list[float] = []
        for k in range(WARMUP + PINGS):
            request = encode_frame(encode_frame_payload(ClientRequest(k, ClientOp.QUERY, b"q")))
            t = time.perf_counter()
            await client.call(request)
            if k >= WARMUP:
                samples.append(time.perf_counter() - t)
        return _pct(samples, 0.5) * 1e3, _pct(samples, 0.99) * 1e3
    finally:
        transport.close()
        await a.close()
        await b.close()


def _append(k: int) -> Message:
    entries = tuple(Entry(1, 64 * k + i, EntryKind.COMMAND, b"x" * 100) for i in range(1, 65))
    return AppendEntries(1, 1, 2, 64 * k, 1 if k else 0, entries, 64 * k)  # index 0 has no term


_ENTRY_POOL: list[Message] = []


def _append_cached(k: int) -> Message:
    """Messages built ahead of time, so the figure measures the transport, not the struct
    construction."""
    return _ENTRY_POOL[k % len(_ENTRY_POOL)]


def _heartbeat(k: int) -> Message:
    return Heartbeat(1, 1, 2, k)


async def _suite() -> dict[str, float]:
    if not _ENTRY_POOL:
        _ENTRY_POOL.extend(_append(k) for k in range(1024))
    appends, frame_bytes = await _one_way(_append_cached, APPENDS)
    heartbeats, _ = await _one_way(_heartbeat, HEARTBEATS)
    p50, p99 = await _ping_pong()
    return {
        "append64_msgs_per_s": appends,
        "append64_mb_per_s": appends * frame_bytes / 1e6,
        "heartbeat_msgs_per_s": heartbeats,
        "client_rtt_p50_ms": p50,
        "client_rtt_p99_ms": p99,
    }


def run() -> dict[str, float]:
    results = asyncio.run(_suite())
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional
        return results
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        fast = runner.run(_suite())
    results.update({f"{key}_uvloop": value for key, value in fast.items()})
    return results


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:32} {value:,.3f}")
