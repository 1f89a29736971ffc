"""The networked cluster end to end: ``python -m benchmarks cluster``.

Three ``python -m raftpy.examples.hashmap server`` processes on free 127.0.0.1 ports, fsync
on (the default), default timeouts (20 ms ticks, elections after 10-20 ticks), each with a
fresh data dir under ``/tmp``. A separate client process (this module run as
``python -m benchmarks.bench_cluster load ...``) drives :class:`raftpy.client.Client` with
hashmap ``put`` commands whose values are 100 bytes (a 98-character string: 100 bytes of JSON
text), cycling over 4,096 keys:

- ``single_*``: 1 request in flight for ``RAFTPY_BENCH_SINGLE_SECONDS`` (default 5 s);
- ``inflight256_*``: 256 requests in flight for ``RAFTPY_BENCH_SECONDS`` (default 15 s; set 60 s
  for a long run); ``inflight256_leader_cpu_us_per_write`` is the leader process's CPU time
  per committed write. This is also the full-load run of the spurious-election check: every
  node's status (term, leader) is polled every 0.5 s, and ``full_load_leader_changes`` /
  ``full_load_term_increases`` count what changed (target: none);
- ``failover_*``: ``RAFTPY_BENCH_FAILOVER_TRIALS`` (default 10) times, SIGKILL of the leader
  while a single-writer client process writes; the figure is the time from the kill to the
  completion of the first write *issued* after it (default :class:`Client` settings, so it
  includes the client's retry backoff). ``failover_new_leader_*`` is the server side alone:
  kill to a survivor reporting itself leader (polled every ~10 ms). The killed node is
  restarted on its data dir, and the next trial waits until it has caught up.

Each figure is a window after a 1 s warm-up; latencies are per request, measured in the client
process. The CPU use of each process over the window is printed (``cpu`` in cores).

Peers, for comparison, when installed (``RAFTPY_BENCH_PEERS=0`` skips them; their sections
are skipped with a note when absent, and never carry targets):

- ``etcd_*``: etcd 3.4 (``apt-get install etcd-server``), 3 members on loopback with their
  defaults (fsync on), driven by the same client process through the v3 HTTP/JSON gateway
  (``POST /v3/kv/put``, base64 key and value; one keep-alive connection per request in flight,
  sent to the leader);
- ``pysyncobj_*``: PySyncObj (``pip install pysyncobj``), 3 processes each holding a
  ``SyncObj`` with a ``@replicated`` ``set``, its defaults (no journal: nothing is written to
  disk). PySyncObj has no client protocol, so the load is generated inside the leader's process
  (callbacks on commit): no client hop, which favours it.

Peers run for ``RAFTPY_BENCH_PEER_SECONDS`` (default 5 s) per figure.

Alone: ``python -m benchmarks.bench_cluster [--only raftpy|etcd|pysyncobj]...`` prints the
same sections and the result table (without writing ``bench-results/``).

Profiling: with py-spy installed (``pip install 'raftpy[bench]'``), a further 256-in-flight
window of ``RAFTPY_BENCH_PROFILE_SECONDS`` (default 5 s) records the leader, and
``leader_cpu_split_<part>_pct`` says where its CPU went (:mod:`benchmarks.cpu_split`: core,
codec, storage, transport, node, state machine, event loop, system calls...). It is a window of
its own because py-spy pauses the leader for each sample: in the full-load window it cost the
leader its leadership in 3 runs of 7. ``RAFTPY_BENCH_PYSPY=<file>`` keeps the raw profile
(collapsed stacks) in ``<file>``, ``RAFTPY_BENCH_PYSPY=0`` records nothing.
``RAFTPY_BENCH_KEEP=1`` keeps the temp dirs (node logs) for inspection. Every process started
here is killed in a ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib.util
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.cpu_split import LeaderProfile
from benchmarks.machine import env_float, free_ports, load_text, scratch_dir

if TYPE_CHECKING:
    from raftpy.node.status import NodeStatus

REPO = Path(__file__).resolve().parent.parent

TARGETS: dict[str, tuple[str, float]] = {
    "inflight256_writes_per_s": (">=", 25_000),
    "single_p50_ms": ("<=", 0.7),
    "single_p99_ms": ("<=", 3.0),
    "failover_median_s": ("<=", 0.5),
    "full_load_leader_changes": ("<=", 0),
    "full_load_term_increases": ("<=", 0),
}

WARMUP = 1.0
KEYS = 4096
VALUE_BYTES = 100
STATUS_POLL = 0.5
TICK_MS = 20  # the server defaults, spelled out
ELECTION_TICKS = 10


def _pct(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _wait_listening(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")


def _kill_all(procs: Sequence[subprocess.Popen[Any] | None]) -> None:
    for proc in procs:
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGCONT)
            proc.kill()
    for proc in procs:
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


# ----------------------------------------------------------------------------------------------
# The client process: ``python -m benchmarks.bench_cluster load|failover ...``
# ----------------------------------------------------------------------------------------------


def _value() -> str:
    return "v" * (VALUE_BYTES - 2)  # its JSON text (with the quotes) is VALUE_BYTES long


def _hashmap_commands() -> list[bytes]:
    import msgspec

    text = json.dumps(_value())
    return [msgspec.msgpack.encode(("put", f"key{k:05d}", text)) for k in range(KEYS)]


Issue = Callable[[int, int], Awaitable[None]]
"""(worker number, request number) -> one write, raising on failure."""


async def _drive(issue: Issue, inflight: int, seconds: float, warmup: float) -> dict[str, Any]:
    """Keep ``inflight`` writes outstanding for ``warmup + seconds``; the figures count the
    writes completed inside the window after the warm-up. Prints ``mark start`` / ``mark
    end`` at the window's edges (the parent samples the servers' CPU there)."""
    loop = asyncio.get_running_loop()
    begin = time.perf_counter()
    w_start = begin + warmup
    w_end = w_start + seconds
    done: list[tuple[float, float]] = []  # (end, latency)
    errors: list[str] = []
    counter = 0
    cpu: dict[str, float] = {}

    def mark(name: str) -> None:
        cpu[name] = time.process_time()
        print(f"mark {name}", flush=True)

    loop.call_later(warmup, mark, "start")
    loop.call_later(warmup + seconds, mark, "end")

    async def worker(w: int) -> None:
        nonlocal counter
        while True:
            t0 = time.perf_counter()
            if t0 >= w_end:
                return
            k = counter
            counter += 1
            try:
                await issue(w, k)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            t1 = time.perf_counter()
            done.append((t1, t1 - t0))

    await asyncio.gather(*(worker(w) for w in range(inflight)))
    while "end" not in cpu:  # in case the last write came back before the timer fired
        await asyncio.sleep(0.01)
    window = sorted(lat for end, lat in done if w_start <= end < w_end)
    return {
        "writes": len(window),
        "seconds": seconds,
        "writes_per_s": len(window) / seconds,
        "p50_ms": _pct(window, 0.5) * 1e3,
        "p99_ms": _pct(window, 0.99) * 1e3,
        "p999_ms": _pct(window, 0.999) * 1e3,
        "mean_ms": statistics.fmean(window) * 1e3 if window else float("nan"),
        "errors": len(errors),
        "first_errors": errors[:5],
        "client_cpu": (cpu["end"] - cpu.get("start", cpu["end"])) / seconds,
    }


class _HttpConnection:
    """A minimal HTTP/1.1 keep-alive connection for the etcd gateway (one request at a time)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> bytes:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self._writer.write(head + body)
        raw = await self._reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            data = await self._reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self._reader.readuntil(b"\r\n")).strip(), 16)
                parts.append(await self._reader.readexactly(size + 2))
                if size == 0:
                    break
            data = b"".join(p[:-2] for p in parts)
        else:
            raise RuntimeError(f"unframed HTTP response: {lines[0]}")
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {data[:200]!r}")
        return data

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _etcd_bodies() -> list[bytes]:
    value = base64.b64encode(b"v" * VALUE_BYTES).decode()
    return [
        json.dumps({"key": base64.b64encode(f"key{k:05d}".encode()).decode(), "value": value})
        .encode()
        .replace(b" ", b"")
        for k in range(KEYS)
    ]


