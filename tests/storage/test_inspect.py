"""The offline inspection of a stopped node's data dir (raftpy.storage.inspect): real data dirs
written by FileStorage and SnapshotStore, damaged in each way recovery knows (the cases of
tests/storage/test_damage.py, whose helpers build them), must get the verdict the node itself
reaches at start-up, naming the same file and byte offset; the inspection never changes a byte;
the repair cuts only what recovery would cut, and refuses everything else.

The randomized twin (``RAFTPY_DOCTOR_SEEDS=N``, default 200; ``RAFTPY_DOCTOR_SEED=S`` replays
one) damages random logs on the fault-injecting disk and checks that the inspection agrees with
FileStorage on every one; another scatters snapshot files beside a log and checks that the
inspection names the snapshot the node's start-up restores and the files it keeps.
"""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from raftpy.core.messages import ConfState, Entry, EntryKind, SnapshotMeta
from raftpy.core.storage import HardState
from raftpy.storage import segments
from raftpy.storage.errors import (
    CorruptSnapshotError,
    DataDirLockedError,
    DataLossError,
    StorageError,
)
from raftpy.storage.fs import FaultyFileSystem, OsFileSystem, ReadOnlyFileSystem, SimulatedCrash
from raftpy.storage.inspect import (
    DataDirReport,
    Finding,
    Inspection,
    NotADataDirError,
    RepairRefused,
    inspect_data_dir,
)
from raftpy.storage.peers import PeerIncarnations
from raftpy.storage.snapshots import SnapshotStore
from tests.storage import test_damage_random as rnd
from tests.storage.test_damage import (
    HS,
    batch_starts,
    ents,
    open_dir,
    recover,
    snapshot_at,
    tail_offset,
    wal_files,
    write_format_1,
    write_log,
)

META30 = SnapshotMeta(30, 1, ConfState(voters=(1, 2, 3)))
SNAP30 = "00000000000000000030-00000000000000000001.snap"


def compacted(d: Path) -> None:
    """The usual stopped node: entries 1..90 (terms 1..3) in 4 KiB segments, hard state HS
    (commit 60), a snapshot at 30 whose file is there, the log compacted to it, two peers
    pinned."""
    write_log(d)
    snapshot_at(d, 30, 1)
    s = open_dir(d)
    s.create_snapshot(META30)
    s.close()
    pins = PeerIncarnations(str(d))
    pins.check(2, "2" * 32)
    pins.check(3, "3" * 32)


def tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def damaged(report: DataDirReport) -> list[tuple[str, str | None, int | None]]:
    return [(f.code, f.file, f.offset) for f in report.findings if f.severity == "damaged"]


def only(report: DataDirReport, severity: str) -> Finding:
    found = [f for f in report.findings if f.severity == severity]
    assert len(found) == 1, report.findings
    return found[0]


# -- a healthy data dir ---------------------------------------------------------------------------


def test_a_healthy_data_dir_is_reported_in_full(tmp_path: Path) -> None:
    compacted(tmp_path)
    r = inspect_data_dir(tmp_path)
    assert r.verdict == "healthy" and r.findings == [] and r.repairs == []
    assert r.identity is not None
    assert (r.identity.node_id, r.identity.cluster_id) == (1, "c1")
    assert r.identity.incarnation == open_dir(tmp_path).incarnation
    assert r.hard_state is not None
    assert (r.hard_state.term, r.hard_state.vote, r.hard_state.commit) == (3, 2, 60)
    assert r.log is not None
    assert (r.log.snapshot_index, r.log.snapshot_term) == (30, 1)
    assert (r.log.first_index, r.log.last_index) == (31, 90)
    assert [(t.term, t.first, t.last) for t in r.log.terms] == [(2, 31, 60), (3, 61, 90)]
    assert r.log.vouches_for_tail
    assert r.membership is not None and r.membership.voters == [1, 2, 3]
    assert r.pinned_peers == {2: "2" * 32, 3: "3" * 32}
    # Every segment on disk, in order, with the entries written in it; the last one holds 90.
    assert [s.file for s in r.segments] == [p.name for p in wal_files(tmp_path)]
    assert all(s.damage is None and s.version == 2 for s in r.segments)
    assert [s.sealed for s in r.segments] == [True] * (len(r.segments) - 1) + [False]
    assert r.segments[-1].last_index == 90 and r.segments[-1].preallocated == 4096
    assert r.segments[-1].bytes == tail_offset(wal_files(tmp_path)[-1])
    for a, b in zip(r.segments, r.segments[1:], strict=False):
        assert a.last_index is not None and b.first_index == a.last_index + 1
    (snap,) = r.snapshots
    assert (snap.file, snap.index, snap.term, snap.checksum_ok, snap.role) == (
        SNAP30,
        30,
        1,
        True,
        "restored",
    )
    assert snap.size == (tmp_path / "snapshots" / SNAP30).stat().st_size
    assert r.restored_snapshot == SNAP30


