"""How :class:`~raftpy.storage.wal.FileStorage` recovers its log on open: a base class of it,
holding the reading of the segments, the one place that decides what damage means, and what
is carried out before the first write.

**Recovery** reads the segments in order, checks every checksum and rebuilds the index;
``_repair`` alone decides what damage means (it lives here to keep the log's module to its
size; it is ``FileStorage._repair`` all the same). The only damage it repairs
is a write a crash interrupted: the last batch of the last segment incomplete, nothing of a
later batch after it, the segment as long as it was created, and the batch either missing its
``TAIL`` (its end never reached the disk) or holding a hole of zeros where a lost sector was.
That batch is never acknowledged (the ``fdatasync`` did not return), so it is cut off, with a
warning saying just that. Everything else that lost synced state raises
:class:`DataLossError` (a :class:`CorruptLogError`) naming the file, the byte offset, what is
missing and what the operator can do: a segment ending without its ``TAIL`` (cut at a record
boundary), a segment shorter than it was created (cut inside a record), a sealed last segment
(the next one is missing), a gap in the numbering, a checksum failure inside a batch that was
written whole, entries missing before the log resumes, a commit index beyond the log, or an
identity file with no log at all (every segment deleted). The ``.wal`` format and what each
of those looks like on disk are in :mod:`raftpy.storage.segments`.

**Nothing changes before the node decides to start.** Opening only reads: the cut of a torn
batch, the removal of half-created segments, the first batch of a new directory and the
identity file are written by the first write call (``append``, ``set_hard_state``, ``sync``,
``create_snapshot``, ``apply_snapshot``), so a caller that refuses to start after opening (a
snapshot file the log cannot account for) leaves the directory as it found it.

**Identity.** ``IDENTITY`` (JSON: ``cluster_id``, ``node_id``, ``incarnation``) is written once
the first batch of a new directory is durable (and rewritten once, at the first write, in a
directory whose file has no incarnation yet). A directory with an identity and no segment
lost its whole log and is refused; one whose identity names another cluster or node raises
:class:`DataDirError` (:mod:`raftpy.storage.identity`).
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
from array import array
from typing import TYPE_CHECKING

from raftpy.core.messages import DECODE_ERRORS, Entry, SnapshotMeta
from raftpy.core.storage import HardState
from raftpy.storage.errors import CorruptLogError, DataLossError, FatalStorageError
from raftpy.storage.fs import File, FileSystem
from raftpy.storage.identity import IDENTITY, Identity, read_identity, reconcile, write_identity
from raftpy.storage.segments import (
    _RH,
    ENTRIES,
    HARD_STATE,
    SNAPSHOT,
    TRUNCATE,
    Record,
    SegmentScan,
    _dec_entries,
    _dec_hard,
    _dec_snap,
    _dec_trunc,
    encode_tail,
    header_size,
    scan_segment_file,
    segment_numbers,
)

__all__ = ["Recovery"]

log = logging.getLogger("raftpy.storage.wal")


class Recovery:
    """The recovery half of :class:`~raftpy.storage.wal.FileStorage` (see the module
    docstring). It owns no state: the attributes below are FileStorage's."""

    _fs: FileSystem
    _dir: str
    _segment_size: int
    _files: dict[int, File]
    _seg_end: dict[int, int]
    _seg_max: dict[int, int]
    _seg_version: dict[int, int]
    _seg_start: dict[int, int]
    _seg_batch: dict[int, int]
    _seq: int
    _roll: bool
    _identity: Identity
    _incarnation: str
    _settled: bool
    _new: bool
    _write_identity: Identity | None
    _repairs: list[tuple[int, int, int]]
    _stale: list[str]
    vouches_for_tail: bool
    _snap: SnapshotMeta
    _hard: HardState
    _first: int
    _terms: array[int]
    _written_snap: SnapshotMeta
    _written_hard: HardState

    if TYPE_CHECKING:  # FileStorage's own methods, used here

        def last_index(self) -> int:
            raise NotImplementedError

        def sync(self) -> None:
            raise NotImplementedError

        def _seg_path(self, seq: int) -> str:
            raise NotImplementedError

        def _write_batch(self) -> None:
            raise NotImplementedError

        def _die(self, reason: str) -> FatalStorageError:
            raise NotImplementedError

        def _add_span(self, first: int, seq: int, off: int, length: int) -> None:
            raise NotImplementedError

        def _note_confs(self, batch: list[Entry]) -> None:
            raise NotImplementedError

        def _truncate_index(self, n: int) -> None:
            raise NotImplementedError

        def _compact_index(self, meta: SnapshotMeta) -> None:
            raise NotImplementedError

        def _clear_index(self, meta: SnapshotMeta) -> None:
            raise NotImplementedError

    def _check_writable(self) -> None:
        """Fail now, as a data dir problem, if files cannot be created here (a read-only
        file system, missing permissions): not later, at the first write of a running node."""
        probe = os.path.join(self._dir, "LOCK.probe")
        self._fs.open(probe, create=True).close()
        self._fs.unlink(probe)

    def _recover(self) -> None:
        names = self._fs.listdir(self._dir)
        # A segment whose creation never finished holds no record: deleted at the first write.
        self._stale = [n for n in names if n.endswith(".wal.tmp")]
        seqs = segment_numbers(names)
        identity = read_identity(self._fs, self._dir, names)
        if not seqs:
            if identity is not None:
                raise DataLossError(
                    os.path.join(self._dir, IDENTITY),
                    0,
                    f"the data dir belongs to node {identity.node_id} of cluster "
                    f"{identity.cluster_id!r} but holds no write-ahead log segment (*.wal): the "
                    "whole log is gone, with the node's term, its vote and every entry",
                )
            self._write_identity = self._identity
            self._new = True
            self._settled = False
            return
        self._write_identity = reconcile(identity, self._identity, self._dir)
        if identity is not None and identity.incarnation is not None:
            self._incarnation = identity.incarnation
        for prev, seq in itertools.pairwise(seqs):
            if seq != prev + 1:
                raise DataLossError(
                    self._seg_path(seq), 0, f"segments {prev + 1}..{seq - 1} are missing"
                )
        self._replayed = self._seen_snapshot = False
        for seq in seqs:
            last = seq == seqs[-1]
            path = self._seg_path(seq)
            f = self._fs.open(path)
            self._files[seq] = f
            self._seg_max[seq] = 0
            # Each batch is replayed as soon as it checks out: the segment is read a MiB at a
            # time, never whole (a restart's memory does not grow with a 64 MiB segment).
            scan = scan_segment_file(f, seq, path, functools.partial(self._replay_batch, seq, path))
            self._seg_version[seq] = scan.version
            self._seg_start[seq] = header_size(scan.version)
            self._seg_batch[seq] = scan.last_batch
            self._check_end(scan, seq, path, last)
            self._seg_end[seq] = scan.end
        self._seq = seqs[-1]
        self._roll = self._seg_version[self._seq] < 2
        self.vouches_for_tail = not self._roll
        last_path = self._seg_path(self._seq)
        self._settled = False
        if not self._replayed and len(seqs) == 1:
            if identity is not None:
                raise DataLossError(
                    last_path,
                    self._seg_end[self._seq],
                    "the data dir has its identity file, written once the first batch was "
                    "synced, but the log holds no record: its batches are gone",
                )
            # The very first batch of a new directory never reached the disk: it is still new.
            self._new = True
            return
        if not self._seen_snapshot:
            raise DataLossError(last_path, 0, "no snapshot record in any segment")
        if self._terms and self._first > self._snap.index + 1:
            raise DataLossError(
                last_path,
                0,
                f"entries {self._snap.index + 1}..{self._first - 1} are missing "
                f"(the log resumes at {self._first}, the snapshot ends at {self._snap.index})",
            )
        self._compact_index(self._snap)
        if not self._terms:
            self._first = self._snap.index + 1
        if self._hard.commit > self.last_index():
            # etcd refuses the same: the node said these entries were stored.
            raise DataLossError(
                last_path,
                self._seg_end[self._seq],
                f"the commit index {self._hard.commit} lies beyond the log's last entry "
                f"{self.last_index()}: entries {self.last_index() + 1}..{self._hard.commit} "
                "were stored and are gone",
            )
        self._written_snap = self._snap
        self._written_hard = self._hard

    def _check_end(self, scan: SegmentScan, seq: int, path: str, last: bool) -> None:
        """How segment ``seq`` ends: damage goes to :meth:`_repair`; a format 2 segment must
        end with its TAIL, and only the last one without a SEAL."""
        if scan.damage is not None:
            self._repair(scan, seq, path, last)
        elif scan.version >= 2 and scan.tail is None:
            if not last or scan.size < scan.preallocated:
                raise DataLossError(
                    path,
                    scan.end,
                    f"the segment ends at offset {scan.end} without its end marker and is "
                    f"{scan.size} bytes{self._created(scan, last)}: everything written after "
                    f"offset {scan.end} (batches that had been synced) was cut off",
                )
            # Whole batches, then zeros where the last one's TAIL should be: that TAIL's piece of
            # the write never reached the disk, so the crash came before the fdatasync returned.
            # The batch is whole, so it is kept (keeping what was never acknowledged is safe).
            log.warning(
                "%s: the end marker after the last batch (offset %d) is missing: a crash "
                "interrupted that batch's write before its fdatasync returned; the batch is "
                "whole and is kept",
                path,
                scan.end,
            )
            self._repairs.append((seq, scan.end, scan.end))
        elif last and scan.sealed is not None:
            raise DataLossError(
                path,
                scan.end,
                f"segment {seq} was sealed: the log continues in segment {scan.sealed} "
                f"({self._seg_path(scan.sealed)}), which is missing",
            )
        elif last and scan.leftover is not None:
            # Pieces of a batch whose write was interrupted before any of it replaced the TAIL:
            # never synced. Cleared before the first write (they must not follow a new batch).
            self._repairs.append((seq, scan.end, scan.data_end))

    @staticmethod
    def _created(scan: SegmentScan, last: bool) -> str:
        if not last:
            return ", in a segment that is not the last one (sealed when the next was created)"
        return f", shorter than the {scan.preallocated} it was created with"

    def _repair(self, scan: SegmentScan, seq: int, path: str, last: bool) -> None:
        """Decide what the damage :func:`scan_segment` found in segment ``seq`` means. The one
        thing a crash leaves is an incomplete last batch (its write interrupted before its
        fdatasync returned, so never acknowledged): cut off at the first write, with a
        warning. Anything else lost synced state and raises :class:`DataLossError`."""
        damage = scan.damage
        assert damage is not None
        if not last:
            raise DataLossError(
                path,
                damage.offset,
                f"{damage.reason} in a segment that is not the last one (its batches had "
                "been synced before the next segment was created)",
            )
        if damage.later is not None:
            raise DataLossError(
                path,
                damage.offset,
                f"{damage.reason} (a later batch follows at offset {damage.later}, so this "
                "batch had been synced)",
            )
        if scan.version >= 2:
            if scan.size < scan.preallocated:
                raise DataLossError(
                    path,
                    damage.offset,
                    f"{damage.reason}; the segment is {scan.size} bytes, shorter than the "
                    f"{scan.preallocated} it was created with, so its end was cut off (a crash "
                    "never shortens it), with every batch written after offset "
                    f"{damage.batch_start}",
                )
            if damage.tail is not None and damage.hole is None:
                raise DataLossError(
                    path,
                    damage.offset,
                    f"{damage.reason} inside the batch at offset {damage.batch_start}, which "
                    f"was written whole (its end marker at offset {damage.tail} is intact): "
                    "the batch was damaged after it was written",
                )
            log.warning(
                "%s: the last batch, at offset %d, is incomplete (%s at offset %d) and nothing "
                "written after it survives: a write that a crash interrupted before its "
                "fdatasync returned, so it was never acknowledged; it is cut off",
                path,
                damage.batch_start,
                damage.reason,
                damage.offset,
            )
        else:
            log.warning(
                "%s: the last batch, at offset %d, is incomplete (%s at offset %d); it is cut "
                "off. A crash that interrupted its write leaves this, but so does damage to a "
                "synced batch, which this old (format 1) segment cannot tell apart",
                path,
                damage.batch_start,
                damage.reason,
                damage.offset,
            )
        self._repairs.append((seq, damage.batch_start, max(damage.data_end, damage.batch_start)))

    def _settle(self) -> None:
        """Carry out what recovery decided, before the first write: delete half-created
        segments, clear torn ends, create a new directory's log, reserve the last segment's
        space again, and write the identity file."""
        self._settled = True
        try:
            if self._stale:
                for name in self._stale:
                    self._fs.unlink(os.path.join(self._dir, name))
                self._fs.sync_dir(self._dir)
                self._stale = []
            for seq, start, end in self._repairs:
                self._clear(seq, start, end)
            self._repairs = []
            if self._new:
                self._new = False
                self._written_snap = self._snap
                self._write_batch()
                self.sync()
            else:
                self._reserve()
            if self._write_identity is not None:
                write_identity(self._fs, self._dir, self._write_identity)
                self._write_identity = None
        except OSError as exc:
            raise self._die(f"could not prepare {self._dir} for writing: {exc}") from exc

    def _clear(self, seq: int, start: int, end: int) -> None:
        """Zero bytes ``[start, end)`` of segment ``seq`` (a torn batch, or leftovers after the
        TAIL) and write a TAIL at ``start``, durably. Zeros, not a shorter file: the segment
        keeps the size it was created with, and a later, shorter batch can never be followed
        by stale records of the torn one."""
        f = self._files[seq]
        data = bytearray(max(0, end - start))
        if self._seg_version[seq] >= 2:
            tail = encode_tail(seq, start, self._seg_batch[seq])
            data[: len(tail)] = tail
            if len(data) < len(tail):
                data = bytearray(tail)
        f.write_at(start, data)
        f.datasync()

    def _reserve(self) -> None:
        """The last segment may have been trimmed when it was closed: reserve its space again,
        so that appending to it keeps fdatasync cheap."""
        f = self._files[self._seq]
        try:
            if f.size() < self._segment_size:
                f.preallocate(self._segment_size)
                f.datasync()
        except OSError as exc:
            log.warning("could not preallocate %s: %s", self._seg_path(self._seq), exc)

    def _replay_batch(self, seq: int, path: str, records: list[Record]) -> None:
        for typ, payload, off in records:
            self._replayed = True
            self._seen_snapshot |= typ == SNAPSHOT
            self._replay(typ, payload, seq, off, path)

    def _replay(self, typ: int, payload: memoryview, seq: int, off: int, path: str) -> None:
        try:
            if typ == ENTRIES:
                self._replay_entries(_dec_entries.decode(payload), len(payload), seq, off, path)
            elif typ == HARD_STATE:
                self._hard = _dec_hard.decode(payload)
            elif typ == TRUNCATE:
                self._truncate_index(_dec_trunc.decode(payload))
            else:
                rec = _dec_snap.decode(payload)
                if rec.keep:
                    self._compact_index(rec.meta)
                else:
                    self._clear_index(rec.meta)
        except DECODE_ERRORS as exc:
            raise CorruptLogError(path, off, f"undecodable payload: {exc}") from exc

    def _replay_entries(
        self, batch: list[Entry], length: int, seq: int, off: int, path: str
    ) -> None:
        if not batch:
            raise CorruptLogError(path, off, "empty entries record")
        first = batch[0].index
        if batch[-1].index != first + len(batch) - 1:
            raise CorruptLogError(path, off, f"entries from {first} are not contiguous")
        if self._terms:
            last = self.last_index()
            if first != last + 1:
                raise CorruptLogError(
                    path, off, f"entries start at {first} but the log ends at {last}"
                )
        else:
            # Either the log starts here, or the segments holding the entries before were
            # deleted after a snapshot (checked once every segment is read).
            self._first = first
        self._add_span(first, seq, off, _RH + length)
        self._terms.extend([e.term for e in batch])
        self._note_confs(batch)
        self._seg_max[seq] = max(self._seg_max[seq], batch[-1].index)
