"""SnapshotStore: a node's state-machine snapshots as durable files in one directory.

The write-ahead log keeps only a snapshot's metadata (:class:`SnapshotMeta`); the state
machine's bytes live here, one file per snapshot, written and read as streams so that a
snapshot may be far larger than memory. The directory belongs to the store alone. Opening it
changes nothing; :meth:`SnapshotStore.remove_leftovers` deletes the leftovers of interrupted
writes (``*.tmp``, ``*.partial``) once the node has decided to start. Files are created
owner-only (0600, the directory 0700).

Layout of the directory::

    00000000000000001000-00000000000000000003.snap   complete snapshots: index, term (20
    00000000000000002000-00000000000000000004.snap   zero-padded decimal digits each)
    00000000000000003000-00000000000000000004.snap.tmp  one being written by create()
    from-2.partial                                       one arriving from the leader

A snapshot file is a header, the body and a trailer, all integers little-endian::

    header   magic    8s   b"RAFTSNAP"
             version  u32  1 (another magic or version: UnsupportedFormatError)
             length   u32  bytes of the encoded meta
             meta     ...  msgspec msgpack of the SnapshotMeta (index, term, conf)
             crc      u32  zlib.crc32 of every header byte before it
    body     ...           the state machine's bytes, any length
    trailer  length   u64  bytes of the body
             crc      u32  zlib.crc32 of every byte before the trailer (header and body)
             magic    4s   b"RSNE"

The header says what the snapshot is before its body is read (``list()`` reads headers only);
the trailer lets a writer stream a body of unknown length and still end with a length and a
checksum over everything. A file cut short loses its trailer magic; a flipped bit anywhere
before the trailer fails the trailer's CRC. Any damage, and a header whose meta does not match
the file name, raises :class:`CorruptSnapshotError` naming the file and byte offset.

**Atomicity.** :meth:`SnapshotStore.create` writes ``<name>.tmp``, syncs it,
renames it to ``<name>`` and fsyncs the directory. A complete name therefore only ever points
at complete, durable bytes: a crash at any point leaves either no new snapshot or the whole
one, plus perhaps a ``.tmp`` that the next open deletes. A snapshot received from the leader
goes the same way: ``<tag>.partial``, written chunk by chunk, synced and verified by
:meth:`SnapshotSink.finish`, renamed into place by :meth:`SnapshotStore.install`.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import logging
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, cast

import msgspec

from raftpy.core.messages import DECODE_ERRORS, SnapshotMeta
from raftpy.errors import LocalProtocolError
from raftpy.storage.errors import (
    CorruptSnapshotError,
    DataDirError,
    FatalStorageError,
    StorageFullError,
    UnsupportedFormatError,
)
from raftpy.storage.fs import File, FileSystem, OsFileSystem

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "TRAILER_MAGIC",
    "SnapshotSink",
    "SnapshotSource",
    "SnapshotStore",
    "snapshot_file_name",
]

log = logging.getLogger("raftpy.storage.snapshots")

MAGIC = b"RAFTSNAP"
TRAILER_MAGIC = b"RSNE"
FORMAT_VERSION = 1
CHUNK = 1 << 20
"""Bytes per ``pwrite`` when creating and per ``pread`` when reading back: large enough that
a state machine writing tiny pieces costs one system call per MiB, small enough to keep
memory flat whatever the snapshot's size."""
SYNC_EVERY = CHUNK
"""Bytes after which :meth:`SnapshotStore.create` syncs what it wrote so far, so that dirty
pages never pile up. Written whole and synced once at the end, a 113 MB snapshot left up to
113 MB to flush at once, and the log's fdatasyncs in the meantime (ext4 commits its journal for
them) stalled for up to 170-210 ms; synced every MiB, the longest stall measured 66-80 ms and
the snapshot took about 10% longer to write (2026-12-07, this project's test machine). The
snapshot is written in a worker thread, so the waits cost the event loop nothing."""
MAX_META_BYTES = 16 << 20
"""A header claiming a longer meta is damaged (a membership of thousands of nodes encodes in
kilobytes); the limit keeps a flipped length bit from making us read gigabytes."""