def test_the_snapshot_the_log_vouches_for_is_the_one_the_node_restores(tmp_path: Path) -> None:
    write_log(tmp_path)  # last index 90, commit 60, entries 31..60 of term 2
    snapshot_at(tmp_path, 20, 1)
    snapshot_at(tmp_path, 45, 2)  # committed, the log agrees: newer than the log's own
    snapshot_at(tmp_path, 70, 3)  # past the commit index: not vouched for
    snapshot_at(tmp_path, 200, 7)  # past the log's end: what a crashed install leaves
    r = inspect_data_dir(tmp_path)
    roles = {(s.index, s.term): s.role for s in r.snapshots}
    assert roles == {
        (20, 1): "old",
        (45, 2): "restored",
        (70, 3): "unvouched",
        (200, 7): "unvouched",
    }
    assert r.verdict == "healthy"
    assert sorted(f.file or "" for f in r.findings if f.code == "snapshot-unvouched") == [
        str(tmp_path / "snapshots" / "00000000000000000070-00000000000000000003.snap"),
        str(tmp_path / "snapshots" / "00000000000000000200-00000000000000000007.snap"),
    ]
    storage, store, applied = recover(tmp_path)  # the node's own start-up, for comparison
    storage.close()
    assert applied == 45 and r.restored_snapshot == os.path.basename(store.path_of(45, 2))


def test_the_inspection_holds_the_lock_and_refuses_a_running_node(tmp_path: Path) -> None:
    compacted(tmp_path)
    s = open_dir(tmp_path)  # a running node holds the lock
    with pytest.raises(DataDirLockedError, match="running node holds its lock"):
        inspect_data_dir(tmp_path)
    s.close()
    with Inspection(tmp_path) as inspection:
        assert inspection.report.verdict == "healthy"
        with pytest.raises(StorageError, match="in use by another process"):
            open_dir(tmp_path)  # nor can the node start while it is being inspected
    open_dir(tmp_path).close()


def test_a_lock_file_left_by_a_dead_node_does_not_stop_it(tmp_path: Path) -> None:
    compacted(tmp_path)
    assert (tmp_path / "LOCK").exists()  # flock'ed by nobody: the kernel dropped it
    assert inspect_data_dir(tmp_path).verdict == "healthy"


def test_what_is_not_a_data_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotADataDirError, match="does not exist"):
        inspect_data_dir(tmp_path / "nope")
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(NotADataDirError, match="not a directory"):
        inspect_data_dir(tmp_path / "file")
    with pytest.raises(NotADataDirError, match="not a raftpy data dir"):
        inspect_data_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing created


# -- damage the node refuses: the same file, offset and reason ------------------------------------


def flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


def flip_last_batch(d: Path) -> None:
    flip(wal_files(d)[-1], tail_offset(wal_files(d)[-1]) - 3)


def flip_older_segment(d: Path) -> None:
    first = wal_files(d)[0]
    flip(first, batch_starts(first)[1] + 20)


def cut_at_boundary(d: Path) -> None:
    last = wal_files(d)[-1]
    os.truncate(last, batch_starts(last)[-1])


def cut_inside_record(d: Path) -> None:
    last = wal_files(d)[-1]
    os.truncate(last, batch_starts(last)[-1] + 20)


