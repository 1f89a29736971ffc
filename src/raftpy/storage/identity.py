"""The identity file of a data directory: which cluster and which node it belongs to.

``IDENTITY`` is a line of JSON, ``{"cluster_id": ..., "node_id": ...}``, written (to a temporary
name, fsynced, renamed, the directory fsynced) once the first batch of a new log is durable, so
a directory that has it has held a log: with no log beside it, the log was lost
(:class:`~raftpy.storage.wal.FileStorage` refuses it). Opening a directory with the identity of
another cluster or node raises :class:`~raftpy.storage.errors.DataDirError`. A value of
``None`` means "not recorded" (a store opened without it) and matches anything.
"""

from __future__ import annotations

import os

import msgspec

from raftpy.core.messages import DECODE_ERRORS
from raftpy.storage.errors import DataDirError
from raftpy.storage.fs import FileSystem

__all__ = ["IDENTITY", "Identity", "read_identity", "reconcile", "write_identity"]

IDENTITY = "IDENTITY"
"""The identity file's name in the data directory."""


class Identity(msgspec.Struct, frozen=True):
    """The cluster and node a data directory belongs to (``None``: not recorded)."""

    cluster_id: str | None = None
    node_id: int | None = None


_dec = msgspec.json.Decoder(Identity)


def read_identity(fs: FileSystem, directory: str, names: list[str]) -> Identity | None:
    """The identity recorded in ``directory`` (whose entries are ``names``), or ``None``."""
    if IDENTITY not in names:
        return None
    path = os.path.join(directory, IDENTITY)
    f = fs.open(path)
    try:
        raw = f.read_at(0, 1 << 16)
    finally:
        f.close()
    try:
        return _dec.decode(raw)
    except DECODE_ERRORS as exc:
        raise DataDirError(
            f"identity file {path} is damaged ({exc}): it names the cluster and node this data "
            "dir belongs to. If the log beside it is intact, delete the file (it is written "
            "again at start-up)."
        ) from None


def reconcile(found: Identity | None, wanted: Identity, directory: str) -> Identity | None:
    """Check ``wanted`` (the opener's identity) against ``found`` (the directory's); return
    the identity to write, or ``None`` when the file already says it all."""
    if found is None:
        return wanted
    for name, mine, theirs in (
        ("cluster id", wanted.cluster_id, found.cluster_id),
        ("node id", wanted.node_id, found.node_id),
    ):
        if mine is not None and theirs is not None and mine != theirs:
            raise DataDirError(
                f"data dir {directory} belongs to {name} {theirs!r} "
                f"({os.path.join(directory, IDENTITY)}), not {mine!r}: start the node with its "
                "own data dir"
            )
    merged = Identity(
        found.cluster_id if found.cluster_id is not None else wanted.cluster_id,
        found.node_id if found.node_id is not None else wanted.node_id,
    )
    return None if merged == found else merged


def write_identity(fs: FileSystem, directory: str, identity: Identity) -> None:
    """Write the identity file durably (temporary name, fsync, rename, directory fsync)."""
    path = os.path.join(directory, IDENTITY)
    tmp = path + ".tmp"
    f = fs.open(tmp, create=True)
    try:
        f.truncate(0)
        f.write_at(0, msgspec.json.encode(identity) + b"\n")
        f.datasync()
    finally:
        f.close()
    fs.rename(tmp, path)
    fs.sync_dir(directory)
