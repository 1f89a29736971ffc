"""Whole-stack deterministic simulation: real nodes, real storage, real clients, virtual time.

:class:`StackCluster` runs ``n`` unchanged :class:`~raftpy.node.RaftNode` s, each with its
:class:`~raftpy.storage.wal.FileStorage` and snapshot files on its own
:class:`~raftpy.storage.fs.FaultyFileSystem`, the real snapshot transfer, and the real
:class:`~raftpy.client.Client`, all on one :class:`~raftpy.testing.stack_loop.VirtualTimeLoop`
over the in-memory :class:`~raftpy.testing.stack_net.SimNetwork`. Everything random comes from
one ``random.Random(seed)``: the same seed gives the same run, byte for byte.

A nemesis (:mod:`raftpy.testing.stack_nemesis`) injects, per seed, a random mix of the faults
in :class:`StackFaults`: partitions (clients included; often the leader cut off with some
clients), message loss, duplication, delay and reordering, process crashes that lose unsynced
writes (``drop``; of one node, or of a majority at once as in a power loss) or tear them
(``torn``, ``partial``, also in the middle of an fsync), fsync
failures (the node's fatal path, then a restart from its files), a full disk, a slow disk
(each fsync stalls the host for a while of virtual time), clock jumps (one node stopped, often
the leader, while the others run on: on resuming its monotonic clock has leapt and every
timer is overdue), clock drift, corrupted reads (``corrupt_read``: a bit flipped in what a
read of a segment or snapshot file returns, the disk holding the right bytes) and damage
(``damage``: a bit flipped on the disk itself).

**Clocks.** Each node reads its own :class:`~raftpy.testing.stack_loop.ProcessClock`: its own
offset (nothing may compare two nodes' readings) and its own rate, kept within
:func:`drift_bound`, a quarter of the drift the leader lease promises to tolerate
(``NodeConfig.max_clock_drift`` over an election timeout, README.md "Reads"), so that lease
reads must stay linearizable. Clients read at ``linearizable`` or ``lease`` consistency.

**Damage.** The node must catch flipped bits by checksum: it refuses to start naming the file
and offset, and the simulated supervisor starts it again (a corrupted read is gone the next
time) or, when the disk is damaged, keeps it down and at the end replaces it as README.md
("Changing members") says: removed through the real membership API, wiped, and added back
with ``join``. A refusal with no damage to explain it, or naming a file nobody damaged, is a
finding.

:func:`run_kv` drives a key-value workload with simulated clients, records what they saw in
the :mod:`raftpy.testing.history` format and checks it with
:mod:`raftpy.testing.linearizability`; it also checks that every node ends with the same
state. ``python -m raftpy.testing.stack_sim SEED`` replays one seed. README.md, "Using the
simulator to test your own state machine", shows :class:`StackCluster` with your own machine.

The node's fsync timing (its health check judges fsync durations) reads the loop's virtual
clock here, so a slow simulated disk is seen as slow and nothing depends on the host's speed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Final

from raftpy.client import Client
from raftpy.errors import (
    RaftError,
)
from raftpy.node import RaftNode
from raftpy.node.config import NODE_RAFT_DEFAULTS, NodeConfig
from raftpy.statemachine import StateMachine
from raftpy.storage.errors import (
    CorruptLogError,
    CorruptSnapshotError,
    StorageError,
    UnsupportedFormatError,
)
from raftpy.storage.fs import CrashMode, FaultyFileSystem
from raftpy.testing.history import HistoryRecorder, Operation, dump_history
from raftpy.testing.linearizability import CheckResult, Verdict, check
from raftpy.testing.stack_loop import ProcessClock, VirtualTimeLoop, process_clock, run
from raftpy.testing.stack_nemesis import (
    CLIENT_ENDS,
    FAULT_KINDS,
    OUTCOMES,
    Nemesis,
    StackFaults,
    drift_bound,
)
from raftpy.testing.stack_net import SimNetwork, client_end, node_address
from raftpy.testing.stack_workload import READS, SimKV, durability_problems, kv_client

__all__ = [
    "CLIENT_ENDS",
    "DATA_DIR",
    "FAULT_KINDS",
    "OUTCOMES",
    "READS",
    "STACK_CONFIG",
    "SimDisk",
    "SimKV",
    "StackCluster",
    "StackFaults",
    "StackResult",
    "drift_bound",
    "main",
    "run_kv",
]

logger = logging.getLogger("raftpy.testing.stack_sim")

DATA_DIR: Final = "/data"
"""Every node's data directory, on its own simulated disk."""
STACK_CONFIG: Final = NodeConfig(
    tick_seconds=0.05,
    exit_on_fatal=False,  # the node's fatal path ends its loop; the simulator restarts it
    segment_size=64 << 10,  # small segments: rolls and compaction happen within a run
    snapshot_entries=300,
    snapshot_chunk_bytes=2048,  # several chunks per transfer
    snapshot_window_bytes=8192,
    request_timeout=2.0,
    max_fsync_p99=0.05,
    raft=replace(NODE_RAFT_DEFAULTS),
)
"""The node configuration of a simulated cluster (override with ``StackCluster(config=...)``)."""


