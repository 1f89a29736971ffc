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
  per committed write, ``inflight256_leader_fsyncs_per_s`` how often its pipeline cycles (one
  fsync per append) and ``inflight256_leader_entries_per_fsync`` how many writes a cycle
  carries. This is also the full-load run of the spurious-election check: every
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

Measured in the same run, for comparison (each for ``RAFTPY_BENCH_PEER_SECONDS``, default 5 s,
per figure, with the same client load loop in a process of its own):

- ``floor_*``: the hardware floor, three processes with no Raft logic that replicate and
  fdatasync each batch as a good replicated log would (:mod:`benchmarks.floor`);
- ``etcd_*``: etcd 3.4, 3 members on loopback with their defaults (fsync on), driven over its
  native gRPC API (``grpcio``, the ``bench`` extra), and ``etcd_http_*`` the same through its
  HTTP/JSON gateway, for reference only (:mod:`benchmarks.peer_etcd`);
- ``pysyncobj_nofsync_*``: PySyncObj, 3 processes with its defaults, which write nothing to
  disk, the load generated inside the leader's process (:mod:`benchmarks.peer_pysyncobj`).

The floor and etcd start before raftpy's cluster and stay up, idle (etcd's three members then
use about 0.04 of a core in all), until raftpy's failover trials begin: each of their 1- and
256-in-flight figures is measured right after raftpy's, since this machine's speed drifts
from minute to minute. PySyncObj runs last. ``RAFTPY_BENCH_PEERS=0`` skips etcd and
PySyncObj; each is skipped with a note when it is not installed. The throughput and latency
targets are ratios to these figures (``RATIOS``):
``ratio_inflight256_vs_etcd`` (raftpy's writes/s at 256 in flight over etcd's, >= 6),
``ratio_inflight256_vs_floor`` (over the floor's, >= 0.6), ``ratio_single_p50_vs_etcd``
(raftpy's single-writer p50 over etcd's, <= 0.33), ``ratio_single_p50_vs_floor`` (over the
floor's, <= 2), ``ratio_single_p99_vs_p50`` (raftpy's single-writer p99 over its p50, <= 3);
``ratio_inflight256_vs_pysyncobj_nofsync`` has no target. A ratio whose figures this run does
not have (a peer absent or skipped) is not reported, with a printed note.

Alone: ``python -m benchmarks.bench_cluster [--only raftpy|floor|etcd|pysyncobj]...`` prints
the same sections and the results (without writing ``bench-results/``).

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
import contextlib
import itertools
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.cpu_split import LeaderProfile
from benchmarks.floor import floor_cluster
from benchmarks.loadgen import (
    KEYS,
    VALUE_BYTES,
    WARMUP,
    Measure,
    _Child,
    _CpuMeter,
    _drive,
    _kill_all,
    _line,
    _report,
    _run_load,
    _run_loop,
    _wait_listening,
)
from benchmarks.machine import compile_raftpy, env_float, free_ports, load_text, scratch_dir
from benchmarks.peer_etcd import etcd_cluster
from benchmarks.peer_pysyncobj import pysyncobj_suite

if TYPE_CHECKING:
    from raftpy.node.status import NodeStatus

TARGETS: dict[str, tuple[str, float]] = {
    # Throughput and latency as ratios to what was measured in the same run (see RATIOS).
    "ratio_inflight256_vs_etcd": (">=", 6.0),
    "ratio_inflight256_vs_floor": (">=", 0.6),
    "ratio_single_p50_vs_etcd": ("<=", 0.33),
    "ratio_single_p50_vs_floor": ("<=", 2.0),
    "ratio_single_p99_vs_p50": ("<=", 3.0),
    "single_p99_ms": ("<=", 3.0),
    "failover_median_s": ("<=", 0.5),
    "full_load_leader_changes": ("<=", 0),
    "full_load_term_increases": ("<=", 0),
}

RATIOS: dict[str, tuple[str, str]] = {
    # result name -> (numerator, denominator), both results of this run
    "ratio_inflight256_vs_etcd": ("inflight256_writes_per_s", "etcd_inflight256_writes_per_s"),
    "ratio_inflight256_vs_floor": ("inflight256_writes_per_s", "floor_inflight256_writes_per_s"),
    "ratio_single_p50_vs_etcd": ("single_p50_ms", "etcd_single_p50_ms"),
    "ratio_single_p50_vs_floor": ("single_p50_ms", "floor_single_p50_ms"),
    "ratio_single_p99_vs_p50": ("single_p99_ms", "single_p50_ms"),
    # No target: the hardware's own tail (the disk's slow fdatasyncs), for comparison with the
    # one above. Measured here: 1.9 and 7.3 in two runs a minute apart on 2026-12-07.
    "ratio_floor_single_p99_vs_p50": ("floor_single_p99_ms", "floor_single_p50_ms"),
    # No target: PySyncObj writes nothing to disk (see benchmarks/peer_pysyncobj.py).
    "ratio_inflight256_vs_pysyncobj_nofsync": (
        "inflight256_writes_per_s",
        "pysyncobj_nofsync_inflight256_writes_per_s",
    ),
}

STATUS_POLL = 0.5
TICK_MS = 20  # the server defaults, spelled out
ELECTION_TICKS = 10


# ----------------------------------------------------------------------------------------------
# The client process: ``python -m benchmarks.bench_cluster load|failover ...``
# ----------------------------------------------------------------------------------------------


def _value() -> str:
    return "v" * (VALUE_BYTES - 2)  # its JSON text (with the quotes) is VALUE_BYTES long


def _hashmap_commands() -> list[bytes]:
    import msgspec

    text = json.dumps(_value())
    return [msgspec.msgpack.encode(("put", f"key{k:05d}", text)) for k in range(KEYS)]


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


def spawn_server(root: Path, i: int, port: int, args: list[str]) -> subprocess.Popen[bytes]:
    """Start hashmap server ``i`` (``args``: its member list and further options) with its data
    dir and log under ``root`` and the benchmark's timeouts; return once it listens."""
    compile_raftpy()  # its start-up, as in a restart, without compiling raftpy's sources
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


async def _raftpy_suite(
    root: Path, out: dict[str, float], compare: Callable[[int], Awaitable[None]]
) -> None:
    """raftpy's figures into ``out``; ``compare(inflight)`` runs right after each of the
    1- and 256-in-flight figures (the peers' same figure, measured close in time)."""
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
        print(_line("raftpy, 1 in flight", result, load), flush=True)
        print("    " + meter.describe(result["client_cpu"]), flush=True)
        out.update(_report("single", result))
        await compare(1)

        # (b) + (d): 256 in flight, watching terms and leaders
        meter = _CpuMeter(pids)
        marks: dict[str, float] = {}

        def on_mark(mark: str) -> None:
            meter(mark)
            marks[mark] = time.monotonic()

        before = await cluster.statuses()
        seen: list[dict[int, tuple[Any, Any]]] = []
        syncs: list[tuple[float, int, int]] = []  # (when, the leader's fsyncs, its applies)
        load = load_text()
        args = ["load", "raftpy", "256", str(full_s), *cluster.addresses]
        task = asyncio.ensure_future(_run_load(args, full_s + 60, on_mark))
        while not task.done():
            st = await cluster.statuses()
            seen.append({i: (s.term, s.leader) for i, s in st.items()})
            if leader in st and "start" in marks and "end" not in marks:
                syncs.append((time.monotonic(), st[leader].stats.syncs, st[leader].stats.applied))
            await asyncio.wait({task}, timeout=STATUS_POLL)
        result = task.result()
        after = await cluster.statuses()
        first_term = max((s.term or 0 for s in before.values()), default=0)
        last_term = max((s.term or 0 for s in after.values()), default=first_term)
        changes = 0  # the most leader changes any one node reported
        for i in cluster.ids:
            leaders = [snap[i][1] for snap in seen if i in snap and snap[i][1] is not None]
            changes = max(changes, sum(1 for a, b in itertools.pairwise(leaders) if a != b))
        print(_line("raftpy, 256 in flight", result, load), flush=True)
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
        if len(syncs) >= 2 and syncs[-1][1] > syncs[0][1]:
            # One fsync per loop pass that appended: how often the pipeline cycles, and how
            # many writes each cycle carries (between the first and last status poll inside
            # the measured window).
            (t0, s0, a0), (t1, s1, a1) = syncs[0], syncs[-1]
            out["inflight256_leader_fsyncs_per_s"] = (s1 - s0) / (t1 - t0)
            out["inflight256_leader_entries_per_fsync"] = (a1 - a0) / (s1 - s0)
            print(
                f"    leader: {(s1 - s0) / (t1 - t0):.1f} fsyncs/s, "
                f"{(a1 - a0) / (s1 - s0):.1f} entries applied per fsync",
                flush=True,
            )
        out["full_load_seconds"] = full_s
        out["full_load_term_increases"] = last_term - first_term
        out["full_load_leader_changes"] = changes
        out["full_load_client_errors"] = result["errors"]
        if profile.enabled:
            await _profile_leader(cluster, leader, profile, out)

        await compare(256)

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


# -- peers (benchmarks/peer_etcd.py, benchmarks/peer_pysyncobj.py) -----------------------------


async def _peer(name: str, suite: Awaitable[None]) -> None:
    try:
        await suite
    except Exception as exc:  # a peer that cannot run here is noted, not fatal
        print(f"{name}: could not run: {type(exc).__name__}: {exc}", flush=True)


async def _start(
    name: str,
    stack: contextlib.AsyncExitStack,
    cluster: AbstractAsyncContextManager[Measure | None],
) -> Measure | None:
    """Enter ``cluster`` on ``stack``; its measuring function, or ``None`` (noted) when it
    could not start or is not installed."""
    try:
        measure: Measure | None = await stack.enter_async_context(cluster)
    except Exception as exc:  # a peer that cannot run here is noted, not fatal
        print(f"{name}: could not start: {type(exc).__name__}: {exc}", flush=True)
        return None
    return measure


def ratios(out: dict[str, float]) -> dict[str, float]:
    """The ``RATIOS`` whose two figures ``out`` holds (finite, the denominator not 0); a note
    is printed for each of the others."""
    found: dict[str, float] = {}
    for name, (num, den) in RATIOS.items():
        a, b = out.get(num), out.get(den)
        if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b == 0:
            missing = [key for key, v in ((num, a), (den, b)) if v is None]
            why = f"no {' or '.join(missing)}" if missing else f"{num} / {den} is not a number"
            print(f"{name}: not reported ({why} in this run)", flush=True)
            continue
        found[name] = a / b
    return found


SYSTEMS = ("raftpy", "floor", "etcd", "pysyncobj")


async def _suite(systems: Sequence[str] = SYSTEMS) -> dict[str, float]:
    out: dict[str, float] = {"loadavg_1m_start": os.getloadavg()[0]}
    peers = os.environ.get("RAFTPY_BENCH_PEERS", "1") != "0"
    peer_s = env_float("RAFTPY_BENCH_PEER_SECONDS", 5.0)
    with scratch_dir("raftpy-bench-cluster-") as root:
        # The floor and etcd run beside raftpy's cluster, idle while it is measured, so that
        # each of their figures is taken right after raftpy's (this machine's speed drifts
        # from minute to minute); they are stopped before raftpy's failover trials.
        async with contextlib.AsyncExitStack() as stack:
            clusters: list[tuple[str, AbstractAsyncContextManager[Measure | None]]] = []
            if "floor" in systems:
                (root / "floor").mkdir()
                clusters.append(("floor", floor_cluster(root / "floor")))
            if "etcd" in systems and peers:
                clusters.append(("etcd", etcd_cluster(root)))
            measures: list[tuple[str, Measure]] = []
            for name, cluster in clusters:
                if (measure := await _start(name, stack, cluster)) is not None:
                    measures.append((name, measure))

            async def compare(inflight: int) -> None:
                for name, measure in measures:
                    await _peer(name, measure(inflight, peer_s, out))
                if inflight == 256:  # the last figure: stop them
                    await stack.aclose()

            if "raftpy" in systems:
                (root / "raftpy").mkdir()
                await _raftpy_suite(root / "raftpy", out, compare)
            else:
                await compare(1)
                await compare(256)
        if "pysyncobj" in systems and peers:
            await _peer("pysyncobj", pysyncobj_suite(out, peer_s))
    out.update(ratios(out))
    out["loadavg_1m_end"] = os.getloadavg()[0]
    return out


def run() -> dict[str, float]:
    return asyncio.run(_suite())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_cluster")
    sub = parser.add_subparsers(dest="mode")
    p_load = sub.add_parser("load", help="(internal) a load client process")
    p_load.add_argument("system", choices=["raftpy"])
    p_load.add_argument("inflight", type=int)
    p_load.add_argument("seconds", type=float)
    p_load.add_argument("addresses", nargs="+")
    p_load.add_argument("--tls-dir", help="a raftpy tls init directory: connect with TLS")
    p_fail = sub.add_parser("failover", help="(internal) the failover writer process")
    p_fail.add_argument("addresses", nargs="+")
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
    else:
        for key, value in asyncio.run(_suite(args.only or SYSTEMS)).items():
            print(f"{key:36} {value:,.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
