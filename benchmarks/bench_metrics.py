"""What serving Prometheus metrics costs: ``python -m benchmarks metrics``.

Two 3-node hashmap clusters as real processes (fsync on, the cluster benchmark's timeouts),
one plain and one with ``--metrics`` on every node. A load client process (the cluster
benchmark's, :mod:`benchmarks.bench_cluster`) writes 100-byte values with
``RAFTPY_BENCH_METRICS_INFLIGHT`` (default 64) requests in flight for
``RAFTPY_BENCH_METRICS_SECONDS`` (default 4 s, after a 1 s warm-up) to one cluster, then the
other, ``RAFTPY_BENCH_METRICS_ROUNDS`` (default 3) times, alternating which goes first (A/B
interleaved, so drift in the machine's load hits both alike). While the metrics cluster is
loaded, this process scrapes every node's ``/metrics`` once a second, as Prometheus would.

Results: ``off_writes_per_s`` and ``on_writes_per_s`` (medians over the rounds),
``on_off_ratio`` (the median over the rounds of on / off within a round; target: at least
0.95, metrics cost within 5%), the servers' CPU per write (``off_cpu_us_per_write``,
``on_cpu_us_per_write``, ``cpu_on_off_ratio``, likewise paired: steadier than writes/s on a
busy machine), ``scrape_ms`` (the median
time of one scrape, as seen from here) and ``scrapes``. Every process started here is killed
in a ``finally``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.bench_cluster import _RaftCluster, spawn_server
from benchmarks.loadgen import _CpuMeter, _run_load
from benchmarks.machine import env_float, load_text
from raftpy.transport.address import free_ports

TARGETS = {"on_off_ratio": (">=", 0.95)}


class _MetricsCluster(_RaftCluster):
    """The benchmark's cluster with ``--metrics`` on every node."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.metrics_ports = dict(zip(self.ids, free_ports(len(self.ids)), strict=True))

    def start(self, i: int) -> None:
        members: list[str] = []
        for j in self.ids:
            members += [str(j), self.address(j)]
        metrics = ["--metrics", f"127.0.0.1:{self.metrics_ports[i]}"]
        self.procs[i] = spawn_server(self.root, i, self.ports[i], [*members, *metrics])


def _scrape(port: int) -> float:
    """Scrape ``127.0.0.1:port`` once; the seconds it took."""
    start = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        r.read()
    return time.perf_counter() - start


async def _scraper(ports: list[int], took: list[float]) -> None:
    """Scrape every port once a second until cancelled (as Prometheus does per target)."""
    while True:
        for port in ports:
            took.append(await asyncio.to_thread(_scrape, port))
        await asyncio.sleep(1.0)


async def _window(cluster: _RaftCluster, inflight: int, seconds: float) -> tuple[float, float]:
    """One load window: (writes per second, the servers' CPU microseconds per write)."""
    args = ["load", "raftpy", str(inflight), str(seconds), *cluster.addresses]
    meter = _CpuMeter({str(i): p.pid for i, p in cluster.procs.items()})
    result = await _run_load(args, seconds + 60, meter)
    if result["errors"]:
        print(f"    {result['errors']} client errors {result['first_errors'][:2]}", flush=True)
    writes = max(1, int(result["writes"]))
    return float(result["writes_per_s"]), sum(meter.usage.values()) * seconds / writes * 1e6


async def _suite(root: Path) -> dict[str, float]:
    seconds = env_float("RAFTPY_BENCH_METRICS_SECONDS", 4.0)
    rounds = int(env_float("RAFTPY_BENCH_METRICS_ROUNDS", 3))
    inflight = int(env_float("RAFTPY_BENCH_METRICS_INFLIGHT", 64))
    (root / "off").mkdir()
    (root / "on").mkdir()
    off = _RaftCluster(root / "off")
    on = _MetricsCluster(root / "on")
    rates: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    took: list[float] = []
    try:
        for cluster in (off, on):
            for i in cluster.ids:
                cluster.start(i)
        await off.stable_leader()
        await on.stable_leader()
        print(f"metrics: two 3-node clusters up, {inflight} in flight; {load_text()}", flush=True)
        for r in range(rounds):
            order = ("off", "on") if r % 2 == 0 else ("on", "off")
            for which in order:
                if which == "off":
                    rate, us = await _window(off, inflight, seconds)
                else:
                    scraper = asyncio.ensure_future(_scraper(list(on.metrics_ports.values()), took))
                    try:
                        rate, us = await _window(on, inflight, seconds)
                    finally:
                        scraper.cancel()
                        await asyncio.gather(scraper, return_exceptions=True)
                rates[which].append(rate)
                cpu[which].append(us)
                print(
                    f"  round {r + 1}, metrics {which}: {rate:,.0f} writes/s, "
                    f"servers' cpu {us:.0f} us/write",
                    flush=True,
                )
    finally:
        for cluster in (off, on):
            cluster.stop_all()
            await cluster.close()
    off_rate = statistics.median(rates["off"])
    on_rate = statistics.median(rates["on"])
    # Each round's pair ran back to back: the median of their ratios shrugs off a round
    # that the rest of the machine disturbed.
    ratio = statistics.median(a / b for a, b in zip(rates["on"], rates["off"], strict=True))
    cpu_ratio = statistics.median(a / b for a, b in zip(cpu["on"], cpu["off"], strict=True))
    scrape_ms = statistics.median(took) * 1000 if took else float("nan")
    print(
        f"  median: off {off_rate:,.0f}, on {on_rate:,.0f} writes/s; median ratio of the "
        f"rounds' pairs {ratio:.3f} "
        f"({len(took)} scrapes, median {scrape_ms:.2f} ms); servers' cpu per write on / off "
        f"{cpu_ratio:.3f}",
        flush=True,
    )
    return {
        "off_writes_per_s": off_rate,
        "on_writes_per_s": on_rate,
        "on_off_ratio": ratio,
        "off_cpu_us_per_write": statistics.median(cpu["off"]),
        "on_cpu_us_per_write": statistics.median(cpu["on"]),
        "cpu_on_off_ratio": cpu_ratio,
        "scrape_ms": scrape_ms,
        "scrapes": float(len(took)),
    }


def run() -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="raftpy-bench-metrics-"))
    try:
        return asyncio.run(_suite(root))
    finally:
        if not os.environ.get("RAFTPY_BENCH_KEEP"):
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    for name, value in run().items():
        print(f"{name} {value:.3f}")
