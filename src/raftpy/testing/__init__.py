"""Tools for testing Raft and the state machines replicated with it.

- :class:`SimCluster`: the deterministic simulator (DESIGN §6).
- :mod:`raftpy.testing.linearizability`: the linearizability checker (DESIGN §7).
"""

from raftpy.testing.sim import RecordingStateMachine, SimCluster

__all__ = ["RecordingStateMachine", "SimCluster"]
