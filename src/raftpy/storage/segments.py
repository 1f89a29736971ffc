"""The write-ahead log's on-disk format: segment files, the records in them, and the reading
of a segment that recovery relies on. :class:`~raftpy.storage.wal.FileStorage` owns the log
itself (what it writes when, what recovery makes of a damaged segment); this module owns the
bytes.

Segments live in the data directory, numbered 1, 2, ... without gaps (a compacted prefix of
them may be gone)::

    0000000000000001.wal      the number as 16 hex digits
    0000000000000002.wal
    0000000000000003.wal.tmp  one being created (renamed into place once synced)

A segment starts with a 24-byte header: the magic ``b"RAFTWAL\\0"``, the format version (u32),
the segment's number (u64) and a CRC-32 of those 20 bytes. Records follow, back to back; the
rest of the file is preallocated zeros (so a write inside it changes no metadata and
``fdatasync`` stays cheap). A record is a 15-byte header and a msgspec msgpack payload::

    marker  2s   b"\\xa5\\x5a": lets recovery find record starts quickly
    type    u8   ENTRIES, HARD_STATE, TRUNCATE, SNAPSHOT; the 0x80 bit marks a batch's last record
    length  u32  payload bytes
    back    u32  bytes from the start of this record's batch to this record
    crc     u32  zlib.crc32 (plain CRC-32, stdlib) of (segment number, file offset, type,
                 length, back, payload): a record copied or left over at another place fails it

Record payloads: ``ENTRIES`` a list of contiguous :class:`Entry`; ``HARD_STATE`` a
:class:`HardState`; ``TRUNCATE`` an index ``n``: "entries after ``n`` are gone"; ``SNAPSHOT``
the snapshot's :class:`SnapshotMeta` and whether the entries after it were kept (compaction)
or dropped (a snapshot from the leader that replaced a conflicting log).

**Batches.** Records are written in *batches* (:func:`encode_batch`: one ``pwrite`` each); a
batch counts only when its last record, the one with the 0x80 bit, is intact.
:func:`scan_segment` reads a segment the way recovery needs it: the records of its complete
batches, where they end, and the first damage (:class:`Damage`) if any, together with whether
an intact record of a *later* batch follows it (the ``back`` field says where a record's
batch starts): evidence that the damaged batch was not the last one written. What to make of
damage is the log's decision, not the format's.

Names with a leading underscore are shared inside :mod:`raftpy.storage` (the log and its
tests read segments through them), not part of the public API.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgspec

from raftpy.core.messages import Entry, SnapshotMeta
from raftpy.core.storage import HardState
from raftpy.storage.errors import CorruptLogError, UnsupportedFormatError

__all__ = [
    "ENTRIES",
    "FORMAT_VERSION",
    "HARD_STATE",
    "MAGIC",
    "SNAPSHOT",
    "TRUNCATE",
    "Damage",
    "SegmentScan",
    "decode_entries_record",
    "encode_batch",
    "scan_segment",
    "segment_header",
    "segment_name",
    "segment_numbers",
]

MAGIC = b"RAFTWAL\x00"
FORMAT_VERSION = 1

_SEG_HEADER = struct.Struct("<8sIQI")  # magic, version, segment number, crc of the first 20
_REC = struct.Struct("<2sBIII")  # marker, type, length, back, crc
_POS = struct.Struct("<QQBII")  # what the crc covers besides the payload
_MARKER = b"\xa5\x5a"
_HDR = _SEG_HEADER.size
_RH = _REC.size

ENTRIES = 1
HARD_STATE = 2
TRUNCATE = 3
SNAPSHOT = 4
_END = 0x80
_TYPES = frozenset({ENTRIES, HARD_STATE, TRUNCATE, SNAPSHOT})
_NAME = re.compile(r"^([0-9a-f]{16})\.wal$")


class _SnapshotRecord(msgspec.Struct, frozen=True, array_like=True):
    """Payload of a SNAPSHOT record: the snapshot, and whether the log after it was kept."""

    meta: SnapshotMeta
    keep: bool


_enc = msgspec.msgpack.Encoder()
_dec_entries = msgspec.msgpack.Decoder(list[Entry])
_dec_hard = msgspec.msgpack.Decoder(HardState)
_dec_trunc = msgspec.msgpack.Decoder(int)
_dec_snap = msgspec.msgpack.Decoder(_SnapshotRecord)

Op = tuple[int, bytes, int]
"""A record to write: (type, payload, tag). :func:`encode_batch` reports where each record
with a tag ``>= 0`` lands."""

Record = tuple[int, memoryview, int]
"""A record read back: (type without the 0x80 bit, payload, file offset of the record)."""


# -- names ------------------------------------------------------------------------------------


def segment_name(seq: int) -> str:
    """The file name of segment number ``seq``."""
    return f"{seq:016x}.wal"


def segment_numbers(names: Iterable[str]) -> list[int]:
    """The numbers of the segments among the file names ``names``, ascending."""
    return sorted(int(m.group(1), 16) for n in names if (m := _NAME.match(n)))


# -- writing ----------------------------------------------------------------------------------


def _crc(seq: int, off: int, typ: int, payload: bytes | memoryview, back: int) -> int:
    return zlib.crc32(payload, zlib.crc32(_POS.pack(seq, off, typ, len(payload), back)))


def segment_header(seq: int) -> bytes:
    """The header that starts segment number ``seq``."""
    header = _SEG_HEADER.pack(MAGIC, FORMAT_VERSION, seq, 0)
    return header[:-4] + struct.pack("<I", zlib.crc32(header[:-4]))


def encode_batch(
    seq: int, start: int, ops: Sequence[Op]
) -> tuple[bytearray, dict[int, tuple[int, int]]]:
    """The bytes of one batch holding ``ops``, to be written at offset ``start`` of segment
    ``seq`` (the offset is part of every checksum), and, for each tag ``>= 0``, the offset and
    length of its record."""
    buf = bytearray()
    offsets: dict[int, tuple[int, int]] = {}
    last = len(ops) - 1
    for i, (typ, payload, k) in enumerate(ops):
        off = start + len(buf)
        t = typ | (_END if i == last else 0)
        back = off - start
        buf += _REC.pack(_MARKER, t, len(payload), back, _crc(seq, off, t, payload, back))
        buf += payload
        if k >= 0:
            offsets[k] = (off, _RH + len(payload))
    return buf, offsets


# -- reading ----------------------------------------------------------------------------------


def _check_record(data: bytes, pos: int, seq: int, off: int, size: int) -> str | None:
    """Why the record at ``data[pos:]`` (file offset ``off``) is bad, ``"end"`` for clean
    zeros to the end of ``data``, or ``None`` when it is intact."""
    if pos + _RH > size:
        return "end" if not data[pos:size].strip(b"\0") else "truncated record header"
    marker, t, length, back, crc = _REC.unpack_from(data, pos)
    if marker != _MARKER:
        if not data[pos:size].strip(b"\0"):
            return "end"
        return f"bad record marker {bytes(marker)!r}"
    if t & 0x7F not in _TYPES:
        return f"unknown record type {t}"
    if length > size - pos - _RH:
        return f"impossible length {length} (only {size - pos - _RH} bytes follow)"
    if back > off - _HDR:
        return f"impossible batch offset {back}"
    payload = memoryview(data)[pos + _RH : pos + _RH + length]
    if _crc(seq, off, t, payload, back) != crc:
        return "checksum mismatch"
    return None


def decode_entries_record(raw: bytes, seq: int, off: int, path: str) -> list[Entry]:
    """The entries of the ENTRIES record ``raw``, read back from file offset ``off`` of segment
    ``seq`` (at ``path``). Raises :class:`CorruptLogError` when it is damaged."""
    bad = _check_record(raw, 0, seq, off, len(raw))
    if bad is not None:
        raise CorruptLogError(path, off, bad)
    try:
        return _dec_entries.decode(raw[_RH:])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorruptLogError(path, off, f"undecodable entries payload: {exc}") from exc


def _check_header(data: bytes, seq: int, path: str) -> None:
    if len(data) < _HDR:
        raise CorruptLogError(path, 0, f"segment header truncated ({len(data)} bytes)")
    magic, version, hseq, hcrc = _SEG_HEADER.unpack_from(data)
    if magic != MAGIC:
        raise UnsupportedFormatError(
            f"{path} is not a raftpy write-ahead log segment: magic number {magic!r}, "
            f"expected {MAGIC!r}"
        )
    if version != FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"{path} has write-ahead log format version {version}; this raftpy reads "
            f"version {FORMAT_VERSION} only (written by a newer raftpy?)"
        )
    if zlib.crc32(data[: _HDR - 4]) != hcrc:
        raise CorruptLogError(path, 0, "segment header checksum mismatch")
    if hseq != seq:
        raise CorruptLogError(path, 12, f"segment header says number {hseq}, name says {seq}")


def _later_batch(data: bytes, seq: int, bad: int) -> int | None:
    """The offset of an intact record after ``bad`` that belongs to a batch starting after it
    (proof that the damaged batch had been synced), or ``None``."""
    pos = data.find(_MARKER, bad + 1)
    while pos != -1:
        if _check_record(data, pos, seq, pos, len(data)) is None:
            back = _REC.unpack_from(data, pos)[3]
            if pos - back > bad:
                return pos
        pos = data.find(_MARKER, pos + 1)
    return None


@dataclass(frozen=True, slots=True)
class Damage:
    """The first bad record :func:`scan_segment` found in a segment."""

    offset: int
    """Where the bad record starts (for a batch without a final record: where it ends)."""
    reason: str
    """What is wrong, e.g. ``"checksum mismatch"``."""
    batch_start: int
    """Where the batch holding the bad record starts: every byte before it is intact."""
    later: int | None
    """The offset of an intact record of a batch that starts after the bad record, or
    ``None``: with one, the damaged batch was not the last one written."""


@dataclass(frozen=True, slots=True)
class SegmentScan:
    """What :func:`scan_segment` read from one segment."""

    records: list[Record]
    """The records of the complete batches before any damage, in order."""
    end: int
    """Where those batches end: the offset the next batch would be written at."""
    damage: Damage | None
    """The first damage, or ``None`` when the data ends in clean zeros."""


def scan_segment(data: bytes, seq: int, path: str) -> SegmentScan:
    """Read segment number ``seq`` (all of its bytes ``data``, from the file at ``path``):
    check its header and every record. A bad header raises :class:`CorruptLogError` or
    :class:`UnsupportedFormatError`; damage in the records is reported, not raised."""
    _check_header(data, seq, path)
    out: list[Record] = []
    view = memoryview(data)
    size = len(data)
    off = _HDR
    batch_start = _HDR
    batch: list[Record] = []
    while True:
        reason = _check_record(data, off, seq, off, size)
        if reason is None:
            _, t, length, back, _ = _REC.unpack_from(data, off)
            if back != off - batch_start:
                reason = f"record claims its batch starts at {off - back}, not {batch_start}"
        if reason is not None:
            if reason == "end" and not batch:
                return SegmentScan(out, off, None)  # clean end of data
            if reason == "end":
                reason = "batch has no final record"
            damage = Damage(off, reason, batch_start, _later_batch(data, seq, off))
            return SegmentScan(out, batch_start, damage)
        batch.append((t & 0x7F, view[off + _RH : off + _RH + length], off))
        off += _RH + length
        if t & _END:
            out.extend(batch)
            batch = []
            batch_start = off
