"""A tiny file-system layer for the write-ahead log and the snapshot files: the
:class:`FileSystem` protocol, the real :class:`OsFileSystem`, :class:`MemoryFileSystem` (a plain
in-memory one, for a node without a data directory), :class:`FaultyFileSystem`, its twin for
tests that loses what a real crash could lose, and :class:`ReadOnlyFileSystem`, a view of
another one that refuses every write (for ``raftpy doctor``).

The WAL needs only a handful of operations: positional reads and writes, ``fdatasync``,
truncation, preallocation, and directory operations (list, rename, unlink, fsync the directory)
plus an exclusive lock file. Keeping them behind a protocol lets the tests crash the "disk" at
any point and check what survives, the idea of LazyFS (Ramos et al., "When amnesia strikes",
VLDB 2024): writes that were never synced may be dropped, torn at any byte, or partly kept.

Errors are plain ``OSError`` with the usual ``errno`` (``ENOSPC``, ``EIO``, ``ENOENT``,
``EWOULDBLOCK`` for a held lock), exactly as the operating system reports them; the WAL turns
them into typed storage errors.
"""

from __future__ import annotations

import errno
import os
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

__all__ = [
    "CrashMode",
    "FaultyFileSystem",
    "File",
    "FileSystem",
    "Lock",
    "MemoryFileSystem",
    "OsFileSystem",
    "ReadOnlyFileSystem",
    "SimulatedCrash",
    "write_durably",
]


class File(Protocol):
    """An open file, read and written at explicit offsets."""

    def size(self) -> int:
        """The file's current size in bytes."""
        ...

    def read_at(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset`` (fewer at the end of the file)."""
        ...

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data`` at ``offset``; raises ``OSError`` (``ENOSPC``...) when it cannot,
        possibly after writing a prefix."""
        ...

    def truncate(self, size: int) -> None:
        """Cut (or extend with zeros) the file to ``size`` bytes."""
        ...

    def preallocate(self, size: int) -> None:
        """Reserve space so the file is at least ``size`` bytes of zeros past its data (later
        writes inside it need no size change, so ``fdatasync`` stays cheap)."""
        ...

    def datasync(self) -> None:
        """``fdatasync``: make this file's data (and its size) durable."""
        ...

    def close(self) -> None: ...


class Lock(Protocol):
    """An exclusive lock held until :meth:`release` (or the process ends)."""

    def release(self) -> None: ...


class FileSystem(Protocol):
    """The operations the WAL performs on a data directory. Paths are strings."""

    def open(self, path: str, create: bool = False) -> File:
        """Open ``path`` for reading and writing; create it (empty) when ``create`` is set and
        it does not exist. The new directory entry is durable only after :meth:`sync_dir`."""
        ...

    def exists(self, path: str) -> bool: ...

    def makedirs(self, path: str) -> None:
        """Create ``path`` and its parents if missing."""
        ...

    def listdir(self, path: str) -> list[str]: ...

    def rename(self, src: str, dst: str) -> None:
        """Atomically rename ``src`` to ``dst`` (replacing it); durable after :meth:`sync_dir`."""
        ...

    def unlink(self, path: str) -> None:
        """Remove ``path``; durable after :meth:`sync_dir`."""
        ...

    def sync_dir(self, path: str) -> None:
        """fsync the directory ``path``, making its entries (creations, renames, removals)
        durable."""
        ...

    def lock(self, path: str) -> Lock:
        """Take an exclusive lock on the file ``path`` (created if missing) without waiting;
        raises ``BlockingIOError`` when another holder has it."""
        ...


# -- the real thing -------------------------------------------------------------------------


def write_durably(fs: FileSystem, directory: str, name: str, data: bytes) -> None:
    """Replace the file ``name`` in ``directory`` with ``data`` so that a crash leaves either
    the old file or the new one, whole: write a temporary file, fsync it, rename it over the
    old one, fsync the directory. Raises ``OSError`` as the file system reports it."""
    path = os.path.join(directory, name)
    tmp = path + ".tmp"
    f = fs.open(tmp, create=True)
    try:
        f.truncate(0)
        f.write_at(0, data)
        f.datasync()
    finally:
        f.close()
    fs.rename(tmp, path)
    fs.sync_dir(directory)


class _OsFile:
    __slots__ = ("_fd", "path")

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd = fd

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def read_at(self, offset: int, size: int) -> bytes:
        return os.pread(self._fd, size, offset)

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            # pwrite may write less than asked (a signal, a nearly full disk): loop until done or
            # an OSError says why not.
            n = os.pwrite(self._fd, view, offset)
            view = view[n:]
            offset += n

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)

    def preallocate(self, size: int) -> None:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(self._fd, 0, size)
        elif self.size() < size:  # pragma: no cover - macOS has no posix_fallocate
            os.ftruncate(self._fd, size)

    def datasync(self) -> None:
        if sys.platform == "darwin":  # pragma: no cover - fdatasync is not a durability barrier
            import fcntl

            fcntl.fcntl(self._fd, fcntl.F_FULLFSYNC)
        else:
            os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _OsLock:
    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            # Closing the descriptor drops the flock.
            os.close(self._fd)
            self._fd = -1


