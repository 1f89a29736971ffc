"""Randomized fuzz of the Raft core on SimCluster: 3, 5 and 7 nodes under random partitions,
disconnects, crashes, restarts, unreliable / duplicating / long-reordering network toggles and
proposals, for a few seconds of virtual time each; then everything heals and restarts, a final
command must commit on every node, and all nodes' applied lists must agree. The simulator checks
the safety invariants after every event (InvariantViolation) on its own.

``test_fuzz_reads`` runs the same scripts and also issues linearizable reads (ReadIndex) at
random nodes, so stale leaders in minority partitions get reads too; the simulator checks every
answer against what was committed before the read began (``raftpy.testing.checkers``), and
after the repair the leader must answer a read. Its reads come from their own random stream:
they leave the script of ``test_fuzz``'s runs for the same seed unchanged, but do change the
cluster's run (a read sends heartbeats), so ``test_fuzz`` itself issues none.

Seeds:
- default: seeds 0..199, each on 3, 5 and 7 nodes (600 runs; test ids like ``n5-seed17``),
  and seeds 0..99 with reads (300 runs; ``n5-seed17-reads``);
- ``RAFTPY_SEEDS=N``: seeds 0..N-1 instead (on every size, or on ``RAFTPY_FUZZ_NODES``);
- ``RAFTPY_SEED=s``: just seed ``s``, on every size (or on ``RAFTPY_FUZZ_NODES=5`` / ``3,7``).
A failure names the seed and a one-line replay command.
"""

from __future__ import annotations

import os

import pytest

from raftpy.testing.fuzz import SIZES, Schedule, replay_command, run_fuzz

DEFAULT_SEEDS = 200
DEFAULT_READ_SEEDS = 100
DEFAULT_SWARM_SEEDS = 100


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
    """The default suite runs at least 200 seeds over all three sizes (skipped when the
    environment selects seeds)."""
    if os.environ.get("RAFTPY_SEED") or os.environ.get("RAFTPY_SEEDS"):
        pytest.skip("seed selection overridden by the environment")
    if os.environ.get("RAFTPY_FUZZ_NODES"):
        pytest.skip("sizes overridden by the environment")
    cases = _cases()
    assert len({seed for _, seed in cases}) >= 200
    assert {n for n, _ in cases} == set(SIZES)
