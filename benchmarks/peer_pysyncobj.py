"""PySyncObj as a peer of the cluster benchmark (:mod:`benchmarks.bench_cluster`).

``pysyncobj_nofsync_*``: PySyncObj (``pip install pysyncobj``, in the ``bench`` extra), 3
processes on loopback each holding a ``SyncObj`` with a ``@replicated`` ``set`` of 100-byte
values over 4,096 keys, with its defaults: no journal, so nothing is written to disk (no
fsync, as the results' names say: every other system in the comparison fsyncs each
acknowledged write). PySyncObj has no client protocol, so the load is generated inside the
leader's process (callbacks on commit): no client hop, which favours it. Its defaults tick
every 50 ms, and one write waits for several ticks, hence its single-writer figures.
Without PySyncObj the suite prints a note and reports nothing.

A member: ``python -m benchmarks.peer_pysyncobj node <self> <partners>...``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.loadgen import (
    KEYS,
    VALUE_BYTES,
    WARMUP,
    _Child,
    _CpuMeter,
    _line,
    _pct,
    _report,
)
from benchmarks.machine import free_ports, load_text

MODULE = "benchmarks.peer_pysyncobj"
PREFIX = "pysyncobj_nofsync"  # its results say what it does not do


def _syncobj_node(self_address: str, partners: list[str]) -> None:
    """A PySyncObj member. Stdin commands: ``status`` -> ``status {"leader": bool, ...}``;
    ``load <inflight> <seconds>`` -> (on the leader) ``result {...}``, else ``result
    {"not_leader": true}``. Exits at EOF."""
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

    class KV(SyncObj):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(self_address, partners, SyncObjConf())
            self.data: dict[str, str] = {}

        @replicated  # type: ignore[untyped-decorator]
        def set(self, key: str, value: str) -> None:
            self.data[key] = value

    kv = KV()
    value = "v" * VALUE_BYTES
    keys = [f"key{k:05d}" for k in range(KEYS)]

    def load(inflight: int, seconds: float) -> dict[str, Any]:
        sem = threading.Semaphore(inflight)
        done: list[tuple[float, float]] = []
        errors: list[int] = []
        begin = time.perf_counter()
        w_start = begin + WARMUP
        w_end = w_start + seconds
        k = 0
        cpu0 = cpu1 = 0.0
        while True:
            now = time.perf_counter()
            if now >= w_end:
                break
            if not cpu0 and now >= w_start:
                cpu0 = time.process_time()
            if not sem.acquire(timeout=1.0):
                continue

            def callback(result: object, error: int, t0: float = now) -> None:
                t1 = time.perf_counter()
                if error == FAIL_REASON.SUCCESS:
                    done.append((t1, t1 - t0))
                else:
                    errors.append(error)
                sem.release()

            kv.set(keys[k % KEYS], value, callback=callback)
            k += 1
        cpu1 = time.process_time()
        for _ in range(inflight):  # wait for the stragglers
            sem.acquire(timeout=5.0)
        window = sorted(lat for end, lat in done if w_start <= end < w_end)
        return {
            "writes": len(window),
            "seconds": seconds,
            "writes_per_s": len(window) / seconds,
            "p50_ms": _pct(window, 0.5) * 1e3,
            "p99_ms": _pct(window, 0.99) * 1e3,
            "errors": len(errors),
            "client_cpu": (cpu1 - cpu0) / seconds,
        }

    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "status":
            status = kv.getStatus()
            leader = status.get("leader")
            info = {
                "ready": kv.isReady(),
                "leader": str(leader) if leader is not None else None,
                "self": self_address,
            }
            print("status " + json.dumps(info), flush=True)
        elif parts[0] == "load":
            if str(kv.getStatus().get("leader")) != self_address:
                print('result {"not_leader": true}', flush=True)
            else:
                print("result " + json.dumps(load(int(parts[1]), float(parts[2]))), flush=True)
    kv.destroy()


async def pysyncobj_suite(out: dict[str, float], seconds: float) -> None:
    if importlib.util.find_spec("pysyncobj") is None:
        print("pysyncobj: not installed (pip install pysyncobj); skipped", flush=True)
        return
    ports = free_ports(3)
    addresses = [f"127.0.0.1:{p}" for p in ports]
    nodes: list[_Child] = []
    try:
        for a in addresses:
            nodes.append(
                await _Child.start("node", a, *[b for b in addresses if b != a], module=MODULE)
            )
        leader: _Child | None = None
        deadline = time.monotonic() + 30
        while leader is None and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            for node, a in zip(nodes, addresses, strict=True):
                await node.send("status")
                st = json.loads((await node.line(5))[len("status ") :])
                if st["ready"] and st["leader"] == a:
                    leader = node
        if leader is None:
            raise RuntimeError("pysyncobj elected no leader within 30 s")
        pids = {f"syncobj{k}{'*' if n is leader else ''}": n.proc.pid for k, n in enumerate(nodes)}
        print(
            "pysyncobj: 3 nodes up, NO FSYNC (no journal: nothing written to disk), the load "
            f"generated in the leader's process (no client hop); {load_text()}",
            flush=True,
        )
        for prefix, inflight in ((f"{PREFIX}_single", 1), (f"{PREFIX}_inflight256", 256)):
            meter = _CpuMeter(pids)
            load = load_text()
            await leader.send(f"load {inflight} {seconds}")
            await asyncio.sleep(WARMUP)
            meter("start")
            result = json.loads((await leader.line(seconds + 60))[len("result ") :])
            meter("end")
            if result.get("not_leader"):
                raise RuntimeError("the pysyncobj leader changed")
            print(_line(f"pysyncobj, {inflight} in flight", result, load), flush=True)
            print("    " + meter.describe(0.0).replace(", client 0.00", ""), flush=True)
            out.update(_report(prefix, result))
    finally:
        for node in nodes:
            await node.reap()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}")
    sub = parser.add_subparsers(dest="mode", required=True)
    p_node = sub.add_parser("node", help="(internal) a PySyncObj member")
    p_node.add_argument("self_address")
    p_node.add_argument("partners", nargs="+")
    args = parser.parse_args(argv)
    _syncobj_node(args.self_address, args.partners)
    return 0


if __name__ == "__main__":
    sys.exit(main())
