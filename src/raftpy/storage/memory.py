"""MemoryStorage: Raft's persistent state held in memory. For tests and the simulator.

It implements :class:`~raftpy.storage.base.LogStore`: the core's read protocol plus the write
operations a driver performs from a Ready. "Durable" here means "survives a simulated crash":
the simulator keeps a node's MemoryStorage across ``crash``/``restart`` and drops everything
else.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import msgspec

from raftpy.core.messages import (
    ENTRY_OVERHEAD,
    ConfState,
    Entry,
    EntryKind,
    SnapshotMeta,
    bootstrap_conf,
)
from raftpy.core.storage import CompactedError, HardState
from raftpy.errors import LocalProtocolError


class MemoryStorage:
    """An in-memory log, hard state and snapshot metadata (for tests).

    ``voters`` (with ``addresses``) is the initial membership used until a snapshot or a
    CONFIG entry replaces it.
    Invariants: ``self._entries[k].index == self._snapshot.index + 1 + k``; ``self._cum`` holds
    running payload totals, ``self._cum[k + 1] - self._cum[k] == len(self._entries[k].data)``, so
    the size of any range is one subtraction instead of a pass over its entries.
    """

    def __init__(
        self, voters: Sequence[int] = (), *, addresses: Mapping[int, str] | None = None
    ) -> None:
        self._hard_state = HardState()
        self._snapshot = SnapshotMeta(0, 0, bootstrap_conf(voters, addresses))
        self._entries: list[Entry] = []
        self._cum: list[int] = [0]

    # -- LogStorage ---------------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._latest_conf()

    def first_index(self) -> int:
        return self._snapshot.index + 1

    def last_index(self) -> int:
        return self._snapshot.index + len(self._entries)

    def term(self, index: int) -> int:
        offset = self._snapshot.index
        if index < offset:
            raise CompactedError(f"index {index} is compacted (snapshot at {offset})")
        if index == offset:
            return self._snapshot.term
        if index > offset + len(self._entries):
            raise IndexError(f"index {index} is past the last index {self.last_index()}")
        return self._entries[index - offset - 1].term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._snapshot.index
        if lo <= offset:
            raise CompactedError(f"index {lo} is compacted (snapshot at {offset})")
        if hi > self.last_index() + 1:
            raise IndexError(f"range [{lo}, {hi}) runs past the last index {self.last_index()}")
        a = lo - offset - 1
        b = hi - offset - 1
        if max_bytes is None or b - a <= 1:
            return self._entries[a:b]
        cum = self._cum
        if cum[b] - cum[a] + ENTRY_OVERHEAD * (b - a) <= max_bytes:
            return self._entries[a:b]
        end = a + 1  # always at least one entry
        while end < b and cum[end + 1] - cum[a] + ENTRY_OVERHEAD * (end + 1 - a) <= max_bytes:
            end += 1
        return self._entries[a:end]

    def snapshot_meta(self) -> SnapshotMeta:
        return self._snapshot

    # -- writes (the driver's side) -----------------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    @property
    def location(self) -> str:
        return "memory storage"

    @property
    def incarnation(self) -> None:
        """No incarnation: memory holds no data directory whose loss peers could notice (a
        node announcing none is not checked; see :mod:`raftpy.storage.identity`)."""
        return None

    def set_hard_state(self, hard_state: HardState) -> None:
        """Persist the hard state (term, vote, commit) as one record."""
        self._hard_state = hard_state

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries, first truncating any stored suffix from ``entries[0].index`` on.

        The caller (the core) guarantees that only a conflicting, uncommitted suffix is ever
        replaced; entries must be contiguous and start at most one past the last index.
        """
        if not entries:
            return
        first = entries[0].index
        offset = self._snapshot.index
        if first <= offset:
            # Entries already covered by the snapshot: skip them.
            entries = entries[offset + 1 - first :]
            if not entries:
                return
            first = entries[0].index
        if first > self.last_index() + 1:
            raise LocalProtocolError(
                f"append at {first} leaves a gap after last index {self.last_index()}"
            )
        keep = first - offset - 1
        if keep < len(self._entries):
            del self._entries[keep:]
            del self._cum[keep + 1 :]
        self._entries.extend(entries)
        self._cum.extend(
            itertools.islice(
                itertools.accumulate([len(e.data) for e in entries], initial=self._cum[-1]), 1, None
            )
        )

    def apply_snapshot(self, meta: SnapshotMeta) -> None:
        """Replace the log with a snapshot received from the leader (Raft §7): entries after
        the snapshot are kept only if the log holds the snapshot's last entry."""
        if meta.index <= self._snapshot.index:
            return
        if self.last_index() >= meta.index and self.term(meta.index) == meta.term:
            self._compact_to(meta.index)
        else:
            self._entries = []
            self._cum = [0]
        self._snapshot = meta

    def create_snapshot(self, meta: SnapshotMeta) -> None:
        """Record a snapshot the local state machine took at ``meta.index`` and compact the
        log up to it."""
        if meta.index <= self._snapshot.index:
            return
        if meta.index > self.last_index():
            raise LocalProtocolError(f"snapshot at {meta.index} is past {self.last_index()}")
        self._compact_to(meta.index)
        self._snapshot = meta

    def sync(self) -> None:
        """Nothing to do: every write above is already "durable" (it survives a simulated
        crash). Present so drivers treat both storages alike."""

    def persisted_bytes(self) -> int:
        """Bytes of raft state held: entry payloads plus a fixed cost per entry and for the
        hard state (what a compact binary encoding would need), not the snapshot."""
        return self._cum[-1] - self._cum[0] + 16 * len(self._entries) + 24

    def close(self) -> None:
        """Nothing to release. The contents stay readable: the simulator keeps a node's
        MemoryStorage across crashes."""

    def _compact_to(self, index: int) -> None:
        drop = index - self._snapshot.index
        del self._entries[:drop]
        del self._cum[:drop]

    def conf_entries(self) -> list[tuple[int, ConfState]]:
        return [
            (entry.index, msgspec.msgpack.decode(entry.data, type=ConfState))
            for entry in self._entries
            if entry.kind is EntryKind.CONFIG
        ]

    def _latest_conf(self) -> ConfState:
        for entry in reversed(self._entries):
            if entry.kind is EntryKind.CONFIG:
                return msgspec.msgpack.decode(entry.data, type=ConfState)
        return self._snapshot.conf
