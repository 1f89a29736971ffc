"""Old import path: :class:`NodeConfig` lives in :mod:`raftpy.node.config`."""

from raftpy.node.config import NodeConfig

__all__ = ["NodeConfig"]
