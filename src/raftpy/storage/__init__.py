"""Storage for Raft's persistent state: the in-memory twin, the durable write-ahead log and
the snapshot files."""

from raftpy.storage.errors import (
    CorruptLogError,
    CorruptSnapshotError,
    DataDirLockedError,
    FatalStorageError,
    StorageError,
    StorageFullError,
    UnsupportedFormatError,
)
from raftpy.storage.memory import MemoryStorage
from raftpy.storage.snapshots import SnapshotStore
from raftpy.storage.wal import FileStorage

__all__ = [
    "CorruptLogError",
    "CorruptSnapshotError",
    "DataDirLockedError",
    "FatalStorageError",
    "FileStorage",
    "MemoryStorage",
    "SnapshotStore",
    "StorageError",
    "StorageFullError",
    "UnsupportedFormatError",
]
