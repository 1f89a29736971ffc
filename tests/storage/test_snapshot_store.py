"""Tests of SnapshotStore, the durable snapshot files, on the real file system, the plain
in-memory one and the fault-injecting in-memory one: the format as documented, atomic creation
under crashes at every step, corruption found and located, chunked receive, full disks and
failed fsyncs."""

from __future__ import annotations

import array
import asyncio
import random
import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec
import pytest

from raftpy.core.messages import ConfState, SnapshotMeta
from raftpy.errors import LocalProtocolError
from raftpy.storage.errors import (
    CorruptSnapshotError,
    FatalStorageError,
    StorageFullError,
    UnsupportedFormatError,
)
from raftpy.storage.fs import (
    CrashMode,
    FaultyFileSystem,
    File,
    FileSystem,
    MemoryFileSystem,
    OsFileSystem,
    SimulatedCrash,
)
from raftpy.storage.snapshots import SYNC_EVERY, SnapshotStore, snapshot_file_name

D = "/snaps"
MODES: tuple[CrashMode, ...] = ("drop", "torn", "partial", "keep")
META = SnapshotMeta(1000, 3, ConfState(voters=(1, 2, 3), learners=(4,)))
OLD = SnapshotMeta(400, 2, ConfState(voters=(1, 2, 3)))


def meta(index: int, term: int = 1) -> SnapshotMeta:
    return SnapshotMeta(index, term, ConfState(voters=(1, 2, 3)))