def tls_files(tls_dir: str | Path | None, stem: str) -> Any:
    """The :class:`~raftpy.transport.tls.TlsConfig` of ``stem`` (``node-1``, ``client-bench``)
    in a ``raftpy tls init`` directory; ``None`` without one."""
    if tls_dir is None:
        return None
    from raftpy.transport.tls import TlsConfig

    d = Path(tls_dir)
    return TlsConfig(d / f"{stem}.pem", d / f"{stem}-key.pem", d / "ca.pem")


async def _load_client(
    system: str, inflight: int, seconds: float, addresses: list[str], tls_dir: str | None = None
) -> None:
    if system == "raftpy":
        from raftpy.client import Client

        commands = _hashmap_commands()
        client = Client(
            addresses,
            timeout=10.0,
            tls=tls_files(tls_dir, "client-bench"),
            sessions=os.environ.get("RAFTPY_BENCH_SESSIONS", "1") == "1",
        )
        await client.propose(commands[0])  # connect and find the leader before the clock runs

        async def issue(w: int, k: int) -> None:
            await client.propose(commands[k % KEYS])

        try:
            result = await _drive(issue, inflight, seconds, WARMUP)
        finally:
            await client.close()
    elif system == "etcd":
        host, _, port = addresses[0].rpartition(":")
        conns = [_HttpConnection(host, int(port)) for _ in range(inflight)]
        bodies = _etcd_bodies()

        async def issue(w: int, k: int) -> None:
            await conns[w].post("/v3/kv/put", bodies[k % KEYS])

        try:
            result = await _drive(issue, inflight, seconds, WARMUP)
        finally:
            for conn in conns:
                conn.close()
    else:
        raise SystemExit(f"unknown system {system!r}")
    print("result " + json.dumps(result), flush=True)


