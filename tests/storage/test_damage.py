"""Damage to a stopped node's data dir, case by case, on the real file system: start-up
either refuses with :class:`DataLossError` (naming file, offset and what is missing) or
opens with every synced entry and the last hard state intact. The cases are those of
README.md, section Storage; the simulator and real-process twins are in
tests/testing/test_sim_damage.py and tests/examples/test_damage_process.py."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path

import pytest

from raftpy.core.messages import ConfState, Entry, EntryKind, SnapshotMeta
from raftpy.core.storage import HardState
from raftpy.node.config import NodeConfig
from raftpy.node.snapshots import NodeSnapshots
from raftpy.storage import segments
from raftpy.storage.errors import CorruptLogError, DataDirError, DataLossError, StorageError
from raftpy.storage.snapshots import SnapshotStore
from raftpy.storage.wal import FileStorage

SEG = 4096
HS = HardState(3, 2, 60)


def ents(first: int, n: int, term: int = 1) -> list[Entry]:
    return [
        Entry(term, i, EntryKind.COMMAND, f"value-{i}".encode() * 16)
        for i in range(first, first + n)
    ]


def open_dir(d: Path, **kw: object) -> FileStorage:
    kw.setdefault("cluster_id", "c1")
    kw.setdefault("node_id", 1)
    return FileStorage(d, [1, 2, 3], segment_size=SEG, **kw)  # type: ignore[arg-type]


def write_log(d: Path, batches: int = 30) -> list[Entry]:
    """A synced multi-segment log: ``batches`` of 3 entries, the hard state after each."""
    s = open_dir(d)
    out: list[Entry] = []
    for k in range(batches):
        batch = ents(1 + 3 * k, 3, term=1 + k // 10)
        s.append(batch)
        out += batch
        s.set_hard_state(HardState(1 + k // 10, 2, min(3 * k, HS.commit)))
        s.sync()
    s.set_hard_state(HS)
    s.sync()
    s.close()
    return out


def wal_files(d: Path) -> list[Path]:
    return sorted(d.glob("*.wal"))


def tail_offset(path: Path) -> int:
    """Where the TAIL record of a format 2 segment is: the end of its batches."""
    scan = segments.scan_segment(path.read_bytes(), int(path.stem, 16), str(path))
    assert scan.tail is not None
    return scan.tail


def batch_starts(path: Path) -> list[int]:
    """Offsets of the records that start a batch (``back == 0``) in a segment."""
    scan = segments.scan_segment(path.read_bytes(), int(path.stem, 16), str(path))
    data = path.read_bytes()
    return [off for _, _, off in scan.records if segments._REC.unpack_from(data, off)[3] == 0]


def reopen_intact(d: Path, expected: list[Entry]) -> FileStorage:
    s = open_dir(d)
    assert s.entries(1, s.last_index() + 1) == expected
    assert s.hard_state == HS
    return s


def test_intact_dir_opens_with_everything(tmp_path: Path) -> None:
    expected = write_log(tmp_path)
    assert len(wal_files(tmp_path)) >= 3
    reopen_intact(tmp_path, expected).close()


def test_newest_segment_cut_at_a_record_boundary_is_refused(tmp_path: Path) -> None:
    write_log(tmp_path)
    last = wal_files(tmp_path)[-1]
    cut = batch_starts(last)[-1]  # drop the last batch, exactly at its first byte
    os.truncate(last, cut)
    with pytest.raises(DataLossError) as info:
        open_dir(tmp_path)
    assert (info.value.file, info.value.offset) == (str(last), cut)
    assert "without its end marker" in info.value.reason
    assert "restore" in str(info.value) and "add it back" in str(info.value)


def test_newest_segment_cut_inside_a_record_is_refused(tmp_path: Path) -> None:
    write_log(tmp_path)
    last = wal_files(tmp_path)[-1]
    os.truncate(last, batch_starts(last)[-1] + 20)
    with pytest.raises(DataLossError) as info:
        open_dir(tmp_path)
    assert info.value.file == str(last)
    assert "shorter than" in info.value.reason and "cut off" in info.value.reason


def test_zero_length_newest_segment_is_refused(tmp_path: Path) -> None:
    write_log(tmp_path)
    os.truncate(wal_files(tmp_path)[-1], 0)
    with pytest.raises(DataLossError):
        open_dir(tmp_path)


@pytest.mark.parametrize("which", ["first", "middle", "last"])
def test_a_missing_segment_is_refused(tmp_path: Path, which: str) -> None:
    write_log(tmp_path)
    files = wal_files(tmp_path)
    victim = {"first": files[0], "middle": files[1], "last": files[-1]}[which]
    victim.unlink()
    with pytest.raises(DataLossError) as info:
        open_dir(tmp_path)
    reason = info.value.reason
    if which == "middle":
        assert "missing" in reason
    elif which == "last":
        assert "sealed" in reason and files[-1].name in reason
    else:
        assert "entries 1.." in reason and "missing" in reason


def test_every_segment_deleted_is_refused_by_the_identity(tmp_path: Path) -> None:
    write_log(tmp_path)
    for f in wal_files(tmp_path):
        f.unlink()
    with pytest.raises(DataLossError) as info:
        open_dir(tmp_path)
    assert info.value.file == str(tmp_path / "IDENTITY")
    assert (
        "node 1 of cluster 'c1'" in info.value.reason and "no write-ahead log" in info.value.reason
    )
    # Refused again: nothing was written that would make it look new next time.
    assert not wal_files(tmp_path)
    with pytest.raises(DataLossError):
        open_dir(tmp_path)


def test_flipped_byte_inside_the_last_batch_is_a_checksum_failure_at_its_offset(
    tmp_path: Path,
) -> None:
    write_log(tmp_path)
    last = wal_files(tmp_path)[-1]
    data = bytearray(last.read_bytes())
    at = tail_offset(last) - 3  # inside the last record of the last batch
    data[at] ^= 0x10
    last.write_bytes(bytes(data))
    with pytest.raises(DataLossError) as info:
        open_dir(tmp_path)
    assert info.value.file == str(last)
    assert "checksum mismatch" in info.value.reason and "missing" not in info.value.reason


def test_flipped_byte_in_an_older_segment_is_refused(tmp_path: Path) -> None:
    write_log(tmp_path)
    first = wal_files(tmp_path)[0]
    data = bytearray(first.read_bytes())
    data[batch_starts(first)[1] + 20] ^= 0x01
    first.write_bytes(bytes(data))
    with pytest.raises(DataLossError, match="checksum mismatch"):
        open_dir(tmp_path)


def test_a_tail_never_synced_is_cut_with_a_truthful_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    expected = write_log(tmp_path)
    last = wal_files(tmp_path)[-1]
    at = tail_offset(last)
    # What a crash in the middle of the next batch's write leaves: its first bytes over the
    # TAIL, the rest never written.
    extra = ents(len(expected) + 1, 2)
    buf, _ = segments.encode_batch(
        int(last.stem, 16), at, [(segments.ENTRIES, segments._enc.encode(extra), -1)]
    )
    with open(last, "r+b") as f:
        f.seek(at)
        f.write(buf[: len(buf) // 2])
    with caplog.at_level(logging.WARNING, logger="raftpy.storage.wal"):
        s = reopen_intact(tmp_path, expected)
    assert "never acknowledged" in caplog.text and str(last) in caplog.text
    assert os.path.getsize(last) >= SEG
    before = last.read_bytes()
    s.close()
    assert last.read_bytes() == before  # opening changed nothing: the cut waits for a write
    s = open_dir(tmp_path)
    s.append(ents(len(expected) + 1, 1, term=9))
    s.sync()
    s.close()
    assert open_dir(tmp_path).last_index() == len(expected) + 1


def test_a_missing_tail_after_a_whole_unsynced_batch_is_kept(tmp_path: Path) -> None:
    expected = write_log(tmp_path)
    last = wal_files(tmp_path)[-1]
    at = tail_offset(last)
    extra = ents(len(expected) + 1, 2)
    buf, _ = segments.encode_batch(
        int(last.stem, 16), at, [(segments.ENTRIES, segments._enc.encode(extra), -1)]
    )
    with open(last, "r+b") as f:  # the batch landed, its TAIL did not (a lost last sector)
        f.seek(at)
        f.write(buf[: len(buf) - segments.TAIL_SIZE])
    s = open_dir(tmp_path)
    assert s.entries(1, s.last_index() + 1) == expected + extra


def test_commit_index_beyond_the_log_is_refused(tmp_path: Path) -> None:
    s = open_dir(tmp_path)
    s.append(ents(1, 5))
    s.set_hard_state(HardState(1, 1, 9))  # a commit the log cannot hold: as if entries vanished
    s.sync()
    s.close()
    with pytest.raises(DataLossError, match="commit index 9 lies beyond the log's last entry 5"):
        open_dir(tmp_path)


def test_identity_of_another_node_or_cluster_is_refused(tmp_path: Path) -> None:
    write_log(tmp_path)
    with pytest.raises(DataDirError, match="node id 1"):
        open_dir(tmp_path, node_id=2)
    with pytest.raises(DataDirError, match="cluster id 'c1'"):
        open_dir(tmp_path, cluster_id="other")
    open_dir(tmp_path).close()


def test_unusable_data_dir_is_a_data_dir_error(tmp_path: Path) -> None:
    # Under a plain file no directory can be created, root or not.
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(DataDirError, match="cannot use data dir"):
        open_dir(tmp_path / "file" / "data")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_data_dir_is_a_data_dir_error(tmp_path: Path) -> None:
    write_log(tmp_path)
    os.chmod(tmp_path, stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(DataDirError, match=f"cannot use data dir {tmp_path}"):
            open_dir(tmp_path)
        with pytest.raises(DataDirError):
            open_dir(tmp_path / "new")
    finally:
        os.chmod(tmp_path, stat.S_IRWXU)


def test_files_and_directories_are_owner_only(tmp_path: Path) -> None:
    d = tmp_path / "a" / "b"
    write_log(d, batches=30)
    SnapshotStore(d / "snapshots").create(
        SnapshotMeta(3, 1, ConfState(voters=(1,))), lambda out: out.write(b"x")
    )
    for path in [d, d.parent, d / "snapshots", *d.iterdir(), *(d / "snapshots").iterdir()]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, (path, oct(mode))


def write_format_1(d: Path) -> None:
    """A data dir as the previous format wrote it: one segment, entries 1..3, commit 2."""
    meta = SnapshotMeta(0, 0, ConfState(voters=(1, 2, 3)))
    ops: list[segments.Op] = [
        (segments.SNAPSHOT, segments._enc.encode(segments._SnapshotRecord(meta, True)), -1),
        (segments.HARD_STATE, segments._enc.encode(HardState(1, 1, 2)), -1),
        (segments.ENTRIES, segments._enc.encode(ents(1, 3)), -1),
    ]
    data = bytearray(segments.segment_header(1, 0, version=1))
    buf, _ = segments.encode_batch(1, len(data), ops, tail=False)
    (d / segments.segment_name(1)).write_bytes(bytes(data + buf + bytes(SEG)))


def test_format_1_data_dir_still_opens_and_moves_to_format_2(tmp_path: Path) -> None:
    """A data dir written by the previous format: its segments are read with what they can
    tell, and the next write starts a format 2 segment."""
    write_format_1(tmp_path)
    s = open_dir(tmp_path)
    assert s.entries(1, 4) == ents(1, 3) and not s.vouches_for_tail
    s.append(ents(4, 1))
    s.sync()
    s.close()
    assert [p.name for p in wal_files(tmp_path)] == [
        segments.segment_name(1),
        segments.segment_name(2),
    ]
    s = open_dir(tmp_path)
    assert s.entries(1, 5) == ents(1, 4) and s.vouches_for_tail


# -- snapshot files beside the log (the node's start-up decides) ------------------------------


class _Machine:
    def __init__(self) -> None:
        self.data = b""

    def apply(self, command: bytes) -> bytes:
        return b""

    def query(self, query: bytes) -> bytes:
        return self.data

    def snapshot(self, out: object) -> None:
        out.write(self.data)  # type: ignore[attr-defined]

    def restore(self, inp: object) -> None:
        self.data = inp.read()  # type: ignore[attr-defined]


def recover(d: Path) -> tuple[FileStorage, SnapshotStore, int | None]:
    storage = open_dir(d)
    store = SnapshotStore(d / "snapshots")
    snaps = NodeSnapshots(
        1,
        store,
        storage,
        _Machine(),
        NodeConfig(),
        lambda m: None,
        lambda: None,
        authority=lambda: (0, None),  # start-up: no leader, no chunks to take
    )
    try:
        return storage, store, asyncio.run(snaps.recover())
    except BaseException:
        storage.close()
        raise


def snapshot_at(d: Path, index: int, term: int) -> None:
    SnapshotStore(d / "snapshots").create(
        SnapshotMeta(index, term, ConfState(voters=(1, 2, 3))), lambda out: out.write(b"state")
    )


def test_snapshot_files_beside_a_deleted_log_are_refused_and_kept(tmp_path: Path) -> None:
    write_log(tmp_path)
    snapshot_at(tmp_path, 30, 1)
    snapshot_at(tmp_path, 60, 2)
    for f in [*wal_files(tmp_path), tmp_path / "IDENTITY"]:  # an old dir has no IDENTITY
        f.unlink()
    with pytest.raises(DataLossError, match="the log was lost"):
        recover(tmp_path)
    assert len(list((tmp_path / "snapshots").glob("*.snap"))) == 2
    assert not wal_files(tmp_path)  # and no new log was created


def test_nothing_is_deleted_before_start_up_decides(tmp_path: Path) -> None:
    write_log(tmp_path)
    snapshot_at(tmp_path, 30, 1)
    (tmp_path / "snapshots" / "from-2.partial").write_bytes(b"half")
    # The WAL was compacted to a snapshot whose file is then lost: refused...
    s = open_dir(tmp_path)
    s.create_snapshot(SnapshotMeta(45, 2, ConfState(voters=(1, 2, 3))))
    s.close()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(DataLossError, match="whose file is missing"):
        recover(tmp_path)
    # ... and every file is still there.
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_newer_unvouched_snapshot_is_deleted_only_after_deciding_and_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_log(tmp_path)  # last index 90, commit 60
    snapshot_at(tmp_path, 30, 1)
    snapshot_at(tmp_path, 200, 7)  # what a crash while installing the leader's leaves
    with caplog.at_level(logging.WARNING, logger="raftpy.snapshot"):
        storage, store, applied = recover(tmp_path)
    storage.close()
    assert applied == 30
    assert store.keys() == [(30, 1)]
    assert "deleting snapshot file" in caplog.text and "00000000000000000200-" in caplog.text


def test_a_snapshot_beyond_a_format_1_log_is_refused(tmp_path: Path) -> None:
    write_format_1(tmp_path)
    snapshot_at(tmp_path, 50, 1)
    with pytest.raises(DataLossError, match="cannot tell whether its end was cut off"):
        recover(tmp_path)
    assert (tmp_path / "snapshots").exists() and len(
        list((tmp_path / "snapshots").glob("*.snap"))
    ) == 1


def test_refusals_are_storage_errors() -> None:
    assert issubclass(DataLossError, StorageError) and issubclass(DataDirError, StorageError)


def test_flipped_byte_in_the_only_batch_of_the_newest_segment_is_not_missing_entries(
    tmp_path: Path,
) -> None:
    """The issue's report: one flipped byte in the last batch of a multi-segment log, where
    that batch is the first of its segment (it restates the snapshot and hard state), was
    reported as "entries ... are missing". It is a checksum failure at its offset."""
    s = open_dir(tmp_path)
    k = 0
    while len(wal_files(tmp_path)) < 2:
        s.append(ents(1 + 3 * k, 3))
        s.set_hard_state(HardState(1, 2, 3 * k))
        s.sync()
        k += 1
    s.close()
    last = wal_files(tmp_path)[-1]
    (start,) = batch_starts(last)
    data = bytearray(last.read_bytes())
    data[start + segments._RH + 2] ^= 0x01  # inside the restated snapshot record
    last.write_bytes(bytes(data))
    with pytest.raises(DataLossError) as info:
        open_dir(tmp_path)
    assert (info.value.file, info.value.offset) == (str(last), start)
    assert "checksum mismatch" in info.value.reason and "missing" not in info.value.reason


def test_a_flipped_bit_in_a_segments_magic_number_stops_start_up_naming_file_and_offset(
    tmp_path: Path,
) -> None:
    write_log(tmp_path)
    seg = sorted(tmp_path.glob("*.wal"))[0]
    raw = bytearray(seg.read_bytes())
    raw[3] ^= 0x10
    seg.write_bytes(bytes(raw))
    with pytest.raises(CorruptLogError) as err:
        open_dir(tmp_path)
    assert (err.value.file, err.value.offset) == (str(seg), 0)
    assert "damaged magic number" in str(err.value)
