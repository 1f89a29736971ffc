"""The hardware floor for a durable replicated write on this machine, with no Raft logic.

The cluster benchmark (:mod:`benchmarks.bench_cluster`) runs this beside raftpy and divides
by it (``ratio_*_vs_floor``); alone: ``python -m benchmarks.floor``.

Four processes on loopback, shaped as the raftpy cluster benchmark's are: a client process, a
leader and two followers, all asyncio (on uvloop when installed; the output names the loop):

- the client (the same load loop as raftpy's, :func:`benchmarks.loadgen._drive`) keeps 1 or
  256 writes in flight over one TCP connection, each a frame of a request id and a 100-byte
  value (no key: there is no state machine); the requests made in one turn of its loop leave
  in one send;
- the leader takes whatever frames one read brought as one batch, sends it at once to both
  followers over TCP, then appends it to its own log file (``pwrite`` + ``fdatasync``), so
  its fdatasync overlaps theirs. What arrives during an fdatasync waits in the socket and
  makes the next batch (group commit). A write is answered once the leader's own fdatasync
  covers it *and* one follower has acknowledged it (a majority of three durable); all the
  answers that became due go to the client in one send;
- a follower appends every whole batch one read brought with one ``pwrite`` + ``fdatasync``
  and acknowledges the last index now durable.

The fdatasync blocks the process's event loop, which has nothing else to do meanwhile: the
fewest wake-ups per write. ``RAFTPY_BENCH_FLOOR_SYNC=thread`` runs it in a thread instead (one
at a time, what is appended meanwhile going into the next); on this 2-core VM that measured
slower for one writer and no faster at 256. The log files are preallocated in 64 MiB steps
(``posix_fallocate``), as raftpy's segments are, so an fdatasync writes data and no size
change. Frames are length-prefixed; the leader reads each client frame's length and id and
never decodes or re-encodes an entry.

What it does not do, and raftpy must: no terms, elections, votes or log matching; no entry
encoding, checksums or recovery; no state machine (nothing is applied: the answer is sent on
commit); no client sessions or duplicate detection; no flow control, timeouts, heartbeats or
reconnection (a lost connection ends the run). It is the bound a Python implementation could
reach here with the same processes, loop, disk and network, not a design to copy.

Results: ``floor_single_*`` (1 in flight) and ``floor_inflight256_*`` (writes/s, p50, p99),
each over ``RAFTPY_BENCH_FLOOR_SECONDS`` (default 5 s) after a 1 s warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import json
import os
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

from benchmarks.loadgen import (
    REPO,
    VALUE_BYTES,
    WARMUP,
    Measure,
    _CpuMeter,
    _drive,
    _kill_all,
    _line,
    _report,
    _run_load,
    _run_loop,
    _wait_listening,
)
from benchmarks.machine import env_float, free_ports, load_text, scratch_dir

MODULE = "benchmarks.floor"
PREALLOCATE = 64 << 20
THREADED = os.environ.get("RAFTPY_BENCH_FLOOR_SYNC", "inline") == "thread"

_LEN = struct.Struct("<I")  # client frame: u32 length of what follows,
_REQ = struct.Struct("<IQ")  # ... then u64 request id, then the value
_ID = struct.Struct("<Q")  # leader -> client: the id of an answered request
_BATCH = struct.Struct("<QI")  # leader -> follower: u64 last index, u32 byte length, the frames
_ACK = struct.Struct("<Q")  # follower -> leader: u64 last durable index


def _loop_name() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


class _Log:
    """An append-only file; ``on_durable(index)`` runs on the event loop once :meth:`append`'s
    bytes up to ``index`` are on disk. Inline (the default), the write and fdatasync block the
    loop: what arrives meanwhile waits in the socket and is read, then written, as one batch.
    Threaded (``RAFTPY_BENCH_FLOOR_SYNC=thread``), they run in the log's own thread, one
    fdatasync at a time, and what is appended meanwhile goes into the next."""

    def __init__(self, path: Path, on_durable: Any, threaded: bool) -> None:
        self._threaded = threaded
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.posix_fallocate(self._fd, 0, PREALLOCATE)
        self._allocated = PREALLOCATE
        self._size = 0
        self._pending: list[bytes] = []
        self._pending_index = 0
        self._syncing = False
        self._thread = concurrent.futures.ThreadPoolExecutor(1)
        self._on_durable = on_durable

    def append(self, data: bytes, last_index: int) -> None:
        if not self._threaded:
            self._write(data)
            self._on_durable(last_index)
            return
        self._pending.append(data)
        self._pending_index = last_index
        if not self._syncing:
            self._sync()

    def _sync(self) -> None:
        data = b"".join(self._pending)
        index = self._pending_index
        self._pending.clear()
        self._syncing = True
        done = asyncio.get_running_loop().run_in_executor(self._thread, self._write, data)
        done.add_done_callback(lambda f: self._synced(f, index))

    def _write(self, data: bytes) -> None:  # pwrite and fdatasync release the GIL
        end = self._size + len(data)
        if end > self._allocated:
            grow = max(PREALLOCATE, end - self._allocated)
            os.posix_fallocate(self._fd, self._allocated, grow)
            self._allocated += grow
        os.pwrite(self._fd, data, self._size)
        self._size = end
        os.fdatasync(self._fd)

    def _synced(self, done: asyncio.Future[None], index: int) -> None:
        done.result()  # a failed write ends the run
        self._syncing = False
        self._on_durable(index)
        if self._pending:
            self._sync()


# -- follower: ``python -m benchmarks.floor follower <port> <log file>`` ----------------------


class _FollowerConnection(asyncio.Protocol):
    def __init__(self, path: Path) -> None:
        self._path = path
        self._buf = bytearray()
        self._log: _Log | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        if self._log is None:  # the first bytes: this is the leader, not a readiness probe
            self._log = _Log(self._path, self._durable, THREADED)
        buf = self._buf
        buf += data
        off, n, last = 0, len(buf), 0
        while n - off >= _BATCH.size:
            index, size = _BATCH.unpack_from(buf, off)
            end = off + _BATCH.size + size
            if end > n:
                break
            last, off = index, end
        if last:  # every whole batch that came in, as one write
            self._log.append(bytes(buf[:off]), last)
            del buf[:off]

    def _durable(self, index: int) -> None:
        assert self._transport is not None
        self._transport.write(_ACK.pack(index))


async def _follower(port: int, path: Path) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_server(lambda: _FollowerConnection(path), "127.0.0.1", port)
    print(f"follower on {_loop_name()}", flush=True)
    await asyncio.Event().wait()


# -- leader: ``python -m benchmarks.floor leader <port> <log file> <follower port>...`` ------


class _Leader:
    """Batches from clients go to both followers and the leader's log at once; a write is
    answered when the leader's log and one follower have it on disk."""

    def __init__(self, path: Path, followers: list[asyncio.Transport]) -> None:
        self._followers = followers
        self._log = _Log(path, self._durable, THREADED)
        self._last = 0  # the last index given out
        self._durable_index = 0
        self._acks = [0] * len(followers)
        self._commit = 0
        # (last index of a batch, its client connection, the ids to answer), oldest first
        self._waiting: collections.deque[tuple[int, asyncio.Transport, bytes]] = collections.deque()

    def propose(self, frames: bytes, count: int, client: asyncio.Transport, ids: bytes) -> None:
        self._last += count
        batch = _BATCH.pack(self._last, len(frames)) + frames
        for follower in self._followers:
            follower.write(batch)
        self._log.append(batch, self._last)
        self._waiting.append((self._last, client, ids))

    def _durable(self, index: int) -> None:
        self._durable_index = index
        self._advance()

    def acked(self, k: int, index: int) -> None:
        self._acks[k] = max(self._acks[k], index)
        self._advance()

    def _advance(self) -> None:
        # A majority of 3 is the leader and one follower, each durable up to the index.
        commit = min(self._durable_index, max(self._acks))
        if commit <= self._commit:
            return
        self._commit = commit
        answers: dict[asyncio.Transport, list[bytes]] = {}
        waiting = self._waiting
        while waiting and waiting[0][0] <= commit:
            _, client, ids = waiting.popleft()
            answers.setdefault(client, []).append(ids)
        for client, parts in answers.items():
            if not client.is_closing():
                client.write(b"".join(parts))