async def _failover_client(addresses: list[str]) -> None:
    """Write with 1 in flight until stdin closes. ``kill <t>`` on stdin (t: ``time.monotonic``
    of the SIGKILL, a clock shared by every process of the machine) answers ``ok <seconds>``
    when the first write issued at or after ``t`` has succeeded."""
    from raftpy.client import Client

    commands = _hashmap_commands()
    loop = asyncio.get_running_loop()
    kills: list[float] = []
    stop = asyncio.Event()

    def read_stdin() -> None:
        for line in sys.stdin:
            parts = line.split()
            if len(parts) == 2 and parts[0] == "kill":
                loop.call_soon_threadsafe(kills.append, float(parts[1]))
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=read_stdin, daemon=True).start()
    client = Client(addresses, timeout=10.0)
    ready = False
    k = 0
    try:
        while not stop.is_set():
            t0 = time.monotonic()
            k += 1
            try:
                await client.propose(commands[k % KEYS])
            except Exception as exc:
                print(f"error {type(exc).__name__}: {exc}".replace("\n", " "), flush=True)
                continue
            t1 = time.monotonic()
            if not ready:
                ready = True
                print("ready", flush=True)
            if kills and t0 >= kills[0]:
                print(f"ok {t1 - kills.pop(0):.6f}", flush=True)
    finally:
        await client.close()


def _run_loop(coro: Awaitable[None]) -> None:
    """Run on uvloop when installed, as the example servers do."""

    async def wrapper() -> None:
        await coro

    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(wrapper())


# ----------------------------------------------------------------------------------------------
# PySyncObj node process: ``python -m benchmarks.bench_cluster syncobj-node <self> <peers>...``
# ----------------------------------------------------------------------------------------------


def _syncobj_node(self_address: str, partners: list[str]) -> None:
    """A PySyncObj member. Stdin commands: ``status`` -> ``status {"leader": bool, ...}``;
    ``load <inflight> <seconds>`` -> (on the leader) ``result {...}``, else ``result
    {"not_leader": true}``. Exits at EOF."""
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

    class KV(SyncObj):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(self_address, partners, SyncObjConf())
            self.data: dict[str, str] = {}

        @replicated  # type: ignore[untyped-decorator]
        def set(self, key: str, value: str) -> None:
            self.data[key] = value

    kv = KV()
    value = "v" * VALUE_BYTES
    keys = [f"key{k:05d}" for k in range(KEYS)]

    def load(inflight: int, seconds: float) -> dict[str, Any]:
        sem = threading.Semaphore(inflight)
        done: list[tuple[float, float]] = []
        errors: list[int] = []
        begin = time.perf_counter()
        w_start = begin + WARMUP
        w_end = w_start + seconds
        k = 0
        cpu0 = cpu1 = 0.0
        while True:
            now = time.perf_counter()
            if now >= w_end:
                break
            if not cpu0 and now >= w_start:
                cpu0 = time.process_time()
            if not sem.acquire(timeout=1.0):
                continue

            def callback(result: object, error: int, t0: float = now) -> None:
                t1 = time.perf_counter()
                if error == FAIL_REASON.SUCCESS:
                    done.append((t1, t1 - t0))
                else:
                    errors.append(error)
                sem.release()

            kv.set(keys[k % KEYS], value, callback=callback)
            k += 1
        cpu1 = time.process_time()
        for _ in range(inflight):  # wait for the stragglers
            sem.acquire(timeout=5.0)
        window = sorted(lat for end, lat in done if w_start <= end < w_end)
        return {
            "writes": len(window),
            "seconds": seconds,
            "writes_per_s": len(window) / seconds,
            "p50_ms": _pct(window, 0.5) * 1e3,
            "p99_ms": _pct(window, 0.99) * 1e3,
            "errors": len(errors),
            "client_cpu": (cpu1 - cpu0) / seconds,
        }

    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "status":
            status = kv.getStatus()
            leader = status.get("leader")
            info = {
                "ready": kv.isReady(),
                "leader": str(leader) if leader is not None else None,
                "self": self_address,
            }
            print("status " + json.dumps(info), flush=True)
        elif parts[0] == "load":
            if str(kv.getStatus().get("leader")) != self_address:
                print('result {"not_leader": true}', flush=True)
            else:
                print("result " + json.dumps(load(int(parts[1]), float(parts[2]))), flush=True)
    kv.destroy()


