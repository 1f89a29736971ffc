"""Snapshots, log compaction and InstallSnapshot on SimCluster (MIT 6.824 lab 2D style), in
virtual time.

``snapshot_every=k`` makes every node snapshot its state machine once it applied ``k`` entries
past its last snapshot and compact its log; a follower that needs compacted entries gets the
leader's snapshot through the chunked transfer of :mod:`raftpy.node.transfer`. The
simulator checks the safety invariants after every event and, on every restore, that the
snapshot holds exactly what was committed (InvariantViolation otherwise). Fixed seeds; a
failure message starts with ``[seed=S t=T]`` and the test replays it as is.
"""

from __future__ import annotations

import random

import pytest

from raftpy.core.messages import EntryKind
from raftpy.storage.fs import CrashMode, SimulatedCrash
from raftpy.testing.sim import SimCluster

CMD_BYTES = 12  # b"cmd-00000000"


def tag(c: SimCluster, text: str) -> str:
    return f"[seed={c.seed} t={c.now:.3f}s] {text}"


def cmd(k: int) -> bytes:
    return f"cmd-{k:08d}".encode()


def snapshot_index(c: SimCluster, i: int) -> int:
    return c.raft(i).log.storage.first_index() - 1


def wait_applied_equal(c: SimCluster, timeout: float = 10.0) -> None:
    """Run until every up node applied the same list (snapshot-held part included)."""
    deadline = c.now + timeout
    while True:
        lists = {tuple(c.applied(i)) for i in range(c.n) if c.is_up(i)}
        if len(lists) == 1:
            return
        assert c.now < deadline, tag(
            c, f"applied lists differ after {timeout} s: {[len(c.applied(i)) for i in range(c.n)]}"
        )
        c.run_for(0.02)


def expected_commands(c: SimCluster, i: int) -> list[bytes]:
    return [command for _, command in c.applied(i)]


def check_size_bound(c: SimCluster, k: int) -> None:
    """The documented bound (SimCluster docstring): once a node applied everything it holds,
    its log has at most k - 1 entries past its snapshot."""
    limit = 24 + (k - 1) * (16 + CMD_BYTES)
    for i in range(c.n):
        if c.is_up(i):
            size = c.persisted_size(i)
            assert size <= limit, tag(c, f"node {i} persists {size} bytes > bound {limit}")


@pytest.mark.parametrize("storage", ["memory", "file"])
def test_snapshots_without_faults(storage: str) -> None:
    """Every node snapshots and compacts; all keep agreeing; the bound on persisted state
    holds after every command."""
    k = 10
    c = SimCluster(n=3, seed=1, snapshot_every=k, storage=storage)  # type: ignore[arg-type]
    c.check_one_leader()
    for j in range(120):
        c.one(cmd(j), expected_servers=3)
        if storage == "memory":
            check_size_bound(c, k)
    wait_applied_equal(c)
    for i in range(3):
        assert expected_commands(c, i) == [cmd(j) for j in range(120)], tag(c, f"node {i}")
        assert snapshot_index(c, i) >= 100, tag(c, f"node {i} never compacted")
    assert c.snapshots_taken >= 3 * 10
    assert c.snapshots_installed == 0, tag(c, "nobody lagged, yet a snapshot was sent")


@pytest.mark.parametrize("unreliable", [False, True])
def test_cut_off_follower_catches_up_by_snapshot(unreliable: bool) -> None:
    """A follower misses many entries that the others compact away; after reconnecting it can
    only catch up by installing the leader's snapshot (several chunks, lossy or not)."""
    c = SimCluster(n=3, seed=2 + unreliable, snapshot_every=10, snapshot_chunk_bytes=256)
    leader = c.check_one_leader()
    lagger = (leader + 1) % 3
    c.one(cmd(0), expected_servers=3)
    c.disconnect(lagger)
    c.set_unreliable(unreliable)
    for j in range(1, 80):
        c.one(cmd(j), expected_servers=2)
    leader = c.check_one_leader()
    assert snapshot_index(c, leader) > c.raft(lagger).log.last_index(), tag(
        c, "the leader still holds the entries the follower lacks: no snapshot needed"
    )
    c.connect(lagger)
    c.one(cmd(80), expected_servers=3)
    wait_applied_equal(c)
    assert c.snapshots_installed >= 1, tag(c, "the follower caught up without a snapshot")
    assert expected_commands(c, lagger) == [cmd(j) for j in range(81)]
    # The follower's log after the install is consistent with the leader's.
    lead = c.raft(c.check_one_leader()).log
    mine = c.raft(lagger).log
    for index in range(max(lead.first_index(), mine.first_index()), mine.last_index() + 1):
        assert mine.term(index) == lead.term(index), tag(c, f"logs differ at {index}")