_PREFIX = struct.Struct("<8sII")  # magic, version, meta length
_U32 = struct.Struct("<I")
_TRAILER = struct.Struct("<QI4s")  # body length, crc of everything before, magic
_TRAILER_SIZE = _TRAILER.size  # 16
_META_AT = _PREFIX.size  # 16: where the encoded meta starts
_NAME = re.compile(r"^([0-9]{20})-([0-9]{20})\.snap$")
_LEFTOVER_SUFFIXES = (".tmp", ".partial")

_enc = msgspec.msgpack.Encoder()
_dec_meta = msgspec.msgpack.Decoder(SnapshotMeta)


def snapshot_file_name(meta: SnapshotMeta) -> str:
    """The file name of the snapshot ``meta`` in a store's directory: index and term as 20
    zero-padded decimal digits each, so names sort as ``(index, term)`` do."""
    return _file_name(meta.index, meta.term)


def _file_name(index: int, term: int) -> str:
    return f"{index:020d}-{term:020d}.snap"


def _is_full(exc: BaseException | None) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _encode_header(meta: SnapshotMeta) -> bytes:
    payload = _enc.encode(meta)
    if len(payload) > MAX_META_BYTES:
        raise ValueError(f"snapshot meta encodes to {len(payload)} bytes, over {MAX_META_BYTES}")
    head = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(payload)) + payload
    return head + _U32.pack(zlib.crc32(head))


@dataclass(frozen=True, slots=True)
class _Header:
    """A checked header: the meta, where the body starts, and the running CRC of the header's
    bytes (the trailer's CRC continues from it)."""

    meta: SnapshotMeta
    body_start: int
    crc: int


def _read_header(f: File, path: str, name_key: tuple[int, int] | None) -> _Header:
    """Read and check the header of the snapshot file ``f`` (at ``path``), and that the file is
    at least long enough for its trailer. ``name_key`` is the (index, term) its file name
    promises (``None`` for a partial file, whose name says nothing)."""
    size = f.size()
    prefix = f.read_at(0, _PREFIX.size)
    if len(prefix) < _PREFIX.size:
        raise CorruptSnapshotError(
            path, len(prefix), f"file truncated: {size} bytes, shorter than the header prefix"
        )
    magic, version, length = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise UnsupportedFormatError(
            f"{path} is not a raftpy snapshot file: magic number {magic!r}, expected {MAGIC!r}"
        )
    if version != FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"{path} has snapshot format version {version}; this raftpy reads version "
            f"{FORMAT_VERSION} only (written by a newer raftpy?)"
        )
    if length > MAX_META_BYTES:
        raise CorruptSnapshotError(path, 12, f"implausible meta length {length}")
    body_start = _META_AT + length + _U32.size
    if size < body_start + _TRAILER_SIZE:
        raise CorruptSnapshotError(
            path,
            size,
            f"file truncated: {size} bytes, but the header ends at byte {body_start} and the "
            f"trailer needs {_TRAILER_SIZE} more",
        )
    rest = f.read_at(_META_AT, length + _U32.size)
    (stored,) = _U32.unpack_from(rest, length)
    crc = zlib.crc32(rest[:length], zlib.crc32(prefix))
    if crc != stored:
        raise CorruptSnapshotError(
            path,
            _META_AT + length,
            f"header checksum mismatch: CRC-32 of bytes [0, {_META_AT + length}) is "
            f"{crc:#010x}, the header says {stored:#010x}",
        )
    try:
        meta = _dec_meta.decode(rest[:length])
    except DECODE_ERRORS as exc:
        raise CorruptSnapshotError(path, _META_AT, f"undecodable meta: {exc}") from exc
    if name_key is not None and (meta.index, meta.term) != name_key:
        raise CorruptSnapshotError(
            path,
            _META_AT,
            f"the header holds snapshot (index {meta.index}, term {meta.term}) but the file "
            f"name says (index {name_key[0]}, term {name_key[1]})",
        )
    return _Header(meta, body_start, zlib.crc32(rest[length:], crc))