# ----------------------------------------------------------------------------------------------
# The parent: clusters, client runs, polls
# ----------------------------------------------------------------------------------------------


class _Child:
    """A child process with line-oriented stdin/stdout (asyncio), killed by :meth:`kill`."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, *args: str, module: str = "benchmarks.bench_cluster") -> _Child:
        """Run ``python -m module *args`` (this module's client modes by default)."""
        path = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            *args,
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        return cls(proc)

    async def line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not raw:
            raise RuntimeError(f"child exited (status {await self.proc.wait()})")
        return raw.decode().rstrip("\n")

    async def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def reap(self) -> None:
        self.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 10)


async def _run_load(
    args: list[str],
    timeout: float,
    on_mark: Callable[[str], None] | None = None,
    module: str = "benchmarks.bench_cluster",
) -> dict[str, Any]:
    """Run a load client process (``python -m module *args``) to completion; return its
    result."""
    child = await _Child.start(*args, module=module)
    try:
        deadline = time.monotonic() + timeout
        while True:
            line = await child.line(max(0.1, deadline - time.monotonic()))
            if line.startswith("mark ") and on_mark is not None:
                on_mark(line[5:])
            elif line.startswith("result "):
                result: dict[str, Any] = json.loads(line[7:])
                return result
    finally:
        await child.reap()


class _CpuMeter:
    """CPU use (in cores) of some processes between the client's ``mark start``/``end``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start: dict[str, float] = {}
        self.usage: dict[str, float] = {}
        self._t0 = 0.0

    def __call__(self, mark: str) -> None:
        now = time.monotonic()
        if mark == "start":
            self._t0 = now
            self.start = {name: _cpu_seconds(pid) for name, pid in self.pids.items()}
        elif mark == "end" and self.start:
            span = max(now - self._t0, 1e-9)
            self.usage = {
                name: (_cpu_seconds(pid) - self.start[name]) / span
                for name, pid in self.pids.items()
            }

    def describe(self, client_cpu: float) -> str:
        parts = [f"{name} {value:.2f}" for name, value in self.usage.items()]
        return "cpu (cores): " + ", ".join([*parts, f"client {client_cpu:.2f}"])


def _report(prefix: str, result: dict[str, Any]) -> dict[str, float]:
    return {
        f"{prefix}_writes_per_s": float(result["writes_per_s"]),
        f"{prefix}_p50_ms": float(result["p50_ms"]),
        f"{prefix}_p99_ms": float(result["p99_ms"]),
    }


def _line(title: str, result: dict[str, Any], load: str) -> str:
    return (
        f"  {title}: {result['writes_per_s']:,.0f} writes/s, p50 {result['p50_ms']:.3f} ms, "
        f"p99 {result['p99_ms']:.3f} ms ({result['writes']:,} writes in {result['seconds']:g} s, "
        f"{result['errors']} errors; {load})"
    )


def spawn_server(root: Path, i: int, port: int, args: list[str]) -> subprocess.Popen[bytes]:
    """Start hashmap server ``i`` (``args``: its member list and further options) with its data
    dir and log under ``root`` and the benchmark's timeouts; return once it listens."""
    log = open(root / f"node{i}.log", "ab")  # noqa: SIM115 - the child owns it
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "raftpy.examples.hashmap",
                "server",
                str(i),
                *args,
                "--data-dir",
                str(root / f"data{i}"),
                "--tick-ms",
                str(TICK_MS),
                "--election-ticks",
                str(ELECTION_TICKS),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RAFTPY_LOG": os.environ.get("RAFTPY_LOG", "info")},
        )
    finally:
        log.close()
    _wait_listening(port, proc, f"node {i}", 15)
    return proc


