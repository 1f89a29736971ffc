"""raftpy: a Raft consensus library for Python.

The public API is re-exported here (see ``__all__``):

- the runtime: :class:`RaftNode` (asyncio driver), :class:`NodeConfig`, what a node reports
  about itself (:class:`NodeStatus`, with its counters in :class:`NodeStats`), and the
  clients :class:`Client` (asyncio) and :class:`SyncClient`;
- the sans-I/O consensus core: :class:`Raft`, :class:`RaftConfig`, :class:`Ready`,
  :class:`Role`, :class:`SnapshotRequest`, and the peer messages in
  :mod:`raftpy.core.messages` (:data:`Message` for the core, :data:`PeerMessage` on the wire);
- storage: :class:`FileStorage` (the durable write-ahead log), :class:`MemoryStorage`, the
  :class:`LogStore` protocol they implement and its read side, :class:`LogStorage`;
- the :class:`StateMachine` protocol users implement;
- the errors, typed by who is at fault (:mod:`raftpy.errors`);
- :func:`configure_logging`, which applies ``RAFTPY_LOG`` (levels per logger) and
  ``RAFTPY_LOG_FORMAT`` (``text`` or ``json``) in a program of your own (README.md, "Logging").

The simulator lives in :mod:`raftpy.testing` (``from raftpy.testing import SimCluster``).
"""

from __future__ import annotations

from raftpy.client import Client, SyncClient
from raftpy.core.config import RaftConfig
from raftpy.core.messages import ConfState, Entry, EntryKind, Message, PeerMessage, SnapshotMeta
from raftpy.core.raft import Raft
from raftpy.core.ready import ReadState, Ready, Role, SnapshotRequest, SoftState
from raftpy.core.status import Status
from raftpy.core.storage import HardState, LogStorage
from raftpy.errors import (
    ClusterUnavailableError,
    ConfChangeError,
    ConfigError,
    HandshakeRefusedError,
    IndeterminateError,
    InvariantViolation,
    LocalProtocolError,
    MessageDecodeError,
    NotLeaderError,
    ProposalDropped,
    RaftError,
    RejectedMessage,
    RemoteProtocolError,
    SessionExpiredError,
    StateMachineError,
)
from raftpy.logconfig import configure_logging
from raftpy.node import FATAL_EXIT_STATUS, RaftNode
from raftpy.node.config import NodeConfig
from raftpy.node.health import Health
from raftpy.node.leadership import LeadershipEvent
from raftpy.node.sessions import SessionGrant
from raftpy.node.stats import NodeStats
from raftpy.node.status import NodeStatus, PeerReplication, SnapshotStatus, TransferStatus
from raftpy.statemachine import StateMachine
from raftpy.storage.base import LogStore
from raftpy.storage.errors import (
    CorruptLogError,
    DataDirError,
    DataLossError,
    StorageError,
    StorageFullError,
)
from raftpy.storage.memory import MemoryStorage
from raftpy.storage.wal import FileStorage
from raftpy.transport.protocol import Members
from raftpy.transport.tls import TlsConfig
from raftpy.version import __version__

__all__ = [
    "FATAL_EXIT_STATUS",
    "Client",
    "ClusterUnavailableError",
    "ConfChangeError",
    "ConfState",
    "ConfigError",
    "CorruptLogError",
    "DataDirError",
    "DataLossError",
    "Entry",
    "EntryKind",
    "FileStorage",
    "HandshakeRefusedError",
    "HardState",
    "Health",
    "IndeterminateError",
    "InvariantViolation",
    "LeadershipEvent",
    "LocalProtocolError",
    "LogStorage",
    "LogStore",
    "Members",
    "MemoryStorage",
    "Message",
    "MessageDecodeError",
    "NodeConfig",
    "NodeStats",
    "NodeStatus",
    "NotLeaderError",
    "PeerMessage",
    "PeerReplication",
    "ProposalDropped",
    "Raft",
    "RaftConfig",
    "RaftError",
    "RaftNode",
    "ReadState",
    "Ready",
    "RejectedMessage",
    "RemoteProtocolError",
    "Role",
    "SessionExpiredError",
    "SessionGrant",
    "SnapshotMeta",
    "SnapshotRequest",
    "SnapshotStatus",
    "SoftState",
    "StateMachine",
    "StateMachineError",
    "Status",
    "StorageError",
    "StorageFullError",
    "SyncClient",
    "TlsConfig",
    "TransferStatus",
    "__version__",
    "configure_logging",
]