FILE_MODE = 0o600
"""Permissions of the files a node creates: the log, snapshots and the lock file hold the
cluster's data, for the node's own user only."""
DIR_MODE = 0o700
"""Permissions of the directories a node creates."""


class OsFileSystem:
    """The real file system: ``os`` calls, ``os.fdatasync``, ``os.posix_fallocate`` when
    available and an ``fcntl.flock`` lock file (released by the kernel when the process dies,
    so a crashed node never leaves a stale lock behind). Files and directories it creates are
    owner-only (:data:`FILE_MODE`, :data:`DIR_MODE`); existing ones keep their permissions."""

    def open(self, path: str, create: bool = False) -> File:
        flags = os.O_RDWR | (os.O_CREAT if create else 0) | getattr(os, "O_CLOEXEC", 0)
        return _OsFile(path, os.open(path, flags, FILE_MODE))

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def makedirs(self, path: str) -> None:
        # os.makedirs gives its mode to the leaf only: create each missing parent owner-only too.
        parent = os.path.dirname(os.path.abspath(path))
        if parent != path and not os.path.isdir(parent):
            self.makedirs(parent)
        os.makedirs(path, mode=DIR_MODE, exist_ok=True)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def sync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def lock(self, path: str) -> Lock:
        import fcntl

        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise
        return _OsLock(fd)


# -- a file system that refuses to write --------------------------------------------------------


def _refuse(path: str) -> OSError:
    return PermissionError(errno.EROFS, "the data dir is being inspected read-only", path)


class _ReadOnlyFile:
    __slots__ = ("_f", "path")

    def __init__(self, f: File, path: str) -> None:
        self._f = f
        self.path = path

    def size(self) -> int:
        return self._f.size()

    def read_at(self, offset: int, size: int) -> bytes:
        return self._f.read_at(offset, size)

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        raise _refuse(self.path)

    def truncate(self, size: int) -> None:
        raise _refuse(self.path)

    def preallocate(self, size: int) -> None:
        raise _refuse(self.path)

    def datasync(self) -> None:
        raise _refuse(self.path)

    def close(self) -> None:
        self._f.close()


class _NoLock:
    def release(self) -> None:
        pass


class ReadOnlyFileSystem:
    """A :class:`FileSystem` over ``base`` that reads and never writes: creating, writing,
    renaming or deleting raises ``PermissionError`` (``EROFS``). Its lock is a no-op: the
    caller (:class:`~raftpy.storage.inspect.Inspection`) takes ``base``'s lock itself, before
    it opens anything, for as long as it reads."""

    def __init__(self, base: FileSystem) -> None:
        self.base = base

    def open(self, path: str, create: bool = False) -> File:
        if create and not self.base.exists(path):
            raise _refuse(path)
        return _ReadOnlyFile(self.base.open(path), path)

    def exists(self, path: str) -> bool:
        return self.base.exists(path)

    def makedirs(self, path: str) -> None:
        if not self.base.exists(path):
            raise _refuse(path)

    def listdir(self, path: str) -> list[str]:
        return self.base.listdir(path)

    def rename(self, src: str, dst: str) -> None:
        raise _refuse(src)

    def unlink(self, path: str) -> None:
        raise _refuse(path)

    def sync_dir(self, path: str) -> None:
        raise _refuse(path)

    def lock(self, path: str) -> Lock:
        return _NoLock()  # the inspection took the real lock before opening anything


# -- in memory --------------------------------------------------------------------------------


