"""The driver contract of Ready/advance: misuse is a LocalProtocolError, never silent loss."""

from __future__ import annotations

import random

import pytest

from raftpy import LocalProtocolError, MemoryStorage, Raft, RaftConfig, Role
from raftpy.core.messages import Entry, EntryKind, entries_size
from raftpy.core.storage import HardState


def _single_node_leader() -> tuple[Raft, MemoryStorage]:
    storage = MemoryStorage([1])
    raft = Raft(RaftConfig(id=1), storage, random.Random(0))
    raft.campaign()
    assert raft.role is Role.LEADER
    return raft, storage


def test_advance_without_persisting_entries_is_refused() -> None:
    raft, _storage = _single_node_leader()
    rd = raft.ready()
    assert rd.entries, "the new leader's no-op must be in the Ready"
    with pytest.raises(LocalProtocolError, match="before the Ready's entries were persisted"):
        raft.advance(rd)


def test_advance_after_persisting_commits_single_node_entry() -> None:
    raft, storage = _single_node_leader()
    rd = raft.ready()
    if rd.hard_state is not None:
        storage.set_hard_state(rd.hard_state)
    storage.append(rd.entries)
    raft.advance(rd)
    # Thesis §10.2.1: the leader's own durable copy is its whole majority here.
    assert raft.log.committed == rd.entries[-1].index


def test_a_restart_replays_a_long_log_in_bounded_batches() -> None:
    """A node that restarts with a long committed log applies it a Ready at a time, each at
    most ``max_apply_bytes`` (1 MiB by default): the driver decodes a Ready's entries all at
    once, so a larger batch is held in memory whole (a million-key restart's peak RSS grew by
    the replayed log's size with 64 MiB)."""
    storage = MemoryStorage([1])
    data = b"x" * 1000
    entries = [Entry(1, i, EntryKind.COMMAND, data) for i in range(1, 3001)]  # ~3 MB
    storage.append(entries)
    storage.set_hard_state(HardState(term=1, vote=1, commit=3000))
    config = RaftConfig(id=1)
    assert config.max_apply_bytes == 1 << 20
    raft = Raft(config, storage, random.Random(0))
    applied = 0
    batches = 0
    while raft.has_ready():
        rd = raft.ready()
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
        storage.append(rd.entries)
        if rd.committed_entries:
            assert entries_size(rd.committed_entries) <= config.max_apply_bytes
            assert rd.committed_entries[0].index == applied + 1
            applied = rd.committed_entries[-1].index
            batches += 1
        raft.advance(rd)
        raft.applied_to(applied)
    assert applied == 3000 and batches >= 3