class _RaftCluster:
    """Three hashmap servers as processes, and a status client for the parent."""

    def __init__(self, root: Path, n: int = 3, tls_dir: Path | None = None) -> None:
        from raftpy.client import Client

        self.root = root
        self.tls_dir = tls_dir
        self.ids = list(range(1, n + 1))
        self.ports = dict(zip(self.ids, free_ports(n), strict=True))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.client = Client(
            self.addresses,
            timeout=2.0,
            connect_timeout=0.3,
            tls=tls_files(tls_dir, "client-bench"),
        )

    @property
    def addresses(self) -> list[str]:
        return [self.address(i) for i in self.ids]

    def address(self, i: int) -> str:
        return f"127.0.0.1:{self.ports[i]}"

    def start(self, i: int) -> None:
        members: list[str] = []
        for j in self.ids:
            members += [str(j), self.address(j)]
        self.procs[i] = spawn_server(self.root, i, self.ports[i], [*members, *self._tls_args(i)])

    def _tls_args(self, i: int) -> list[str]:
        if self.tls_dir is None:
            return []
        d = self.tls_dir
        return [
            "--tls-cert",
            str(d / f"node-{i}.pem"),
            "--tls-key",
            str(d / f"node-{i}-key.pem"),
            "--tls-ca",
            str(d / "ca.pem"),
        ]

    def kill(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGKILL)

    def stop_all(self) -> None:
        _kill_all(list(self.procs.values()))

    async def status(self, i: int, timeout: float = 0.5) -> NodeStatus | None:
        try:
            return await self.client.status(self.address(i), timeout=timeout)
        except Exception:
            return None

    async def statuses(self, ids: Sequence[int] | None = None) -> dict[int, NodeStatus]:
        chosen = self.ids if ids is None else ids
        found = await asyncio.gather(*(self.status(i) for i in chosen))
        return {i: s for i, s in zip(chosen, found, strict=True) if s is not None}

    async def stable_leader(self, timeout: float = 30.0) -> int:
        """Wait until every node is up, agrees on one leader and term, and has applied what
        the leader had committed when the wait began; return the leader's id."""
        deadline = time.monotonic() + timeout
        target: int | None = None
        while time.monotonic() < deadline:
            st = await self.statuses()
            if len(st) == len(self.ids):
                leaders = {s.leader for s in st.values()}
                terms = {s.term for s in st.values()}
                leader = next(iter(leaders))
                if len(leaders) == 1 and len(terms) == 1 and leader in st:
                    assert leader is not None
                    if target is None:
                        target = st[leader].commit or 0
                    if all((s.applied or 0) >= target for s in st.values()):
                        return leader
            await asyncio.sleep(0.05)
        raise RuntimeError(f"no stable leader within {timeout} s")

    async def close(self) -> None:
        await self.client.close()


