"""Old import path: the snapshot transfer lives in :mod:`raftpy.node.transfer`."""

from raftpy.node.transfer import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_WINDOW_BYTES,
    Completed,
    Outcome,
    SnapshotReceiver,
    SnapshotSender,
    SnapshotSenders,
    SnapshotSink,
    SnapshotSource,
)

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_WINDOW_BYTES",
    "Completed",
    "Outcome",
    "SnapshotReceiver",
    "SnapshotSender",
    "SnapshotSenders",
    "SnapshotSink",
    "SnapshotSource",
]
