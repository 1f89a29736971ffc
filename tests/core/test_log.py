"""RaftLog (stable + unstable entries, commit and apply cursors) and MemoryStorage.

Table tests in the style of etcd's ``log_test.go``; logs are written as lists of terms
(``[1, 1, 2]`` is index 1 and 2 in term 1, index 3 in term 2). The last test checks
MemoryStorage against a naive list model with hypothesis.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftpy.core.log import RaftLog
from raftpy.core.messages import ConfState, Entry, EntryKind, SnapshotMeta, entry_size
from raftpy.core.storage import CompactedError, HardState
from raftpy.errors import InvariantViolation, LocalProtocolError
from raftpy.storage.memory import MemoryStorage
from tests.corehelpers import entries

CONF = ConfState((1, 2, 3))


def raft_log(
    stable: Sequence[int] = (),
    unstable: Sequence[int] = (),
    *,
    snapshot: int = 0,
    commit: int = 0,
    data: bytes = b"",
) -> RaftLog:
    """A RaftLog whose storage holds entries with terms ``stable`` (compacted up to index
    ``snapshot``), with ``unstable`` appended in memory after them."""
    storage = MemoryStorage(voters=CONF.voters)
    storage.append(entries(stable, data=data))
    if snapshot:
        storage.create_snapshot(SnapshotMeta(snapshot, storage.term(snapshot), CONF))
    storage.set_hard_state(HardState(max(stable, default=0), None, commit))
    log = RaftLog(storage)
    if unstable:
        log.append(entries(unstable, start=len(stable) + 1, data=data))
    return log


def persist_unstable(log: RaftLog) -> None:
    """Do what the driver does with a Ready's entries: write them to storage."""
    storage = log.storage
    assert isinstance(storage, MemoryStorage)
    storage.append(log.unstable_entries())


def terms_of(log: RaftLog) -> list[int | None]:
    return [log.term(i) for i in range(log.first_index(), log.last_index() + 1)]


def ents(*pairs: tuple[int, int]) -> list[Entry]:
    """Entries from (index, term) pairs."""
    return [Entry(term, index, EntryKind.COMMAND, b"") for index, term in pairs]


# -------------------------------------------------------------------------------------------
# Terms, bounds and the stable/unstable boundary
# -------------------------------------------------------------------------------------------


def test_terms_across_stable_unstable_boundary() -> None:
    log = raft_log([1, 1, 2], [2, 3])
    assert (log.first_index(), log.last_index(), log.stable_last_index()) == (1, 5, 3)
    assert [log.term(i) for i in range(0, 7)] == [0, 1, 1, 2, 2, 3, None]
    assert (log.last_term(), log.match_term(4, 2), log.match_term(4, 3)) == (3, True, False)
    assert log.unstable_entries() == entries([2, 3], start=4)


def test_terms_with_a_snapshot() -> None:
    log = raft_log([1, 1, 2, 2, 3], [3], snapshot=3)
    assert (log.first_index(), log.last_index(), log.committed) == (4, 6, 3)
    # Index 3 is the snapshot's: its term is still known; below it, nothing is.
    assert [log.term(i) for i in range(0, 8)] == [None, None, None, 2, 2, 3, 3, None]


def test_replacing_stable_entries_hides_the_stored_suffix() -> None:
    """After a conflicting append replaces stable entries, the stored (not yet truncated)
    suffix is no longer part of the log."""
    log = raft_log([1, 1, 1, 1, 1])
    assert log.append(entries([2], start=3)) == 3
    assert (terms_of(log), log.stable_last_index()) == ([1, 1, 2], 2)
    assert [log.term(i) for i in (4, 5)] == [None, None]
    assert log.unstable_entries() == entries([2], start=3)
    assert log.entries(1, 6) == [*entries([1, 1]), *entries([2], start=3)]


