"""raftpy: a Raft consensus library for Python.

The public API is re-exported here (see ``__all__``):

- the sans-I/O consensus core: :class:`Raft`, :class:`RaftConfig`, :class:`Ready`,
  :class:`Role`, and the peer messages in :mod:`raftpy.core.messages`;
- storage: :class:`MemoryStorage` and the :class:`LogStorage` protocol;
- the :class:`StateMachine` protocol users implement;
- the errors, typed by who is at fault (:mod:`raftpy.errors`).

The simulator lives in :mod:`raftpy.testing` (``from raftpy.testing import SimCluster``).
"""

from __future__ import annotations

from raftpy.core.config import RaftConfig
from raftpy.core.messages import ConfState, Entry, EntryKind, Message, SnapshotMeta
from raftpy.core.raft import Raft, Status
from raftpy.core.ready import ReadState, Ready, Role, SoftState
from raftpy.core.storage import HardState, LogStorage
from raftpy.errors import (
    IndeterminateError,
    InvariantViolation,
    LocalProtocolError,
    MessageDecodeError,
    NotLeaderError,
    ProposalDropped,
    RaftError,
    RemoteProtocolError,
)
from raftpy.statemachine import StateMachine
from raftpy.storage.memory import MemoryStorage

__version__ = "0.1.0"

__all__ = [
    "ConfState",
    "Entry",
    "EntryKind",
    "HardState",
    "IndeterminateError",
    "InvariantViolation",
    "LocalProtocolError",
    "LogStorage",
    "MemoryStorage",
    "Message",
    "MessageDecodeError",
    "NotLeaderError",
    "ProposalDropped",
    "Raft",
    "RaftConfig",
    "RaftError",
    "ReadState",
    "Ready",
    "RemoteProtocolError",
    "Role",
    "SnapshotMeta",
    "SoftState",
    "StateMachine",
    "Status",
    "__version__",
]
