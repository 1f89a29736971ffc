"""What the process benchmarks need of this machine: free local ports and its load."""

from __future__ import annotations

import os

from raftpy.transport.address import free_ports

__all__ = ["free_ports", "load_text"]


def load_text() -> str:
    """The load averages, for result lines ("load 1.20 0.80 0.55")."""
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())