# (stable terms, unstable terms, entries appended, log after, stable last index after)
APPENDS = [
    ("nothing", [1, 2], [], [], [1, 2], 2),
    ("extend-stable", [1, 2], [], [(3, 2)], [1, 2, 2], 2),
    ("replace-all-stable", [1, 2], [], [(1, 2)], [2], 0),
    ("replace-stable-suffix", [1, 2], [], [(2, 3), (3, 3)], [1, 3, 3], 1),
    ("extend-unstable", [1], [2], [(3, 2)], [1, 2, 2], 1),
    ("replace-unstable-suffix", [1], [2, 2, 2], [(3, 3)], [1, 2, 3], 1),
    ("replace-all-unstable", [1], [2, 2], [(2, 3)], [1, 3], 1),
    ("replace-across-boundary", [1, 1], [1, 1], [(2, 4), (3, 4)], [1, 4, 4], 1),
]


@pytest.mark.parametrize(
    ("stable", "unstable", "new", "want", "want_stable"),
    [row[1:] for row in APPENDS],
    ids=[row[0] for row in APPENDS],
)
def test_append(
    stable: list[int],
    unstable: list[int],
    new: list[tuple[int, int]],
    want: list[int],
    want_stable: int,
) -> None:
    log = raft_log(stable, unstable)
    assert log.append(ents(*new)) == len(want)
    assert (terms_of(log), log.stable_last_index()) == (want, want_stable)
    assert [e.term for e in log.unstable_entries()] == want[want_stable:]


def test_append_refuses_to_overwrite_commit_or_leave_a_gap() -> None:
    log = raft_log([1, 1, 1], commit=2)
    with pytest.raises(InvariantViolation):
        log.append(ents((2, 2)))
    with pytest.raises(InvariantViolation):
        log.append(ents((5, 2)))
    assert terms_of(log) == [1, 1, 1]


# -------------------------------------------------------------------------------------------
# Conflicts and up-to-dateness
# -------------------------------------------------------------------------------------------

# Against the log [1, 2, 3]: (entries as (index, term), first conflicting index or 0).
FIND_CONFLICT = [
    ([], 0),
    ([(1, 1), (2, 2), (3, 3)], 0),
    ([(2, 2), (3, 3)], 0),
    ([(3, 3)], 0),
    ([(1, 1), (2, 2), (3, 3), (4, 4), (5, 4)], 4),
    ([(2, 2), (3, 3), (4, 4), (5, 4)], 4),
    ([(3, 3), (4, 4), (5, 4)], 4),
    ([(4, 4), (5, 4)], 4),
    ([(1, 4), (2, 4)], 1),
    ([(2, 1), (3, 4), (4, 4)], 2),
    ([(3, 1), (4, 2), (5, 4), (6, 4)], 3),
]


@pytest.mark.parametrize(("new", "want"), FIND_CONFLICT, ids=[str(r[0]) for r in FIND_CONFLICT])
@pytest.mark.parametrize("split", [0, 1, 3], ids=lambda s: f"stable{s}")
def test_find_conflict(new: list[tuple[int, int]], want: int, split: int) -> None:
    terms = [1, 2, 3]
    log = raft_log(terms[:split], terms[split:])
    assert log.find_conflict(ents(*new)) == want


# Log [1, 1, 1, 2, 2, 2, 3, 3, 3, 5]: (index, term) -> the largest index <= index whose term
# is <= term, and its term.
FIND_CONFLICT_BY_TERM = [
    (10, 5, 10, 5),
    (10, 9, 10, 5),
    (10, 4, 9, 3),
    (10, 3, 9, 3),
    (10, 2, 6, 2),
    (10, 1, 3, 1),
    (10, 0, 0, 0),
    (5, 9, 5, 2),
    (6, 2, 6, 2),
    (7, 2, 6, 2),
    (3, 1, 3, 1),
    (0, 5, 0, 0),
]
LONG_LOG = [1, 1, 1, 2, 2, 2, 3, 3, 3, 5]


