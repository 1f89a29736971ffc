"""Cluster sizes and value sizes: ``python -m benchmarks shapes``.

``python -m raftpy.examples.hashmap server`` processes on 127.0.0.1 (fsync on, default
settings, the cluster benchmark's timeouts) and a separate client process writing hashmap
``put`` commands over 4,096 keys, as ``bench_cluster`` does:

- ``three_*`` and ``five_*``: 3 and then 5 servers, each with 1 request in flight
  (``*_single_p50_ms``, ``*_single_p99_ms``) for ``RAFTPY_BENCH_SINGLE_SECONDS`` (default 5 s)
  and with 256 in flight (``*_writes_per_s``) for ``RAFTPY_BENCH_SECONDS`` (default 10 s), with
  100-byte values; ``five_vs_three`` is the ratio of the 256-in-flight figures (a leader of
  five sends every entry to four followers instead of two);
- ``kib1_*`` and ``kib16_*``: 3 servers, 256 in flight, values of 1 KiB and 16 KiB:
  writes/s and ``*_mb_per_s`` (value bytes written per second, MB = 10**6 bytes).

Each figure comes from a window after a 1 s warm-up; latencies are per request, measured in
the client. ``RAFTPY_BENCH_KEEP=1`` keeps the data dirs and logs. Every process started here
is killed in a ``finally``.

Alone: ``python -m benchmarks.bench_shapes`` prints the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.bench_cluster import _RaftCluster
from benchmarks.loadgen import KEYS, WARMUP, _CpuMeter, _drive, _line, _run_load, _run_loop
from benchmarks.machine import env_float, load_text, scratch_dir

TARGETS: dict[str, tuple[str, float]] = {
    "five_vs_three": (">=", 0.8),
}


# ----------------------------------------------------------------------------------------------
# The client process: ``python -m benchmarks.bench_shapes load ...``
# ----------------------------------------------------------------------------------------------


async def _client(inflight: int, seconds: float, value_bytes: int, addresses: list[str]) -> None:
    import msgspec

    from raftpy.client import Client

    text = json.dumps("v" * (value_bytes - 2))  # its JSON text is value_bytes long
    commands = [msgspec.msgpack.encode(("put", f"key{k:05d}", text)) for k in range(KEYS)]
    client = Client(addresses, timeout=10.0)
    await client.propose(commands[0])  # connect and find the leader before the clock runs

    async def issue(w: int, k: int) -> None:
        await client.propose(commands[k % KEYS])

    try:
        result = await _drive(issue, inflight, seconds, WARMUP)
    finally:
        await client.close()
    print("result " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------------------------
# The parent
# ----------------------------------------------------------------------------------------------


async def _measure(
    cluster: _RaftCluster, title: str, inflight: int, seconds: float, value_bytes: int
) -> dict[str, float]:
    leader = await cluster.stable_leader(timeout=60)
    pids = {f"node{i}{'*' if i == leader else ''}": cluster.procs[i].pid for i in cluster.ids}
    meter = _CpuMeter(pids)
    load = load_text()
    args = ["load", str(inflight), str(seconds), str(value_bytes), *cluster.addresses]
    result = await _run_load(args, seconds + 120, meter, module="benchmarks.bench_shapes")
    print(_line(title, result, load), flush=True)
    print("    " + meter.describe(result["client_cpu"]), flush=True)
    return {k: float(result[k]) for k in ("writes_per_s", "p50_ms", "p99_ms")}


async def _cluster_of(root: Path, n: int, out: dict[str, float], prefix: str) -> None:
    single_s = env_float("RAFTPY_BENCH_SINGLE_SECONDS", 5.0)
    full_s = env_float("RAFTPY_BENCH_SECONDS", 10.0)
    (root / prefix).mkdir()
    cluster = _RaftCluster(root / prefix, n)
    try:
        for i in cluster.ids:
            cluster.start(i)
        print(f"{n} servers up; {load_text()}", flush=True)
        single = await _measure(cluster, f"{n} servers, 1 in flight", 1, single_s, 100)
        out[f"{prefix}_single_p50_ms"] = single["p50_ms"]
        out[f"{prefix}_single_p99_ms"] = single["p99_ms"]
        full = await _measure(cluster, f"{n} servers, 256 in flight", 256, full_s, 100)
        out[f"{prefix}_writes_per_s"] = full["writes_per_s"]
        if n == 3:
            for kib in (1, 16):
                title = f"{n} servers, 256 in flight, {kib} KiB values"
                sized = await _measure(cluster, title, 256, full_s, kib * 1024)
                out[f"kib{kib}_writes_per_s"] = sized["writes_per_s"]
                out[f"kib{kib}_mb_per_s"] = sized["writes_per_s"] * kib * 1024 / 1e6
    finally:
        cluster.stop_all()
        await cluster.close()


async def _suite() -> dict[str, float]:
    out: dict[str, float] = {}
    with scratch_dir("raftpy-bench-shapes-") as root:
        await _cluster_of(root, 3, out, "three")
        await _cluster_of(root, 5, out, "five")
    out["five_vs_three"] = out["five_writes_per_s"] / out["three_writes_per_s"]
    return out


def run() -> dict[str, float]:
    return asyncio.run(_suite())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_shapes")
    sub = parser.add_subparsers(dest="mode")
    p = sub.add_parser("load", help="(internal) a load client process")
    p.add_argument("inflight", type=int)
    p.add_argument("seconds", type=float)
    p.add_argument("value_bytes", type=int)
    p.add_argument("addresses", nargs="+")
    args = parser.parse_args(argv)
    if args.mode == "load":
        _run_loop(_client(args.inflight, args.seconds, args.value_bytes, args.addresses))
    else:
        for key, value in run().items():
            print(f"{key:24} {value:,.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