async def _raftpy_suite(root: Path, out: dict[str, float]) -> None:
    single_s = env_float("RAFTPY_BENCH_SINGLE_SECONDS", 5.0)
    full_s = env_float("RAFTPY_BENCH_SECONDS", 15.0)
    trials = int(env_float("RAFTPY_BENCH_FAILOVER_TRIALS", 10))
    cluster = _RaftCluster(root)
    profile = LeaderProfile(root)
    try:
        for i in cluster.ids:
            cluster.start(i)
        leader = await cluster.stable_leader()
        pids = {f"node{i}{'*' if i == leader else ''}": cluster.procs[i].pid for i in cluster.ids}
        print(f"raftpy: 3 nodes up, leader node {leader} (* below); {load_text()}", flush=True)

        # (a) one request in flight
        meter = _CpuMeter(pids)
        load = load_text()
        args = ["load", "raftpy", "1", str(single_s), *cluster.addresses]
        result = await _run_load(args, single_s + 60, meter)
        print(_line("1 in flight", result, load), flush=True)
        print("    " + meter.describe(result["client_cpu"]), flush=True)
        out.update(_report("single", result))

        # (b) + (d): 256 in flight, watching terms and leaders
        meter = _CpuMeter(pids)

        before = await cluster.statuses()
        seen: list[dict[int, tuple[Any, Any]]] = []
        load = load_text()
        args = ["load", "raftpy", "256", str(full_s), *cluster.addresses]
        task = asyncio.ensure_future(_run_load(args, full_s + 60, meter))
        while not task.done():
            st = await cluster.statuses()
            seen.append({i: (s.term, s.leader) for i, s in st.items()})
            await asyncio.wait({task}, timeout=STATUS_POLL)
        result = task.result()
        after = await cluster.statuses()
        first_term = max((s.term or 0 for s in before.values()), default=0)
        last_term = max((s.term or 0 for s in after.values()), default=first_term)
        changes = 0  # the most leader changes any one node reported
        for i in cluster.ids:
            leaders = [snap[i][1] for snap in seen if i in snap and snap[i][1] is not None]
            changes = max(changes, sum(1 for a, b in itertools.pairwise(leaders) if a != b))
        print(_line("256 in flight", result, load), flush=True)
        print("    " + meter.describe(result["client_cpu"]), flush=True)
        print(
            f"    full load {full_s:g} s: term {first_term} -> {last_term}, "
            f"{changes} leader changes in {len(seen)} status polls, "
            f"{result['errors']} client errors {result['first_errors'][:2]}",
            flush=True,
        )
        out.update(_report("inflight256", result))
        leader_cores = meter.usage.get(f"node{leader}*")
        if leader_cores is not None and result["writes_per_s"] > 0:
            # What one committed write costs the leader's process, in CPU microseconds.
            out["inflight256_leader_cpu_us_per_write"] = leader_cores / result["writes_per_s"] * 1e6
        out["full_load_seconds"] = full_s
        out["full_load_term_increases"] = last_term - first_term
        out["full_load_leader_changes"] = changes
        out["full_load_client_errors"] = result["errors"]
        if profile.enabled:
            await _profile_leader(cluster, leader, profile, out)

        # (c) failover
        if trials > 0:
            await _failover(cluster, trials, out)
    finally:
        profile.close()
        cluster.stop_all()
        await cluster.close()


async def _profile_leader(
    cluster: _RaftCluster, leader: int, profile: LeaderProfile, out: dict[str, float]
) -> None:
    """(b') Where the leader's CPU goes (:mod:`benchmarks.cpu_split`), over a 256-in-flight
    window of its own: py-spy pauses the process it samples (for ``--native``), which can
    delay heartbeats past the election timeout, so it stays out of the figures and of the
    election check above."""
    seconds = env_float("RAFTPY_BENCH_PROFILE_SECONDS", 5.0)
    meter = _CpuMeter({"leader": cluster.procs[leader].pid})

    def on_mark(mark: str) -> None:
        meter(mark)
        if mark == "start":
            profile.start(cluster.procs[leader].pid, seconds)

    args = ["load", "raftpy", "256", str(seconds), *cluster.addresses]
    before = (await cluster.statuses([leader])).get(leader)
    result = await _run_load(args, seconds + 60, on_mark)
    after = (await cluster.statuses([leader])).get(leader)
    lost = None
    if before is None or after is None or after.role != "leader" or after.term != before.term:
        lost = f"node {leader} did not lead throughout the profiled window"
    profiled = meter.usage.get("leader", 0.0) / max(result["writes_per_s"], 1e-9) * 1e6
    print(
        f"    profiled window {seconds:g} s: {result['writes_per_s']:,.0f} writes/s, "
        f"leader {profiled:.1f} us per write",
        flush=True,
    )
    profile.report(out, meter.usage.get("leader"), lost)