@pytest.mark.parametrize(
    ("index", "term", "want_index", "want_term"),
    FIND_CONFLICT_BY_TERM,
    ids=[f"{i}@{t}" for i, t, _, _ in FIND_CONFLICT_BY_TERM],
)
@pytest.mark.parametrize("split", [0, 5, 10], ids=lambda s: f"stable{s}")
def test_find_conflict_by_term(
    index: int, term: int, want_index: int, want_term: int, split: int
) -> None:
    log = raft_log(LONG_LOG[:split], LONG_LOG[split:])
    assert log.find_conflict_by_term(index, term) == (want_index, want_term)


@pytest.mark.parametrize(
    ("index", "term", "want"),
    [
        (10, 5, (10, 5)),
        (10, 2, (6, 2)),
        (10, 1, (3, 1)),  # the snapshot's entry still answers its term
        (10, 0, (2, 0)),  # below the snapshot: unknown, assume a possible match there
        (2, 1, (2, 0)),
    ],
)
def test_find_conflict_by_term_stops_at_compacted_index(
    index: int, term: int, want: tuple[int, int]
) -> None:
    log = raft_log(LONG_LOG, snapshot=3, commit=3)
    assert log.find_conflict_by_term(index, term) == want


# Against a log ending at index 4 in term 3: (last index, last term, at least as up to date)
UP_TO_DATE = [
    (3, 2, False),
    (4, 2, False),
    (9, 2, False),
    (3, 3, False),
    (4, 3, True),
    (5, 3, True),
    (1, 4, True),
    (4, 4, True),
    (0, 0, False),
]


@pytest.mark.parametrize(
    ("last_index", "last_term", "want"),
    UP_TO_DATE,
    ids=[f"{i}@{t}" for i, t, _ in UP_TO_DATE],
)
def test_is_up_to_date(last_index: int, last_term: int, want: bool) -> None:
    log = raft_log([1, 2], [3, 3])
    assert log.is_up_to_date(last_index, last_term) is want


def test_empty_log_is_behind_nobody() -> None:
    log = raft_log()
    assert (log.last_index(), log.last_term()) == (0, 0)
    assert log.is_up_to_date(0, 0)


# -------------------------------------------------------------------------------------------
# maybe_append (Figure 2, AppendEntries receiver rules 2-5)
# -------------------------------------------------------------------------------------------

# Log [1, 2, 3] with commit 1: (prev index, prev term, leader commit, entries,
#   returned last new index, commit after, log after)
MAYBE_APPEND: list[tuple[str, int, int, int, list[tuple[int, int]], int | None, int, list[int]]] = [
    ("prev-term-mismatch", 3, 2, 3, [(4, 4)], None, 1, [1, 2, 3]),
    ("prev-past-end", 4, 3, 3, [(5, 4)], None, 1, [1, 2, 3]),
    ("empty-commit-last", 3, 3, 3, [], 3, 3, [1, 2, 3]),
    ("empty-commit-capped", 3, 3, 4, [], 3, 3, [1, 2, 3]),
    ("empty-commit-lower", 3, 3, 2, [], 3, 2, [1, 2, 3]),
    ("empty-commit-never-decreases", 3, 3, 0, [], 3, 1, [1, 2, 3]),
    ("append-one", 3, 3, 3, [(4, 4)], 4, 3, [1, 2, 3, 4]),
    ("append-one-commit-it", 3, 3, 4, [(4, 4)], 4, 4, [1, 2, 3, 4]),
    ("append-one-commit-capped", 3, 3, 5, [(4, 4)], 4, 4, [1, 2, 3, 4]),
    ("append-two", 3, 3, 5, [(4, 4), (5, 4)], 5, 5, [1, 2, 3, 4, 4]),
    ("conflict-last", 2, 2, 3, [(3, 4)], 3, 3, [1, 2, 4]),
    ("conflict-middle", 1, 1, 3, [(2, 4)], 2, 2, [1, 4]),
    ("duplicate-no-truncation", 1, 1, 3, [(2, 2)], 2, 2, [1, 2, 3]),
    ("duplicate-all", 1, 1, 3, [(2, 2), (3, 3)], 3, 3, [1, 2, 3]),
    ("commit-is-last-new-not-last", 1, 1, 3, [], 1, 1, [1, 2, 3]),
]


