"""MemoryFileSystem, the plain in-memory file system of a node without a data directory: it
behaves like the real one (OsFileSystem, run side by side on a temporary directory) for
everything the WAL and the snapshot store do, the WAL runs on it end to end, and production
code no longer reaches for the fault-injecting FaultyFileSystem."""

from __future__ import annotations

import ast
import errno
from collections.abc import Callable
from pathlib import Path

import pytest

import raftpy
from raftpy.core.messages import Entry, EntryKind
from raftpy.core.storage import HardState
from raftpy.storage.errors import DataDirLockedError
from raftpy.storage.fs import FaultyFileSystem, FileSystem, MemoryFileSystem, OsFileSystem
from raftpy.storage.wal import FileStorage


@pytest.fixture(params=["os", "memory"])
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[FileSystem, str]:
    if request.param == "os":
        return OsFileSystem(), str(tmp_path / "d")
    return MemoryFileSystem(), "/m/d"


def outcome(call: Callable[[], object]) -> object:
    """What a call did: its result, or the kind of error it raised (compared across both)."""
    try:
        return call()
    except OSError as exc:
        return (type(exc).__name__, errno.errorcode.get(exc.errno or 0))


# -- files -------------------------------------------------------------------------------------


def test_write_read_back_size_truncate_and_preallocate(disk: tuple[FileSystem, str]) -> None:
    fs, d = disk
    fs.makedirs(d)
    f = fs.open(f"{d}/a", create=True)
    assert f.size() == 0 and f.read_at(0, 10) == b""
    f.write_at(0, b"hello")
    f.write_at(8, memoryview(b"world"))  # past the end: the gap reads as zeros
    assert f.size() == 13
    assert f.read_at(0, 100) == b"hello\0\0\0world"
    assert f.read_at(3, 4) == b"lo\0\0"
    f.write_at(1, bytearray(b"EL"))  # overwrite in place
    assert f.read_at(0, 5) == b"hELlo"
    f.truncate(4)
    assert (f.size(), f.read_at(0, 100)) == (4, b"hELl")
    f.truncate(6)  # extending adds zeros
    assert f.read_at(0, 100) == b"hELl\0\0"
    f.preallocate(4096)
    assert f.size() == 4096 and f.read_at(0, 6) == b"hELl\0\0"
    assert f.read_at(6, 4090) == bytes(4090)
    f.preallocate(10)  # never shrinks
    assert f.size() == 4096
    f.datasync()
    f.close()
    again = fs.open(f"{d}/a")
    assert again.read_at(0, 4) == b"hELl" and again.size() == 4096
    again.close()


def test_a_closed_handle_fails_like_a_closed_descriptor(disk: tuple[FileSystem, str]) -> None:
    fs, d = disk
    fs.makedirs(d)
    f = fs.open(f"{d}/a", create=True)
    f.close()
    f.close()  # closing twice is harmless
    for call in (f.size, lambda: f.read_at(0, 1), lambda: f.write_at(0, b"x")):
        assert outcome(call) == ("OSError", "EBADF")
    # The real one refuses fdatasync(-1) with a ValueError; either way it is an error.
    with pytest.raises((OSError, ValueError)):
        f.datasync()


# -- directories -------------------------------------------------------------------------------


