"""The randomized fuzz of the Raft core on :class:`~raftpy.testing.sim.SimCluster`: one run is a
random script of faults and proposals for a few seconds of virtual time, then a repair after
which a final command must commit on every node and every node's applied list must agree. The
simulator checks the safety invariants after every event on its own (it raises
:class:`~raftpy.errors.InvariantViolation`); the end of the run checks liveness and that
nothing applied before the repair was lost (an :class:`AssertionError` naming seed and size).

Schedules (``run_fuzz(..., schedule=...)``):

- ``"classic"`` (the default): random partitions, disconnects, crashes, restarts, unreliable /
  duplicating / long-reordering network toggles and proposals at whichever node takes them,
  2-5 s of virtual time, in-memory storage.
- ``"swarm"``: each seed enables a random subset of fault kinds, each with a random weight
  (swarm testing: a run that never heals, or that only ever isolates leaders, reaches states a
  uniform mix of everything rarely does). Besides the classic kinds: partitioning the leader
  (alone or with a minority) right after it appended, so leadership changes while entries are
  partly replicated; crashing the leader or a follower right after an append; runs on the
  real write-ahead log over the fault-injecting disk, where a crash loses, tears or partly
  keeps what was not synced, including crashes in the middle of an fsync; fine-grained steps
  of a fraction of a millisecond; longer runs on 5 and 7 nodes. Three seeds in four
  concentrate on one theme: ``churn`` (leaders cut off or restarted moments after winning,
  messages of 64-256 bytes and commands of varied sizes, so appends split), ``storm``
  (elections without PreVote on short timeouts after the leader died mid-replication, a
  voter crashing right after it votes or in its vote's fsync and rebooting with other
  candidates' requests still in flight, on 5 and 7 nodes correlated power losses of
  several voters of one term at once, the old leader coming back to campaign in the same
  term; half the storm seeds mostly run split votes: the leader stalls, several followers
  time out in one tick, delays jitter, under PreVote or CheckQuorum) or ``reconfig``
  (membership changes back to back, some through joint consensus, while leaders are cut
  off).

The test suite (``tests/testing/test_sim_fuzz.py``) parametrizes this over seeds and sizes;
the mutation runner (:mod:`raftpy.testing.mutants`) runs it against planted bugs to show it
can fail. A failure is replayed by running the same ``(n, seed, reads, schedule)`` again.
"""

from __future__ import annotations

import random
from typing import Literal, Protocol

from raftpy.testing.fuzz_swarm import run_swarm
from raftpy.testing.fuzz_workload import (
    Stats,
    propose,
    random_groups,
    repair_and_check,
    run_with_reads,
)
from raftpy.testing.sim import SimCluster

__all__ = [
    "SCHEDULES",
    "SIZES",
    "FaultCounts",
    "Schedule",
    "classic_fault_step",
    "random_groups",
    "replay_command",
    "run_fuzz",
    "run_with_reads",
]

Schedule = Literal["classic", "swarm"]
SCHEDULES: tuple[Schedule, ...] = ("classic", "swarm")
SIZES = (3, 5, 7)
TEST_FILE = "tests/testing/test_sim_fuzz.py"


def replay_command(n: int, seed: int, reads: bool = False, schedule: Schedule = "classic") -> str:
    """The one command that replays this run through the test suite."""
    if schedule == "swarm":
        which = f"swarm-n{n}-s{seed}"
    elif reads:
        which = f"n{n}-seed{seed}-reads"
    else:
        which = f"n{n}-seed{seed} and not reads"
    return f"RAFTPY_SEED={seed} .venv/bin/pytest {TEST_FILE} -k '{which}'"


def run_fuzz(n: int, seed: int, *, reads: bool = False, schedule: Schedule | None = None) -> None:
    """One fuzz run; raises :class:`AssertionError` or
    :class:`~raftpy.errors.InvariantViolation` on failure. With ``reads``, linearizable reads
    are issued too (from a stream of their own: the script stays the same)."""
    if schedule is None or schedule == "classic":
        _run_classic(n, seed, reads)
    elif schedule == "swarm":
        run_swarm(n, seed, reads)
    else:
        raise ValueError(f"unknown schedule {schedule!r}; choose from {SCHEDULES}")


# ----------------------------------------------------------------------------------------------
# classic
# ----------------------------------------------------------------------------------------------


def _run_classic(n: int, seed: int, reads: bool) -> None:
    rng = random.Random(seed * 1_000_003 + n)  # the script; the cluster has its own stream
    read_rng = random.Random(seed * 1_000_003 + n + 500_000)
    read_terms: set[tuple[int, int]] = set()
    # Mostly the defaults; sometimes without PreVote / CheckQuorum (more disruptive
    # elections) and with tight flow control (probe state, paused peers, split appends).
    c = SimCluster(
        n=n,
        seed=seed,
        election_ticks=10,
        heartbeat_ticks=rng.choice((1, 1, 2, 3)),
        pre_vote=rng.random() < 0.75,
        check_quorum=rng.random() < 0.75,
        max_inflight_msgs=rng.choice((256, 256, 4, 1)),
        max_msg_bytes=rng.choice((1 << 20, 1 << 20, 64)),
        # Half the runs compact their logs: lagging and restarted nodes then catch up through
        # chunked snapshot transfers under the same faults.
        snapshot_every=rng.choice((None, None, 3, 10)),
        snapshot_chunk_bytes=rng.choice((64, 1024)),
    )
    duration = rng.uniform(2.0, 5.0)
    st = Stats()
    while c.now < duration:
        classic_fault_step(c, rng, st)
        propose(c, rng, seed, st, rng.randrange(4))
        wait_ms = rng.randrange(5, 300)
        if reads:
            run_with_reads(c, read_rng, wait_ms * 1000, read_terms)
        else:
            c.run_for(wait_ms / 1000)
    repair_and_check(c, seed, reads, st)


class FaultCounts(Protocol):
    """What :func:`classic_fault_step` counts."""

    crashes: int
    restarts: int
    partitions: int


def classic_fault_step(
    c: SimCluster, rng: random.Random, st: FaultCounts, *, bounce: bool = True
) -> None:
    """One step of the classic fault script: at a random node, partition, heal, disconnect,
    connect, crash, restart (or, with ``bounce``, crash and come straight back), or toggle
    loss and delay, long reordering or duplication; about a third of the steps do nothing.
    Draws the same random numbers with or without ``bounce``, so a script's history depends
    only on its seed."""
    r = rng.random()
    node = rng.randrange(c.n)
    if r < 0.10:
        c.partition(random_groups(rng, c.n))
        st.partitions += 1
    elif r < 0.17:
        c.heal()
    elif r < 0.25:
        c.disconnect(node)
    elif r < 0.33:
        c.connect(node)
    elif r < 0.41:
        if c.is_up(node):
            c.crash(node)
            st.crashes += 1
    elif r < 0.52 or (r < 0.55 and not bounce):
        if not c.is_up(node):
            c.restart(node)
            st.restarts += 1
    elif r < 0.55:
        c.restart(node)  # crash and come straight back
        st.restarts += 1
    elif r < 0.60:
        c.set_unreliable(rng.random() < 0.5)
    elif r < 0.63:
        c.set_long_reordering(rng.random() < 0.5)
    elif r < 0.66:
        c.set_duplication(rng.choice((0.0, 0.1, 0.3)))
