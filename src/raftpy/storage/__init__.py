"""Storage for Raft's persistent state: the :class:`LogStore` protocol a driver writes through,
its in-memory twin, the durable write-ahead log and the snapshot files, and the offline
inspection of a stopped node's data directory (:func:`inspect_data_dir`, ``raftpy doctor``)."""

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
from raftpy.storage.inspect import DataDirReport, inspect_data_dir
from raftpy.storage.memory import MemoryStorage
from raftpy.storage.snapshots import SnapshotStore
from raftpy.storage.wal import FileStorage

__all__ = [
    "CorruptLogError",
    "CorruptSnapshotError",
    "DataDirError",
    "DataDirLockedError",
    "DataDirReport",
    "DataLossError",
    "FatalStorageError",
    "FileStorage",
    "LogStore",
    "MemoryStorage",
    "SnapshotStore",
    "StorageError",
    "StorageFullError",
    "UnsupportedFormatError",
    "inspect_data_dir",
]

# Checked by mypy: both stores satisfy the protocol the runtime and the simulator rely on (a
# missing or mistyped member fails type checking here, not only at the first call).
_MEMORY_STORAGE_IS_A_LOG_STORE: type[LogStore] = MemoryStorage
_FILE_STORAGE_IS_A_LOG_STORE: type[LogStore] = FileStorage