@dataclass
class _Inode:
    """A file's bytes. ``synced`` and ``pending`` serve :class:`FaultyFileSystem` only: the
    content as of the last ``datasync`` and the operations since, in order: ``("w", offset,
    bytes)`` or ``("t", size, b"")``."""

    data: bytearray = field(default_factory=bytearray)
    synced: bytearray = field(default_factory=bytearray)
    pending: list[tuple[str, int, bytes]] = field(default_factory=list)


def _apply_write(buf: bytearray, offset: int, data: bytes) -> None:
    end = offset + len(data)
    if len(buf) < end:
        buf.extend(bytes(end - len(buf)))
    buf[offset:end] = data


def _apply_truncate(buf: bytearray, size: int) -> None:
    if size < len(buf):
        del buf[size:]
    else:
        buf.extend(bytes(size - len(buf)))


class _MemoryFile:
    def __init__(self, inode: _Inode, path: str) -> None:
        self._inode = inode
        self.path = path
        self._closed = False

    def _live(self) -> _Inode:
        if self._closed:
            raise OSError(errno.EBADF, "Bad file descriptor (file handle closed)", self.path)
        return self._inode

    def size(self) -> int:
        return len(self._live().data)

    def read_at(self, offset: int, size: int) -> bytes:
        return bytes(self._live().data[offset : offset + size])

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self._write(self._live(), offset, bytes(data))

    def _write(self, inode: _Inode, offset: int, data: bytes) -> None:
        _apply_write(inode.data, offset, data)

    def truncate(self, size: int) -> None:
        _apply_truncate(self._live().data, size)

    def preallocate(self, size: int) -> None:
        if size > len(self._live().data):
            self.truncate(size)

    def datasync(self) -> None:
        self._live()  # nothing to flush: memory is the "disk"

    def close(self) -> None:
        self._closed = True


class _MemoryLock:
    def __init__(self, fs: MemoryFileSystem, path: str) -> None:
        self._fs = fs
        self._path = path
        self._held = True

    def release(self) -> None:
        # Releasing twice must not drop a lock someone else took meanwhile.
        if self._held:
            self._held = False
            self._fs.locks.discard(self._path)


class MemoryFileSystem:
    """A plain in-memory file system, for a node without a data directory (its log and
    snapshots then vanish with the process).

    It behaves like :class:`OsFileSystem` for everything the WAL and
    :class:`~raftpy.storage.snapshots.SnapshotStore` do: positional reads and writes, sizes,
    truncation and preallocation (zeros), atomic renames, listing (subdirectories included),
    deletion, ``FileNotFoundError`` for missing files and directories, ``EBADF`` on a closed
    handle, and a lock that a second holder cannot take (``BlockingIOError``). Nothing is ever
    lost, so the fsyncs are no-ops; there is no randomness. :class:`FaultyFileSystem` builds on
    it to simulate crashes.
    """

    def __init__(self) -> None:
        self.dirs: dict[str, dict[str, _Inode]] = {}
        self.locks: set[str] = set()

    # Hooks for FaultyFileSystem.

    def _file(self, inode: _Inode, path: str) -> File:
        return _MemoryFile(inode, path)

    def _lock_handle(self, path: str) -> Lock:
        return _MemoryLock(self, path)

    def _add_dir(self, norm: str) -> None:
        self.dirs[norm] = {}

    # -- FileSystem -----------------------------------------------------------------------------

    @staticmethod
    def _split(path: str) -> tuple[str, str]:
        head, tail = os.path.split(os.path.normpath(path))
        return head, tail

    def _dir(self, path: str) -> dict[str, _Inode]:
        try:
            return self.dirs[os.path.normpath(path)]
        except KeyError:
            raise FileNotFoundError(errno.ENOENT, "No such directory", path) from None

    def open(self, path: str, create: bool = False) -> File:
        head, name = self._split(path)
        entries = self._dir(head)
        inode = entries.get(name)
        if inode is None:
            if not create:
                raise FileNotFoundError(errno.ENOENT, "No such file", path)
            inode = entries[name] = _Inode()
        return self._file(inode, path)

    def exists(self, path: str) -> bool:
        norm = os.path.normpath(path)
        if norm in self.dirs:
            return True
        head, name = self._split(path)
        return name in self.dirs.get(head, {})

    def makedirs(self, path: str) -> None:
        norm = os.path.normpath(path)
        while norm not in self.dirs:
            self._add_dir(norm)
            parent = os.path.dirname(norm)
            if parent == norm:
                break
            norm = parent

    def listdir(self, path: str) -> list[str]:
        norm = os.path.normpath(path)
        names = list(self._dir(norm))
        # Like os.listdir, subdirectories are entries too.
        names += [
            os.path.basename(d) for d in self.dirs if d != norm and os.path.dirname(d) == norm
        ]
        return sorted(names)

    def rename(self, src: str, dst: str) -> None:
        shead, sname = self._split(src)
        dhead, dname = self._split(dst)
        sdir = self._dir(shead)
        ddir = self._dir(dhead)  # before taking the file out: a bad target loses nothing
        if sname not in sdir:
            raise FileNotFoundError(errno.ENOENT, "No such file", src)
        ddir[dname] = sdir.pop(sname)

    def unlink(self, path: str) -> None:
        head, name = self._split(path)
        entries = self._dir(head)
        if name not in entries:
            raise FileNotFoundError(errno.ENOENT, "No such file", path)
        del entries[name]

    def sync_dir(self, path: str) -> None:
        self._dir(path)  # nothing to flush, but a missing directory is an error

    def lock(self, path: str) -> Lock:
        norm = os.path.normpath(path)
        if norm in self.locks:
            raise BlockingIOError(errno.EWOULDBLOCK, "Resource temporarily unavailable", path)
        # The lock file itself, like the real one, is created if missing.
        head, name = self._split(norm)
        self._dir(head).setdefault(name, _Inode())
        self.locks.add(norm)
        return self._lock_handle(norm)


