"""Unit tests of FileStorage, the segmented write-ahead log, on the fault-injecting
file layer and on the real file system."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import pytest

from raftpy.core.messages import ConfState, Entry, EntryKind, SnapshotMeta
from raftpy.core.storage import CompactedError, HardState
from raftpy.storage import segments, wal
from raftpy.storage.base import LogStore
from raftpy.storage.errors import (
    CorruptLogError,
    DataDirLockedError,
    DataLossError,
    FatalStorageError,
    StorageFullError,
    UnsupportedFormatError,
)
from raftpy.storage.fs import FaultyFileSystem, SimulatedCrash
from raftpy.storage.memory import MemoryStorage
from raftpy.storage.wal import FileStorage

D = "/data"
SEG1 = f"{D}/0000000000000001.wal"
SEG2 = f"{D}/0000000000000002.wal"


def ents(first: int, n: int, term: int = 1, size: int = 20) -> list[Entry]:
    return [
        Entry(term, i, EntryKind.COMMAND, bytes([i % 251]) * size) for i in range(first, first + n)
    ]


def open_fs(fs: FaultyFileSystem, **kw: int) -> FileStorage:
    # Small segments keep the in-memory disk cheap; the real-disk tests use the default size.
    kw.setdefault("segment_size", 1 << 16)
    return FileStorage(D, voters=[1, 2, 3], fs=fs, **kw)


def all_entries(s: LogStore) -> list[Entry]:
    return (
        s.entries(s.first_index(), s.last_index() + 1) if s.last_index() >= s.first_index() else []
    )


def records(fs: FaultyFileSystem, path: str) -> list[tuple[int, int, int]]:
    """(offset, type, payload length) of every record in a segment, read straight off the disk."""
    data = fs.open(path).read_at(0, 1 << 30)
    out = []
    off = segments._HDR
    while off + segments._RH <= len(data) and data[off : off + 2] == segments._MARKER:
        _, t, length, _, _ = segments._REC.unpack_from(data, off)
        if t & 0x7F in (segments.TAIL, segments.SEAL):
            break  # the end of the batches
        out.append((off, t, length))
        off += segments._RH + length
    return out


def poke(fs: FaultyFileSystem, path: str, offset: int, xor: int = 0xFF) -> None:
    f = fs.open(path)
    byte = f.read_at(offset, 1)[0]
    f.write_at(offset, bytes([byte ^ xor]))
    f.datasync()


def three_batches(fs: FaultyFileSystem) -> None:
    s = open_fs(fs)
    for k in range(3):
        s.append(ents(1 + 10 * k, 10))
        s.set_hard_state(HardState(1, 1, 10 * k))
        s.sync()
    s.close()


# -- basics ----------------------------------------------------------------------------------


def test_opening_a_new_dir_writes_nothing_until_the_first_write() -> None:
    fs = FaultyFileSystem()
    s = open_fs(fs)
    assert s.initial_state() == (HardState(), ConfState(voters=(1, 2, 3)))
    assert fs.listdir(D) == ["LOCK"]
    s.sync()
    assert sorted(fs.listdir(D)) == ["0000000000000001.wal", "IDENTITY", "LOCK"]


def test_new_dir_has_initial_membership_durably() -> None:
    fs = FaultyFileSystem()
    open_fs(fs).sync()
    fs.crash("drop")
    s = FileStorage(D, fs=fs)
    assert s.initial_state() == (HardState(), ConfState(voters=(1, 2, 3)))
    assert (s.first_index(), s.last_index()) == (1, 0)


@pytest.mark.parametrize("mode", ["torn", "partial", "drop"])
def test_crash_during_the_first_sync_of_a_new_dir(mode: str) -> None:
    fs = FaultyFileSystem(3)
    fs.crash_on_next_sync(mode, after=1)  # type: ignore[arg-type]  # the first batch's sync
    with pytest.raises(SimulatedCrash):
        open_fs(fs).sync()
    s = open_fs(fs)
    assert s.initial_state() == (HardState(), ConfState(voters=(1, 2, 3)))
    s.sync()
    fs.crash_on_next_sync(mode)  # type: ignore[arg-type]
    s.append(ents(1, 2))
    with pytest.raises(SimulatedCrash):
        s.sync()
    assert open_fs(fs).initial_state()[1] == ConfState(voters=(1, 2, 3))


def test_reads_match_memory_storage_before_and_after_reopen(tmp_path: Path) -> None:
    s = FileStorage(tmp_path, voters=[1], segment_size=4096)
    m = MemoryStorage([1])
    for k in range(40):
        batch = ents(1 + 5 * k, 5, term=1 + k // 10, size=30)
        s.append(batch)
        m.append(batch)
        s.sync()
    for st in (s, m):
        st.append(ents(150, 3, term=9))
    s.set_hard_state(HardState(9, 1, 120))
    s.sync()
    s.close()
    s = FileStorage(tmp_path)
    assert all_entries(s) == all_entries(m)
    assert [s.term(i) for i in range(0, 153)] == [m.term(i) for i in range(0, 153)]
    assert s.entries(10, 100, max_bytes=200) == m.entries(10, 100, max_bytes=200)
    assert s.hard_state == HardState(9, 1, 120)
    with pytest.raises(IndexError):
        s.term(153)
    assert len(list(tmp_path.glob("*.wal"))) > 2  # it really rolled over segments


def test_group_commit_one_fdatasync_per_sync() -> None:
    fs = FaultyFileSystem()
    s = open_fs(fs)
    s.sync()
    before = fs.syncs
    for k in range(5):
        s.append(ents(1 + k, 1))
    s.set_hard_state(HardState(1, 1, 0))
    s.set_hard_state(HardState(1, 1, 3))
    assert fs.syncs == before  # nothing written before sync()
    s.sync()
    assert fs.syncs == before + 1
    s.sync()  # nothing new: no fsync
    assert fs.syncs == before + 1


def test_unsynced_writes_are_lost_synced_ones_kept() -> None:
    fs = FaultyFileSystem()
    s = open_fs(fs)
    s.append(ents(1, 3))
    s.set_hard_state(HardState(2, 1, 1))
    s.sync()
    s.append(ents(4, 3))
    s.set_hard_state(HardState(3, 2, 1))
    fs.crash("keep")  # even a disk that keeps everything cannot keep what was never written
    s = open_fs(fs)
    assert all_entries(s) == ents(1, 3)
    assert s.hard_state == HardState(2, 1, 1)


def test_config_entries_give_the_membership() -> None:
    fs = FaultyFileSystem()
    s = open_fs(fs)
    conf = ConfState(voters=(1, 2, 3, 4))
    s.append([*ents(1, 2), Entry(1, 3, EntryKind.CONFIG, segments._enc.encode(conf))])
    s.sync()
    s.close()
    s = open_fs(fs)
    assert s.initial_state()[1] == conf
    s.append(ents(3, 1, term=2))  # truncating the config entry restores the old membership
    assert s.initial_state()[1] == ConfState(voters=(1, 2, 3))


# -- truncation ----------------------------------------------------------------------------------


def test_truncation_is_durable() -> None:
    fs = FaultyFileSystem()
    s = open_fs(fs)
    s.append(ents(1, 10))
    s.sync()
    s.append(ents(6, 3, term=2))
    s.sync()
    fs.crash("drop")
    s = open_fs(fs)
    assert all_entries(s) == ents(1, 5) + ents(6, 3, term=2)
    assert s.last_index() == 8


@pytest.mark.parametrize("mode", ["torn", "partial", "keep", "drop"])
@pytest.mark.parametrize("seed", range(8))
def test_crash_during_truncation_leaves_old_or_new_log(mode: str, seed: int) -> None:
    fs = FaultyFileSystem(seed)
    s = open_fs(fs)
    s.append(ents(1, 10, size=100))
    s.sync()
    s.append(ents(4, 2, term=2, size=100))
    fs.crash_on_next_sync(mode)  # type: ignore[arg-type]
    with pytest.raises(SimulatedCrash):
        s.sync()
    s = open_fs(fs)
    assert all_entries(s) in (ents(1, 10, size=100), ents(1, 3, size=100) + ents(4, 2, 2, 100))


# -- torn tail and corruption ------------------------------------------------------------------


def test_checksum_failure_in_the_last_batch_is_refused_at_its_offset() -> None:
    fs = FaultyFileSystem()
    three_batches(fs)
    last_off, _, length = records(fs, SEG1)[-1]
    poke(fs, SEG1, last_off + segments._RH + length - 1)  # the last byte of the last batch
    with pytest.raises(DataLossError) as info:
        open_fs(fs)
    assert (info.value.file, info.value.offset) == (SEG1, last_off)
    assert "checksum mismatch" in info.value.reason and "written whole" in info.value.reason


def test_torn_tail_is_cut_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    fs = FaultyFileSystem()
    three_batches(fs)
    last_off, _, length = records(fs, SEG1)[-1]
    # A write cut short: the end of the last batch (and its TAIL) never reached the disk.
    end = last_off + segments._RH + length + segments.TAIL_SIZE
    fs.open(SEG1).write_at(last_off + 5, bytes(end - last_off - 5))
    with caplog.at_level(logging.WARNING, logger="raftpy.storage.wal"):
        s = open_fs(fs)
    assert all_entries(s) == ents(1, 20)
    assert s.hard_state == HardState(1, 1, 10)
    assert "incomplete" in caplog.text and "never acknowledged" in caplog.text
    assert SEG1 in caplog.text
    # The cut is durable, and appending after it works.
    s.append(ents(21, 2, term=2))
    s.sync()
    fs.crash("drop")
    assert all_entries(open_fs(fs)) == ents(1, 20) + ents(21, 2, term=2)


def test_torn_write_of_a_crash_is_cut() -> None:
    for seed in range(20):
        fs = FaultyFileSystem(seed)
        s = open_fs(fs)
        s.append(ents(1, 5))
        s.sync()
        s.append(ents(6, 40, size=200))
        fs.crash_on_next_sync("partial")
        with pytest.raises(SimulatedCrash):
            s.sync()
        got = all_entries(open_fs(fs))
        assert got in (ents(1, 5), ents(1, 5) + ents(6, 40, size=200))


def _first_batch_record(fs: FaultyFileSystem) -> int:
    """Offset of an ENTRIES record of the first of three synced batches."""
    return next(off for off, t, _ in records(fs, SEG1) if t & 0x7F == wal.ENTRIES)


@pytest.mark.parametrize(
    ("region", "delta"),
    [("length", 3), ("checksum", 11), ("payload", segments._RH + 5), ("type", 2), ("marker", 0)],
)
def test_corruption_before_a_later_batch_names_file_and_offset(region: str, delta: int) -> None:
    fs = FaultyFileSystem()
    three_batches(fs)
    off = _first_batch_record(fs)
    poke(fs, SEG1, off + delta, 0x40)
    with pytest.raises(CorruptLogError) as info:
        open_fs(fs)
    assert info.value.file == SEG1
    assert info.value.offset == off
    assert f"{SEG1} at byte offset {off}" in str(info.value)


def test_corrupt_segment_header() -> None:
    fs = FaultyFileSystem()
    three_batches(fs)
    poke(fs, SEG1, 13)  # inside the segment number
    with pytest.raises(CorruptLogError) as info:
        open_fs(fs)
    assert (info.value.file, info.value.offset) == (SEG1, 0)
    assert "header" in info.value.reason


def test_corruption_in_a_sealed_segment_is_never_cut() -> None:
    fs = FaultyFileSystem()
    s = open_fs(fs, segment_size=4096)
    for k in range(30):
        s.append(ents(1 + 4 * k, 4, size=60))
        s.sync()
    s.close()
    assert fs.exists(SEG2)
    last_off, _, length = records(fs, SEG1)[-1]
    poke(fs, SEG1, last_off + segments._RH + length - 1)  # the tail of a segment that is not last
    with pytest.raises(CorruptLogError) as info:
        open_fs(fs, segment_size=4096)
    assert (info.value.file, info.value.offset) == (SEG1, last_off)


def test_missing_segment_is_corruption() -> None:
    fs = FaultyFileSystem()
    s = open_fs(fs, segment_size=4096)
    for k in range(60):
        s.append(ents(1 + 4 * k, 4, size=60))
        s.sync()
    s.close()
    fs.unlink(SEG2)
    with pytest.raises(CorruptLogError, match="missing"):
        open_fs(fs, segment_size=4096)


def test_corruption_found_when_reading_later() -> None:
    fs = FaultyFileSystem()
    three_batches(fs)
    s = open_fs(fs, cache_bytes=0)
    off = _first_batch_record(fs)
    poke(fs, SEG1, off + segments._RH + 5)
    with pytest.raises(CorruptLogError) as info:
        s.entries(1, 5)
    assert info.value.offset == off


# -- formats, locks ----------------------------------------------------------------------------


def test_unknown_format_version_is_refused_clearly() -> None:
    fs = FaultyFileSystem()
    three_batches(fs)
    fs.open(SEG1).write_at(8, struct.pack("<I", 99))
    with pytest.raises(UnsupportedFormatError, match=r"format version 99.*reads versions 1, 2"):
        open_fs(fs)


def test_foreign_file_is_refused() -> None:
    fs = FaultyFileSystem()
    three_batches(fs)
    fs.open(SEG1).write_at(0, b"SQLite f")
    with pytest.raises(UnsupportedFormatError, match="not a raftpy write-ahead log"):
        open_fs(fs)


def test_second_open_is_refused_until_closed() -> None:
    fs = FaultyFileSystem()
    s = open_fs(fs)
    with pytest.raises(DataDirLockedError) as info:
        open_fs(fs)
    assert str(info.value) == f"data dir {D} is in use by another process (lock file {D}/LOCK)"
    s.close()
    open_fs(fs).close()


def test_second_open_is_refused_on_the_real_file_system(tmp_path: Path) -> None:
    with FileStorage(tmp_path), pytest.raises(DataDirLockedError, match="in use"):
        FileStorage(tmp_path)
    FileStorage(tmp_path).close()


# -- fsync failure, full disk --------------------------------------------------------------------


def test_fsync_failure_is_fatal_and_never_retried() -> None:
    fs = FaultyFileSystem()
    s = open_fs(fs)
    s.append(ents(1, 3))
    s.sync()
    s.append(ents(4, 3))
    fs.fail_next_fsync()
    with pytest.raises(FatalStorageError, match="must exit"):
        s.sync()
    syncs = fs.syncs
    with pytest.raises(FatalStorageError):
        s.sync()
    with pytest.raises(FatalStorageError):
        s.append(ents(7, 1))
    assert fs.syncs == syncs  # not retried
    fs.crash("drop")
    assert all_entries(open_fs(fs)) == ents(1, 3)


def test_full_disk_raises_corrupts_nothing_and_recovers_when_space_frees() -> None:
    fs = FaultyFileSystem()
    s = open_fs(fs, segment_size=4096)
    s.append(ents(1, 10, size=50))
    s.sync()
    fs.set_capacity(fs.used_bytes() + 100)
    s.append(ents(11, 100, size=50))  # needs a new segment: no room
    with pytest.raises(StorageFullError, match="disk full"):
        s.sync()
    with pytest.raises(StorageFullError):
        s.sync()
    fs.crash("keep")
    s = open_fs(fs, segment_size=4096)
    assert all_entries(s) == ents(1, 10, size=50)
    s.append(ents(11, 100, size=50))
    with pytest.raises(StorageFullError):
        s.sync()
    fs.set_capacity(None)
    s.sync()  # the buffered batch is written once space is free
    fs.crash("drop")
    assert all_entries(open_fs(fs, segment_size=4096)) == ents(1, 10, 1, 50) + ents(11, 100, 1, 50)


def test_partial_write_on_full_disk_is_undone() -> None:
    fs = FaultyFileSystem()
    s = open_fs(fs, segment_size=4096)
    s.append(ents(1, 2))
    s.sync()
    # Room for part of the next batch only, inside a segment that is already open: the batch
    # is bigger than the segment, so the write grows the file and fails half-way.
    fs.set_capacity(fs.used_bytes() + 200)
    s.append(ents(3, 1, size=5000))
    with pytest.raises(StorageFullError):
        s.sync()
    fs.crash("keep")
    s = open_fs(fs, segment_size=4096)
    assert all_entries(s) == ents(1, 2)
    fs.set_capacity(None)
    s.append(ents(3, 1, size=5000))
    s.sync()
    assert all_entries(open_fs_after_crash(fs)) == ents(1, 2) + ents(3, 1, size=5000)


def open_fs_after_crash(fs: FaultyFileSystem) -> FileStorage:
    fs.crash("drop")
    return open_fs(fs, segment_size=4096)


# -- snapshots and compaction ------------------------------------------------------------------


def test_compaction_deletes_whole_segments_below_the_snapshot() -> None:
    fs = FaultyFileSystem()
    s = open_fs(fs, segment_size=4096)
    for k in range(50):
        s.append(ents(1 + 4 * k, 4, term=1 + k // 20, size=60))
        s.set_hard_state(HardState(1 + k // 20, 1, 4 * k))
        s.sync()
    before = len(fs.listdir(D))
    meta = SnapshotMeta(150, s.term(150), ConfState(voters=(1, 2, 3)))
    s.create_snapshot(meta)
    assert len(fs.listdir(D)) <= before - 2
    assert not fs.exists(SEG1) and not fs.exists(SEG2)
    with pytest.raises(CompactedError):
        s.entries(150, 160)
    kept = all_entries(s)
    fs.crash("drop")
    s = open_fs(fs, segment_size=4096)
    assert s.snapshot_meta() == meta
    assert (s.first_index(), s.last_index()) == (151, 200)
    assert all_entries(s) == kept
    assert s.hard_state == HardState(3, 1, 196)


def test_apply_snapshot_replaces_a_conflicting_log_durably() -> None:
    fs = FaultyFileSystem()
    s = open_fs(fs)
    s.append(ents(1, 10))
    s.sync()
    meta = SnapshotMeta(20, 3, ConfState(voters=(1, 2)))
    s.apply_snapshot(meta)
    assert (s.first_index(), s.last_index(), s.term(20)) == (21, 20, 3)
    fs.crash("drop")
    s = open_fs(fs)
    assert (s.first_index(), s.last_index(), s.term(20)) == (21, 20, 3)
    assert s.initial_state()[1] == ConfState(voters=(1, 2))
    s.append(ents(21, 2, term=3))
    s.sync()
    assert all_entries(open_fs_after_crash(fs)) == ents(21, 2, term=3)


def test_cache_stays_bounded() -> None:
    fs = FaultyFileSystem()
    s = open_fs(fs, cache_bytes=5000)
    for k in range(100):
        s.append(ents(1 + 10 * k, 10, size=50))
        s.sync()
    assert len(all_entries(s)) == 1000
    assert s._cache_used <= 5000 + 10 * (50 + wal.ENTRY_CACHE_OVERHEAD)
