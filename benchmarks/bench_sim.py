"""Throughput of the deterministic simulator driving the real core (``python -m benchmarks sim``).

A SimCluster elects a leader; then, for about ``DURATION`` seconds of wall-clock time, the
benchmark proposes batches of 64 commands of 16-100 bytes at the leader
(``SimCluster.start_batch``) and advances virtual time by ``VIRTUAL_STEP`` after each batch.
At the end it drains (runs virtual time until every node applied everything the leader appended)
and counts the commands applied on *every* node. Wall time includes the drain.

Reported per cluster size:

- ``entries_per_s``: commands applied on all nodes per second of wall-clock time (the target,
  for 3 nodes, is ``TARGETS``; a measurement, never adjusted to meet it);
- ``rpc_per_s``: RPCs (requests, not counting responses) sent per wall-clock second;
- ``bytes_per_entry``: encoded bytes of every message sent (requests and responses, elections
  and heartbeats included), divided by the commands applied;
- ``entries_per_cpu_s``: the same per second of this process's CPU time, a steadier number on
  a machine busy with other work (compare the two to see how much the machine was shared);
- ``virtual_s``: how much virtual time the run covered;
- ``dropped_batches``: batches the leader refused (back-pressure), if any.

Everything runs inside the simulator's checkers (apply checker and safety invariants after
every event), so this measures the simulator as the tests use it.
"""

from __future__ import annotations

import random
import time

from raftpy.core.ready import Role
from raftpy.testing.sim import SimCluster

DURATION = 5.0  # seconds of wall-clock time per cluster size
BATCH = 64  # commands per start_batch
VIRTUAL_STEP = 0.001  # virtual seconds run after each batch
SEED = 1

TARGETS: dict[str, tuple[str, float]] = {"sim_3node_entries_per_s": (">=", 200_000.0)}
"""Targets by result name, read by ``python -m benchmarks``: (comparison, value)."""


def command_pool(seed: int, size: int = 4096) -> list[bytes]:
    """Random commands of 16-100 bytes, made before timing starts."""
    rng = random.Random(seed)
    return [rng.randbytes(rng.randint(16, 100)) for _ in range(size)]


def measure(n: int, duration: float = DURATION, seed: int = SEED) -> dict[str, float]:
    """Run the benchmark on an ``n``-node cluster for about ``duration`` wall seconds."""
    pool = command_pool(seed)
    batches = [pool[k : k + BATCH] for k in range(0, len(pool) - BATCH + 1, BATCH)]
    c = SimCluster(n=n, seed=seed)
    leader = c.check_one_leader()
    base_applied = len(c.applied(leader))
    base_rpcs = c.rpc_count()
    base_bytes = c.bytes_sent()
    base_virtual = c.now

    dropped = 0
    k = 0
    start = time.perf_counter()
    cpu_start = time.process_time()
    deadline = start + duration
    while True:
        if c.start_batch(leader, batches[k % len(batches)]) < 0:
            dropped += 1
            if c.raft(leader).role is not Role.LEADER:
                raise RuntimeError(f"node {leader} lost leadership during the benchmark")
        k += 1
        c.run_for(VIRTUAL_STEP)
        if k % 16 == 0 and time.perf_counter() >= deadline:
            break
    # Drain: run until every node applied everything the leader appended.
    last = c.raft(leader).log.last_index()
    give_up = c.now + 30.0
    while any(c.raft(i).log.applied < last for i in range(n)):
        if c.now > give_up:
            raise RuntimeError(f"entries up to {last} not applied everywhere after 30 virtual s")
        c.run_for(VIRTUAL_STEP)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start

    applied = [len(c.applied(i)) - base_applied for i in range(n)]
    entries = min(applied)
    if entries != (k - dropped) * BATCH:
        raise RuntimeError(f"applied {applied}, expected {(k - dropped) * BATCH} on every node")
    name = f"sim_{n}node"
    return {
        f"{name}_entries_per_s": entries / wall,
        f"{name}_entries_per_cpu_s": entries / cpu,
        f"{name}_rpc_per_s": (c.rpc_count() - base_rpcs) / wall,
        f"{name}_bytes_per_entry": (c.bytes_sent() - base_bytes) / entries,
        f"{name}_virtual_s": c.now - base_virtual,
        f"{name}_wall_s": wall,
        f"{name}_cpu_s": cpu,
        f"{name}_dropped_batches": float(dropped),
    }


def run() -> dict[str, float]:
    """Measure a 3-node and a 5-node cluster; return the results by name."""
    results: dict[str, float] = {}
    for n in (3, 5):
        r = measure(n)
        name = f"sim_{n}node"
        entries = r[f"{name}_entries_per_s"]
        target = TARGETS.get(f"{name}_entries_per_s")
        goal = f"(target {target[0]} {target[1]:,.0f})" if target else "(no target)"
        print(
            f"{n}-node: {entries:>10,.0f} entries/s {goal}  {r[f'{name}_rpc_per_s']:>8,.0f} rpc/s"
            f"  {r[f'{name}_bytes_per_entry']:.1f} bytes/entry  "
            f"{r[f'{name}_virtual_s']:.2f} virtual s in {r[f'{name}_wall_s']:.2f} wall s "
            f"({r[f'{name}_cpu_s']:.2f} CPU s)",
            flush=True,
        )
        results.update(r)
    return results


if __name__ == "__main__":
    run()
