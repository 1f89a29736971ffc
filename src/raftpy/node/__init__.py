"""The asyncio runtime: :class:`RaftNode` drives the sans-I/O core with real storage, a
transport and the user's state machine. No Raft rule lives here (docs/architecture.md).

- :mod:`raftpy.node.node`: :class:`RaftNode`, its lifecycle and the Ready loop;
- :mod:`raftpy.node.requests`: proposals and reads waiting for their outcome;
- :mod:`raftpy.node.service`: answering clients' requests;
- :mod:`raftpy.node.members`: membership changes and transfers waiting for their outcome, and
  the transport following the membership;
- :mod:`raftpy.node.join`: joining a running cluster as a learner, then promotion;
- :mod:`raftpy.node.config`: :class:`NodeConfig`, the runtime settings (the consensus ones
  are the core's :class:`~raftpy.core.config.RaftConfig`, held in ``NodeConfig.raft``);
- :mod:`raftpy.node.status`: :class:`NodeStatus`, what :meth:`RaftNode.status` reports;
- :mod:`raftpy.node.stats`: :class:`NodeStats`, every counter of a node in one object;
- :mod:`raftpy.node.snapshots`: taking, installing and restoring snapshots;
- :mod:`raftpy.node.transfer`: streaming a snapshot to a follower in chunks.
"""

from raftpy.node.config import NODE_RAFT_DEFAULTS, NodeConfig
from raftpy.node.node import FATAL_EXIT_STATUS, RaftNode
from raftpy.node.stats import NodeStats
from raftpy.node.status import NodeStatus
from raftpy.transport.base import ClientConnectionLike, Transport, TransportFactory

__all__ = [
    "FATAL_EXIT_STATUS",
    "NODE_RAFT_DEFAULTS",
    "ClientConnectionLike",
    "NodeConfig",
    "NodeStats",
    "NodeStatus",
    "RaftNode",
    "Transport",
    "TransportFactory",
]
