"""Fuzz of every decoder on the wire, without sockets: whatever bytes arrive, each decoder
returns a valid value or raises :class:`~raftpy.errors.RemoteProtocolError` (the raw
``client_decoder``, whose two callers wrap it: ``msgspec.DecodeError``), never anything else;
every value decoded re-encodes to something that decodes to the same value; the frame parsers
agree with a reference parser however the stream is split; the client's connection survives any
bytes from a node.

Inputs: arbitrary bytes, arbitrary msgpack values, and the structured payloads of
``tests/wirefuzz.py`` (the right shapes with hostile fields), through hypothesis; plus one
seeded run of ``RAFTPY_FUZZ_FRAMES`` payloads (default 20,000) against every decoder, whose
seed is printed and replayed with ``RAFTPY_SEED=N``.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftpy.client.connection import Connection
from raftpy.core.messages import DECODE_ERRORS, decode_message, encode_message
from raftpy.errors import RemoteProtocolError
from raftpy.node.status import decode_status
from raftpy.transport.codec import FrameDecoder, FrameTooLarge, encode_frame
from raftpy.transport.connection import HANDSHAKE_MAX_BYTES
from raftpy.transport.protocol import (
    ClientOp,
    ClientResponse,
    ConnectionRole,
    Consistency,
    Hello,
    HelloReply,
    ResponseStatus,
    client_decoder,
    decode_hello,
    decode_hello_reply,
    decode_snapshot_taken,
    encode_frame_payload,
)
from raftpy.transport.tcp import TcpTransport, _FrameReader
from tests.wirefuzz import Kind, WireFuzzer, frames_from_env, reference_frames, seed_from_env

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _client_frame(data: bytes) -> object:
    # The raw decoder both client-protocol callers use; they turn its errors into a closed
    # connection (raftpy.transport.inbound, raftpy.client.connection).
    try:
        return client_decoder.decode(data)
    except DECODE_ERRORS as exc:
        raise RemoteProtocolError(str(exc)) from None


def _encode_any(value: object) -> bytes:
    return msgspec.msgpack.encode(value)


# name -> (decode, encode): decode raises RemoteProtocolError for anything malformed.
DECODERS: dict[str, tuple[Callable[[bytes], object], Callable[[Any], bytes]]] = {
    "peer-message": (decode_message, encode_message),
    "hello": (decode_hello, encode_frame_payload),
    "hello-reply": (decode_hello_reply, encode_frame_payload),
    "client-frame": (_client_frame, encode_frame_payload),
    "snapshot-taken": (decode_snapshot_taken, _encode_any),
    "status": (decode_status, _encode_any),
}


def _same(a: object, b: object) -> bool:
    """Equality where NaN equals NaN (a float field may hold one)."""
    if a == b:
        return True
    if isinstance(a, float) and isinstance(b, float):
        return math.isnan(a) and math.isnan(b)
    if isinstance(a, msgspec.Struct) and type(a) is type(b):
        return all(
            _same(getattr(a, f), getattr(b, f)) for f in msgspec.structs.fields(a) for f in [f.name]
        )
    return False


def check_decoder(name: str, data: bytes) -> object | None:
    """Decode ``data`` with decoder ``name``; the only exception allowed is
    RemoteProtocolError, and a decoded value must survive a round trip."""
    decode, encode = DECODERS[name]
    try:
        value = decode(data)
    except RemoteProtocolError:
        return None
    again = decode(encode(value))
    assert _same(again, value), f"{name}: {value!r} re-decoded as {again!r}"
    return value


# -- strategies --------------------------------------------------------------------------------

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=50)
    | st.binary(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=8)
        | st.dictionaries(st.text(max_size=10) | st.integers(-5, 5), inner, max_size=6)
    ),
    max_leaves=40,
)
"""Any msgpack document (the decoders' validation paths, not just their parsers)."""

tagged_arrays = st.builds(
    lambda tag, rest: [tag, *rest],
    st.integers(-1, 12) | st.sampled_from(["request", "response", "hello", "hello-reply"]),
    st.lists(msgpack_values, max_size=10),
)
"""Arrays that start with a real or almost-real tag, so decoding gets past the tag."""


@st.composite
def structured(draw: st.DrawFn) -> bytes:
    """A payload of ``tests/wirefuzz.py``: the right shape with hostile fields, damaged
    encodings, other kinds' frames."""
    rng = draw(st.randoms(use_true_random=False))
    kind = draw(st.sampled_from(list(Kind)))
    return WireFuzzer(rng).payload(kind, src=rng.choice((None, 2)), dst=rng.choice((None, 1)))


payloads = (
    st.binary(max_size=600)
    | msgpack_values.map(_encode_any)
    | tagged_arrays.map(_encode_any)
    | structured()
)


# -- the decoders ------------------------------------------------------------------------------


@FUZZ
@given(data=payloads)
def test_any_payload_decodes_to_a_value_or_a_protocol_error(data: bytes) -> None:
    for name in DECODERS:
        check_decoder(name, data)


def test_seeded_payloads_against_every_decoder() -> None:
    """``RAFTPY_FUZZ_FRAMES`` structured payloads (default 20,000) through every decoder."""
    seed = seed_from_env()
    frames = frames_from_env(20_000)
    print(f"wire decoder fuzz: seed {seed}, {frames} payloads (replay: RAFTPY_SEED={seed})")
    fuzzer = WireFuzzer(random.Random(seed))
    kinds = list(Kind)
    decoded = 0
    started = time.perf_counter()
    for i in range(frames):
        data = fuzzer.payload(kinds[i % len(kinds)], src=2, dst=1)
        for name in DECODERS:
            try:
                decoded += check_decoder(name, data) is not None
            except BaseException as exc:
                raise AssertionError(
                    f"payload {i} ({data[:200]!r}...) made {name} raise {exc!r}; replay with "
                    f"RAFTPY_SEED={seed} RAFTPY_FUZZ_FRAMES={i + 1}"
                ) from exc
    elapsed = time.perf_counter() - started
    print(f"  {frames / elapsed:,.0f} payloads/s, {decoded} decoded to a value")
    # A generator that made nothing valid would test only the first byte of every decoder.
    assert decoded > frames // 100


def test_the_generator_reaches_every_message_kind() -> None:
    """The structured payloads decode, now and then, to every kind of frame (so the
    validation of every field is exercised, not only the parser)."""
    fuzzer = WireFuzzer(random.Random(7))
    seen: set[str] = set()
    for _ in range(3000):
        for kind in Kind:
            data = fuzzer.payload(kind)
            for name in ("peer-message", "hello", "hello-reply", "client-frame"):
                value = check_decoder(name, data)
                if value is not None:
                    seen.add(type(value).__name__)
    assert seen >= {
        "RequestVote",
        "RequestVoteResponse",
        "AppendEntries",
        "AppendEntriesResponse",
        "Heartbeat",
        "HeartbeatResponse",
        "InstallSnapshot",
        "InstallSnapshotResponse",
        "TimeoutNow",
        "Hello",
        "HelloReply",
        "ClientRequest",
        "ClientResponse",
    }


DEEP = b"\x91" * 5000 + b"\xc0"


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_deep_nesting_is_a_protocol_error(name: str) -> None:
    """Found by this fuzz: nesting deeper than the interpreter's recursion limit, alone, in an
    extra trailing field or in an unknown map key, must be malformed input like any other."""
    check_decoder(name, DEEP)
    check_decoder(name, _encode_any([5, 1, 2, 1, 0, None, msgspec.Raw(DEEP)]))
    check_decoder(name, _encode_any({"type": "hello", "x": msgspec.Raw(DEEP)}))
    check_decoder(
        name, _encode_any(["request", 1, "status", b"", "stale", None, msgspec.Raw(DEEP)])
    )


# -- the frame parsers -------------------------------------------------------------------------


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """Frames, some empty, sometimes ending with a wrong length or a cut header."""
    rng = draw(st.randoms(use_true_random=False))
    fuzzer = WireFuzzer(rng)
    parts = [
        fuzzer.frame(draw(st.binary(max_size=300)))
        for _ in range(draw(st.integers(min_value=0, max_value=8)))
    ]
    if draw(st.booleans()):
        parts.append(fuzzer.bad_ending())
    return b"".join(parts)


cuts = st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=8)
limits = st.sampled_from([0, 1, 100, 300, HANDSHAKE_MAX_BYTES, 64 << 20])


