"""Damage to a stopped node's data dir, end to end: a 3-process hashmap cluster writes 300 keys
(snapshots every 100 entries, 4 KiB segments), node 3 is stopped and its data dir copied;
each case damages a fresh copy and starts node 3 alone on it. The node must either exit 1 with
a message naming the file and what is missing, or start with everything it had.

Every wait is bounded; every process is killed when the test ends, pass or fail.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from raftpy.client import SyncClient
from raftpy.examples.hashmap import HashMapClient
from tests.examples.test_examples_process import leader_of, put_until_acknowledged
from tests.processhelpers import FAST_ARGS, ProcessCluster, wait_until
from tests.storage.test_damage import batch_starts, tail_offset

pytestmark = [pytest.mark.process, pytest.mark.timeout(240)]

KEYS = 300
EXTRA = ["--snapshot-entries", "100", "--segment-size", "4096"]


class Pristine:
    """The stopped node 3's data dir, its commit index, and how to start it alone."""

    def __init__(self, cluster: ProcessCluster, data: Path, commit: int) -> None:
        self.cluster = cluster
        self.data = data
        self.commit = commit

    def argv(self, data_dir: Path) -> list[str]:
        members: list[str] = []
        for j in range(1, 4):
            members += [str(j), self.cluster.address(j)]
        return [
            sys.executable,
            "-m",
            "raftpy.examples.hashmap",
            "server",
            "3",
            *members,
            "--data-dir",
            str(data_dir),
            *FAST_ARGS,
            *EXTRA,
        ]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pristine]:
    root = tmp_path_factory.mktemp("damage")
    with ProcessCluster("hashmap", 3, root, extra=EXTRA) as c:
        c.start_all()
        leader_of(c, timeout=30)
        with HashMapClient(c.addresses, timeout=10) as client:
            for i in range(KEYS):
                put_until_acknowledged(client, f"k{i}", i)
        wait_until(lambda: commit_of(c.address(3)) >= KEYS, 30, "node 3 to hold every key")
        commit = commit_of(c.address(3))
        c.signal(3, signal.SIGTERM)
        c.procs[3].wait(timeout=20)
        c.stop_all()  # node 3 restarts alone: nothing may feed it what it lost
        data = root / "data3"
        assert len(list((data / "snapshots").glob("*.snap"))) >= 2
        assert len(list(data.glob("*.wal"))) >= 2
        yield Pristine(c, data, commit)


def commit_of(address: str) -> int:
    try:
        with SyncClient([address], timeout=2.0) as client:
            return client.status(address).commit
    except Exception:
        return -1


def copy_of(p: Pristine, tmp_path: Path) -> Path:
    tmp_path.mkdir(exist_ok=True)
    d = tmp_path / "data3"
    shutil.copytree(p.data, d)
    (d / "LOCK").unlink(missing_ok=True)
    return d