class SimDisk(FaultyFileSystem):
    """A :class:`FaultyFileSystem` that can be slow: while ``slow`` is set, each fsync blocks
    the (single, simulated) process for a random 0 to ``slow`` virtual seconds."""

    def __init__(self, seed: int, loop: VirtualTimeLoop) -> None:
        super().__init__(seed)
        self.loop = loop
        self.slow = 0.0

    def count_sync(self) -> None:
        super().count_sync()
        if self.slow:
            self.loop.advance(self.rng.uniform(0.0, self.slow))


def _refusal_file(exc: StorageError) -> str | None:
    """The file a refusal to start names."""
    if isinstance(exc, CorruptLogError | CorruptSnapshotError):
        return exc.file
    # A flipped bit in a file's magic number reads as a file of another format, named first
    # in the message (no offset: the magic is at offset 0).
    return str(exc).split(" ", 1)[0]


@dataclass(slots=True)
class _Member:
    node_id: int
    disk: SimDisk
    clock: ProcessClock
    machine: StateMachine | None = None
    node: RaftNode | None = None
    restarts: int = 0
    damaged: list[str] = field(default_factory=list)
    """Files of this member's disk the nemesis damaged for good (:meth:`SimDisk.flip_bit`)."""
    join: tuple[str, ...] = ()
    """Addresses the node is started with to join (README.md, "Changing members")."""
    busy: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while the simulated supervisor crashes or starts this member."""
    refused: str | None = None
    """Why this member's node refused to start on damaged files: it stays down until
    :meth:`StackCluster.heal` replaces it (removed, wiped, added back)."""


@dataclass(slots=True)
class StackResult:
    """What one simulated run did and found."""

    seed: int
    history: list[Operation]
    check: CheckResult | None
    faults: dict[str, int]
    virtual_seconds: float
    wall_seconds: float
    problems: list[str] = field(default_factory=list)
    """Everything wrong besides the history's verdict (diverged replicas, a node that could
    not restart from its files)."""
    options: tuple[str, ...] = ()
    """The command-line options that repeat this run (besides the seed)."""

    @property
    def ok(self) -> bool:
        verdict_ok = self.check is None or self.check.verdict is not Verdict.NOT_LINEARIZABLE
        return verdict_ok and not self.problems

    def history_bytes(self) -> bytes:
        return dump_history(self.history)

    def replay_command(self) -> str:
        return " ".join(("python -m raftpy.testing.stack_sim", str(self.seed), *self.options))

    def summary(self) -> str:
        verdict = "no history" if self.check is None else self.check.verdict.value
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items()) if v) or "none"
        head = (
            f"seed {self.seed}: {verdict}, {len(self.history)} operations, "
            f"{self.virtual_seconds:.1f} virtual s in {self.wall_seconds:.2f} wall s; "
            f"faults: {faults}"
        )
        lines = [head, *self.problems]
        if self.check is not None and self.check.violation is not None:
            lines.append(self.check.explain())
        if not self.ok:
            lines.append(f"replay: {self.replay_command()}")
        return "\n".join(lines)


class StackCluster:
    """``n`` real nodes with real storage on simulated disks, on one virtual-time loop (see
    the module docstring). ``state_machine`` makes each node's machine (called again at each
    restart: the node restores it from its snapshot and log). Use :meth:`run` with your own
    workload, or :func:`run_kv`."""

    def __init__(
        self,
        seed: int,
        n: int = 3,
        *,
        state_machine: Callable[[], StateMachine] = SimKV,
        faults: StackFaults | None = None,
        config: NodeConfig = STACK_CONFIG,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.loop = VirtualTimeLoop()
        self.net = SimNetwork(self.loop, random.Random(self.rng.getrandbits(64)))
        self.loop.connector = self.net
        self.config = config
        self._factory = state_machine
        allowed = sorted((faults or StackFaults()).kinds)
        if faults is None or faults.swarm:
            allowed = [k for k in allowed if self.rng.random() < 0.6] or allowed[:1]
        self.kinds = allowed
        self.interval = (faults or StackFaults()).interval
        self.peers = {i: node_address(i) for i in range(1, n + 1)}
        self.drift = drift_bound(config)
        self.members = {
            i: _Member(
                i,
                SimDisk(self.rng.getrandbits(32), self.loop),
                # Each machine's own clock: nothing may compare two nodes' readings.
                ProcessClock(
                    self.rng.uniform(0.0, 1e4), 1.0 + self.rng.uniform(-self.drift, self.drift)
                ),
            )
            for i in self.peers
        }
        self.faults: dict[str, int] = dict.fromkeys((*FAULT_KINDS, *OUTCOMES), 0)
        self.problems: list[str] = []
        self.client_count = 0
        """Clients made so far (:meth:`client`)."""
        # The nemesis's state (raftpy.testing.stack_nemesis): until when an isolated leader
        # stays cut off, and a cut waiting for a stalled leader to resume (heal cancels it).
        self.isolated_until = 0.0
        self.pending_cut: asyncio.TimerHandle | None = None

    # -- nodes --------------------------------------------------------------------------------

    def nodes(self) -> Iterator[RaftNode]:
        """The nodes running now."""
        for m in self.members.values():
            if m.node is not None:
                yield m.node

    def whole(self) -> bool:
        """Whether every member runs, none is damaged or waiting to be replaced, and the
        leader counts each as a voter (no member is still joining): only then may the nemesis
        take one away for good (two lost of three would leave no quorum to replace them)."""
        leader = self.leader()
        if leader is None:
            return False
        if any(m.node is None or m.refused or m.damaged for m in self.members.values()):
            return False
        conf = leader.members()
        return set(conf.voters) == set(self.members) and not conf.voters_outgoing

    def leader(self) -> RaftNode | None:
        leaders = [n for n in self.nodes() if n.role.value == "leader"]
        return leaders[0] if len(leaders) == 1 else None

    async def start_node(self, node_id: int) -> None:
        """Start node ``node_id`` from its disk, as a supervisor would: a refusal that names
        damage (file and offset) is retried (a read may have been corrupted on its way, the
        disk holding the right bytes), and when it persists on files the nemesis damaged the
        member stays down (``refused``) until :meth:`heal` replaces it. Any other failure to
        start, or a refusal with no damage to explain it, is a finding (``problems``)."""
        m = self.members[node_id]
        join = m.join
        for _ in range(5):
            m.machine = self._factory()
            reads = len(m.disk.corrupted_reads)
            node = RaftNode(
                node_id,
                self.peers[node_id],
                {node_id: self.peers[node_id]} if join else self.peers,
                m.machine,
                DATA_DIR,
                self.config,
                transport_factory=self.net.factory(node_id),
                rng=random.Random(self.rng.getrandbits(64)),
                join=join,
                fs=m.disk,
                clock=self.loop.time,
            )
            # The node runs in a context of its own: its clock, its pauses, its network end.
            context = contextvars.copy_context()
            context.run(process_clock.set, m.clock)
            context.run(client_end.set, node_id)
            loop = asyncio.get_running_loop()
            try:
                await loop.create_task(node.start(), context=context)
            except (CorruptLogError, CorruptSnapshotError, UnsupportedFormatError) as exc:
                # The process exits: what it had open is closed, its lock released.
                m.disk.crash("keep")
                if _refusal_file(exc) in m.damaged:
                    m.refused = str(exc)
                    self.faults["refused"] += 1
                    return
                if len(m.disk.corrupted_reads) == reads:
                    self.problems.append(
                        f"node {node_id} refused to start on files nobody damaged: {exc!r}"
                    )
                    return
                self.faults["reread"] += 1  # a corrupted read, detected: start again
                continue
            except Exception as exc:  # a data dir the node cannot open after a fault: a finding
                self.problems.append(f"node {node_id} cannot restart from its files: {exc!r}")
                return
            m.node = node
            return
        self.problems.append(f"node {node_id} refused to start five times in a row")

    async def replace(self, node_id: int, timeout: float = 20.0) -> None:
        """Replace member ``node_id`` as README.md ("Changing members") says to replace one
        whose disk was damaged or lost: remove it from the cluster through the membership
        API (a running member serves on until the change commits), stop it, wipe its data
        dir, and start it again with ``join`` (it is added back as a learner and promotes
        itself once caught up). Raises what ``Client.remove_member`` raises when the cluster
        cannot take the change within ``timeout``; the member is then left as it was."""
        m = self.members[node_id]
        others = tuple(a for i, a in self.peers.items() if i != node_id)
        async with self.client(addresses=others) as client:
            await client.remove_member(node_id, timeout=timeout)
        async with m.busy:
            await self.crash(node_id, "drop")
            m.disk = SimDisk(self.rng.getrandbits(32), self.loop)
            m.damaged.clear()
            m.refused = None
            # Started with join from now on, as its command line would say --join: a
            # restart before it is back in the cluster asks again (once it is, join is moot).
            m.join = others
            self.faults["replaced"] += 1
            await self.start_node(node_id)

    async def crash(self, node_id: int, mode: CrashMode = "drop") -> None:
        """Kill node ``node_id``'s process: its connections reset, its disk keeps what a
        crash in ``mode`` keeps, and nothing it does afterwards reaches anyone."""
        m = self.members[node_id]
        endpoint = self.net.endpoints.get(node_id)
        if endpoint is not None:
            endpoint.kill()
        m.disk.crash(mode)
        node, m.node = m.node, None
        if node is not None:
            with contextlib.suppress(Exception):  # its files are gone from under it
                await node.stop()

    async def restart(self, node_id: int, mode: CrashMode = "drop") -> None:
        """Crash node ``node_id`` (see :meth:`crash`) and start it again from its disk."""
        m = self.members[node_id]
        # One supervisor action on a machine at a time: a start can take a while (a paused
        # machine starts nothing until it resumes), and two would fight over the data dir.
        async with m.busy:
            await self.crash(node_id, mode)
            m.restarts += 1
            await self.start_node(node_id)

    def client(self, addresses: tuple[str, ...] = (), **options: object) -> Client:
        """A real :class:`~raftpy.client.Client` of this cluster (of ``addresses``, default
        every member), on the simulated network, with its own seeded jitter."""
        client_end.set(CLIENT_ENDS + self.client_count)  # this task's context, and its children's
        self.client_count += 1
        kwargs: dict[str, object] = {
            "timeout": 3.0,
            "connect_timeout": 0.3,
            "attempt_timeout": 0.8,
            "backoff_initial": 0.02,
            "backoff_max": 0.2,
        }
        kwargs.update(options)
        return Client(
            list(addresses or self.peers.values()),
            rng=random.Random(self.rng.getrandbits(64)),
            **kwargs,  # type: ignore[arg-type]
        )

    # -- running ------------------------------------------------------------------------------

    def run(
        self, workload: Callable[[StackCluster], Awaitable[None]], duration: float = 10.0
    ) -> float:
        """Start the nodes, run ``workload(self)`` while the nemesis injects faults for
        ``duration`` virtual seconds, then heal everything, restart what is down, wait for
        the workload, and stop. Returns the virtual seconds simulated."""

        async def main() -> None:
            for i in self.peers:
                await self.start_node(i)
            nemesis = asyncio.get_running_loop().create_task(self._nemesis(duration))
            watcher = asyncio.get_running_loop().create_task(self._watch())
            try:
                await workload(self)
                await nemesis
            finally:
                nemesis.cancel()
                watcher.cancel()
                await asyncio.gather(nemesis, watcher, return_exceptions=True)
                for node in list(self.nodes()):
                    await node.stop()

        run(main(), self.loop)
        return self.loop.true_time()

    async def heal(self) -> None:
        """End every fault: links, disks, and nodes that are down."""
        if self.pending_cut is not None:
            self.pending_cut.cancel()
        self.net.heal()
        self.net.faults = replace(self.net.faults, loss=0.0, duplicate=0.0, reorder=False)
        for m in self.members.values():
            m.disk.slow = 0.0
            m.disk.set_capacity(None)
            m.disk.read_faults = 0
            if m.refused is None and (m.node is None or m.node.failed is not None):
                await self.restart(m.node_id, "drop")
        for m in self.members.values():
            if m.refused is not None:
                await self._replace_when_possible(m.node_id)

    async def _replace_when_possible(self, node_id: int, timeout: float = 30.0) -> None:
        """:meth:`replace`, tried again while the leader refuses (a member it restarted just
        now, not heard from lately, would leave no quorum it trusts: README.md, "Changing
        members"), as an operator would; a finding if it never can."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                await self.replace(node_id)
                return
            except RaftError as exc:
                if loop.time() >= deadline:
                    self.problems.append(f"node {node_id} could not be replaced: {exc!r}")
                    return
            await asyncio.sleep(0.5)

    async def wait_converged(self, timeout: float = 20.0) -> bool:
        """Wait until every node runs and has applied the same index as the leader."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            nodes = list(self.nodes())
            leader = self.leader()
            if leader is not None and len(nodes) == len(self.members):
                target = leader.status().commit
                if all(n.status().applied == target for n in nodes):
                    return True
            await asyncio.sleep(0.1)
        return False

    async def _nemesis(self, duration: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + duration
        rng = self.rng
        nemesis = Nemesis(self)
        while self.kinds:
            await asyncio.sleep(rng.expovariate(1.0 / self.interval))
            if loop.time() >= end:
                break
            kind = rng.choice(self.kinds)
            self.faults[kind] += 1
            await nemesis.inject(kind, rng)
        await self.heal()

    async def _watch(self) -> None:
        """Restart a node whose fatal path ended its loop, as a supervisor would."""
        while True:
            await asyncio.sleep(0.2)
            for m in list(self.members.values()):
                if m.node is not None and m.node.failed is not None:
                    mode: CrashMode = self.rng.choice(("drop", "torn", "partial", "keep"))
                    await self.restart(m.node_id, mode)


def run_kv(
    seed: int,
    n: int = 3,
    *,
    clients: int = 3,
    duration: float = 10.0,
    faults: StackFaults | None = None,
    reads: str = "mixed",
    think: float = 0.05,
    config: NodeConfig = STACK_CONFIG,
    check_timeout: float = 30.0,
) -> StackResult:
    """One seeded run of the key-value workload under faults: ``clients`` real clients for
    ``duration`` virtual seconds, then heal, converge and check (see the module docstring).
    ``reads``: how the clients read (:data:`READS`); ``think``: each client waits a random
    0 to ``think`` virtual seconds after each operation (the load it offers)."""
    if reads not in READS:
        raise ValueError(f"reads must be one of {READS}, not {reads!r}")
    began = time.perf_counter()
    cluster = StackCluster(seed, n, faults=faults, config=config)
    recorder = HistoryRecorder(clock=lambda: round(cluster.loop.true_time() * 1e9))

    async def workload(c: StackCluster) -> None:
        until = asyncio.get_running_loop().time() + duration
        tasks = [
            asyncio.get_running_loop().create_task(
                kv_client(c, cid, recorder, until, reads, think, refused)
            )
            for cid in range(1, clients + 1)
        ]
        await asyncio.gather(*tasks)
        await c.heal()
        if not await c.wait_converged():
            c.problems.append("the nodes did not converge within 20 virtual s after healing")
            return
        states = {
            m.node_id: (
                m.machine.fingerprint()
                if isinstance(m.machine, SimKV)
                else json.dumps(getattr(m.machine, "data", None), sort_keys=True)
            )
            for m in c.members.values()
        }
        if len(set(states.values())) > 1:
            c.problems.append(f"replicas diverged: {states}")
        for m in c.members.values():
            if isinstance(m.machine, SimKV):
                written[m.node_id] = m.machine.written

    refused: set[int] = set()
    written: dict[int, set[int]] = {}
    virtual = cluster.run(workload, duration)
    history = recorder.operations()
    cluster.problems.extend(durability_problems(history, refused, written))
    options = _options(n, clients, duration, faults, reads, think)
    result = check(history, timeout=check_timeout)
    return StackResult(
        seed,
        history,
        result,
        cluster.faults,
        virtual,
        time.perf_counter() - began,
        cluster.problems,
        options,
    )


def _options(
    n: int, clients: int, duration: float, faults: StackFaults | None, reads: str, think: float
) -> tuple[str, ...]:
    """The options of ``main`` that repeat a run of :func:`run_kv` with these arguments."""
    out: list[str] = []
    if think != 0.05:
        out += ["--think", f"{think:g}"]
    if reads != "mixed":
        out += ["--reads", reads]
    if n != 3:
        out += ["--nodes", str(n)]
    if clients != 3:
        out += ["--clients", str(clients)]
    if duration != 10.0:
        out += ["--duration", f"{duration:g}"]
    if faults is not None:
        default = StackFaults()
        if faults.kinds != default.kinds or not faults.swarm:
            out += ["--faults", ",".join(sorted(faults.kinds)) or "none"]
            if faults.swarm:
                out += ["--swarm"]
        if faults.interval != default.interval:
            out += ["--interval", f"{faults.interval:g}"]
    return tuple(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raftpy.testing.stack_sim",
        description="Run whole-stack simulations of a 3-node cluster (real nodes, storage and "
        "clients on virtual time) and check their histories; exit 1 on a failure.",
    )
    parser.add_argument("seed", type=int, help="the first seed")
    parser.add_argument("--count", type=int, default=1, help="seeds to run (default 1)")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="virtual seconds")
    parser.add_argument(
        "--faults",
        help=f"comma-separated fault kinds, or none (default: a per-seed mix of {FAULT_KINDS})",
    )
    parser.add_argument("--interval", type=float, default=1.0, help="mean s between faults")
    parser.add_argument(
        "--swarm", action="store_true", help="with --faults: a random subset of them per seed"
    )
    parser.add_argument("--reads", choices=READS, default="mixed", help="read consistency")
    parser.add_argument(
        "--think", type=float, default=0.05, help="max virtual s a client waits between ops"
    )
    parser.add_argument("--history", help="write the (last) history to this file")
    args = parser.parse_args(argv)
    faults = None
    if args.faults is not None:
        kinds = [] if args.faults == "none" else args.faults.split(",")
        faults = replace(StackFaults.only(*kinds), interval=args.interval, swarm=args.swarm)
    elif args.interval != StackFaults().interval:
        faults = replace(StackFaults(), interval=args.interval)
    failed = 0
    for seed in range(args.seed, args.seed + args.count):
        result = run_kv(
            seed,
            args.nodes,
            clients=args.clients,
            duration=args.duration,
            faults=faults,
            reads=args.reads,
            think=args.think,
        )
        print(result.summary())
        failed += not result.ok
        if args.history:
            with open(args.history, "wb") as f:
                f.write(result.history_bytes())
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