async def _failover(cluster: _RaftCluster, trials: int, out: dict[str, float]) -> None:
    load = load_text()
    child = await _Child.start("failover", *cluster.addresses)
    times: list[float] = []
    elections: list[float] = []
    try:
        while (line := await child.line(30)) != "ready":
            pass
        for trial in range(trials):
            leader = await cluster.stable_leader()
            old_term = (await cluster.statuses([leader]))[leader].term or 0
            await asyncio.sleep(0.3)  # let the writer settle on the leader
            survivors = [i for i in cluster.ids if i != leader]
            t_kill = time.monotonic()
            cluster.kill(leader)
            await child.send(f"kill {t_kill!r}")
            new_leader_at = float("nan")
            ok: float | None = None
            line_task = asyncio.ensure_future(child.line(20))
            while time.monotonic() < t_kill + 20:
                if new_leader_at != new_leader_at:  # still NaN: poll the survivors
                    st = await cluster.statuses(survivors)
                    if any(s.role == "leader" and (s.term or 0) > old_term for s in st.values()):
                        new_leader_at = time.monotonic() - t_kill
                if ok is None and line_task.done():
                    line = line_task.result()
                    if line.startswith("ok "):
                        ok = float(line[3:])
                    else:  # an error line: the writer retries
                        line_task = asyncio.ensure_future(child.line(20))
                if ok is not None and new_leader_at == new_leader_at:
                    break
                if ok is None:
                    await asyncio.wait({line_task}, timeout=0.01)
                else:
                    await asyncio.sleep(0.01)
            line_task.cancel()
            if ok is None:
                raise RuntimeError(f"failover trial {trial + 1}: no successful write in 20 s")
            times.append(ok)
            elections.append(new_leader_at)
            print(
                f"  failover trial {trial + 1}: killed node {leader}; new leader after "
                f"{new_leader_at * 1e3:.0f} ms, next write done after {ok * 1e3:.0f} ms",
                flush=True,
            )
            cluster.procs[leader].wait(timeout=10)
            cluster.start(leader)
        await cluster.stable_leader()
    finally:
        await child.reap()
    out["failover_median_s"] = statistics.median(times)
    out["failover_max_s"] = max(times)
    known = [e for e in elections if e == e]
    if known:
        out["failover_new_leader_median_s"] = statistics.median(known)
    print(
        f"  failover over {trials} trials: median {statistics.median(times) * 1e3:.0f} ms, "
        f"max {max(times) * 1e3:.0f} ms (new leader: median "
        f"{statistics.median(known) * 1e3 if known else float('nan'):.0f} ms; {load})",
        flush=True,
    )


# -- peers -------------------------------------------------------------------------------------


