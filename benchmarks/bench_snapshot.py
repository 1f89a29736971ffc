"""Snapshots end to end: ``python -m benchmarks snapshot``.

Every node runs :class:`BlobStateMachine`, a synthetic state machine defined here: ``apply``
counts commands; its snapshot is a 16-byte header (commands applied, blob size) and a blob of
``size`` bytes of deterministic pseudo-random data, made chunk by chunk (one random MiB, the
chunk number written over its first 8 bytes), never held whole in memory; ``restore`` reads
the blob back in 1 MiB pieces and checks every byte (and the length). Sizes are in MiB (MB
below means 2**20 bytes).

1. **Transfer** (``transfer_*``, ``leader_rss_*``): three processes (this module run as
   ``python -m benchmarks.bench_snapshot node ...``, each a :class:`~raftpy.node.RaftNode`
   over TCP on 127.0.0.1, default :class:`~raftpy.node.config.NodeConfig`: 1 MiB chunks, 4 MiB
   window, fsync on) with a blob of ``RAFTPY_BENCH_SNAPSHOT_MB`` (default 1024). Nodes 1 and 2
   start (node 3 down, empty data dir); 200 commands are written and the leader takes two
   snapshots (the operator path, ``RaftNode.snapshot()``) with 200 more commands in between,
   so its log is compacted past index 1 (to the first snapshot) and node 3 can only catch up
   from a snapshot. Then node 3 starts. Reported:

   - ``transfer_mb_per_s``: the leader's snapshot file size / ``transfer_s``, the time from the
     leader starting the stream (``SnapshotSender.start``) to node 3's final acknowledgement
     (the leader's sender sees ``done``: every byte received, synced and its CRC verified);
   - ``leader_rss_growth_mb``: the highest RSS of the leader process (``VmRSS``, sampled every
     20 ms) from node 3's start until it caught up, minus the last sample before it started;
   - ``transfer_data_s`` (stream start -> node 3 holds every byte, before its sync and CRC
     check), ``transfer_verify_s`` (node 3's ``fdatasync`` + CRC pass), ``transfer_restore_s``
     (node 3's ``BlobStateMachine.restore``), ``transfer_catchup_s`` (node 3's process start ->
     it applied the leader's last index; ``transfer_node3_start_s`` of it until node 3 serves,
     ``transfer_detect_s`` from then until the leader starts the stream),
     ``transfer_leader_cpu`` / ``transfer_follower_cpu`` (cores used until node 3 holds every
     byte), ``transfer_resent_mb`` (chunks sent beyond one pass over the file: go-back-N
     retransmissions), ``snapshot_take_s`` (the leader writing one snapshot file), the
     leader's and the follower's snapshot file sizes.

2. **Restart** (``restart_*``): a data dir built in this process (a 100 MiB blob snapshot at
   index 1,000 made with :class:`~raftpy.storage.snapshots.SnapshotStore` and recorded with
   ``FileStorage.create_snapshot``, then 100,000 entries of 100 B after it, all committed),
   copied afresh for each of 3 runs (so it is in the page cache: a warm restart). A fresh
   process (``python -m benchmarks.bench_snapshot restart ...``) imports everything, then
   times a one-member ``RaftNode.start()`` until ``status().applied`` reaches the last
   index (snapshot restored, 100,000 entries replayed). ``restart_s``: median of the runs;
   ``restart_rss_mb``: the process's peak RSS (``VmHWM``), median of the runs.
   ``RAFTPY_BENCH_RESTART_MB`` / ``RAFTPY_BENCH_RESTART_ENTRIES`` change the sizes.

Profiling: ``RAFTPY_BENCH_PYSPY=<file>`` records the leader with ``py-spy record --format
raw`` (collapsed stacks) during the transfer into ``<file>``, and node 3 (from its start)
into ``<file>.node3``. ``RAFTPY_BENCH_KEEP=1`` keeps the temp dir (node logs
``node<i>.log``). Every process started here is killed in a ``finally``.

Alone: ``python -m benchmarks.bench_snapshot [--only transfer|restart]`` prints the results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from benchmarks.machine import free_ports, load_text

REPO = Path(__file__).resolve().parent.parent
MiB = 1 << 20

TARGETS: dict[str, tuple[str, float]] = {
    "transfer_mb_per_s": (">=", 200),
    "leader_rss_growth_mb": ("<=", 64),
    "restart_s": ("<=", 3),
}

COMMAND = b"c" * 100
RESTART_BASE = 1_000  # the restart data dir's snapshot index
RESTART_RUNS = 3
RSS_INTERVAL = 0.02


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw in (None, "") else int(raw)


# ----------------------------------------------------------------------------------------------
# The synthetic state machine
# ----------------------------------------------------------------------------------------------

_HEAD = struct.Struct("<QQ")  # commands applied, blob bytes
_CHUNK_NO = struct.Struct("<Q")
_BLOCK = random.Random(0x5EED).randbytes(MiB)

Emit = Callable[..., None]


def _write_blob(out: BinaryIO, count: int, size: int) -> None:
    out.write(_HEAD.pack(count, size))
    buf = bytearray(_BLOCK)  # one MiB reused: each write is a synchronous pwrite
    view = memoryview(buf)
    i = 0
    left = size
    while left > 0:
        n = min(MiB, left)
        _CHUNK_NO.pack_into(buf, 0, i)
        out.write(view if n == MiB else view[:n])
        left -= n
        i += 1


class BlobStateMachine:
    """Counts commands; its state, as a snapshot, is ``size`` bytes of generated data (see the
    module docstring). ``emit(kind, **fields)`` hears when a restore starts and ends."""

    def __init__(self, size: int, emit: Emit | None = None) -> None:
        self.size = size
        self.count = 0
        self._emit = emit

    def apply(self, command: bytes) -> bytes:
        self.count += 1
        return self.count.to_bytes(8, "little")

    def query(self, query: bytes) -> bytes:
        return self.count.to_bytes(8, "little")

    def prepare_snapshot(self) -> Callable[[BinaryIO], None]:
        count, size = self.count, self.size
        return lambda out: _write_blob(out, count, size)

    def snapshot(self, out: BinaryIO) -> None:
        _write_blob(out, self.count, self.size)

    def restore(self, inp: BinaryIO) -> None:
        if self._emit is not None:
            self._emit("restore_start")
        head = inp.read(_HEAD.size)
        if len(head) != _HEAD.size:
            raise ValueError("blob snapshot: header cut short")
        count, size = _HEAD.unpack(head)
        if size != self.size:
            raise ValueError(f"blob snapshot of {size} bytes, expected {self.size}")
        got = 0
        i = 0
        while got < size:
            want = min(MiB, size - got)
            piece = inp.read(want)
            if len(piece) != want:
                raise ValueError(f"blob snapshot ends early at byte {got + len(piece)} of {size}")
            if piece[:8] != _CHUNK_NO.pack(i)[:want] or piece[8:] != _BLOCK[8:want]:
                raise ValueError(f"blob snapshot: chunk {i} differs from what was written")
            got += want
            i += 1
        if inp.read(1):
            raise ValueError(f"blob snapshot: bytes after the {size}-byte blob")
        self.count = count
        if self._emit is not None:
            self._emit("restore_end", bytes=got)


# ----------------------------------------------------------------------------------------------
# Child processes: ``python -m benchmarks.bench_snapshot node|restart ...``
# ----------------------------------------------------------------------------------------------


class _Emitter:
    """Lines on stdout for the parent: ``ev {json}`` (timestamped with ``time.monotonic``, the
    machine-wide clock every process shares) and ``reply {json}``. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def _line(self, text: str) -> None:
        with self._lock:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def __call__(self, kind: str, **fields: Any) -> None:
        fields.update(kind=kind, t=time.monotonic())
        self._line("ev " + json.dumps(fields, default=str))

    def reply(self, data: dict[str, Any]) -> None:
        self._line("reply " + json.dumps(data, default=str))


