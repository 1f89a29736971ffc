"""What both schedules of the simulator fuzz (:mod:`raftpy.testing.fuzz`) share: the commands
clients propose and the statistics a run reports, the linearizable reads, the membership
steps (Thesis §4), and the repair with the end checks that decide whether a run passed
(progress after healing, every node's applied list the same, nothing applied before the
repair lost, and a read answered at or past the final command)."""

from __future__ import annotations

import dataclasses
import random

from raftpy.core.confchange import ConfChange, ConfChangeKind, ConfChangeSingle
from raftpy.errors import ConfChangeError, IndeterminateError
from raftpy.testing.sim import SimCluster
from raftpy.testing.sim_members import sim_address

__all__ = [
    "Stats",
    "command",
    "members_step",
    "propose",
    "random_groups",
    "repair_and_check",
    "require_a_read",
    "restore_members",
    "run_with_reads",
    "wait_caught_up",
]


def random_groups(rng: random.Random, n: int) -> list[list[int]]:
    """A random split of ``0..n-1`` into two or three non-empty groups."""
    nodes = list(range(n))
    rng.shuffle(nodes)
    cuts = sorted(rng.sample(range(1, n), rng.choice((1, 1, 2)) if n > 2 else 1))
    groups: list[list[int]] = []
    prev = 0
    for cut in [*cuts, n]:
        groups.append(nodes[prev:cut])
        prev = cut
    return groups


@dataclasses.dataclass
class Stats:
    crashes: int = 0
    restarts: int = 0
    partitions: int = 0
    proposals: int = 0
    sync_crashes: int = 0
    leader_cuts: int = 0
    changes: int = 0
    watched: int = 0
    committed: int = 0

    def __str__(self) -> str:
        text = (
            f"{self.crashes} crashes, {self.restarts} restarts, {self.partitions} partitions, "
            f"{self.proposals} proposals, {self.committed} committed before repair"
        )
        if self.sync_crashes or self.leader_cuts or self.changes or self.watched:
            text += (
                f", {self.sync_crashes} fsync crashes, {self.leader_cuts} leader cuts, "
                f"{self.changes} membership changes, {self.watched} watched isolations"
            )
        return text


def command(n: int, seed: int, number: int, rng: random.Random, pad: int) -> bytes:
    """Client command ``number`` of this run: unique, padded with up to ``pad`` bytes."""
    text = b"n%d-s%d-%d" % (n, seed, number)
    return text + b"." * rng.randrange(pad + 1) if pad else text


def propose(c: SimCluster, rng: random.Random, seed: int, st: Stats, k: int, pad: int = 0) -> None:
    """``k`` clients propose, each at whichever node accepts first in a random order (a stale
    leader may accept too); ``st.proposals`` numbers the commands."""
    n = c.n
    for _ in range(k):
        order = list(range(n))
        rng.shuffle(order)
        for i in order:
            seq = st.proposals
            if rng.random() < 0.2:
                size = rng.randrange(1, 5)
                batch = [command(n, seed, seq + j, rng, pad) for j in range(size)]
                ok = c.start_batch(i, batch) >= 0
            else:
                ok = c.start(i, command(n, seed, seq, rng, pad))[2]
                size = 1
            if ok:
                st.proposals += size
                break


def repair_and_check(
    c: SimCluster, seed: int, reads: bool, st: Stats, catch_up: float = 0.0
) -> None:
    """Heal everything, then require progress, agreement and that nothing applied before the
    repair was lost. ``catch_up``: virtual seconds the healed cluster may take to bring every
    node up to the leader's commit index before the final command's 10 s start (a lagging
    node may need a snapshot: in chunks of 64 bytes over a reordering network that takes
    seconds, see docs/mutants.md)."""
    n = c.n
    # Whatever any node applied was committed: it must survive in every final log.
    committed: dict[int, bytes] = {}
    for i in range(n):
        if c.is_up(i):
            committed.update(c.applied(i))
    st.committed = len(committed)
    c.set_unreliable(False)
    c.set_jitter(0.0)
    c.set_long_reordering(False)
    c.set_duplication(0.0)
    c.heal()
    for i in range(n):
        if not c.is_up(i):
            c.restart(i)
        c.hold_applies(i, False)
    if st.changes:
        restore_members(c, seed)
    wait_caught_up(c, catch_up)
    final = b"final-n%d-s%d" % (n, seed)
    index = c.one(final, n)
    stats = str(st)
    if reads:
        answered = sum(len(c.read_states(i)) for i in range(n))
        stats += f", {answered} reads answered"
        require_a_read(c, index, f"[seed={seed} n={n}] ({stats})")
    first = c.applied(0)
    assert first and first[-1] == (index, final), (
        f"[seed={seed} n={n}] node 0's log does not end with the final command: {first[-3:]}"
    )
    for i in range(1, n):
        assert c.applied(i) == first, (
            f"[seed={seed} n={n}] node {i}'s applied list differs from node 0's ({stats})"
        )
    log = dict(first)
    for idx, cmd in committed.items():
        assert log.get(idx) == cmd, (
            f"[seed={seed} n={n}] {cmd!r} was applied at {idx} but the final log has "
            f"{log.get(idx)!r} ({stats})"
        )


