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
    """A segment holding ``batches`` written one after the other, then ``tail`` zero bytes."""
    data = bytearray(segments.segment_header(SEQ))
    for ops in batches:
        buf, _ = encode_batch(SEQ, len(data), ops)
        data += buf
    return data + bytes(tail)


def test_names() -> None:
    assert segments.segment_name(SEQ) == "0000000000000007.wal"
    names = ["LOCK", "000000000000000a.wal", "0000000000000009.wal", "0000000000000008.wal.tmp"]
    assert segments.segment_numbers(names) == [9, 10]


def test_encode_batch_reports_tagged_records() -> None:
    start = segments._HDR
    buf, offsets = encode_batch(SEQ, start, [(HARD_STATE, hs(1), -1), (HARD_STATE, hs(2), 5)])
    first = segments._RH + len(hs(1))
    assert offsets == {5: (start + first, segments._RH + len(hs(2)))}
    assert len(buf) == first + segments._RH + len(hs(2))


def test_scan_returns_the_records_of_complete_batches() -> None:
    data = segment([(HARD_STATE, hs(1), -1)], [(HARD_STATE, hs(2), -1), (HARD_STATE, hs(3), -1)])
    scan = scan_segment(bytes(data), SEQ, PATH)
    assert scan.damage is None
    assert [bytes(p) for _, p, _ in scan.records] == [hs(1), hs(2), hs(3)]
    assert scan.end == len(data) - 64


def test_scan_reports_a_torn_last_batch() -> None:
    data = segment([(HARD_STATE, hs(1), -1)], [(HARD_STATE, hs(2), -1)])
    end = len(data) - 64
    data[end - 1] ^= 0xFF  # the last payload byte of the second batch
    scan = scan_segment(bytes(data), SEQ, PATH)
    second = segments._HDR + segments._RH + len(hs(1))
    assert scan.damage == Damage(second, "checksum mismatch", second, None)
    assert scan.end == second
    assert [bytes(p) for _, p, _ in scan.records] == [hs(1)]


def test_scan_reports_a_later_batch_after_damage() -> None:
    data = segment([(HARD_STATE, hs(1), -1)], [(HARD_STATE, hs(2), -1)])
    data[segments._HDR + 3] ^= 0xFF  # the first record's length
    scan = scan_segment(bytes(data), SEQ, PATH)
    assert scan.damage is not None
    assert scan.damage.later == segments._HDR + segments._RH + len(hs(1))
    assert scan.records == [] and scan.end == segments._HDR


def test_scan_reports_a_batch_without_its_final_record() -> None:
    data = bytearray(segments.segment_header(SEQ))
    buf, _ = encode_batch(SEQ, len(data), [(HARD_STATE, hs(1), -1), (HARD_STATE, hs(2), -1)])
    data += buf[: segments._RH + len(hs(1))] + bytes(64)  # the second record never landed
    scan = scan_segment(bytes(data), SEQ, PATH)
    assert scan.damage is not None and scan.damage.reason == "batch has no final record"
    assert scan.end == segments._HDR


def test_scan_checks_the_header() -> None:
    data = segment()
    with pytest.raises(CorruptLogError, match="header says number 7, name says 8"):
        scan_segment(bytes(data), 8, PATH)
    data[0] ^= 0xFF
    with pytest.raises(UnsupportedFormatError, match="not a raftpy write-ahead log"):
        scan_segment(bytes(data), SEQ, PATH)


def test_decode_entries_record_rejects_damage() -> None:
    data = segment([(HARD_STATE, hs(1), -1)])
    raw = bytes(data[segments._HDR : len(data) - 64])
    with pytest.raises(CorruptLogError, match="undecodable entries payload"):
        segments.decode_entries_record(raw, SEQ, segments._HDR, PATH)
    with pytest.raises(CorruptLogError, match="checksum mismatch"):
        segments.decode_entries_record(raw, SEQ, segments._HDR + 1, PATH)
