"""Storage for Raft's persistent state: the in-memory twin and the durable write-ahead log."""

from raftpy.storage.errors import (
    CorruptLogError,
    DataDirLockedError,
    FatalStorageError,
    StorageError,
    StorageFullError,
    UnsupportedFormatError,
)
from raftpy.storage.memory import MemoryStorage
from raftpy.storage.wal import FileStorage

__all__ = [
    "CorruptLogError",
    "DataDirLockedError",
    "FatalStorageError",
    "FileStorage",
    "MemoryStorage",
    "StorageError",
    "StorageFullError",
    "UnsupportedFormatError",
]
