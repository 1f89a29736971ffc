"""Lease reads and follower reads on SimCluster, checked for linearizability.

Clients write a register through the leader and read it with lease reads (on every node
that believes it leads, a cut-off old leader included) and follower ReadIndex reads, while a
nemesis cuts the leader off and heals; nodes' clocks run at different speeds. Every read
is served as a real node serves it: from the state machine once it applied the read index.
The history goes through the linearizability checker (raftpy.testing.linearizability), and
the simulator's own read checker (ReadIndexSafety) watches every read point as it happens.

Within the drift bound no stale read appears; with the bound broken on purpose (a leader
whose clock runs slow while the lease assumes no drift) stale reads are found.

``RAFTPY_LEASE_SEEDS=N`` runs seeds 0..N-1; ``RAFTPY_LEASE_SEED=s`` replays one seed.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass

import pytest

from raftpy.core.ready import ReadState
from raftpy.errors import InvariantViolation
from raftpy.testing.history import HistoryRecorder
from raftpy.testing.linearizability import Verdict, check
from raftpy.testing.sim import RecordingStateMachine, SimCluster

ELECTION = 10
TICK = 0.01
KEYS = ("x", "y", "z")


def lease_ticks_for(drift: float) -> int:
    """The node's derivation (raftpy.core.lease): E - 1 - ceil(drift / T)."""
    return max(0, ELECTION - 1 - math.ceil(drift / TICK - 1e-9))


def seeds(default: int) -> list[int]:
    single = os.environ.get("RAFTPY_LEASE_SEED")
    if single is not None:
        return [int(single)]
    return list(range(int(os.environ.get("RAFTPY_LEASE_SEEDS", default))))


@dataclass
class _OpenRead:
    handle: int
    node: int
    context: bytes
    key: str


@dataclass
class _OpenWrite:
    handle: int
    node: int
    index: int
    command: bytes


def read_value(sm: RecordingStateMachine, key: str) -> int | None:
    """The register ``key`` in the commands applied (``key=value`` each)."""
    prefix = f"{key}=".encode()
    for command in reversed(sm.commands):
        if command.startswith(prefix):
            return int(command[len(prefix) :])
    return None


class Workload:
    """Writes through the leader, lease reads on every self-believed leader, follower
    reads elsewhere; every outcome recorded in virtual time."""

    def __init__(self, c: SimCluster, rng: random.Random) -> None:
        self.c = c
        self.rng = rng
        self.history = HistoryRecorder(clock=lambda: c.now_us * 1000)
        self.reads: list[_OpenRead] = []
        self.writes: list[_OpenWrite] = []
        self.value = 0
        self.client = 0
        self.lease_reads = 0
        self.follower_reads = 0
        self.writing = True
        # What each node reported so far, consumed incrementally (the lists only grow: this
        # nemesis never restarts a node).
        self._answers: dict[bytes, ReadState] = {}
        self._dropped: set[bytes] = set()
        self._applied: list[dict[int, bytes]] = [{} for _ in range(c.n)]
        self._seen = [[0, 0, 0] for _ in range(c.n)]

    def _collect(self) -> None:
        c = self.c
        for i in range(c.n):
            seen = self._seen[i]
            states = c.read_states(i)
            self._answers.update((rs.context, rs) for rs in states[seen[0] :])
            dropped = c.dropped_reads(i)
            self._dropped.update(dropped[seen[1] :])
            applied = c.applied(i)
            self._applied[i].update(applied[seen[2] :])
            seen[:] = [len(states), len(dropped), len(applied)]

    def _invoke(self, op: str, key: str, value: int | None = None) -> int:
        self.client += 1
        if op == "write":
            return self.history.invoke(self.client, "write", key, value=value)
        return self.history.invoke(self.client, "read", key)

    def step(self) -> None:
        c, rng = self.c, self.rng
        writer = c.leader()  # the newest leader takes the writes; the others only read
        for i in range(c.n):
            if not c.is_up(i):
                continue
            leads = c.state(i)[1]
            if i == writer and self.writing and rng.random() < 0.1:
                self.value += 1
                key = rng.choice(KEYS)
                command = f"{key}={self.value}".encode()
                handle = self._invoke("write", key, self.value)
                index, _, _ = c.start(i, command)
                if index < 0:
                    self.history.fail(handle)
                else:
                    self.writes.append(_OpenWrite(handle, i, index, command))
            if rng.random() < 0.3:
                key = rng.choice(KEYS)
                handle = self._invoke("read", key)
                context = c.read_lease(i) if leads else c.read_index(i)
                if context is None:
                    self.history.fail(handle)
                else:
                    self.reads.append(_OpenRead(handle, i, context, key))
                    if leads:
                        self.lease_reads += 1
                    else:
                        self.follower_reads += 1
        self._settle()

    def _settle(self) -> None:
        c = self.c
        self._collect()
        open_writes = []
        for w in self.writes:
            there = self._applied[w.node].get(w.index)
            if there == w.command:
                self.history.complete(w.handle)
            elif there is not None:
                # Another entry took its index: it never will be applied (Raft §5.3).
                self.history.fail(w.handle)
            else:
                open_writes.append(w)
        self.writes = open_writes
        open_reads = []
        for r in self.reads:
            if r.context in self._dropped:
                self.history.fail(r.handle)
                continue
            state = self._answers.get(r.context)
            if state is None or c.raft(r.node).log.applied < state.index:
                open_reads.append(r)
                continue
            sm = c.state_machine(r.node)
            assert isinstance(sm, RecordingStateMachine)
            # Served as a real node serves it: from the state machine, once it applied the
            # read index (ReadState.index).
            self.history.complete(r.handle, read_value(sm, r.key))
        self.reads = open_reads


