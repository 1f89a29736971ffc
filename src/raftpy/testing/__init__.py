"""Tools for testing Raft and the state machines replicated with it.

- :class:`SimCluster`: the deterministic simulator (README.md, "Using the simulator"); the
  cluster-wide safety checks it runs after every event are in :mod:`raftpy.testing.checkers`.
- :class:`StackCluster`: the whole stack (real nodes, storage and clients) on virtual time
  (README.md, "The whole stack on virtual time"); :func:`run_kv` checks a key-value run.
- :mod:`raftpy.testing.linearizability`: the linearizability checker (docs/history-format.md).
"""

from raftpy.testing.sim import RecordingStateMachine, SimCluster
from raftpy.testing.stack_sim import StackCluster, StackFaults, run_kv

__all__ = ["RecordingStateMachine", "SimCluster", "StackCluster", "StackFaults", "run_kv"]
