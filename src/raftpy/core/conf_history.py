"""ConfHistory: the membership entries of the log, from the applied index on.

Thesis §4.1: a server uses the latest configuration *in its log*, committed or not, from the
moment the entry is appended. So the configuration in force moves with the log: forward when a
configuration entry is appended, and back when a new leader's entries replace an uncommitted
one (Raft §5.3 truncation), to the latest configuration entry that remains. This class keeps
what that needs: the membership in force at the applied index (``applied``) and every
configuration entry after it, in index order. The membership at the applied index is also the
one a snapshot taken there must record (Raft §7).

:class:`~raftpy.core.log.RaftLog` owns one and tells it about every append, truncation,
snapshot and apply; :class:`~raftpy.core.tracker.ProgressTracker` is told the result.
"""

from __future__ import annotations

from collections.abc import Sequence

from raftpy.core.messages import ConfState, Entry, EntryKind, decode_conf_state
from raftpy.errors import LocalProtocolError

_CONFIG = EntryKind.CONFIG


class ConfHistory:
    """The membership at the applied index, and the configuration entries after it."""

    __slots__ = ("_applied", "_applied_at", "_applied_index", "_entries")

    def __init__(
        self,
        base: ConfState,
        entries: Sequence[tuple[int, ConfState]],
        applied: int,
        base_index: int = 0,
    ) -> None:
        """``base`` is the membership of the snapshot at ``base_index`` (or the bootstrap
        membership, at 0); ``entries`` the configuration entries stored after it; ``applied``
        the applied index."""
        self._applied = base
        self._applied_at = base_index  # where the membership at the applied index comes from
        self._applied_index = applied
        self._entries: list[tuple[int, ConfState]] = []
        for index, conf in entries:
            if index <= applied:
                self._applied = conf
                self._applied_at = index
            else:
                self._entries.append((index, conf))

    def latest(self) -> ConfState:
        """The membership in force: the latest configuration entry in the log (Thesis §4.1)."""
        return self._entries[-1][1] if self._entries else self._applied

    def latest_index(self) -> int:
        """The index of the latest configuration entry not yet applied; 0 when the membership
        in force is already applied."""
        return self._entries[-1][0] if self._entries else 0

    def index(self) -> int:
        """Where the membership in force comes from: the index of its configuration entry, of
        the snapshot that holds it, or 0 for the membership a new cluster bootstrapped with."""
        return self._entries[-1][0] if self._entries else self._applied_at

    def pending(self, committed: int) -> bool:
        """Whether a configuration entry lies past ``committed`` (one change at a time,
        Thesis §4.1: the next may start only once the previous one committed)."""
        return bool(self._entries) and self._entries[-1][0] > committed

    def at(self, index: int) -> ConfState:
        """The membership in force at ``index`` (at or past the applied index)."""
        if index < self._applied_index:
            raise LocalProtocolError(
                f"membership at {index} is no longer known (applied {self._applied_index})"
            )
        conf = self._applied
        for at, entry_conf in self._entries:
            if at > index:
                break
            conf = entry_conf
        return conf

    def appended(self, entries: Sequence[Entry]) -> None:
        """``entries`` were appended, replacing whatever followed ``entries[0].index - 1``."""
        if not entries:
            return
        first = entries[0].index
        while self._entries and self._entries[-1][0] >= first:
            # Raft §5.3: replaced by a newer leader's entries; Thesis §4.1: the configuration
            # falls back to the latest entry that remains.
            self._entries.pop()
        for entry in entries:
            if entry.kind is _CONFIG:
                self._entries.append((entry.index, decode_conf_state(entry.data)))

    def restored(self, conf: ConfState, index: int) -> None:
        """The log was replaced by a snapshot at ``index`` whose membership is ``conf``."""
        self._applied = conf
        self._applied_at = index
        self._applied_index = index
        self._entries = []

    def applied_to(self, index: int) -> None:
        """The state machine reflects every entry up to ``index``."""
        if index <= self._applied_index:
            return
        self._applied_index = index
        while self._entries and self._entries[0][0] <= index:
            self._applied_at, self._applied = self._entries.pop(0)

    def applied(self) -> ConfState:
        """The membership at the applied index: what a snapshot taken there records."""
        return self._applied