def run(
    seed: int,
    *,
    drift: float,
    rates: tuple[float, float],
    slow_old_leader: float = 1.0,
    sim_checker: bool = True,
) -> tuple[Workload, str | None]:
    """One run: 3 nodes, lease reads with ``lease_ticks`` for ``drift``, clock rates drawn
    in ``rates``; the nemesis cuts the leader off 4 times (its clock set to
    ``slow_old_leader`` while cut off). Without ``sim_checker`` the simulator's read
    checker does not stop the run, so only the history check judges it. Returns (workload,
    violation or None)."""
    c = SimCluster(
        n=3,
        seed=seed,
        election_ticks=ELECTION,
        tick_seconds=TICK,
        lease_ticks=lease_ticks_for(drift),
    )
    if not sim_checker:
        c._checks.reads.on_read_state = lambda node, rs: None  # type: ignore[method-assign]
    rng = random.Random(seed)
    for i in range(3):
        c.set_clock_rate(i, rng.uniform(*rates))
    w = Workload(c, rng)
    try:
        c.check_one_leader()
        for _ in range(4):
            for _ in range(rng.randrange(50, 150)):
                c.run_until_us(c.now_us + 1000)
                w.step()
            old = c.leader()
            if old is None:
                continue
            others = [i for i in range(3) if i != old]
            c.partition([[old], others])
            if slow_old_leader != 1.0:
                c.set_clock_rate(old, slow_old_leader)
            for _ in range(rng.randrange(150, 400)):
                c.run_until_us(c.now_us + 1000)
                w.step()
            c.heal()
            c.set_clock_rate(old, rng.uniform(*rates))
        for _ in range(200):
            c.run_until_us(c.now_us + 1000)
            w.step()
        # Let every outcome settle, so that few writes stay indeterminate: each one
        # multiplies the checker's work.
        deadline = c.now + 5.0
        while (w.writes or w.reads) and c.now < deadline:
            c.run_until_us(c.now_us + 10_000)
            w._settle()
    except InvariantViolation as exc:
        return w, f"simulator read checker: {exc}"
    result = check(w.history.operations(), timeout=30)
    if result.verdict is Verdict.NOT_LINEARIZABLE:
        return w, f"linearizability checker: {result.explain()}"
    assert result.verdict is Verdict.LINEARIZABLE, result.verdict
    return w, None


