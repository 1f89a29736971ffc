"""Jepsen-style verification of a real raftpy cluster: a fault proxy, process control, nemesis
schedules, a concurrent workload and the checks that judge a run.

The pieces, usable on their own or together through :func:`run_jepsen` (and ``raftpy jepsen``):

:class:`FaultProxy` (:mod:`~raftpy.testing.jepsen.proxy`)
    An asyncio TCP proxy (no root needed) with one listening port per ordered pair of nodes,
    which blocks, delays and drops each direction of each link on its own.
:class:`NodeProcess` / :class:`Cluster` (:mod:`~raftpy.testing.jepsen.processes`)
    Server processes of ``python -m raftpy.examples.hashmap server ...`` on 127.0.0.1, each with
    its own data dir and log file: start, stop, SIGKILL, restart, SIGSTOP, SIGCONT; the leader
    found from the nodes' status. Every process is killed when the cluster is closed (and, as a
    last resort, at interpreter exit).
:class:`Nemesis` (:mod:`~raftpy.testing.jepsen.nemesis`)
    Faults chosen from a seeded random generator: partitions, SIGKILL and restart, SIGSTOP and
    SIGCONT, a flaky network, and membership changes (a node removed and added back, or
    replaced after losing its disk). See :data:`NEMESES`.
:mod:`~raftpy.testing.jepsen.workload`
    Concurrent clients doing read / write / cas on a few keys, recorded as a history (the format
    of :mod:`raftpy.testing.history`): the ``register`` workload.
:mod:`~raftpy.testing.jepsen.set_workload`
    The ``set`` workload: clients add elements no one else adds to a few sets, each add
    retried by the client through the faults; :func:`check_sets`
    (:mod:`~raftpy.testing.jepsen.set_checks`) then finds every add applied twice (a
    duplicate) and every acknowledged add missing (a loss).
:class:`WriteProgress` (:mod:`~raftpy.testing.jepsen.availability`)
    Availability by time: the gaps between successful writes, the share of a run or of a
    window not in gaps longer than :data:`GAP_THRESHOLD_NS`, and the longest gap.
:func:`judge_history` (:mod:`~raftpy.testing.jepsen.checks`)
    The checks: the history is linearizable, no acknowledged write was lost, a write succeeds
    within 5 s of healing, no node exited on its own, and (with membership faults) every node
    became a voter again after each of them.
:class:`JepsenResult` (:mod:`~raftpy.testing.jepsen.report`)
    What a run found, its summary, and the files it writes: ``history.jsonl``,
    ``timeline.html`` (and ``violation.html``), ``summary.txt``; :func:`run_line` digests a
    run in one line for reports of many runs.
:class:`JepsenConfig` (:mod:`~raftpy.testing.jepsen.config`)
    The settings of a run, each stated once (``raftpy jepsen``'s options are built from them).
:func:`run_jepsen` (:mod:`~raftpy.testing.jepsen.run`)
    A whole run: start a cluster, run ``clients`` clients on ``keys`` keys for ``seconds`` while
    the nemesis alternates quiet periods and faults, heal, check, report.
"""

from raftpy.testing.jepsen.availability import GAP_THRESHOLD_NS, Gap, WriteProgress
from raftpy.testing.jepsen.checks import RECOVERY_LIMIT, JepsenCheck, judge_history
from raftpy.testing.jepsen.config import (
    UNSAFE_STALE_READS_ENV,
    ClientRouting,
    JepsenConfig,
    Option,
    ReadConsistency,
    WorkloadKind,
)
from raftpy.testing.jepsen.nemesis import (
    FAULTS,
    HEALED_LABEL,
    KILL_FAULTS,
    MEMBER_FAULTS,
    NEMESES,
    PARTITION_FAULTS,
    PAUSE_FAULTS,
    FaultWindow,
    Nemesis,
)
from raftpy.testing.jepsen.processes import Cluster, NodeProcess, NodeProcessError
from raftpy.testing.jepsen.proxy import HOST, FaultProxy, LinkFaults, LinkStats
from raftpy.testing.jepsen.report import RUN_LINE_HEADER, JepsenResult, run_line
from raftpy.testing.jepsen.run import run_jepsen
from raftpy.testing.jepsen.set_checks import SetAdd, SetVerdict, check_sets, set_checks

__all__ = [
    "FAULTS",
    "GAP_THRESHOLD_NS",
    "HEALED_LABEL",
    "HOST",
    "KILL_FAULTS",
    "MEMBER_FAULTS",
    "NEMESES",
    "PARTITION_FAULTS",
    "PAUSE_FAULTS",
    "RECOVERY_LIMIT",
    "RUN_LINE_HEADER",
    "UNSAFE_STALE_READS_ENV",
    "ClientRouting",
    "Cluster",
    "FaultProxy",
    "FaultWindow",
    "Gap",
    "JepsenCheck",
    "JepsenConfig",
    "JepsenResult",
    "LinkFaults",
    "LinkStats",
    "Nemesis",
    "NodeProcess",
    "NodeProcessError",
    "Option",
    "ReadConsistency",
    "SetAdd",
    "SetVerdict",
    "WorkloadKind",
    "WriteProgress",
    "check_sets",
    "judge_history",
    "run_jepsen",
    "run_line",
    "set_checks",
]
