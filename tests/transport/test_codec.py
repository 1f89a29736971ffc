"""Framing: payloads survive any split of the stream; oversized lengths are refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftpy.transport.codec import FrameDecoder, FrameTooLarge, encode_frame
from raftpy.transport.protocol import (
    ClientOp,
    ClientRequest,
    ClientResponse,
    ResponseStatus,
    client_decoder,
    encode_frame_payload,
)


@given(
    st.lists(st.binary(max_size=300), max_size=20),
    st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=10),
)
def test_payloads_survive_any_chunking(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    decoder = FrameDecoder()
    out: list[bytes] = []
    pos = 0
    k = 0
    while pos < len(stream):
        step = cuts[k % len(cuts)]
        out.extend(decoder.feed(stream[pos : pos + step]))
        pos += step
        k += 1
    assert out == payloads
    assert decoder.buffered() == 0


def test_oversized_length_is_refused_before_buffering() -> None:
    decoder = FrameDecoder(max_frame_bytes=1024)
    with pytest.raises(FrameTooLarge, match="exceeds the limit"):
        decoder.feed(b"\xff\xff\xff\xff")


def test_truncated_frame_waits_for_more() -> None:
    decoder = FrameDecoder()
    frame = encode_frame(b"hello")
    assert decoder.feed(frame[:-1]) == []
    assert decoder.buffered() == len(frame) - 1
    assert decoder.feed(frame[-1:]) == [b"hello"]


def test_client_frames_round_trip() -> None:
    req = ClientRequest(7, ClientOp.QUERY, b"k", timeout=1.5)
    resp = ClientResponse(7, ResponseStatus.NOT_LEADER, leader_id=2, leader_address="h:1")
    assert client_decoder.decode(encode_frame_payload(req)) == req
    assert client_decoder.decode(encode_frame_payload(resp)) == resp
