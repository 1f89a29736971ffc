"""Writes against the size of the state: ``python -m benchmarks state_size``.

Three ``python -m raftpy.examples.hashmap server`` processes (fsync on, default snapshot
settings, the cluster benchmark's timeouts) and a separate client process keeping 256 hashmap
``put`` requests of 100-byte values in flight (as ``bench_cluster``'s ``inflight256``):

1. ``small_writes_per_s``: the map holds 4,096 keys (every write replaces one of them), for
   ``RAFTPY_BENCH_SECONDS`` (default 15 s); then such writes go on until 1,000,000 were made
   (``RAFTPY_BENCH_STATE_KEYS``), and a follower restarts (``small_restart_*``, as in 4);
2. the map is filled to ``RAFTPY_BENCH_STATE_KEYS`` distinct keys (default 1,000,000; about
   113 MB of snapshot), 256 in flight (``fill_writes_per_s``);
3. ``large_writes_per_s``: as 1, over all those keys (each write replaces one; a stride walks
   the whole map), for the same time; ``large_vs_small`` is its ratio to 1. What a large state
   costs is the snapshots: the example freezes its map (raftpy.examples.versioned_map; it
   copied it on the event loop before 2026-12-07) and encodes it in a worker thread;
   ``NodeConfig.snapshot_ratio`` (README "Snapshots") paces them by their size. The
   snapshots each node took in 1 and 3 are printed: at the default ratio (1) a node with a
   million keys snapshots about once a minute at these rates, so a 15 s window often holds
   none; ``RAFTPY_BENCH_SECONDS=90`` averages over at least one;
4. ``large_restart_*``: a follower is killed (SIGKILL) and started again on its data dir.
   ``*_serving_s``: from its start to its first answer (the process started, the newest
   snapshot restored and the log after it replayed); ``*_s``: to the moment it reports applied
   everything the leader had committed when it was killed; ``*_peak_rss_mb``: its peak RSS
   (``VmHWM``) by then, against ``*_steady_rss_mb``, the other follower's RSS.

``RAFTPY_BENCH_STATE_SERVER_ARGS`` adds server options (e.g. ``--snapshot-ratio 0`` for the
pacing off, the behaviour before it existed). ``RAFTPY_BENCH_KEEP=1`` keeps the data dirs and
logs. Every process started here is killed in a ``finally``.

Alone: ``python -m benchmarks.bench_state_size`` prints the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.bench_cluster import _RaftCluster, spawn_server
from benchmarks.bench_members import fill
from benchmarks.loadgen import VALUE_BYTES, WARMUP, _CpuMeter, _drive, _line, _run_load, _run_loop
from benchmarks.machine import env_float, load_text, scratch_dir

TARGETS: dict[str, tuple[str, float]] = {
    "large_vs_small": (">=", 0.9),
    "small_restart_s": ("<=", 1.0),
}

SMALL_KEYS = 4096
INFLIGHT = 256
STRIDE = 7919  # prime: k * STRIDE % keys walks every key


# ----------------------------------------------------------------------------------------------
# The client process: ``python -m benchmarks.bench_state_size load|fill ...``
# ----------------------------------------------------------------------------------------------


def _command(key: int) -> bytes:
    import msgspec

    return msgspec.msgpack.encode(("put", f"k{key:08d}", _TEXT))


_TEXT = json.dumps("v" * (VALUE_BYTES - 2))  # 100 bytes of JSON text, as bench_cluster's


async def _client(mode: str, keys: int, amount: float, addresses: list[str]) -> None:
    """``fill``: write ``amount`` commands over ``keys`` keys in turn; ``load``: keep writing
    for ``amount`` seconds, the figures measured in a window after a warm-up."""
    from raftpy.client import Client

    client = Client(addresses, timeout=10.0)
    await client.propose(_command(0))  # connect and find the leader before the clock runs
    try:
        if mode == "fill":
            started = time.perf_counter()
            count = int(amount)
            await fill(client, lambda k: _command(k % keys), count, INFLIGHT)
            elapsed = time.perf_counter() - started
            result: dict[str, Any] = {"writes": count, "seconds": elapsed}
        else:

            async def issue(w: int, k: int) -> None:
                await client.propose(_command(k * STRIDE % keys))

            result = await _drive(issue, INFLIGHT, amount, WARMUP)
    finally:
        await client.close()
    print("result " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------------------------
# The parent
# ----------------------------------------------------------------------------------------------


def _rss_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _snapshots_taken(cluster: _RaftCluster) -> dict[int, int]:
    st = await cluster.statuses()
    return {i: (s.snapshot.taken if s.snapshot else 0) for i, s in sorted(st.items())}


class _StateCluster(_RaftCluster):
    """The cluster benchmark's three servers, with extra server options."""

    def __init__(self, root: Path, extra: list[str]) -> None:
        super().__init__(root)
        self.extra = extra

    def start(self, i: int) -> None:
        members: list[str] = []
        for j in self.ids:
            members += [str(j), self.address(j)]
        self.procs[i] = spawn_server(self.root, i, self.ports[i], [*members, *self.extra])