@pytest.mark.parametrize("seed", seeds(20))
def test_lease_and_follower_reads_are_linearizable_under_skew_within_the_bound(
    seed: int,
) -> None:
    """Reference: Thesis §6.4.1 (lease reads under bounded clock drift), §6.4 (follower
    reads). Clocks run at 0.9-1.1 of real speed: over the followers' (E-1) ticks the worst
    pair drifts 16 ms, within the 20 ms allowance."""
    print(f"RAFTPY_LEASE_SEED={seed}")
    w, violation = run(seed, drift=0.02, rates=(0.9, 1.1))
    assert violation is None, f"seed {seed}: {violation}"
    assert w.lease_reads > 50 and w.follower_reads > 50, (w.lease_reads, w.follower_reads)


def test_stale_lease_reads_are_found_when_the_drift_bound_is_broken() -> None:
    """The negative test: the lease assumes no drift (max_clock_drift 0: lease_ticks =
    E - 1) while a cut-off leader's clock runs at 0.4 of real speed, so it keeps its lease
    2.5 times too long: some seed must show a stale read, or the checks above prove
    nothing.

    Reference: Thesis §6.4.1 ("bounded clock drift" is the lease's assumption)."""
    for sim_checker in (True, False):
        found = []
        for seed in seeds(12):
            _, violation = run(
                seed, drift=0.0, rates=(1.0, 1.0), slow_old_leader=0.4, sim_checker=sim_checker
            )
            if violation is not None:
                print(f"RAFTPY_LEASE_SEED={seed}: {violation.splitlines()[0]}")
                found.append(seed)
        assert found, f"no stale read with the bound broken (sim checker {sim_checker})"


def run_restart(seed: int) -> tuple[Workload, str | None]:
    """5 nodes, no drift: the leader L's last quorum round is acknowledged by A and B while
    C and D are cut off; then B restarts and joins C and D, away from L and A. B must not
    vote for C or D while L's lease may still hold (a restart forgets the leader it heard)."""
    c = SimCluster(
        n=5, seed=seed, election_ticks=ELECTION, tick_seconds=TICK, lease_ticks=ELECTION - 1
    )
    rng = random.Random(seed)
    w = Workload(c, rng)
    try:
        leader = c.check_one_leader()
        a, b, x, y = [i for i in range(5) if i != leader]
        # No writes until the cut heals on one side: x and y keep logs as up to date as B's,
        # so B's vote is all they lack.
        w.writing = False
        c.run_for(0.1)
        c.partition([[leader, a, b], [x, y]])
        for _ in range(rng.randrange(200, 400)):
            c.run_until_us(c.now_us + 1000)
            w.step()
        c.restart(b)
        c.partition([[leader, a], [b, x, y]])
        w.writing = True  # at the newest leader: x or y once elected
        for _ in range(400):
            c.run_until_us(c.now_us + 1000)
            w.step()
        c.heal()
        deadline = c.now + 5.0
        while (w.writes or w.reads) and c.now < deadline:
            c.run_until_us(c.now_us + 10_000)
            w._settle()
    except InvariantViolation as exc:
        return w, f"simulator read checker: {exc}"
    result = check(w.history.operations(), timeout=30)
    if result.verdict is Verdict.NOT_LINEARIZABLE:
        return w, f"linearizability checker: {result.explain()}"
    return w, None


@pytest.mark.parametrize("seed", seeds(10))
def test_a_restarted_voter_does_not_cut_a_lease_short(seed: int) -> None:
    """Reference: Thesis §6.4.1 (the lease relies on the vote refusal of Thesis §4.2.3, which
    a restart would otherwise forget)."""
    print(f"RAFTPY_LEASE_SEED={seed}")
    w, violation = run_restart(seed)
    assert violation is None, f"seed {seed}: {violation}"
    assert w.lease_reads > 20, w.lease_reads
