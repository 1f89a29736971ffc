"""What the core reads from durable storage: the :class:`LogStorage` protocol and
:class:`HardState`.

The core only *reads* storage; the driver writes to it from each :class:`~raftpy.core.ready.Ready`
(entries, hard state, snapshots) and then calls ``advance()``. Implementations:
``raftpy.storage.memory.MemoryStorage`` (for tests and the simulator) and the durable
file-backed storage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from raftpy.core.messages import ConfState, Entry, Index, NodeId, SnapshotMeta, Term
from raftpy.errors import RaftError


class HardState(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """The state Raft must persist before answering anyone (Raft Figure 2, 'Persistent state').

    ``term`` is the latest term seen, ``vote`` whom we voted for in it (``None``: nobody),
    ``commit`` the highest index known committed. Written as one atomic record.
    """

    term: Term = 0
    vote: NodeId | None = None
    commit: Index = 0


class CompactedError(RaftError):
    """Raised by :meth:`LogStorage.entries`/``term`` for an index below the first retained entry
    (it lives only in a snapshot). The leader answers by sending the snapshot instead."""


class LogStorage(Protocol):
    """The read side of Raft's persistent state, as the core sees it.

    Index ranges are half-open ``[lo, hi)``. ``first_index() - 1`` is the index of the latest
    snapshot (0 when there is none), whose term ``term`` must still answer.
    """

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state and the membership in force at the last stored entry."""
        ...

    def first_index(self) -> int:
        """The index of the first entry held (the snapshot index + 1)."""
        ...

    def last_index(self) -> int:
        """The index of the last entry held (the snapshot index when the log is empty)."""
        ...

    def term(self, index: int) -> int:
        """The term of the entry at ``index``, for ``first_index() - 1 <= index <= last_index()``.

        Raises :class:`CompactedError` below that range and ``IndexError`` above it.
        """
        ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``[lo, hi)``, stopping once their sizes pass ``max_bytes`` (always at least
        one entry when the range is not empty), as a new list the caller may extend (RaftLog
        appends unstable entries to it). Raises :class:`CompactedError` when
        ``lo < first_index()``."""
        ...

    def snapshot_meta(self) -> SnapshotMeta:
        """Metadata of the latest snapshot (index 0, term 0 and the initial membership when no
        snapshot was ever taken)."""
        ...

    def conf_entries(self) -> Sequence[tuple[int, ConfState]]:
        """The membership entries (:attr:`~raftpy.core.messages.EntryKind.CONFIG`) held after
        the snapshot, as ``(index, membership)`` in index order: the core rebuilds the
        membership in force at each index from them (Thesis §4.1) without reading the log."""
        ...
