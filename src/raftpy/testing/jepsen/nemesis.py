"""The nemesis: the faults injected into a :class:`~raftpy.testing.jepsen.processes.Cluster`,
drawn from a seeded random generator, and the schedule that alternates them with quiet periods.

Faults: partitions (random halves, the leader isolated, a bridge, and a "zombie" leader: paused,
cut off, then resumed while still cut off), SIGKILL (random nodes or the leader) and restart,
SIGSTOP (random nodes or the leader) and SIGCONT, a flaky network (delays and drops on every
link), and membership changes (a node removed and added back, or replaced after losing its
disk; :mod:`~raftpy.testing.jepsen.members`). See :data:`FAULTS` and :data:`NEMESES`. The
schedule records each period of a run as a :class:`FaultWindow`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from raftpy.testing.jepsen.members import MEMBER_FAULTS, MemberFaults
from raftpy.testing.jepsen.processes import Cluster

__all__ = [
    "FAULTS",
    "HEALED_LABEL",
    "KILL_FAULTS",
    "MEMBER_FAULTS",
    "NEMESES",
    "PARTITION_FAULTS",
    "PAUSE_FAULTS",
    "FaultWindow",
    "Nemesis",
    "run_schedule",
]

log = logging.getLogger(__name__)

HEALED_LABEL: Final = "healed"
"""The label of a run's last window: the faults are healed (see :class:`FaultWindow`)."""

PARTITION_FAULTS: Final = (
    "partition-halves",
    "partition-leader",
    "partition-bridge",
    "partition-zombie-leader",
)
KILL_FAULTS: Final = ("kill-random", "kill-leader")
PAUSE_FAULTS: Final = ("pause-random", "pause-leader")
FAULTS: Final = (*PARTITION_FAULTS, *KILL_FAULTS, *PAUSE_FAULTS, "flaky", *MEMBER_FAULTS)
"""Every concrete fault the nemesis can inject.

The membership faults (:data:`MEMBER_FAULTS`, see :mod:`~raftpy.testing.jepsen.members`) need
servers that serve membership requests and take ``--join``, as the examples' servers do.

``partition-zombie-leader`` pauses the leader (SIGSTOP, like a long GC pause), cuts it off while it
sleeps, and resumes it still cut off once the others have had time to elect a new leader
(2.5 election timeouts): it wakes up believing it leads, for at least one more election
timeout (until CheckQuorum deposes it), with its clients around it. A correct cluster refuses
or redirects their reads; one that serves reads without confirming leadership answers them
from stale state. (A plain isolated leader is deposed by CheckQuorum about when the others
elect a new one, so it rarely exposes that bug.)
"""

NEMESES: Final[Mapping[str, tuple[str, ...]]] = {
    "none": (),
    "partition": PARTITION_FAULTS,
    "kill": KILL_FAULTS,
    "pause": PAUSE_FAULTS,
    "member": MEMBER_FAULTS,
    "all": FAULTS,
    **{fault: (fault,) for fault in FAULTS},
}
"""Nemesis names: each draws one of its faults at random for every fault window."""


def _fmt_group(nodes: Iterable[int]) -> str:
    return "{" + ", ".join(str(n) for n in sorted(nodes)) + "}"