def drop(which: int) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        wal_files(d)[which].unlink()

    return damage


def drop_every_segment(d: Path) -> None:
    for f in wal_files(d):
        f.unlink()


def commit_beyond_log(d: Path) -> None:
    s = open_dir(d)
    s.set_hard_state(HardState(3, 2, 200))
    s.sync()
    s.close()


LOG_DAMAGE: dict[str, Callable[[Path], None]] = {
    "flipped byte in the last batch": flip_last_batch,
    "flipped byte in an older segment": flip_older_segment,
    "last segment cut at a batch boundary": cut_at_boundary,
    "last segment cut inside a record": cut_inside_record,
    "first segment missing": drop(0),
    "middle segment missing": drop(1),
    "last segment missing": drop(-1),
    "every segment missing": drop_every_segment,
    "hard state ahead of the log": commit_beyond_log,
}


@pytest.mark.parametrize("case", LOG_DAMAGE)
def test_log_damage_gets_the_nodes_own_refusal(tmp_path: Path, case: str) -> None:
    compacted(tmp_path)
    LOG_DAMAGE[case](tmp_path)
    before = tree(tmp_path)
    r = inspect_data_dir(tmp_path)
    assert tree(tmp_path) == before  # read-only
    with pytest.raises(DataLossError) as info:
        open_dir(tmp_path)
    assert r.verdict == "damaged"
    f = only(r, "damaged")
    assert (f.code, f.file, f.offset, f.what) == (
        "data-loss",
        info.value.file,
        info.value.offset,
        info.value.reason,
    )
    assert "refuses to start" in f.meaning and "add it back with an empty data dir" in f.meaning
    assert r.log is None and r.repairs == []
    with Inspection(tmp_path) as inspection, pytest.raises(RepairRefused, match="refusing"):
        inspection.repair()
    assert tree(tmp_path) == before


def test_a_damaged_segment_header_is_named(tmp_path: Path) -> None:
    compacted(tmp_path)
    flip(wal_files(tmp_path)[1], 22)  # the preallocated size
    r = inspect_data_dir(tmp_path)
    assert damaged(r) == [("data-loss", str(wal_files(tmp_path)[1]), 0)]
    assert r.segments[1].damage == "bad header: segment header checksum mismatch"


def test_a_segment_of_an_unknown_format_is_named(tmp_path: Path) -> None:
    compacted(tmp_path)
    seg = wal_files(tmp_path)[1]
    seg.write_bytes(b"SQLite format 3\x00" + bytes(seg.stat().st_size - 16))
    r = inspect_data_dir(tmp_path)
    assert damaged(r) == [("unsupported-format", str(seg), 0)]
    assert "not a raftpy write-ahead log segment" in r.findings[0].what


def test_a_flipped_bit_in_the_magic_number_is_damage_not_another_format(tmp_path: Path) -> None:
    # The header's checksum matches once the magic is put right: a raftpy segment, damaged.
    compacted(tmp_path)
    flip(wal_files(tmp_path)[1], 5)  # the magic number
    r = inspect_data_dir(tmp_path)
    assert damaged(r) == [("data-loss", str(wal_files(tmp_path)[1]), 0)]
    assert r.segments[1].damage is not None and "damaged magic number" in r.segments[1].damage


def test_a_damaged_identity_file_is_named(tmp_path: Path) -> None:
    compacted(tmp_path)
    (tmp_path / "IDENTITY").write_bytes(b'{"cluster_id": 7')
    r = inspect_data_dir(tmp_path)
    assert damaged(r) == [("identity-damaged", str(tmp_path / "IDENTITY"), 0)]
    assert "delete the file" in r.findings[0].meaning


def test_a_damaged_peers_file_is_named(tmp_path: Path) -> None:
    compacted(tmp_path)
    with open(tmp_path / "PEERS", "ab") as f:
        f.write(b'{"node_id": 4}\n')
    r = inspect_data_dir(tmp_path)
    assert damaged(r) == [("peers-damaged", str(tmp_path / "PEERS"), None)]
    assert "line 3" in r.findings[0].what