@pytest.mark.parametrize(
    ("prev_index", "prev_term", "commit", "new", "want", "want_commit", "want_log"),
    [row[1:] for row in MAYBE_APPEND],
    ids=[row[0] for row in MAYBE_APPEND],
)
@pytest.mark.parametrize("split", [1, 3], ids=lambda s: f"stable{s}")
def test_maybe_append(
    prev_index: int,
    prev_term: int,
    commit: int,
    new: list[tuple[int, int]],
    want: int | None,
    want_commit: int,
    want_log: list[int],
    split: int,
) -> None:
    terms = [1, 2, 3]
    log = raft_log(terms[:split], terms[split:], commit=1)
    assert log.maybe_append(prev_index, prev_term, commit, ents(*new)) == want
    assert (log.committed, terms_of(log)) == (want_commit, want_log)


def test_maybe_append_refuses_to_overwrite_committed_entries() -> None:
    log = raft_log([1, 2, 3], commit=2)
    with pytest.raises(InvariantViolation):
        log.maybe_append(0, 0, 3, ents((1, 4)))
    with pytest.raises(InvariantViolation):
        log.maybe_append(1, 1, 3, ents((2, 4)))
    assert (terms_of(log), log.committed) == ([1, 2, 3], 2)
    assert log.maybe_append(2, 2, 3, ents((3, 4))) == 3  # index 3 is not committed
    assert terms_of(log) == [1, 2, 4]


# -------------------------------------------------------------------------------------------
# stable_to, commit_to, maybe_commit, apply cursors
# -------------------------------------------------------------------------------------------

# Unstable [1, 2] over empty storage: (index, term) persisted -> unstable entries left,
# stable last index.
STABLE_TO = [
    (1, 1, [2], 1),
    (2, 2, [], 2),
    (2, 1, [1, 2], 0),  # wrong term: the entry was replaced meanwhile
    (3, 1, [1, 2], 0),  # past the end
    (0, 0, [1, 2], 0),
]


@pytest.mark.parametrize(
    ("index", "term", "want_unstable", "want_stable"),
    STABLE_TO,
    ids=[f"{i}@{t}" for i, t, _, _ in STABLE_TO],
)
def test_stable_to(index: int, term: int, want_unstable: list[int], want_stable: int) -> None:
    log = raft_log([], [1, 2])
    persist_unstable(log)
    log.stable_to(index, term)
    assert [e.term for e in log.unstable_entries()] == want_unstable
    assert log.stable_last_index() == want_stable
    assert terms_of(log) == [1, 2]


@pytest.mark.parametrize(
    ("index", "term", "want_stable"),
    [(5, 2, 5), (6, 3, 6), (6, 2, 4), (4, 2, 4), (2, 1, 4), (7, 3, 4)],
)
def test_stable_to_with_snapshot(index: int, term: int, want_stable: int) -> None:
    log = raft_log([1, 1, 2, 2], [2, 3], snapshot=3)
    persist_unstable(log)
    log.stable_to(index, term)
    assert log.stable_last_index() == want_stable
    assert terms_of(log) == [2, 2, 3]


def test_commit_to_is_monotonic() -> None:
    log = raft_log([1, 1], [1, 2], commit=1)
    log.commit_to(3)
    assert log.committed == 3
    log.commit_to(2)
    log.commit_to(0)
    assert log.committed == 3
    with pytest.raises(InvariantViolation):
        log.commit_to(5)
    assert log.committed == 3
    log.commit_to(4)
    assert log.committed == 4


@pytest.mark.parametrize(
    ("index", "term", "want"),
    [(4, 2, True), (4, 1, False), (3, 1, True), (3, 2, False), (1, 1, False), (5, 2, False)],
)
def test_maybe_commit_only_at_matching_term(index: int, term: int, want: bool) -> None:
    log = raft_log([1, 1, 1], [2], commit=1)
    assert log.maybe_commit(index, term) is want
    assert log.committed == (index if want else 1)