def pieces(seed: int = 1, small: int = 3000, big: int = 3 << 20) -> list[bytes]:
    """A body as a state machine might write it: many tiny writes, one big one, more tiny."""
    rng = random.Random(seed)
    out = [rng.randbytes(rng.randint(0, 40)) for _ in range(small)]
    out.insert(small // 2, rng.randbytes(big))
    return out


def writes(parts: list[bytes]) -> Callable[[BinaryIO], None]:
    def write_body(out: BinaryIO) -> None:
        for p in parts:
            assert out.write(p) == len(p)

    return write_body


def read_file(fs: FileSystem, path: str) -> bytes:
    f = fs.open(path)
    try:
        return f.read_at(0, f.size())
    finally:
        f.close()


def poke(fs: FileSystem, path: str, offset: int, xor: int = 0xFF) -> None:
    f = fs.open(path)
    byte = f.read_at(offset, 1)[0]
    f.write_at(offset, bytes([byte ^ xor]))
    f.datasync()
    f.close()


def cut(fs: FileSystem, path: str, size: int) -> None:
    f = fs.open(path)
    f.truncate(size)
    f.datasync()
    f.close()


@pytest.fixture(params=["os", "memory", "faulty"])
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[FileSystem, str]:
    if request.param == "os":
        return OsFileSystem(), str(tmp_path / "snaps")
    if request.param == "memory":
        return MemoryFileSystem(), D
    return FaultyFileSystem(7), D


# -- round trips -----------------------------------------------------------------------------


def test_round_trip(disk: tuple[FileSystem, str]) -> None:
    fs, d = disk
    store = SnapshotStore(d, fs=fs)
    assert store.list() == [] and store.latest() is None and not store.has(META)
    parts = pieces()
    body = b"".join(parts)
    size = store.create(META, writes(parts))

    assert store.list() == [META]
    assert store.latest() == META
    assert store.has(META) and not store.has(meta(1000, 4))
    assert store.size(META) == size == len(read_file(fs, store.path(META)))
    assert store.verify(META) == size
    # A new store on the same directory sees the same (no cache involved).
    assert SnapshotStore(d, fs=fs).list() == [META]

    with store.open_body(META) as stream:
        assert stream.readable()
        got = [stream.read(1), stream.read(7), stream.read(4093)]
        buf = bytearray(10_000)
        n = stream.readinto(buf)
        got.append(bytes(buf[:n]))
        got.append(stream.read())  # the rest
        assert stream.read(10) == b""
    assert b"".join(got) == body

    raw = read_file(fs, store.path(META))
    with store.open_source(META) as src:
        assert src.meta == META and src.size == len(raw)
        for off, n in [(0, 8), (5, 1000), (len(raw) - 16, 16), (len(raw) - 3, 100), (77, 1 << 21)]:
            assert src.read(off, n) == raw[off : off + n]
        assert src.read(len(raw), 10) == b""
        chunks = [src.read(off, 65_537) for off in range(0, src.size, 65_537)]
    assert b"".join(chunks) == raw


def test_file_layout_matches_the_documented_format(disk: tuple[FileSystem, str]) -> None:
    fs, d = disk
    store = SnapshotStore(d, fs=fs)
    body = b"state machine bytes " * 1000
    store.create(META, writes([body]))
    assert fs.listdir(d) == ["00000000000000001000-00000000000000000003.snap"]
    raw = read_file(fs, f"{d}/00000000000000001000-00000000000000000003.snap")

    magic, version, length = struct.unpack_from("<8sII", raw)
    assert (magic, version) == (b"RAFTSNAP", 1)
    assert msgspec.msgpack.decode(raw[16 : 16 + length], type=SnapshotMeta) == META
    (hcrc,) = struct.unpack_from("<I", raw, 16 + length)
    assert hcrc == zlib.crc32(raw[: 16 + length])
    start = 20 + length
    assert raw[start:-16] == body
    body_len, crc, tmagic = struct.unpack("<QI4s", raw[-16:])
    assert (body_len, tmagic) == (len(body), b"RSNE")
    assert crc == zlib.crc32(raw[:-16])


def test_body_writer_is_a_binary_stream(disk: tuple[FileSystem, str]) -> None:
    fs, d = disk
    store = SnapshotStore(d, fs=fs)
    seen: list[object] = []

    def write_body(out: BinaryIO) -> None:
        seen.extend([out.writable(), out.readable(), out.seekable()])
        out.write(b"abc")
        out.write(bytearray(b"def"))
        out.write(memoryview(b"xxghixx")[2:5])
        out.write(array.array("H", [0x4A4A, 0x4B4B]))  # 4 bytes, another item size
        seen.append(out.tell())
        out.flush()
        out.close()  # closing it is allowed: what was written stays

    store.create(META, write_body)
    assert seen == [True, False, False, 13]
    with store.open_body(META) as stream:
        assert stream.read() == b"abcdefghiJJKK"


def test_list_is_sorted_and_headers_are_read_once(disk: tuple[FileSystem, str]) -> None:
    fs, d = disk
    counting = CountingFs(fs)
    store = SnapshotStore(d, fs=counting)
    order = [meta(30, 2), meta(5, 1), meta(30, 1), meta(100, 3), meta(7, 1)]
    for m in order:
        store.create(m, writes([b"x" * m.index]))
    fs.open(f"{d}/README", create=True).close()  # a foreign file is ignored
    store = SnapshotStore(d, fs=counting)
    want = sorted(order, key=lambda m: (m.index, m.term))
    before = counting.opens
    assert store.list() == want
    assert counting.opens == before + len(order)
    assert store.list() == want
    assert store.latest() == meta(100, 3)
    assert counting.opens == before + len(order)  # cached


def test_small_writes_are_gathered_into_large_ones() -> None:
    counting = CountingFs(FaultyFileSystem())
    store = SnapshotStore(D, fs=counting)
    store.create(META, writes([b"0123456789"] * 300_000))  # 3 MB in 10-byte pieces
    # open, 3 or 4 body writes of about 1 MiB (each followed by an fdatasync, SYNC_EVERY), the
    # trailer, fdatasync, rename, sync_dir
    assert counting.steps <= 13
    with store.open_body(META) as stream:
        assert stream.read() == b"0123456789" * 300_000


def test_leaving_the_body_half_read_is_fine() -> None:
    store = SnapshotStore(D, fs=FaultyFileSystem())
    store.create(META, writes([BODY]))
    with store.open_body(META) as stream:
        assert stream.read(100) == BODY[:100]
    with store.open_body(META) as stream:
        stream.close()  # even closed by the state machine


def test_create_of_an_existing_snapshot_returns_its_size() -> None:
    fs = FaultyFileSystem()
    store = SnapshotStore(D, fs=fs)
    size = store.create(META, writes([b"first"]))
    syncs = fs.syncs
    called: list[int] = []
    assert store.create(META, lambda out: called.append(1)) == size
    assert called == [] and fs.syncs == syncs
    with store.open_body(META) as stream:
        assert stream.read() == b"first"


def test_create_from_a_worker_thread(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path), fs=OsFileSystem())
    parts = pieces(3, small=500, big=1 << 20)

    async def main() -> int:
        return await asyncio.to_thread(store.create, META, writes(parts))

    size = asyncio.run(main())
    assert store.verify(META) == size
    with store.open_body(META) as stream:
        assert stream.read() == b"".join(parts)