async def _etcd_suite(root: Path, out: dict[str, float], seconds: float) -> None:
    exe = shutil.which("etcd")
    if exe is None:
        print("etcd: not installed (apt-get install etcd-server); skipped", flush=True)
        return
    ports = free_ports(6)
    client_ports, peer_ports = ports[:3], ports[3:]
    initial = ",".join(f"n{i}=http://127.0.0.1:{peer_ports[i]}" for i in range(3))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(3):
            log = open(root / f"etcd{i}.log", "ab")  # noqa: SIM115 - the child owns it
            try:
                procs.append(
                    subprocess.Popen(
                        [
                            exe,
                            "--name",
                            f"n{i}",
                            "--data-dir",
                            str(root / f"etcd{i}"),
                            "--listen-client-urls",
                            f"http://127.0.0.1:{client_ports[i]}",
                            "--advertise-client-urls",
                            f"http://127.0.0.1:{client_ports[i]}",
                            "--listen-peer-urls",
                            f"http://127.0.0.1:{peer_ports[i]}",
                            "--initial-advertise-peer-urls",
                            f"http://127.0.0.1:{peer_ports[i]}",
                            "--initial-cluster",
                            initial,
                            "--initial-cluster-state",
                            "new",
                            "--initial-cluster-token",
                            "raftpy-bench",
                            "--log-level",
                            "error",
                        ],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
            finally:
                log.close()
        for i in range(3):
            _wait_listening(client_ports[i], procs[i], f"etcd {i}", 15)
        leader_port = await _etcd_leader(client_ports, 30.0)
        pids = {
            f"etcd{i}{'*' if client_ports[i] == leader_port else ''}": p.pid
            for i, p in enumerate(procs)
        }
        print(f"etcd: 3 members up; {load_text()}", flush=True)
        address = f"127.0.0.1:{leader_port}"
        for prefix, inflight in (("etcd_single", 1), ("etcd_inflight256", 256)):
            meter = _CpuMeter(pids)
            load = load_text()
            result = await _run_load(
                ["load", "etcd", str(inflight), str(seconds), address], seconds + 60, meter
            )
            print(_line(f"{inflight} in flight", result, load), flush=True)
            print("    " + meter.describe(result["client_cpu"]), flush=True)
            out.update(_report(prefix, result))
    finally:
        _kill_all(procs)


async def _etcd_leader(ports: list[int], timeout: float) -> int:
    """The client port of the etcd leader (via ``/v3/maintenance/status``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for port in ports:
            conn = _HttpConnection("127.0.0.1", port)
            try:
                st = json.loads(
                    await asyncio.wait_for(conn.post("/v3/maintenance/status", b"{}"), 2)
                )
                if st.get("leader") and st["leader"] == st["header"]["member_id"]:
                    return port
            except (OSError, RuntimeError, TimeoutError, ValueError, asyncio.IncompleteReadError):
                pass
            finally:
                conn.close()
        await asyncio.sleep(0.1)
    raise RuntimeError(f"etcd elected no leader within {timeout} s")


async def _pysyncobj_suite(out: dict[str, float], seconds: float) -> None:
    if importlib.util.find_spec("pysyncobj") is None:
        print("pysyncobj: not installed (pip install pysyncobj); skipped", flush=True)
        return
    ports = free_ports(3)
    addresses = [f"127.0.0.1:{p}" for p in ports]
    nodes: list[_Child] = []
    try:
        for a in addresses:
            nodes.append(await _Child.start("syncobj-node", a, *[b for b in addresses if b != a]))
        leader: _Child | None = None
        deadline = time.monotonic() + 30
        while leader is None and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            for node, a in zip(nodes, addresses, strict=True):
                await node.send("status")
                st = json.loads((await node.line(5))[len("status ") :])
                if st["ready"] and st["leader"] == a:
                    leader = node
        if leader is None:
            raise RuntimeError("pysyncobj elected no leader within 30 s")
        pids = {f"syncobj{k}{'*' if n is leader else ''}": n.proc.pid for k, n in enumerate(nodes)}
        print(
            f"pysyncobj: 3 nodes up (load generated in the leader's process); {load_text()}",
            flush=True,
        )
        for prefix, inflight in (("pysyncobj_single", 1), ("pysyncobj_inflight256", 256)):
            meter = _CpuMeter(pids)
            load = load_text()
            await leader.send(f"load {inflight} {seconds}")
            await asyncio.sleep(WARMUP)
            meter("start")
            result = json.loads((await leader.line(seconds + 60))[len("result ") :])
            meter("end")
            if result.get("not_leader"):
                raise RuntimeError("the pysyncobj leader changed")
            print(_line(f"{inflight} in flight", result, load), flush=True)
            print("    " + meter.describe(0.0).replace(", client 0.00", ""), flush=True)
            out.update(_report(prefix, result))
    finally:
        for node in nodes:
            await node.reap()


async def _peer(name: str, suite: Awaitable[None]) -> None:
    try:
        await suite
    except Exception as exc:  # a peer that cannot run here is noted, not fatal
        print(f"{name}: could not run: {type(exc).__name__}: {exc}", flush=True)


SYSTEMS = ("raftpy", "etcd", "pysyncobj")


async def _suite(systems: Sequence[str] = SYSTEMS) -> dict[str, float]:
    out: dict[str, float] = {"loadavg_1m_start": os.getloadavg()[0]}
    with scratch_dir("raftpy-bench-cluster-") as root:
        if "raftpy" in systems:
            (root / "raftpy").mkdir()
            await _raftpy_suite(root / "raftpy", out)
        peers = os.environ.get("RAFTPY_BENCH_PEERS", "1") != "0"
        peer_s = env_float("RAFTPY_BENCH_PEER_SECONDS", 5.0)
        if "etcd" in systems and peers:
            await _peer("etcd", _etcd_suite(root, out, peer_s))
        if "pysyncobj" in systems and peers:
            await _peer("pysyncobj", _pysyncobj_suite(out, peer_s))
    out["loadavg_1m_end"] = os.getloadavg()[0]
    return out


def run() -> dict[str, float]:
    return asyncio.run(_suite())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_cluster")
    sub = parser.add_subparsers(dest="mode")
    p_load = sub.add_parser("load", help="(internal) a load client process")
    p_load.add_argument("system", choices=["raftpy", "etcd"])
    p_load.add_argument("inflight", type=int)
    p_load.add_argument("seconds", type=float)
    p_load.add_argument("addresses", nargs="+")
    p_load.add_argument("--tls-dir", help="a raftpy tls init directory: connect with TLS")
    p_fail = sub.add_parser("failover", help="(internal) the failover writer process")
    p_fail.add_argument("addresses", nargs="+")
    p_sync = sub.add_parser("syncobj-node", help="(internal) a PySyncObj member")
    p_sync.add_argument("self_address")
    p_sync.add_argument("partners", nargs="+")
    parser.add_argument(
        "--only", action="append", choices=SYSTEMS, help="run only these systems (repeatable)"
    )
    args = parser.parse_args(argv)
    if args.mode == "load":
        _run_loop(
            _load_client(args.system, args.inflight, args.seconds, args.addresses, args.tls_dir)
        )
    elif args.mode == "failover":
        _run_loop(_failover_client(args.addresses))
    elif args.mode == "syncobj-node":
        _syncobj_node(args.self_address, args.partners)
    else:
        for key, value in asyncio.run(_suite(args.only or SYSTEMS)).items():
            print(f"{key:36} {value:,.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