class _LeaderClientConnection(asyncio.Protocol):
    def __init__(self, leader: _Leader) -> None:
        self._leader = leader
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        off, n = 0, len(buf)
        ids: list[bytes] = []
        while n - off >= _REQ.size:
            (size,) = _LEN.unpack_from(buf, off)
            end = off + _LEN.size + size
            if end > n:
                break
            ids.append(buf[off + _LEN.size : off + _REQ.size])
            off = end
        if ids:
            assert self._transport is not None
            self._leader.propose(bytes(buf[:off]), len(ids), self._transport, b"".join(ids))
            del buf[:off]


class _AckReader(asyncio.Protocol):
    def __init__(self, k: int, leader: list[_Leader]) -> None:
        self._k = k
        self._leader = leader  # filled once the leader exists (its followers connect first)
        self._buf = bytearray()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        whole = len(buf) - len(buf) % _ACK.size
        if whole:
            # Acks only grow: the last one in the buffer says all.
            (index,) = _ACK.unpack_from(buf, whole - _ACK.size)
            del buf[:whole]
            self._leader[0].acked(self._k, index)

    def connection_lost(self, exc: Exception | None) -> None:
        os._exit(3)  # the floor has no reconnection: a lost follower ends the run


async def _leader(port: int, path: Path, follower_ports: list[int]) -> None:
    loop = asyncio.get_running_loop()
    holder: list[_Leader] = []
    followers: list[asyncio.Transport] = []
    for k, fport in enumerate(follower_ports):
        transport, _ = await loop.create_connection(
            lambda k=k: _AckReader(k, holder), "127.0.0.1", fport
        )
        followers.append(transport)
    holder.append(_Leader(path, followers))
    await loop.create_server(lambda: _LeaderClientConnection(holder[0]), "127.0.0.1", port)
    print(f"leader on {_loop_name()}", flush=True)
    await asyncio.Event().wait()


