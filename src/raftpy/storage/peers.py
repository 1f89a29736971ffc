"""The incarnations of this node's peers, pinned at first sight: how a node tells a member that
lost its disk from the member it knew.

A member whose data directory was wiped and that is restarted with the same node id comes back
with term 0, an empty log and no record of its vote. Taken for its old self it could vote for a
candidate that lacks entries it had acknowledged, and a committed write would be lost (Raft
§5.4 relies on every voter keeping its log and vote; Thesis §4.1 replaces such a server through
a membership change instead). Each data directory has a random incarnation
(:mod:`raftpy.storage.identity`) that peers announce in the handshake; :class:`PeerIncarnations`
remembers the first one seen from each member and refuses any other, until the member is
removed from the cluster (:meth:`PeerIncarnations.retain`): added back, it is pinned afresh.

The pins live in ``PEERS`` beside the log, one JSON line per peer
(``{"node_id": 2, "incarnation": "..."}``), replaced as a whole (temporary file, fsync, rename,
directory fsync), owner-only. A damaged file stops start-up with a
:class:`~raftpy.storage.errors.DataDirError` naming the file, the line and its byte offset.
A node without a data directory keeps its pins in memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

import msgspec

from raftpy.core.messages import DECODE_ERRORS, NodeId
from raftpy.storage.base import LogStore
from raftpy.storage.errors import DataDirError
from raftpy.storage.fs import FileSystem, OsFileSystem, write_durably
from raftpy.storage.identity import Incarnation, short_incarnation
from raftpy.storage.wal import FileStorage

__all__ = ["PEERS", "PeerIncarnations"]

PEERS = "PEERS"
"""The pin file's name in the data directory."""

log = logging.getLogger("raftpy.storage.peers")


class _Pin(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    node_id: NodeId
    incarnation: Incarnation


_dec = msgspec.json.Decoder(_Pin)
_enc = msgspec.json.Encoder()


def refusal(node_id: int, announced: str, pinned: str) -> str:
    """What to say, once, about member ``node_id`` announcing ``announced`` instead of the
    ``pinned`` incarnation: what happened and what the operator must do."""
    return (
        f"node {node_id} came back with a different data directory (incarnation "
        f"{short_incarnation(announced)}, expected {short_incarnation(pinned)}): it lost its "
        "disk and must not vote as its old self; remove it and add it back (README.md, "
        '"Changing members")'
    )


class PeerIncarnations:
    """The incarnation pinned for each peer (see the module docstring), and this node's own.

    ``directory``: where ``PEERS`` lives (``None``: pins are kept in memory only). ``own``: the
    incarnation this node announces (``None``: it has none, as with in-memory storage).
    Loading raises :class:`DataDirError` for a damaged file. Not thread-safe: the transport
    calls it from the event loop.
    """

    def __init__(
        self,
        directory: str | None = None,
        *,
        own: str | None = None,
        fs: FileSystem | None = None,
    ) -> None:
        self.own = own
        self._dir = directory
        self._fs: FileSystem = fs if fs is not None else OsFileSystem()
        self._pins: dict[int, str] = {}
        if directory is not None:
            self._load(directory)

    @classmethod
    def beside(cls, storage: LogStore) -> PeerIncarnations:
        """The pins for a node whose log is ``storage``: kept beside a
        :class:`~raftpy.storage.wal.FileStorage` (whose incarnation is made durable here,
        with a sync, before anyone is told it), in memory for any other store."""
        if not isinstance(storage, FileStorage):
            return cls()
        # A peer pins what we announce: announcing an incarnation a crash could still replace
        # would get this very data directory refused as a stranger after the restart.
        storage.sync()
        return cls(storage.directory, own=storage.incarnation, fs=storage.fs)

    @property
    def path(self) -> str | None:
        """The pin file (``None``: in memory)."""
        return None if self._dir is None else os.path.join(self._dir, PEERS)

    def pinned(self) -> dict[int, str]:
        """A copy of the pins: node id -> incarnation."""
        return dict(self._pins)

    def check(self, node_id: int, incarnation: str | None) -> str | None:
        """Whether member ``node_id``, announcing ``incarnation``, is the one this node knows:
        ``None`` when it is (pinned now, durably, if it is the first time it is seen), or the
        reason to refuse it. A peer announcing no incarnation is not checked."""
        if incarnation is None:
            return None
        pinned = self._pins.get(node_id)
        if pinned is None:
            self._pins[node_id] = incarnation
            self._save()
            return None
        if pinned == incarnation:
            return None
        return refusal(node_id, incarnation, pinned)

    def forget(self, node_id: int) -> None:
        """Drop the pin of ``node_id`` (it was removed from the cluster): whatever comes back
        under that id is pinned afresh."""
        if self._pins.pop(node_id, None) is not None:
            self._save()

    def retain(self, member_ids: Iterable[int]) -> None:
        """Keep only the pins of ``member_ids`` (called when the membership changes, so a
        removed member added back with a new disk is accepted again)."""
        keep = set(member_ids)
        gone = [n for n in self._pins if n not in keep]
        if gone:
            for node_id in gone:
                del self._pins[node_id]
            self._save()

    def _save(self) -> None:
        if self._dir is None:
            return
        data = b"".join(
            _enc.encode(_Pin(node_id, inc)) + b"\n" for node_id, inc in sorted(self._pins.items())
        )
        try:
            write_durably(self._fs, self._dir, PEERS, data)
        except OSError as exc:
            # Refusing the peer for our own disk trouble would cost availability; the pin
            # holds in memory and the next change writes the whole file again.
            log.error("could not record peer incarnations in %s: %s", self.path, exc)

    def _load(self, directory: str) -> None:
        path = os.path.join(directory, PEERS)
        if not self._fs.exists(path):
            return
        try:
            f = self._fs.open(path)
            try:
                raw = f.read_at(0, f.size())
            finally:
                f.close()
        except OSError as exc:
            raise DataDirError(f"cannot read the peer incarnation file {path}: {exc}") from exc
        offset = 0
        for lineno, line in enumerate(raw.split(b"\n"), start=1):
            start, offset = offset, offset + len(line) + 1
            if not line:
                if start >= len(raw):
                    break  # after the last newline
                raise _damaged(path, lineno, start, "an empty line")
            try:
                pin = _dec.decode(line)
            except DECODE_ERRORS as exc:
                raise _damaged(path, lineno, start, str(exc)) from None
            if pin.node_id in self._pins:
                raise _damaged(path, lineno, start, f"node {pin.node_id} is pinned twice")
            self._pins[pin.node_id] = pin.incarnation
        if raw and not raw.endswith(b"\n"):
            raise _damaged(path, lineno, start, "the last line is cut off (no newline)")


def _damaged(path: str, lineno: int, offset: int, reason: str) -> DataDirError:
    return DataDirError(
        f"peer incarnation file {path} is damaged at line {lineno} (byte offset {offset}): "
        f"{reason}. It records which data directory each peer had when first seen; if you "
        "trust that no member lost its disk since, delete the file (peers are then pinned "
        "again at their next connection)"
    )
