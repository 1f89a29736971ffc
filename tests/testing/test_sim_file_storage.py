"""SimCluster on the real write-ahead log over a fault-injecting disk (storage="file").

Every crash here is a simulated power loss: unsynced writes are dropped, torn at a random
byte or partly kept, and the restart runs FileStorage's real recovery. The simulator's
invariants (term and commit never go back past what was synced, log matching, leader
completeness, state machine safety) run throughout.
"""

from __future__ import annotations

import os
import random

import pytest

from raftpy.testing.sim import SimCluster

SEEDS = range(int(os.environ.get("RAFTPY_FILE_SEEDS", "30")))


def _replay(seed: int) -> str:
    return f"replay: .venv/bin/pytest tests/testing/test_sim_file_storage.py -k 'seed{seed}]'"


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"seed{s}")
def test_crash_restart_churn_on_file_storage_keeps_every_committed_command(seed: int) -> None:
    print(f"seed={seed}")
    rng = random.Random(seed)
    # Odd seeds also snapshot every 4 entries: crashes then hit snapshot files, compactions
    # that delete segments, restarts from snapshots and installs on the real recovery code.
    snapshot_every = None if seed % 2 == 0 else 4
    c = SimCluster(n=5, seed=seed, storage="file", segment_size=8192, snapshot_every=snapshot_every)
    confirmed: list[tuple[int, bytes]] = []
    for k in range(40):
        cmd = b"cmd-%d-%d" % (seed, k)
        confirmed.append((c.one(cmd, expected_servers=3), cmd))
        roll = rng.random()
        if roll < 0.25:
            victim = rng.randrange(5)
            c.crash(victim)
            c.run_for(rng.uniform(0.0, 0.5))
            c.restart(victim)
        elif roll < 0.35:
            leader = c.leader()
            if leader is not None:
                c.crash(leader)
                c.run_for(0.3)
                c.restart(leader)
    for i in range(5):
        c.crash(i)
    for i in range(5):
        c.restart(i)
    final = c.one(b"final", expected_servers=5)
    for i in range(5):
        log = dict(c.applied(i))
        for index, cmd in confirmed:
            assert log.get(index) == cmd, f"node {i} lost {cmd!r} at {index}; {_replay(seed)}"
        assert log[final] == b"final", _replay(seed)
    assert c.applied(0) == c.applied(4), _replay(seed)


def test_file_storage_segments_roll_over_and_recover() -> None:
    """Small segments force many segment files; a full restart reads them all back."""
    c = SimCluster(n=3, seed=3, storage="file", segment_size=4096)
    indexes = [c.one(b"x" * 200 + b"%d" % k) for k in range(60)]
    assert c.persisted_size(0) > 4096 * 2  # more than two segments' worth of records
    for i in range(3):
        c.crash(i)
    for i in range(3):
        c.restart(i)
    c.one(b"after")
    applied = dict(c.applied(1))
    for k, index in enumerate(indexes):
        assert applied[index] == b"x" * 200 + b"%d" % k


def test_file_mode_is_deterministic() -> None:
    def run() -> tuple[list[tuple[int, bytes]], int, int]:
        c = SimCluster(n=3, seed=11, storage="file")
        for k in range(10):
            c.one(b"%d" % k)
            c.crash(k % 3)
            c.restart(k % 3)
        c.one(b"end")
        return c.applied(0), c.rpc_count(), c.bytes_sent()

    assert run() == run()


def test_file_mode_with_snapshots_is_deterministic() -> None:
    def run() -> tuple[list[tuple[int, bytes]], int, int, int]:
        c = SimCluster(n=3, seed=12, storage="file", snapshot_every=3, snapshot_chunk_bytes=64)
        for k in range(12):
            c.one(b"%d" % k)
            c.crash(k % 3)
            c.run_for(0.3)
            c.restart(k % 3)
        c.one(b"end")
        return c.applied(0), c.rpc_count(), c.bytes_sent(), c.snapshots_installed

    first = run()
    assert first == run()
    assert first[3] >= 1, "no snapshot was installed: the test does not cover installs"


def test_unknown_storage_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="storage must be"):
        SimCluster(n=3, storage="disk")  # type: ignore[arg-type]
