"""Tools for testing Raft and the state machines replicated with it.

- :class:`SimCluster`: the deterministic simulator (README.md, "Using the simulator"); the
  cluster-wide safety checks it runs after every event are in :mod:`raftpy.testing.checkers`.
- :mod:`raftpy.testing.linearizability`: the linearizability checker (docs/history-format.md).
"""

from raftpy.testing.sim import RecordingStateMachine, SimCluster

__all__ = ["RecordingStateMachine", "SimCluster"]
