"""The nemesis of the whole-stack simulation: which faults there are and how each is injected
into a :class:`~raftpy.testing.stack_sim.StackCluster` (its module docstring says what each
fault does and what the node must do about it).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final

from raftpy.errors import RaftError
from raftpy.node.config import NodeConfig
from raftpy.storage.fs import CrashMode

if TYPE_CHECKING:
    from raftpy.testing.stack_sim import StackCluster

CLIENT_ENDS: Final = 1000
"""Client ``k`` (from 0) sits on network end ``CLIENT_ENDS + k``: partitions split clients too."""
FAULT_KINDS: Final = (
    "partition",
    "loss",
    "duplicate",
    "reorder",
    "crash",
    "torn",
    "fsync",
    "disk_full",
    "slow_disk",
    "clock_jump",
    "clock_drift",
    "corrupt_read",
    "damage",
    "member",
)


POWER_LOSS: Final = 0.3
"""The share of ``crash`` faults that are a power loss of a majority or of every member at
once (:meth:`Nemesis._power_loss`) rather than of one node."""

OUTCOMES: Final = ("reread", "refused", "replaced")
"""What the simulated supervisor did about damage, counted beside the faults: started a node
again after a corrupted read made it refuse, kept one down whose disk was damaged, replaced
one (see :meth:`StackCluster.start_node`)."""


@dataclass(frozen=True, slots=True)
class StackFaults:
    """Which faults the nemesis may inject (see the module docstring), and how often it acts
    (``interval``: mean virtual seconds between two faults). ``swarm``: each seed enables a
    random subset of the kinds allowed here, so that some runs mix few faults deeply."""

    kinds: frozenset[str] = frozenset(FAULT_KINDS)
    interval: float = 1.0
    swarm: bool = True

    @classmethod
    def none(cls) -> StackFaults:
        return cls(frozenset())

    @classmethod
    def only(cls, *kinds: str) -> StackFaults:
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
        return cls(frozenset(kinds), swarm=False)


def _checksummed(path: str) -> bool:
    """Whether a file of a data dir carries checksums (the log's segments, snapshot files):
    the files whose reads the nemesis corrupts. ``IDENTITY`` and ``PEERS`` have none."""
    return path.endswith(".wal") or "/snapshots/" in path


def drift_bound(config: NodeConfig) -> float:
    """How far from true speed the nemesis sets a node's clock rate: a quarter of what the
    lease promises to tolerate (README.md, "Reads": no member's clock may run ahead of the
    leader's by more than ``max_clock_drift`` over an election timeout), so that two clocks
    differ by at most half of it."""
    election = config.raft.election_ticks * config.tick_seconds
    return config.max_clock_drift / election / 4


class Nemesis:
    """Injects faults into ``cluster`` (one :meth:`inject` per fault)."""

    def __init__(self, cluster: StackCluster) -> None:
        self.c = cluster

    async def inject(self, kind: str, rng: random.Random) -> None:
        ids = sorted(self.c.members)
        if kind in ("partition", "loss", "duplicate", "reorder"):
            self._inject_network(kind, rng)
        elif kind in ("clock_jump", "clock_drift"):
            self._inject_clock(kind, rng)
        elif kind in ("corrupt_read", "damage"):
            await self._corrupt(kind, rng)
        elif kind == "member":
            await self._replace(rng)
        elif kind == "crash" and len(ids) > 1 and rng.random() < POWER_LOSS:
            await self._power_loss(rng, ids)
        elif kind in ("crash", "torn"):
            victim = rng.choice(ids)
            modes: tuple[CrashMode, ...] = ("drop",) if kind == "crash" else ("torn", "partial")
            mode = rng.choice(modes)
            if kind == "torn" and rng.random() < 0.5:
                # A power loss in the middle of a sync; the node dies there (the watcher
                # restarts it from what the crash left).
                self.c.members[victim].disk.crash_on_next_sync(mode, after=rng.randrange(3))
                return
            m = self.c.members[victim]
            async with m.busy:
                await self.c.crash(victim, mode)
            await asyncio.sleep(rng.uniform(0.0, 2.0))
            async with m.busy:
                if m.node is None and m.refused is None:
                    m.restarts += 1
                    await self.c.start_node(victim)
        elif kind == "fsync":
            self.c.members[rng.choice(ids)].disk.fail_next_fsync()
        elif kind == "disk_full":
            disk = self.c.members[rng.choice(ids)].disk
            disk.set_capacity(disk.used_bytes() + rng.randrange(0, 8192))
            loop = asyncio.get_running_loop()
            loop.call_later(rng.uniform(0.2, 3.0), disk.set_capacity, None)
        elif kind == "slow_disk":
            disk = self.c.members[rng.choice(ids)].disk
            disk.slow = rng.choice((0.0, 0.02, 0.2))

    async def _power_loss(self, rng: random.Random, ids: list[int]) -> None:
        """A majority, sometimes every member, loses power at the same instant: each loses
        what it had not synced, all at once. One crash at a time cannot take an
        acknowledged write from a majority, so only correlated crashes expose a node that
        answers before its write is durable (Raft Figure 2: persist before responding)."""
        victims = sorted(rng.sample(ids, rng.choice((len(ids) // 2 + 1, len(ids)))))
        members = [self.c.members[v] for v in victims]
        for m in members:  # in id order, as every other holder takes one: no deadlock
            await m.busy.acquire()
        try:
            down = []
            for m in members:  # the instant itself: nothing runs in between
                endpoint = self.c.net.endpoints.get(m.node_id)
                if endpoint is not None:
                    endpoint.kill()
                m.disk.crash("drop")
                node, m.node = m.node, None
                if node is not None:
                    down.append(node)
            for node in down:
                with contextlib.suppress(Exception):  # its files are gone from under it
                    await node.stop()
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            for m in members:
                if m.node is None and m.refused is None:
                    m.restarts += 1
                    await self.c.start_node(m.node_id)
        finally:
            for m in members:
                m.busy.release()

    def _inject_network(self, kind: str, rng: random.Random) -> None:
        net = self.c.net
        if kind == "partition":
            if self.c.loop.true_time() < self.c.isolated_until:
                return  # an isolated leader stays cut off long enough for a new one to rise
            if rng.random() < 0.3:
                net.heal()
                return
            clients = list(range(CLIENT_ENDS, CLIENT_ENDS + self.c.client_count))
            leader = self.c.leader()
            if leader is not None and rng.random() < 0.4:
                self._isolate(leader.node_id, clients, rng)
                return
            shuffled = [*sorted(self.c.members), *clients]
            rng.shuffle(shuffled)
            cut = rng.randrange(1, len(shuffled))
            net.partition(set(shuffled[:cut]), set(shuffled[cut:]))
        elif kind == "loss":
            net.faults = replace(net.faults, loss=rng.choice((0.0, 0.05, 0.2, 0.5)))
        elif kind == "duplicate":
            net.faults = replace(net.faults, duplicate=rng.choice((0.0, 0.05, 0.3)))
        elif kind == "reorder":
            net.faults = replace(
                net.faults, reorder=not net.faults.reorder, max_delay=rng.choice((0.002, 0.05))
            )

    def _inject_clock(self, kind: str, rng: random.Random) -> None:
        ids = sorted(self.c.members)
        if kind == "clock_jump":
            # One machine stops (a paused virtual machine, a long collection); on resuming
            # its monotonic clock has leapt ahead and every timer is overdue. The leader
            # half the time: its lease and its belief that it leads are what a pause puts to
            # the test. Now and then the whole host stops instead.
            r = rng.random()
            if r < 0.2:
                self.c.loop.advance(rng.uniform(0.05, 2.0))
            else:
                leader = self.c.leader()
                victim = leader.node_id if leader is not None and r < 0.6 else rng.choice(ids)
                self.c.loop.pause(self.c.members[victim].clock, rng.uniform(0.05, 2.0))
        else:
            # A clock running fast or slow, within the bound the lease relies on (drift_bound).
            clock = self.c.members[rng.choice(ids)].clock
            clock.set_rate(self.c.loop.true_time(), 1.0 + rng.uniform(-self.c.drift, self.c.drift))

    def _isolate(self, leader: int, clients: list[int], rng: random.Random) -> None:
        """Cut the leader off from every other node, some clients still with it: until it
        steps down it must not answer them what the others have overwritten. Half the time
        it stalls too (before the cut or during it): the others elect a leader and move on,
        and it resumes with its timers late, as sure as ever that it leads."""
        rng.shuffle(clients)
        cut = rng.randrange(1, max(2, len(clients)))
        rest = {i for i in self.c.members if i != leader}
        near, far = {leader, *clients[:cut]}, {*rest, *clients[cut:]}
        now = self.c.loop.true_time()
        self.c.isolated_until = now + rng.uniform(1.0, 3.0)
        r = rng.random()
        if r < 0.5:
            self.c.net.partition(near, far)
            return
        stall = rng.uniform(0.3, 1.5)
        self.c.loop.pause(self.c.members[leader].clock, stall)
        if r < 0.75:
            self.c.net.partition(near, far)
        else:  # the cut comes as it resumes: its clients, gone elsewhere, come back to it
            self.c.isolated_until += stall
            self.c.pending_cut = self.c.loop.call_at_true(
                now + stall, self.c.net.partition, near, far
            )

    async def _replace(self, rng: random.Random) -> None:
        """A member replaced through the membership API, as an operator replaces a machine:
        removed (the leader too: it hands over once the change commits), wiped, added back
        with join. One at a time, and only while the cluster is whole (StackCluster.whole)."""
        members = self.c.members
        if not self.c.whole():
            return
        victim = rng.choice(sorted(members))
        try:
            await self.c.replace(victim, timeout=5.0)
        except RaftError:
            # The faults kept the cluster from taking the change: heal finishes the job.
            members[victim].refused = "to be replaced"

    async def _corrupt(self, kind: str, rng: random.Random) -> None:
        ids = sorted(self.c.members)
        if kind == "corrupt_read":
            # A bit flipped on its way from the disk; a restart makes the node read its whole
            # log back (at run time it reads the log only for followers that lag). The restart
            # scans each segment in one read to rebuild its index, and only then reads records
            # back whole to apply or send them: skipping a few reads puts flips in both.
            victim = rng.choice(ids)
            self.c.members[victim].disk.corrupt_next_reads(
                rng.randint(1, 3), _checksummed, skip=rng.choice((0, rng.randint(1, 12)))
            )
            if rng.random() < 0.5:
                await self._restart_now(victim)
            return
        # A bit flipped on the disk itself, in a segment or snapshot file, on one member at a
        # time (two members down for good would leave no quorum to replace them).
        if not self.c.whole():
            return
        member = self.c.members[rng.choice(ids)]
        disk = member.disk
        files = [
            (d, name)
            for d in sorted(disk.durable_dirs)
            for name, inode in sorted(disk.durable_dirs[d].items())
            if _checksummed(f"{d}/{name}") and inode.synced.rstrip(b"\0")
        ]
        if not files:
            return
        d, name = rng.choice(files)
        path = f"{d}/{name}"
        used = len(disk.durable_dirs[d][name].synced.rstrip(b"\0"))
        disk.flip_bit(path, rng.randrange(used), rng.randrange(8))
        member.damaged.append(path)
        if rng.random() < 0.5:
            await self._restart_now(member.node_id)

    async def _restart_now(self, node_id: int) -> None:
        if self.c.members[node_id].refused is None:
            await self.c.restart(node_id, "drop")