# -- the fault-injecting twin (for tests) ---------------------------------------------------

CrashMode = Literal["drop", "torn", "partial", "keep"]
"""What a simulated crash does to writes that were never synced:

- ``"drop"``: all of them are lost (the disk holds exactly what was synced);
- ``"torn"``: they survive in order up to a random byte, where one write is cut off;
- ``"partial"``: each 512-byte sector of each write (and each truncation) survives or not at
  random, independently, as when the kernel writes pages back in any order;
- ``"keep"``: all of them survive (as if written back just before the crash).
"""

_SECTOR = 512


def _any_path(path: str) -> bool:
    return True


class SimulatedCrash(Exception):
    """Raised by :class:`FaultyFileSystem` where a crash armed with
    :meth:`FaultyFileSystem.crash_on_next_sync` happened: the "process" is dead, and the data
    directory must be opened again."""


class _FaultyFile(_MemoryFile):
    def __init__(self, fs: FaultyFileSystem, inode: _Inode, epoch: int, path: str) -> None:
        super().__init__(inode, path)
        self._fs = fs
        self._epoch = epoch

    def _live(self) -> _Inode:
        if self._closed or self._epoch != self._fs.epoch:
            raise OSError(errno.EBADF, "file handle closed or lost in a crash", self.path)
        return self._inode

    def read_at(self, offset: int, size: int) -> bytes:
        data = super().read_at(offset, size)
        if self._fs.read_faults and data:
            data = self._fs.corrupt_read(self.path, data)
        return data

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        inode = self._live()
        data = bytes(data)
        grow = offset + len(data) - len(inode.data)
        # (free_bytes is never negative: a write that does not grow the file always fits.)
        if grow > 0 and grow > (room := self._fs.free_bytes()):
            # Like a real nearly-full disk: write what fits, then fail with ENOSPC.
            fits = max(0, len(inode.data) + room - offset)
            if fits > 0:
                self._write(inode, offset, data[:fits])
            raise OSError(errno.ENOSPC, "No space left on device (simulated)", self.path)
        self._write(inode, offset, data)

    def _write(self, inode: _Inode, offset: int, data: bytes) -> None:
        _apply_write(inode.data, offset, data)  # _MemoryFile._write
        inode.pending.append(("w", offset, data))

    def truncate(self, size: int) -> None:
        inode = self._live()
        if size > len(inode.data) and size - len(inode.data) > self._fs.free_bytes():
            raise OSError(errno.ENOSPC, "No space left on device (simulated)", self.path)
        _apply_truncate(inode.data, size)
        inode.pending.append(("t", size, b""))

    def datasync(self) -> None:
        inode = self._live()
        self._fs.count_sync()
        self._fs.maybe_crash()
        if self._fs.take_fsync_failure():
            # Linux may drop the dirty pages after a failed writeback and clear the error:
            # model the worst case, where the unsynced writes are simply gone after a crash but
            # still visible until then.
            raise OSError(errno.EIO, "Input/output error (simulated fsync failure)", self.path)
        # Replay the pending operations onto the synced image: cost in proportion to what was
        # written, not to the file size (segments are large and preallocated).
        for kind, arg, data in inode.pending:
            if kind == "t":
                _apply_truncate(inode.synced, arg)
            else:
                _apply_write(inode.synced, arg, data)
        inode.pending.clear()


