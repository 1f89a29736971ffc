"""Which snapshot file a node restores from at start: one rule, read by the node's recovery
(:meth:`raftpy.node.snapshots.NodeSnapshots.recover`) and by ``raftpy doctor``
(:mod:`raftpy.storage.inspect`), so the two can never disagree.

A node restores from the file of the snapshot its log was compacted to, or from a newer file
at an index the log vouches for: committed, within the log, and with the term the log holds
there (Raft §7: a snapshot covers committed entries only; a follower that crashed while
installing one from the leader may hold a file its log never reached). Files newer than the
log's snapshot that it does not vouch for are *unvouched*: the node deletes them at start.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

Key = tuple[int, int]
"""A snapshot file's (index, term)."""


class SnapshotChoice(NamedTuple):
    """What the rule decided, by (index, term) of the files."""

    chosen: Key | None
    """The file to restore from; ``None``: none (apply the log from its start)."""
    own: Key | None
    """The file of the snapshot the log was compacted to, when it exists."""
    unvouched: list[Key]
    """Files newer than the log's snapshot that the log does not vouch for, newest first."""


def choose_snapshot(
    keys: Sequence[Key],
    log_snapshot: Key,
    last_index: int,
    commit: int,
    term_at: Callable[[int], int],
) -> SnapshotChoice:
    """Apply the rule (see the module docstring) to the files ``keys`` (ascending), a log
    compacted to ``log_snapshot`` = (index, term) ((0, 0): never), holding entries up to
    ``last_index`` with commit index ``commit``, whose term at an index is ``term_at(i)``.
    Only file names are looked at: an unvouched file is never opened."""
    wal_index, wal_term = log_snapshot
    chosen: Key | None = None
    own: Key | None = None
    unvouched: list[Key] = []
    for index, term in reversed(keys):
        if index == wal_index and term == wal_term:
            own = (index, term)
            if chosen is None:
                chosen = own
            break
        if (
            chosen is None
            and wal_index < index <= min(last_index, commit)
            and term_at(index) == term
        ):
            chosen = (index, term)
        elif index > wal_index:
            unvouched.append((index, term))
    return SnapshotChoice(chosen, own, unvouched)
