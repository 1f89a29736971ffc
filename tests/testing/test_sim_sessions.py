"""Client sessions in the simulator: the node's own session table on every replica
(raftpy.testing.sim_sessions). Duplicates resent through leader changes, crashes and
partitions are applied once; every replica expires the same sessions at the same index and
answers alike; the table survives snapshot installs and restarts on the real WAL.

Randomized runs print their seed; ``RAFTPY_SESSION_SEEDS=N`` runs seeds 0..N-1 and
``RAFTPY_SESSION_SEED=s`` replays one (README.md, "Testing").
"""

from __future__ import annotations

import os
import random
from collections import Counter

import pytest

from raftpy.node.session_machine import SessionStateMachine
from raftpy.node.session_records import OpenSession, SessionCommand
from raftpy.testing.sim import RecordingStateMachine, SimCluster
from raftpy.testing.sim_sessions import SessionLog, SimSessions, session_machines


def cluster(
    n: int, seed: int, *, snapshot_every: int | None = None, storage: str = "memory"
) -> tuple[SimCluster, SessionLog]:
    log = SessionLog()
    sim = SimCluster(
        n,
        seed=seed,
        state_machine=session_machines(RecordingStateMachine, log),
        snapshot_every=snapshot_every,
        storage="file" if storage == "file" else "memory",
    )
    return sim, log


def machine(sim: SimCluster, i: int) -> SessionStateMachine:
    sm = sim.state_machine(i)
    assert isinstance(sm, SessionStateMachine)
    return sm


def commands(sim: SimCluster, i: int) -> list[bytes]:
    user = machine(sim, i).user
    assert isinstance(user, RecordingStateMachine)
    return user.commands


def settle(sim: SimCluster, timeout: float = 10.0) -> None:
    """Run until every up node applied the same index."""
    deadline = sim.now + timeout
    while sim.now < deadline:
        sim.run_for(0.1)
        applied = {sim.raft(i).log.applied for i in range(sim.n) if sim.is_up(i)}
        commits = {sim.raft(i).log.committed for i in range(sim.n) if sim.is_up(i)}
        if len(applied) == 1 and applied == commits:
            return
    raise AssertionError(f"[seed={sim.seed}] replicas did not converge")


def assert_tables_equal(sim: SimCluster) -> None:
    images = {
        i: (machine(sim, i).table.clock_ms, list(machine(sim, i).table.images()))
        for i in range(sim.n)
        if sim.is_up(i)
    }
    first = next(iter(images.values()))
    assert all(im == first for im in images.values()), f"[seed={sim.seed}] tables differ"


def test_duplicate_after_a_leader_change_is_applied_once() -> None:
    sim, log = cluster(3, seed=1)
    sess = SimSessions(sim, log)
    s = sess.open()
    first = sess.write(s, 1, 1, b"once")
    assert first.failure is None
    old = sim.check_one_leader()
    sim.crash(old)
    sim.check_one_leader()
    again = sess.write(s, 1, 1, b"once")
    assert again.result == first.result and again.failure is None
    sim.restart(old)
    settle(sim)
    for i in range(3):
        assert commands(sim, i).count(b"once") == 1
    assert log.check() > 0


def test_table_survives_snapshot_install_and_restart_on_the_real_wal() -> None:
    sim, log = cluster(3, seed=7, snapshot_every=10, storage="file")
    sess = SimSessions(sim, log, timeout_ms=600_000)
    s = sess.open()
    kept = sess.write(s, 1, 1, b"keep-me")  # never acknowledged: the table must keep it
    leader = sim.check_one_leader()
    lagger = (leader + 1) % 3
    sim.disconnect(lagger)
    for k in range(2, 60):
        assert sess.write(s, k, 1, b"w%d" % k).failure is None
    sim.connect(lagger)
    settle(sim)
    assert sim.snapshots_installed > 0
    assert_tables_equal(sim)
    for i in range(3):
        sim.crash(i)
        sim.restart(i)
        sim.check_one_leader()
    settle(sim)
    assert_tables_equal(sim)
    again = sess.write(s, 1, 1, b"keep-me")
    assert again.result == kept.result and again.failure is None
    settle(sim)
    for i in range(3):
        assert commands(sim, i).count(b"keep-me") == 1
    log.check()


