"""Reads on real processes by consistency: ``python -m benchmarks reads``.

Three ``python -m raftpy.examples.hashmap server`` processes on 127.0.0.1 (fsync on, the
cluster benchmark's timeouts: 20 ms ticks, elections after 10-20 ticks, so a lease of
``10 - 1 - ceil(0.1 s drift / 20 ms) = 4`` ticks). One key is written, then a separate client
process (this module run as ``python -m benchmarks.bench_reads load ...``) reads it with
:class:`raftpy.client.Client` for ``RAFTPY_BENCH_READ_SECONDS`` (default 3 s) after a 1 s
warm-up, with 1 and with 64 reads in flight:

- ``linearizable_*``: ReadIndex on the leader (a heartbeat round per batch of reads);
- ``lease_*``: the leader's lease (no round while the lease holds, Thesis §6.4.1);
- ``follower_*``: linearizable reads sent to the two followers (half each), which ask the
  leader for its read index and answer from their own state machine (Thesis §6.4).

``*_reads_per_s`` and ``*_p50_ms`` per figure (``1`` / ``64`` in flight). Every process
started here is killed in a ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.bench_cluster import _RaftCluster
from benchmarks.loadgen import REPO, WARMUP, _CpuMeter, _drive
from benchmarks.machine import load_text

MODES = ("linearizable", "lease", "follower")
INFLIGHTS = (1, 64)
KEY = b"read-key"


async def _load_client(mode: str, inflight: int, seconds: float, addresses: list[str]) -> None:
    """The client process: read one key at ``mode`` with ``inflight`` reads outstanding."""
    from raftpy.client import Client

    if mode == "follower":
        clients = [Client([a], timeout=10.0) for a in addresses]
    else:
        clients = [Client(addresses, timeout=10.0)]
    consistency = "lease" if mode == "lease" else "linearizable"
    for client in clients:
        await client.query(KEY, consistency=consistency)  # connect before the clock runs

    async def issue(w: int, k: int) -> None:
        await clients[w % len(clients)].query(KEY, consistency=consistency)

    try:
        result = await _drive(issue, inflight, seconds, WARMUP)
    finally:
        for client in clients:
            await client.close()
    print("result " + json.dumps(result), flush=True)


async def _run_child(args: list[str], timeout: float, meter: _CpuMeter) -> dict[str, Any]:
    path = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.bench_reads",
        *args,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(timeout):
            while raw := await proc.stdout.readline():
                line = raw.decode().rstrip("\n")
                if line.startswith("mark "):
                    meter(line[5:])
                elif line.startswith("result "):
                    result: dict[str, Any] = json.loads(line[7:])
                    return result
        raise RuntimeError(f"load client exited (status {await proc.wait()})")
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def _suite(root: Path, out: dict[str, float]) -> None:
    seconds = float(os.environ.get("RAFTPY_BENCH_READ_SECONDS") or 3.0)
    cluster = _RaftCluster(root)
    try:
        for i in cluster.ids:
            cluster.start(i)
        leader = await cluster.stable_leader()
        await cluster.client.propose(_put(KEY.decode(), "v" * 98))
        followers = [cluster.address(i) for i in cluster.ids if i != leader]
        pids = {f"node{i}{'*' if i == leader else ''}": cluster.procs[i].pid for i in cluster.ids}
        print(f"reads: 3 nodes up, leader node {leader} (* below); {load_text()}", flush=True)
        for mode in MODES:
            addresses = followers if mode == "follower" else cluster.addresses
            for inflight in INFLIGHTS:
                meter = _CpuMeter(pids)
                args = ["load", mode, str(inflight), str(seconds), *addresses]
                r = await _run_child(args, seconds + 60, meter)
                print(
                    f"  {mode}, {inflight} in flight: {r['writes_per_s']:,.0f} reads/s, "
                    f"p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms, {r['errors']} errors "
                    f"{r['first_errors'][:1]}; {meter.describe(r['client_cpu'])}",
                    flush=True,
                )
                out[f"{mode}{inflight}_reads_per_s"] = float(r["writes_per_s"])
                out[f"{mode}{inflight}_p50_ms"] = float(r["p50_ms"])
    finally:
        cluster.stop_all()
        await cluster.close()


def _put(key: str, value: str) -> bytes:
    import msgspec

    return msgspec.msgpack.encode(("put", key, json.dumps(value)))


def run() -> dict[str, float]:
    out: dict[str, float] = {}
    root = Path(tempfile.mkdtemp(prefix="raftpy-bench-reads-"))
    try:
        asyncio.run(_suite(root, out))
    finally:
        if not os.environ.get("RAFTPY_BENCH_KEEP"):
            shutil.rmtree(root, ignore_errors=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_reads")
    sub = parser.add_subparsers(dest="cmd")
    p_load = sub.add_parser("load", help="(internal) a load client process")
    p_load.add_argument("mode", choices=MODES)
    p_load.add_argument("inflight", type=int)
    p_load.add_argument("seconds", type=float)
    p_load.add_argument("addresses", nargs="+")
    args = parser.parse_args(argv)
    if args.cmd == "load":
        asyncio.run(_load_client(args.mode, args.inflight, args.seconds, args.addresses))
        return 0
    for name, value in run().items():
        print(f"{name} {value:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