# -- client: ``python -m benchmarks.floor load <inflight> <seconds> <port>`` -----------------


class _Client(asyncio.Protocol):
    """One connection, any number of requests in flight, answered by id. The requests made in
    one turn of the event loop leave in one send."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        whole = len(buf) - len(buf) % _ID.size
        for (rid,) in _ID.iter_unpack(bytes(buf[:whole])):
            fut = self._waiting.pop(rid)
            if not fut.done():
                fut.set_result(None)
        del buf[:whole]

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionError("the floor leader closed the connection"))

    def put(self, rid: int, value: bytes) -> asyncio.Future[None]:
        assert self._transport is not None
        fut = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(_REQ.pack(_ID.size + len(value), rid) + value)
        return fut

    def _flush(self) -> None:
        assert self._transport is not None
        self._transport.write(b"".join(self._out))
        self._out.clear()


async def _load_client(inflight: int, seconds: float, port: int) -> None:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(_Client, "127.0.0.1", port)
    value = b"v" * VALUE_BYTES
    await client.put(2**63, value)  # one write before the clock runs

    async def issue(w: int, k: int) -> None:
        await client.put(k, value)

    result = await _drive(issue, inflight, seconds, WARMUP)
    result["loop"] = _loop_name()
    print("result " + json.dumps(result), flush=True)


# -- the parent ---------------------------------------------------------------------------------


def _spawn(root: Path, name: str, args: list[str]) -> subprocess.Popen[bytes]:
    log = open(root / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
    try:
        path = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        return subprocess.Popen(
            [sys.executable, "-m", MODULE, *args],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(path)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()


FIGURES = {1: "single", 256: "inflight256"}  # in flight -> the results' name


@contextlib.asynccontextmanager
async def floor_cluster(root: Path) -> AsyncIterator[Measure]:
    """The three processes, up; yields ``measure(inflight, seconds, out)``, which runs one
    load client and adds ``floor_<figure>_*`` to ``out``. Every process is killed after."""
    client_port, *follower_ports = free_ports(3)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for k, fport in enumerate(follower_ports):
            procs.append(
                _spawn(root, f"follower{k}", ["follower", str(fport), str(root / f"f{k}")])
            )
            _wait_listening(fport, procs[-1], f"floor follower {k}", 15)
        ports = [str(p) for p in follower_ports]
        procs.append(_spawn(root, "leader", ["leader", str(client_port), str(root / "l"), *ports]))
        _wait_listening(client_port, procs[-1], "floor leader", 15)
        pids = {"leader*": procs[-1].pid, "follower0": procs[0].pid, "follower1": procs[1].pid}
        print(f"floor: leader and 2 followers up, no Raft logic; {load_text()}", flush=True)

        async def measure(inflight: int, seconds: float, out: dict[str, float]) -> None:
            meter = _CpuMeter(pids)
            load = load_text()
            args = ["load", str(inflight), str(seconds), str(client_port)]
            result = await _run_load(args, seconds + 60, meter, module=MODULE)
            title = f"floor, {inflight} in flight on {result['loop']}"
            print(_line(title, result, load), flush=True)
            print("    " + meter.describe(result["client_cpu"]), flush=True)
            out.update(_report(f"floor_{FIGURES[inflight]}", result))

        yield measure
    finally:
        _kill_all(procs)


async def floor_suite(root: Path, out: dict[str, float], seconds: float) -> None:
    """Start the three processes, measure 1 and 256 in flight into ``out``, stop them."""
    async with floor_cluster(root) as measure:
        for inflight in FIGURES:
            await measure(inflight, seconds, out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__)
    sub = parser.add_subparsers(dest="mode")
    p = sub.add_parser("follower", help="(internal) a follower process")
    p.add_argument("port", type=int)
    p.add_argument("log", type=Path)
    p = sub.add_parser("leader", help="(internal) the leader process")
    p.add_argument("port", type=int)
    p.add_argument("log", type=Path)
    p.add_argument("followers", type=int, nargs="+")
    p = sub.add_parser("load", help="(internal) a load client process")
    p.add_argument("inflight", type=int)
    p.add_argument("seconds", type=float)
    p.add_argument("port", type=int)
    args = parser.parse_args(argv)
    if args.mode == "follower":
        _run_loop(_follower(args.port, args.log))
    elif args.mode == "leader":
        _run_loop(_leader(args.port, args.log, args.followers))
    elif args.mode == "load":
        _run_loop(_load_client(args.inflight, args.seconds, args.port))
    else:
        out: dict[str, float] = {}
        with scratch_dir("raftpy-bench-floor-") as root:
            asyncio.run(floor_suite(root, out, env_float("RAFTPY_BENCH_FLOOR_SECONDS", 5.0)))
        for key, value in out.items():
            print(f"{key:36} {value:,.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