def test_a_large_body_streams_in_bounded_memory(tmp_path: Path) -> None:
    chunk = 1 << 20
    n = 64
    store = SnapshotStore(str(tmp_path), fs=OsFileSystem())

    def block(i: int) -> bytes:
        return i.to_bytes(4, "little") * (chunk // 4)

    def write_body(out: BinaryIO) -> None:
        for i in range(n):
            out.write(block(i))
            out.write(b"tiny")  # keeps the writer's buffer from aligning with the blocks

    start = time.monotonic()
    tracemalloc.start()
    try:
        size = store.create(META, write_body)
        assert store.verify(META) == size
        crc = 0
        total = 0
        with store.open_body(META) as stream:
            while piece := stream.read(300_000):
                crc = zlib.crc32(piece, crc)
                total += len(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    want = 0
    for i in range(n):
        want = zlib.crc32(b"tiny", zlib.crc32(block(i), want))
    assert (total, crc) == (n * (chunk + 4), want)
    assert size > n * chunk
    assert peak < 16 << 20, f"peak {peak / 2**20:.1f} MiB for a {n} MiB body"
    assert time.monotonic() - start < 20  # usually well under 3 s


# -- crashes ---------------------------------------------------------------------------------


class CountingFs:
    """Passes every call to ``fs``; counts opens and, when ``crash_at`` is set, crashes the
    FaultyFileSystem (with ``mode``) just before the ``crash_at``-th state-changing call."""

    def __init__(self, fs: FileSystem, crash_at: int | None = None, mode: CrashMode = "drop"):
        self.fs = fs
        self.opens = 0
        self.steps = 0
        self.crash_at = crash_at
        self.mode = mode

    def step(self) -> None:
        if self.crash_at is not None and self.steps == self.crash_at:
            assert isinstance(self.fs, FaultyFileSystem)
            self.fs.crash(self.mode)
            self.crash_at = None  # the "process" is dead: what it does next changes nothing
            raise SimulatedCrash(f"crash before step {self.steps}")
        self.steps += 1

    def open(self, path: str, create: bool = False) -> File:
        self.opens += 1
        if create:
            self.step()
        return CountingFile(self, self.fs.open(path, create))

    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def makedirs(self, path: str) -> None:
        self.fs.makedirs(path)

    def listdir(self, path: str) -> list[str]:
        return self.fs.listdir(path)

    def rename(self, src: str, dst: str) -> None:
        self.step()
        self.fs.rename(src, dst)

    def unlink(self, path: str) -> None:
        self.step()
        self.fs.unlink(path)

    def sync_dir(self, path: str) -> None:
        self.step()
        self.fs.sync_dir(path)

    def lock(self, path: str) -> object:
        return self.fs.lock(path)


class CountingFile:
    def __init__(self, owner: CountingFs, f: File) -> None:
        self.owner = owner
        self.f = f

    def size(self) -> int:
        return self.f.size()

    def read_at(self, offset: int, size: int) -> bytes:
        return self.f.read_at(offset, size)

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self.owner.step()
        self.f.write_at(offset, data)

    def truncate(self, size: int) -> None:
        self.owner.step()
        self.f.truncate(size)

    def preallocate(self, size: int) -> None:
        self.owner.step()
        self.f.preallocate(size)

    def datasync(self) -> None:
        self.owner.step()
        self.f.datasync()

    def close(self) -> None:
        self.f.close()


def check_old_or_new(fs: FaultyFileSystem, body: bytes) -> bool:
    """After a crash during create(META): the store holds OLD and either nothing else or all of
    META. Returns whether META survived."""
    store = SnapshotStore(D, fs=fs)
    assert not [n for n in fs.listdir(D) if n.endswith(".tmp")]
    listed = store.list()
    assert listed in ([OLD], [OLD, META])
    assert store.verify(OLD) > 0
    if listed == [OLD]:
        return False
    assert store.verify(META) == store.size(META)
    with store.open_body(META) as stream:
        assert stream.read() == body
    return True


def with_old(seed: int) -> FaultyFileSystem:
    fs = FaultyFileSystem(seed)
    SnapshotStore(D, fs=fs).create(OLD, writes([b"old state"]))
    return fs


def test_create_of_a_small_snapshot_syncs_once_and_the_directory_once() -> None:
    fs = with_old(0)
    store = SnapshotStore(D, fs=fs)
    syncs, dir_syncs = fs.syncs, fs.dir_syncs
    store.create(META, writes(pieces(small=100, big=100_000)))
    assert (fs.syncs - syncs, fs.dir_syncs - dir_syncs) == (1, 1)


def test_create_of_a_large_snapshot_syncs_every_mib_on_the_way() -> None:
    # So that no large amount of dirty pages piles up for one final flush, which stalls the
    # log's fdatasyncs meanwhile (SYNC_EVERY).
    fs = with_old(0)
    store = SnapshotStore(D, fs=fs)
    syncs = fs.syncs
    body = bytes(range(256)) * (14 * SYNC_EVERY // 1024)  # 3.5 MiB
    store.create(META, writes([body[i : i + 4096] for i in range(0, len(body), 4096)]))
    assert fs.syncs - syncs == 3 + 1  # after each whole MiB, and the final one
    with store.open_body(META) as stream:
        assert stream.read() == body


def test_a_failed_fsync_on_the_way_is_fatal_and_leaves_nothing() -> None:
    fs = FaultyFileSystem()
    store = SnapshotStore(D, fs=fs)
    fs.fail_next_fsync()
    with pytest.raises(FatalStorageError, match="fdatasync"):
        store.create(META, writes([b"x" * (2 * SYNC_EVERY)]))
    assert fs.listdir(D) == []
    with pytest.raises(FatalStorageError, match="unusable"):
        store.create(META, writes([b"x"]))


@pytest.mark.parametrize("mode", MODES)
def test_crash_during_a_file_sync_of_create_leaves_old_or_new(mode: CrashMode) -> None:
    parts = pieces(small=200, big=200_000)
    probe = with_old(0)
    before = probe.syncs
    SnapshotStore(D, fs=probe).create(META, writes(parts))
    n_syncs = probe.syncs - before
    assert n_syncs >= 1
    for k in range(n_syncs):
        for seed in range(4):
            fs = with_old(seed)
            fs.crash_on_next_sync(mode, after=k)
            with pytest.raises(SimulatedCrash):
                SnapshotStore(D, fs=fs).create(META, writes(parts))
            fs.crash(mode)
            assert not check_old_or_new(fs, b"".join(parts))  # the rename never happened


@pytest.mark.parametrize("mode", MODES)
def test_crash_before_any_step_of_create_leaves_old_or_new(mode: CrashMode) -> None:
    """A crash before each file-system step of create(): the writes, the fdatasync, the
    rename and the directory fsync. Only a crash after the directory fsync keeps the new
    snapshot, and then whole."""
    parts = pieces(small=200, big=100_000)
    body = b"".join(parts)
    probe = CountingFs(with_old(0))
    SnapshotStore(D, fs=probe).create(META, writes(parts))
    steps = probe.steps
    assert steps >= 5  # open, header+body writes, trailer, datasync, rename, sync_dir
    survived = []
    for at in range(steps + 1):
        fs = with_old(at)
        crashing = CountingFs(fs, crash_at=at, mode=mode)
        store = SnapshotStore(D, fs=crashing)
        if at < steps:
            with pytest.raises(SimulatedCrash):
                store.create(META, writes(parts))
        else:
            store.create(META, writes(parts))
        fs.crash(mode)
        survived.append(check_old_or_new(fs, body))
    assert survived == [False] * steps + [True]


@pytest.mark.parametrize("mode", MODES)
def test_a_created_snapshot_survives_a_crash(mode: CrashMode) -> None:
    fs = with_old(5)
    parts = pieces(small=100, big=50_000)
    SnapshotStore(D, fs=fs).create(META, writes(parts))
    fs.crash(mode)
    assert check_old_or_new(fs, b"".join(parts))


# -- corruption ------------------------------------------------------------------------------

META_LEN = len(msgspec.msgpack.encode(META))
BODY_AT = 16 + META_LEN + 4
BODY = bytes(range(256)) * 40


def flip(at: Callable[[int], int]) -> Callable[[FileSystem, str, int], None]:
    return lambda fs, path, size: poke(fs, path, at(size))


def shorten(to: Callable[[int], int]) -> Callable[[FileSystem, str, int], None]:
    return lambda fs, path, size: cut(fs, path, to(size))


def append_junk(fs: FileSystem, path: str, size: int) -> None:
    f = fs.open(path)
    f.write_at(size, b"\0")
    f.datasync()
    f.close()


# (id, damage(fs, path, size), offset reported (given the original size), header damage?, text)
CORRUPTIONS = [
    ("meta byte", flip(lambda s: 17), lambda s: 16 + META_LEN, True, "header checksum"),
    ("header crc", flip(lambda s: 16 + META_LEN), lambda s: 16 + META_LEN, True, "header"),
    ("meta length", flip(lambda s: 15), lambda s: 12, True, "implausible meta length"),
    ("body first", flip(lambda s: BODY_AT), lambda s: s - 16, False, f"[0, {BODY_AT + 10240})"),
    ("body last", flip(lambda s: s - 17), lambda s: s - 16, False, "checksum mismatch"),
    ("trailer length", flip(lambda s: s - 16), lambda s: s - 16, False, "body has"),
    ("trailer crc", flip(lambda s: s - 6), lambda s: s - 16, False, "checksum mismatch"),
    ("trailer magic", flip(lambda s: s - 1), lambda s: s - 4, False, "trailer magic"),
    ("cut by one", shorten(lambda s: s - 1), lambda s: s - 5, False, "trailer magic"),
    ("cut in body", shorten(lambda s: BODY_AT + 100), lambda s: BODY_AT + 96, False, "magic"),
    ("cut in trailer", shorten(lambda s: BODY_AT + 5), lambda s: BODY_AT + 5, True, "truncated"),
    ("cut in header", shorten(lambda s: 10), lambda s: 10, True, "truncated"),
    ("empty", shorten(lambda s: 0), lambda s: 0, True, "truncated"),
    ("junk appended", append_junk, lambda s: s - 3, False, "trailer magic"),
]


@pytest.mark.parametrize(
    ("damage", "offset", "in_header", "text"),
    [c[1:] for c in CORRUPTIONS],
    ids=[c[0] for c in CORRUPTIONS],
)
def test_damage_is_found_and_located(
    disk: tuple[FileSystem, str],
    damage: Callable[[FileSystem, str, int], None],
    offset: Callable[[int], int],
    in_header: bool,
    text: str,
) -> None:
    fs, d = disk
    store = SnapshotStore(d, fs=fs)
    size = store.create(META, writes([BODY]))
    path = store.path(META)
    damage(fs, path, size)
    store = SnapshotStore(d, fs=fs)  # no cached header

    def check(err: pytest.ExceptionInfo[CorruptSnapshotError]) -> None:
        assert (err.value.file, err.value.offset) == (path, offset(size))
        assert str(err.value).startswith(
            f"corrupt snapshot file {path} at byte offset {offset(size)}: "
        )
        assert text in str(err.value)

    if in_header:
        with pytest.raises(CorruptSnapshotError) as err:
            store.list()
        check(err)
    else:
        assert store.list() == [META]
    with pytest.raises(CorruptSnapshotError) as err:
        store.verify(META)
    check(err)
    with pytest.raises(CorruptSnapshotError) as err, store.open_body(META) as stream:
        stream.read(10)  # the check at the end reads the rest
    check(err)
    store.retain([])  # a damaged snapshot can still be deleted
    assert fs.listdir(d) == []


def test_a_bad_body_is_reported_after_restoring_it_but_not_over_another_error() -> None:
    fs = FaultyFileSystem()
    store = SnapshotStore(D, fs=fs)
    store.create(META, writes([BODY]))
    poke(fs, store.path(META), BODY_AT + 3)
    with pytest.raises(CorruptSnapshotError), store.open_body(META) as stream:
        assert len(stream.read()) == len(BODY)  # the bytes come, the verdict follows
    with pytest.raises(KeyError), store.open_body(META) as stream:
        stream.read(5)
        raise KeyError("the state machine's own error wins")


def test_header_that_contradicts_the_file_name() -> None:
    fs = FaultyFileSystem()
    store = SnapshotStore(D, fs=fs)
    store.create(META, writes([b"x"]))
    other = meta(1000, 4)
    fs.rename(store.path(META), store.path(other))
    with pytest.raises(CorruptSnapshotError, match=r"at byte offset 16: .*file name says"):
        SnapshotStore(D, fs=fs).list()


def test_meta_must_match_the_header_exactly() -> None:
    store = SnapshotStore(D, fs=FaultyFileSystem())
    store.create(META, writes([b"x"]))
    same_name = SnapshotMeta(META.index, META.term, ConfState(voters=(1, 2)))
    with pytest.raises(CorruptSnapshotError, match="expected"):
        store.verify(same_name)
    with pytest.raises(CorruptSnapshotError, match="expected"), store.open_body(same_name):
        pass


@pytest.mark.parametrize(
    ("offset", "value", "match"),
    [(0, b"RAFTSNAQ", "not a raftpy snapshot"), (8, struct.pack("<I", 2), "format version 2")],
    ids=["magic", "version"],
)
def test_unknown_format_is_refused(offset: int, value: bytes, match: str) -> None:
    fs = FaultyFileSystem()
    store = SnapshotStore(D, fs=fs)
    store.create(META, writes([b"x"]))
    f = fs.open(store.path(META))
    f.write_at(offset, value)
    for call in (SnapshotStore(D, fs=fs).list, lambda: store.verify(META)):
        with pytest.raises(UnsupportedFormatError, match=match):
            call()


def test_missing_snapshot_is_file_not_found() -> None:
    store = SnapshotStore(D, fs=FaultyFileSystem())
    with pytest.raises(FileNotFoundError):
        store.open_source(META)
    with pytest.raises(FileNotFoundError):
        store.verify(META)


# -- receiving -------------------------------------------------------------------------------


def chunks_of(store: SnapshotStore, m: SnapshotMeta, n: int) -> Iterator[bytes]:
    with store.open_source(m) as src:
        for off in range(0, src.size, n):
            yield src.read(off, n)


def test_receive_round_trip(disk: tuple[FileSystem, str]) -> None:
    fs, d = disk
    leader_fs = FaultyFileSystem(1)
    leader = SnapshotStore(D, fs=leader_fs)
    parts = pieces(4, small=500, big=300_000)
    leader.create(META, writes(parts))
    follower = SnapshotStore(d, fs=fs)
    sink = follower.begin_receive("from-1")
    assert sink.size == 0
    for c in chunks_of(leader, META, 7777):
        assert sink.size % 7777 == 0
        sink.write(c)
    assert sink.size == leader.size(META)
    assert follower.list() == []  # not a snapshot before install
    assert sink.finish() == META
    assert follower.install(sink) == META
    assert follower.list() == [META]
    assert fs.listdir(d) == [snapshot_file_name(META)]
    assert read_file(fs, follower.path(META)) == read_file(leader_fs, leader.path(META))
    with follower.open_body(META) as stream:
        assert stream.read() == b"".join(parts)
    sink.abort()  # harmless after install
    assert follower.list() == [META]


def test_a_received_snapshot_survives_a_crash_after_install() -> None:
    leader = SnapshotStore(D, fs=FaultyFileSystem(1))
    leader.create(META, writes([BODY]))
    fs = FaultyFileSystem(2)
    follower = SnapshotStore(D, fs=fs)
    sink = follower.begin_receive("t")
    for c in chunks_of(leader, META, 1000):
        sink.write(c)
    sink.finish()
    fs.crash("drop")  # before install: the partial is not a snapshot and is cleaned up
    assert SnapshotStore(D, fs=fs).list() == [] and fs.listdir(D) == []
    follower = SnapshotStore(D, fs=fs)
    sink = follower.begin_receive("t")
    for c in chunks_of(leader, META, 1000):
        sink.write(c)
    sink.finish()
    follower.install(sink)
    fs.crash("drop")
    store = SnapshotStore(D, fs=fs)
    assert store.list() == [META] and store.verify(META) > 0


@pytest.mark.parametrize(
    "damage",
    ["flip body", "flip header", "missing chunk", "missing tail", "duplicate chunk"],
)
def test_a_bad_received_file_fails_finish(damage: str) -> None:
    leader = SnapshotStore(D, fs=FaultyFileSystem(1))
    leader.create(META, writes([BODY]))
    fs = FaultyFileSystem(2)
    follower = SnapshotStore(D, fs=fs)
    sink = follower.begin_receive("from-1")
    chunks = list(chunks_of(leader, META, 1000))
    if damage == "flip body":
        chunks[3] = chunks[3][:10] + bytes([chunks[3][10] ^ 1]) + chunks[3][11:]
    elif damage == "flip header":
        chunks[0] = chunks[0][:20] + bytes([chunks[0][20] ^ 1]) + chunks[0][21:]
    elif damage == "missing chunk":
        del chunks[4]
    elif damage == "missing tail":
        chunks[-1] = chunks[-1][:-1]
    else:
        chunks.insert(2, chunks[2])
    for c in chunks:
        sink.write(c)
    with pytest.raises(CorruptSnapshotError, match=r"corrupt snapshot file /snaps/from-1\.partial"):
        sink.finish()
    assert fs.listdir(D) == ["from-1.partial"]  # kept for the caller to abort
    with pytest.raises(LocalProtocolError):
        follower.install(sink)
    sink.abort()
    assert fs.listdir(D) == []
    sink.abort()  # idempotent


def test_receive_edge_cases() -> None:
    leader = SnapshotStore(D, fs=FaultyFileSystem(1))
    leader.create(META, writes([BODY]))
    fs = FaultyFileSystem(2)
    follower = SnapshotStore(D, fs=fs)
    # An old partial of the same tag is truncated, not appended to.
    old = follower.begin_receive("x")
    old.write(b"stale bytes from an earlier attempt" * 1000)  # longer than the snapshot
    old.close()
    sink = follower.begin_receive("x")
    for c in chunks_of(leader, META, 4096):
        sink.write(c)
    assert sink.finish() == META
    with pytest.raises(LocalProtocolError):
        sink.write(b"more")
    # The snapshot exists already: install just drops the partial.
    follower.create(META, writes([BODY]))
    assert follower.install(sink) == META
    assert fs.listdir(D) == [snapshot_file_name(META)]
    # install before finish is misuse.
    early = follower.begin_receive("y")
    with pytest.raises(LocalProtocolError):
        follower.install(early)
    early.abort()
    for bad in ["", ".", "..", "a/b"]:
        with pytest.raises(ValueError, match="tag"):
            follower.begin_receive(bad)


def test_leftovers_are_deleted_durably_when_asked_never_on_open() -> None:
    fs = FaultyFileSystem()
    store = SnapshotStore(D, fs=fs)
    store.create(META, writes([b"keep me"]))
    for name in ["from-2.partial", snapshot_file_name(OLD) + ".tmp"]:
        f = fs.open(f"{D}/{name}", create=True)
        f.write_at(0, b"half written")
        f.datasync()
    fs.sync_dir(D)
    store = SnapshotStore(D, fs=fs)
    assert len(fs.listdir(D)) == 3  # opening deletes nothing
    store.remove_leftovers()
    assert fs.listdir(D) == [snapshot_file_name(META)]
    fs.crash("drop")  # the deletions were made durable
    assert fs.listdir(D) == [snapshot_file_name(META)]
    assert SnapshotStore(D, fs=fs).list() == [META]


def test_leftovers_are_deleted_on_the_real_file_system(tmp_path: Path) -> None:
    (tmp_path / "a.partial").write_bytes(b"x")
    (tmp_path / "b.snap.tmp").write_bytes(b"y")
    SnapshotStore(str(tmp_path)).remove_leftovers()
    assert list(tmp_path.iterdir()) == []


# -- failures --------------------------------------------------------------------------------


def test_a_failing_body_writer_leaves_nothing(disk: tuple[FileSystem, str]) -> None:
    fs, d = disk
    store = SnapshotStore(d, fs=fs)

    def write_body(out: BinaryIO) -> None:
        out.write(b"x" * (3 << 20))
        out.write(b"partial state")
        raise ValueError("state machine failed")

    with pytest.raises(ValueError, match="state machine failed"):
        store.create(META, write_body)
    assert fs.listdir(d) == []
    assert store.list() == [] and not store.has(META)
    store.create(META, writes([b"second try"]))  # the store is still usable
    assert store.list() == [META]


@pytest.mark.parametrize(
    ("room", "wrapped"),
    [(1 << 20, False), (1 << 20, True), (2_500_000, False)],
    ids=["in the body", "wrapped by the state machine", "at the end"],
)
def test_full_disk_raises_storage_full_and_leaves_nothing(room: int, wrapped: bool) -> None:
    fs = FaultyFileSystem()
    store = SnapshotStore(D, fs=fs)
    store.create(OLD, writes([b"old"]))
    used = fs.used_bytes()
    fs.set_capacity(used + room)
    parts = [b"y" * 1000] * 3000  # 3 MB in small writes
    failed_in_body: list[OSError] = []

    def write_body(out: BinaryIO) -> None:
        try:
            writes(parts)(out)
        except OSError as exc:
            failed_in_body.append(exc)
            if wrapped:
                raise RuntimeError("could not write the snapshot") from exc
            raise

    with pytest.raises(StorageFullError, match="disk full"):
        store.create(META, write_body)
    assert bool(failed_in_body) == (room < 2 << 20)
    assert fs.listdir(D) == [snapshot_file_name(OLD)]
    assert fs.used_bytes() == used
    fs.set_capacity(None)
    store.create(META, writes(parts))
    assert store.verify(META) > 3_000_000


def test_full_disk_while_receiving() -> None:
    leader = SnapshotStore(D, fs=FaultyFileSystem(1))
    leader.create(META, writes([BODY]))
    fs = FaultyFileSystem(2)
    follower = SnapshotStore(D, fs=fs)
    fs.set_capacity(5000)
    sink = follower.begin_receive("t")
    with pytest.raises(StorageFullError):
        for c in chunks_of(leader, META, 1000):
            sink.write(c)
    sink.abort()
    assert fs.listdir(D) == [] and fs.used_bytes() == 0


def test_a_failed_fsync_is_fatal() -> None:
    fs = FaultyFileSystem()
    store = SnapshotStore(D, fs=fs)
    fs.fail_next_fsync()
    with pytest.raises(FatalStorageError, match="fdatasync"):
        store.create(META, writes([b"x"]))
    assert fs.listdir(D) == []
    with pytest.raises(FatalStorageError, match="unusable"):
        store.create(META, writes([b"x"]))
    assert SnapshotStore(D, fs=fs).list() == []  # a restart recovers from the disk


def test_a_failed_directory_fsync_is_fatal() -> None:
    fs = FaultyFileSystem()
    store = SnapshotStore(D, fs=fs)
    store.create(OLD, writes([b"x"]))
    fs.fail_next_fsync()
    with pytest.raises(FatalStorageError, match="directory"):
        store.remove(OLD)
    with pytest.raises(FatalStorageError):
        store.retain([])


# -- deleting --------------------------------------------------------------------------------


def test_retain_and_remove() -> None:
    fs = FaultyFileSystem()
    store = SnapshotStore(D, fs=fs)
    all_metas = [meta(10), meta(20), meta(20, 2), meta(30, 2)]
    for m in all_metas:
        store.create(m, writes([b"s" * m.index]))
    store.retain([meta(20, 2), meta(30, 2), meta(99)])  # an unknown one is fine
    assert store.list() == [meta(20, 2), meta(30, 2)]
    store.remove(meta(20, 2))
    assert store.list() == [meta(30, 2)] and not store.has(meta(20, 2))
    store.remove(meta(20, 2))  # already gone: fine
    fs.crash("drop")  # removals were synced
    store = SnapshotStore(D, fs=fs)
    assert store.list() == [meta(30, 2)]
    assert store.latest() == meta(30, 2)
    store.retain([])
    assert store.list() == [] and store.latest() is None