def test_a_flipped_byte_in_the_restored_snapshot_is_named(tmp_path: Path) -> None:
    compacted(tmp_path)
    path = tmp_path / "snapshots" / SNAP30
    flip(path, path.stat().st_size - 20)  # in the body
    r = inspect_data_dir(tmp_path)
    with pytest.raises(CorruptSnapshotError) as info:
        recover(tmp_path)
    assert damaged(r) == [("snapshot-corrupt", info.value.file, info.value.offset)]
    assert r.snapshots[0].checksum_ok is False and "checksum mismatch" in (
        r.snapshots[0].problem or ""
    )


def test_a_damaged_snapshot_the_node_does_not_restore_is_a_warning(tmp_path: Path) -> None:
    compacted(tmp_path)
    snapshot_at(tmp_path, 20, 1)
    path = tmp_path / "snapshots" / "00000000000000000020-00000000000000000001.snap"
    flip(path, path.stat().st_size - 20)
    r = inspect_data_dir(tmp_path)
    assert r.verdict == "healthy"
    f = only(r, "warning")
    assert (f.code, f.file) == ("snapshot-corrupt", str(path)) and "deletes it" in f.meaning


def test_a_missing_snapshot_file_the_log_was_compacted_to_is_named(tmp_path: Path) -> None:
    compacted(tmp_path)
    (tmp_path / "snapshots" / SNAP30).unlink()
    r = inspect_data_dir(tmp_path)
    with pytest.raises(DataLossError) as info:
        recover(tmp_path)
    assert damaged(r) == [("snapshot-missing", info.value.file, info.value.offset)]


def test_snapshot_files_beside_a_lost_log_are_named(tmp_path: Path) -> None:
    write_log(tmp_path)
    snapshot_at(tmp_path, 30, 1)
    for f in [*wal_files(tmp_path), tmp_path / "IDENTITY"]:
        f.unlink()
    r = inspect_data_dir(tmp_path)
    with pytest.raises(DataLossError) as info:
        recover(tmp_path)
    assert damaged(r) == [("snapshots-without-log", info.value.file, 0)]


def test_a_snapshot_beyond_a_format_1_log_is_named(tmp_path: Path) -> None:
    write_format_1(tmp_path)
    snapshot_at(tmp_path, 50, 1)
    r = inspect_data_dir(tmp_path)
    assert [c for c, _, _ in damaged(r)] == ["snapshot-beyond-old-log"]
    assert r.segments[0].version == 1 and r.log is not None and not r.log.vouches_for_tail


# -- what the node repairs by itself, and --repair ----------------------------------------------


def tear_tail(d: Path, keep: Callable[[int], int]) -> tuple[Path, int, int]:
    """Write the first ``keep(len)`` bytes of a new 2-entry batch over the last segment's TAIL
    (what a crash in the middle of that write leaves); the segment, the offset, the length."""
    last = wal_files(d)[-1]
    at = tail_offset(last)
    buf, _ = segments.encode_batch(
        int(last.stem, 16), at, [(segments.ENTRIES, segments._enc.encode(ents(91, 2)), -1)]
    )
    with open(last, "r+b") as f:
        f.seek(at)
        f.write(buf[: keep(len(buf))])
    return last, at, keep(len(buf))


