"""Durable storage: FileStorage on the real file system (``python -m benchmarks
storage``). Everything runs in a temporary directory under /tmp.

Reported:

- ``append_batch256_entries_per_s``: entries of 100 B appended in batches of 256 and synced
  (one ``fdatasync`` per batch), per second;
- ``append1_sync_p50_ms`` / ``append1_sync_p99_ms``: one entry appended and synced;
- ``raw_fdatasync_p50_ms``: a bare ``os.pwrite`` of 100 B + ``os.fdatasync`` on a preallocated
  file, for comparison (the floor the disk sets);
- ``open_1m_s``: opening a data directory holding 1,000,000 entries of 100 B (written in
  batches of 256), recovery included;
- ``index_bytes_per_entry``: memory retained by the opened storage (tracemalloc, a second
  open) divided by the entries;
- ``read_1000_ms``: reading 1,000 consecutive entries (``entries(lo, lo + 1000)``), median over
  ranges not in the cache (read from the segments) — ``read_1000_cached_ms`` when cached.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
import tracemalloc

from raftpy.core.messages import Entry, EntryKind
from raftpy.core.storage import HardState
from raftpy.storage.wal import FileStorage

TARGETS: dict[str, tuple[str, float]] = {
    "append_batch256_entries_per_s": (">=", 300_000.0),
    "append1_sync_p50_ms": ("<=", 0.2),
    "open_1m_s": ("<=", 3.0),
    "index_bytes_per_entry": ("<=", 64.0),
    "read_1000_ms": ("<=", 2.0),
}

PAYLOAD = b"x" * 100


def _batch(first: int, n: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, EntryKind.COMMAND, PAYLOAD) for i in range(first, first + n)]


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_batches(root: str, batches: int = 2000) -> float:
    path = os.path.join(root, "batch")
    pool = [_batch(1 + 256 * k, 256) for k in range(batches)]
    with FileStorage(path, voters=[1]) as s:
        start = time.perf_counter()
        for k, batch in enumerate(pool):
            s.append(batch)
            s.set_hard_state(HardState(1, 1, 256 * k))
            s.sync()
        seconds = time.perf_counter() - start
    shutil.rmtree(path)
    return 256 * batches / seconds


def bench_single(root: str, n: int = 3000) -> tuple[float, float]:
    path = os.path.join(root, "single")
    pool = _batch(1, n)
    samples = []
    with FileStorage(path, voters=[1]) as s:
        for e in pool:
            t = time.perf_counter()
            s.append([e])
            s.sync()
            samples.append(time.perf_counter() - t)
    shutil.rmtree(path)
    return _pct(samples, 0.5) * 1e3, _pct(samples, 0.99) * 1e3


def bench_raw_fdatasync(root: str, n: int = 3000) -> float:
    path = os.path.join(root, "raw")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, 0, 64 << 20)
        os.fsync(fd)
        samples = []
        for k in range(n):
            t = time.perf_counter()
            os.pwrite(fd, PAYLOAD, 100 * k)
            os.fdatasync(fd)
            samples.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)
    return _pct(samples, 0.5) * 1e3


def bench_open_and_read(root: str, total: int = 1_000_000) -> dict[str, float]:
    path = os.path.join(root, "big")
    with FileStorage(path, voters=[1]) as s:
        for first in range(1, total + 1, 256):
            s.append(_batch(first, min(256, total + 1 - first)))
            s.sync()
    start = time.perf_counter()
    s = FileStorage(path)
    open_s = time.perf_counter() - start
    assert s.last_index() == total
    uncached = []
    for k in range(20):
        lo = 1 + k * 49_000
        t = time.perf_counter()
        got = s.entries(lo, lo + 1000)
        uncached.append(time.perf_counter() - t)
        assert len(got) == 1000
    cached = []
    for _ in range(20):
        t = time.perf_counter()
        s.entries(1, 1001)
        cached.append(time.perf_counter() - t)
    s.close()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    s = FileStorage(path)
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    index_only = s.index_bytes()
    s.close()
    shutil.rmtree(path)
    return {
        "open_1m_s": open_s,
        "index_bytes_per_entry": held / total,
        "index_arrays_bytes_per_entry": index_only / total,
        "read_1000_ms": statistics.median(uncached) * 1e3,
        "read_1000_cached_ms": statistics.median(cached) * 1e3,
    }


def run() -> dict[str, float]:
    root = tempfile.mkdtemp(prefix="raftpy-bench-storage-", dir="/tmp")
    try:
        out: dict[str, float] = {}
        out["append_batch256_entries_per_s"] = bench_batches(root)
        p50, p99 = bench_single(root)
        out["append1_sync_p50_ms"] = p50
        out["append1_sync_p99_ms"] = p99
        out["raw_fdatasync_p50_ms"] = bench_raw_fdatasync(root)
        out.update(bench_open_and_read(root))
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:32} {value:,.4f}")