def _check_trailer_shape(f: File, path: str, header: _Header, size: int) -> int:
    """Check the trailer's magic and body length (not its CRC: that needs the whole file).
    Returns the stored CRC."""
    off = size - _TRAILER_SIZE
    body_len, stored_crc, magic = _TRAILER.unpack(f.read_at(off, _TRAILER_SIZE))
    if magic != TRAILER_MAGIC:
        raise CorruptSnapshotError(
            path,
            off + 12,
            f"trailer magic {magic!r}, expected {TRAILER_MAGIC!r} (file cut short or overwritten)",
        )
    if body_len != off - header.body_start:
        raise CorruptSnapshotError(
            path,
            off,
            f"the trailer says the body has {body_len} bytes, the file holds "
            f"{off - header.body_start} (bytes [{header.body_start}, {off}))",
        )
    return int(stored_crc)


def _check_crc(path: str, trailer_at: int, crc: int, stored: int) -> None:
    if crc != stored:
        raise CorruptSnapshotError(
            path,
            trailer_at,
            f"checksum mismatch: CRC-32 of bytes [0, {trailer_at}) (header and body) is "
            f"{crc:#010x}, the trailer says {stored:#010x}",
        )


def _verify_file(f: File, path: str, name_key: tuple[int, int] | None) -> tuple[SnapshotMeta, int]:
    """A full checksum pass over a snapshot file, ``CHUNK`` bytes at a time: header, trailer,
    CRC. Returns the meta and the file size."""
    header = _read_header(f, path, name_key)
    size = f.size()
    stored = _check_trailer_shape(f, path, header, size)
    end = size - _TRAILER_SIZE
    crc = header.crc
    off = header.body_start
    while off < end:
        data = f.read_at(off, min(CHUNK, end - off))
        if not data:
            raise CorruptSnapshotError(path, off, "file shrank while being read")
        crc = zlib.crc32(data, crc)
        off += len(data)
    _check_crc(path, end, crc, stored)
    return header.meta, size


class _BodyWriter(io.BufferedIOBase):
    """The writable stream :meth:`SnapshotStore.create` hands to the state machine: appends to
    the file, keeps the running CRC, and gathers small writes into writes of ``CHUNK`` bytes (a
    state machine may write millions of tiny pieces). Not seekable."""

    def __init__(
        self, f: File, header: bytes, sync_failed: Callable[[OSError], BaseException]
    ) -> None:
        super().__init__()
        self._f = f
        self._sync_failed = sync_failed  # what a failed fdatasync raises (the store's fatal)
        self._buf = bytearray(header)
        self._off = 0  # file offset of self._buf[0]
        self._crc = 0
        self._start = len(header)
        self._unsynced = 0  # bytes written since the last sync (SYNC_EVERY)
        self.error: OSError | None = None  # the write failure, even if the caller wraps it

    def writable(self) -> bool:
        return True

    def write(self, b: ReadableBuffer, /) -> int:
        if self.closed:
            raise ValueError("write to a closed snapshot writer")
        view = memoryview(b).cast("B")
        n = len(view)
        if len(self._buf) + n < CHUNK:
            self._buf += view
            return n
        # Whole chunks only, so the file is synced every SYNC_EVERY bytes exactly.
        room = CHUNK - len(self._buf)
        self._buf += view[:room]
        view = view[room:]
        self._drain()
        while len(view) >= CHUNK:
            self._put(view[:CHUNK])
            view = view[CHUNK:]
        self._buf += view
        return n

    def tell(self) -> int:
        """Body bytes written so far."""
        return self._off + len(self._buf) - self._start

    def flush(self) -> None:
        if not self.closed:
            self._drain()

    def finish(self) -> int:
        """Write what is buffered and the trailer; returns the file size."""
        self._drain()
        body = self._off - self._start
        self._put(_TRAILER.pack(body, self._crc, TRAILER_MAGIC), crc=False)
        return self._off

    def _drain(self) -> None:
        if self._buf:
            self._put(self._buf)
            self._buf = bytearray()

    def _put(self, data: ReadableBuffer, crc: bool = True) -> None:
        if self.error is not None:
            # The file's end is unknown after a failed write: refuse to go on.
            raise self.error
        view = memoryview(data)
        try:
            self._f.write_at(self._off, view)
        except OSError as exc:
            self.error = exc
            raise
        if crc:
            self._crc = zlib.crc32(view, self._crc)
        self._off += len(view)
        self._unsynced += len(view)
        if self._unsynced >= SYNC_EVERY:
            self._unsynced = 0
            try:
                self._f.datasync()
            except OSError as exc:
                self.error = exc
                raise self._sync_failed(exc) from exc

    def discard(self) -> None:
        """Close without writing anything more (the file is being thrown away or is done)."""
        self._buf = bytearray()
        self.close()