class Nemesis:
    """Injects one fault at a time into ``cluster``: :meth:`inject` picks one of ``faults`` at
    random (seeded by ``rng``) and applies it; :meth:`repair` undoes it."""

    def __init__(self, cluster: Cluster, faults: Sequence[str], rng: random.Random) -> None:
        unknown = [f for f in faults if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown fault {unknown[0]!r} (known: {', '.join(FAULTS)})")
        self.cluster = cluster
        self.faults = tuple(faults)
        self.rng = rng
        self._killed: list[int] = []
        self._paused: list[int] = []
        self._network = False
        self._waking: asyncio.Task[None] | None = None
        self.members = MemberFaults(cluster, rng)

    @property
    def active(self) -> bool:
        return bool(self._killed or self._paused or self._network or self.members.active)

    async def _wake_later(self, node: int, delay: float) -> None:
        await asyncio.sleep(delay)
        if node in self._paused:
            self._paused.remove(node)
            self.cluster.resume(node)
            log.info("nemesis: zombie leader %d resumed, still isolated", node)

    async def _target_leader(self) -> tuple[int, str]:
        leader = await self.cluster.leader(timeout=2.0)
        if leader is None:
            node = self.rng.choice(self.cluster.ids)
            return node, f"no leader found, node {node}"
        return leader, f"leader {leader}"

    def _random_nodes(self, max_size: int) -> list[int]:
        ids = self.cluster.ids
        size = self.rng.randint(1, max(1, min(max_size, len(ids))))
        return sorted(self.rng.sample(ids, size))

    async def inject(self) -> str:
        """Apply a random fault; return a description of it."""
        if self.active:
            await self.repair()
        if not self.faults:
            return "none"
        fault = self.rng.choice(self.faults)
        ids = list(self.cluster.ids)
        if fault in ("kill-random", "kill-leader", "pause-random", "pause-leader"):
            return f"{fault}: {await self._stop_nodes(fault, ids)}"
        if fault in MEMBER_FAULTS:
            return await self.members.inject(fault)
        network = {
            "partition-halves": self._partition_halves,
            "partition-leader": self._partition_leader,
            "partition-bridge": self._partition_bridge,
            "flaky": self._flaky,
            "partition-zombie-leader": self._zombie_leader,
        }
        if fault not in network:
            raise AssertionError(f"unhandled fault {fault}")  # pragma: no cover
        description = await network[fault](ids)
        self._network = True
        return f"{fault}: {description}"

    async def _partition_halves(self, ids: list[int]) -> str:
        self.rng.shuffle(ids)
        groups = [sorted(ids[: len(ids) // 2]), sorted(ids[len(ids) // 2 :])]
        self.cluster.proxy.partition(groups)
        return f"{_fmt_group(groups[0])} | {_fmt_group(groups[1])}"

    async def _partition_leader(self, ids: list[int]) -> str:
        node, who = await self._target_leader()
        self.cluster.proxy.isolate(node)
        return f"{who} isolated"

    async def _partition_bridge(self, ids: list[int]) -> str:
        proxy = self.cluster.proxy
        self.rng.shuffle(ids)
        mid = len(ids) // 2
        left, bridge, right = ids[:mid], ids[mid], ids[mid + 1 :]
        proxy.heal()
        for a in left:
            for b in right:
                proxy.block(a, b)
                proxy.block(b, a)
        return f"{_fmt_group(left)} | {bridge} | {_fmt_group(right)}"

    async def _flaky(self, ids: list[int]) -> str:
        for a in ids:
            for b in ids:
                if a != b:
                    self.cluster.proxy.set_faults(
                        a,
                        b,
                        delay=self.rng.uniform(0.0, 0.02),
                        jitter=0.02,
                        drop=self.rng.choice((0.05, 0.1, 0.2)),
                    )
        return "delays up to 40 ms and 5-20% loss on every link"

    async def _zombie_leader(self, ids: list[int]) -> str:
        node, who = await self._target_leader()
        self.cluster.pause(node)
        self._paused.append(node)
        self.cluster.proxy.isolate(node)
        election = self.cluster.tick_ms * self.cluster.election_ticks / 1000
        delay = 2.5 * election + 0.2
        self._waking = asyncio.get_running_loop().create_task(self._wake_later(node, delay))
        return f"{who} paused, isolated, resumed isolated after {delay:.1f} s"

    async def _stop_nodes(self, fault: str, ids: list[int]) -> str:
        """Kill or pause (SIGKILL / SIGSTOP) the leader or a random subset of nodes."""
        if fault.endswith("leader"):
            node, who = await self._target_leader()
            nodes, desc = [node], who
        else:
            # Kill any subset (all of them tests recovery from the disk alone); pause at most
            # all but one.
            limit = len(ids) if fault.startswith("kill") else len(ids) - 1
            nodes = self._random_nodes(limit)
            desc = f"nodes {_fmt_group(nodes)}"
        if fault.startswith("kill"):
            await asyncio.gather(*(self.cluster.kill(i) for i in nodes))
            self._killed += nodes
        else:
            for i in nodes:
                self.cluster.pause(i)
            self._paused += nodes
        return desc

    async def repair(self, *, wait: bool = True) -> None:
        """Undo the current fault: heal the network, SIGCONT paused nodes, restart killed ones
        (waiting until they listen when ``wait``), make every node a voter again after a
        membership fault (always waited for: the membership must be whole again before the
        run's healed window starts, and a wiped node may only start joining)."""
        await self.members.repair()
        if self._waking is not None:
            self._waking.cancel()
            self._waking = None
        if self._network:
            self.cluster.proxy.heal()
            self._network = False
        for i in self._paused:
            self.cluster.resume(i)
        self._paused = []
        killed, self._killed = self._killed, []
        for i in killed:
            if not self.cluster.nodes[i].running:
                self.cluster.start_node(i)
        if wait and killed:
            await self.cluster.await_ready(killed)


@dataclass(frozen=True)
class FaultWindow:
    """A period of the run: ``label`` is ``"quiet"``, the fault's description, or (last)
    ``"healed: ..."`` for the recovery write and final reads; times are ``time.monotonic_ns``
    values, ``end`` exclusive."""

    label: str
    start: int
    end: int

    @property
    def fault(self) -> bool:
        return self.label != "quiet" and not self.healed

    @property
    def healed(self) -> bool:
        return self.label.startswith(HEALED_LABEL)


async def run_schedule(
    nemesis: Nemesis,
    windows: list[FaultWindow],
    interval: float,
    rng: random.Random,
    stop_at: float,
) -> None:
    """Alternate quiet periods and faults of ``nemesis`` until ``stop_at`` (loop time), each
    lasting ``interval`` seconds times a random factor in [0.5, 1.5], and record each period in
    ``windows``. The fault active at ``stop_at``, if any, is left for the final heal; its window
    stays open (see run_jepsen)."""
    loop = asyncio.get_running_loop()
    label = "quiet"
    start = time.monotonic_ns()
    try:
        while loop.time() < stop_at:
            await asyncio.sleep(
                max(0.0, min(stop_at - loop.time(), interval * rng.uniform(0.5, 1.5)))
            )
            if loop.time() >= stop_at or not nemesis.faults:
                continue
            windows.append(FaultWindow(label, start, time.monotonic_ns()))
            start = time.monotonic_ns()
            label = await nemesis.inject()
            log.info("nemesis: %s", label)
            await asyncio.sleep(
                max(0.0, min(stop_at - loop.time(), interval * rng.uniform(0.5, 1.5)))
            )
            if loop.time() >= stop_at:
                break
            await nemesis.repair()
            log.info("nemesis: repaired")
            windows.append(FaultWindow(label, start, time.monotonic_ns()))
            start = time.monotonic_ns()
            label = "quiet"
    finally:
        windows.append(FaultWindow(label, start, time.monotonic_ns()))
