"""Membership changes on real processes: ``python -m benchmarks members``.

Three ``python -m raftpy.examples.hashmap server`` processes on 127.0.0.1 (fsync on, default
snapshots, the cluster benchmark's timeouts), then:

- ``learner_catchup_*``: ``RAFTPY_BENCH_MEMBER_ENTRIES`` (default 100,000) hashmap writes of 100
  bytes are committed first; then a fourth server starts with an empty data dir and ``--join``.
  ``learner_catchup_s`` is the time from its start to the moment it is a voter (it adds itself
  as a learner, catches up by snapshot and log, and promotes itself), ``learner_applied_s`` to
  the moment it has applied everything committed before it started.
- ``change_*``: a client keeps 16 writes in flight throughout while the membership changes:
  a fifth server joins (learner, then promoted), then servers 5 and 4 are removed. Writes
  completed per second are reported before the first change (``change_before_ops``), while a
  change is in progress (``change_during_ops``: from the first request of a change to the moment
  it is committed, all changes together), and after the last one (``change_after_ops``);
  ``change_min_bucket_ops`` is the slowest 0.25 s bucket during changes, per second, and
  ``change_failed_writes`` the writes that did not succeed (definite or unknown outcome);
  ``change_add_ops`` covers the join alone (the new server's start-up and catch-up share the
  machine's cores with the cluster), ``change_remove_ops`` the two removals.

Every process started here is killed in a ``finally``; ``RAFTPY_BENCH_KEEP=1`` keeps the data
dirs and logs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.bench_cluster import _hashmap_commands, spawn_server
from benchmarks.loadgen import _kill_all
from benchmarks.machine import free_ports

BUCKET = 0.25


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw is None else int(raw)


class _Cluster:
    """Hashmap servers as processes: ``1..3`` bootstrap the cluster, later ones join."""

    def __init__(self, root: Path, max_nodes: int = 5) -> None:
        self.root = root
        self.ports = dict(zip(range(1, max_nodes + 1), free_ports(max_nodes), strict=True))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def address(self, i: int) -> str:
        return f"127.0.0.1:{self.ports[i]}"

    def start(self, i: int, join: list[int] | None = None) -> None:
        if join is None:
            members: list[str] = []
            for j in (1, 2, 3):
                members += [str(j), self.address(j)]
            extra: list[str] = []
        else:
            members = [str(i), self.address(i)]
            extra = ["--join", *(self.address(j) for j in join)]
        self.procs[i] = spawn_server(self.root, i, self.ports[i], [*members, *extra])

    def stop(self, i: int) -> None:
        proc = self.procs.pop(i)
        _kill_all([proc])

    def stop_all(self) -> None:
        _kill_all(list(self.procs.values()))


async def _wait_for(what: str, check: Any, timeout: float) -> float:
    """Poll the coroutine function ``check`` until it returns true; return when."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await check():
                return time.monotonic()
        except Exception:  # a node not up yet, a redirect race: poll again
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{what}: not within {timeout} s")


async def fill(
    client: Any, command: Callable[[int], bytes], count: int, inflight: int = 256
) -> None:
    """Propose ``command(k)`` for k in ``0..count-1``, ``inflight`` at a time."""
    next_k = 0

    async def worker() -> None:
        nonlocal next_k
        while next_k < count:
            k = next_k
            next_k += 1
            await client.propose(command(k))

    await asyncio.gather(*(worker() for _ in range(inflight)))