def test_committed_entries_and_apply_cursors() -> None:
    log = raft_log([1, 1, 1], [2, 2], commit=1)
    assert (log.applied, log.applying) == (0, 0)
    log.commit_to(4)
    assert log.has_next_committed_entries()
    batch = log.next_committed_entries(None)
    assert [e.index for e in batch] == [1, 2, 3, 4]
    log.applying_to(2)
    assert [e.index for e in log.next_committed_entries(None)] == [3, 4]
    log.applied_to(2)
    assert (log.applied, log.applying) == (2, 2)
    log.applying_to(1)  # never moves back
    log.applied_to(4)
    assert (log.applied, log.applying, log.has_next_committed_entries()) == (4, 4, False)
    with pytest.raises(InvariantViolation):
        log.applied_to(5)
    assert log.next_committed_entries(None) == []


def test_restart_starts_applying_after_the_snapshot_or_given_index() -> None:
    storage = MemoryStorage(voters=CONF.voters)
    storage.append(entries([1, 1, 1, 1]))
    storage.set_hard_state(HardState(1, None, 3))
    assert (RaftLog(storage).committed, RaftLog(storage).applied) == (3, 0)
    assert RaftLog(storage, applied=2).applied == 2
    with pytest.raises(InvariantViolation):
        RaftLog(storage, applied=4)
    storage.set_hard_state(HardState(1, None, 5))
    with pytest.raises(InvariantViolation):
        RaftLog(storage)


# -------------------------------------------------------------------------------------------
# entries() with byte limits
# -------------------------------------------------------------------------------------------

PAYLOAD = b"x" * 84  # entry_size() == 100
# Indexes 1-3 stable, 4-6 unstable: (lo, hi, max_bytes) -> indexes returned
SLICES = [
    (1, 7, None, [1, 2, 3, 4, 5, 6]),
    (1, 7, 0, [1]),  # always at least one entry
    (1, 7, 100, [1]),
    (1, 7, 199, [1]),
    (1, 7, 200, [1, 2]),
    (1, 7, 350, [1, 2, 3]),
    (2, 6, 300, [2, 3, 4]),  # across the boundary
    (3, 7, 250, [3, 4]),
    (4, 7, 150, [4]),
    (4, 7, 10_000, [4, 5, 6]),
    (1, 4, 10_000, [1, 2, 3]),
    (5, 5, None, []),
    (6, 9, None, [6]),  # hi is capped at the end of the log
    (7, 9, None, []),
]


@pytest.mark.parametrize(
    ("lo", "hi", "max_bytes", "want"), SLICES, ids=[f"[{a},{b})<={m}" for a, b, m, _ in SLICES]
)
def test_entries_with_byte_limits(lo: int, hi: int, max_bytes: int | None, want: list[int]) -> None:
    log = raft_log([1, 1, 1], [2, 2, 2], data=PAYLOAD)
    assert entry_size(Entry(1, 1, EntryKind.COMMAND, PAYLOAD)) == 100
    got = log.entries(lo, hi, max_bytes)
    assert [e.index for e in got] == want
    assert all(e.data == PAYLOAD for e in got)


def test_entries_below_the_snapshot_are_compacted() -> None:
    log = raft_log([1, 1, 1, 2], [2], snapshot=2, commit=2)
    with pytest.raises(CompactedError):
        log.entries(2, 5)
    assert [e.index for e in log.entries(3, 6)] == [3, 4, 5]


# -------------------------------------------------------------------------------------------
# MemoryStorage against a naive model
# -------------------------------------------------------------------------------------------


class ListModel:
    """The obvious implementation: the snapshot point and a plain list of the entries after
    it."""

    def __init__(self) -> None:
        self.snap_index = 0
        self.snap_term = 0
        self.live: list[Entry] = []  # self.live[k].index == self.snap_index + 1 + k

    def last_index(self) -> int:
        return self.snap_index + len(self.live)

    def term(self, index: int) -> int:
        return (
            self.snap_term
            if index == self.snap_index
            else self.live[index - self.snap_index - 1].term
        )

    def append(self, new: list[Entry]) -> None:
        new = [e for e in new if e.index > self.snap_index]
        if new:
            assert new[0].index <= self.last_index() + 1
            self.live = self.live[: new[0].index - self.snap_index - 1] + new

    def create_snapshot(self, index: int) -> None:
        term = self.term(index)
        self.live = self.live[index - self.snap_index :]
        self.snap_index, self.snap_term = index, term

    def apply_snapshot(self, index: int, term: int) -> None:
        if index <= self.snap_index:
            return
        if index <= self.last_index() and self.term(index) == term:
            self.live = self.live[index - self.snap_index :]
        else:
            self.live = []
        self.snap_index, self.snap_term = index, term