def test_snapshot_transfer_with_long_reordering_and_duplicates() -> None:
    """Old chunks and answers arriving late or twice never corrupt the installed state."""
    c = SimCluster(n=3, seed=11, snapshot_every=5, snapshot_chunk_bytes=64)
    leader = c.check_one_leader()
    lagger = (leader + 2) % 3
    c.disconnect(lagger)
    for j in range(60):
        c.one(cmd(j), expected_servers=2)
    c.set_long_reordering(True)
    c.set_duplication(0.3)
    c.set_unreliable(True)
    c.connect(lagger)
    c.one(cmd(60), expected_servers=3)
    c.set_long_reordering(False)
    c.set_duplication(0.0)
    c.set_unreliable(False)
    wait_applied_equal(c, timeout=20.0)
    assert c.snapshots_installed >= 1
    assert expected_commands(c, lagger) == [cmd(j) for j in range(61)]


@pytest.mark.parametrize("storage", ["memory", "file"])
def test_crashed_follower_catches_up_by_snapshot(storage: str) -> None:
    c = SimCluster(n=3, seed=4, snapshot_every=10, storage=storage)  # type: ignore[arg-type]
    leader = c.check_one_leader()
    victim = (leader + 1) % 3
    c.one(cmd(0), expected_servers=3)
    c.crash(victim)
    for j in range(1, 60):
        c.one(cmd(j), expected_servers=2)
    c.restart(victim)
    c.one(cmd(60), expected_servers=3)
    wait_applied_equal(c)
    assert c.snapshots_installed >= 1
    assert expected_commands(c, victim) == [cmd(j) for j in range(61)]


@pytest.mark.parametrize("storage", ["memory", "file"])
def test_all_crash_and_restart_from_snapshot_and_log_tail(storage: str) -> None:
    """Every node crashes and restarts from its snapshot plus the log after it: nothing
    acknowledged is lost, and no node's applied index or applied list goes backwards."""
    c = SimCluster(n=3, seed=5, snapshot_every=10, storage=storage)  # type: ignore[arg-type]
    c.check_one_leader()
    total = 0
    for rnd in range(5):
        for _ in range(13 + rnd):  # not a multiple of 10: a log tail stays after the snapshot
            c.one(cmd(total), expected_servers=3)
            total += 1
        before = {i: c.applied(i) for i in range(3)}
        snaps = {i: snapshot_index(c, i) for i in range(3)}
        for i in range(3):
            c.crash(i)
        for i in range(3):
            c.restart(i)
        for i in range(3):
            # Right after the restart (before any message), the node holds its snapshot's
            # state, never less than it had snapshotted.
            restored = c.applied(i)
            assert restored == before[i][: len(restored)], tag(c, f"node {i} restored garbage")
            assert (restored[-1][0] if restored else 0) <= snaps[i]
            assert snapshot_index(c, i) == snaps[i], tag(c, f"node {i} lost its snapshot")
        c.one(cmd(total), expected_servers=3)
        total += 1
        wait_applied_equal(c)
        for i in range(3):
            got = c.applied(i)
            assert got[: len(before[i])] == before[i], tag(c, f"node {i} went backwards")
    assert expected_commands(c, 0) == [cmd(j) for j in range(total)]


@pytest.mark.parametrize("storage", ["memory", "file"])
def test_snapshot_survives_later_state_writes(storage: str) -> None:
    """A snapshot taken once stays the base of the state after many later hard-state and
    entry writes (votes, terms, appends that do not reach the next snapshot)."""
    c = SimCluster(n=3, seed=6, snapshot_every=20, storage=storage)  # type: ignore[arg-type]
    c.check_one_leader()
    for j in range(25):
        c.one(cmd(j), expected_servers=3)
    snaps = [snapshot_index(c, i) for i in range(3)]
    assert min(snaps) >= 20
    # Later state writes: elections (term and vote) and a few entries below the next snapshot.
    for rnd in range(3):
        leader = c.check_one_leader()
        c.disconnect(leader)
        c.check_one_leader()
        c.connect(leader)
        c.one(cmd(25 + rnd), expected_servers=3)
    assert [snapshot_index(c, i) for i in range(3)] == snaps, tag(c, "a new snapshot was taken")
    for i in range(3):
        c.crash(i)
    for i in range(3):
        c.restart(i)
        assert snapshot_index(c, i) == snaps[i], tag(c, f"node {i} lost its snapshot")
        # Index 1 is the first leader's no-op; commands follow. The restored list is exactly
        # the commands up to the snapshot index (the last entry there may be a no-op).
        restored = c.applied(i)
        assert expected_commands(c, i) == [cmd(j) for j in range(len(restored))]
        assert restored and restored[-1][0] >= snaps[i] - 1, tag(
            c, f"node {i} did not restore its snapshot: {restored[-3:]}"
        )
    c.one(cmd(28), expected_servers=3)
    wait_applied_equal(c)
    assert expected_commands(c, 1) == [cmd(j) for j in range(29)]


