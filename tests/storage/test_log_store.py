"""The LogStore protocol: both stores satisfy it at run time (every member, with the protocol's
signature), a store missing a member does not, and both keep the contract a driver relies on
(reads see writes at once; durable after sync(); snapshot calls durable by themselves) when
driven through the protocol only. mypy proves the same conformance statically in
src/raftpy/storage/__init__.py."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest

from raftpy.core.messages import ConfState, Entry, EntryKind, SnapshotMeta
from raftpy.core.storage import HardState, LogStorage
from raftpy.storage import LogStore
from raftpy.storage.fs import FaultyFileSystem
from raftpy.storage.memory import MemoryStorage
from raftpy.storage.wal import FileStorage

VOTERS = (1, 2, 3)
CONF = ConfState(voters=VOTERS)


def members() -> list[str]:
    names = {n for cls in (LogStorage, LogStore) for n in vars(cls) if not n.startswith("_")}
    return sorted(names)


def mismatches(cls: type) -> list[str]:
    """Protocol members that ``cls`` lacks, or whose parameters differ from the protocol's."""
    out = []
    for name in members():
        want = inspect.getattr_static(LogStore, name)
        got = inspect.getattr_static(cls, name, None)
        if got is None:
            out.append(f"{name}: missing")
        elif isinstance(want, property) != isinstance(got, property):
            out.append(f"{name}: property on one side only")
        elif not isinstance(want, property):
            params = list(inspect.signature(want).parameters.values())
            theirs = list(inspect.signature(got).parameters.values())
            if [(p.name, p.kind) for p in params] != [(p.name, p.kind) for p in theirs]:
                out.append(f"{name}: {inspect.signature(got)} is not {inspect.signature(want)}")
    return out


def test_the_protocol_has_the_read_and_the_write_side() -> None:
    assert {"entries", "term", "initial_state", "snapshot_meta"} <= set(members())
    assert {"append", "set_hard_state", "sync", "create_snapshot", "apply_snapshot"} <= set(
        members()
    )
    assert {"hard_state", "location", "close", "persisted_bytes"} <= set(members())


@pytest.mark.parametrize("cls", [MemoryStorage, FileStorage])
def test_both_stores_have_every_member_with_its_signature(cls: type) -> None:
    assert mismatches(cls) == []


def test_both_store_instances_are_log_stores() -> None:
    fs = FaultyFileSystem()
    with FileStorage("/d", VOTERS, fs=fs, segment_size=1 << 16) as f:
        assert isinstance(f, LogStore)
    assert isinstance(MemoryStorage(VOTERS), LogStore)


class _NoSync(MemoryStorage):
    sync = None  # type: ignore[assignment]


class _OddClose(MemoryStorage):
    def close(self, force: bool = False) -> None:  # type: ignore[override]
        pass


def test_a_store_missing_a_member_or_changing_its_signature_is_caught() -> None:
    assert not isinstance(object(), LogStore)
    assert not isinstance(_NoSync(VOTERS), LogStore)
    assert mismatches(_NoSync) == ["sync: missing"]
    assert [m.split(":")[0] for m in mismatches(_OddClose)] == ["close"]

    class Partial:
        def sync(self) -> None:
            pass

    assert not isinstance(Partial(), LogStore)
    assert "append: missing" in mismatches(Partial)


# -- the contract, through the protocol only --------------------------------------------------


def ents(first: int, n: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, EntryKind.COMMAND, b"x%d" % i) for i in range(first, first + n)]


def contents(s: LogStore) -> tuple[object, ...]:
    lo, hi = s.first_index(), s.last_index()
    return (s.snapshot_meta(), s.hard_state, s.initial_state(), s.entries(lo, hi + 1), lo, hi)


Reopen = Callable[[], LogStore]


def memory_store() -> tuple[LogStore, Reopen]:
    # In memory every write is "durable": the simulator keeps the object across a crash.
    m = MemoryStorage(VOTERS)
    return m, lambda: m


def file_store() -> tuple[LogStore, Reopen]:
    fs = FaultyFileSystem()

    def reopen() -> LogStore:
        fs.crash("drop")  # the disk keeps exactly what was synced
        return FileStorage("/d", fs=fs, segment_size=1 << 16)

    return FileStorage("/d", VOTERS, fs=fs, segment_size=1 << 16), reopen


STORES = [pytest.param(memory_store, id="memory"), pytest.param(file_store, id="file")]


@pytest.mark.parametrize("make", STORES)
def test_reads_see_writes_at_once_and_sync_makes_them_durable(
    make: Callable[[], tuple[LogStore, Reopen]],
) -> None:
    s, reopen = make()
    assert s.initial_state() == (HardState(), CONF)
    s.append(ents(1, 5))
    s.set_hard_state(HardState(1, 2, 3))
    assert s.last_index() == 5 and s.hard_state == HardState(1, 2, 3)  # before any sync
    s.append(ents(4, 3, term=2))  # replaces the suffix from 4 on
    assert [s.term(i) for i in range(1, 7)] == [1, 1, 1, 2, 2, 2]
    s.sync()
    before = contents(s)
    s = reopen()
    assert contents(s) == before
    assert s.persisted_bytes() > 0


@pytest.mark.parametrize("make", STORES)
def test_snapshot_calls_are_durable_without_a_sync(
    make: Callable[[], tuple[LogStore, Reopen]],
) -> None:
    s, reopen = make()
    s.append(ents(1, 10))
    s.set_hard_state(HardState(1, 1, 8))
    s.sync()
    s.create_snapshot(SnapshotMeta(6, 1, CONF))
    s = reopen()
    assert (s.first_index(), s.last_index()) == (7, 10)
    s.create_snapshot(SnapshotMeta(3, 1, CONF))  # at or below the snapshot: ignored
    assert s.snapshot_meta().index == 6
    s.apply_snapshot(SnapshotMeta(20, 3, CONF))  # the leader's, past our log: replaces it
    s = reopen()
    assert (s.snapshot_meta(), s.first_index(), s.last_index()) == (
        SnapshotMeta(20, 3, CONF),
        21,
        20,
    )
    assert s.term(20) == 3


def test_location_names_where_the_log_lives_and_close_twice_is_harmless() -> None:
    m = MemoryStorage(VOTERS)
    f = FileStorage("/data/n1", VOTERS, fs=FaultyFileSystem(), segment_size=1 << 16)
    assert (m.location, f.location) == ("memory storage", "/data/n1")
    stores: list[LogStore] = [m, f]
    for s in stores:
        s.close()
        s.close()
    assert m.last_index() == 0  # memory contents stay readable after close