def test_directory_operations_match_the_real_file_system(
    disk: tuple[FileSystem, str],
) -> None:
    fs, d = disk
    assert not fs.exists(d)
    fs.makedirs(f"{d}/sub/deeper")
    fs.makedirs(d)  # already there: fine
    assert fs.exists(d) and fs.exists(f"{d}/sub")
    for name, data in [("b", b"bee"), ("a.tmp", b"new a"), ("a", b"old a")]:
        f = fs.open(f"{d}/{name}", create=True)
        f.write_at(0, data)
        f.close()
    fs.sync_dir(d)
    assert sorted(fs.listdir(d)) == ["a", "a.tmp", "b", "sub"]  # subdirectories are listed
    assert fs.listdir(f"{d}/sub") == ["deeper"]
    assert fs.listdir(f"{d}/sub/deeper") == []

    fs.rename(f"{d}/a.tmp", f"{d}/a")  # atomically replaces the target
    assert fs.open(f"{d}/a").read_at(0, 100) == b"new a"
    assert sorted(fs.listdir(d)) == ["a", "b", "sub"]
    fs.unlink(f"{d}/b")
    assert not fs.exists(f"{d}/b")
    assert sorted(fs.listdir(d)) == ["a", "sub"]
    fs.sync_dir(d)

    missing = [
        outcome(lambda: fs.open(f"{d}/b")),
        outcome(lambda: fs.open(f"{d}/nodir/x", create=True)),
        outcome(lambda: fs.unlink(f"{d}/b")),
        outcome(lambda: fs.rename(f"{d}/b", f"{d}/c")),
        outcome(lambda: fs.listdir(f"{d}/nodir")),
        outcome(lambda: fs.sync_dir(f"{d}/nodir")),
    ]
    assert missing == [("FileNotFoundError", "ENOENT")] * len(missing)
    # A rename to a missing directory fails and loses nothing.
    assert outcome(lambda: fs.rename(f"{d}/a", f"{d}/nodir/a")) == ("FileNotFoundError", "ENOENT")
    assert fs.open(f"{d}/a").read_at(0, 100) == b"new a"


def test_a_lock_has_one_holder_at_a_time(disk: tuple[FileSystem, str]) -> None:
    fs, d = disk
    fs.makedirs(d)
    held = fs.lock(f"{d}/LOCK")
    assert fs.exists(f"{d}/LOCK")  # the lock file is created
    with pytest.raises(BlockingIOError):
        fs.lock(f"{d}/LOCK")
    held.release()
    again = fs.lock(f"{d}/LOCK")
    held.release()  # a stale handle must not drop the new holder's lock
    with pytest.raises(BlockingIOError):
        fs.lock(f"{d}/LOCK")
    again.release()


# -- what runs on it ---------------------------------------------------------------------------


def ents(first: int, n: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, EntryKind.COMMAND, b"%d" % i * 40) for i in range(first, first + n)]


def test_the_write_ahead_log_runs_on_it_end_to_end() -> None:
    fs = MemoryFileSystem()
    s = FileStorage("/n/log", [1, 2, 3], fs=fs, segment_size=4096)
    with pytest.raises(DataDirLockedError):
        FileStorage("/n/log", fs=fs)
    for k in range(30):
        s.append(ents(1 + 4 * k, 4, term=1 + k // 10))
        s.sync()
    s.append(ents(100, 10, term=5))  # replaces the suffix from 100 on
    s.set_hard_state(HardState(5, 2, 90))
    s.sync()
    want = s.entries(1, s.last_index() + 1)
    s.close()
    assert len([n for n in fs.listdir("/n/log") if n.endswith(".wal")]) > 2  # it rolled over

    s = FileStorage("/n/log", fs=fs, segment_size=4096)
    assert s.entries(1, s.last_index() + 1) == want
    assert s.last_index() == 109 and s.hard_state == HardState(5, 2, 90)
    s.close()


def test_the_fault_injecting_twin_builds_on_it() -> None:
    fs = FaultyFileSystem(3)
    assert isinstance(fs, MemoryFileSystem)
    fs.makedirs("/x/sub")
    assert fs.listdir("/x") == ["sub"]  # listed like the real one, as the base lists


def names_used(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Name):
            out.add(node.id)
        elif isinstance(node, ast.Attribute):
            out.add(node.attr)
        elif isinstance(node, ast.alias):
            out.add(node.name)
    return out


def test_production_code_does_not_use_the_fault_injecting_file_system() -> None:
    src = Path(raftpy.__file__).parent
    users = [
        path.relative_to(src).as_posix()
        for path in sorted(src.rglob("*.py"))
        if "FaultyFileSystem" in names_used(path)
    ]
    # The simulator and the test tools are what it is for; fs.py defines it.
    assert users == [
        "storage/fs.py",
        "testing/sim.py",
        "testing/sim_node.py",
        "testing/stack_sim.py",
    ]