@FUZZ
@given(streams(), cuts, limits)
def test_frame_decoder_agrees_with_the_reference(stream: bytes, cut: list[int], limit: int) -> None:
    want, too_large, _ = reference_frames(stream, limit)
    decoder = FrameDecoder(limit)
    got: list[bytes] = []
    pos = k = 0
    try:
        while pos < len(stream):
            step = cut[k % len(cut)]
            got.extend(decoder.feed(stream[pos : pos + step]))
            pos, k = pos + step, k + 1
    except FrameTooLarge:
        assert too_large, "FrameTooLarge for a stream whose lengths are all within the limit"
        # Frames complete in the same feed as the oversized header are dropped with it: the
        # connection closes anyway.
        assert got == want[: len(got)]
        return
    assert not too_large, "an oversized length was never refused"
    assert got == want
    assert decoder.buffered() == len(stream) - sum(4 + len(p) for p in want)


@FUZZ
@given(streams(), cuts, limits, st.sampled_from([16, 64, 4096]))
def test_frame_reader_agrees_with_the_reference(
    stream: bytes, cut: list[int], limit: int, bufsize: int
) -> None:
    """The transport's zero-copy parser: the same frames as the reference, and an oversized
    length closes the connection (counted) instead of raising."""
    owner = TcpTransport(1, "127.0.0.1:0", {}, cluster_id="c", on_message=print,
                         on_client_request=lambda c, r: None)  # fmt: skip
    reader = _FrameReader(owner, bufsize)
    reader._limit = limit
    got: list[bytes] = []
    reader._handle = lambda view: got.append(bytes(view))
    want, too_large, left = reference_frames(stream, limit)
    pos = k = 0
    while pos < len(stream) and not reader._closed:
        buf = reader.get_buffer(-1)
        n = min(len(buf), cut[k % len(cut)], len(stream) - pos)
        assert n > 0
        buf[:n] = stream[pos : pos + n]
        del buf
        reader.buffer_updated(n)
        pos, k = pos + n, k + 1
    assert got == want
    assert reader._closed == too_large
    assert owner.stats()["malformed_frames"] == int(too_large)
    if not too_large:
        assert reader._end - reader._start == left
        reader.eof_received()
        assert owner.stats()["malformed_frames"] == int(left > 0)  # truncated frame at EOF


