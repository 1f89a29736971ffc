"""What the process benchmarks need of this machine: free local ports, its load, a scratch
directory, and their ``RAFTPY_BENCH_*`` settings."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from raftpy.transport.address import free_ports

__all__ = ["env_float", "free_ports", "load_text", "scratch_dir"]


def load_text() -> str:
    """The load averages, for result lines ("load 1.20 0.80 0.55")."""
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


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