async def _phase(
    cluster: _StateCluster, title: str, mode: str, keys: int, amount: float
) -> dict[str, Any]:
    leader = await cluster.stable_leader(timeout=120)
    pids = {f"node{i}{'*' if i == leader else ''}": cluster.procs[i].pid for i in cluster.ids}
    meter = _CpuMeter(pids)
    load = load_text()
    before = await _snapshots_taken(cluster)
    args = [mode, str(keys), str(amount), *cluster.addresses]
    timeout = 1800 if mode == "fill" else amount + 600
    result = await _run_load(args, timeout, meter, module="benchmarks.bench_state_size")
    after = await _snapshots_taken(cluster)
    taken = {i: after.get(i, 0) - before.get(i, 0) for i in cluster.ids}
    if mode == "fill":
        rate = result["writes"] / result["seconds"]
        print(
            f"  {title}: {result['writes']:,} writes in {result['seconds']:.1f} s, "
            f"{rate:,.0f} writes/s; snapshots taken {taken}; {load}",
            flush=True,
        )
        result["writes_per_s"] = rate
    else:
        print(_line(title, result, load) + f"; snapshots taken {taken}", flush=True)
        print("    " + meter.describe(result["client_cpu"]), flush=True)
    return result


async def _restart(cluster: _StateCluster, prefix: str, out: dict[str, float]) -> None:
    leader = await cluster.stable_leader(timeout=120)
    follower, other = (i for i in cluster.ids if i != leader)
    target = (await cluster.statuses([leader]))[leader].commit or 0
    cluster.kill(follower)
    cluster.procs[follower].wait(timeout=10)
    t0 = time.monotonic()
    serving = float("nan")
    cluster.start(follower)  # returns once it listens
    deadline = t0 + 120
    while True:
        st = await cluster.status(follower, timeout=0.5)
        if st is not None and serving != serving:
            serving = time.monotonic() - t0
        if st is not None and (st.applied or 0) >= target:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"node {follower} did not catch up within 120 s")
        await asyncio.sleep(0.005)
    applied = time.monotonic() - t0
    out[f"{prefix}_serving_s"] = serving
    out[f"{prefix}_s"] = applied
    out[f"{prefix}_peak_rss_mb"] = _rss_mb(cluster.procs[follower].pid, "VmHWM")
    out[f"{prefix}_steady_rss_mb"] = _rss_mb(cluster.procs[other].pid, "VmRSS")
    snap = st.snapshot
    print(
        f"  restart: node {follower} killed at commit {target:,}; serving {serving:.3f} s "
        f"after its start, applied it after {applied:.3f} s (from snapshot "
        f"{snap.index if snap else 0:,}), peak RSS {out[f'{prefix}_peak_rss_mb']:.0f} MB "
        f"(node {other}: {out[f'{prefix}_steady_rss_mb']:.0f} MB)",
        flush=True,
    )


async def _suite() -> dict[str, float]:
    keys = int(env_float("RAFTPY_BENCH_STATE_KEYS", 1_000_000))
    seconds = env_float("RAFTPY_BENCH_SECONDS", 15.0)
    extra = shlex.split(os.environ.get("RAFTPY_BENCH_STATE_SERVER_ARGS", ""))
    out: dict[str, float] = {"state_keys": keys}
    with scratch_dir("raftpy-bench-state-") as root:
        cluster = _StateCluster(root, extra)
        try:
            await _phases(cluster, keys, seconds, out)
        finally:
            cluster.stop_all()
            await cluster.close()
    return out


async def _phases(cluster: _StateCluster, keys: int, seconds: float, out: dict[str, float]) -> None:
    for i in cluster.ids:
        cluster.start(i)
    print(f"3 nodes up (server options {cluster.extra or 'default'}); {load_text()}", flush=True)
    small = await _phase(cluster, f"{SMALL_KEYS:,} keys", "load", SMALL_KEYS, seconds)
    # Go on over the small map until the log holds ``keys`` writes: the restart below is one
    # after that many writes with a small state.
    statuses = await cluster.statuses()
    more = keys - max((s.commit or 0 for s in statuses.values()), default=0)
    if more > 0:
        title = f"{more:,} more writes over {SMALL_KEYS:,} keys"
        await _phase(cluster, title, "fill", SMALL_KEYS, more)
    await _restart(cluster, "small_restart", out)
    fill = await _phase(cluster, f"filling to {keys:,} keys", "fill", keys, keys)
    large = await _phase(cluster, f"{keys:,} keys", "load", keys, seconds)
    out["small_writes_per_s"] = small["writes_per_s"]
    out["fill_writes_per_s"] = fill["writes_per_s"]
    out["large_writes_per_s"] = large["writes_per_s"]
    out["large_vs_small"] = large["writes_per_s"] / small["writes_per_s"]
    out["large_p99_ms"] = large["p99_ms"]
    await _restart(cluster, "large_restart", out)


def run() -> dict[str, float]:
    return asyncio.run(_suite())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_state_size")
    sub = parser.add_subparsers(dest="mode")
    for mode in ("load", "fill"):
        p = sub.add_parser(mode, help="(internal) a load client process")
        p.add_argument("keys", type=int)
        p.add_argument("seconds", type=float)
        p.add_argument("addresses", nargs="+")
    args = parser.parse_args(argv)
    if args.mode in ("load", "fill"):
        _run_loop(_client(args.mode, args.keys, args.seconds, args.addresses))
    else:
        for key, value in run().items():
            print(f"{key:24} {value:,.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
