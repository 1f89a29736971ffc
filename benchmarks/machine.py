"""What the process benchmarks need of this machine: free local ports and its load."""

from __future__ import annotations

import os
import socket


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (all bound at once, so they differ)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def load_text() -> str:
    """The load averages, for result lines ("load 1.20 0.80 0.55")."""
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())
