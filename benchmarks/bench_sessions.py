"""What client sessions cost: ``python -m benchmarks sessions``.

One 3-node hashmap cluster as real processes (fsync on, the cluster benchmark's settings). The
cluster benchmark's load client (:mod:`benchmarks.bench_cluster`) writes 100-byte values to it,
alternately with sessions (``Client(sessions=True)``, the default: every write carries its
session, sequence number and acknowledgement, and every replica keeps its result until it is
acknowledged, so a resent write is applied once; Raft thesis §6.3) and without them (plain
writes: a write resent after a lost answer may be applied twice). Each figure is taken
``RAFTPY_BENCH_SESSIONS_ROUNDS`` (default 3) times, A/B interleaved with the order swapped each
round, for ``RAFTPY_BENCH_SESSIONS_SECONDS`` (default 4 s, after a 1 s warm-up), at 1 and at
``RAFTPY_BENCH_SESSIONS_INFLIGHT`` (default 256) requests in flight.

Results: ``plain_writes_per_s`` and ``sessions_writes_per_s`` (medians, at the larger load),
``sessions_plain_ratio`` (the median over the rounds of sessions / plain within a round),
``*_cpu_us_per_write`` (the servers' CPU per write, summed over the three processes, and
``cpu_sessions_plain_ratio``), and the single writer's ``plain_p50_ms`` / ``sessions_p50_ms``
with ``p50_sessions_plain_ratio``. No target: the figures say what exactly-once costs.
Every process started here is killed in a ``finally``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
from pathlib import Path

from benchmarks.bench_cluster import _RaftCluster
from benchmarks.loadgen import _CpuMeter, _run_load
from benchmarks.machine import env_float, load_text, scratch_dir

SESSIONS_ENV = "RAFTPY_BENCH_SESSIONS"  # read by the cluster benchmark's load client


async def _window(
    cluster: _RaftCluster, inflight: int, seconds: float, sessions: bool
) -> dict[str, float]:
    """One load window: writes per second, p50 in ms and the servers' CPU us per write."""
    args = ["load", "raftpy", str(inflight), str(seconds), *cluster.addresses]
    meter = _CpuMeter({str(i): p.pid for i, p in cluster.procs.items()})
    os.environ[SESSIONS_ENV] = "1" if sessions else "0"  # the load client inherits it
    try:
        result = await _run_load(args, seconds + 60, meter)
    finally:
        os.environ.pop(SESSIONS_ENV, None)
    if result["errors"]:
        print(f"    {result['errors']} client errors {result['first_errors'][:2]}", flush=True)
    writes = max(1, int(result["writes"]))
    return {
        "rate": float(result["writes_per_s"]),
        "p50": float(result["p50_ms"]),
        "cpu": sum(meter.usage.values()) * seconds / writes * 1e6,
    }


def _paired(a: list[float], b: list[float]) -> float:
    # Each round's pair ran back to back: the median of their ratios shrugs off a round that
    # the rest of the machine disturbed.
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


async def _suite(root: Path) -> dict[str, float]:
    seconds = env_float("RAFTPY_BENCH_SESSIONS_SECONDS", 4.0)
    rounds = int(env_float("RAFTPY_BENCH_SESSIONS_ROUNDS", 3))
    inflight = int(env_float("RAFTPY_BENCH_SESSIONS_INFLIGHT", 256))
    cluster = _RaftCluster(root)
    seen: dict[tuple[str, int], list[dict[str, float]]] = {}
    try:
        for i in cluster.ids:
            cluster.start(i)
        await cluster.stable_leader()
        print(f"sessions: a 3-node cluster up; {load_text()}", flush=True)
        for r in range(rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            for load in (1, inflight):
                for sessions in order:
                    which = "sessions" if sessions else "plain"
                    got = await _window(cluster, load, seconds, sessions)
                    seen.setdefault((which, load), []).append(got)
                    print(
                        f"  round {r + 1}, {load} in flight, {which}: {got['rate']:,.0f} "
                        f"writes/s, p50 {got['p50']:.2f} ms, servers' cpu "
                        f"{got['cpu']:.0f} us/write",
                        flush=True,
                    )
    finally:
        cluster.stop_all()
        await cluster.close()

    def series(which: str, load: int, key: str) -> list[float]:
        return [w[key] for w in seen[(which, load)]]

    out = {
        "plain_writes_per_s": statistics.median(series("plain", inflight, "rate")),
        "sessions_writes_per_s": statistics.median(series("sessions", inflight, "rate")),
        "sessions_plain_ratio": _paired(
            series("sessions", inflight, "rate"), series("plain", inflight, "rate")
        ),
        "plain_cpu_us_per_write": statistics.median(series("plain", inflight, "cpu")),
        "sessions_cpu_us_per_write": statistics.median(series("sessions", inflight, "cpu")),
        "cpu_sessions_plain_ratio": _paired(
            series("sessions", inflight, "cpu"), series("plain", inflight, "cpu")
        ),
        "plain_p50_ms": statistics.median(series("plain", 1, "p50")),
        "sessions_p50_ms": statistics.median(series("sessions", 1, "p50")),
        "p50_sessions_plain_ratio": _paired(
            series("sessions", 1, "p50"), series("plain", 1, "p50")
        ),
    }
    print(
        f"  median: plain {out['plain_writes_per_s']:,.0f}, sessions "
        f"{out['sessions_writes_per_s']:,.0f} writes/s at {inflight} in flight (paired ratio "
        f"{out['sessions_plain_ratio']:.3f}); servers' cpu per write sessions / plain "
        f"{out['cpu_sessions_plain_ratio']:.3f}; single-writer p50 sessions / plain "
        f"{out['p50_sessions_plain_ratio']:.3f}",
        flush=True,
    )
    return out


def run() -> dict[str, float]:
    with scratch_dir("raftpy-bench-sessions-") as root:
        return asyncio.run(_suite(root))


if __name__ == "__main__":
    for name, value in run().items():
        print(f"{name} {value:.3f}")
