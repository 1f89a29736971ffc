"""Damage to a crashed node's data dir in the simulator (``storage="file"``): a 3-node cluster
commits commands (snapshots every 40), one follower crashes, its simulated disk is damaged, and
its data dir is opened again. Damage that lost synced state is refused with
:class:`DataLossError` while the other two go on committing; a write a crash interrupted is cut
and the node rejoins with everything, the simulator checking Raft's invariants throughout."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest

from raftpy.storage import segments
from raftpy.storage.errors import DataLossError
from raftpy.storage.fs import FaultyFileSystem, SimulatedCrash
from raftpy.storage.wal import FileStorage
from raftpy.testing import SimCluster

SEG = 4096


def cluster(seed: int) -> SimCluster:
    c = SimCluster(n=3, seed=seed, storage="file", snapshot_every=40, segment_size=SEG)
    c.check_one_leader()
    for k in range(60):
        c.one(f"cmd-{k}".encode() * 40)
    return c


def crashed_follower(c: SimCluster) -> tuple[int, FaultyFileSystem]:
    leader = c.check_one_leader()
    i = next(j for j in range(3) if j != leader)
    c.crash(i)
    # SimNode.crash opened the data dir again at once: close it, to damage the files.
    c._nodes[i].storage.close()
    return i, c.disk(i)


def open_again(c: SimCluster, i: int) -> FileStorage:
    s = FileStorage(f"/node{i}", range(3), fs=c.disk(i), segment_size=SEG)
    c._nodes[i].storage = s
    return s


def wals(fs: FaultyFileSystem, i: int) -> list[str]:
    return [f"/node{i}/{n}" for n in fs.listdir(f"/node{i}") if n.endswith(".wal")]


def scan(fs: FaultyFileSystem, path: str) -> segments.SegmentScan:
    f = fs.open(path)
    seq = int(path.rsplit("/", 1)[1][:16], 16)
    return segments.scan_segment(f.read_at(0, f.size()), seq, path)


def last_batch(fs: FaultyFileSystem, path: str) -> int:
    return scan(fs, path).last_batch


def truncate(fs: FaultyFileSystem, path: str, size: int) -> None:
    f = fs.open(path)
    f.truncate(size)
    f.datasync()


def cut_at_boundary(fs: FaultyFileSystem, i: int) -> None:
    last = wals(fs, i)[-1]
    truncate(fs, last, last_batch(fs, last))


def cut_inside(fs: FaultyFileSystem, i: int) -> None:
    last = wals(fs, i)[-1]
    truncate(fs, last, last_batch(fs, last) + 17)


def delete_all(fs: FaultyFileSystem, i: int) -> None:
    for path in wals(fs, i):
        fs.unlink(path)
    fs.sync_dir(f"/node{i}")


def drop_newest(fs: FaultyFileSystem, i: int) -> None:
    fs.unlink(wals(fs, i)[-1])
    fs.sync_dir(f"/node{i}")


def flip_in_last_batch(fs: FaultyFileSystem, i: int) -> None:
    last = wals(fs, i)[-1]
    end = scan(fs, last).end
    f = fs.open(last)
    byte = f.read_at(end - 2, 1)[0]
    f.write_at(end - 2, bytes([byte ^ 0x04]))
    f.datasync()


CASES: dict[str, tuple[Callable[[FaultyFileSystem, int], None], str]] = {
    "cut at a record boundary": (cut_at_boundary, "without its end marker"),
    "cut inside a record": (cut_inside, "shorter than"),
    "every segment deleted": (delete_all, "no write-ahead log"),
    "newest segment missing": (drop_newest, "sealed"),
    "flipped byte in the last batch": (flip_in_last_batch, "checksum mismatch"),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("seed", [1, 2])
def test_lost_state_is_refused_and_the_others_go_on(case: str, seed: int) -> None:
    c = cluster(seed)
    i, fs = crashed_follower(c)
    if case == "newest segment missing" and len(wals(fs, i)) < 2:
        pytest.skip("the log fits one segment")
    damage, words = CASES[case]
    damage(fs, i)
    with pytest.raises(DataLossError) as info:
        open_again(c, i)
    assert words in str(info.value)
    # The two others still make a majority, with Raft's invariants checked at every event.
    c.one(b"after", expected_servers=2)


@pytest.mark.parametrize("seed", range(6))
def test_a_write_a_crash_interrupted_is_cut_and_the_node_rejoins(seed: int) -> None:
    c = cluster(seed)
    leader = c.check_one_leader()
    i = next(j for j in range(3) if j != leader)
    c.disk(i).crash_on_next_sync(["torn", "partial", "drop", "keep"][seed % 4])  # type: ignore[arg-type]
    for k in range(3):
        c.start(leader, f"late-{k}".encode())
    with contextlib.suppress(SimulatedCrash):
        c.run_for(1.0)
    c.crash(i)
    c.restart(i)
    index = c.one(b"after the crash", expected_servers=3)
    c.run_for(1.0)
    assert c.n_committed(index)[0] == 3
    assert [cmd for _, cmd in c.applied(i)][-1:] == [b"after the crash"]
