"""Framing: a 4-byte big-endian length, then that many bytes of payload.

:class:`FrameDecoder` turns a byte stream into payloads incrementally and refuses frames larger
than its limit, so a malformed or hostile length cannot make us allocate without bound; the
caller closes that connection (and only that one) on :class:`FrameTooLarge`.
"""

from __future__ import annotations

import struct
from typing import Final

from raftpy.errors import RemoteProtocolError

HEADER: Final = struct.Struct(">I")
HEADER_SIZE: Final = HEADER.size
DEFAULT_MAX_FRAME_BYTES: Final = 64 << 20
"""The largest frame on a peer connection (a snapshot chunk or an AppendEntries batch)."""
DEFAULT_MAX_CLIENT_FRAME_BYTES: Final = (16 << 20) + (64 << 10)
"""The largest frame on a client connection: the largest command a node accepts by default
(``RaftConfig.max_entry_bytes``, 16 MiB) plus room for the request around it."""


class FrameTooLarge(RemoteProtocolError):
    """A peer announced a frame larger than the limit: close the connection."""


def encode_frame(payload: bytes) -> bytes:
    """Prefix ``payload`` with its length."""
    return HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Incremental frame parser. ``feed(data)`` returns the complete payloads found so far."""

    __slots__ = ("_buf", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add bytes; return every payload now complete, in order. Raises
        :class:`FrameTooLarge` when a length prefix exceeds the limit."""
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        limit = self.max_frame_bytes
        unpack = HEADER.unpack_from
        while end - pos >= HEADER_SIZE:
            (size,) = unpack(buf, pos)
            if size > limit:
                raise FrameTooLarge(f"frame of {size} bytes exceeds the limit of {limit} bytes")
            if end - pos - HEADER_SIZE < size:
                break
            start = pos + HEADER_SIZE
            out.append(bytes(buf[start : start + size]))
            pos = start + size
        if pos:
            del buf[:pos]
        return out

    def buffered(self) -> int:
        """Bytes held that do not yet form a complete frame."""
        return len(self._buf)
