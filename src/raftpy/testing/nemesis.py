"""The Jepsen-style harness under its former name: it lives in :mod:`raftpy.testing.jepsen`
now, one module per concern. This module re-exports its public names (and ``free_port``,
from :mod:`raftpy.transport.address`), so ``from raftpy.testing.nemesis import X`` keeps
working.
"""

from raftpy.testing.jepsen import (
    FAULTS,
    HEALED_LABEL,
    HOST,
    KILL_FAULTS,
    NEMESES,
    PARTITION_FAULTS,
    PAUSE_FAULTS,
    RECOVERY_LIMIT,
    UNSAFE_STALE_READS_ENV,
    ClientRouting,
    Cluster,
    FaultProxy,
    FaultWindow,
    JepsenCheck,
    JepsenConfig,
    JepsenResult,
    LinkFaults,
    LinkStats,
    Nemesis,
    NodeProcess,
    NodeProcessError,
    ReadConsistency,
    judge_history,
    run_jepsen,
)
from raftpy.testing.jepsen.processes import _LIVE_PROCESSES
from raftpy.transport.address import free_port

__all__ = [
    "FAULTS",
    "HEALED_LABEL",
    "HOST",
    "KILL_FAULTS",
    "NEMESES",
    "PARTITION_FAULTS",
    "PAUSE_FAULTS",
    "RECOVERY_LIMIT",
    "UNSAFE_STALE_READS_ENV",
    "_LIVE_PROCESSES",
    "ClientRouting",
    "Cluster",
    "FaultProxy",
    "FaultWindow",
    "JepsenCheck",
    "JepsenConfig",
    "JepsenResult",
    "LinkFaults",
    "LinkStats",
    "Nemesis",
    "NodeProcess",
    "NodeProcessError",
    "ReadConsistency",
    "free_port",
    "judge_history",
    "run_jepsen",
]
