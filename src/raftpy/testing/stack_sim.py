"""Whole-stack deterministic simulation: real nodes, real storage, real clients, virtual time.

:class:`StackCluster` runs ``n`` unchanged :class:`~raftpy.node.RaftNode` s, each with its
:class:`~raftpy.storage.wal.FileStorage` and snapshot files on its own
:class:`~raftpy.storage.fs.FaultyFileSystem`, the real snapshot transfer, and the real
:class:`~raftpy.client.Client`, all on one :class:`~raftpy.testing.stack_loop.VirtualTimeLoop`
over the in-memory :class:`~raftpy.testing.stack_net.SimNetwork`. Everything random comes from
one ``random.Random(seed)``: the same seed gives the same run, byte for byte.

A nemesis injects, per seed, a random mix of the faults in :class:`StackFaults`: partitions
(clients included), message loss, duplication, delay and reordering, process crashes that
lose unsynced writes (``drop``) or tear them (``torn``, ``partial``, also in the middle of an
fsync), fsync failures (the node's fatal path, then a restart from its files), a full disk, a
slow disk (each fsync blocks the process for a while of virtual time), and clock jumps (the
whole process paused: every timer fires late).

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
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import BinaryIO, Final

from raftpy.client import Client
from raftpy.errors import (
    ClusterUnavailableError,
    IndeterminateError,
    NotLeaderError,
    ProposalDropped,
    RaftError,
    SessionExpiredError,
)
from raftpy.node import RaftNode
from raftpy.node.config import NODE_RAFT_DEFAULTS, NodeConfig
from raftpy.statemachine import StateMachine
from raftpy.storage.fs import CrashMode, FaultyFileSystem
from raftpy.testing.history import HistoryRecorder, Operation, dump_history
from raftpy.testing.linearizability import CheckResult, Verdict, check
from raftpy.testing.stack_loop import VirtualTimeLoop, run
from raftpy.testing.stack_net import SimNetwork, client_end, node_address

logger = logging.getLogger("raftpy.testing.stack_sim")

DATA_DIR: Final = "/data"
"""Every node's data directory, on its own simulated disk."""
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
)


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


class SimKV:
    """The key-value machine :func:`run_kv` checks: ``["w", key, value]`` sets,
    ``["c", key, from, to]`` swaps when the value is ``from`` (answers ``1`` or ``0``); a
    query for ``key`` answers its value as JSON (``null``: absent)."""

    def __init__(self) -> None:
        self.data: dict[str, int] = {}

    def apply(self, command: bytes) -> bytes:
        op = json.loads(command)
        if op[0] == "w":
            self.data[op[1]] = op[2]
            return b""
        if self.data.get(op[1]) == op[2]:
            self.data[op[1]] = op[3]
            return b"1"
        return b"0"

    def query(self, query: bytes) -> bytes:
        return json.dumps(self.data.get(query.decode())).encode()

    def snapshot(self, out: BinaryIO) -> None:
        out.write(json.dumps(self.data, sort_keys=True).encode())

    def restore(self, inp: BinaryIO) -> None:
        self.data = json.loads(inp.read())


