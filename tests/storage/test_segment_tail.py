"""The zero-tail checks of a segment scan: where non-zero bytes start and end after the last
batch, found a chunk at a time (a preallocated segment is mostly zeros; copying its tail whole
used to double a restart's peak memory)."""

from __future__ import annotations

import random

import pytest

from raftpy.storage.segments import _ZEROS, _data_end, _first_nonzero, _leftover, _Window

CHUNK = len(_ZEROS)


class _Reads:
    """A file over ``data`` that counts what is read from it."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.largest = 0

    def size(self) -> int:
        return len(self.data)

    def read_at(self, offset: int, size: int) -> bytes:
        self.largest = max(self.largest, size)
        return self.data[offset : offset + size]


def _windows(raw: bytes) -> list[_Window]:
    """The same bytes held whole (doctor) and read through a file a chunk at a time (recovery),
    the latter with its window already moved past the start."""
    moved = _Window(_Reads(raw), len(raw))
    moved.ensure(len(raw) // 2, len(raw) // 2 + 10)
    return [_Window(None, len(raw), raw), _Window(_Reads(raw), len(raw)), moved]


def _naive_first(data: bytes, start: int, end: int) -> int | None:
    rest = data[start:end]
    stripped = rest.lstrip(b"\0")
    return None if not stripped else start + len(rest) - len(stripped)


def _naive_end(data: bytes, start: int, end: int) -> int:
    return start + len(data[start:end].rstrip(b"\0"))


@pytest.mark.parametrize(
    "marks",
    [(), (0,), (CHUNK - 1,), (CHUNK,), (CHUNK + 1,), (2 * CHUNK - 1, 2 * CHUNK), (3 * CHUNK - 1,)],
)
def test_nonzero_bytes_at_chunk_edges_are_found(marks: tuple[int, ...]) -> None:
    data = bytearray(3 * CHUNK)
    for m in marks:
        data[m] = 7
    raw = bytes(data)
    for start, end in [(0, len(raw)), (1, len(raw) - 1), (CHUNK, 2 * CHUNK + 1), (5, 5)]:
        for w in _windows(raw):
            assert _first_nonzero(w, start, end) == _naive_first(raw, start, end)
            assert _data_end(w, start, end) == _naive_end(raw, start, end)


@pytest.mark.parametrize("seed", range(30))
def test_random_tails_agree_with_stripping(seed: int) -> None:
    rng = random.Random(seed)  # replay: pytest tests/storage/test_segment_tail.py -k "[SEED]"
    for _ in range(3):
        data = bytearray(rng.randrange(1, 3 * CHUNK))
        for _ in range(rng.randrange(0, 4)):
            data[rng.randrange(len(data))] = rng.randrange(1, 256)
        raw = bytes(data)
        start = rng.randrange(len(raw))
        end = rng.randrange(start, len(raw) + 1)
        for w in _windows(raw):
            assert _first_nonzero(w, start, end) == _naive_first(raw, start, end), f"seed {seed}"
            assert _data_end(w, start, end) == _naive_end(raw, start, end), f"seed {seed}"


def test_leftover_names_where_the_tail_bytes_start_and_end() -> None:
    data = bytearray(2 * CHUNK + 10)
    for w in _windows(bytes(data)):
        assert _leftover(w, 100) == (None, 100)
    data[CHUNK + 3] = 1
    data[2 * CHUNK + 2] = 1
    for w in _windows(bytes(data)):
        assert _leftover(w, 100) == (CHUNK + 3, 2 * CHUNK + 3)
