"""Unit tests of the WAL's on-disk format: encoding batches and scanning a segment (the
log-level behaviour on top of it is tested in test_wal.py)."""

from __future__ import annotations

import pytest

from raftpy.core.storage import HardState
from raftpy.storage import segments
from raftpy.storage.errors import CorruptLogError, UnsupportedFormatError
from raftpy.storage.segments import HARD_STATE, Damage, encode_batch, scan_segment

PATH = "/data/0000000000000007.wal"
SEQ = 7


def hs(term: int) -> bytes:
    return segments._enc.encode(HardState(term, 1, 0))


def segment(*batches: list[segments.Op], tail: int = 64) -> bytearray:
    """A segment holding ``batches`` written one after the other (each over the TAIL of the
    one before), then ``tail`` zero bytes."""
    data = bytearray(segments.segment_header(SEQ, 0))
    data += segments.encode_tail(SEQ, len(data), len(data))
    for ops in batches:
        start = len(data) - segments.TAIL_SIZE
        buf, _ = encode_batch(SEQ, start, ops)
        data[start:] = buf
    return data + bytes(tail)


END = 64 + segments.TAIL_SIZE  # bytes after the last batch: its TAIL and the zeros


def test_names() -> None:
    assert segments.segment_name(SEQ) == "0000000000000007.wal"
    names = ["LOCK", "000000000000000a.wal", "0000000000000009.wal", "0000000000000008.wal.tmp"]
    assert segments.segment_numbers(names) == [9, 10]


def test_encode_batch_reports_tagged_records() -> None:
    start = segments._HDR
    buf, offsets = encode_batch(SEQ, start, [(HARD_STATE, hs(1), -1), (HARD_STATE, hs(2), 5)])
    first = segments._RH + len(hs(1))
    assert offsets == {5: (start + first, segments._RH + len(hs(2)))}
    assert len(buf) == first + segments._RH + len(hs(2)) + segments.TAIL_SIZE


def test_scan_returns_the_records_of_complete_batches() -> None:
    data = segment([(HARD_STATE, hs(1), -1)], [(HARD_STATE, hs(2), -1), (HARD_STATE, hs(3), -1)])
    scan = scan_segment(bytes(data), SEQ, PATH)
    assert scan.damage is None
    assert [bytes(p) for _, p, _ in scan.records] == [hs(1), hs(2), hs(3)]
    assert scan.end == len(data) - END
    assert scan.tail == scan.end and scan.sealed is None and scan.leftover is None


def test_scan_reports_a_damaged_last_batch_and_its_intact_tail() -> None:
    data = segment([(HARD_STATE, hs(1), -1)], [(HARD_STATE, hs(2), -1)])
    end = len(data) - END
    data[end - 1] ^= 0xFF  # the last payload byte of the second batch
    scan = scan_segment(bytes(data), SEQ, PATH)
    second = segments._HDR + segments._RH + len(hs(1))
    assert scan.damage == Damage(second, "checksum mismatch", second, None, end, None, end + 15)
    assert scan.end == second and scan.last_batch == segments._HDR
    assert [bytes(p) for _, p, _ in scan.records] == [hs(1)]


def test_scan_reports_a_later_batch_after_damage() -> None:
    data = segment([(HARD_STATE, hs(1), -1)], [(HARD_STATE, hs(2), -1)])
    data[segments._HDR + 3] ^= 0xFF  # the first record's length
    scan = scan_segment(bytes(data), SEQ, PATH)
    assert scan.damage is not None
    assert scan.damage.later == segments._HDR + segments._RH + len(hs(1))
    assert scan.damage.tail is None  # the TAIL belongs to the later batch
    assert scan.records == [] and scan.end == segments._HDR


def test_scan_reports_a_batch_without_its_final_record() -> None:
    data = bytearray(segments.segment_header(SEQ, 0))
    buf, _ = encode_batch(SEQ, len(data), [(HARD_STATE, hs(1), -1), (HARD_STATE, hs(2), -1)])
    data += buf[: segments._RH + len(hs(1))] + bytes(64)  # the second record never landed
    scan = scan_segment(bytes(data), SEQ, PATH)
    assert scan.damage is not None and scan.damage.reason == "batch has no final record"
    assert scan.end == segments._HDR


def test_scan_checks_the_header() -> None:
    data = segment()
    with pytest.raises(CorruptLogError, match="header says number 7, name says 8"):
        scan_segment(bytes(data), 8, PATH)
    data[0] ^= 0xFF  # one damaged byte of the magic: the rest of the header vouches for it
    with pytest.raises(CorruptLogError, match="damaged magic number"):
        scan_segment(bytes(data), SEQ, PATH)
    data[:8] = b"SQLite f"  # another format's magic
    with pytest.raises(UnsupportedFormatError, match="not a raftpy write-ahead log"):
        scan_segment(bytes(data), SEQ, PATH)


def test_decode_entries_record_rejects_damage() -> None:
    data = segment([(HARD_STATE, hs(1), -1)])
    raw = bytes(data[segments._HDR : len(data) - END])
    with pytest.raises(CorruptLogError, match="undecodable entries payload"):
        segments.decode_entries_record(raw, SEQ, segments._HDR, PATH)
    with pytest.raises(CorruptLogError, match="checksum mismatch"):
        segments.decode_entries_record(raw, SEQ, segments._HDR + 1, PATH)


def test_scan_tells_a_missing_tail_a_seal_and_leftovers() -> None:
    data = segment([(HARD_STATE, hs(1), -1)])
    end = len(data) - END
    cut = scan_segment(bytes(data[:end]), SEQ, PATH)  # cut at the batch boundary
    assert cut.damage is None and cut.tail is None and cut.end == end
    sealed = data[: end + segments.TAIL_SIZE] + segments.encode_seal(
        SEQ, end + segments.TAIL_SIZE, SEQ + 1
    )
    assert scan_segment(bytes(sealed), SEQ, PATH).sealed == SEQ + 1
    data[end + 40] = 7  # a piece of an interrupted write after the TAIL
    scan = scan_segment(bytes(data), SEQ, PATH)
    assert scan.tail == end and scan.leftover == end + 40 and scan.data_end == end + 41


def test_scan_reads_format_1_segments() -> None:
    data = bytearray(segments.segment_header(SEQ, 0, version=1))
    buf, _ = encode_batch(SEQ, len(data), [(HARD_STATE, hs(1), -1)], tail=False)
    data += buf + bytes(64)
    scan = scan_segment(bytes(data), SEQ, PATH)
    assert scan.version == 1 and scan.damage is None and scan.tail is None
    assert [bytes(p) for _, p, _ in scan.records] == [hs(1)]
