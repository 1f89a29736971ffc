"""The identity file of a data directory: which cluster and which node it belongs to, and
which incarnation of that node it is.

``IDENTITY`` is a line of JSON, ``{"cluster_id": ..., "node_id": ..., "incarnation": ...}``,
written (to a temporary name, fsynced, renamed, the directory fsynced) once the first batch of a
new log is durable, so a directory that has it has held a log: with no log beside it, the log
was lost (:class:`~raftpy.storage.wal.FileStorage` refuses it). Opening a directory with the
identity of another cluster or node raises :class:`~raftpy.storage.errors.DataDirError`. A
value of ``None`` means "not recorded" (a store opened without it) and matches anything.

The **incarnation** is a random 128-bit value (32 hex digits) drawn once per data directory.
Peers pin it at the handshake: a node whose disk was wiped and that comes back with the same
node id has a new incarnation, so its peers can tell it from its old self, which voted and
acknowledged entries this one has forgotten (README.md, "Changing members"). An identity file
written before incarnations existed has none: the next start draws one and writes it, once.
"""

from __future__ import annotations

import os
import re
import secrets
from typing import Annotated, Final

import msgspec

from raftpy.core.messages import DECODE_ERRORS
from raftpy.storage.errors import DataDirError
from raftpy.storage.fs import FileSystem, write_durably

__all__ = [
    "IDENTITY",
    "INCARNATION_PATTERN",
    "Identity",
    "Incarnation",
    "is_incarnation",
    "new_incarnation",
    "read_identity",
    "reconcile",
    "short_incarnation",
    "write_identity",
]

IDENTITY = "IDENTITY"
"""The identity file's name in the data directory."""

INCARNATION_PATTERN: Final = "^[0-9a-f]{32}$"
"""What an incarnation looks like: 128 bits as 32 lowercase hex digits."""
Incarnation = Annotated[str, msgspec.Meta(pattern=INCARNATION_PATTERN)]
"""An incarnation, checked wherever it is decoded (the identity file, the handshake)."""
_INCARNATION_RE: Final = re.compile(INCARNATION_PATTERN)


def new_incarnation() -> str:
    """A fresh random incarnation (128 bits from :mod:`secrets`)."""
    return secrets.token_hex(16)


def is_incarnation(value: object) -> bool:
    """Whether ``value`` is a well-formed incarnation."""
    return isinstance(value, str) and _INCARNATION_RE.fullmatch(value) is not None


def short_incarnation(incarnation: str) -> str:
    """The first 8 hex digits, for log lines (enough to tell two incarnations apart)."""
    return incarnation[:8] + "..."


class Identity(msgspec.Struct, frozen=True):
    """The cluster and node a data directory belongs to, and its incarnation (``None``: not
    recorded; the incarnation is a trailing field, so files written before it still load)."""

    cluster_id: str | None = None
    node_id: int | None = None
    incarnation: Incarnation | None = None


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
    the identity to write, or ``None`` when the file already says it all.

    The incarnations are never compared: the directory's, when it has one, is the one that
    counts (the opener's is a fresh draw, used only where the directory records none)."""
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
        found.incarnation if found.incarnation is not None else wanted.incarnation,
    )
    return None if merged == found else merged


def write_identity(fs: FileSystem, directory: str, identity: Identity) -> None:
    """Write the identity file durably (temporary name, fsync, rename, directory fsync)."""
    write_durably(fs, directory, IDENTITY, msgspec.json.encode(identity) + b"\n")
