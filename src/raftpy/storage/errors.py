"""Errors of the durable storage (the write-ahead log and its data directory).

All derive from :class:`StorageError`, itself a :class:`~raftpy.errors.RaftError`. Each says
who raises it and whether a retry can help.
"""

from __future__ import annotations

from raftpy.errors import RaftError

__all__ = [
    "CorruptLogError",
    "CorruptSnapshotError",
    "DataDirError",
    "DataDirLockedError",
    "DataLossError",
    "FatalStorageError",
    "StorageError",
    "StorageFullError",
    "UnsupportedFormatError",
]


class StorageError(RaftError):
    """Base class of the storage errors."""


class CorruptLogError(StorageError):
    """Raised when reading the log finds damage: a bad checksum, an impossible length, an
    undecodable payload, or records that contradict each other. At start-up it is always the
    subclass :class:`DataLossError`, which also says what the operator can do.

    ``file`` and ``offset`` (bytes from the start of the file) say where. Retrying cannot help.
    """

    def __init__(self, file: str, offset: int, reason: str) -> None:
        self.file = file
        self.offset = offset
        self.reason = reason
        super().__init__(f"corrupt write-ahead log {file} at byte offset {offset}: {reason}")


RECOVERY_ADVICE = (
    "This node must not start on this data dir (it could vote again in a term it voted in, or "
    "deny entries it acknowledged). Either restore the data dir from a backup taken while the "
    "node was stopped, or remove this member from the cluster (`raftpy members remove`) and add it "
    "back as a new member with an empty data dir and --join. See README.md, sections Storage "
    "and Changing members."
)
"""What an operator can do when acknowledged state is gone (every :class:`DataLossError`
says it)."""


class DataLossError(CorruptLogError):
    """Raised at start-up when the data dir lost state this node had synced, so possibly
    acknowledged: its vote, its term or entries it reported as stored. For example the end of
    the last segment cut off, a segment missing, the log gone beside its identity file or
    beside snapshots, a checksum failure inside a batch that was written whole.

    ``file`` and ``offset`` say where the loss was seen, ``reason`` what is missing. The message
    ends with what the operator can do (:data:`RECOVERY_ADVICE`). Retrying cannot help.
    """

    def __init__(self, file: str, offset: int, reason: str) -> None:
        super().__init__(file, offset, reason)
        self.args = (
            f"acknowledged state is gone: {file} at byte offset {offset}: {reason}. "
            f"{RECOVERY_ADVICE}",
        )


class DataDirError(StorageError):
    """Raised when the data dir cannot be used: it cannot be created, read or written (a
    read-only file system, missing permissions), or it belongs to another node or cluster.
    The message names the directory and the reason. Nothing in it was changed; fix the
    directory (or the node's settings) and start again."""


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
