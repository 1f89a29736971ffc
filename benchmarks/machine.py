"""What the process benchmarks need of this machine: free local ports, its load, how fast its
CPU runs Python today, a scratch directory, raftpy's modules compiled, and their
``RAFTPY_BENCH_*`` settings."""

from __future__ import annotations

import compileall
import contextlib
import functools
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import raftpy
from raftpy.transport.address import free_ports

__all__ = ["compile_raftpy", "cpu_reference", "env_float", "free_ports", "load_text", "scratch_dir"]


@functools.cache
def compile_raftpy() -> bool:
    """Write raftpy's compiled modules beside its sources (once per process; a few ms when
    they are up to date), so the servers a benchmark starts load them as an installed package
    does. With an editable install and ``PYTHONDONTWRITEBYTECODE`` set, nothing else writes
    them: every process start would compile ~150 modules again (0.3-0.5 s of CPU on a 2-core
    VM), most of what a small state's restart measures. Python still checks each against its
    source, so an edit is never served stale. False when some could not be written (a
    read-only install: its own are used)."""
    return bool(compileall.compile_dir(Path(raftpy.__file__).parent, quiet=2))


def load_text() -> str:
    """The load averages, for result lines ("load 1.20 0.80 0.55")."""
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


class _Point:
    __slots__ = ("x", "y")

    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y


def _combine(a: int, b: int) -> int:
    return (a * 31 + b) & 0xFFFF


def _reference_work(n: int) -> int:
    """A fixed mix of what raftpy's hot paths do in Python: calls, small objects with slots,
    attribute reads, dict stores. It never changes, so its speed measures the CPU only."""
    table: dict[int, _Point] = {}
    total = 0
    for i in range(n):
        point = _Point(i, i + 1)
        table[i & 255] = point
        total += _combine(point.x, point.y)
    return total


def cpu_reference(rounds: int = 5, n: int = 200_000) -> float:
    """Millions of iterations per second of a fixed pure-Python loop, the best of ``rounds``.

    The CPU of this virtual machine runs the same code up to 1.6 times faster on one day than
    on another; a benchmark that reports wall-clock or CPU time is comparable across days only
    next to this figure."""
    best = float("inf")
    for _ in range(rounds):
        began = time.perf_counter()
        _reference_work(n)
        best = min(best, time.perf_counter() - began)
    return n / best / 1e6


def env_float(name: str, default: float) -> float:
    """The number in environment variable ``name``; ``default`` when unset or empty."""
    raw = os.environ.get(name)
    return default if raw in (None, "") else float(raw)


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A new directory under ``/tmp`` for data dirs and logs, deleted afterwards unless
    ``RAFTPY_BENCH_KEEP=1`` (then its path is printed)."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield root
    finally:
        if os.environ.get("RAFTPY_BENCH_KEEP") == "1":
            print(f"(kept {root})")
        else:
            shutil.rmtree(root, ignore_errors=True)
