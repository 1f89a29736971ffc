"""Coverage-guided fuzz of the wire decoders with atheris (libFuzzer), for long runs by hand.

Not collected by pytest and not a dependency: ``pip install atheris`` into the venv, then::

    .venv/bin/python tests/atheris_wire.py -atheris_runs=1000000
    .venv/bin/python tests/atheris_wire.py -max_total_time=600 corpus_dir/

(any libFuzzer flag works). The first input byte picks the decoder: a peer message, a Hello, a
HelloReply, a client frame, a snapshot result, a node status, or the frame parser fed the rest
in pieces. Each must return a value or raise ``RemoteProtocolError`` (the raw client decoder:
``msgspec.DecodeError``); a value must re-encode to itself. Anything else is a crash, which
atheris reports with the input that caused it (replay: ``tests/atheris_wire.py crash-<sha>``).
The pytest fuzz of the same decoders is ``tests/transport/test_fuzz_codec.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import atheris  # type: ignore[import-not-found]

with atheris.instrument_imports():
    import msgspec

    from raftpy.core.messages import decode_message, encode_message
    from raftpy.errors import RemoteProtocolError
    from raftpy.node.status import decode_status
    from raftpy.transport.codec import FrameDecoder, FrameTooLarge
    from raftpy.transport.protocol import (
        client_decoder,
        decode_hello,
        decode_hello_reply,
        decode_snapshot_taken,
        encode_frame_payload,
    )


def _client_frame(data: bytes) -> object:
    try:
        return client_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise RemoteProtocolError(str(exc)) from None


DECODERS: list[tuple[Callable[[bytes], object], Callable[[object], bytes]]] = [
    (decode_message, encode_message),  # type: ignore[list-item]
    (decode_hello, encode_frame_payload),  # type: ignore[list-item]
    (decode_hello_reply, encode_frame_payload),  # type: ignore[list-item]
    (_client_frame, encode_frame_payload),  # type: ignore[list-item]
    (decode_snapshot_taken, msgspec.msgpack.encode),
    (decode_status, msgspec.msgpack.encode),
]


def _frames(data: bytes) -> None:
    if len(data) < 2:
        return
    limit = (0, 16, 1 << 10, 16 << 10, 64 << 20)[data[0] % 5]
    step = data[1] % 64 + 1
    decoder = FrameDecoder(limit)
    try:
        for pos in range(2, len(data), step):
            for payload in decoder.feed(data[pos : pos + step]):
                assert len(payload) <= limit
    except FrameTooLarge:
        pass


def test_one_input(data: bytes) -> None:
    if not data:
        return
    choice, rest = data[0] % (len(DECODERS) + 1), data[1:]
    if choice == len(DECODERS):
        _frames(rest)
        return
    decode, encode = DECODERS[choice]
    try:
        value = decode(rest)
    except RemoteProtocolError:
        return
    again = decode(encode(value))
    if again != value and value == value:  # NaN in a float field is not equal to itself
        raise AssertionError(f"{value!r} re-decoded as {again!r}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
