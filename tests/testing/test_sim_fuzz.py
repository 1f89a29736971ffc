"""Randomized fuzz of the Raft core on SimCluster (``raftpy.testing.fuzz``): 3, 5 and 7 nodes
under random partitions, disconnects, crashes, restarts, unreliable / duplicating /
long-reordering network toggles and proposals, for a few seconds of virtual time each; then
everything heals and restarts, a final command must commit on every node, and all nodes'
applied lists must agree. The simulator checks the safety invariants after every event
(InvariantViolation) on its own.

``test_fuzz_reads`` runs the same scripts and also issues linearizable reads (ReadIndex) at
random nodes, so stale leaders in minority partitions get reads too; the simulator checks every
answer against what was committed before the read began (``raftpy.testing.checkers``), and
after the repair the leader must answer a read. Its reads come from their own random stream:
they leave the script of ``test_fuzz``'s runs for the same seed unchanged, but do change the
cluster's run (a read sends heartbeats), so ``test_fuzz`` itself issues none.

``test_fuzz_swarm`` runs the swarm schedule: each seed enables a random subset of fault kinds
with random weights, among them leaders cut off or crashed moments after appending or after
winning, crashes right after a node's term, vote or log changed (on the real write-ahead log,
where unsynced writes are lost), crashes in the middle of an fsync, slow state machines,
membership changes, and watched isolations (CheckQuorum must depose a cut-off leader, PreVote
must keep a cut-off node's term); three seeds in four concentrate on one theme (leader
churn with split appends, election storms with crashes around votes, membership changes back
to back). The mutation runner (``python -m raftpy.testing.mutants``,
docs/mutants.md) shows what each schedule catches.

Seeds:
- default: seeds 0..119 on 3, 5 and 7 nodes (360 runs; test ids like ``n5-seed17``), seeds
  0..59 with reads (180 runs; ``n5-seed17-reads``) and swarm seeds 0..59 (180 runs;
  ``swarm-n5-s17``);
- ``RAFTPY_SEEDS=N``: seeds 0..N-1 instead, for each (on every size, or on
  ``RAFTPY_FUZZ_NODES``);
- ``RAFTPY_SEED=s``: just seed ``s``, on every size (or on ``RAFTPY_FUZZ_NODES=5`` / ``3,7``).
A failure names the seed and a one-line replay command.
"""

from __future__ import annotations

import os

import pytest

from raftpy.testing.fuzz import SIZES, Schedule, replay_command, run_fuzz

DEFAULT_SEEDS = 120
DEFAULT_READ_SEEDS = 60
DEFAULT_SWARM_SEEDS = 60


def _sizes() -> tuple[int, ...]:
    raw = os.environ.get("RAFTPY_FUZZ_NODES")
    if not raw:
        return SIZES
    return tuple(int(x) for x in raw.replace(" ", "").split(",") if x)


def _cases(default: int = DEFAULT_SEEDS) -> list[tuple[int, int]]:
    single = os.environ.get("RAFTPY_SEED")
    if single:
        return [(n, int(single)) for n in _sizes()]
    count = int(os.environ.get("RAFTPY_SEEDS", default))
    return [(n, seed) for seed in range(count) for n in _sizes()]


def _run(n: int, seed: int, reads: bool, schedule: Schedule = "classic") -> None:
    replay = replay_command(n, seed, reads, schedule)
    print(f"fuzz n={n} seed={seed} reads={reads} schedule={schedule}; replay: {replay}")
    try:
        run_fuzz(n, seed, reads=reads, schedule=schedule)
    except Exception as e:  # a safety violation, a failed check or a crash in the core
        raise AssertionError(
            f"fuzz failed for n={n} seed={seed} reads={reads} schedule={schedule}: "
            f"{type(e).__name__}: {e}\nreplay: {replay}"
        ) from e


@pytest.mark.parametrize(
    ("n", "seed"), [pytest.param(n, s, id=f"n{n}-seed{s}") for n, s in _cases()]
)
def test_fuzz(n: int, seed: int) -> None:
    _run(n, seed, reads=False)


@pytest.mark.parametrize(
    ("n", "seed"),
    [pytest.param(n, s, id=f"n{n}-seed{s}-reads") for n, s in _cases(DEFAULT_READ_SEEDS)],
)
def test_fuzz_reads(n: int, seed: int) -> None:
    _run(n, seed, reads=True)


@pytest.mark.parametrize(
    ("n", "seed"),
    [pytest.param(n, s, id=f"swarm-n{n}-s{s}") for n, s in _cases(DEFAULT_SWARM_SEEDS)],
)
def test_fuzz_swarm(n: int, seed: int) -> None:
    _run(n, seed, reads=False, schedule="swarm")


def test_default_suite_size() -> None:
    """The default suite runs at least 120 classic and 60 swarm seeds over all three sizes
    (skipped when the environment selects seeds)."""
    if os.environ.get("RAFTPY_SEED") or os.environ.get("RAFTPY_SEEDS"):
        pytest.skip("seed selection overridden by the environment")
    if os.environ.get("RAFTPY_FUZZ_NODES"):
        pytest.skip("sizes overridden by the environment")
    cases = _cases()
    assert len({seed for _, seed in cases}) >= 120
    assert len({seed for _, seed in _cases(DEFAULT_SWARM_SEEDS)}) >= 60
    assert {n for n, _ in cases} == set(SIZES)


@pytest.mark.parametrize("keep", [True, False])
def test_restart_keeps_messages_in_flight_only_when_asked(keep: bool) -> None:
    """``restart(i, keep_in_flight=True)`` (the swarm's fast reboots) delivers what was on its
    way to ``i`` to the new incarnation; a plain restart loses it."""
    from raftpy.testing.sim import SimCluster

    c = SimCluster(n=3, seed=5)
    leader = c.check_one_leader()
    c.run_for(0.1)
    follower = (leader + 1) % 3
    before = c.raft(follower).log.last_index()
    assert c.start(leader, b"in-flight")[2]
    c.restart(follower, keep_in_flight=keep)
    c.run_until_us(c.now_us + 1_500)  # one message delay; no heartbeat or retry yet
    got = c.raft(follower).log.last_index() > before
    assert got is keep


@pytest.mark.parametrize("mode", ["drop", "keep"])
def test_restart_power_loss_mode_is_chosen_when_asked(mode: str) -> None:
    """``restart(i, mode=...)`` (the swarm's correlated power losses) does that to the
    node's unsynced writes: ``drop`` loses a write that was never synced, ``keep`` keeps
    it."""
    from raftpy.testing.sim import SimCluster

    c = SimCluster(n=3, seed=5, storage="file")
    c.check_one_leader()
    disk = c.disk(1)
    f = disk.open("/node1/probe", create=True)
    f.write_at(0, b"synced.")
    f.datasync()
    disk.sync_dir("/node1")
    f.write_at(7, b"unsynced")
    c.restart(1, mode="drop" if mode == "drop" else "keep")
    expected = b"synced.unsynced" if mode == "keep" else b"synced."
    assert disk.open("/node1/probe").read_at(0, 64) == expected