def refused(p: Pristine, data_dir: Path) -> str:
    """Start node 3 alone on ``data_dir``; it must exit 1. Returns its stderr."""
    out = subprocess.run(p.argv(data_dir), capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1, (out.returncode, out.stderr[-2000:])
    assert "error:" in out.stderr
    return out.stderr


def starts(p: Pristine, data_dir: Path) -> tuple[int, object, str]:
    """Start node 3 alone on ``data_dir``; it must start serving. Returns its commit index as
    it reports it, the values of the keys as it alone holds them, and its log."""
    log = data_dir.parent / "node3.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            p.argv(data_dir),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RAFTPY_LOG": "info"},
        )
    try:

        def up() -> bool:
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                with socket.create_connection(("127.0.0.1", p.cluster.ports[3]), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_until(up, 30, "node 3 to listen")
        address = p.cluster.address(3)
        commit = commit_of(address)

        def applied() -> bool:
            with SyncClient([address], timeout=2.0) as client:
                return client.status(address).applied >= commit

        wait_until(applied, 30, "node 3 to apply what it has committed")
        with SyncClient([address], timeout=10.0) as client:
            held = [
                json.loads(client.query(f"k{i}".encode(), consistency="stale")) for i in range(KEYS)
            ]
        return commit, held, log.read_text()
    finally:
        proc.kill()
        proc.wait(timeout=10)


def newest(d: Path) -> Path:
    return sorted(d.glob("*.wal"))[-1]


def cut_at_record_boundary(d: Path) -> None:
    last = newest(d)
    os.truncate(last, batch_starts(last)[-1])


def cut_inside_a_record(d: Path) -> None:
    last = newest(d)
    os.truncate(last, batch_starts(last)[-1] + 20)


def delete_every_wal(d: Path) -> None:
    for f in d.glob("*.wal"):
        f.unlink()


def flip_byte_in_last_batch(d: Path) -> None:
    last = newest(d)
    data = bytearray(last.read_bytes())
    data[tail_offset(last) - 3] ^= 0x10
    last.write_bytes(bytes(data))


def drop_newest_segment(d: Path) -> None:
    newest(d).unlink()


def drop_oldest_segment(d: Path) -> None:
    sorted(d.glob("*.wal"))[0].unlink()


REFUSALS: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "cut at a record boundary": (cut_at_record_boundary, ["without its end marker"]),
    "cut inside a record": (cut_inside_a_record, ["shorter than", "cut off"]),
    "every .wal deleted": (delete_every_wal, ["IDENTITY", "no write-ahead log"]),
    "flipped byte in the last batch": (flip_byte_in_last_batch, ["checksum mismatch"]),
    "newest segment missing": (drop_newest_segment, ["sealed", "missing"]),
    "oldest segment missing": (drop_oldest_segment, ["missing"]),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_damage_that_lost_acknowledged_state_is_refused(
    pristine: Pristine, tmp_path: Path, case: str
) -> None:
    damage, words = REFUSALS[case]
    d = copy_of(pristine, tmp_path)
    damage(d)
    before = sorted((p.relative_to(d), p.stat().st_size) for p in d.rglob("*") if p.is_file())
    err = refused(pristine, d)
    for word in words:
        assert word in err, err
    assert "acknowledged state is gone" in err and "backup" in err
    assert str(d) in err  # names the file
    # Nothing was deleted or changed: the operator finds the dir as it was.
    after = sorted((p.relative_to(d), p.stat().st_size) for p in d.rglob("*") if p.is_file())
    assert [x for x in after if x[0].name != "LOCK"] == [x for x in before if x[0].name != "LOCK"]


def test_an_unwritable_data_dir_is_reported_as_a_data_dir_problem(
    pristine: Pristine, tmp_path: Path
) -> None:
    if os.geteuid() == 0:
        # Root writes through permissions: a data dir under a plain file cannot be created.
        blocker = tmp_path / "not-a-dir"
        blocker.write_bytes(b"")
        d = blocker / "data3"
    else:
        d = copy_of(pristine, tmp_path)
        os.chmod(d, 0o500)
    try:
        err = refused(pristine, d)
    finally:
        if d.exists():
            os.chmod(d, 0o700)
    assert "cannot use data dir" in err and str(d) in err
    assert "cannot serve on" not in err


def test_a_tail_never_synced_is_cut_and_the_node_starts_with_everything(
    pristine: Pristine, tmp_path: Path
) -> None:
    d = copy_of(pristine, tmp_path)
    last = newest(d)
    at = tail_offset(last)
    with open(last, "r+b") as f:  # a write a crash interrupted: half a record over the TAIL
        f.seek(at)
        f.write(b"\xa5\x5a\x81" + bytes(range(1, 40)))
    commit, value, log = starts(pristine, d)
    # Exactly what the undamaged dir starts with (the commit index on disk may trail the one
    # the running node had reported: commit-only changes are not synced at once).
    baseline, baseline_value, _ = starts(pristine, copy_of(pristine, tmp_path / "baseline"))
    assert (commit, value) == (baseline, baseline_value), log
    assert commit >= KEYS - 10 and value[: KEYS - 10] == list(range(KEYS - 10)), log
    assert "never acknowledged" in log and str(last) in log