async def _suite(root: Path, out: dict[str, float]) -> None:
    from raftpy.client import Client

    entries = _env_int("RAFTPY_BENCH_MEMBER_ENTRIES", 100_000)
    commands = _hashmap_commands()
    cluster = _Cluster(root)
    client = Client([cluster.address(i) for i in (1, 2, 3)], timeout=10.0)
    try:
        for i in (1, 2, 3):
            cluster.start(i)
        await _wait_for("a leader", lambda: client.members(), 30)
        t0 = time.monotonic()
        await fill(client, lambda k: commands[k % len(commands)], entries)
        fill_s = time.monotonic() - t0
        print(f"members: {entries} writes committed in {fill_s:.1f} s", flush=True)
        leader_commit = (await client.status(cluster.address(1))).commit or 0

        # (a) a learner catches up and is promoted
        start = time.monotonic()
        cluster.start(4, join=[1, 2, 3])

        async def is_voter() -> bool:
            return 4 in (await client.members()).voters

        async def applied_all() -> bool:
            st = await client.status(cluster.address(4), timeout=0.5)
            return (st.applied or 0) >= leader_commit

        applied_at = await _wait_for("node 4 applied", applied_all, 300)
        voter_at = await _wait_for("node 4 a voter", is_voter, 300)
        out["learner_catchup_s"] = voter_at - start
        out["learner_applied_s"] = applied_at - start
        print(
            f"members: node 4 applied {leader_commit} entries after "
            f"{out['learner_applied_s']:.2f} s, voter after {out['learner_catchup_s']:.2f} s",
            flush=True,
        )

        # (b) writes while the membership changes
        done: list[float] = []
        failed = 0
        stop = False

        async def writer(w: int) -> None:
            nonlocal failed
            k = w
            while not stop:
                try:
                    await client.propose(commands[k % len(commands)])
                    done.append(time.monotonic())
                except Exception:  # counted: any failure during a change
                    failed += 1
                k += 16

        writers = [asyncio.create_task(writer(w)) for w in range(16)]
        await asyncio.sleep(3.0)
        changes: list[tuple[float, float]] = []
        begin = time.monotonic()
        # Started from a thread: starting waits for the port, and the writers must go on.
        await asyncio.to_thread(cluster.start, 5, [1, 2, 3])

        async def five_voter() -> bool:
            return 5 in (await client.members()).voters

        changes.append((begin, await _wait_for("node 5 a voter", five_voter, 120)))
        for node in (5, 4):
            t = time.monotonic()
            await client.remove_member(node)
            changes.append((t, time.monotonic()))
            await asyncio.to_thread(cluster.stop, node)
        end = time.monotonic()
        await asyncio.sleep(3.0)
        stop = True
        await asyncio.gather(*writers)
        after_end = time.monotonic()

        def rate(lo: float, hi: float) -> float:
            return sum(1 for t in done if lo <= t < hi) / max(hi - lo, 1e-9)

        during_time = sum(hi - lo for lo, hi in changes)
        during_ops = sum(sum(1 for t in done if lo <= t < hi) for lo, hi in changes)
        buckets: list[float] = []
        for lo, hi in changes:
            t = lo
            while t < hi:
                buckets.append(rate(t, min(t + BUCKET, hi)))
                t += BUCKET
        out["change_add_ops"] = rate(*changes[0])
        out["change_remove_ops"] = sum(
            sum(1 for t in done if lo <= t < hi) for lo, hi in changes[1:]
        ) / max(sum(hi - lo for lo, hi in changes[1:]), 1e-9)
        out["change_before_ops"] = rate(begin - 3.0, begin)
        out["change_during_ops"] = during_ops / max(during_time, 1e-9)
        out["change_after_ops"] = rate(end, after_end)
        out["change_min_bucket_ops"] = min(buckets) if buckets else 0.0
        out["change_seconds"] = during_time
        out["change_failed_writes"] = float(failed)
        print(
            f"members: writes/s before {out['change_before_ops']:.0f}, during changes "
            f"{out['change_during_ops']:.0f} (slowest {BUCKET} s bucket "
            f"{out['change_min_bucket_ops']:.0f}/s, {during_time:.2f} s of changes; joining "
            f"{out['change_add_ops']:.0f}, removing {out['change_remove_ops']:.0f}), after "
            f"{out['change_after_ops']:.0f}; {failed} writes failed",
            flush=True,
        )
    finally:
        cluster.stop_all()
        await client.close()


def run() -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="raftpy-bench-members-"))
    out: dict[str, float] = {}
    try:
        asyncio.run(_suite(root, out))
    finally:
        if os.environ.get("RAFTPY_BENCH_KEEP"):
            print(f"members: kept {root}", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return out


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key}: {value:.3f}")
