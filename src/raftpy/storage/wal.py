"""FileStorage: Raft's persistent state in a segmented write-ahead log.

The data directory holds a ``LOCK`` file, ``flock``'ed while a FileStorage has it open, and the
log's segments: numbered files of records, preallocated, written in batches. Their format is
described in :mod:`raftpy.storage.segments`, which owns the bytes; this module owns the log.

**Group commit.** ``append``, ``set_hard_state`` and the snapshot calls only buffer records;
``sync()`` writes the whole buffer as one *batch* with one ``pwrite`` and makes it durable with
one ``fdatasync``: one per Ready, never one per entry. A batch is all-or-nothing on recovery:
its records are applied only when its last record (the one with the 0x80 bit) is intact, so a
crash during a sync leaves either the state before it or the state after it (a truncation
marker and the entries replacing the old suffix live in one batch: a crash in the middle of a
truncation never leaves a half-truncated log). A batch never spans two segments; every
segment's first batch starts with the current snapshot marker and hard state, so deleting the
segments before it loses nothing.

**Recovery** (on open; :mod:`raftpy.storage.recovery`, a base class of :class:`FileStorage`)
reads the segments, decides what any damage means (``FileStorage._repair``), refuses with
:class:`~raftpy.storage.errors.DataLossError` whatever lost synced state, and changes nothing
on disk before the first write call. Files are created owner-only (0600, directories 0700).

**Memory.** The index keeps one term per entry in an ``array('q')`` (8 bytes) plus, per
record, its first index, segment, offset and length (4 x 8 bytes, shared by all entries of a
batch; 32 bytes per entry only when every sync carries a single entry). Entries themselves are
read from the segments on demand, through an LRU cache of decoded records bounded by
``cache_bytes``, where a cached entry counts as ``len(data) + 120`` bytes (a msgspec ``Entry``
with its ``bytes`` object and list slot). Nothing else grows with the log.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from types import TracebackType

import msgspec

from raftpy.core.messages import (
    ConfState,
    Entry,
    EntryKind,
    SnapshotMeta,
    bootstrap_conf,
    entries_size,
    limit_size,
)
from raftpy.core.storage import CompactedError, HardState
from raftpy.errors import LocalProtocolError
from raftpy.storage.errors import (
    CorruptLogError,
    DataDirError,
    DataDirLockedError,
    DataLossError,
    FatalStorageError,
    StorageFullError,
)
from raftpy.storage.fs import File, FileSystem, Lock, OsFileSystem
from raftpy.storage.identity import Identity, new_incarnation
from raftpy.storage.recovery import Recovery
from raftpy.storage.segments import (
    _RH,
    ENTRIES,
    FORMAT_VERSION,
    HARD_STATE,
    MAGIC,
    SNAPSHOT,
    TAIL_SIZE,
    TRUNCATE,
    _enc,
    _SnapshotRecord,
    decode_entries_record,
    encode_batch,
    encode_seal,
    encode_tail,
    header_size,
    segment_header,
    segment_name,
)

# Re-exported: the tests read segments through these.

__all__ = ["DEFAULT_SEGMENT_SIZE", "FORMAT_VERSION", "MAGIC", "MIN_SEGMENT_SIZE", "FileStorage"]

log = logging.getLogger("raftpy.storage.wal")

DEFAULT_SEGMENT_SIZE = 64 << 20
MIN_SEGMENT_SIZE = 4096
"""The smallest segment :class:`FileStorage` accepts, in bytes."""
DEFAULT_CACHE_BYTES = 32 << 20
ENTRY_CACHE_OVERHEAD = 120
"""Bytes a cached entry costs beyond its payload (Entry struct, bytes header, list slot)."""

_dec_conf = msgspec.msgpack.Decoder(ConfState)


def _cost(entries: Sequence[Entry]) -> int:
    return sum([len(e.data) for e in entries]) + ENTRY_CACHE_OVERHEAD * len(entries)


class FileStorage(Recovery):
    """Durable Raft storage in a segmented write-ahead log (see the module docstring).

    Implements :class:`~raftpy.storage.base.LogStore`: the core's
    :class:`~raftpy.core.storage.LogStorage` read protocol and the driver's writes. Writes are
    buffered until :meth:`sync`, which makes them durable with one ``fdatasync``; the driver
    calls it once per Ready (when ``must_sync``) before sending ``persisted_messages``. Reads
    see buffered writes at once. ``create_snapshot`` and ``apply_snapshot`` sync by themselves
    (segments are deleted only once the snapshot marker is durable).

    ``voters`` is the initial membership of a new data directory (ignored when it already
    holds a log). ``cluster_id`` and ``node_id`` are the identity recorded in a new directory
    and checked in an old one (``None``: not checked). ``fs`` is the file layer (default: the
    real one; tests pass a :class:`~raftpy.storage.fs.FaultyFileSystem`). Opening recovers as
    described above, changes nothing on disk until the first write, and may raise
    :class:`DataLossError` or :class:`CorruptLogError`, :class:`UnsupportedFormatError`,
    :class:`DataDirError` (the directory cannot be read or written, or belongs to another node)
    or :class:`DataDirLockedError`. Not thread-safe: one driver owns it.

    Only snapshot *metadata* lives here; the snapshot files are kept by
    :class:`~raftpy.storage.snapshots.SnapshotStore`, and the driver writes a file durably
    before it records the snapshot here (so the log never refers to a file that is not there).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        voters: Sequence[int] = (),
        *,
        fs: FileSystem | None = None,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        cluster_id: str | None = None,
        node_id: int | None = None,
        addresses: Mapping[int, str] | None = None,
    ) -> None:
        if segment_size < MIN_SEGMENT_SIZE:
            raise ValueError(
                f"segment_size {segment_size} is below the minimum of {MIN_SEGMENT_SIZE} bytes"
            )
        self._fs: FileSystem = fs if fs is not None else OsFileSystem()
        self._dir = os.fspath(data_dir)
        self._segment_size = segment_size
        self._cache_limit = cache_bytes
        self._fatal: str | None = None
        self._closed = False

        # Segments: number -> open file; where each one's data ends; its highest entry index.
        self._files: dict[int, File] = {}
        self._seg_end: dict[int, int] = {}
        self._seg_max: dict[int, int] = {}
        self._seq = 0  # the segment being written (0: none yet)
        self._dirty = False  # written to the current segment but not fdatasync'ed
        # Per segment: its format version, where its records start, where its last batch starts
        # (what its TAIL points back to).
        self._seg_version: dict[int, int] = {}
        self._seg_start: dict[int, int] = {}
        self._seg_batch: dict[int, int] = {}
        self._roll = False  # the next batch must start a new segment (the last one is format 1)

        # Recovery only reads; what it decided to change waits for the first write (_settle).
        # A fresh incarnation, used only if the directory records none (a new one, or one
        # written before incarnations existed); recovery settles which one is ours.
        self._incarnation = new_incarnation()
        self._identity = Identity(cluster_id, node_id, self._incarnation)
        self._settled = True
        self._new = False  # no log yet: the first write creates it
        self._write_identity: Identity | None = None
        self._repairs: list[tuple[int, int, int]] = []  # (segment, offset, end) to clear
        self._stale: list[str] = []  # half-created segments to delete
        self.vouches_for_tail = True
        """Whether the log can tell a cut-off end from a clean one (its last segment is format
        2); a caller holding other evidence (snapshot files) weighs it with this."""

        # The index. Invariant (outside recovery): self._first == self._snap.index + 1, and the
        # entry at index i has term self._terms[i - self._first]. Spans: record j holds entries
        # from _sp_first[j]; its live range is [_sp_first[j], _sp_first[j + 1]) (the last one's
        # ends at last_index() + 1). _sp_seg[j] == -1 marks a record not yet written, whose
        # entries are self._pending_entries[_sp_off[j]].
        self._snap = SnapshotMeta(0, 0, bootstrap_conf(voters, addresses))
        self._hard = HardState()
        self._first = 1
        self._terms = array("q")
        self._sp_first = array("q")
        self._sp_seg = array("q")
        self._sp_off = array("q")
        self._sp_len = array("q")
        self._confs: list[tuple[int, ConfState]] = []  # CONFIG entries after the snapshot

        # The write buffer: (type, payload, index into _pending_entries or -1).
        self._ops: list[tuple[int, bytes, int]] = []
        self._pending_entries: list[list[Entry]] = []
        self._pending_hs: int | None = None  # position of the buffered HARD_STATE op
        # State as of the last batch written: what a new segment's first batch restates.
        self._written_snap = self._snap
        self._written_hard = self._hard

        self._cache: OrderedDict[tuple[int, int], list[Entry]] = OrderedDict()
        self._cache_used = 0

        lock_path = os.path.join(self._dir, "LOCK")
        self._lock: Lock | None = None
        try:
            self._fs.makedirs(self._dir)
            self._lock = self._fs.lock(lock_path)
        except BlockingIOError:
            raise DataDirLockedError(
                f"data dir {self._dir} is in use by another process (lock file {lock_path})"
            ) from None
        except OSError as exc:
            raise DataDirError(f"cannot use data dir {self._dir}: {exc}") from exc
        try:
            self._check_writable()
            self._recover()
        except OSError as exc:
            self.close()
            raise DataDirError(f"cannot use data dir {self._dir}: {exc}") from exc
        except DataLossError:
            self.close()
            raise
        except CorruptLogError as exc:
            # Whatever recovery cannot read held synced state: refused like any other loss.
            self.close()
            raise DataLossError(exc.file, exc.offset, exc.reason) from exc
        except BaseException:
            self.close()
            raise

    # -- LogStorage -----------------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard, (self._confs[-1][1] if self._confs else self._snap.conf)

    def conf_entries(self) -> list[tuple[int, ConfState]]:
        return list(self._confs)

    def first_index(self) -> int:
        return self._snap.index + 1

    def last_index(self) -> int:
        return self._first + len(self._terms) - 1

    def term(self, index: int) -> int:
        offset = self._snap.index
        if index < offset:
            raise CompactedError(f"index {index} is compacted (snapshot at {offset})")
        if index == offset:
            return self._snap.term
        k = index - self._first  # last_index() inlined: the core asks for terms very often
        if k >= len(self._terms):
            raise IndexError(f"index {index} is past the last index {self.last_index()}")
        return self._terms[k]

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._snap.index
        if lo <= offset:
            raise CompactedError(f"index {lo} is compacted (snapshot at {offset})")
        last = self._first + len(self._terms) - 1  # last_index(), inlined
        if hi > last + 1:
            raise IndexError(f"range [{lo}, {hi}) runs past the last index {last}")
        out: list[Entry] = []
        if lo >= hi:
            return out
        j = bisect_right(self._sp_first, lo) - 1
        nspans = len(self._sp_first)
        size = 0
        while lo < hi:
            start = self._sp_first[j]
            end = self._sp_first[j + 1] if j + 1 < nspans else last + 1
            stop = min(hi, end)
            part = self._record(j)[lo - start : stop - start]
            out.extend(part)
            lo = stop
            j += 1
            if max_bytes is not None:
                size += entries_size(part)
                if size > max_bytes:
                    break  # no need to read further: limit_size cuts the list below
        return limit_size(out, max_bytes)

    def snapshot_meta(self) -> SnapshotMeta:
        return self._snap

    @property
    def directory(self) -> str:
        """The data directory this log lives in."""
        return self._dir

    @property
    def fs(self) -> FileSystem:
        """The file layer the data directory lives on (files kept beside the log use it)."""
        return self._fs

    @property
    def incarnation(self) -> str:
        """This data directory's incarnation (32 hex digits, :mod:`raftpy.storage.identity`):
        drawn once when the directory was new and kept in ``IDENTITY``, so a wiped directory
        comes back with another one. It is on disk once the first write (or :meth:`sync`)
        returned; announce it only after that."""
        return self._incarnation

    @property
    def location(self) -> str:
        """The data directory (the :class:`~raftpy.storage.base.LogStore` name for it)."""
        return self._dir

    # -- writes ----------------------------------------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        return self._hard

    def set_hard_state(self, hard_state: HardState) -> None:
        """Buffer the hard state (term, vote, commit) as one record; durable at :meth:`sync`."""
        self._check_usable()
        if hard_state == self._hard:
            return
        self._hard = hard_state
        payload = _enc.encode(hard_state)
        # Only the latest hard state of a batch matters (the batch is applied as a whole).
        if self._pending_hs is not None:
            self._ops[self._pending_hs] = (HARD_STATE, payload, -1)
        else:
            self._pending_hs = len(self._ops)
            self._ops.append((HARD_STATE, payload, -1))

    def append(self, entries: Sequence[Entry]) -> None:
        """Buffer entries, first truncating any stored suffix from ``entries[0].index`` on.

        Like :meth:`MemoryStorage.append`: the caller guarantees only an uncommitted,
        conflicting suffix is replaced; entries must be contiguous and start at most one past
        the last index. Durable at :meth:`sync`.
        """
        self._check_usable()
        if not entries:
            return
        batch = list(entries)
        first = batch[0].index
        offset = self._snap.index
        if first <= offset:
            batch = batch[offset + 1 - first :]  # already covered by the snapshot
            if not batch:
                return
            first = batch[0].index
        last = self.last_index()
        if first > last + 1:
            raise LocalProtocolError(f"append at {first} leaves a gap after last index {last}")
        if batch[-1].index != first + len(batch) - 1:
            raise LocalProtocolError(f"entries from {first} are not contiguous")
        if first <= last:
            # A durable truncation: the marker and the new entries go into the same batch.
            self._ops.append((TRUNCATE, _enc.encode(first - 1), -1))
            self._truncate_index(first - 1)
        k = len(self._pending_entries)
        self._pending_entries.append(batch)
        self._ops.append((ENTRIES, _enc.encode(batch), k))
        self._add_span(first, -1, k, 0)
        self._terms.extend([e.term for e in batch])
        self._note_confs(batch)

    def create_snapshot(self, meta: SnapshotMeta) -> None:
        """Record a snapshot the local state machine took at ``meta.index``, compact the log up
        to it (durably: this syncs) and delete the segments wholly below it."""
        self._check_usable()
        if meta.index <= self._snap.index:
            return
        if meta.index > self.last_index():
            raise LocalProtocolError(f"snapshot at {meta.index} is past {self.last_index()}")
        self._ops.append((SNAPSHOT, _enc.encode(_SnapshotRecord(meta, True)), -1))
        self._compact_index(meta)
        self.sync()
        self._delete_old_segments()

    def apply_snapshot(self, meta: SnapshotMeta) -> None:
        """Replace the log with a snapshot received from the leader (Raft §7): entries after
        the snapshot are kept only if the log holds the snapshot's last entry. Syncs."""
        self._check_usable()
        if meta.index <= self._snap.index:
            return
        keep = self.last_index() >= meta.index and self.term(meta.index) == meta.term
        self._ops.append((SNAPSHOT, _enc.encode(_SnapshotRecord(meta, keep)), -1))
        if keep:
            self._compact_index(meta)
        else:
            self._clear_index(meta)
        self.sync()
        self._delete_old_segments()

    def sync(self) -> None:
        """Write the buffered records as one batch and ``fdatasync`` them: after it returns,
        everything appended and set so far survives a crash.

        Raises :class:`StorageFullError` when the disk is full (nothing was written, the buffer
        is kept: call again once space is free) and :class:`FatalStorageError` when an fsync or
        a write fails otherwise (the process must exit).
        """
        self._check_usable()
        if self._ops:
            self._write_batch()
        if self._dirty:
            try:
                self._files[self._seq].datasync()
            except OSError as exc:
                raise self._die(f"fdatasync of {self._seg_path(self._seq)} failed: {exc}") from exc
            self._dirty = False

    def persisted_bytes(self) -> int:
        """Bytes of the log records held on disk (segment headers and records, not the
        preallocated space), including buffered records not yet written."""
        return sum(self._seg_end.values()) + sum(len(p) + _RH for _, p, _ in self._ops)

    def index_bytes(self) -> int:
        """Bytes used by the in-memory index (for the benchmark's memory-per-entry figure)."""
        arrays = (self._terms, self._sp_first, self._sp_seg, self._sp_off, self._sp_len)
        return sum(a.buffer_info()[1] * a.itemsize for a in arrays)

    def close(self) -> None:
        """Close the files and release the lock. Buffered writes not yet synced are dropped."""
        if self._closed:
            return
        self._closed = True
        for f in self._files.values():
            with contextlib.suppress(OSError):
                f.close()
        self._files.clear()
        self._cache.clear()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> FileStorage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the in-memory index ----------------------------------------------------------------------

    def _add_span(self, first: int, seq: int, off: int, length: int) -> None:
        self._sp_first.append(first)
        self._sp_seg.append(seq)
        self._sp_off.append(off)
        self._sp_len.append(length)

    def _del_spans(self, lo: int, hi: int | None = None) -> None:
        for a in (self._sp_first, self._sp_seg, self._sp_off, self._sp_len):
            del a[lo:hi]

    def _note_confs(self, batch: Sequence[Entry]) -> None:
        for e in batch:
            if e.kind is EntryKind.CONFIG:
                self._confs.append((e.index, _dec_conf.decode(e.data)))

    def _truncate_index(self, n: int) -> None:
        """Forget the entries after index ``n``."""
        if n < self._first:
            self._terms = array("q")
            self._first = n + 1
            self._del_spans(0)
        else:
            del self._terms[n - self._first + 1 :]
            self._del_spans(bisect_right(self._sp_first, n))
        while self._confs and self._confs[-1][0] > n:
            self._confs.pop()

    def _compact_index(self, meta: SnapshotMeta) -> None:
        """Forget the entries up to ``meta.index`` (kept by the snapshot)."""
        index = meta.index
        drop = index - self._first + 1
        if drop > 0:
            del self._terms[:drop]
            self._first = index + 1
            j = bisect_right(self._sp_first, index + 1) - 1
            if j > 0:
                self._del_spans(0, j)
        self._confs = [(i, c) for i, c in self._confs if i > index]
        self._snap = meta

    def _clear_index(self, meta: SnapshotMeta) -> None:
        self._terms = array("q")
        self._first = meta.index + 1
        self._del_spans(0)
        self._confs = []
        self._snap = meta

    # -- reading records --------------------------------------------------------------------------

    def _record(self, j: int) -> list[Entry]:
        seq = self._sp_seg[j]
        off = self._sp_off[j]
        if seq == -1:
            return self._pending_entries[off]
        key = (seq, off)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        raw = self._files[seq].read_at(off, self._sp_len[j])
        entries = decode_entries_record(raw, seq, off, self._seg_path(seq))
        self._cache_put(key, entries)
        return entries

    def _cache_put(self, key: tuple[int, int], entries: list[Entry]) -> None:
        self._cache[key] = entries
        self._cache_used += _cost(entries)
        while self._cache_used > self._cache_limit and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cache_used -= _cost(old)

    # -- writing ---------------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._fatal is not None:
            raise FatalStorageError(f"storage in {self._dir} is unusable: {self._fatal}")
        if self._closed:
            raise LocalProtocolError(f"storage in {self._dir} is closed")
        if not self._settled:
            self._settle()

    def _die(self, reason: str) -> FatalStorageError:
        self._fatal = reason
        log.critical("fatal storage error, the process must exit: %s", reason)
        return FatalStorageError(
            f"{reason}; the process must exit (the kernel may have dropped the unwritten "
            "pages, so the write is never retried)"
        )

    def _seg_path(self, seq: int) -> str:
        return os.path.join(self._dir, segment_name(seq))

    def _write_batch(self) -> None:
        ops = self._ops
        size = _RH * len(ops) + TAIL_SIZE
        for op in ops:
            size += len(op[1])
        seq = self._seq
        if (
            seq == 0
            or self._roll
            or (
                self._seg_end[seq] > self._seg_start[seq]
                and self._seg_end[seq] + size > self._segment_size
            )
        ):
            self._roll_over()
            seq = self._seq
        start = self._seg_end[seq]
        if start == self._seg_start[seq]:
            # A segment's first batch restates the snapshot and hard state, so every segment
            # before it can be deleted without losing them.
            head = [
                (SNAPSHOT, _enc.encode(_SnapshotRecord(self._written_snap, True)), -1),
                (HARD_STATE, _enc.encode(self._written_hard), -1),
            ]
            ops = head + ops
        tail = self._seg_version[seq] >= 2
        buf, offsets = encode_batch(seq, start, ops, tail)
        f = self._files[seq]
        try:
            f.write_at(start, buf)
        except OSError as exc:
            self._undo_write(f, start, exc)
        self._dirty = True
        self._seg_batch[seq] = start
        self._seg_end[seq] = start + len(buf) - (TAIL_SIZE if tail else 0)
        # The records now have a place: point the pending spans at it and cache their entries.
        j = len(self._sp_seg) - 1
        while j >= 0 and self._sp_seg[j] == -1:
            k = self._sp_off[j]
            off, length = offsets[k]
            self._sp_seg[j] = seq
            self._sp_off[j] = off
            self._sp_len[j] = length
            self._cache_put((seq, off), self._pending_entries[k])
            j -= 1
        top = self._seg_max.get(seq, 0)
        for b in self._pending_entries:  # not only the last: a truncation may follow a batch
            if b[-1].index > top:
                top = b[-1].index
        self._seg_max[seq] = top
        self._ops = []
        self._pending_entries = []
        self._pending_hs = None
        self._written_snap = self._snap
        self._written_hard = self._hard

    def _undo_write(self, f: File, start: int, exc: OSError) -> None:
        """A write failed: cut off whatever part of it landed, so no half batch stays behind,
        and raise the right error. The buffer is kept for the next sync."""
        path = self._seg_path(self._seq)
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise self._die(f"write to {path} at offset {start} failed: {exc}") from exc
        try:
            f.truncate(start)
            # Still full: then later writes extend the file instead.
            with contextlib.suppress(OSError):
                f.preallocate(self._segment_size)
            if self._seg_version[self._seq] >= 2:
                # The failed write began over the TAIL: put it back.
                f.write_at(start, encode_tail(self._seq, start, self._seg_batch[self._seq]))
            f.datasync()
        except OSError as exc2:
            raise self._die(f"could not undo a partial write to {path}: {exc2}") from exc2
        raise StorageFullError(
            f"disk full writing {path} at offset {start}: {exc}; nothing was written, "
            "sync again once space is free"
        ) from exc

    def _roll_over(self) -> None:
        """Start a new segment: create it under a temporary name with its header and
        preallocated space, sync it, rename it into place and sync the directory."""
        old = self._seq
        if old and self._dirty:
            # The old segment must be fully durable before a later one exists: recovery
            # treats damage in any segment but the last as corruption.
            try:
                self._files[old].datasync()
            except OSError as exc:
                raise self._die(f"fdatasync of {self._seg_path(old)} failed: {exc}") from exc
            self._dirty = False
        seq = old + 1
        final = self._seg_path(seq)
        tmp = final + ".tmp"
        f = self._fs.open(tmp, create=True)
        start = header_size(FORMAT_VERSION)
        try:
            # The header and a TAIL: an empty segment that says it ends here.
            f.write_at(0, segment_header(seq, self._segment_size) + encode_tail(seq, start, start))
            f.preallocate(self._segment_size)
        except OSError as exc:
            f.close()
            self._fs.unlink(tmp)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFullError(f"disk full creating segment {final}: {exc}") from exc
            raise self._die(f"could not create segment {final}: {exc}") from exc
        try:
            f.datasync()
            self._fs.rename(tmp, final)
            self._fs.sync_dir(self._dir)
        except OSError as exc:
            raise self._die(f"could not create segment {final}: {exc}") from exc
        if old:
            self._seal(old, seq)
        self._files[seq] = f
        self._seg_version[seq] = FORMAT_VERSION
        self._seg_start[seq] = self._seg_end[seq] = self._seg_batch[seq] = start
        self._seg_max[seq] = 0
        self._seq = seq
        self._roll = False

    def _seal(self, old: int, seq: int) -> None:
        """Close segment ``old`` now that ``seq`` exists: a SEAL after its TAIL says the log
        goes on in ``seq`` (so a missing last segment is seen), and its unused preallocated
        space is given back. A failure loses only that evidence: logged, not fatal."""
        f = self._files[old]
        end = self._seg_end[old]
        try:
            if self._seg_version[old] >= 2:
                at = end + TAIL_SIZE
                seal = encode_seal(old, at, seq)
                f.write_at(at, seal)
                f.truncate(at + len(seal))
                f.datasync()
            else:
                # Not synced: zeros or nothing after its last record read the same.
                f.truncate(end)
        except OSError as exc:
            log.warning("could not seal segment %s: %s", self._seg_path(old), exc)

    def _delete_old_segments(self) -> None:
        """Delete the oldest segments whose entries all lie at or below the snapshot index
        (never the segment being written; only a prefix, so numbers stay contiguous)."""
        doomed = []
        for seq in sorted(self._files):
            if seq == self._seq or self._seg_max[seq] > self._snap.index:
                break
            doomed.append(seq)
        if not doomed:
            return
        for seq in doomed:
            self._files.pop(seq).close()
            for table in (self._seg_end, self._seg_max, self._seg_version):
                del table[seq]
            self._seg_start.pop(seq)
            self._seg_batch.pop(seq)
            for key in [k for k in self._cache if k[0] == seq]:
                self._cache_used -= _cost(self._cache.pop(key))
            try:
                self._fs.unlink(self._seg_path(seq))
            except OSError as exc:
                raise self._die(f"could not delete {self._seg_path(seq)}: {exc}") from exc
        try:
            self._fs.sync_dir(self._dir)
        except OSError as exc:
            raise self._die(f"fsync of directory {self._dir} failed: {exc}") from exc
