"""Recovery reads a segment through a window a MiB at a time (``scan_segment_file``) instead of
whole (``scan_segment``, which doctor uses): both must reach the same verdict on every segment,
intact or damaged, with batches smaller and larger than a chunk and records across chunk edges.
Randomized: each test prints its seed; replay one with ``pytest
tests/storage/test_segment_window.py -k "[SEED]"``."""

from __future__ import annotations

import random

import pytest

from raftpy.core.messages import Entry, EntryKind
from raftpy.storage.fs import File, MemoryFileSystem
from raftpy.storage.segments import (
    _CHUNK,
    ENTRIES,
    HARD_STATE,
    Record,
    SegmentScan,
    encode_batch,
    encode_seal,
    encode_tail,
    header_size,
    scan_segment,
    scan_segment_file,
    segment_header,
)
from raftpy.storage.wal import FileStorage
from tests.storage.test_segment_tail import _Reads

SEQ = 3
PATH = "/data/0000000000000003.wal"


def _segment(rng: random.Random, size: int, *, sealed: bool) -> bytes:
    """A preallocated segment of ``size`` bytes with random batches (some over a chunk) and its
    TAIL (and SEAL), then zeros."""
    start = header_size(2)
    out = bytearray(segment_header(SEQ, size))
    budget = size - 3 * _CHUNK // 2
    while True:
        ops = []
        for k in range(rng.randrange(1, 6)):
            n = rng.choice([0, 1, 50, 4000, rng.randrange(1, _CHUNK // 3)])
            if rng.random() < 0.03:
                n = _CHUNK + rng.randrange(1000)  # one record over a chunk
            ops.append((rng.choice([ENTRIES, HARD_STATE]), rng.randbytes(n), k))
        buf, _ = encode_batch(SEQ, start, ops)
        if start + len(buf) > budget:
            break
        out[start:] = buf
        start += len(buf) - len(encode_tail(SEQ, 0, 0))
    tail = start
    if sealed:
        out += encode_seal(SEQ, tail + len(encode_tail(SEQ, 0, 0)), SEQ + 1)
    out += bytes(size - len(out))
    return bytes(out)


def _records(records: list[Record]) -> list[tuple[int, bytes, int]]:
    return [(t, bytes(p), off) for t, p, off in records]


def _both(data: bytes) -> tuple[SegmentScan, list[tuple[int, bytes, int]], SegmentScan, _Reads]:
    whole = scan_segment(data, SEQ, PATH)
    f = _Reads(data)
    seen: list[tuple[int, bytes, int]] = []
    windowed = scan_segment_file(f, SEQ, PATH, lambda rs: seen.extend(_records(rs)))
    return whole, seen, windowed, f


def _same(whole: SegmentScan, seen: list[tuple[int, bytes, int]], windowed: SegmentScan) -> None:
    assert seen == _records(whole.records)
    assert windowed.records == []
    for field in SegmentScan.__dataclass_fields__:
        if field != "records":
            assert getattr(windowed, field) == getattr(whole, field), field


@pytest.mark.parametrize("seed", range(6))
def test_an_intact_segment_reads_the_same_through_the_window(seed: int) -> None:
    print(f"seed {seed}")
    rng = random.Random(seed)
    data = _segment(rng, rng.choice([4, 6]) * _CHUNK, sealed=seed % 2 == 0)
    whole, seen, windowed, f = _both(data)
    assert whole.damage is None and whole.tail is not None and len(whole.records) > 10
    _same(whole, seen, windowed)
    # The window reads a chunk at a time (more only for a batch larger than a chunk).
    assert f.largest <= 3 * _CHUNK


@pytest.mark.parametrize("seed", range(40))
def test_damage_reads_the_same_through_the_window(seed: int) -> None:
    print(f"seed {seed}")
    rng = random.Random(1000 + seed)
    data = bytearray(_segment(rng, 4 * _CHUNK, sealed=rng.random() < 0.5))
    whole = scan_segment(bytes(data), SEQ, PATH)
    assert whole.tail is not None
    end = whole.tail + 40
    kind = rng.choice(["flip", "zero", "cut", "junk"])
    at = rng.randrange(header_size(2), end)
    if kind == "flip":
        data[at] ^= 1 << rng.randrange(8)
    elif kind == "zero":
        n = rng.choice([1, 512, 4096, _CHUNK])
        data[at : at + n] = bytes(len(data[at : at + n]))
    elif kind == "cut":
        del data[at:]
    else:  # leftovers of an interrupted write after the TAIL
        spot = rng.randrange(end, len(data))
        data[spot : spot + 10] = rng.randbytes(len(data[spot : spot + 10]))
    _same(*_both(bytes(data))[:3])


class _CountingFs(MemoryFileSystem):
    """An in-memory file system that records the largest single read of a segment."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def open(self, path: str, create: bool = False) -> File:
        f = super().open(path, create)
        if not path.endswith(".wal"):
            return f
        fs = self
        read = f.read_at

        def read_at(offset: int, size: int) -> bytes:
            fs.largest = max(fs.largest, size)
            return read(offset, size)

        f.read_at = read_at  # type: ignore[method-assign]
        return f


def test_a_restart_reads_its_log_a_chunk_at_a_time() -> None:
    # A 64 MiB preallocated segment used to be read whole at every restart (160 MB peak for a
    # 2-entry log); the window reads a MiB at a time and replays batch by batch.
    fs = _CountingFs()
    store = FileStorage("/d", [1], fs=fs, segment_size=8 * _CHUNK)
    data = bytes(200)
    for k in range(400):
        store.append(
            [Entry(index=k + 1, term=1, kind=EntryKind.COMMAND, data=data + k.to_bytes(4, "big"))]
        )
        store.sync()
    store.close()
    fs.largest = 0
    again = FileStorage("/d", [1], fs=fs, segment_size=8 * _CHUNK)
    assert again.last_index() == 400
    assert again.entries(399, 401)[0].data == data + (398).to_bytes(4, "big")
    assert 0 < fs.largest <= _CHUNK, fs.largest
    again.close()
