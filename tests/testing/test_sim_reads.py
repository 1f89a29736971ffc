"""Linearizable reads (ReadIndex, Thesis §6.4) on SimCluster: the simulator records every
ReadState a node's Ready returns and checks it against what was committed before the read
began (``ReadIndexSafety`` in raftpy.testing.checkers)."""

from __future__ import annotations

import pytest

from raftpy.core.ready import ReadState
from raftpy.errors import InvariantViolation
from raftpy.testing.checkers import ReadIndexSafety
from raftpy.testing.sim import SimCluster


def tag(c: SimCluster, text: str) -> str:
    return f"[seed={c.seed} t={c.now:.3f}s] {text}"


def answer(c: SimCluster, i: int, context: bytes) -> ReadState | None:
    found = [rs for rs in c.read_states(i) if rs.context == context]
    assert len(found) <= 1, tag(c, f"read {context!r} answered {len(found)} times")
    return found[0] if found else None


@pytest.mark.parametrize("seed", range(5))
def test_a_read_on_the_leader_is_answered_at_or_after_the_commit_index(seed: int) -> None:
    c = SimCluster(n=3, seed=seed)
    leader = c.check_one_leader()
    index = c.one(b"x")
    context = c.read_index(leader)
    assert context is not None, tag(c, "the leader refused a read")
    assert answer(c, leader, context) is None, tag(c, "answered before a heartbeat round")
    c.run_for(0.1)
    rs = answer(c, leader, context)
    assert rs is not None, tag(c, "the leader did not answer the read")
    assert rs.index >= index, tag(c, f"read at {rs.index}, below the commit index {index}")
    assert rs.index == c.raft(leader).log.committed
    assert c.dropped_reads(leader) == []


def test_reads_on_a_node_that_knows_no_leader_are_refused() -> None:
    c = SimCluster(n=3, seed=1)
    leader = c.check_one_leader()
    follower = (leader + 1) % 3
    c.crash(follower)
    assert c.read_index(follower) is None
    assert c.read_states(follower) == []


def test_contexts_are_unique() -> None:
    c = SimCluster(n=3, seed=2)
    leader = c.check_one_leader()
    contexts = [c.read_index(leader) for _ in range(5)]
    assert None not in contexts and len(set(contexts)) == 5
    c.run_for(0.1)
    assert [rs.context for rs in c.read_states(leader)] == contexts


def test_a_single_node_answers_at_once() -> None:
    c = SimCluster(n=1, seed=0)
    c.check_one_leader()
    index = c.one(b"x")
    context = c.read_index(0)
    assert context is not None
    assert c.read_states(0) == [ReadState(index, context)]


@pytest.mark.parametrize("seed", range(5))
def test_a_new_leader_behind_on_the_commit_index_answers_only_after_its_own_commit(
    seed: int,
) -> None:
    """Thesis §6.4 step 1: a new leader may not know the latest commit index until it commits
    an entry of its own term; a read waits for that, so it still sees every earlier write."""
    c = SimCluster(n=3, seed=seed)
    old = c.check_one_leader()
    c.one(b"x")
    index, _, ok = c.start(old, b"y")
    assert ok
    # Cut the old leader off the moment it commits y, before the others hear of it.
    while c.raft(old).log.committed < index:
        c.run_until_us(c.now_us + 50)
    c.disconnect(old)
    # Catch the new leader the moment it is elected, before its first entry commits.
    while True:
        c.run_until_us(c.now_us + 50)
        new = c.leader()
        if new is not None and new != old:
            break
        assert c.now < 10, tag(c, "no new leader")
    raft = c.raft(new)
    assert raft.log.committed < index, tag(c, "the new leader knew the commit: covers nothing")
    context = c.read_index(new)
    assert context is not None
    c.run_for(0.5)
    rs = answer(c, new, context)
    assert rs is not None, tag(c, "the new leader did not answer")
    assert rs.index > index, tag(c, f"read at {rs.index}: not after the new leader's entry")


@pytest.mark.parametrize("seed", range(5))
def test_a_partitioned_old_leader_never_answers_a_later_read(seed: int) -> None:
    # Without CheckQuorum the old leader keeps believing it leads while cut off.
    c = SimCluster(n=5, seed=seed, check_quorum=False)
    old = c.check_one_leader()
    c.one(b"before")
    others = [i for i in range(5) if i != old]
    c.partition([[old, others[0]], others[1:]])
    majority = others[1:]
    while True:
        c.run_for(0.05)
        new = next((i for i in majority if c.state(i)[1]), None)
        if new is not None:
            break
        assert c.now < 10, tag(c, "the majority elected no leader")
    index, _, ok = c.start(new, b"after")
    assert ok
    assert c.wait_committed(index, 3) == b"after", tag(c, "the majority did not commit")
    assert c.state(old)[1], tag(c, "the old leader stepped down: the test covers nothing")
    context = c.read_index(old)
    assert context is not None, tag(c, "the old leader refused the read")
    c.run_for(2.0)
    assert answer(c, old, context) is None, tag(c, "the old leader answered a stale read")
    c.heal()
    c.run_for(1.0)
    assert context in c.dropped_reads(old), tag(c, "the stale read was not dropped")
    assert answer(c, old, context) is None


def test_the_checker_catches_a_stale_read_point() -> None:
    reads = ReadIndexSafety(lambda text: f"[seed=9] {text}")
    reads.on_commit(7)
    reads.on_issue(0, b"r1")
    reads.on_commit(9)  # commits after the read began do not raise the bar
    reads.on_read_state(0, ReadState(7, b"r1"))
    reads.on_issue(1, b"r2")
    with pytest.raises(InvariantViolation, match=r"\[seed=9\].*index 6.*index 9 was committed"):
        reads.on_read_state(1, ReadState(6, b"r2"))


def test_the_checker_catches_an_answer_to_a_read_not_open_there() -> None:
    reads = ReadIndexSafety(lambda text: f"[seed=9] {text}")
    reads.on_issue(0, b"r1")
    with pytest.raises(InvariantViolation, match="not open there"):
        reads.on_read_state(1, ReadState(5, b"r1"))
    reads.on_issue(2, b"r2")
    reads.on_read_state(2, ReadState(5, b"r2"))
    with pytest.raises(InvariantViolation, match="not open there"):
        reads.on_dropped(2, b"r2")  # answered already
    reads.on_issue(3, b"r3")
    reads.on_crash(3)
    with pytest.raises(InvariantViolation, match="not open there"):
        reads.on_read_state(3, ReadState(5, b"r3"))  # lost with the crashed core
