"""What mutual TLS costs end to end: ``python -m benchmarks tls``.

The cluster benchmark's full-load run (three ``raftpy.examples.hashmap`` server processes on
loopback, fsync on, a separate client process keeping 256 puts of 100-byte values in flight;
see :mod:`benchmarks.bench_cluster`), once with plain TCP and once with mutual TLS on every
connection (certificates from ``raftpy tls init``: ECDSA P-256, TLS 1.3), in
``RAFTPY_BENCH_TLS_ROUNDS`` (default 3) alternating pairs of ``RAFTPY_BENCH_TLS_SECONDS``
(default 8 s) each: a fresh cluster per run, plain then TLS. Pairing keeps the ratio meaningful
when the machine's speed drifts (other work on a shared machine).

- ``plain_writes_per_s`` / ``tls_writes_per_s``: the median of the runs;
- ``tls_writes_ratio``: the median of each pair's TLS / plain ratio (target: at least 0.85,
  that is at most 15% fewer writes per second with TLS);
- ``tls_p50_ms`` / ``tls_p99_ms``: the latencies of the TLS run of the median pair;
- ``plain_cpu_us_per_write`` / ``tls_cpu_us_per_write`` / ``tls_cpu_ratio``: the CPU time of
  the three servers and the client per write (microseconds), and the median pair's ratio: the
  cost of TLS itself, which the rest of a shared machine's load disturbs less than the rate.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
from pathlib import Path

from benchmarks.bench_cluster import _RaftCluster
from benchmarks.loadgen import _CpuMeter, _run_load
from benchmarks.machine import env_float, load_text

TARGETS: dict[str, tuple[str, float]] = {"tls_writes_ratio": (">=", 0.85)}

INFLIGHT = 256


def make_certificates(directory: Path) -> None:
    """A CA, nodes 1-3 and client ``bench``, as ``raftpy tls init`` writes them."""
    from raftpy.cli import main as raftpy_main

    status = raftpy_main(["tls", "init", str(directory), "--nodes", "1,2,3", "--clients", "bench"])
    if status != 0:
        raise RuntimeError(f"raftpy tls init exited {status} (is cryptography installed?)")


async def one_run(root: Path, tls_dir: Path | None, seconds: float) -> dict[str, float]:
    cluster = _RaftCluster(root, tls_dir=tls_dir)
    try:
        for i in cluster.ids:
            cluster.start(i)
        await cluster.stable_leader()
        args = ["load", "raftpy", str(INFLIGHT), str(seconds), *cluster.addresses]
        if tls_dir is not None:
            args += ["--tls-dir", str(tls_dir)]
        load = load_text()
        meter = _CpuMeter({f"node{i}": cluster.procs[i].pid for i in cluster.ids})
        result = await _run_load(args, seconds + 60, meter)
        # CPU of the three servers and the client per write: what TLS costs, measured in a
        # way that other work on the machine disturbs less than the rate.
        cores = sum(meter.usage.values()) + float(result["client_cpu"])
        cpu_us = cores / max(float(result["writes_per_s"]), 1e-9) * 1e6
        kind = "tls  " if tls_dir is not None else "plain"
        print(
            f"  {kind}: {result['writes_per_s']:,.0f} writes/s, p50 {result['p50_ms']:.2f} ms, "
            f"p99 {result['p99_ms']:.2f} ms, {cpu_us:.1f} us CPU/write, "
            f"{result['errors']} errors ({load})",
            flush=True,
        )
        out = {k: float(result[k]) for k in ("writes_per_s", "p50_ms", "p99_ms")}
        out["cpu_us_per_write"] = cpu_us
        return out
    finally:
        cluster.stop_all()
        await cluster.close()


async def _suite() -> dict[str, float]:
    rounds = max(1, int(env_float("RAFTPY_BENCH_TLS_ROUNDS", 3)))
    seconds = env_float("RAFTPY_BENCH_TLS_SECONDS", 8.0)
    root = Path(tempfile.mkdtemp(prefix="raftpy-bench-tls-", dir="/tmp"))
    try:
        certs = root / "certs"
        make_certificates(certs)
        pairs: list[tuple[dict[str, float], dict[str, float]]] = []
        for k in range(rounds):
            plain = await one_run(_fresh(root, f"plain{k}"), None, seconds)
            tls = await one_run(_fresh(root, f"tls{k}"), certs, seconds)
            pairs.append((plain, tls))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ratios = [t["writes_per_s"] / p["writes_per_s"] for p, t in pairs]
    median_pair = sorted(range(len(pairs)), key=lambda k: ratios[k])[len(pairs) // 2]
    return {
        "plain_writes_per_s": statistics.median(p["writes_per_s"] for p, _ in pairs),
        "tls_writes_per_s": statistics.median(t["writes_per_s"] for _, t in pairs),
        "tls_writes_ratio": statistics.median(ratios),
        "tls_p50_ms": pairs[median_pair][1]["p50_ms"],
        "tls_p99_ms": pairs[median_pair][1]["p99_ms"],
        "plain_cpu_us_per_write": statistics.median(p["cpu_us_per_write"] for p, _ in pairs),
        "tls_cpu_us_per_write": statistics.median(t["cpu_us_per_write"] for _, t in pairs),
        "tls_cpu_ratio": statistics.median(
            t["cpu_us_per_write"] / p["cpu_us_per_write"] for p, t in pairs
        ),
    }


def _fresh(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir()
    return path


def run() -> dict[str, float]:
    return asyncio.run(_suite())


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:24} {value:,.3f}")
