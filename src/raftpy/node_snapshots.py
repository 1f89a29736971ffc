"""Old import path: :class:`NodeSnapshots` lives in :mod:`raftpy.node.snapshots`."""

from raftpy.node.snapshots import NodeSnapshots

__all__ = ["NodeSnapshots"]
