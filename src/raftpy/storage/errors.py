"""Errors of the durable storage (the write-ahead log and its data directory).

All derive from :class:`StorageError`, itself a :class:`~raftpy.errors.RaftError`. Each says
who raises it and whether a retry can help.
"""

from __future__ import annotations

from raftpy.errors import RaftError

__all__ = [
    "CorruptLogError",
    "CorruptSnapshotError",
    "DataDirLockedError",
    "FatalStorageError",
    "StorageError",
    "StorageFullError",
    "UnsupportedFormatError",
]


class StorageError(RaftError):
    """Base class of the storage errors."""


class CorruptLogError(StorageError):
    """Raised when opening (or reading) the log finds damage that is not a torn write at the
    very end of the last segment: a bad checksum, an impossible length, an undecodable payload,
    a missing segment, or records that contradict each other.

    ``file`` and ``offset`` (bytes from the start of the file) say where. Start-up stops: the
    data must be repaired or the node rebuilt from its peers. Retrying cannot help.
    """

    def __init__(self, file: str, offset: int, reason: str) -> None:
        self.file = file
        self.offset = offset
        self.reason = reason
        super().__init__(f"corrupt write-ahead log {file} at byte offset {offset}: {reason}")


class UnsupportedFormatError(StorageError):
    """Raised when opening a data directory whose files were written in a format this version
    does not know (an unknown magic number or format version), for example by a newer raftpy.
    Retrying cannot help; run a version that knows the format."""


class DataDirLockedError(StorageError):
    """Raised when opening a data directory that another process (or another storage object
    in this one) holds open. Retry once the other user has stopped."""


class StorageFullError(StorageError):
    """Raised by ``sync()`` (and snapshot operations) when the disk is full (``ENOSPC``).

    Nothing was made durable and nothing is corrupted: the buffered writes stay buffered and
    the next ``sync()`` tries them again. The node must stop accepting proposals (a leader
    steps down) until space is freed.
    """


class FatalStorageError(StorageError):
    """Raised when an fsync (or another write that must not fail) fails.

    The storage refuses all further use, and the process must exit: after a failed fsync the
    kernel may already have dropped the dirty pages and cleared the error, so retrying could
    report success for data that was never written ("fsyncgate", PostgreSQL 2018). Restarting
    recovers from what is really on disk.
    """


class CorruptSnapshotError(StorageError):
    """Raised by the snapshot store when a snapshot file is damaged: a bad header or trailer,
    a checksum mismatch, a file cut short, or a header that contradicts the file name.

    ``file`` and ``offset`` (bytes from the start of the file, where the damage was found) say
    where. Retrying cannot help: the snapshot must be deleted and fetched again from the leader
    (a received snapshot: abort it and ask again).
    """

    def __init__(self, file: str, offset: int, reason: str) -> None:
        self.file = file
        self.offset = offset
        self.reason = reason
        super().__init__(f"corrupt snapshot file {file} at byte offset {offset}: {reason}")