def wait_caught_up(c: SimCluster, seconds: float) -> None:
    """Run until every node applied the leader's commit index, for at most ``seconds``."""
    deadline = c.now + seconds
    while c.now < deadline:
        leader = c.leader()
        if leader is not None:
            commit = c.raft(leader).log.committed
            if all(c.raft(i).log.applied >= commit for i in range(c.n)):
                return
        c.run_for(0.25)


def run_with_reads(
    c: SimCluster, rng: random.Random, wait_us: int, read_terms: set[tuple[int, int]]
) -> None:
    """Run ``wait_us`` of virtual time in short slices, issuing reads between them: at once
    at every node that newly believes it leads (a new leader may not yet know the commit
    index, Thesis §6.4), and at random nodes, stale leaders included. ``read_terms`` holds
    the ``(node, term)`` pairs already read at."""
    end = c.now_us + wait_us
    while c.now_us < end:
        c.run_until_us(min(end, c.now_us + rng.randrange(200, 5_000)))
        for i in range(c.n):
            term, leads = c.state(i)
            if leads and (i, term) not in read_terms:
                read_terms.add((i, term))
                c.read_index(i)
        if rng.random() < 0.2:
            c.read_index(rng.randrange(c.n))


def require_a_read(c: SimCluster, index: int, tag: str) -> None:
    """Once the cluster is whole again, its leader answers a read at ``index`` or later."""
    for _ in range(5):
        leader = c.check_one_leader()
        context = c.read_index(leader)
        c.run_for(0.5)
        for rs in c.read_states(leader):
            if rs.context == context:
                assert rs.index >= index, f"{tag} read {context!r} at {rs.index} < {index}"
                return
    raise AssertionError(f"{tag} no read was answered after the repair")


def members_step(
    c: SimCluster, rng: random.Random, st: Stats, timeout: float = 0.0, joint: float = 0.0
) -> None:
    """One membership change (Thesis §4), driven to its end or to a short deadline: promote a
    learner, add a non-member back (as a learner or a voter), remove a voter (the leader
    too), keeping at least two voters, or (with probability ``joint``) swap a voter for a
    learner or a non-member in one change through joint consensus (Thesis §4.3)."""
    voters, learners = c.members()
    timeout = timeout or rng.uniform(0.2, 1.5)
    outsiders = [i for i in range(c.n) if i not in voters and i not in learners]
    r = rng.random()
    st.changes += 1  # counted first: a crash in the middle (SimulatedCrash) still counts
    try:
        if rng.random() < joint and len(voters) > 2 and (learners or outsiders):
            new = rng.choice([*learners, *outsiders])
            if not c.is_up(new):
                c.restart(new)
            out = rng.choice(voters)
            cc = ConfChange(
                (
                    ConfChangeSingle(ConfChangeKind.REMOVE_NODE, out),
                    ConfChangeSingle(ConfChangeKind.ADD_VOTER, new, sim_address(new)),
                )
            )
            c.change(cc, force=rng.random() < 0.5, timeout=timeout)
        elif learners and r < 0.5:
            c.promote(rng.choice(learners), timeout=timeout)
        elif outsiders and r < 0.8:
            i = rng.choice(outsiders)
            if not c.is_up(i):
                c.restart(i)
            c.add_member(i, voter=rng.random() < 0.3, timeout=timeout)
        elif len(voters) > 2:
            c.remove_member(rng.choice(voters), timeout=timeout)
    except (ConfChangeError, IndeterminateError):
        pass  # refused, or blocked by the faults (it may still commit later)


def restore_members(c: SimCluster, seed: int) -> None:
    """After the repair, make every node a voter again, so the final checks cover all."""
    n = c.n
    for attempt in range(20):
        # Let the leader hear from the restarted voters first: it refuses a change after
        # which the voters it heard from lately would not be a majority.
        leader = c.check_one_leader(timeout=10.0)
        c.run_for(0.5)
        log = c.raft(leader).log
        if log.confs.pending(log.committed):
            continue  # a change is still in flight: its outcome decides who is missing
        voters, learners = c.members()
        missing = [i for i in range(n) if i not in voters]
        if not missing:
            return
        i = missing[attempt % len(missing)]
        try:
            if i in learners:
                # A learner still catching up is promoted without waiting after a while.
                c.promote(i, force=attempt >= 4, timeout=10.0)
            else:
                c.add_member(i, timeout=10.0)  # a learner first: it may lag far behind
        except (ConfChangeError, IndeterminateError):
            pass
    voters, learners = c.members()
    raise AssertionError(
        f"[seed={seed} n={n}] the repaired cluster did not take every node back as a voter: "
        f"voters {voters}, learners {learners}"
    )
