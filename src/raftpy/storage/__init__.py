"""Storage for Raft's persistent state: the :class:`LogStore` protocol a driver writes through,
its in-memory twin, the durable write-ahead log and the snapshot files."""

from raftpy.storage.base import LogStore
from raftpy.storage.errors import (
    CorruptLogError,
    CorruptSnapshotError,
    DataDirError,
    DataDirLockedError,
    DataLossError,
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
    "DataDirError",
    "DataDirLockedError",
    "DataLossError",
    "FatalStorageError",
    "FileStorage",
    "LogStore",
    "MemoryStorage",
    "SnapshotStore",
    "StorageError",
    "StorageFullError",
    "UnsupportedFormatError",
]

# Checked by mypy: both stores satisfy the protocol the runtime and the simulator rely on (a
# missing or mistyped member fails type checking here, not only at the first call).
_MEMORY_STORAGE_IS_A_LOG_STORE: type[LogStore] = MemoryStorage
_FILE_STORAGE_IS_A_LOG_STORE: type[LogStore] = FileStorage