class _BodyReader(io.RawIOBase):
    """The raw body stream under :meth:`SnapshotStore.open_body`'s buffered reader: reads the
    body bytes, and no more, keeping the running CRC of everything read."""

    def __init__(self, f: File, path: str, header: _Header, end: int) -> None:
        super().__init__()
        self._f = f
        self._path = path
        self._pos = header.body_start
        self._end = end
        self.crc = header.crc

    def readable(self) -> bool:
        return True

    def readinto(self, b: WriteableBuffer, /) -> int:
        if self.closed:
            raise ValueError("read from a closed snapshot reader")
        view = memoryview(b).cast("B")
        return self._read_into(view)

    def _read_into(self, view: memoryview) -> int:
        n = min(len(view), self._end - self._pos)
        if n <= 0:
            return 0
        data = self._f.read_at(self._pos, n)
        if len(data) != n:
            raise CorruptSnapshotError(self._path, self._pos + len(data), "file shrank")
        view[:n] = data
        self.crc = zlib.crc32(data, self.crc)
        self._pos += n
        return n

    def finish(self) -> None:
        """Read the unread rest of the body (closed or not: the state machine may have closed
        its stream) so the CRC covers every byte."""
        buf = memoryview(bytearray(min(CHUNK, max(0, self._end - self._pos))))
        while self._pos < self._end:
            self._read_into(buf)