def test_a_torn_tail_is_a_warning_and_the_repair_cuts_exactly_it(tmp_path: Path) -> None:
    compacted(tmp_path)
    last, at, n = tear_tail(tmp_path, lambda size: size // 2)
    size = last.stat().st_size
    r = inspect_data_dir(tmp_path)
    assert r.verdict == "healthy"
    f = only(r, "warning")
    assert (f.code, f.file, f.offset) == ("torn-tail", str(last), at)
    assert f.what.startswith(f"torn tail: the last batch, at offset {at} ({n} bytes, 1 record)")
    assert "never acknowledged" in f.meaning and "nothing acknowledged is lost" in f.meaning
    (cut,) = r.repairs
    assert (cut.file, cut.offset, cut.end, cut.bytes, cut.records) == (str(last), at, at + n, n, 1)
    assert r.log is not None and r.log.last_index == 90  # the torn entries are not in the log
    with Inspection(tmp_path) as inspection:
        assert inspection.repair() == r.repairs
    again = inspect_data_dir(tmp_path)
    assert again.verdict == "healthy" and again.findings == [] and again.repairs == []
    assert last.stat().st_size == size  # zeros, not a shorter file
    s = open_dir(tmp_path)
    assert s.last_index() == 90 and s.hard_state == HS
    assert s.entries(31, 91) == [e for e in write_log_entries() if e.index > 30]
    s.close()


def write_log_entries() -> list[object]:
    return [e for k in range(30) for e in ents(1 + 3 * k, 3, term=1 + k // 10)]


def test_a_whole_batch_without_its_end_marker_is_kept_and_the_repair_writes_the_marker(
    tmp_path: Path,
) -> None:
    compacted(tmp_path)
    last, at, n = tear_tail(tmp_path, lambda size: size - segments.TAIL_SIZE)
    r = inspect_data_dir(tmp_path)
    f = only(r, "warning")
    assert (f.code, f.file, f.offset) == ("missing-end-marker", str(last), at + n)
    assert r.log is not None and r.log.last_index == 92  # the batch is whole: kept
    assert [(c.offset, c.bytes, c.records) for c in r.repairs] == [(at + n, 0, 0)]
    with Inspection(tmp_path) as inspection:
        inspection.repair()
    assert inspect_data_dir(tmp_path).findings == []
    assert open_dir(tmp_path).last_index() == 92


def test_the_repair_of_a_healthy_dir_changes_nothing(tmp_path: Path) -> None:
    compacted(tmp_path)
    before = tree(tmp_path)
    with Inspection(tmp_path) as inspection:
        assert inspection.repair() == []
    assert tree(tmp_path) == before


def test_the_repair_refuses_a_torn_tail_beside_damage(tmp_path: Path) -> None:
    compacted(tmp_path)
    tear_tail(tmp_path, lambda size: size // 2)
    (tmp_path / "snapshots" / SNAP30).unlink()
    before = tree(tmp_path)
    with Inspection(tmp_path) as inspection:
        assert inspection.report.repairs  # the tear is seen...
        with pytest.raises(RepairRefused, match="whose file is missing"):
            inspection.repair()  # ... but not cut while anything else is damaged
    assert tree(tmp_path) == before


def test_leftovers_are_reported_and_left_to_the_node(tmp_path: Path) -> None:
    compacted(tmp_path)
    (tmp_path / "0000000000000009.wal.tmp").write_bytes(b"")
    (tmp_path / "snapshots" / "from-2.partial").write_bytes(b"half")
    r = inspect_data_dir(tmp_path)
    assert r.verdict == "healthy"
    assert sorted((f.severity, f.code) for f in r.findings) == [
        ("ok", "half-created-segment"),
        ("ok", "snapshot-leftover"),
    ]


# -- randomized: the inspection agrees with FileStorage -----------------------------------------


def seeds() -> list[int]:
    one = os.environ.get("RAFTPY_DOCTOR_SEED")
    if one is not None:
        return [int(one)]
    return list(range(int(os.environ.get("RAFTPY_DOCTOR_SEEDS", "200"))))


def files(fs: FaultyFileSystem) -> dict[str, bytes]:
    return {name: bytes(inode.data) for name, inode in fs.dirs[rnd.D].items()}


def crash_in_next_write(
    rng: random.Random, fs: FaultyFileSystem, segment_size: int, outcomes: list[Any]
) -> str:
    """A crash in the middle of the sync of one more batch, never acknowledged: afterwards the
    log holds either the state before it or the state with it (appended to ``outcomes``)."""
    s = rnd.open_log(fs, segment_size)
    s.sync()  # the first write's own repairs, before the crash is armed
    last = s.last_index()
    term = s.hard_state.term
    s.append([Entry(term, last + 1 + k, EntryKind.COMMAND, rng.randbytes(200)) for k in range(3)])
    s.set_hard_state(HardState(term, 1, s.hard_state.commit))
    outcomes.append(rnd.state_of(s))
    mode = rng.choice(["torn", "partial", "keep"])
    fs.crash_on_next_sync(mode)  # type: ignore[arg-type]
    with pytest.raises(SimulatedCrash):
        s.sync()
    return f"crash ({mode}) in the sync of entries {last + 1}..{last + 3}"


@pytest.mark.parametrize("seed", seeds())
def test_random_damage_gets_the_verdict_filestorage_reaches(seed: int) -> None:
    rng = random.Random(seed)
    fs = FaultyFileSystem(seed)
    segment_size = rng.choice([4096, 8192, 1 << 16])
    acked = rnd.write_log(rng, fs, segment_size)
    meta = acked[0]
    if meta.index > 0:  # the node writes the snapshot's file before the log records it
        SnapshotStore(f"{rnd.D}/snapshots", fs=fs).create(meta, lambda out: out.write(b"x"))
    outcomes = [acked]
    if rng.random() < 0.4:
        done = [crash_in_next_write(rng, fs, segment_size, outcomes)]
    else:
        done = rnd.damage(rng, fs)
    replay = f"RAFTPY_DOCTOR_SEED={seed} .venv/bin/pytest tests/storage/test_inspect.py"
    print(f"seed {seed}: {done} (replay: {replay})")
    before = files(fs)
    with Inspection(rnd.D, fs=fs) as inspection:
        report = inspection.report
        assert files(fs) == before, f"the inspection changed a file; {replay}"
        if report.damaged:
            with pytest.raises(RepairRefused):
                inspection.repair()
            assert files(fs) == before, f"a refused repair changed a file; {replay}"
        else:
            inspection.repair()
    assert fs.locks == set(), replay
    if not report.damaged:
        again = inspect_data_dir(rnd.D, fs=fs)
        assert again.verdict == "healthy" and again.repairs == [], replay
    # FileStorage alone judges the log; the snapshot files are the node's (tested above).
    log_damage = [f for f in report.damaged if not f.code.startswith("snapshot")]
    try:
        s = rnd.open_log(fs, segment_size)
    except StorageError as exc:
        assert log_damage, f"doctor: the log is healthy; FileStorage refuses: {exc}; {replay}"
        if isinstance(exc, DataLossError):
            (f,) = log_damage
            assert (f.file, f.offset, f.what) == (exc.file, exc.offset, exc.reason), replay
        return
    assert not log_damage, f"doctor: {log_damage}; FileStorage opens; {replay}"
    assert rnd.state_of(s) in outcomes, f"the repair lost acknowledged state; {replay}"
    s.close()


def test_the_read_only_file_system_refuses_every_write(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    ro = ReadOnlyFileSystem(OsFileSystem())
    f = ro.open(str(tmp_path / "f"))
    assert f.read_at(0, 4) == b"data" and f.size() == 4
    for write in (
        lambda: f.write_at(0, b"x"),
        lambda: f.truncate(0),
        lambda: f.preallocate(10),
        f.datasync,
        lambda: ro.open(str(tmp_path / "new"), create=True),
        lambda: ro.makedirs(str(tmp_path / "d")),
        lambda: ro.rename(str(tmp_path / "f"), str(tmp_path / "g")),
        lambda: ro.unlink(str(tmp_path / "f")),
        lambda: ro.sync_dir(str(tmp_path)),
    ):
        with pytest.raises(PermissionError) as info:
            write()
        assert info.value.errno == errno.EROFS
    f.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
    assert (tmp_path / "f").read_bytes() == b"data"


def test_a_data_dir_with_no_log_yet_is_healthy_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "LOCK").write_bytes(b"")  # a node opened it and stopped before its first write
    r = inspect_data_dir(tmp_path)
    assert r.verdict == "healthy" and [(f.severity, f.code) for f in r.findings] == [
        ("ok", "no-log")
    ]
    assert r.log is not None and (r.log.first_index, r.log.last_index) == (1, 0)
    assert r.identity is None and r.segments == [] and r.snapshots == []


def test_a_repair_without_a_lock_file_takes_the_lock_first(tmp_path: Path) -> None:
    compacted(tmp_path)
    tear_tail(tmp_path, lambda size: size // 2)
    (tmp_path / "LOCK").unlink()
    with Inspection(tmp_path) as inspection:
        assert not (tmp_path / "LOCK").exists()  # inspecting creates nothing
        assert len(inspection.repair()) == 1
        with pytest.raises(StorageError, match="in use by another process"):
            open_dir(tmp_path)  # the repair holds the lock it took
    assert inspect_data_dir(tmp_path).findings == []


def test_a_damaged_header_of_the_logs_own_snapshot_is_damaged(tmp_path: Path) -> None:
    write_log(tmp_path)
    snapshot_at(tmp_path, 30, 1)
    s = open_dir(tmp_path)
    s.create_snapshot(META30)
    s.close()
    snapshot_at(tmp_path, 45, 2)  # newer, committed, vouched for: the one restored
    own = tmp_path / "snapshots" / SNAP30
    flip(own, 17)  # in the header's meta: the node reads it to keep the file
    r = inspect_data_dir(tmp_path)
    assert {s.index: s.role for s in r.snapshots} == {30: "log", 45: "restored"}
    with pytest.raises(CorruptSnapshotError) as info:
        recover(tmp_path)
    assert damaged(r) == [("snapshot-corrupt", info.value.file, info.value.offset)]


# -- randomized: the snapshot the inspection names is the one the node restores ------------------

CANDIDATES = [(20, 1), (30, 1), (45, 2), (50, 3), (60, 2), (70, 3), (90, 3), (200, 7)]
"""Snapshot files to scatter beside write_log's log (terms 1, 2, 3 over 1..30, 31..60, 61..90;
commit 60): the log agrees with some, not with (50, 3), and vouches for none past 60."""


@pytest.mark.parametrize("seed", range(40))
def test_random_snapshot_files_get_the_choice_the_node_makes(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    d = tmp_path / "data"
    write_log(d)
    compact = rng.choice([None, (30, 1), (45, 2)])
    files = rng.sample(CANDIDATES, rng.randrange(0, 4))
    if compact is not None and rng.random() < 0.8:
        files.append(compact)
    for index, term in sorted(set(files)):
        snapshot_at(d, index, term)
    if compact is not None:
        s = open_dir(d)
        s.create_snapshot(SnapshotMeta(*compact, ConfState(voters=(1, 2, 3))))
        s.close()
    print(f"seed {seed}: compacted to {compact}, files {sorted(set(files))}")
    r = inspect_data_dir(d)
    try:
        storage, store, applied = recover(d)  # the node's own start-up
    except (DataLossError, CorruptSnapshotError) as exc:
        assert [(f.file, f.offset) for f in r.damaged] == [(exc.file, exc.offset)], seed
        return
    storage.close()
    assert r.verdict == "healthy", (seed, r.findings)
    restored = [s for s in r.snapshots if s.role == "restored"]
    assert [s.index for s in restored] == ([] if applied is None else [applied]), seed
    kept = {(s.index, s.term) for s in r.snapshots if s.role in ("restored", "log")}
    assert set(store.keys()) == kept, seed  # what start-up deleted, the inspection foretold


def test_a_torn_tail_of_an_old_format_1_segment_says_it_cannot_tell(tmp_path: Path) -> None:
    write_format_1(tmp_path)
    path = wal_files(tmp_path)[0]
    end = segments.scan_segment(path.read_bytes(), 1, str(path)).end
    buf, _ = segments.encode_batch(
        1, end, [(segments.ENTRIES, segments._enc.encode(ents(4, 2)), -1)], tail=False
    )
    with open(path, "r+b") as f:
        f.seek(end)
        f.write(buf[: len(buf) // 2])
    r = inspect_data_dir(tmp_path)
    f = only(r, "warning")
    assert (f.code, f.file, f.offset) == ("torn-tail", str(path), end)
    assert "format 1" in f.meaning and "cannot tell" in f.meaning
    assert r.verdict == "healthy" and r.log is not None and r.log.last_index == 3