def _seeds() -> list[int]:
    single = os.environ.get("RAFTPY_SESSION_SEED")
    if single:
        return [int(single)]
    return list(range(int(os.environ.get("RAFTPY_SESSION_SEEDS", "8"))))


@pytest.mark.parametrize("seed", _seeds())
def test_exactly_once_and_identical_expiry_under_faults(seed: int) -> None:
    print(f"seed={seed} (replay: RAFTPY_SESSION_SEED={seed})")
    rng = random.Random(seed)
    n = 5 if seed % 2 else 3
    sim, log = cluster(n, seed, snapshot_every=15 if seed % 4 < 2 else None)
    sess = SimSessions(sim, log, timeout_ms=60_000, max_results=1000)
    sim.check_one_leader()
    clients = [sess.open() for _ in range(3)]
    idle = [sess.open(timeout_ms=150) for _ in range(3)]  # opened and then never used
    next_seq = dict.fromkeys(clients, 1)
    idle_attempts: list[int] = []
    down: set[int] = set()
    for _ in range(60):
        roll = rng.random()
        if roll < 0.15:
            groups: list[list[int]] = [[], []]
            for i in range(n):
                groups[rng.randrange(2)].append(i)
            sim.partition([g for g in groups if g])
        elif roll < 0.25 and len(down) < (n - 1) // 2:
            i = rng.randrange(n)
            sim.crash(i)
            down.add(i)
        elif roll < 0.35:
            for i in down:
                sim.restart(i)
            down.clear()
            sim.heal()
        if rng.random() < 0.15 and (leader := sim.leader()) is not None:
            # An idle session opened amid the faults: it must expire alike everywhere, also
            # on replicas that got the table from a snapshot.
            index, _ = sess.propose(leader, lambda t: OpenSession(t, 150, 10, 1000))
            idle_attempts.append(index)
        # Each client sends its next write, and now and then resends an earlier one (a
        # duplicate, as after a lost answer), wherever some node believes it leads.
        for c in clients:
            leader = sim.leader()
            if leader is None:
                continue
            seq = next_seq[c]
            if seq > 1 and rng.random() < 0.4:
                seq = rng.randrange(1, seq)
            else:
                next_seq[c] += 1
            cmd = b"c%d-%d" % (c, seq)
            sess.propose(leader, lambda t, c=c, seq=seq, cmd=cmd: SessionCommand(t, c, seq, 1, cmd))
        sim.run_for(rng.choice((0.02, 0.05, 0.2)))
    for i in down:
        sim.restart(i)
    sim.heal()
    sim.check_one_leader()
    # Every write resent once more until applied: each lands exactly once.
    for c in clients:
        for seq in range(1, next_seq[c]):
            answer = sess.write(c, seq, 1, b"c%d-%d" % (c, seq))
            assert answer.failure is None, f"[seed={seed}] {c}/{seq}: {answer}"
    sess.write(0, 0, 0, b"advance the clock")
    settle(sim)
    expected = Counter(b"c%d-%d" % (c, s) for c in clients for s in range(1, next_seq[c]))
    for i in range(n):
        got = Counter(x for x in commands(sim, i) if x.startswith(b"c"))
        assert got == expected, f"[seed={seed}] node {i} applied {got - expected} twice"
    assert log.check() > 0
    answered = [a for replica in log.replicas for a in replica.values()]
    duplicates = [a for a in answered if a.kind == "SessionCommand" and not a.applied]
    assert any(a.failure is None and a.result for a in duplicates), (
        f"[seed={seed}] no duplicate was answered from a session's memory"
    )
    expired = {s for replica in log.replicas for a in replica.values() for s in a.expired}
    opened = {i for i in idle_attempts if any(a.kind == "OpenSession" for a in log.at(i))}
    assert set(idle) | opened <= expired, f"[seed={seed}] idle sessions never expired"
    assert not expired & set(clients)
    assert_tables_equal(sim)