def _instrument(emit: Emit) -> None:
    """Timestamps from inside the node's snapshot machinery, for the phase breakdown: wraps
    public methods of the sender and of the snapshot store (no behaviour changes)."""
    from raftpy.node.transfer import SnapshotSender
    from raftpy.storage.snapshots import SnapshotSink, SnapshotStore

    start = SnapshotSender.start
    on_response = SnapshotSender.on_response
    finish = SnapshotSink.finish
    create = SnapshotStore.create

    def sender_start(self: SnapshotSender) -> Any:
        emit("stream_start", dst=self.dst, index=self.meta.index, bytes=self.size)
        return start(self)

    def sender_on_response(self: SnapshotSender, m: Any) -> Any:
        was = self.finished
        out = on_response(self, m)
        if self.finished and not was:
            emit(
                "stream_done" if self.done else "stream_failed",
                dst=self.dst,
                bytes=self.size,
                sent=self.bytes_sent,
                chunks=self.chunks_sent,
            )
        return out

    def sink_finish(self: SnapshotSink) -> Any:
        emit("verify_start", bytes=self.size)
        try:
            return finish(self)
        finally:
            emit("verify_end", bytes=self.size)

    def store_create(self: SnapshotStore, meta: Any, write_body: Any) -> int:
        emit("create_start", index=meta.index)
        size = create(self, meta, write_body)
        emit("create_end", index=meta.index, bytes=size)
        return size

    SnapshotSender.start = sender_start  # type: ignore[method-assign]
    SnapshotSender.on_response = sender_on_response  # type: ignore[method-assign]
    SnapshotSink.finish = sink_finish  # type: ignore[method-assign]
    SnapshotStore.create = store_create  # type: ignore[method-assign]


