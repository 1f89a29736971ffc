"""MemoryStorage: Raft's persistent state held in memory. For tests and the simulator.

It implements the core's :class:`~raftpy.core.storage.LogStorage` read protocol plus the write
operations a driver performs from a Ready. "Durable" here means "survives a simulated crash":
the simulator keeps a node's MemoryStorage across ``crash``/``restart`` and drops everything
else.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from raftpy.core.messages import ConfState, Entry, EntryKind, SnapshotMeta, limit_size
from raftpy.core.storage import CompactedError, HardState
from raftpy.errors import LocalProtocolError


class MemoryStorage:
    """An in-memory log, hard state and snapshot metadata (for tests).

    ``voters`` is the initial membership used until a snapshot or a CONFIG entry replaces it.
    Invariant: ``self._entries[k].index == self._snapshot.index + 1 + k``.
    """

    def __init__(self, voters: Sequence[int] = ()) -> None:
        self._hard_state = HardState()
        self._snapshot = SnapshotMeta(0, 0, ConfState(voters=tuple(sorted(voters))))
        self._snapshot_data = b""
        self._entries: list[Entry] = []
        self._bytes = 0

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
        return limit_size(self._entries[lo - offset - 1 : hi - offset - 1], max_bytes)

    def snapshot_meta(self) -> SnapshotMeta:
        return self._snapshot

    # -- writes (the driver's side) -----------------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

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
            self._bytes -= sum([len(e.data) for e in self._entries[keep:]])
            del self._entries[keep:]
        self._entries.extend(entries)
        self._bytes += sum([len(e.data) for e in entries])

    def apply_snapshot(self, meta: SnapshotMeta, data: bytes = b"") -> None:
        """Replace the log with a snapshot received from the leader (Raft §7): entries after
        the snapshot are kept only if the log holds the snapshot's last entry."""
        if meta.index <= self._snapshot.index:
            return
        if self.last_index() >= meta.index and self.term(meta.index) == meta.term:
            self._compact_to(meta.index)
        else:
            self._entries = []
            self._bytes = 0
        self._snapshot = meta
        self._snapshot_data = data

    def create_snapshot(self, meta: SnapshotMeta, data: bytes = b"") -> None:
        """Record a snapshot the local state machine took at ``meta.index`` and compact the
        log up to it."""
        if meta.index <= self._snapshot.index:
            return
        if meta.index > self.last_index():
            raise LocalProtocolError(f"snapshot at {meta.index} is past {self.last_index()}")
        self._compact_to(meta.index)
        self._snapshot = meta
        self._snapshot_data = data

    def sync(self) -> None:
        """Nothing to do: every write above is already "durable" (it survives a simulated
        crash). Present so drivers treat both storages alike."""

    @property
    def snapshot_data(self) -> bytes:
        return self._snapshot_data

    def persisted_bytes(self) -> int:
        """Bytes of raft state held: entry payloads plus a fixed cost per entry and for the
        hard state (what a compact binary encoding would need), not the snapshot."""
        return self._bytes + 16 * len(self._entries) + 24

    def _compact_to(self, index: int) -> None:
        drop = index - self._snapshot.index
        self._bytes -= sum([len(e.data) for e in self._entries[:drop]])
        del self._entries[:drop]

    def _latest_conf(self) -> ConfState:
        for entry in reversed(self._entries):
            if entry.kind is EntryKind.CONFIG:
                return msgspec.msgpack.decode(entry.data, type=ConfState)
        return self._snapshot.conf