# -- the client's side of a connection ---------------------------------------------------------


class FakeTransport(asyncio.Transport):
    """Records what the client does to its transport (for tests)."""

    def __init__(self) -> None:
        super().__init__()
        self.aborted = False
        self.written: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.aborted


@st.composite
def node_streams(draw: st.DrawFn) -> tuple[bytes, int]:
    """What a (hostile) node may send a client: maybe a real HelloReply first, then frames
    made of anything; and how many leading frames are well-formed."""
    rng = draw(st.randoms(use_true_random=False))
    fuzzer = WireFuzzer(rng)
    parts: list[bytes] = []
    if draw(st.booleans()):
        reply = HelloReply(draw(st.booleans()), 1, draw(st.none() | st.text(max_size=20)))
        parts.append(encode_frame(encode_frame_payload(reply)))
        for rid in draw(st.lists(st.integers(0, 5), max_size=4)):
            resp = ClientResponse(rid, ResponseStatus.OK, result=b"r")
            parts.append(encode_frame(encode_frame_payload(resp)))
    for _ in range(draw(st.integers(0, 5))):
        parts.append(fuzzer.frame(fuzzer.payload(rng.choice(list(Kind)))))
    if draw(st.booleans()):
        parts.append(fuzzer.bad_ending())
    return b"".join(parts), draw(st.integers(1, 64))


@FUZZ
@given(node_streams())
def test_client_connection_survives_anything_a_node_sends(case: tuple[bytes, int]) -> None:
    """Whatever a node sends, the client's protocol either handles it or aborts that
    connection with a reason; no exception escapes into the event loop, and every request
    outstanding when it aborts fails (none is left hanging)."""
    stream, step = case

    async def body() -> None:
        loop = asyncio.get_running_loop()
        conn = Connection("127.0.0.1:9", loop, 1 << 20)
        transport = FakeTransport()
        conn.connection_made(transport)
        hello = asyncio.ensure_future(conn.handshake(None))
        await asyncio.sleep(0)  # the Hello goes out first
        slots = []
        for pos in range(0, len(stream), step):
            conn.data_received(stream[pos : pos + step])
            if conn.usable and len(slots) < 6:
                slots.append(conn.submit(ClientOp.QUERY, b"k", Consistency.STALE, 1.0))
            if transport.aborted:
                break
        if transport.aborted:
            conn.connection_lost(None)
            await asyncio.sleep(0)
            assert hello.done()
            for slot in slots:
                assert slot.future.done()
        for slot in slots:
            if slot.future.done() and not slot.future.cancelled():
                slot.future.exception()  # retrieved: no "never retrieved" warnings
            slot.future.cancel()
        hello.cancel()
        await asyncio.gather(hello, return_exceptions=True)

    asyncio.run(body())


def test_a_valid_hello_is_still_accepted() -> None:
    """The decoders under fuzz still accept the real thing (a fuzz that only ever sees
    refusals would pass against a decoder that refuses everything)."""
    hello = Hello(1, ConnectionRole.PEER, "c", 2, 1)
    assert check_decoder("hello", encode_frame_payload(hello)) == hello