Op = tuple[str, int, int, list[int]]


@st.composite
def storage_ops(draw: st.DrawFn) -> list[Op]:
    """(kind, index, term, payload sizes) for each operation."""
    kinds = st.sampled_from(["append", "append", "append", "create", "apply"])
    sizes = st.lists(st.integers(0, 30), max_size=5)
    return draw(
        st.lists(st.tuples(kinds, st.integers(0, 20), st.integers(1, 6), sizes), max_size=12)
    )


@settings(max_examples=150, deadline=None)
@given(storage_ops())
def test_memory_storage_matches_list_model(ops: list[Op]) -> None:
    """MemoryStorage's append (truncating a suffix, skipping what a snapshot covers),
    create_snapshot and apply_snapshot agree with a naive list at every step, for every read:
    bounds, terms, ranges, byte limits, errors and the persisted size."""
    storage = MemoryStorage(voters=CONF.voters)
    model = ListModel()
    check_storage(storage, model)
    for kind, at, term, sizes in ops:
        if kind == "append":
            first = max(1, min(at, model.last_index() + 1))
            new = [
                Entry(term, first + k, EntryKind.COMMAND, b"d" * size)
                for k, size in enumerate(sizes)
            ]
            storage.append(new)
            model.append(new)
        elif kind == "create":
            if model.snap_index < at <= model.last_index():
                storage.create_snapshot(SnapshotMeta(at, model.term(at), CONF))
                model.create_snapshot(at)
        else:  # a snapshot received from a leader: it may match our log, or not
            storage.apply_snapshot(SnapshotMeta(at, term, CONF))
            model.apply_snapshot(at, term)
        check_storage(storage, model)


def check_storage(storage: MemoryStorage, model: ListModel) -> None:
    live = model.live
    first, last = model.snap_index + 1, model.last_index()
    assert (storage.first_index(), storage.last_index()) == (first, last)
    assert (storage.snapshot_meta().index, storage.snapshot_meta().term) == (
        model.snap_index,
        model.snap_term,
    )
    assert storage.term(model.snap_index) == model.snap_term
    assert [storage.term(e.index) for e in live] == [e.term for e in live]
    assert storage.entries(first, last + 1) == live
    if model.snap_index > 0:
        with pytest.raises(CompactedError):
            storage.term(model.snap_index - 1)
        with pytest.raises(CompactedError):
            storage.entries(model.snap_index, last + 1)
    with pytest.raises(IndexError):
        storage.term(last + 1)
    with pytest.raises(IndexError):
        storage.entries(first, last + 2)
    # The byte limit: the longest prefix within max_bytes, and never nothing.
    for max_bytes in (0, 20, 40, 100):
        for lo in range(first, last + 1):
            want: list[Entry] = []
            total = 0
            for entry in live[lo - first :]:
                total += entry_size(entry)
                if want and total > max_bytes:
                    break
                want.append(entry)
            assert storage.entries(lo, last + 1, max_bytes) == want
    assert storage.persisted_bytes() == sum(len(e.data) + 16 for e in live) + 24


def test_memory_storage_refuses_a_gap() -> None:
    storage = MemoryStorage(voters=(1,))
    storage.append(entries([1, 1]))
    with pytest.raises(LocalProtocolError):
        storage.append(entries([1], start=4))
    with pytest.raises(LocalProtocolError):
        storage.create_snapshot(SnapshotMeta(3, 1, ConfState((1,))))
    assert storage.last_index() == 2