def _run_loop(coro: Any) -> Any:
    """Run on uvloop when installed, as the example servers do."""
    factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def _stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[str | None]:
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line.strip())
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, daemon=True).start()
    return queue


async def _node_serve(node_id: int, size: int, data_dir: str, members: dict[int, str]) -> None:
    """One cluster member. Stdin commands, each answered with one ``reply`` line: ``status``;
    ``propose N`` (N commands of 100 B at once); ``snapshot``; ``wait INDEX SECONDS`` (answers
    when this node applied INDEX). Stops at EOF."""
    from raftpy.node import RaftNode

    emit = _Emitter()
    _instrument(emit)
    sm = BlobStateMachine(size, emit)
    node = RaftNode(node_id, members[node_id], members, sm, data_dir)
    await node.start()
    emit("ready", pid=os.getpid())
    lines = _stdin_lines(asyncio.get_running_loop())
    try:
        while (line := await lines.get()) is not None:
            parts = line.split()
            if not parts:
                continue
            try:
                emit.reply(await _node_command(node, sm, parts))
            except Exception as exc:
                emit.reply({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        await node.stop()


async def _node_command(node: Any, sm: BlobStateMachine, parts: list[str]) -> dict[str, Any]:
    op = parts[0]
    if op == "status":
        import msgspec

        st: dict[str, Any] = msgspec.to_builtins(node.status())
        st["count"] = sm.count
        return st
    if op == "propose":
        n = int(parts[1])
        await asyncio.gather(*(node.propose(COMMAND) for _ in range(n)))
        return {"proposed": n}
    if op == "snapshot":
        meta = await node.snapshot()
        return {"index": meta.index, "term": meta.term}
    if op == "wait":
        index, seconds = int(parts[1]), float(parts[2])
        deadline = time.monotonic() + seconds
        while (node.status().applied or 0) < index:
            if time.monotonic() > deadline:
                raise TimeoutError(f"not applied {index} within {seconds} s: {node.status()}")
            await asyncio.sleep(0.002)
        return {"t": time.monotonic(), "applied": node.status().applied, "count": sm.count}
    raise ValueError(f"unknown command {op!r}")


def _proc_status_kb(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``); 0 when unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


async def _restart_child(data_dir: str, size: int, target: int, timeout: float) -> None:
    """Time a one-member node's start until it applied ``target``; print ``result {json}``."""
    from raftpy.node import RaftNode

    address = f"127.0.0.1:{free_ports(1)[0]}"
    sm = BlobStateMachine(size)
    rss_before = _proc_status_kb(os.getpid(), "VmRSS")
    t0 = time.perf_counter()
    node = RaftNode(1, address, {1: address}, sm, data_dir)
    await node.start()
    t_started = time.perf_counter()
    try:
        while (node.status().applied or 0) < target:
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"not applied {target} within {timeout} s: {node.status()}")
            await asyncio.sleep(0.001)
        t_done = time.perf_counter()
        result = {
            "restart_s": t_done - t0,
            "start_s": t_started - t0,
            "replay_s": t_done - t_started,
            "rss_before_kb": rss_before,
            "rss_kb": _proc_status_kb(os.getpid(), "VmRSS"),
            "hwm_kb": _proc_status_kb(os.getpid(), "VmHWM"),
            "count": sm.count,
            "applied": node.status().applied,
        }
    finally:
        await node.stop()
    print("result " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------------------------
# The parent: the transfer
# ----------------------------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    path = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


class _Node:
    """A node process: stdin commands, ``reply`` lines, ``ev`` events (kept in order)."""

    def __init__(self, node_id: int, proc: asyncio.subprocess.Process) -> None:
        self.id = node_id
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self._replies: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._changed = asyncio.Event()
        self._pump = asyncio.ensure_future(self._read())

    @classmethod
    async def spawn(
        cls, node_id: int, size: int, data_dir: Path, members: dict[int, str], log: Path
    ) -> _Node:
        args = ["node", str(node_id), str(size), str(data_dir)]
        for i, a in members.items():
            args += [str(i), a]
        with open(log, "ab") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "benchmarks.bench_snapshot",
                *args,
                cwd=REPO,
                env={**_child_env(), "RAFTPY_LOG": os.environ.get("RAFTPY_LOG", "info")},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        return cls(node_id, proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            line = raw.decode().rstrip("\n")
            if line.startswith("ev "):
                self.events.append(json.loads(line[3:]))
                self._changed.set()
            elif line.startswith("reply "):
                self._replies.put_nowait(json.loads(line[6:]))
        self._replies.put_nowait(None)
        self._changed.set()

    def event(self, kind: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e["kind"] == kind), None)

    async def wait_event(self, kind: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (ev := self.event(kind)) is None:
            if self.proc.returncode is not None or self._pump.done():
                raise RuntimeError(f"node {self.id} exited (status {self.proc.returncode})")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"node {self.id}: no {kind!r} event within {timeout} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return ev

    async def call(self, command: str, timeout: float = 10.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        reply = await asyncio.wait_for(self._replies.get(), timeout)
        if reply is None:
            raise RuntimeError(f"node {self.id} exited (status {self.proc.returncode})")
        if "error" in reply:
            raise RuntimeError(f"node {self.id}: {command!r} failed: {reply['error']}")
        return reply

    async def reap(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
                self.proc.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 10)
        self._pump.cancel()
        with contextlib.suppress(BaseException):
            await self._pump


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (``/proc/<pid>/stat``; 0 if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


class _Sampler(threading.Thread):
    """``VmRSS`` (kB) and CPU seconds of one process every ``interval`` seconds:
    ``(time.monotonic(), kB, cpu)``."""

    def __init__(self, pid: int, interval: float = RSS_INTERVAL) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int, float]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            kb = _proc_status_kb(self.pid, "VmRSS")
            if kb:
                self.samples.append((time.monotonic(), kb, _cpu_seconds(self.pid)))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def cores(self, t0: float, t1: float) -> float:
        """Average CPU use (in cores) between the samples nearest ``t0`` and ``t1``."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return float("nan")
        return (inside[-1][2] - inside[0][2]) / (inside[-1][0] - inside[0][0])


def _start_pyspy(pid: int, output: str) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        print("    (py-spy not installed: no profile)", flush=True)
        return None
    cmd = [exe, "record", "--pid", str(pid), "--rate", "200", "--nonblocking"]
    cmd += ["--format", "raw", "--output", output, "--duration", "600"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop_pyspy(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT makes py-spy write what it recorded."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


async def _stable_leader(nodes: Sequence[_Node], timeout: float = 30.0) -> _Node:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = [await n.call("status") for n in nodes]
        leaders = {s.get("leader") for s in statuses}
        if len(leaders) == 1:
            for n, s in zip(nodes, statuses, strict=True):
                if s.get("role") == "leader":
                    return n
        await asyncio.sleep(0.05)
    raise RuntimeError(f"no leader among nodes {[n.id for n in nodes]} within {timeout} s")


def _mb(n: float) -> float:
    return n / MiB


async def _transfer(root: Path, size: int, out: dict[str, float]) -> None:
    ports = free_ports(3)
    members = {i: f"127.0.0.1:{p}" for i, p in zip((1, 2, 3), ports, strict=True)}
    nodes: dict[int, _Node] = {}
    sampler: _Sampler | None = None
    sampler3: _Sampler | None = None
    pyspy: subprocess.Popen[bytes] | None = None
    pyspy3: subprocess.Popen[bytes] | None = None
    pyspy_out = os.environ.get("RAFTPY_BENCH_PYSPY")
    # Generous bounds: the disk and the machine decide; a hang must still end.
    take_timeout = 60 + size / (20 * MiB)
    catchup_timeout = 60 + size / (10 * MiB)

    async def spawn(i: int) -> _Node:
        node = await _Node.spawn(i, size, root / f"data{i}", members, root / f"node{i}.log")
        nodes[i] = node
        await node.wait_event("ready", 30)
        return node

    try:
        await asyncio.gather(spawn(1), spawn(2))
        leader = await _stable_leader([nodes[1], nodes[2]])
        follower = nodes[2 if leader.id == 1 else 1]
        print(f"  nodes 1, 2 up; leader node {leader.id}; blob {_mb(size):,.0f} MiB", flush=True)

        takes: list[float] = []
        for _ in range(2):
            await leader.call("propose 200", 30)
            t0 = time.monotonic()
            snap = await leader.call("snapshot", take_timeout)
            takes.append(time.monotonic() - t0)
            print(f"  leader took snapshot {snap['index']} in {takes[-1]:.2f} s", flush=True)
        st = await leader.call("status")
        if int(st["first_index"]) <= 1:
            raise RuntimeError(f"the leader's log was not compacted: {st}")
        target = int(st["last_index"])
        await follower.call(f"wait {target} 30", 35)
        leader_pid = int((leader.event("ready") or {})["pid"])

        sampler = _Sampler(leader_pid)
        sampler.start()
        await asyncio.sleep(0.5)  # a few samples of the quiet leader
        if pyspy_out:
            pyspy = _start_pyspy(leader_pid, pyspy_out)
            await asyncio.sleep(0.5)  # let py-spy attach
        baseline = sampler.samples[-1][1]
        load = load_text()
        t_spawn = time.monotonic()
        node3 = await spawn(3)
        pid3 = int((node3.event("ready") or {})["pid"])
        sampler3 = _Sampler(pid3)
        sampler3.start()
        if pyspy_out:
            pyspy3 = _start_pyspy(pid3, pyspy_out + ".node3")
        done = await node3.call(f"wait {target} {catchup_timeout}", catchup_timeout + 5)
        t_caught_up = float(done["t"])
        stream_start = await leader.wait_event("stream_start", 5)
        stream_done = await leader.wait_event("stream_done", 10)
        await asyncio.sleep(0.1)
        sampler.stop()
        sampler3.stop()
        for spy in (pyspy, pyspy3):
            if spy is not None:
                _stop_pyspy(spy)
        if pyspy_out:
            print(f"  py-spy profiles: leader {pyspy_out}, node 3 {pyspy_out}.node3", flush=True)
        pyspy = pyspy3 = None

        file_bytes = int(stream_start["bytes"])
        transfer_s = float(stream_done["t"]) - float(stream_start["t"])
        verify_start = node3.event("verify_start")
        verify_end = node3.event("verify_end")
        restore_start = node3.event("restore_start")
        restore_end = node3.event("restore_end")
        window = [kb for t, kb, _ in sampler.samples if t_spawn <= t <= t_caught_up]
        peak = max(window, default=baseline)
        snap_files = list((root / "data3" / "snapshots").glob("*.snap"))
        follower_bytes = sum(p.stat().st_size for p in snap_files)

        out["transfer_mb_per_s"] = _mb(file_bytes) / transfer_s
        out["leader_rss_growth_mb"] = (peak - baseline) / 1024
        out["leader_rss_before_mb"] = baseline / 1024
        out["leader_rss_peak_mb"] = peak / 1024
        out["transfer_s"] = transfer_s
        t_stream = float(stream_start["t"])
        t_data = float(verify_start["t"]) if verify_start is not None else float(stream_done["t"])
        out["transfer_leader_cpu"] = sampler.cores(t_stream, t_data)
        out["transfer_follower_cpu"] = sampler3.cores(t_stream, t_data)
        if verify_start is not None:
            data_s = float(verify_start["t"]) - float(stream_start["t"])
            out["transfer_data_s"] = data_s
            out["transfer_data_mb_per_s"] = _mb(file_bytes) / data_s
        if verify_start is not None and verify_end is not None:
            out["transfer_verify_s"] = float(verify_end["t"]) - float(verify_start["t"])
        if restore_start is not None and restore_end is not None:
            out["transfer_restore_s"] = float(restore_end["t"]) - float(restore_start["t"])
        out["transfer_catchup_s"] = t_caught_up - t_spawn
        ready3 = float((node3.event("ready") or {})["t"])
        out["transfer_node3_start_s"] = ready3 - t_spawn  # process start, imports, recovery
        out["transfer_detect_s"] = float(stream_start["t"]) - ready3  # until the leader streams
        out["transfer_resent_mb"] = _mb(max(0, int(stream_done["sent"]) - file_bytes))
        out["snapshot_take_s"] = statistics.fmean(takes)
        out["leader_snapshot_bytes"] = file_bytes
        out["follower_snapshot_bytes"] = follower_bytes
        print(
            f"  node 3: {_mb(file_bytes):,.0f} MiB in {transfer_s:.2f} s "
            f"({out['transfer_mb_per_s']:,.0f} MiB/s; bytes on the wire after "
            f"{out.get('transfer_data_s', float('nan')):.2f} s, CPU leader "
            f"{out['transfer_leader_cpu']:.2f} node 3 {out['transfer_follower_cpu']:.2f} cores; "
            f"sync + CRC "
            f"{out.get('transfer_verify_s', float('nan')):.2f} s), restore "
            f"{out.get('transfer_restore_s', float('nan')):.2f} s, caught up "
            f"{out['transfer_catchup_s']:.2f} s after its start; leader RSS "
            f"{baseline / 1024:,.0f} -> peak {peak / 1024:,.0f} MiB ({len(window)} samples); "
            f"follower file {follower_bytes:,} bytes; {load}",
            flush=True,
        )
        if follower_bytes != file_bytes:
            raise RuntimeError(
                f"node 3 holds {follower_bytes} bytes of snapshots ({snap_files}), "
                f"the leader sent {file_bytes}"
            )
        if int(done["count"]) != int(st["count"]):
            raise RuntimeError(f"node 3 counted {done['count']} commands, the leader {st['count']}")
    finally:
        for smp in (sampler, sampler3):
            if smp is not None:
                smp.stop()
        for spy in (pyspy, pyspy3):
            if spy is not None:
                _stop_pyspy(spy)
        for node in nodes.values():
            await node.reap()


# ----------------------------------------------------------------------------------------------
# The parent: the restart
# ----------------------------------------------------------------------------------------------


def _build_restart_dir(path: Path, size: int, entries: int) -> int:
    """A data dir as a one-member node leaves it: a blob snapshot at ``RESTART_BASE`` (the log
    compacted to it), then ``entries`` committed entries of 100 B. Returns the last index."""
    from raftpy.core.messages import ConfState, Entry, EntryKind, SnapshotMeta
    from raftpy.core.storage import HardState
    from raftpy.storage.snapshots import SnapshotStore
    from raftpy.storage.wal import FileStorage

    def batch(first: int, n: int) -> list[Entry]:
        return [Entry(1, i, EntryKind.COMMAND, COMMAND) for i in range(first, first + n)]

    meta = SnapshotMeta(RESTART_BASE, 1, ConfState(voters=(1,)))
    sm = BlobStateMachine(size)
    sm.count = RESTART_BASE
    SnapshotStore(path / "snapshots").create(meta, sm.prepare_snapshot())
    with FileStorage(path, [1]) as storage:
        last = 0
        for first in range(1, RESTART_BASE + entries + 1, 1000):
            n = min(1000, RESTART_BASE + entries + 1 - first)
            storage.append(batch(first, n))
            last = first + n - 1
            storage.set_hard_state(HardState(1, 1, last))
            storage.sync()
            if last == RESTART_BASE:
                storage.create_snapshot(meta)
    return last


def _restart(root: Path, out: dict[str, float]) -> None:
    size = _env_int("RAFTPY_BENCH_RESTART_MB", 100) * MiB
    entries = _env_int("RAFTPY_BENCH_RESTART_ENTRIES", 100_000)
    pristine = root / "restart-pristine"
    t0 = time.monotonic()
    last = _build_restart_dir(pristine, size, entries)
    print(
        f"  built a data dir: {_mb(size):,.0f} MiB snapshot at {RESTART_BASE}, "
        f"{entries:,} entries after it (last index {last}) in {time.monotonic() - t0:.1f} s",
        flush=True,
    )
    results: list[dict[str, Any]] = []
    for run in range(RESTART_RUNS):
        data = root / f"restart-{run}"
        shutil.copytree(pristine, data)
        load = load_text()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.bench_snapshot",
                "restart",
                str(data),
                str(size),
                str(last),
            ],
            cwd=REPO,
            env={**_child_env(), "RAFTPY_LOG": os.environ.get("RAFTPY_LOG", "warn")},
            capture_output=True,
            timeout=120,
            check=False,
        )
        lines = [ln for ln in proc.stdout.decode().splitlines() if ln.startswith("result ")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(
                f"restart run {run + 1} failed (status {proc.returncode}): "
                f"{proc.stderr.decode()[-2000:]}"
            )
        r = json.loads(lines[-1][len("result ") :])
        if r["count"] != last:
            raise RuntimeError(f"restart run {run + 1}: counted {r['count']} commands, not {last}")
        results.append(r)
        shutil.rmtree(data, ignore_errors=True)
        print(
            f"  restart {run + 1}: applied {last} after {r['restart_s']:.2f} s (start() "
            f"{r['start_s']:.2f} s incl. restore, replay {r['replay_s']:.2f} s); RSS "
            f"{r['rss_kb'] / 1024:,.0f} MiB, peak {r['hwm_kb'] / 1024:,.0f} MiB; {load}",
            flush=True,
        )
    out["restart_s"] = statistics.median(r["restart_s"] for r in results)
    out["restart_max_s"] = max(r["restart_s"] for r in results)
    out["restart_start_s"] = statistics.median(r["start_s"] for r in results)
    out["restart_replay_s"] = statistics.median(r["replay_s"] for r in results)
    out["restart_rss_mb"] = statistics.median(r["hwm_kb"] for r in results) / 1024
    out["restart_rss_end_mb"] = statistics.median(r["rss_kb"] for r in results) / 1024


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------

PARTS = ("transfer", "restart")


def _suite(parts: Sequence[str] = PARTS) -> dict[str, float]:
    out: dict[str, float] = {}
    keep = os.environ.get("RAFTPY_BENCH_KEEP") == "1"
    root = Path(tempfile.mkdtemp(prefix="raftpy-bench-snapshot-", dir="/tmp"))
    try:
        if "transfer" in parts:
            size = _env_int("RAFTPY_BENCH_SNAPSHOT_MB", 1024) * MiB
            t0 = time.monotonic()
            (root / "transfer").mkdir()
            asyncio.run(_transfer(root / "transfer", size, out))
            out["transfer_wall_s"] = time.monotonic() - t0
            if not keep:  # free the disk (three snapshot files) before the restart part
                shutil.rmtree(root / "transfer", ignore_errors=True)
        if "restart" in parts:
            t0 = time.monotonic()
            _restart(root, out)
            out["restart_wall_s"] = time.monotonic() - t0
    finally:
        if keep:
            print(f"(kept {root})")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return out


def run() -> dict[str, float]:
    return _suite()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_snapshot")
    sub = parser.add_subparsers(dest="mode")
    p_node = sub.add_parser("node", help="(internal) a cluster member")
    p_node.add_argument("id", type=int)
    p_node.add_argument("size", type=int)
    p_node.add_argument("data_dir")
    p_node.add_argument("members", nargs="+", help="id address pairs")
    p_restart = sub.add_parser("restart", help="(internal) one timed restart")
    p_restart.add_argument("data_dir")
    p_restart.add_argument("size", type=int)
    p_restart.add_argument("target", type=int)
    parser.add_argument("--only", action="append", choices=PARTS, help="run only these parts")
    args = parser.parse_args(argv)
    if args.mode == "node":
        from raftpy.logconfig import configure_logging

        configure_logging(default="info")
        pairs = args.members
        members = {int(pairs[k]): pairs[k + 1] for k in range(0, len(pairs), 2)}
        _run_loop(_node_serve(args.id, args.size, args.data_dir, members))
    elif args.mode == "restart":
        logging.basicConfig(level=logging.WARNING)
        _run_loop(_restart_child(args.data_dir, args.size, args.target, 100.0))
    else:
        for key, value in _suite(args.only or PARTS).items():
            print(f"{key:32} {value:,.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