def test_snapshot_every_one_under_churn() -> None:
    """The extreme setting: a snapshot after every entry, with crashes and partitions."""
    c = SimCluster(n=5, seed=8, snapshot_every=1, snapshot_chunk_bytes=128)
    total = 0
    for rnd in range(6):
        leader = c.check_one_leader()
        c.partition(
            [
                [leader, (leader + 1) % 5],
                [i for i in range(5) if i not in (leader, (leader + 1) % 5)],
            ]
        )
        c.run_for(0.5)
        c.heal()
        c.crash((leader + 2 + rnd) % 5)
        for _ in range(7):
            c.one(cmd(total), expected_servers=4)
            total += 1
        c.restart((leader + 2 + rnd) % 5)
    c.one(cmd(total), expected_servers=5)
    total += 1
    wait_applied_equal(c)
    assert expected_commands(c, 0) == [cmd(j) for j in range(total)]
    assert c.snapshots_installed >= 1


def test_snapshot_holds_membership_and_noops_are_not_commands() -> None:
    """The snapshot's metadata names the membership in force; only commands reach applied()."""
    c = SimCluster(n=3, seed=9, snapshot_every=5)
    leader = c.check_one_leader()
    for j in range(12):
        c.one(cmd(j), expected_servers=3)
    meta = c.raft(leader).log.storage.snapshot_meta()
    assert meta.index >= 10 and meta.conf.voters == (0, 1, 2)
    log = c.raft(leader).log
    assert log.term(meta.index) == meta.term
    kinds = {e.kind for e in log.entries(log.first_index(), log.last_index() + 1)}
    assert kinds <= {EntryKind.COMMAND, EntryKind.NOOP}


def test_snapshot_every_validation() -> None:
    with pytest.raises(ValueError, match="snapshot_every"):
        SimCluster(n=3, snapshot_every=0)


MODES: tuple[CrashMode, ...] = ("drop", "torn", "partial", "keep")


@pytest.mark.parametrize("seed", range(16))
def test_power_loss_at_any_sync_while_snapshotting(seed: int) -> None:
    """File mode, a snapshot every 3 entries, so many syncs belong to snapshot writes, log
    compactions and installs: a power loss at a random sync of a random node (torn, dropped or
    partly kept writes) leaves that node with its old state or its new one, never a mix. The
    simulator's invariants hold throughout, every acknowledged command survives, and the
    cluster converges. Replay: the seed is the test id."""
    rng = random.Random(seed)
    c = SimCluster(n=3, seed=seed, snapshot_every=3, storage="file", snapshot_chunk_bytes=64)
    c.check_one_leader()
    acknowledged: dict[int, bytes] = {}
    total = fired = 0
    for rnd in range(8):
        victim = rng.randrange(3)
        cut = rng.randrange(3) if rnd % 2 else None  # a lagging node needs an install
        if cut is not None and cut != victim:
            c.disconnect(cut)
        c.disk(victim).crash_on_next_sync(rng.choice(MODES), after=rng.randrange(12))
        try:
            for _ in range(8):
                index = c.one(cmd(total), expected_servers=2)
                acknowledged[index] = cmd(total)
                total += 1
            if cut is not None:
                c.connect(cut)
                c.run_for(1.0)
        except SimulatedCrash:
            fired += 1
            total += 1  # that command's fate is unknown
        c.heal()
        c.crash(victim)  # also disarms a crash that did not fire
        c.restart(victim)
    final = c.one(b"final", expected_servers=3)
    wait_applied_equal(c, timeout=20.0)
    log = dict(c.applied(0))
    assert log[final] == b"final"
    for index, command in acknowledged.items():
        assert log.get(index) == command, tag(c, f"acknowledged {command!r} at {index} lost")
    assert fired >= 1, tag(c, "no injected crash fired: the test tests nothing")
