"""FaultyFileSystem's read faults: a transient flipped bit in what a read returns, and damage
on the disk itself (used by the whole-stack simulation, raftpy.testing.stack_sim)."""

from __future__ import annotations

import pytest

from raftpy.storage.fs import FaultyFileSystem


def _fs_with(data: bytes) -> FaultyFileSystem:
    fs = FaultyFileSystem(seed=3)
    fs.makedirs("/d")
    f = fs.open("/d/x.wal", create=True)
    f.write_at(0, data)
    f.datasync()
    fs.sync_dir("/d")
    return fs


def test_a_corrupted_read_flips_one_bit_once_and_leaves_the_disk_alone() -> None:
    data = bytes(range(1, 65)) + bytes(64)
    fs = _fs_with(data)
    fs.corrupt_next_reads(1, lambda p: p.endswith(".wal"))
    f = fs.open("/d/x.wal")
    bad = f.read_at(0, len(data))
    diff = [i for i in range(len(data)) if bad[i] != data[i]]
    assert len(diff) == 1 and diff[0] < 64  # in the data, not in the zeros after it
    assert bin(bad[diff[0]] ^ data[diff[0]]).count("1") == 1
    assert fs.corrupted_reads == [("/d/x.wal", diff[0])]
    assert f.read_at(0, len(data)) == data  # transient: the next read is right
    fs.crash("drop")
    assert fs.open("/d/x.wal").read_at(0, len(data)) == data


def test_corrupted_reads_spare_other_files_and_zero_reads() -> None:
    fs = _fs_with(b"abc" + bytes(10))
    fs.corrupt_next_reads(1, lambda p: p.endswith(".snap"))
    assert fs.open("/d/x.wal").read_at(0, 3) == b"abc"
    fs.corrupt_next_reads(1)
    assert fs.open("/d/x.wal").read_at(3, 10) == bytes(10)  # nothing to flip: still armed
    assert fs.read_faults == 1


def test_corrupted_reads_can_let_the_first_reads_through() -> None:
    data = bytes(range(1, 33))
    fs = _fs_with(data)
    fs.corrupt_next_reads(1, skip=2)
    f = fs.open("/d/x.wal")
    assert f.read_at(0, 32) == data  # skipped
    assert f.read_at(0, 32) == data  # skipped
    assert f.read_at(0, 32) != data  # the one corrupted
    assert f.read_at(0, 32) == data and fs.read_faults == 0
    with pytest.raises(ValueError):
        fs.corrupt_next_reads(1, skip=-1)


def test_flip_bit_damages_the_disk_for_good() -> None:
    fs = _fs_with(b"hello")
    fs.flip_bit("/d/x.wal", 1, 0)
    assert fs.open("/d/x.wal").read_at(0, 5) == b"hdllo"
    fs.crash("drop")
    assert fs.open("/d/x.wal").read_at(0, 5) == b"hdllo"
    with pytest.raises(ValueError):
        fs.flip_bit("/d/x.wal", 5, 0)
    with pytest.raises(FileNotFoundError):
        fs.flip_bit("/d/y.wal", 0, 0)
