"""The driver contract of Ready/advance: misuse is a LocalProtocolError, never silent loss."""

from __future__ import annotations

import random

import pytest

from raftpy import LocalProtocolError, MemoryStorage, Raft, RaftConfig, Role


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