@dataclass(slots=True)
class _Member:
    node_id: int
    disk: SimDisk
    machine: StateMachine | None = None
    node: RaftNode | None = None
    restarts: int = 0


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

    @property
    def ok(self) -> bool:
        verdict_ok = self.check is None or self.check.verdict is not Verdict.NOT_LINEARIZABLE
        return verdict_ok and not self.problems

    def history_bytes(self) -> bytes:
        return dump_history(self.history)

    def replay_command(self) -> str:
        return f"python -m raftpy.testing.stack_sim {self.seed}"

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
        self.members = {
            i: _Member(i, SimDisk(self.rng.getrandbits(32), self.loop)) for i in self.peers
        }
        self.faults: dict[str, int] = dict.fromkeys(FAULT_KINDS, 0)
        self.problems: list[str] = []
        self._clients = 0

    # -- nodes --------------------------------------------------------------------------------

    def nodes(self) -> Iterator[RaftNode]:
        """The nodes running now."""
        for m in self.members.values():
            if m.node is not None:
                yield m.node

    def leader(self) -> RaftNode | None:
        leaders = [n for n in self.nodes() if n.role.value == "leader"]
        return leaders[0] if len(leaders) == 1 else None

    async def start_node(self, node_id: int) -> None:
        m = self.members[node_id]
        m.machine = self._factory()
        node = RaftNode(
            node_id,
            self.peers[node_id],
            self.peers,
            m.machine,
            DATA_DIR,
            self.config,
            transport_factory=self.net.factory(node_id),
            rng=random.Random(self.rng.getrandbits(64)),
            fs=m.disk,
            clock=self.loop.time,
        )
        try:
            await node.start()
        except Exception as exc:  # a data dir the node cannot open after a fault: a finding
            self.problems.append(f"node {node_id} cannot restart from its files: {exc!r}")
            return
        m.node = node

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
        await self.crash(node_id, mode)
        self.members[node_id].restarts += 1
        await self.start_node(node_id)

    def client(self, **options: object) -> Client:
        """A real :class:`~raftpy.client.Client` of this cluster, on the simulated network,
        with its own seeded jitter."""
        client_end.set(CLIENT_ENDS + self._clients)  # this task's context, and its children's
        self._clients += 1
        kwargs: dict[str, object] = {
            "timeout": 3.0,
            "connect_timeout": 0.3,
            "attempt_timeout": 0.8,
            "backoff_initial": 0.02,
            "backoff_max": 0.2,
        }
        kwargs.update(options)
        return Client(
            list(self.peers.values()),
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
        return self.loop.time()

    async def heal(self) -> None:
        """End every fault: links, disks, and nodes that are down."""
        self.net.heal()
        self.net.faults = replace(self.net.faults, loss=0.0, duplicate=0.0, reorder=False)
        for m in self.members.values():
            m.disk.slow = 0.0
            m.disk.set_capacity(None)
            if m.node is None or m.node.status().failed is not None:
                await self.restart(m.node_id, "drop")

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

    async def _watch(self) -> None:
        """Restart a node whose fatal path ended its loop, as a supervisor would."""
        while True:
            await asyncio.sleep(0.2)
            for m in list(self.members.values()):
                if m.node is not None and m.node.status().failed is not None:
                    mode: CrashMode = self.rng.choice(("drop", "torn", "partial", "keep"))
                    await self.restart(m.node_id, mode)

    async def _nemesis(self, duration: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + duration
        rng = self.rng
        while self.kinds:
            await asyncio.sleep(rng.expovariate(1.0 / self.interval))
            if loop.time() >= end:
                break
            kind = rng.choice(self.kinds)
            self.faults[kind] += 1
            await self._inject(kind, rng)
        await self.heal()

    async def _inject(self, kind: str, rng: random.Random) -> None:
        ids = sorted(self.members)
        net = self.net
        if kind == "partition":
            if rng.random() < 0.3:
                net.heal()
                return
            shuffled = [*ids, *range(CLIENT_ENDS, CLIENT_ENDS + self._clients)]
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
        elif kind in ("crash", "torn"):
            victim = rng.choice(ids)
            modes: tuple[CrashMode, ...] = ("drop",) if kind == "crash" else ("torn", "partial")
            mode = rng.choice(modes)
            if kind == "torn" and rng.random() < 0.5:
                # A power loss in the middle of a sync; the node dies there (the watcher
                # restarts it from what the crash left).
                self.members[victim].disk.crash_on_next_sync(mode, after=rng.randrange(3))
                return
            await self.crash(victim, mode)
            await asyncio.sleep(rng.uniform(0.0, 2.0))
            self.members[victim].restarts += 1
            if self.members[victim].node is None:
                await self.start_node(victim)
        elif kind == "fsync":
            self.members[rng.choice(ids)].disk.fail_next_fsync()
        elif kind == "disk_full":
            disk = self.members[rng.choice(ids)].disk
            disk.set_capacity(disk.used_bytes() + rng.randrange(0, 8192))
            loop = asyncio.get_running_loop()
            loop.call_later(rng.uniform(0.2, 3.0), disk.set_capacity, None)
        elif kind == "slow_disk":
            disk = self.members[rng.choice(ids)].disk
            disk.slow = rng.choice((0.0, 0.02, 0.2))
        elif kind == "clock_jump":
            self.loop.advance(rng.uniform(0.05, 2.0))


# -- the key-value workload -------------------------------------------------------------------

KEYS: Final = ("a", "b", "c")


async def _kv_client(
    cluster: StackCluster, cid: int, recorder: HistoryRecorder, until: float
) -> None:
    loop = asyncio.get_running_loop()
    rng = random.Random(cluster.rng.getrandbits(64))
    seen: dict[str, list[int]] = {k: [] for k in KEYS}
    counter = 0
    async with cluster.client() as client:
        while loop.time() < until:
            key = rng.choice(KEYS)
            r = rng.random()
            if r < 0.4:
                h = recorder.invoke(cid, "read", key)
                try:
                    value = json.loads(await client.query(key.encode()))
                except RaftError:
                    recorder.fail(h)  # a read that did not answer did nothing
                else:
                    recorder.complete(h, value)
                    if isinstance(value, int):
                        seen[key].append(value)
            else:
                counter += 1
                new = cid * 1_000_000 + counter
                if r < 0.75 or not seen[key]:
                    h = recorder.invoke(cid, "write", key, value=new)
                    command = ["w", key, new]
                else:
                    old = rng.choice(seen[key][-5:])
                    h = recorder.invoke(cid, "cas", key, from_=old, to=new)
                    command = ["c", key, old, new]
                try:
                    result = await client.propose(json.dumps(command).encode())
                except (
                    ClusterUnavailableError,
                    NotLeaderError,
                    ProposalDropped,
                    SessionExpiredError,
                ):
                    recorder.fail(h)  # definite: not done (raftpy.errors)
                except IndeterminateError:
                    recorder.indeterminate(h)
                else:
                    recorder.complete(h, result == b"1" if command[0] == "c" else None)
                    seen[key].append(new)
            await asyncio.sleep(rng.uniform(0.0, 0.05))


def run_kv(
    seed: int,
    n: int = 3,
    *,
    clients: int = 3,
    duration: float = 10.0,
    faults: StackFaults | None = None,
    config: NodeConfig = STACK_CONFIG,
    check_timeout: float = 30.0,
) -> StackResult:
    """One seeded run of the key-value workload under faults: ``clients`` real clients for
    ``duration`` virtual seconds, then heal, converge and check (see the module docstring)."""
    began = time.perf_counter()
    cluster = StackCluster(seed, n, faults=faults, config=config)
    recorder = HistoryRecorder(clock=lambda: round(cluster.loop.time() * 1e9))

    async def workload(c: StackCluster) -> None:
        until = asyncio.get_running_loop().time() + duration
        tasks = [
            asyncio.get_running_loop().create_task(_kv_client(c, cid, recorder, until))
            for cid in range(1, clients + 1)
        ]
        await asyncio.gather(*tasks)
        await c.heal()
        if not await c.wait_converged():
            c.problems.append("the nodes did not converge within 20 virtual s after healing")
            return
        states = {
            m.node_id: json.dumps(getattr(m.machine, "data", None), sort_keys=True)
            for m in c.members.values()
        }
        if len(set(states.values())) > 1:
            c.problems.append(f"replicas diverged: {states}")

    virtual = cluster.run(workload, duration)
    history = recorder.operations()
    result = check(history, timeout=check_timeout)
    return StackResult(
        seed,
        history,
        result,
        cluster.faults,
        virtual,
        time.perf_counter() - began,
        cluster.problems,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raftpy.testing.stack_sim",
        description="Run whole-stack simulations of a 3-node cluster (real nodes, storage and "
        "clients on virtual time) and check their histories; exit 1 on a failure.",
    )
    parser.add_argument("seed", type=int, help="the first seed")
    parser.add_argument("--count", type=int, default=1, help="seeds to run (default 1)")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="virtual seconds")
    parser.add_argument("--history", help="write the (last) history to this file")
    args = parser.parse_args(argv)
    failed = 0
    for seed in range(args.seed, args.seed + args.count):
        result = run_kv(seed, args.nodes, duration=args.duration)
        print(result.summary())
        failed += not result.ok
        if args.history:
            with open(args.history, "wb") as f:
                f.write(result.history_bytes())
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
