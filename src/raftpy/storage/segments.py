"""The write-ahead log's on-disk format: segment files, the records in them, and the reading
of a segment that recovery relies on. :class:`~raftpy.storage.wal.FileStorage` owns the log
itself (what it writes when, what recovery makes of a damaged segment); this module owns the
bytes.

Segments live in the data directory, numbered 1, 2, ... without gaps (a compacted prefix of
them may be gone)::

    0000000000000001.wal      the number as 16 hex digits
    0000000000000002.wal
    0000000000000003.wal.tmp  one being created (renamed into place once synced)

A segment starts with a header: the magic ``b"RAFTWAL\\0"``, the format version (u32), the
segment's number (u64), in version 2 the size the segment was preallocated to (u64), and a
CRC-32 of the bytes before it (24 bytes in version 1, 32 in version 2). Records follow, back to
back; the rest of the file is preallocated zeros (so a write inside it changes no metadata and
``fdatasync`` stays cheap). A record is a 15-byte header and a msgspec msgpack payload::

    marker  2s   b"\\xa5\\x5a": lets recovery find record starts quickly
    type    u8   ENTRIES, HARD_STATE, TRUNCATE, SNAPSHOT, TAIL, SEAL; the 0x80 bit marks a
                 batch's last record
    length  u32  payload bytes
    back    u32  bytes from the start of this record's batch to this record
    crc     u32  zlib.crc32 (plain CRC-32, stdlib) of (segment number, file offset, type,
                 length, back, payload): a record copied or left over at another place fails it

Record payloads: ``ENTRIES`` a list of contiguous :class:`Entry`; ``HARD_STATE`` a
:class:`HardState`; ``TRUNCATE`` an index ``n``: "entries after ``n`` are gone"; ``SNAPSHOT``
the snapshot's :class:`SnapshotMeta` and whether the entries after it were kept (compaction)
or dropped (a snapshot from the leader that replaced a conflicting log); ``TAIL`` nothing;
``SEAL`` the number of the segment the log continues in.

**What tells "never written" from "written and lost"** (version 2). Every batch is written
together with a ``TAIL`` record right after it (same ``pwrite``, same ``fdatasync``), whose
``back`` points at the batch it closes; the next batch is written over it. So a segment's data
always ends with an intact ``TAIL``: a segment that ends without one lost its end (a crash
cannot do that: the next batch's first bytes, never zeros, are what overwrites a ``TAIL``).
When the log moves on to a new segment, the old one gets a ``SEAL`` after its ``TAIL``, so a
missing last segment is seen too. The header's preallocated size tells a segment cut short
(a crash never shrinks a preallocated file) from a torn write inside it. Version 1 segments
(no ``TAIL``, ``SEAL`` or size) are still read, with what they can tell.

**Batches.** Records are written in *batches* (:func:`encode_batch`: one ``pwrite`` each); a
batch counts only when its last record, the one with the 0x80 bit, is intact.
:func:`scan_segment` reads a segment the way recovery needs it (:func:`scan_segment_file` the
same, through a sliding window a MiB at a time): the records of its complete
batches, where they end, whether a ``TAIL`` closes them, and the first damage
(:class:`Damage`) if any, together with what follows it: an intact record of a *later* batch
(the ``back`` field says where a record's batch starts: evidence that the damaged batch was not
the last one written), or the damaged batch's own ``TAIL`` (evidence that the whole batch was
written). What to make of damage is the log's decision, not the format's.

Names with a leading underscore are shared inside :mod:`raftpy.storage` (the log and its
tests read segments through them), not part of the public API.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import msgspec

from raftpy.core.messages import DECODE_ERRORS, Entry, SnapshotMeta
from raftpy.core.storage import HardState
from raftpy.storage.errors import CorruptLogError, UnsupportedFormatError

__all__ = [
    "ENTRIES",
    "FORMAT_VERSION",
    "HARD_STATE",
    "MAGIC",
    "SEAL",
    "SNAPSHOT",
    "TAIL",
    "TRUNCATE",
    "Damage",
    "SegmentScan",
    "decode_entries_record",
    "encode_batch",
    "encode_seal",
    "encode_tail",
    "header_size",
    "scan_segment",
    "scan_segment_file",
    "segment_header",
    "segment_name",
    "segment_numbers",
]

MAGIC = b"RAFTWAL\x00"
FORMAT_VERSION = 2
"""The version new segments are written in; version 1 segments are still read."""
_VERSIONS = (1, 2)

_SEG_HEADER = struct.Struct("<8sIQI")  # v1: magic, version, segment number, crc of the first 20
_SEG_HEADER2 = struct.Struct("<8sIQQI")  # v2: ... preallocated size, crc of the first 28
_REC = struct.Struct("<2sBIII")  # marker, type, length, back, crc
_POS = struct.Struct("<QQBII")  # what the crc covers besides the payload
_MARKER = b"\xa5\x5a"
_HDR = _SEG_HEADER2.size  # where the records of a new segment start
_HDR1 = _SEG_HEADER.size
_RH = _REC.size
HOLE = 480
"""Zero bytes in a row that a lost sector of an interrupted write leaves inside a batch (a
512-byte sector, less what a ``TAIL`` it replaced may still hold)."""

ENTRIES = 1
HARD_STATE = 2
TRUNCATE = 3
SNAPSHOT = 4
TAIL = 5
SEAL = 6
_END = 0x80
_TAIL_TYPE = TAIL | _END
_TYPES = frozenset({ENTRIES, HARD_STATE, TRUNCATE, SNAPSHOT, TAIL, SEAL})
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
_dec_seal = msgspec.msgpack.Decoder(int)

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


def header_size(version: int) -> int:
    """Bytes of a segment header in format ``version``: where its records start."""
    return _HDR1 if version == 1 else _HDR


def segment_header(seq: int, preallocated: int, version: int = FORMAT_VERSION) -> bytes:
    """The header that starts segment number ``seq``, preallocated to ``preallocated`` bytes
    (``version`` 1 only for tests of old data directories: it cannot say)."""
    if version == 1:
        header = _SEG_HEADER.pack(MAGIC, 1, seq, 0)
    else:
        header = _SEG_HEADER2.pack(MAGIC, version, seq, preallocated, 0)
    return header[:-4] + struct.pack("<I", zlib.crc32(header[:-4]))


def _record(seq: int, off: int, typ: int, payload: bytes, back: int) -> bytes:
    t = typ | _END
    return _REC.pack(_MARKER, t, len(payload), back, _crc(seq, off, t, payload, back)) + payload


def encode_tail(seq: int, off: int, batch_start: int) -> bytes:
    """The ``TAIL`` record at offset ``off`` closing the batch that starts at ``batch_start``
    (``off`` itself for a segment that has no batch yet)."""
    return _record(seq, off, TAIL, b"", off - batch_start)


def encode_seal(seq: int, off: int, next_seq: int) -> bytes:
    """The ``SEAL`` record at offset ``off`` (right after the ``TAIL``): the log goes on in
    segment ``next_seq``."""
    return _record(seq, off, SEAL, _enc.encode(next_seq), 0)


def encode_batch(
    seq: int, start: int, ops: Sequence[Op], tail: bool = True
) -> tuple[bytearray, dict[int, tuple[int, int]]]:
    """The bytes of one batch holding ``ops``, to be written at offset ``start`` of segment
    ``seq`` (the offset is part of every checksum), followed by its ``TAIL`` record (unless
    ``tail`` is false: a version 1 segment), and, for each tag ``>= 0``, the offset and length
    of its record. The next batch goes where the ``TAIL`` starts: ``start + len(bytes) -
    TAIL_SIZE``."""
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
    if tail:
        # encode_tail, inlined: this runs once per sync.
        off = start + len(buf)
        back = off - start
        crc = zlib.crc32(_POS.pack(seq, off, _TAIL_TYPE, 0, back))
        buf += _REC.pack(_MARKER, _TAIL_TYPE, 0, back, crc)
    return buf, offsets


TAIL_SIZE = _RH
"""Bytes of a ``TAIL`` record (it has no payload)."""


# -- reading ----------------------------------------------------------------------------------


def _check_record(data: bytes | bytearray, pos: int, seq: int, off: int, size: int) -> str | None:
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
    if back > off - _HDR1:
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
    except DECODE_ERRORS as exc:
        raise CorruptLogError(path, off, f"undecodable entries payload: {exc}") from exc


def _damaged_magic(data: bytes | bytearray) -> bool:
    """Whether a header whose magic number is wrong is a raftpy header with damaged magic
    bytes: at most two of its eight bytes differ, and its checksum matches once the magic is
    put right (a flipped bit is damage to name with its offset, not a file of another
    format; a file that starts with another format's magic is that format)."""
    if sum(a != b for a, b in zip(data[:8], MAGIC, strict=False)) > 2:
        return False
    for header in (_SEG_HEADER2, _SEG_HEADER):
        if len(data) >= header.size:
            fields = header.unpack_from(data)
            if zlib.crc32(MAGIC + bytes(data[8 : header.size - 4])) == fields[-1]:
                return True
    return False


def _check_header(data: bytes | bytearray, seq: int, path: str) -> tuple[int, int]:
    """Check the header of segment ``seq``; its format version and preallocated size (0 for
    version 1, which does not record it)."""
    if len(data) < _HDR1:
        raise CorruptLogError(path, 0, f"segment header truncated ({len(data)} bytes)")
    magic, version, hseq, hcrc = _SEG_HEADER.unpack_from(data)
    if magic != MAGIC and _damaged_magic(data):
        raise CorruptLogError(path, 0, f"damaged magic number {magic!r} (expected {MAGIC!r})")
    if magic != MAGIC:
        raise UnsupportedFormatError(
            f"{path} is not a raftpy write-ahead log segment: magic number {magic!r}, "
            f"expected {MAGIC!r}"
        )
    if version not in _VERSIONS:
        raise UnsupportedFormatError(
            f"{path} has write-ahead log format version {version}; this raftpy reads "
            f"versions {', '.join(map(str, _VERSIONS))} only (written by a newer raftpy?)"
        )
    preallocated = 0
    size = _HDR1
    if version >= 2:
        if len(data) < _HDR:
            raise CorruptLogError(path, 0, f"segment header truncated ({len(data)} bytes)")
        _, _, hseq, preallocated, hcrc = _SEG_HEADER2.unpack_from(data)
        size = _HDR
    if zlib.crc32(data[: size - 4]) != hcrc:
        raise CorruptLogError(path, 0, "segment header checksum mismatch")
    if hseq != seq:
        raise CorruptLogError(path, 12, f"segment header says number {hseq}, name says {seq}")
    return version, preallocated


def _after(
    data: bytes | bytearray, seq: int, bad: int, batch_start: int
) -> tuple[int | None, int | None]:
    """What follows the bad record at ``bad`` in a batch starting at ``batch_start``: the
    offset of an intact record of a batch that starts after it (proof that the damaged batch
    had been synced), and the offset of the damaged batch's own intact ``TAIL`` (proof that
    the whole batch was written)."""
    tail = None
    pos = data.find(_MARKER, bad + 1)
    while pos != -1:
        if _check_record(data, pos, seq, pos, len(data)) is None:
            _, t, _, back, _ = _REC.unpack_from(data, pos)
            if t & 0x7F == TAIL and pos - back == batch_start and tail is None:
                tail = pos
            elif t & 0x7F not in (TAIL, SEAL) and pos - back > bad:
                return pos, tail
        pos = data.find(_MARKER, pos + 1)
    return None, tail


def _hole(data: bytes | bytearray, start: int, end: int) -> int | None:
    """The offset of a run of :data:`HOLE` zero bytes in ``data[start:end]``, or ``None``."""
    at = data.find(bytes(HOLE), start, end)
    return None if at == -1 else at


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
    tail: int | None = None
    """The offset of the damaged batch's own intact ``TAIL`` record, or ``None``: with one, the
    whole batch reached the disk (its last bytes are there), so the damage is not a write cut
    short, unless a :attr:`hole` says a piece of it went missing."""
    hole: int | None = None
    """The offset of a run of zero bytes inside the damaged batch as long as a lost sector
    (an interrupted write whose pieces reached the disk out of order), or ``None``."""
    data_end: int = 0
    """Where the segment's non-zero bytes end (what a repair must clear)."""


@dataclass(frozen=True, slots=True)
class SegmentScan:
    """What :func:`scan_segment` read from one segment."""

    records: list[Record]
    """The records of the complete batches before any damage, in order."""
    end: int
    """Where those batches end: the offset the next batch would be written at."""
    damage: Damage | None
    """The first damage, or ``None`` when the data ends cleanly."""
    version: int = FORMAT_VERSION
    """The segment's format version."""
    preallocated: int = 0
    """The size the segment was created with (version 2; 0 for version 1)."""
    size: int = 0
    """The file's size in bytes."""
    tail: int | None = None
    """Where the ``TAIL`` closing the batches is (at :attr:`end`), or ``None`` when there is
    none (always ``None`` for version 1, which has no ``TAIL``)."""
    sealed: int | None = None
    """The segment the log continues in, from the ``SEAL`` after the ``TAIL``, or ``None``."""
    leftover: int | None = None
    """The offset of non-zero bytes after the ``TAIL`` (and ``SEAL``): pieces of a batch
    whose write was interrupted before any of it overwrote the ``TAIL``."""
    data_end: int = 0
    """Where the non-zero bytes after :attr:`leftover` end (when there are any)."""
    last_batch: int = 0
    """Where the last complete batch starts (the header's end when there is none): what a
    ``TAIL`` at :attr:`end` points back to."""


class _Reader(Protocol):
    """What :func:`scan_segment_file` reads a segment through (a :class:`~raftpy.storage.fs.File`
    is one)."""

    def size(self) -> int: ...

    def read_at(self, offset: int, size: int) -> bytes: ...


_CHUNK = 1 << 20
"""How much of a segment is read at a time, and the unit of the zero-tail checks."""
_ZEROS = bytes(_CHUNK)
"""A zero-filled chunk to compare a segment's tail against, a chunk at a time."""


class _Window:
    """A segment's bytes seen through a sliding window: ``buf`` holds the file's bytes from
    offset ``base``. Recovery reads a 64 MiB preallocated segment this way, a MiB at a time,
    so a restart's memory does not grow with the segment's size; doctor passes the bytes it
    read whole (then the window is the whole file and nothing more is ever read)."""

    __slots__ = ("_read", "base", "buf", "size")

    def __init__(self, read: _Reader | None, size: int, buf: bytes | bytearray = b"") -> None:
        self._read = read
        self.size = size
        self.base = 0
        self.buf = buf

    def ensure(self, keep: int, end: int) -> None:
        """Make the window hold bytes ``[keep, end)`` (cut at the end of the file), dropping
        what comes before ``keep``."""
        end = min(end, self.size)
        have = self.base + len(self.buf)
        if end <= have or self._read is None:
            return
        assert keep >= self.base, "the window only moves forward"
        if keep >= have:
            self.buf = bytearray(self._read.read_at(keep, max(end - keep, _CHUNK)))
        else:
            # Grown in place (a batch larger than a chunk stays whole in the window, one
            # buffer, not a copy per chunk); the front is dropped without a copy.
            more = self._read.read_at(have, max(end - have, _CHUNK))
            try:
                assert isinstance(self.buf, bytearray)
                del self.buf[: keep - self.base]
                self.buf += more
            except BufferError:  # a caller still holds a view of it: leave that one alone
                self.buf = bytearray(self.buf[keep - self.base :]) + more
        self.base = keep

    def chunk(self, start: int, end: int) -> bytes | bytearray:
        """Bytes ``[start, end)`` of the file (at most a chunk), read past the window."""
        lo = start - self.base
        if self._read is None or (lo >= 0 and end <= self.base + len(self.buf)):
            return self.buf[lo : end - self.base]
        return self._read.read_at(start, end - start)

    def whole(self) -> bytes | bytearray:
        """The whole file (only for damage, where the evidence may lie anywhere after it)."""
        if self._read is None or (self.base == 0 and len(self.buf) >= self.size):
            return self.buf
        return self._read.read_at(0, self.size)


def _first_nonzero(w: _Window, start: int, end: int) -> int | None:
    """The offset of the first non-zero byte of ``[start, end)``, or ``None``. Compares a MiB
    at a time against :data:`_ZEROS` (a ``memcmp``), so the mostly zero tail of a 64 MiB
    preallocated segment is never held whole."""
    pos = start
    while pos < end:
        chunk = w.chunk(pos, min(pos + _CHUNK, end))
        if not chunk:
            return None
        if chunk != _ZEROS[: len(chunk)]:
            return pos + len(chunk) - len(chunk.lstrip(b"\0"))
        pos += len(chunk)
    return None


def _data_end(w: _Window, start: int, end: int) -> int:
    """Where the non-zero bytes of ``[start, end)`` end (``start`` when there are none),
    searched backwards a MiB at a time, like :func:`_first_nonzero`."""
    pos = end
    while pos > start:
        chunk = w.chunk(max(start, pos - _CHUNK), pos)
        if chunk != _ZEROS[: len(chunk)]:
            return pos - len(chunk) + len(chunk.rstrip(b"\0"))
        pos -= len(chunk)
    return start


def _leftover(w: _Window, after: int) -> tuple[int | None, int]:
    """Where non-zero bytes after offset ``after`` start and end (``None`` and ``after`` when
    there are none). The common case, all zeros, costs one ``memcmp`` per MiB."""
    first = _first_nonzero(w, after, w.size)
    if first is None:
        return None, after
    return first, _data_end(w, first, w.size)


def _check_at(w: _Window, off: int, seq: int, keep: int) -> str | None:
    """:func:`_check_record` for the record at file offset ``off``, reading what it needs into
    the window (keeping it from ``keep``). ``"end"`` when only zeros follow in the file."""
    w.ensure(keep, off + _RH)
    if off + _RH > w.size or w.buf[off - w.base : off - w.base + 2] != _MARKER:
        if _first_nonzero(w, off, w.size) is None:
            return "end"
        if off + _RH > w.size:
            return "truncated record header"
        return f"bad record marker {w.buf[off - w.base : off - w.base + 2]!r}"
    length = _REC.unpack_from(w.buf, off - w.base)[2]
    w.ensure(keep, off + _RH + length)
    return _check_record(w.buf, off - w.base, seq, off, w.size - w.base)


def _seal_at(w: _Window, seq: int, off: int) -> int | None:
    w.ensure(off, off + _RH)
    if w.buf[off - w.base : off - w.base + 2] != _MARKER or _check_at(w, off, seq, off) is not None:
        return None
    pos = off - w.base
    _, t, length, back, _ = _REC.unpack_from(w.buf, pos)
    if t & 0x7F != SEAL or back != 0:
        return None
    try:
        return int(_dec_seal.decode(w.buf[pos + _RH : pos + _RH + length]))
    except DECODE_ERRORS:
        return None


def scan_segment(data: bytes, seq: int, path: str) -> SegmentScan:
    """Read segment number ``seq`` (all of its bytes ``data``, from the file at ``path``):
    check its header and every record. A bad header raises :class:`CorruptLogError` or
    :class:`UnsupportedFormatError`; damage in the records is reported, not raised."""
    return _scan(_Window(None, len(data), data), seq, path, None)


def scan_segment_file(
    f: _Reader, seq: int, path: str, on_batch: Callable[[list[Record]], None]
) -> SegmentScan:
    """:func:`scan_segment` for a segment read through ``f`` a MiB at a time: each complete
    batch's records go to ``on_batch`` as soon as the batch checks out (its record views are
    valid during the call only), and the returned scan's ``records`` is empty. Memory stays
    at a chunk plus the largest batch, however large the segment."""
    return _scan(_Window(f, f.size()), seq, path, on_batch)


def _scan(
    w: _Window, seq: int, path: str, on_batch: Callable[[list[Record]], None] | None
) -> SegmentScan:
    w.ensure(0, _HDR)
    version, preallocated = _check_header(w.buf, seq, path)
    out: list[Record] = []
    size = w.size
    off = batch_start = prev_start = header_size(version)
    batch: list[tuple[int, int, int]] = []  # type, file offset, payload length
    while True:
        reason = _check_at(w, off, seq, batch_start)
        if reason is None:
            _, t, length, back, _ = _REC.unpack_from(w.buf, off - w.base)
            if not batch and t & 0x7F == TAIL and back == off - prev_start:
                # The batches end here; after the TAIL, at most a SEAL and leftovers.
                after = off + _RH + length
                sealed = _seal_at(w, seq, after)
                if sealed is not None:
                    after += _RH + len(_enc.encode(sealed))
                leftover, data_end = _leftover(w, after)
                return SegmentScan(
                    out,
                    off,
                    None,
                    version,
                    preallocated,
                    size,
                    off,
                    sealed,
                    leftover,
                    data_end,
                    prev_start,
                )
            if t & 0x7F in (TAIL, SEAL):
                reason = f"end marker (type {t & 0x7F}) where a record was expected"
            elif back != off - batch_start:
                reason = f"record claims its batch starts at {off - back}, not {batch_start}"
        if reason is not None:
            if reason == "end" and not batch:
                # Clean zeros, but no TAIL.
                return SegmentScan(
                    out, off, None, version, preallocated, size, last_batch=prev_start
                )
            if reason == "end":
                reason = "batch has no final record"
            # Damage: the evidence of what it means may lie anywhere after it.
            data = w.whole()
            whole = _Window(None, size, data)
            later, tail = _after(data, seq, off, batch_start)
            data_end = _data_end(whole, 0, size)
            hole = _hole(data, batch_start, tail if tail is not None else data_end)
            damage = Damage(off, reason, batch_start, later, tail, hole, data_end)
            return SegmentScan(
                out, batch_start, damage, version, preallocated, size, last_batch=prev_start
            )
        batch.append((t & 0x7F, off, length))
        off += _RH + length
        if t & _END:
            view = memoryview(w.buf)
            records = [
                (typ, view[o + _RH - w.base : o + _RH + n - w.base], o) for typ, o, n in batch
            ]
            if on_batch is None:
                out.extend(records)
            else:
                on_batch(records)
                del records, view  # so the window can grow in place again
            batch = []
            prev_start = batch_start
            batch_start = off