class _FaultyLock(_MemoryLock):
    def __init__(self, fs: FaultyFileSystem, path: str, epoch: int) -> None:
        super().__init__(fs, path)
        self._epoch = epoch
        self._faulty_fs = fs

    def release(self) -> None:
        # A crash already released every lock of the dead "process".
        if self._epoch == self._faulty_fs.epoch:
            super().release()


class FaultyFileSystem(MemoryFileSystem):
    """An in-memory file system for tests that forgets what a crash would forget (LazyFS-style).

    It tracks, per file, the synced content and the writes since; and per directory, the
    entries as of the last :meth:`sync_dir`. :meth:`crash` turns the disk into what a power
    loss could leave (see :data:`CrashMode`), invalidates every open handle and releases every
    lock: open the data directory again to "restart". Directory entries created, renamed or
    removed come back to their state at the last ``sync_dir`` of their directory. Directories
    themselves (``makedirs``) are durable at once.

    Faults to inject: :meth:`fail_next_fsync` (the next ``datasync``/``sync_dir`` raises
    ``EIO``), :meth:`set_capacity` (writes that would grow the files past it raise
    ``ENOSPC``), :meth:`corrupt_next_reads` (reads return a flipped bit the disk does not hold:
    a transient error the device did not report) and :meth:`flip_bit` (damage on the disk
    itself). Randomness comes only from ``random.Random(seed)``.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.rng = random.Random(seed)
        self.epoch = 0  # bumped by every crash: older handles stop working
        self.durable_dirs: dict[str, dict[str, _Inode]] = {}
        self.capacity: int | None = None
        self.syncs = 0  # datasync calls, for tests of group commit
        self.dir_syncs = 0
        self._fsync_failures = 0
        self._armed: CrashMode | None = None
        self._armed_after = 0
        self.read_faults = 0  # reads still to corrupt (corrupt_next_reads)
        self._read_fault_where: Callable[[str], bool] = _any_path
        self._read_fault_skip = 0  # matching reads to let through before corrupting
        self.corrupted_reads: list[tuple[str, int]] = []  # (path, byte of the read) flipped

    def _file(self, inode: _Inode, path: str) -> File:
        return _FaultyFile(self, inode, self.epoch, path)

    def _lock_handle(self, path: str) -> Lock:
        return _FaultyLock(self, path, self.epoch)

    def _add_dir(self, norm: str) -> None:
        super()._add_dir(norm)
        self.durable_dirs[norm] = {}

    # -- fault injection ----------------------------------------------------------------------

    def fail_next_fsync(self, count: int = 1) -> None:
        """Make the next ``count`` fsyncs (file or directory) fail with ``EIO``."""
        self._fsync_failures += count

    def crash_on_next_sync(self, mode: CrashMode = "torn", after: int = 0) -> None:
        """Make the next file ``datasync`` (after letting ``after`` of them succeed) crash the
        disk (as :meth:`crash` with ``mode``) before anything is synced, and raise
        :class:`SimulatedCrash`: a power loss in the middle of a sync."""
        self._armed = mode
        self._armed_after = after

    def corrupt_next_reads(
        self, count: int = 1, where: Callable[[str], bool] = _any_path, skip: int = 0
    ) -> None:
        """Make the next ``count`` reads of files whose path ``where`` accepts, after the first
        ``skip`` of them, return their data with one bit flipped, somewhere before the read's
        trailing zeros (in what the file holds, not in preallocated space). The disk keeps its
        content: reading again gives the right bytes, as after a transient error the device did
        not report (only a checksum tells). Each flip is recorded in
        :attr:`corrupted_reads`."""
        if count < 0 or skip < 0:
            raise ValueError(f"count and skip must not be negative, not {count} and {skip}")
        self.read_faults = count
        self._read_fault_where = where
        self._read_fault_skip = skip

    def corrupt_read(self, path: str, data: bytes) -> bytes:
        if not self._read_fault_where(path):
            return data
        used = len(data.rstrip(b"\0"))
        if used == 0:
            return data
        if self._read_fault_skip:
            self._read_fault_skip -= 1
            return data
        self.read_faults -= 1
        pos = self.rng.randrange(used)
        self.corrupted_reads.append((path, pos))
        out = bytearray(data)
        out[pos] ^= 1 << self.rng.randrange(8)
        return bytes(out)

    def flip_bit(self, path: str, offset: int, bit: int) -> None:
        """Damage the disk: flip bit ``bit`` (0 to 7) of byte ``offset`` of file ``path``, in
        what it holds now and in what a crash keeps (a bad sector, a bug in the firmware)."""
        head, name = self._split(path)
        inode = self._dir(head).get(name)
        if inode is None:
            raise FileNotFoundError(errno.ENOENT, "No such file", path)
        if not 0 <= offset < len(inode.data) or not 0 <= bit < 8:
            raise ValueError(f"{path} holds {len(inode.data)} bytes: no bit {bit} at {offset}")
        inode.data[offset] ^= 1 << bit
        if offset < len(inode.synced):
            inode.synced[offset] ^= 1 << bit

    def maybe_crash(self) -> None:
        if self._armed is not None and self._armed_after > 0:
            self._armed_after -= 1
        elif self._armed is not None:
            mode, self._armed = self._armed, None
            self.crash(mode)
            raise SimulatedCrash(f"simulated crash ({mode}) during fdatasync")

    def set_capacity(self, capacity: int | None) -> None:
        """Limit the total size of all files to ``capacity`` bytes (``None``: unlimited)."""
        self.capacity = capacity

    def used_bytes(self) -> int:
        inodes = {id(i): i for d in self.dirs.values() for i in d.values()}
        return sum(len(i.data) for i in inodes.values())

    def free_bytes(self) -> int:
        if self.capacity is None:
            return 1 << 62
        return max(0, self.capacity - self.used_bytes())

    def take_fsync_failure(self) -> bool:
        if self._fsync_failures > 0:
            self._fsync_failures -= 1
            return True
        return False

    def count_sync(self) -> None:
        self.syncs += 1

    def crash(self, mode: CrashMode = "drop") -> None:
        """Simulate a power loss: unsynced writes are handled as ``mode`` says, directory
        entries return to their last synced state, open handles and locks are lost, armed
        faults are disarmed."""
        survivors = {id(i): i for d in self.durable_dirs.values() for i in d.values()}
        for inode in survivors.values():
            inode.data = self._after_crash(inode, mode)
            inode.synced = bytearray(inode.data)
            inode.pending = []
        self.dirs = {path: dict(entries) for path, entries in self.durable_dirs.items()}
        self.locks.clear()
        self.epoch += 1
        # Armed faults belonged to the dead "process".
        self._armed = None
        self._fsync_failures = 0

    def _after_crash(self, inode: _Inode, mode: CrashMode) -> bytearray:
        buf = bytearray(inode.synced)
        ops = inode.pending
        if mode == "drop" or not ops:
            return buf
        if mode == "keep":
            return bytearray(inode.data)
        if mode == "torn":
            total = sum(max(1, len(d)) for _, _, d in ops)
            cut = self.rng.randrange(total + 1)
            for kind, arg, data in ops:
                if cut <= 0:
                    break
                if kind == "t":
                    _apply_truncate(buf, arg)
                    cut -= 1
                else:
                    _apply_write(buf, arg, data[:cut])
                    cut -= len(data)
            return buf
        # "partial": every sector of every write independently kept or lost.
        for kind, arg, data in ops:
            if kind == "t":
                if self.rng.random() < 0.5:
                    _apply_truncate(buf, arg)
                continue
            for k in range(0, len(data), _SECTOR):
                if self.rng.random() < 0.5:
                    _apply_write(buf, arg + k, data[k : k + _SECTOR])
        return buf

    # -- FileSystem -----------------------------------------------------------------------------

    def sync_dir(self, path: str) -> None:
        norm = os.path.normpath(path)
        entries = self._dir(norm)
        self.dir_syncs += 1
        if self.take_fsync_failure():
            raise OSError(errno.EIO, "Input/output error (simulated fsync failure)", path)
        self.durable_dirs[norm] = dict(entries)