class SnapshotSource:
    """An open snapshot file to send to a follower, read at explicit offsets as raw file bytes
    (header and trailer included: the receiver stores the very same file and checks it with
    the same CRCs). A context manager; :meth:`close` releases the file."""

    def __init__(self, f: File, meta: SnapshotMeta, size: int) -> None:
        self._f = f
        self.meta = meta
        self.size = size

    def read(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes of the file from ``offset`` (fewer only at its end)."""
        if offset < 0 or n < 0:
            raise ValueError(f"read({offset}, {n}): offset and size must be >= 0")
        return self._f.read_at(offset, max(0, min(n, self.size - offset)))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._f.close()

    def __enter__(self) -> SnapshotSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SnapshotSink:
    """A snapshot arriving from the leader in chunks, written to ``<tag>.partial``.

    Call order: :meth:`write` the chunks in order; :meth:`finish` (sync and verify); then
    :meth:`SnapshotStore.install` to make it a snapshot, or :meth:`abort` to drop it (always
    safe, also after a failed :meth:`finish`). Made by :meth:`SnapshotStore.begin_receive`.
    """

    def __init__(self, store: SnapshotStore, path: str, f: File) -> None:
        self._store = store
        self.path = path
        self._f = f
        self._size = 0
        self._meta: SnapshotMeta | None = None
        self._closed = False
        self._done = False  # installed or aborted: the partial file is gone

    @property
    def size(self) -> int:
        """Bytes written so far: the offset the next chunk must start at."""
        return self._size

    @property
    def meta(self) -> SnapshotMeta | None:
        """The snapshot's meta once :meth:`finish` has verified the file, else ``None``."""
        return self._meta

    def write(self, data: bytes) -> None:
        """Append ``data`` (not synced: :meth:`finish` syncs once). Raises
        :class:`StorageFullError` when the disk is full (then :meth:`abort`)."""
        if self._closed or self._meta is not None:
            raise LocalProtocolError(f"write to a finished or closed snapshot sink {self.path}")
        try:
            self._f.write_at(self._size, data)
        except OSError as exc:
            if _is_full(exc):
                raise StorageFullError(f"disk full receiving snapshot {self.path}: {exc}") from exc
            raise
        self._size += len(data)

    def finish(self) -> SnapshotMeta:
        """Make the file durable, then read it all back and check header, trailer and CRC:
        the bytes on disk, not just the ones we were sent, are what a restart will read.
        Returns the meta from the header; raises :class:`CorruptSnapshotError` (the partial
        file stays until :meth:`abort`)."""
        if self._closed:
            raise LocalProtocolError(f"finish of a closed snapshot sink {self.path}")
        if self._meta is None:
            try:
                self._f.datasync()
            except OSError as exc:
                raise self._store._die(f"fdatasync of {self.path} failed: {exc}") from exc
            self._meta, _ = _verify_file(self._f, self.path, None)
        return self._meta

    def abort(self) -> None:
        """Close and delete the partial file. Idempotent."""
        self.close()
        if not self._done:
            self._done = True
            with contextlib.suppress(FileNotFoundError):
                self._store._fs.unlink(self.path)

    def close(self) -> None:
        """Release the file handle (the partial file stays)."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(OSError):
                self._f.close()


class SnapshotStore:
    """A node's snapshot files in one directory (see the module docstring for the format).

    ``fs`` is the file layer: the real one by default; a node without a data directory passes
    a :class:`~raftpy.storage.fs.MemoryFileSystem`, the simulator and tests a
    :class:`~raftpy.storage.fs.FaultyFileSystem`. Opening creates the directory if needed
    (:class:`~raftpy.storage.errors.DataDirError` when it cannot) and deletes nothing:
    :meth:`remove_leftovers` does, once the caller has decided to use the store.

    Errors: :class:`CorruptSnapshotError` and :class:`UnsupportedFormatError` for bad files;
    :class:`StorageFullError` when the disk is full (nothing half-written is left behind);
    :class:`FatalStorageError` when an fsync fails (after that the store refuses to write:
    the process must restart from what is on disk); ``FileNotFoundError`` when asked to read a
    snapshot that does not exist.

    Threads: one caller at a time, except that :meth:`create` (and reading an
    :meth:`open_body` stream) may run in a worker thread (``asyncio.to_thread``) while the
    owning thread uses the read-only methods; they share only a cache of headers, whose
    single-key updates are atomic.
    """

    def __init__(self, directory: str | os.PathLike[str], fs: FileSystem | None = None) -> None:
        self._fs: FileSystem = fs if fs is not None else OsFileSystem()
        self._dir = os.fspath(directory)
        self._headers: dict[str, _Header] = {}  # complete files only: immutable once named
        self._fatal: str | None = None
        try:
            self._fs.makedirs(self._dir)
        except OSError as exc:
            raise DataDirError(f"cannot use snapshot directory {self._dir}: {exc}") from exc

    def remove_leftovers(self) -> None:
        """Delete the leftovers of interrupted writes (``*.tmp``, ``*.partial``: a create() or
        a receive that never finished, which no snapshot name points at), durably."""
        leftovers = [n for n in self._fs.listdir(self._dir) if n.endswith(_LEFTOVER_SUFFIXES)]
        for name in leftovers:
            log.info("deleting leftover snapshot file %s", self._path(name))
            self._fs.unlink(self._path(name))
        if leftovers:
            self._sync_dir()

    @property
    def directory(self) -> str:
        return self._dir

    def _path(self, name: str) -> str:
        return os.path.join(self._dir, name)

    def path(self, meta: SnapshotMeta) -> str:
        """Where the snapshot ``meta`` is (or would be) stored."""
        return self._path(snapshot_file_name(meta))

    def path_of(self, index: int, term: int) -> str:
        """Where the snapshot at ``(index, term)`` is (or would be) stored."""
        return self._path(_file_name(index, term))

    def _die(self, reason: str) -> FatalStorageError:
        self._fatal = reason
        log.critical("fatal storage error, the process must exit: %s", reason)
        return FatalStorageError(
            f"{reason}; the process must exit (the kernel may have dropped the unwritten pages)"
        )

    def _check_usable(self) -> None:
        if self._fatal is not None:
            raise FatalStorageError(f"snapshot store in {self._dir} is unusable: {self._fatal}")

    def _sync_dir(self) -> None:
        try:
            self._fs.sync_dir(self._dir)
        except OSError as exc:
            raise self._die(f"fsync of directory {self._dir} failed: {exc}") from exc

    # -- reading -----------------------------------------------------------------------------

    def _names(self) -> list[tuple[tuple[int, int], str]]:
        out = []
        for name in self._fs.listdir(self._dir):
            if m := _NAME.match(name):
                out.append(((int(m.group(1)), int(m.group(2))), name))
        out.sort()
        return out

    def list(self) -> list[SnapshotMeta]:
        """The complete snapshots, by ``(index, term)`` ascending. Reads each file's header
        once (then cached); a bad header raises :class:`CorruptSnapshotError`."""
        names = self._names()
        live = {name for _, name in names}
        for gone in [n for n in self._headers if n not in live]:
            self._headers.pop(gone, None)
        metas = []
        for key, name in names:
            header = self._headers.get(name)
            if header is None:
                f = self._fs.open(self._path(name))
                try:
                    header = _read_header(f, self._path(name), key)
                finally:
                    f.close()
                self._headers[name] = header
            metas.append(header.meta)
        return metas

    def keys(self) -> builtins.list[tuple[int, int]]:
        """``(index, term)`` of every complete snapshot file, ascending, from the file names
        alone (no file is read: a damaged file is still listed)."""
        return [key for key, _ in self._names()]

    def read_meta(self, index: int, term: int) -> SnapshotMeta:
        """The metadata in the header of the file for ``(index, term)``; raises
        :class:`CorruptSnapshotError` when that header is damaged or names another snapshot."""
        name = _file_name(index, term)
        header = self._headers.get(name)
        if header is None:
            f = self._fs.open(self._path(name))
            try:
                header = _read_header(f, self._path(name), (index, term))
            finally:
                f.close()
            self._headers[name] = header
        return header.meta

    def latest(self) -> SnapshotMeta | None:
        """The snapshot with the highest ``(index, term)``, or ``None``."""
        metas = self.list()
        return metas[-1] if metas else None

    def has(self, meta: SnapshotMeta) -> bool:
        """Whether a complete file for ``(meta.index, meta.term)`` exists."""
        return self._fs.exists(self.path(meta))

    def size(self, meta: SnapshotMeta) -> int:
        """The size in bytes of the stored file of ``meta``."""
        f = self._fs.open(self.path(meta))
        try:
            return f.size()
        finally:
            f.close()

    def _open_checked(self, meta: SnapshotMeta) -> tuple[File, str, _Header]:
        """Open the file of ``meta`` and check its header holds exactly ``meta``."""
        path = self.path(meta)
        f = self._fs.open(path)
        try:
            header = _read_header(f, path, (meta.index, meta.term))
            if header.meta != meta:
                raise CorruptSnapshotError(
                    path, _META_AT, f"the header holds {header.meta}, expected {meta}"
                )
        except BaseException:
            f.close()
            raise
        return f, path, header

    def verify(self, meta: SnapshotMeta) -> int:
        """Read the whole stored snapshot and check it (header, trailer, CRC). Returns its
        size; raises :class:`CorruptSnapshotError` on damage."""
        f, path, _ = self._open_checked(meta)
        try:
            _, size = _verify_file(f, path, (meta.index, meta.term))
        finally:
            f.close()
        return size

    def open_source(self, meta: SnapshotMeta) -> SnapshotSource:
        """Open the snapshot ``meta`` for sending (header and trailer shape are checked; the
        receiver checks the CRC). Close it, or use it as a context manager."""
        f, path, header = self._open_checked(meta)
        try:
            size = f.size()
            _check_trailer_shape(f, path, header, size)
        except BaseException:
            f.close()
            raise
        return SnapshotSource(f, meta, size)

    @contextlib.contextmanager
    def open_body(self, meta: SnapshotMeta) -> Iterator[BinaryIO]:
        """Open the body of snapshot ``meta`` for restoring, as a buffered readable stream of
        exactly the body bytes, read from disk ``CHUNK`` bytes at a time.

        The header and the trailer's shape are checked before the stream is handed out (a
        truncated file fails here, before the state machine starts). The CRC covers every byte
        read; when the ``with`` block ends without an exception, the unread rest of the body is
        read and the CRC checked: :class:`CorruptSnapshotError` then means the restored state
        must be thrown away. An exception in the block skips the check.
        """
        f, path, header = self._open_checked(meta)
        try:
            size = f.size()
            stored = _check_trailer_shape(f, path, header, size)
            end = size - _TRAILER_SIZE
            raw = _BodyReader(f, path, header, end)
            reader = io.BufferedReader(raw, buffer_size=CHUNK)
            try:
                yield cast(BinaryIO, reader)
            finally:
                reader.close()
            raw.finish()
            _check_crc(path, end, raw.crc, stored)
        finally:
            f.close()

    # -- writing -----------------------------------------------------------------------------

    def create(self, meta: SnapshotMeta, write_body: Callable[[BinaryIO], object]) -> int:
        """Store a new snapshot whose body ``write_body(writer)`` writes to ``writer`` (a
        write-only binary stream), atomically: after a crash at any point there is either no
        new snapshot or the complete one. Returns the file size.

        ``write_body``'s return value is ignored. If the snapshot ``(meta.index, meta.term)``
        exists already, returns its size without calling ``write_body``. On any exception
        (``write_body``'s own included) the temporary file is deleted and the exception
        re-raised; a full disk raises :class:`StorageFullError`, even when ``write_body``
        wrapped the ``OSError``.
        """
        self._check_usable()
        final = self.path(meta)
        if self._fs.exists(final):
            return self.size(meta)
        tmp = final + ".tmp"
        header = _encode_header(meta)
        f = self._fs.open(tmp, create=True)
        writer = _BodyWriter(f, header, lambda exc: self._die(f"fdatasync of {tmp} failed: {exc}"))
        try:
            f.truncate(0)  # a leftover of an earlier failed attempt
            write_body(cast(BinaryIO, writer))
            size = writer.finish()
            try:
                f.datasync()
            except OSError as exc:
                raise self._die(f"fdatasync of {tmp} failed: {exc}") from exc
            writer.discard()
            f.close()
            self._fs.rename(tmp, final)
        except BaseException as exc:
            writer.discard()
            with contextlib.suppress(OSError):
                f.close()
            with contextlib.suppress(OSError):
                self._fs.unlink(tmp)
            full = exc if _is_full(exc) else writer.error
            if _is_full(full):
                raise StorageFullError(
                    f"disk full writing snapshot {tmp}: {full}; nothing was kept"
                ) from exc
            raise
        # Only now may a crash leave the final name behind: its bytes are already durable.
        self._sync_dir()
        self._headers[snapshot_file_name(meta)] = _Header(meta, len(header), zlib.crc32(header))
        return size

    def begin_receive(self, tag: str) -> SnapshotSink:
        """Start receiving a snapshot file in chunks into ``<tag>.partial`` (an old one with
        the same tag is truncated). ``tag`` is a plain file name part (no separators)."""
        self._check_usable()
        if not tag or tag in (".", "..") or "/" in tag or os.sep in tag or "\0" in tag:
            raise ValueError(f"bad snapshot receive tag {tag!r}")
        path = self._path(tag + ".partial")
        f = self._fs.open(path, create=True)
        try:
            f.truncate(0)
        except BaseException:
            f.close()
            raise
        return SnapshotSink(self, path, f)

    def install(self, sink: SnapshotSink) -> SnapshotMeta:
        """Make a finished (verified) received snapshot a stored one: rename the partial file
        to its final name and sync the directory. If that snapshot exists already, the partial
        file is dropped. Returns its meta."""
        self._check_usable()
        meta = sink.meta
        if meta is None or sink._done:
            raise LocalProtocolError(f"install of {sink.path} before finish() or after abort()")
        final = self.path(meta)
        if self._fs.exists(final):
            sink.abort()
            return meta
        sink.close()
        self._fs.rename(sink.path, final)
        sink._done = True
        self._sync_dir()
        return meta

    def remove(self, meta: SnapshotMeta) -> None:
        """Delete the snapshot ``meta`` (a missing one is fine) and sync the directory."""
        self._check_usable()
        name = snapshot_file_name(meta)
        self._headers.pop(name, None)
        with contextlib.suppress(FileNotFoundError):
            self._fs.unlink(self._path(name))
        self._sync_dir()

    def retain(self, keep: Iterable[SnapshotMeta]) -> None:
        """Delete every complete snapshot whose ``(index, term)`` is not in ``keep``. Goes by
        file names only, so a damaged old snapshot can be deleted too."""
        self._check_usable()
        wanted = {(m.index, m.term) for m in keep}
        doomed = [name for key, name in self._names() if key not in wanted]
        for name in doomed:
            self._headers.pop(name, None)
            with contextlib.suppress(FileNotFoundError):
                self._fs.unlink(self._path(name))
        if doomed:
            self._sync_dir()
