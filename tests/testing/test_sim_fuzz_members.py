"""Randomized fuzz of membership changes on SimCluster (Thesis §4), mixed with the faults of
``test_sim_fuzz.py``: clusters of 3 and 5 nodes under random partitions, disconnects, crashes,
restarts and unreliable / duplicating / long-reordering networks also add new nodes as
learners, promote them, remove voters (the leader too), make joint changes (several voters at
once, Thesis §4.3) and wipe a voter's disk and replace it (remove it, add it back as a new
learner, promote it). Changes that the faults block time out or are refused; that is fine.

Then everything heals, the outstanding replacement is finished, removed nodes are stopped, a
final command must commit on every member, and:
- every member applied the same list, and the membership in force is the same on all;
- whatever any node applied before the repair is in the final log (no committed entry lost),
  and what removed nodes applied agrees with it;
- on its own, after every event, the simulator checks at most one leader per term, log
  matching, leader completeness, state machine safety, that every node has the same
  membership at the same applied index, and (odd seeds issue linearizable reads at leaders
  and random nodes) that no read is answered below a commit index reached before it began
  (``raftpy.testing.checkers``).

Seeds: by default seeds 0..DEFAULT_SEEDS-1 on 3 and 5 nodes (test ids like ``n5-seed17``);
``RAFTPY_SEEDS=N`` runs seeds 0..N-1 instead and ``RAFTPY_SEED=s`` replays one seed, as for
``test_sim_fuzz.py`` (README.md, "Testing"). A failure names the seed and a one-line replay
command.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

import pytest

from raftpy.core.confchange import ConfChange, ConfChangeKind, ConfChangeSingle
from raftpy.errors import ConfChangeError, IndeterminateError
from raftpy.testing.fuzz import classic_fault_step
from raftpy.testing.fuzz import run_with_reads as _run_with_reads
from raftpy.testing.sim import SimCluster

SIZES = (3, 5)
DEFAULT_SEEDS = 100
MAX_EXTRA_NODES = 4  # nodes added over a run, beyond the initial ones
_JOINT_KINDS = (ConfChangeKind.REMOVE_NODE, ConfChangeKind.ADD_LEARNER)


def _cases() -> list[tuple[int, int]]:
    single = os.environ.get("RAFTPY_SEED")
    if single:
        return [(n, int(single)) for n in SIZES]
    count = int(os.environ.get("RAFTPY_SEEDS", DEFAULT_SEEDS))
    return [(n, seed) for seed in range(count) for n in SIZES]


def replay_command(n: int, seed: int) -> str:
    test = "tests/testing/test_sim_fuzz_members.py"
    return f"RAFTPY_SEED={seed} .venv/bin/pytest {test} -k 'n{n}-seed{seed}'"


@dataclass
class _Stats:
    added: int = 0
    promoted: int = 0
    removed: int = 0
    joint: int = 0
    replaced: int = 0
    refused: int = 0
    unfinished: int = 0
    crashes: int = 0
    restarts: int = 0
    partitions: int = 0
    proposals: int = 0
    wiped: set[int] = field(default_factory=set)  # wiped members not yet removed

    def __str__(self) -> str:
        return (
            f"{self.added} added, {self.promoted} promoted, {self.removed} removed, "
            f"{self.joint} joint, {self.replaced} replaced, {self.refused} refused, "
            f"{self.unfinished} unfinished, {self.crashes} crashes, {self.partitions} "
            f"partitions, {self.proposals} proposals"
        )


def _membership_step(c: SimCluster, rng: random.Random, n0: int, st: _Stats) -> None:
    """One random membership change, driven to its end or to a short deadline."""
    voters, learners = c.members()
    timeout = rng.uniform(0.3, 2.0)
    if st.wiped:
        # A wiped voter is replaced before anything else changes: while it is a member, it
        # counts in the quorum but cannot answer.
        i = min(st.wiped)
        c.remove_member(i, timeout=timeout)
        st.wiped.discard(i)
        st.removed += 1
        if not c.is_up(i):
            c.restart(i)
        c.add_member(i, timeout=timeout)
        st.replaced += 1
        return
    r = rng.random()
    outsiders = [i for i in range(c.n) if i not in voters and i not in learners]
    if r < 0.25 and c.n < n0 + MAX_EXTRA_NODES:
        c.add_member(c.add_node(), voter=rng.random() < 0.2, timeout=timeout)
        st.added += 1
    elif r < 0.35 and outsiders:
        i = rng.choice(outsiders)  # a removed node comes back with its old disk
        if not c.is_up(i):
            c.restart(i)
        c.add_member(i, timeout=timeout)
        st.added += 1
    elif r < 0.55 and learners:
        c.promote(rng.choice(learners), timeout=timeout)
        st.promoted += 1
    elif r < 0.75 and len(voters) > 1:
        leader = c.leader()
        others = [v for v in voters if v != leader]
        if leader in voters and (rng.random() < 0.4 or not others):
            victim = leader
        elif others:
            victim = rng.choice(others)
        else:
            return
        c.remove_member(victim, timeout=timeout)
        st.removed += 1
    elif r < 0.9 and len(voters) + len(learners) >= 3:
        # Joint consensus: two voters change at once (Thesis §4.3).
        changes: list[ConfChangeSingle] = []
        pool = list(voters)
        rng.shuffle(pool)
        for i in learners[:1]:
            changes.append(ConfChangeSingle(ConfChangeKind.ADD_VOTER, i))
        while len(changes) < 2 and len(pool) > 1:
            kind = rng.choice(_JOINT_KINDS)
            changes.append(ConfChangeSingle(kind, pool.pop()))
        if len(changes) == 2:
            c.change(ConfChange(tuple(changes)), force=rng.random() < 0.3, timeout=timeout)
            st.joint += 1
    elif _can_lose_a_voter(c):
        i = rng.choice(voters)
        c.wipe(i)
        st.wiped.add(i)
        if rng.random() < 0.7:
            c.restart(i)  # back at once, with an empty disk: refused by its peers


def _can_lose_a_voter(c: SimCluster) -> bool:
    """Whether a voter's disk may be wiped: a lost disk is the one fault that never heals, so
    every half of the membership must keep a majority without it: the membership of the
    leader of the highest term, committed, not joint, with three voters or more."""
    leader = c.leader()
    if leader is None:
        return False
    raft = c.raft(leader)
    if any(c.is_up(i) and c.state(i)[0] > raft.term for i in range(c.n)):
        return False  # a stale leader: the membership may have moved on without it
    conf = raft.conf_state()
    settled = not raft.log.confs.pending(raft.log.committed)
    return settled and not conf.voters_outgoing and len(conf.voters) >= 3


def run_member_fuzz(n0: int, seed: int) -> str:
    """One run; raises AssertionError or InvariantViolation on failure; returns its stats."""
    rng = random.Random(seed * 1_000_003 + n0 + 700_000)  # the script's own stream
    # Odd seeds also issue linearizable reads, at new leaders and at random nodes (removed
    # leaders and leaders in joint configurations too); the simulator checks every answer.
    read_rng = random.Random(seed * 1_000_003 + n0 + 900_000) if seed % 2 else None
    read_terms: set[tuple[int, int]] = set()
    # At least one of PreVote and CheckQuorum: with neither, a removed server that never
    # learned of its removal can raise the others' terms for ever (Thesis §4.2.3), which no
    # membership rule prevents; both are on by default.
    pre_vote, check_quorum = rng.choice(((True, True), (True, True), (True, False), (False, True)))
    c = SimCluster(
        n=n0,
        seed=seed,
        heartbeat_ticks=rng.choice((1, 1, 2)),
        pre_vote=pre_vote,
        check_quorum=check_quorum,
        max_inflight_msgs=rng.choice((256, 256, 4)),
        snapshot_every=rng.choice((None, None, 5, 20)),
        snapshot_chunk_bytes=rng.choice((64, 1024)),
    )
    st = _Stats()
    seq = 0
    duration = rng.uniform(3.0, 6.0)
    while c.now < duration:
        if rng.random() < 0.2:
            try:
                _membership_step(c, rng, n0, st)
            except ConfChangeError:
                st.refused += 1  # refused for good (unwise, or invalid now): nothing changed
            except IndeterminateError:
                st.unfinished += 1  # blocked by the faults; it may still commit later
        else:
            classic_fault_step(c, rng, st, bounce=False)
        for _ in range(rng.randrange(4)):
            # A client tries the nodes in random order until one takes the write (a stale
            # leader may take it too).
            order = list(range(c.n))
            rng.shuffle(order)
            for i in order:
                if c.start(i, b"n%d-s%d-%d" % (n0, seed, seq))[0] >= 0:
                    seq += 1
                    st.proposals += 1
                    break
        wait_ms = rng.randrange(5, 200)
        if read_rng is not None:
            _run_with_reads(c, read_rng, wait_ms * 1000, read_terms)
        else:
            c.run_for(wait_ms / 1000)

    # Whatever any node applied was committed: it must survive in the final log.
    committed: dict[int, bytes] = {}
    for i in range(c.n):
        if c.is_up(i):
            committed.update(c.applied(i))

    # Repair: heal, restart, finish the replacement of a wiped voter.
    c.set_unreliable(False)
    c.set_long_reordering(False)
    c.set_duplication(0.0)
    c.heal()
    for i in range(c.n):
        if not c.is_up(i):
            c.restart(i)
    # Let the leader hear from the restarted voters first: it refuses a change after which the
    # voters it heard from lately would not be a majority (raftpy.core.safe_change).
    c.check_one_leader(timeout=10.0)
    c.run_for(1.0)
    for i in sorted(st.wiped):
        c.remove_member(i, timeout=20.0)
        c.add_member(i, timeout=20.0)
        st.replaced += 1
    # Ask a leader whose configuration is settled: a node that was removed without hearing
    # of it may still believe in an older one.
    c.check_one_leader(timeout=10.0)
    c.run_for(1.0)
    c.check_one_leader(timeout=10.0)
    voters, learners = c.members()
    members = set(voters) | set(learners)
    # Removed nodes are stopped, as an operator would (what they applied is checked below).
    removed = {i: c.applied(i) for i in range(c.n) if i not in members}
    for i in removed:
        c.crash(i)
    final = b"final-n%d-s%d" % (n0, seed)
    index = c.one(final, len(members))
    ids = sorted(members)
    first = c.applied(ids[0])
    reads = sum(len(c.read_states(i)) for i in range(c.n))
    stats = f"{st}, {reads} reads answered; members {voters} + learners {learners}"
    assert first and first[-1] == (index, final), (
        f"[seed={seed} n={n0}] node {ids[0]}'s log does not end with the final command ({stats})"
    )
    conf = c.raft(ids[0]).conf_state()
    for i in ids[1:]:
        assert c.applied(i) == first, (
            f"[seed={seed} n={n0}] node {i}'s applied list differs from node {ids[0]}'s ({stats})"
        )
        assert c.raft(i).conf_state() == conf, (
            f"[seed={seed} n={n0}] node {i} has membership {c.raft(i).conf_state()}, node "
            f"{ids[0]} has {conf} ({stats})"
        )
    log = dict(first)
    for source, applied in [("before repair", committed), *removed.items()]:
        for idx, cmd in dict(applied).items():
            assert log.get(idx) == cmd, (
                f"[seed={seed} n={n0}] {cmd!r} was applied at {idx} ({source}) but the final "
                f"log has {log.get(idx)!r} ({stats})"
            )
    return stats


@pytest.mark.parametrize(
    ("n", "seed"), [pytest.param(n, s, id=f"n{n}-seed{s}") for n, s in _cases()]
)
def test_member_fuzz(n: int, seed: int) -> None:
    replay = replay_command(n, seed)
    print(f"member fuzz n={n} seed={seed}; replay: {replay}")
    try:
        print(run_member_fuzz(n, seed))
    except Exception as e:  # a safety violation, a failed check or a crash in the core
        raise AssertionError(
            f"member fuzz failed for n={n} seed={seed}: {type(e).__name__}: {e}\nreplay: {replay}"
        ) from e
