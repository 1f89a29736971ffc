"""RaftLog: the core's view of the log, stable entries in storage plus unstable ones in memory.

Indexes (all 1-based; 0 means "before the first entry"):

- ``committed``: highest index known committed. Invariant: ``applied <= applying <= committed
  <= last_index()``.
- ``applying``: highest index handed out for applying (in a Ready's ``committed_entries``).
- ``applied``: highest index the state machine has applied, as the driver reported it
  (``Raft.applied_to``; the core never assumes an entry handed out was applied).
- Unstable entries are ``[unstable_offset, last_index()]``; everything below ``unstable_offset``
  is in storage (durable). A pending snapshot received from the leader is unstable too.
"""

from __future__ import annotations

from collections.abc import Sequence

from raftpy.core.conf_history import ConfHistory
from raftpy.core.messages import Entry, SnapshotMeta, limit_size
from raftpy.core.storage import CompactedError, LogStorage
from raftpy.errors import InvariantViolation


class RaftLog:
    """Stable and unstable entries, the commit index and the apply cursor, and the membership
    entries among them (``confs``, Thesis §4.1: the configuration in force follows the log)."""

    def __init__(self, storage: LogStorage, applied: int | None = None) -> None:
        self.storage = storage
        hard_state, _ = storage.initial_state()
        self._unstable: list[Entry] = []
        self._unstable_offset = storage.last_index() + 1
        self._unstable_snapshot: SnapshotMeta | None = None
        snap_index = storage.first_index() - 1
        self.committed = max(hard_state.commit, snap_index)
        if self.committed > storage.last_index():
            raise InvariantViolation(
                f"persisted commit index {self.committed} is past the last stored entry "
                f"{storage.last_index()}"
            )
        start = snap_index if applied is None else applied
        if not snap_index <= start <= self.committed:
            raise InvariantViolation(
                f"applied index {start} outside [{snap_index}, {self.committed}]"
            )
        self.applied = start
        self.applying = start
        snapshot = storage.snapshot_meta()
        self.confs = ConfHistory(snapshot.conf, storage.conf_entries(), start, snapshot.index)

    # -- bounds and terms ---------------------------------------------------------------------

    def first_index(self) -> int:
        if self._unstable_snapshot is not None:
            return self._unstable_snapshot.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self._unstable:
            return self._unstable[-1].index
        if self._unstable_snapshot is not None:
            return self._unstable_snapshot.index
        return self.storage.last_index()

    def stable_last_index(self) -> int:
        """The last index known durable (in storage). While a snapshot from the leader waits to
        be persisted, what storage holds is about to be replaced, so nothing is claimed (0):
        durability must never be over-stated, since the leader counts its own copy by it."""
        return self._unstable_offset - 1 if self._unstable_snapshot is None else 0

    def term(self, index: int) -> int | None:
        """The term of the entry at ``index``, or ``None`` when it is compacted or past the end."""
        snap = self._unstable_snapshot
        if snap is not None:
            if index == snap.index:
                return snap.term
            if index < snap.index:
                return None
        if index >= self._unstable_offset:
            k = index - self._unstable_offset
            return self._unstable[k].term if k < len(self._unstable) else None
        if index < self.storage.first_index() - 1:
            return None
        try:
            return self.storage.term(index)
        except (CompactedError, IndexError):
            return None

    def last_term(self) -> int:
        term = self.term(self.last_index())
        assert term is not None
        return term

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: a log is at least as up to date as ours if its last term is higher, or
        the same with an index at least as large."""
        ours = self.last_term()
        return last_term > ours or (last_term == ours and last_index >= self.last_index())

    # -- conflicts ----------------------------------------------------------------------------

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """The index of the first entry whose term differs from ours (or that we lack), or 0
        when all of ``entries`` are already in the log."""
        for entry in entries:
            if not self.match_term(entry.index, entry.term):
                return entry.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index ``<= index`` whose term is ``<= term``, and that term.

        Used on both sides of a rejection so one round trip skips a whole term (Raft §5.3).
        Stops at the first index it cannot look up (compacted), returning that index and 0.
        """
        while index > 0:
            t = self.term(index)
            if t is None:
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    # -- appending ----------------------------------------------------------------------------

    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, entries: Sequence[Entry]
    ) -> int | None:
        """Raft Figure 2, AppendEntries receiver rules 2-5.

        Returns the index of the last new entry, or ``None`` when the log lacks an entry at
        ``prev_index`` with ``prev_term`` (rule 2). Only a *conflicting* suffix is truncated
        (rule 3): entries we already hold are never dropped, so a stale or duplicated message
        cannot shorten the log.
        """
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            if conflict <= self.committed:
                raise InvariantViolation(
                    f"entry {conflict} conflicts with the committed prefix (commit "
                    f"{self.committed})"
                )
            self.append(entries[conflict - prev_index - 1 :])
        # Rule 5: commit = min(leaderCommit, index of last new entry).
        self.commit_to(min(commit, last_new))
        return last_new

    def append(self, entries: Sequence[Entry]) -> int:
        """Append ``entries`` (contiguous), replacing any unstable or stable suffix from
        ``entries[0].index`` on. Returns the new last index."""
        if not entries:
            return self.last_index()
        first = entries[0].index
        if first <= self.committed:
            raise InvariantViolation(
                f"append at {first} would overwrite committed entries (commit {self.committed})"
            )
        if first > self.last_index() + 1:
            raise InvariantViolation(f"append at {first} leaves a gap after {self.last_index()}")
        self.confs.appended(entries)
        offset = self._unstable_offset
        if first == offset + len(self._unstable):
            self._unstable.extend(entries)
        elif first <= offset:
            # Replaces stable entries too: the driver truncates storage when persisting these.
            self._unstable_offset = first
            self._unstable = list(entries)
        else:
            del self._unstable[first - offset :]
            self._unstable.extend(entries)
        return self.last_index()

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``[lo, hi)`` limited to about ``max_bytes`` (at least one). Raises
        :class:`CompactedError` when ``lo`` is below the first retained index."""
        hi = min(hi, self.last_index() + 1)
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise CompactedError(f"index {lo} is compacted")
        offset = self._unstable_offset
        if hi <= offset:
            return self.storage.entries(lo, hi, max_bytes)  # storage applies the limit
        if lo >= offset:
            return limit_size(self._unstable[lo - offset : hi - offset], max_bytes)
        out = self.storage.entries(lo, offset, max_bytes)
        if len(out) < offset - lo:
            return out  # hit the byte limit inside storage
        out.extend(self._unstable[: hi - offset])
        return limit_size(out, max_bytes)

    def unstable_entries(self) -> list[Entry]:
        return list(self._unstable)

    def has_unstable(self) -> bool:
        return bool(self._unstable) or self._unstable_snapshot is not None

    def unstable_snapshot(self) -> SnapshotMeta | None:
        return self._unstable_snapshot

    def stable_to(self, index: int, term: int) -> None:
        """The driver persisted entries up to ``index`` (with ``term``). Ignored when the entry
        was replaced meanwhile (a newer leader's entries arrived after the Ready was taken)."""
        if index < self._unstable_offset or self.term(index) != term:
            return
        del self._unstable[: index + 1 - self._unstable_offset]
        self._unstable_offset = index + 1

    def stable_snapshot_to(self, index: int) -> None:
        if self._unstable_snapshot is not None and self._unstable_snapshot.index == index:
            self._unstable_snapshot = None

    def restore(self, meta: SnapshotMeta) -> None:
        """Replace the whole log with a snapshot received from the leader (Raft §7)."""
        self.committed = meta.index
        # Everything up to the snapshot reaches the state machine through the snapshot itself,
        # never as entries (they are gone); ``applied`` follows once the driver restored it.
        self.applying = max(self.applying, meta.index)
        self._unstable = []
        self._unstable_offset = meta.index + 1
        self._unstable_snapshot = meta
        self.confs.restored(meta.conf, meta.index)

    # -- commitment and application -----------------------------------------------------------

    def commit_to(self, index: int) -> None:
        """Monotonic: a lower index is ignored; an index past the log is a bug."""
        if index <= self.committed:
            return
        if index > self.last_index():
            raise InvariantViolation(f"commit {index} is past the last index {self.last_index()}")
        self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Raft §5.4.2: only an entry of the leader's current term commits by counting
        replicas; earlier ones commit with it, indirectly (Figure 8)."""
        if index > self.committed and self.term(index) == term:
            self.commit_to(index)
            return True
        return False

    def has_next_committed_entries(self) -> bool:
        return self.committed > self.applying

    def next_committed_entries(self, max_bytes: int | None) -> list[Entry]:
        if self.committed <= self.applying:
            return []
        return self.entries(self.applying + 1, self.committed + 1, max_bytes)

    def applying_to(self, index: int) -> None:
        if index > self.applying:
            self.applying = index

    def applied_to(self, index: int) -> None:
        if index > self.committed:
            raise InvariantViolation(f"applied {index} past commit {self.committed}")
        if index > self.applied:
            self.applied = index
            if index > self.applying:
                self.applying = index
            self.confs.applied_to(index)
