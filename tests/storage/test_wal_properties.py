"""Property test of FileStorage against a model: any sequence of appends (with
conflicting-suffix truncations), hard-state writes, syncs, compactions, snapshots from a
leader, failed fsyncs and crashes (every FaultyFileSystem crash mode, also in the middle of a
sync) recovers exactly a synced state, and never loses one reported as persisted.

The operations keep Raft's rules that recovery checks: the commit index never passes the last
entry, and neither a conflicting append nor a leader's snapshot replaces committed entries.

The model is a MemoryStorage that receives every operation; its state is recorded at each
point where FileStorage reports durability (``sync()`` returned; a snapshot call returned).
After a crash the recovered state must equal the last such state, or, when the crash hit a
sync in progress, the state that sync was writing (a batch is all-or-nothing).
"""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from raftpy.core.messages import ConfState, Entry, EntryKind, SnapshotMeta
from raftpy.core.storage import HardState
from raftpy.storage.base import LogStore
from raftpy.storage.errors import FatalStorageError
from raftpy.storage.fs import FaultyFileSystem, SimulatedCrash
from raftpy.storage.memory import MemoryStorage
from raftpy.storage.wal import FileStorage

D = "/data"
VOTERS = (1, 2, 3)
MODES = st.sampled_from(["drop", "torn", "partial", "keep"])

State = tuple[Any, ...]


def state_of(s: LogStore) -> State:
    first, last = s.first_index(), s.last_index()
    entries = tuple(s.entries(first, last + 1)) if last >= first else ()
    return (s.snapshot_meta(), first, last, entries, s.hard_state, s.initial_state()[1])


def model_from(state: State) -> MemoryStorage:
    meta, _, _, entries, hard, _ = state
    m = MemoryStorage(VOTERS)
    m.apply_snapshot(meta)
    m.append(list(entries))
    m.set_hard_state(hard)
    return m


class WalMachine(RuleBasedStateMachine):
    @initialize(seed=st.integers(0, 2**32 - 1))
    def start(self, seed: int) -> None:
        self.fs = FaultyFileSystem(seed)
        self.s = self._open()
        self.model = MemoryStorage(VOTERS)
        self.durable = state_of(self.model)  # what FileStorage has promised survives
        self.in_flight: State | None = None  # what a sync cut short was writing
        self.dead = False  # after a fatal error or a simulated crash: only crash() helps
        self.term = 1

    def _open(self) -> FileStorage:
        s = FileStorage(D, VOTERS, fs=self.fs, segment_size=4096, cache_bytes=2000)
        s.sync()  # carry out what recovery decided (done by the first write otherwise)
        return s

    def _live(self) -> bool:
        return not self.dead

    # -- operations ----------------------------------------------------------------------------

    @rule(
        back=st.integers(0, 6),
        n=st.integers(1, 12),
        size=st.integers(0, 300),
        bump=st.booleans(),
        config=st.booleans(),
    )
    def append(self, back: int, n: int, size: int, bump: bool, config: bool) -> None:
        if not self._live():
            return
        self.term += bump
        first = max(
            self.model.first_index(),
            self.model.last_index() + 1 - back,
            self.model.hard_state.commit + 1,  # committed entries are never replaced (Raft §5.3)
        )
        batch = [
            Entry(self.term, i, EntryKind.COMMAND, bytes([i % 256]) * size)
            for i in range(first, first + n)
        ]
        if config:
            conf = msgspec.msgpack.encode(ConfState(voters=(1, 2, 3, first)))
            batch[-1] = Entry(self.term, first + n - 1, EntryKind.CONFIG, conf)
        self.s.append(batch)
        self.model.append(batch)

    @rule(vote=st.none() | st.integers(1, 3), commit=st.integers(0, 200))
    def hard_state(self, vote: int | None, commit: int) -> None:
        if not self._live():
            return
        hs = HardState(self.term, vote, min(commit, self.model.last_index()))
        self.s.set_hard_state(hs)
        self.model.set_hard_state(hs)

    def _durably(self, op: Any) -> None:
        """Run ``op`` (which syncs) on both, tracking what is promised durable."""
        try:
            op(self.s)
        except (SimulatedCrash, FatalStorageError):
            self.dead = True
            op(self.model)
            self.in_flight = state_of(self.model)
            return
        op(self.model)
        self.durable = state_of(self.model)
        assert state_of(self.s) == self.durable

    @rule()
    def sync(self) -> None:
        if self._live():
            self._durably(lambda s: s.sync())

    @rule(data=st.data())
    def create_snapshot(self, data: st.DataObject) -> None:
        if not self._live() or self.model.last_index() <= self.model.first_index():
            return
        index = data.draw(st.integers(self.model.first_index(), self.model.last_index()))
        meta = SnapshotMeta(index, self.model.term(index), self.model.initial_state()[1])
        self._durably(lambda s: s.create_snapshot(meta))

    @rule(ahead=st.integers(0, 5), match=st.booleans())
    def apply_snapshot(self, ahead: int, match: bool) -> None:
        if not self._live():
            return
        index = self.model.last_index() - 3 + ahead
        if index <= max(self.model.first_index() - 1, self.model.hard_state.commit):
            return
        term = self.model.term(index) if match and index <= self.model.last_index() else self.term
        meta = SnapshotMeta(index, term, ConfState(voters=VOTERS))
        self._durably(lambda s: s.apply_snapshot(meta))

    @rule(mode=MODES)
    def crash_during_next_sync(self, mode: Any) -> None:
        if self._live():
            self.fs.crash_on_next_sync(mode)

    @rule()
    def fail_next_fsync(self) -> None:
        if self._live():
            self.fs.fail_next_fsync()

    @rule(mode=MODES)
    def crash_and_recover(self, mode: Any) -> None:
        self.fs.crash(mode)
        self.s = self._open()
        got = state_of(self.s)
        allowed = [self.durable] + ([self.in_flight] if self.in_flight is not None else [])
        assert got in allowed, f"recovered {got}\nallowed {allowed}"
        self.durable = got
        self.in_flight = None
        self.dead = False
        self.model = model_from(got)
        self.term = max(self.term, got[4].term)

    @invariant()
    def reads_match_the_model(self) -> None:
        if self._live():
            assert state_of(self.s) == state_of(self.model)


WalMachine.TestCase.settings = settings(
    max_examples=500,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestWal = WalMachine.TestCase
