"""The LogStore protocol: what a driver needs from a node's storage of Raft state.

The core only reads storage (:class:`~raftpy.core.storage.LogStorage`); a driver (the
:class:`~raftpy.node.RaftNode` runtime, the simulator) also writes to it from each
:class:`~raftpy.core.ready.Ready`. :class:`LogStore` is both sides together. Implementations:
:class:`~raftpy.storage.memory.MemoryStorage` (in memory, for tests, the simulator and nodes
without a data directory) and :class:`~raftpy.storage.wal.FileStorage` (the durable
write-ahead log).

Contract (what a driver may rely on, and what it must do):

- **Durable after sync.** ``append`` and ``set_hard_state`` may only buffer their writes. Once
  :meth:`LogStore.sync` returns, everything appended and set so far survives a crash; before,
  any suffix of it may be lost. Reads see every write at once, synced or not.
  ``create_snapshot`` and ``apply_snapshot`` are durable when they return (they sync by
  themselves: the log is cut only once the snapshot marker is on disk).
- **Call order per Ready.** Install ``rd.snapshot`` (the snapshot file first, then
  ``apply_snapshot``); ``append(rd.entries)``; ``set_hard_state(rd.hard_state)``; then, when
  ``rd.must_sync``, :meth:`LogStore.sync` *before* sending ``rd.persisted_messages``: a vote or
  an acknowledgement may leave only once the state it promises is durable (Raft Figure 2,
  "Persistent state ... updated on stable storage before responding to RPCs"). The leader's
  own ``rd.messages`` may leave before its write (Thesis §10.2.1).
- **Snapshots.** ``create_snapshot`` records a snapshot the local state machine took at an
  applied (so committed) index at most ``last_index()``; the snapshot's file must already be
  durable (:class:`~raftpy.storage.snapshots.SnapshotStore`), so the log never vouches for a
  file that is not there. Metadata at or below the current snapshot is ignored by both calls.
- **Errors.** ``sync`` raises :class:`~raftpy.storage.errors.StorageFullError` when the disk is
  full (nothing was written, the buffer is kept: call it again once space is free) and
  :class:`~raftpy.storage.errors.FatalStorageError` when a write or an fsync fails otherwise
  (the process must exit: the write is never retried).
- **One owner.** A store is not thread-safe: one driver calls it. :meth:`LogStore.close`
  releases its files and lock; the driver that opened a store closes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from raftpy.core.messages import Entry, SnapshotMeta
from raftpy.core.storage import HardState, LogStorage

__all__ = ["LogStore"]


@runtime_checkable
class LogStore(LogStorage, Protocol):
    """A node's Raft state, read by the core and written by its driver (see the module
    docstring for the contract)."""

    @property
    def hard_state(self) -> HardState:
        """The latest hard state set (synced or not)."""
        ...

    @property
    def location(self) -> str:
        """Where the log lives, for messages to an operator: the data directory of a
        file-backed store, ``"memory storage"`` for one held in memory."""
        ...

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries, first truncating any stored suffix from ``entries[0].index`` on
        (entries already covered by the snapshot are skipped).

        The caller (the core) guarantees that only a conflicting, uncommitted suffix is ever
        replaced (Raft §5.3); entries must be contiguous and start at most one past
        ``last_index()``. Durable at :meth:`sync`.
        """
        ...

    def set_hard_state(self, hard_state: HardState) -> None:
        """Set the hard state (term, vote, commit), persisted as one record. Durable at
        :meth:`sync`."""
        ...

    def sync(self) -> None:
        """Make every write so far durable (see the module docstring for the errors)."""
        ...

    def create_snapshot(self, meta: SnapshotMeta) -> None:
        """Record a snapshot the local state machine took at ``meta.index`` and compact the
        log up to it. Durable when it returns."""
        ...

    def apply_snapshot(self, meta: SnapshotMeta) -> None:
        """Replace the log with a snapshot received from the leader (Raft §7): entries after
        the snapshot are kept only if the log holds the snapshot's last entry. Durable when it
        returns."""
        ...

    def persisted_bytes(self) -> int:
        """Bytes of Raft state held (log records and hard state, not the snapshot files)."""
        ...

    def close(self) -> None:
        """Release files and locks; writes not yet synced are dropped. Closing twice is
        harmless."""
        ...
