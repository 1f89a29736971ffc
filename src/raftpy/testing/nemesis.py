"""Jepsen-style verification of a real raftpy cluster: a fault proxy, process control, nemesis
schedules, a concurrent workload and the checks that judge a run (issue 6, DESIGN §7).

The pieces, usable on their own or together through :func:`run_jepsen` (and ``raftpy jepsen``):

:class:`FaultProxy`
    An asyncio TCP proxy (no root needed) with one listening port per ordered pair of nodes.
    Node *i* listens on its real port; the member list it is started with names *i* at that
    real address and every other member *j* at the proxy port of the link (i, j). Because a
    node dials each peer for its own outbound messages (see :mod:`raftpy.transport.tcp`), every
    message from *i* to *j* crosses link (i, j), and the proxy can block, delay and drop each
    direction on its own. This needs no change to the server command line: each server simply
    gets its own member list (the addresses in it are only used to dial; members are known to
    each other by id). The proxy understands the framing (a 4-byte length before each frame),
    so it drops whole messages, never a stream's bytes in the middle of a frame; the first frame
    in each direction (the handshake) is never dropped. A connection opened while its link is
    blocked is swallowed (accepted and never answered), as a partition swallows a SYN.
:class:`NodeProcess` / :class:`Cluster`
    Server processes of ``python -m raftpy.examples.hashmap server ...`` on 127.0.0.1, each with
    its own data dir and log file: start, stop, SIGKILL, restart, SIGSTOP, SIGCONT; the leader
    found from the nodes' status. Every process is killed when the cluster is closed (and, as a
    last resort, at interpreter exit).
:class:`Nemesis`
    Faults chosen from a seeded random generator: partitions (random halves, the leader
    isolated, a bridge, and a "zombie" leader: paused, cut off, then resumed while still cut
    off), SIGKILL (random nodes or the leader) and restart, SIGSTOP (random nodes or the leader)
    and SIGCONT, and a flaky network (delays and drops on every link). See :data:`NEMESES`.
:func:`run_jepsen`
    Starts a cluster, runs ``clients`` concurrent clients doing read / write / cas on ``keys``
    keys with small integer values for ``seconds`` while the nemesis alternates quiet periods
    and faults, records the history (DESIGN §7) with
    :class:`~raftpy.testing.history.HistoryRecorder`, then heals everything and checks that
    (1) the history is linearizable, (2) no acknowledged write was lost (a final read of every
    key, through the leader, is part of the checked history), (3) a write succeeds within 5 s of
    healing, and that no node exited on its own. It writes ``history.jsonl``, ``timeline.html``
    (throughput over time with the fault windows; plus ``violation.html``, the checker's
    timeline of the failing key, when there is one), ``summary.txt`` and the nodes' logs.

Clients live on nodes, as in Jepsen: worker *w* has home node ``w % nodes + 1``; it reaches its
home node directly and the other nodes through the proxy links of its home node, so a partition
cuts clients off along with their node (``client_routing="direct"`` connects every client to
every node directly instead). A definite failure (``ClusterUnavailableError``,
``NotLeaderError``, ``ProposalDropped``; or any failed read, which changes nothing) is dropped
from the history; any other failure of a write or cas is indeterminate (``"unknown": true``),
after which the worker continues under a new client id, as a Jepsen process does after a crash.
After any failure the worker also opens a fresh client connection, so that it looks for the
leader again instead of insisting on a node that stopped answering.

Keys are retired after ``ops_per_key`` operations and replaced by fresh ones (Jepsen's
"independent keys"), which keeps each key's history small enough for the checker even when
faults leave many operations indeterminate.
"""

from __future__ import annotations

import asyncio
import atexit
import bisect
import contextlib
import html
import json
import logging
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias

import msgspec

from raftpy.client import Client
from raftpy.errors import ClusterUnavailableError, NotLeaderError, ProposalDropped
from raftpy.testing.history import HistoryRecorder, Operation, OpKind, Value, write_history
from raftpy.testing.linearizability import CheckResult, Verdict, check, render_html
from raftpy.transport.address import free_port

__all__ = [
    "FAULTS",
    "NEMESES",
    "Cluster",
    "FaultProxy",
    "FaultWindow",
    "JepsenCheck",
    "JepsenConfig",
    "JepsenResult",
    "LinkFaults",
    "LinkStats",
    "Nemesis",
    "NodeProcess",
    "NodeProcessError",
    "free_port",
    "judge_history",
    "run_jepsen",
]

log = logging.getLogger("raftpy.testing.nemesis")

HOST: Final = "127.0.0.1"
RECOVERY_LIMIT: Final = 5.0
"""Seconds after the start of healing within which a write must succeed (check 3)."""
HEALED_LABEL: Final = "healed"
UNSAFE_STALE_READS_ENV: Final = "RAFTPY_UNSAFE_STALE_READS"
"""Set to ``1`` in a server's environment: a node that believes it leads answers linearizable
reads without confirming leadership (TEST ONLY; ``JepsenConfig.unsafe_stale_reads``)."""

_READ_CHUNK: Final = 1 << 16
_DELAY_QUEUE_BYTES: Final = 16 << 20  # per direction of a connection; more is dropped
_DIAL_TIMEOUT: Final = 2.0

# --- The fault proxy ------------------------------------------------------------------------


@dataclass
class LinkFaults:
    """The faults of one direction of one link (messages from ``src`` to ``dst``).

    ``blocked``: every message is dropped and new connections are swallowed. ``delay`` (plus a
    uniform ``[0, jitter)``) seconds are added to each message, order kept (as TCP keeps it).
    ``drop``: the probability that a message is lost.
    """

    blocked: bool = False
    delay: float = 0.0
    jitter: float = 0.0
    drop: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.blocked and self.delay <= 0 and self.jitter <= 0 and self.drop <= 0


@dataclass
class LinkStats:
    """What crossed one direction of one link."""

    connections: int = 0
    swallowed: int = 0
    refused: int = 0
    forwarded: int = 0
    dropped: int = 0
    bytes: int = 0


@dataclass
class _Link:
    src: int
    dst: int
    faults: LinkFaults = field(default_factory=LinkFaults)
    stats: LinkStats = field(default_factory=LinkStats)
    port: int = 0


class _Pump:
    """Copies frames from ``reader`` to ``writer`` under the faults of ``link``."""

    def __init__(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        rng: random.Random,
    ) -> None:
        self._link = link
        self._reader = reader
        self._writer = writer
        self._rng = rng
        self._queue: deque[tuple[float, bytes]] = deque()
        self._queued_bytes = 0
        self._last_release = 0.0
        self._sender: asyncio.Task[None] | None = None

    async def run(self) -> None:
        buf = bytearray()
        first = True
        link = self._link
        stats = link.stats
        rng = self._rng
        try:
            while True:
                data = await self._reader.read(_READ_CHUNK)
                if not data:
                    break
                buf += data
                out = bytearray()
                pos = 0
                size = len(buf)
                faults = link.faults
                while size - pos >= 4:
                    end = pos + 4 + int.from_bytes(buf[pos : pos + 4], "big")
                    if end > size:
                        break
                    if first:  # the handshake always passes
                        first = False
                        keep = True
                    elif faults.blocked:
                        keep = False
                    else:
                        keep = not (faults.drop > 0 and rng.random() < faults.drop)
                    if keep:
                        out += buf[pos:end]
                        stats.forwarded += 1
                    else:
                        stats.dropped += 1
                    pos = end
                if pos:
                    del buf[:pos]
                if out:
                    stats.bytes += len(out)
                    await self._send(bytes(out), faults)
        finally:
            if self._sender is not None:
                self._sender.cancel()

    async def _send(self, data: bytes, faults: LinkFaults) -> None:
        delay = faults.delay
        if faults.jitter > 0:
            delay += self._rng.random() * faults.jitter
        if delay <= 0 and not self._queue:
            self._writer.write(data)
            await self._writer.drain()
            return
        if self._queued_bytes + len(data) > _DELAY_QUEUE_BYTES:
            self._link.stats.dropped += 1  # a congested slow link loses what does not fit
            return
        loop = asyncio.get_running_loop()
        release = max(self._last_release, loop.time() + delay)
        self._last_release = release
        self._queue.append((release, data))
        self._queued_bytes += len(data)
        if self._sender is None or self._sender.done():
            self._sender = loop.create_task(self._drain_queue())

    async def _drain_queue(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):
            while self._queue:
                release, data = self._queue[0]
                wait = release - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._queue.popleft()
                self._queued_bytes -= len(data)
                self._writer.write(data)
                await self._writer.drain()


class FaultProxy:
    """A proxy with one port per ordered pair of nodes, to block, delay and drop each
    direction of each link (see the module docstring).

    ``nodes``: the member ids. Call :meth:`start` (binds the proxy ports), then
    :meth:`set_target` for every node (where the node really listens), then hand each node
    :meth:`member_addresses` as its member list. A connection accepted on the port of link
    (a, b) is dialed on to node b; frames from the dialer to b obey the faults of (a, b), the
    frames coming back obey those of (b, a).
    """

    def __init__(self, nodes: Iterable[int], *, host: str = HOST, seed: int | None = None):
        self.nodes = sorted(set(nodes))
        if len(self.nodes) < 1:
            raise ValueError("a proxy needs at least one node")
        self.host = host
        self._rng = random.Random(seed)
        self._links: dict[tuple[int, int], _Link] = {
            (a, b): _Link(a, b) for a in self.nodes for b in self.nodes if a != b
        }
        self._targets: dict[int, tuple[str, int]] = {}
        self._servers: list[asyncio.Server] = []
        self._handlers: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._started = False

    async def start(self) -> None:
        """Bind a port for every link (chosen by the kernel)."""
        if self._started:
            raise RuntimeError("the proxy is already started")
        self._started = True
        for link in self._links.values():

            async def handle(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link = link
            ) -> None:
                await self._handle(link, reader, writer)

            server = await asyncio.start_server(handle, self.host, 0)
            self._servers.append(server)
            link.port = int(server.sockets[0].getsockname()[1])

    def set_target(self, node: int, host: str, port: int) -> None:
        """Where ``node`` really listens (connections to it are dialed on there)."""
        if node not in self.nodes:
            raise KeyError(f"node {node} is not a member")
        self._targets[node] = (host, port)

    def address(self, src: int, dst: int) -> str:
        """The address at which ``src`` (or a client living on ``src``) dials ``dst``."""
        link = self._links[(src, dst)]
        if not link.port:
            raise RuntimeError("the proxy is not started")
        return f"{self.host}:{link.port}"

    def member_addresses(self, node: int) -> dict[int, str]:
        """The member list to start ``node`` with: itself at its real address, every other
        member at the proxy port of the link from ``node`` to it."""
        host, port = self._targets[node]
        members = {node: f"{host}:{port}"}
        for other in self.nodes:
            if other != node:
                members[other] = self.address(node, other)
        return members

    # -- faults ------------------------------------------------------------------------------

    def faults(self, src: int, dst: int) -> LinkFaults:
        """The faults of the direction ``src`` -> ``dst`` (a live object; changes apply to the
        next message)."""
        return self._links[(src, dst)].faults

    def set_faults(
        self,
        src: int,
        dst: int,
        *,
        blocked: bool | None = None,
        delay: float | None = None,
        jitter: float | None = None,
        drop: float | None = None,
    ) -> None:
        """Change some faults of the direction ``src`` -> ``dst``."""
        f = self._links[(src, dst)].faults
        if blocked is not None:
            f.blocked = blocked
        if delay is not None:
            f.delay = max(0.0, delay)
        if jitter is not None:
            f.jitter = max(0.0, jitter)
        if drop is not None:
            if not 0.0 <= drop <= 1.0:
                raise ValueError(f"drop must be a probability, got {drop}")
            f.drop = drop

    def block(self, src: int, dst: int) -> None:
        """Drop every message from ``src`` to ``dst`` (one direction)."""
        self._links[(src, dst)].faults.blocked = True

    def unblock(self, src: int, dst: int) -> None:
        self._links[(src, dst)].faults.blocked = False

    def partition(self, groups: Sequence[Iterable[int]]) -> None:
        """Cut the network into ``groups``: messages cross no group boundary, either way.
        A node in no group is cut off from every other node. Replaces earlier blocks."""
        side: dict[int, int] = {}
        for k, group in enumerate(groups):
            for node in group:
                if node in side:
                    raise ValueError(f"node {node} is in two groups")
                if node not in self.nodes:
                    raise ValueError(f"node {node} is not a member")
                side[node] = k
        for (a, b), link in self._links.items():
            sa, sb = side.get(a, -1 - a), side.get(b, -1 - b)
            link.faults.blocked = sa != sb

    def isolate(self, node: int) -> None:
        """Cut ``node`` off from every other node (both directions)."""
        self.partition([[n for n in self.nodes if n != node]])

    def heal(self) -> None:
        """Remove every fault of every link."""
        for link in self._links.values():
            link.faults = LinkFaults()

    @property
    def healthy(self) -> bool:
        return all(link.faults.clean for link in self._links.values())

    def stats(self) -> dict[tuple[int, int], LinkStats]:
        """Per-direction counters, by (src, dst)."""
        return {key: link.stats for key, link in self._links.items()}

    # -- connections -------------------------------------------------------------------------

    async def _handle(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self._writers.add(writer)
        link.stats.connections += 1
        back = self._links[(link.dst, link.src)]
        up_writer: asyncio.StreamWriter | None = None
        try:
            if link.faults.blocked or back.faults.blocked:
                # A partition swallows the connection attempt: accept, never answer.
                link.stats.swallowed += 1
                while await reader.read(_READ_CHUNK):
                    pass
                return
            target = self._targets.get(link.dst)
            if target is None:
                link.stats.refused += 1
                return
            try:
                up_reader, upstream = await asyncio.wait_for(
                    asyncio.open_connection(*target), _DIAL_TIMEOUT
                )
            except (OSError, TimeoutError):
                link.stats.refused += 1  # the node is down: the dialer sees a closed socket
                return
            up_writer = upstream
            self._writers.add(upstream)
            tasks = [
                asyncio.ensure_future(_Pump(link, reader, upstream, self._rng).run()),
                asyncio.ensure_future(_Pump(back, up_reader, writer, self._rng).run()),
            ]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    self._writers.discard(w)
                    w.transport.abort()
            if task is not None:
                self._handlers.discard(task)

    async def close(self) -> None:
        """Stop listening and cut every connection."""
        for server in self._servers:
            server.close()
        for w in list(self._writers):
            w.transport.abort()
        for t in list(self._handlers):
            t.cancel()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=2.0)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)
        self._servers.clear()


# --- Processes ------------------------------------------------------------------------------

_LIVE_PROCESSES: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:  # pragma: no cover - last resort
    for proc in list(_LIVE_PROCESSES):
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait(timeout=5)
    _LIVE_PROCESSES.clear()


class NodeProcessError(RuntimeError):
    """A server process did not start (it exited, or never listened in time)."""


class NodeProcess:
    """One server process: ``argv`` started with its output appended to ``log_path``.

    ``expected_down`` is true while the process is not running because the harness wants it so
    (before the first start, after :meth:`kill` or :meth:`stop`); a process that is not
    running while it is false died on its own (see :meth:`Cluster.check_exits`).
    """

    def __init__(
        self,
        node_id: int,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path,
        host: str,
        port: int,
    ) -> None:
        self.node_id = node_id
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.host = host
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.expected_down = True
        self.starts = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the process (it must not be running); :meth:`wait_ready` waits for it."""
        if self.running:
            raise NodeProcessError(f"node {self.node_id} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            out.write(f"--- harness: starting node {self.node_id}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        _LIVE_PROCESSES.add(self.proc)
        self.paused = False
        self.expected_down = False
        self.starts += 1

    async def wait_ready(self, timeout: float = 15.0) -> None:
        """Wait until the process accepts connections on its port; raises
        :class:`NodeProcessError` if it exits or does not listen within ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            proc = self.proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise NodeProcessError(
                    f"node {self.node_id} exited with status {code}:\n{self.log_tail()}"
                )
            try:
                _, w = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 0.5)
            except (OSError, TimeoutError):
                if loop.time() >= deadline:
                    raise NodeProcessError(
                        f"node {self.node_id} did not listen on {self.address} within "
                        f"{timeout} s:\n{self.log_tail()}"
                    ) from None
                await asyncio.sleep(0.02)
                continue
            w.transport.abort()
            return

    def pause(self) -> None:
        """SIGSTOP."""
        if self.running and self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        """SIGCONT."""
        if self.running and self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    async def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL and wait for the process to be gone."""
        self.expected_down = True
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
        await self._reap(timeout)
        self.paused = False

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (after SIGCONT if paused); SIGKILL if it has not exited within ``timeout``."""
        self.expected_down = True
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
            try:
                await self._reap(timeout)
            except NodeProcessError:
                await self.kill(timeout)
        self.paused = False

    async def restart(self, timeout: float = 15.0) -> None:
        """Kill the process if it runs, start it again and wait until it listens."""
        await self.kill()
        self.start()
        await self.wait_ready(timeout)

    async def _reap(self, timeout: float) -> None:
        proc = self.proc
        if proc is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while proc.poll() is None:
            if loop.time() >= deadline:
                raise NodeProcessError(f"node {self.node_id} did not exit within {timeout} s")
            await asyncio.sleep(0.005)
        _LIVE_PROCESSES.discard(proc)

    def log_tail(self, limit: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""


class Cluster:
    """``n`` server processes (ids 1..n) of a DESIGN §5 example behind a :class:`FaultProxy`.

    ``workdir`` holds the data dirs; ``log_dir`` (default ``workdir``) the logs
    ``node<i>.log``. ``module``: the server's module (``python -m <module> server ...``).
    ``env``: extra environment for the servers; ``server_args``: extra server options (for
    example ``("--snapshot-entries", "300")``). Use as ``async with Cluster(...) as c:``, or
    call :meth:`start` and :meth:`close` (which kills every process, also after a failure).
    """

    def __init__(
        self,
        n: int,
        workdir: Path,
        *,
        log_dir: Path | None = None,
        module: str = "raftpy.examples.hashmap",
        tick_ms: float = 20.0,
        election_ticks: int = 10,
        env: Mapping[str, str] | None = None,
        host: str = HOST,
        python: str = sys.executable,
        seed: int | None = None,
        server_args: Sequence[str] = (),
    ) -> None:
        if n < 1:
            raise ValueError(f"a cluster needs at least one node, got {n}")
        self.server_args = list(server_args)
        self.ids = list(range(1, n + 1))
        self.workdir = Path(workdir)
        self.log_dir = Path(log_dir) if log_dir is not None else self.workdir
        self.module = module
        self.tick_ms = tick_ms
        self.election_ticks = election_ticks
        self.host = host
        self.python = python
        self.extra_env = dict(env or {})
        self.proxy = FaultProxy(self.ids, host=host, seed=seed)
        self.nodes: dict[int, NodeProcess] = {}
        self.unexpected_exits: list[tuple[int, int]] = []
        self.problems: list[str] = []
        """What went wrong with the servers themselves: exits nobody asked for, restarts that
        never listened. Each is a finding of the run, not a failure of the harness."""
        self._rng = random.Random(seed)
        self._status_client: Client | None = None

    async def start(self, timeout: float = 30.0) -> None:
        """Bind the proxy, start every server and wait until all listen."""
        await self.proxy.start()
        env = {**os.environ, "RAFTPY_LOG": os.environ.get("RAFTPY_LOG", "info")}
        env.update(self.extra_env)
        for i in self.ids:
            # Chosen after the proxy bound its ports, so no proxy port can be chosen here.
            port = free_port(self.host, self._rng)
            self.proxy.set_target(i, self.host, port)
            self.nodes[i] = NodeProcess(
                i,
                [],
                env=env,
                log_path=self.log_dir / f"node{i}.log",
                host=self.host,
                port=port,
            )
        for i in self.ids:
            members: list[str] = []
            for j, address in sorted(self.proxy.member_addresses(i).items()):
                members += [str(j), address]
            self.nodes[i].argv = [
                self.python,
                "-m",
                self.module,
                "server",
                str(i),
                *members,
                "--data-dir",
                str(self.workdir / f"data{i}"),
                "--tick-ms",
                f"{self.tick_ms:g}",
                "--election-ticks",
                str(self.election_ticks),
                *self.server_args,
            ]
        for node in self.nodes.values():
            node.start()
        await asyncio.gather(*(node.wait_ready(timeout) for node in self.nodes.values()))

    def address(self, i: int) -> str:
        """Where node ``i`` really listens."""
        return self.nodes[i].address

    @property
    def addresses(self) -> list[str]:
        return [self.address(i) for i in self.ids]

    def client_addresses(self, home: int | None) -> list[str]:
        """Addresses for a client living on node ``home``: its home directly, every other node
        through the proxy link from ``home`` (so partitions cut the client off with its home).
        ``None``: every node directly."""
        if home is None:
            return self.addresses
        return [self.address(home)] + [self.proxy.address(home, j) for j in self.ids if j != home]

    # -- process control ---------------------------------------------------------------------

    async def kill(self, i: int) -> None:
        await self.nodes[i].kill()

    async def stop(self, i: int) -> None:
        await self.nodes[i].stop()

    async def restart(self, i: int, timeout: float = 15.0) -> None:
        await self.nodes[i].restart(timeout)

    def pause(self, i: int) -> None:
        self.nodes[i].pause()

    def resume(self, i: int) -> None:
        self.nodes[i].resume()

    def check_exits(self) -> list[tuple[int, int]]:
        """Record (and return) nodes that exited without being told to, as (id, status)."""
        found: list[tuple[int, int]] = []
        for i, node in self.nodes.items():
            proc = node.proc
            if not node.expected_down and proc is not None and proc.poll() is not None:
                node.expected_down = True
                _LIVE_PROCESSES.discard(proc)
                found.append((i, proc.returncode))
                log.warning("node %d exited on its own with status %s", i, proc.returncode)
                self.problems.append(f"node {i} exited on its own with status {proc.returncode}")
        self.unexpected_exits.extend(found)
        return found

    async def await_ready(self, ids: Iterable[int], timeout: float = 15.0) -> None:
        """Wait until nodes ``ids`` listen. One that exits or does not listen in time is added
        to :attr:`problems` instead of raising: a server that cannot restart is a finding."""
        nodes = [self.nodes[i] for i in ids]
        results = await asyncio.gather(
            *(node.wait_ready(timeout) for node in nodes), return_exceptions=True
        )
        for node, outcome in zip(nodes, results, strict=True):
            if isinstance(outcome, NodeProcessError):
                if node.running:
                    self.problems.append(
                        f"node {node.node_id} did not listen within {timeout:g} s of starting"
                    )
                else:
                    self.check_exits()
            elif isinstance(outcome, BaseException):
                raise outcome

    async def heal(self, *, wait: bool = True, timeout: float = 15.0) -> None:
        """Remove every network fault, SIGCONT paused nodes and restart stopped ones (waiting
        until they listen when ``wait``)."""
        self.proxy.heal()
        self.check_exits()
        restarted: list[int] = []
        for i, node in self.nodes.items():
            if node.running:
                node.resume()
            else:
                node.start()
                restarted.append(i)
        if wait and restarted:
            await self.await_ready(restarted, timeout)

    async def wait_ready(self, timeout: float = 15.0) -> None:
        """Wait until every running node listens (see :meth:`await_ready`)."""
        await self.await_ready([i for i, n in self.nodes.items() if n.running], timeout)

    # -- status ------------------------------------------------------------------------------

    async def status(self, i: int, timeout: float = 0.5) -> dict[str, Any] | None:
        """Node ``i``'s status map, or None if it is down, paused or does not answer."""
        node = self.nodes[i]
        if not node.running or node.paused:
            return None
        if self._status_client is None:
            self._status_client = Client(
                self.addresses, timeout=timeout, connect_timeout=timeout, attempt_timeout=timeout
            )
        try:
            return await self._status_client.status(node.address, timeout=timeout)
        except Exception:
            return None

    async def leader(self, timeout: float = 3.0) -> int | None:
        """The node that leads in the highest term among those that answer, or None if none
        claims to lead within ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            statuses = await asyncio.gather(*(self.status(i) for i in self.ids))
            leaders = [
                (int(st.get("term", 0)), i)
                for i, st in zip(self.ids, statuses, strict=True)
                if st is not None and st.get("role") == "leader"
            ]
            if leaders:
                return max(leaders)[1]
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(0.05)

    # -- teardown ----------------------------------------------------------------------------

    async def close(self) -> None:
        """Kill every process and close the proxy (safe to call more than once)."""
        try:
            await asyncio.gather(
                *(node.kill() for node in self.nodes.values()), return_exceptions=True
            )
        finally:
            for node in self.nodes.values():
                if node.proc is not None and node.proc.poll() is None:  # pragma: no cover
                    node.proc.kill()
            if self._status_client is not None:
                with contextlib.suppress(Exception):
                    await self._status_client.close()
                self._status_client = None
            await self.proxy.close()

    async def __aenter__(self) -> Cluster:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# --- The nemesis ----------------------------------------------------------------------------

PARTITION_FAULTS: Final = (
    "partition-halves",
    "partition-leader",
    "partition-bridge",
    "partition-zombie-leader",
)
KILL_FAULTS: Final = ("kill-random", "kill-leader")
PAUSE_FAULTS: Final = ("pause-random", "pause-leader")
FAULTS: Final = (*PARTITION_FAULTS, *KILL_FAULTS, *PAUSE_FAULTS, "flaky")
"""Every concrete fault the nemesis can inject.

``partition-zombie-leader`` pauses the leader (SIGSTOP, like a long GC pause), cuts it off while it
sleeps, and resumes it still cut off once the others have had time to elect a new leader
(2.5 election timeouts): it wakes up believing it leads, for at least one more election
timeout (until CheckQuorum deposes it), with its clients around it. A correct cluster refuses
or redirects their reads; one that serves reads without confirming leadership answers them
from stale state. (A plain isolated leader is deposed by CheckQuorum about when the others
elect a new one, so it rarely exposes that bug.)
"""

NEMESES: Final[Mapping[str, tuple[str, ...]]] = {
    "none": (),
    "partition": PARTITION_FAULTS,
    "kill": KILL_FAULTS,
    "pause": PAUSE_FAULTS,
    "all": FAULTS,
    **{fault: (fault,) for fault in FAULTS},
}
"""Nemesis names: each draws one of its faults at random for every fault window."""


def _fmt_group(nodes: Iterable[int]) -> str:
    return "{" + ", ".join(str(n) for n in sorted(nodes)) + "}"


class Nemesis:
    """Injects one fault at a time into ``cluster``: :meth:`inject` picks one of ``faults`` at
    random (seeded by ``rng``) and applies it; :meth:`repair` undoes it."""

    def __init__(self, cluster: Cluster, faults: Sequence[str], rng: random.Random) -> None:
        unknown = [f for f in faults if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown fault {unknown[0]!r} (known: {', '.join(FAULTS)})")
        self.cluster = cluster
        self.faults = tuple(faults)
        self.rng = rng
        self._killed: list[int] = []
        self._paused: list[int] = []
        self._network = False
        self._waking: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        return bool(self._killed or self._paused or self._network)

    async def _wake_later(self, node: int, delay: float) -> None:
        await asyncio.sleep(delay)
        if node in self._paused:
            self._paused.remove(node)
            self.cluster.resume(node)
            log.info("nemesis: zombie leader %d resumed, still isolated", node)

    async def _target_leader(self) -> tuple[int, str]:
        leader = await self.cluster.leader(timeout=2.0)
        if leader is None:
            node = self.rng.choice(self.cluster.ids)
            return node, f"no leader found, node {node}"
        return leader, f"leader {leader}"

    def _random_nodes(self, max_size: int) -> list[int]:
        ids = self.cluster.ids
        size = self.rng.randint(1, max(1, min(max_size, len(ids))))
        return sorted(self.rng.sample(ids, size))

    async def inject(self) -> str:
        """Apply a random fault; return a description of it."""
        if self.active:
            await self.repair()
        if not self.faults:
            return "none"
        fault = self.rng.choice(self.faults)
        proxy = self.cluster.proxy
        ids = list(self.cluster.ids)
        if fault == "partition-halves":
            self.rng.shuffle(ids)
            groups = [sorted(ids[: len(ids) // 2]), sorted(ids[len(ids) // 2 :])]
            proxy.partition(groups)
            self._network = True
            return f"{fault}: {_fmt_group(groups[0])} | {_fmt_group(groups[1])}"
        if fault == "partition-leader":
            node, who = await self._target_leader()
            proxy.isolate(node)
            self._network = True
            return f"{fault}: {who} isolated"
        if fault == "partition-bridge":
            self.rng.shuffle(ids)
            mid = len(ids) // 2
            left, bridge, right = ids[:mid], ids[mid], ids[mid + 1 :]
            proxy.heal()
            for a in left:
                for b in right:
                    proxy.block(a, b)
                    proxy.block(b, a)
            self._network = True
            return f"{fault}: {_fmt_group(left)} | {bridge} | {_fmt_group(right)}"
        if fault == "flaky":
            for a in ids:
                for b in ids:
                    if a != b:
                        proxy.set_faults(
                            a,
                            b,
                            delay=self.rng.uniform(0.0, 0.02),
                            jitter=0.02,
                            drop=self.rng.choice((0.05, 0.1, 0.2)),
                        )
            self._network = True
            return f"{fault}: delays up to 40 ms and 5-20% loss on every link"
        if fault == "partition-zombie-leader":
            node, who = await self._target_leader()
            self.cluster.pause(node)
            self._paused.append(node)
            proxy.isolate(node)
            self._network = True
            election = self.cluster.tick_ms * self.cluster.election_ticks / 1000
            delay = 2.5 * election + 0.2
            self._waking = asyncio.get_running_loop().create_task(self._wake_later(node, delay))
            return f"{fault}: {who} paused, isolated, resumed isolated after {delay:.1f} s"
        if fault in ("kill-random", "kill-leader", "pause-random", "pause-leader"):
            if fault.endswith("leader"):
                node, who = await self._target_leader()
                nodes, desc = [node], who
            else:
                # Kill any subset (all of them tests recovery from the disk alone); pause at
                # most all but one.
                limit = len(ids) if fault.startswith("kill") else len(ids) - 1
                nodes = self._random_nodes(limit)
                desc = f"nodes {_fmt_group(nodes)}"
            if fault.startswith("kill"):
                await asyncio.gather(*(self.cluster.kill(i) for i in nodes))
                self._killed += nodes
            else:
                for i in nodes:
                    self.cluster.pause(i)
                self._paused += nodes
            return f"{fault}: {desc}"
        raise AssertionError(f"unhandled fault {fault}")  # pragma: no cover

    async def repair(self, *, wait: bool = True) -> None:
        """Undo the current fault: heal the network, SIGCONT paused nodes, restart killed ones
        (waiting until they listen when ``wait``)."""
        if self._waking is not None:
            self._waking.cancel()
            self._waking = None
        if self._network:
            self.cluster.proxy.heal()
            self._network = False
        for i in self._paused:
            self.cluster.resume(i)
        self._paused = []
        killed, self._killed = self._killed, []
        for i in killed:
            if not self.cluster.nodes[i].running:
                self.cluster.nodes[i].start()
        if wait and killed:
            await self.cluster.await_ready(killed)


# --- Configuration and results --------------------------------------------------------------

ReadConsistency: TypeAlias = Literal["linearizable", "lease", "stale"]
ClientRouting: TypeAlias = Literal["home", "direct"]


@dataclass(frozen=True)
class JepsenConfig:
    """One run of :func:`run_jepsen`.

    ``nemesis``: a name of :data:`NEMESES`. Faults alternate with quiet periods: quiet for
    ``interval`` seconds, a fault for ``interval`` seconds (each drawn from 0.5x to 1.5x), and
    so on until ``seconds`` have passed. ``op_timeout``: each client call's deadline.
    ``ops_per_key``: a key is retired after this many operations (0: never). ``tick_ms`` and
    ``election_ticks`` are passed to the servers. ``read_fraction``: the share of reads (the
    rest is half writes, half cas); values are integers ``0 .. values - 1``.
    ``read_consistency``: what the clients ask reads for (``stale`` reads may legitimately
    fail the check). ``client_routing``: ``home`` (clients live on nodes and are partitioned
    with them) or ``direct``. ``unsafe_stale_reads``: start the servers with
    ``RAFTPY_UNSAFE_STALE_READS=1`` (TEST ONLY: a broken cluster, to prove the harness catches
    it). ``out_dir``: where the history, the pictures, the summary and the logs go (default: a
    new temporary directory, kept). ``check_timeout``: the checker's time limit in seconds.
    ``server_module``: a module with the DESIGN §5 server command line and the hash map's
    commands; ``server_env``: extra environment for it; ``server_args``: extra options for its
    ``server`` command (e.g. ``("--snapshot-entries", "300")`` to snapshot and compact often
    under the faults). ``keep_data``: keep the data dirs.
    """

    nodes: int = 3
    clients: int = 10
    keys: int = 5
    seconds: float = 30.0
    nemesis: str = "partition"
    seed: int | None = None
    out_dir: Path | None = None
    interval: float = 5.0
    op_timeout: float = 1.0
    ops_per_key: int = 400
    tick_ms: float = 20.0
    election_ticks: int = 10
    read_fraction: float = 1 / 3
    values: int = 5
    read_consistency: ReadConsistency = "linearizable"
    client_routing: ClientRouting = "home"
    unsafe_stale_reads: bool = False
    check_timeout: float = 120.0
    server_module: str = "raftpy.examples.hashmap"
    server_env: Mapping[str, str] = field(default_factory=dict)
    server_args: tuple[str, ...] = ()
    keep_data: bool = False

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        if self.nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {self.nodes}")
        if self.clients < 1:
            raise ValueError(f"clients must be >= 1, got {self.clients}")
        if self.keys < 1:
            raise ValueError(f"keys must be >= 1, got {self.keys}")
        for name in ("seconds", "interval", "op_timeout", "tick_ms", "check_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        if self.nemesis not in NEMESES:
            raise ValueError(f"unknown nemesis {self.nemesis!r} (known: {', '.join(NEMESES)})")
        if self.ops_per_key < 0:
            raise ValueError(f"ops_per_key must be >= 0, got {self.ops_per_key}")
        if self.election_ticks < 2:
            raise ValueError(f"election_ticks must be >= 2, got {self.election_ticks}")
        if not 0.0 <= self.read_fraction <= 1.0:
            raise ValueError(f"read_fraction must be in [0, 1], got {self.read_fraction}")
        if self.values < 2:
            raise ValueError(f"values must be >= 2, got {self.values}")
        if self.read_consistency not in ("linearizable", "lease", "stale"):
            raise ValueError(f"unknown read consistency {self.read_consistency!r}")
        if self.client_routing not in ("home", "direct"):
            raise ValueError(f"unknown client routing {self.client_routing!r}")


@dataclass(frozen=True)
class FaultWindow:
    """A period of the run: ``label`` is ``"quiet"``, the fault's description, or (last)
    ``"healed: ..."`` for the recovery write and final reads; times are ``time.monotonic_ns``
    values, ``end`` exclusive."""

    label: str
    start: int
    end: int

    @property
    def fault(self) -> bool:
        return self.label != "quiet" and not self.healed

    @property
    def healed(self) -> bool:
        return self.label.startswith(HEALED_LABEL)


@dataclass(frozen=True)
class JepsenCheck:
    """One check of a run: its name, whether it passed, and a line of detail."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class _Sample:
    """One client call, whatever its outcome (the history drops definite failures)."""

    kind: OpKind
    call: int
    ret: int
    outcome: Literal["ok", "failed", "unknown"]


@dataclass
class JepsenResult:
    """What a run found. ``valid``: every check passed. ``summary``: the printable report."""

    config: JepsenConfig
    seed: int
    history: list[Operation]
    checks: list[JepsenCheck]
    linearizability: CheckResult | None
    violations: list[CheckResult]
    windows: list[FaultWindow]
    samples: list[_Sample]
    started: int
    workload_seconds: float
    workload_ops: int
    out_dir: Path
    summary: str = ""

    @property
    def valid(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def counts(self) -> dict[str, int]:
        """Outcomes of the workload's calls (not the recovery write and final reads)."""
        out = {"ok": 0, "failed": 0, "unknown": 0}
        for s in self.samples[: self.workload_ops]:
            out[s.outcome] += 1
        return out

    @property
    def recorded_per_second(self) -> float:
        """The workload's operations recorded in the history (ok and unknown) per second."""
        c = self.counts
        return (c["ok"] + c["unknown"]) / self.workload_seconds if self.workload_seconds else 0.0


# --- The workload ---------------------------------------------------------------------------


class _KeySpace:
    """``k`` active keys; a key is retired after ``ops_per_key`` operations (0: never)."""

    def __init__(self, k: int, ops_per_key: int) -> None:
        self.active = [f"k{i}" for i in range(k)]
        self.used: list[str] = list(self.active)
        self._count = dict.fromkeys(self.active, 0)
        self._next = k
        self._limit = ops_per_key

    def pick(self, rng: random.Random) -> str:
        slot = rng.randrange(len(self.active))
        key = self.active[slot]
        self._count[key] += 1
        if self._limit and self._count[key] >= self._limit:
            fresh = f"k{self._next}"
            self._next += 1
            self.active[slot] = fresh
            self.used.append(fresh)
            self._count[fresh] = 0
        return key


_DEFINITE = (ClusterUnavailableError, NotLeaderError, ProposalDropped)


class _KvSession:
    """The hash map's wire protocol on a :class:`~raftpy.client.Client` (see
    :class:`raftpy.examples.hashmap.HashMapStateMachine`), with a per-call consistency."""

    def __init__(
        self, addresses: list[str], timeout: float, consistency: str, rng: random.Random
    ) -> None:
        self.timeout = timeout
        self.consistency = consistency
        self.client = Client(
            addresses,
            timeout=timeout,
            connect_timeout=min(0.5, timeout),
            attempt_timeout=max(0.05, timeout / 3),
            backoff_initial=0.01,
            backoff_max=0.2,
            rng=rng,
        )

    async def read(self, key: str) -> Value:
        raw = await self.client.query(key.encode(), consistency=self.consistency)
        try:
            value = json.loads(raw)
        except ValueError:
            value = ...
        if value is None or (isinstance(value, int | str) and not isinstance(value, bool)):
            return value
        # Not a value anyone wrote: record the raw answer, so the checker flags it.
        return "unreadable: " + raw.decode(errors="replace")

    async def write(self, key: str, value: int) -> None:
        await self.client.propose(msgspec.msgpack.encode(("put", key, json.dumps(value))))

    async def cas(self, key: str, expected: int, new: int) -> bool:
        cmd = msgspec.msgpack.encode(("cas", key, json.dumps(expected), json.dumps(new)))
        raw = await self.client.propose(cmd)
        if raw not in (b"true", b"false"):
            raise ValueError(f"a cas answered {raw!r}")
        return raw == b"true"

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.close()


class _Workload:
    def __init__(
        self,
        config: JepsenConfig,
        cluster: Cluster,
        recorder: HistoryRecorder,
        seed: int,
    ) -> None:
        self.config = config
        self.cluster = cluster
        self.recorder = recorder
        self.keys = _KeySpace(config.keys, config.ops_per_key)
        self.samples: list[_Sample] = []
        self.next_client = config.clients  # fresh ids after indeterminate operations
        self._seed = seed
        self._key_rng = random.Random(seed ^ 0x5EED)

    def _session(self, home: int | None, rng: random.Random) -> _KvSession:
        addresses = self.cluster.client_addresses(home)
        return _KvSession(addresses, self.config.op_timeout, self.config.read_consistency, rng)

    async def run(self, stop_at: float) -> None:
        await asyncio.gather(*(self._worker(w, stop_at) for w in range(self.config.clients)))

    async def _worker(self, w: int, stop_at: float) -> None:
        cfg = self.config
        rng = random.Random(self._seed * 1000 + w)
        ids = self.cluster.ids
        home = ids[w % len(ids)] if cfg.client_routing == "home" else None
        session = self._session(home, rng)
        client_id = w
        loop = asyncio.get_running_loop()
        try:
            while loop.time() < stop_at:
                key = self.keys.pick(self._key_rng)
                outcome = await self.operation(session, client_id, key, rng)
                if outcome != "ok":
                    # Look for the leader afresh; after an unknown outcome, a new identity.
                    await session.close()
                    session = self._session(home, rng)
                    if outcome == "unknown":
                        client_id = self.next_client
                        self.next_client += 1
        finally:
            await session.close()

    async def operation(
        self,
        session: _KvSession,
        client_id: int,
        key: str,
        rng: random.Random,
        kind: OpKind | None = None,
        value: int | None = None,
    ) -> Literal["ok", "failed", "unknown"]:
        """Run one recorded operation (random unless ``kind`` is given)."""
        cfg = self.config
        if kind is None:
            if rng.random() < cfg.read_fraction:
                kind = "read"
            elif rng.random() < 0.5:
                kind = "write"
            else:
                kind = "cas"
        rec = self.recorder
        result: Value | bool = None
        expected = new = 0
        if kind == "read":
            handle = rec.invoke(client_id, "read", key)
        elif kind == "write":
            value = rng.randrange(cfg.values) if value is None else value
            handle = rec.invoke(client_id, "write", key, value=value)
        else:
            expected, new = rng.randrange(cfg.values), rng.randrange(cfg.values)
            handle = rec.invoke(client_id, "cas", key, from_=expected, to=new)
        call = time.monotonic_ns()
        outcome: Literal["ok", "failed", "unknown"]
        try:
            # The client keeps its own deadline; this bound only guards against a hang.
            async with asyncio.timeout(cfg.op_timeout + 5.0):
                if kind == "read":
                    result = await session.read(key)
                elif kind == "write":
                    assert value is not None
                    await session.write(key, value)
                else:
                    result = await session.cas(key, expected, new)
        except _DEFINITE:
            rec.fail(handle)
            outcome = "failed"
        except Exception:
            if kind == "read":  # a read changes nothing: its failure is definite
                rec.fail(handle)
                outcome = "failed"
            else:
                rec.indeterminate(handle)
                outcome = "unknown"
        else:
            rec.complete(handle, result)
            outcome = "ok"
        self.samples.append(_Sample(kind, call, time.monotonic_ns(), outcome))
        return outcome


# --- The run --------------------------------------------------------------------------------


async def _schedule(
    nemesis: Nemesis,
    windows: list[FaultWindow],
    config: JepsenConfig,
    rng: random.Random,
    stop_at: float,
) -> None:
    """Alternate quiet periods and faults until ``stop_at`` (loop time). The fault active at
    ``stop_at``, if any, is left for the final heal; its window stays open (see run_jepsen)."""
    loop = asyncio.get_running_loop()
    label = "quiet"
    start = time.monotonic_ns()
    try:
        while loop.time() < stop_at:
            await asyncio.sleep(
                max(0.0, min(stop_at - loop.time(), config.interval * rng.uniform(0.5, 1.5)))
            )
            if loop.time() >= stop_at or not nemesis.faults:
                continue
            windows.append(FaultWindow(label, start, time.monotonic_ns()))
            start = time.monotonic_ns()
            label = await nemesis.inject()
            log.info("nemesis: %s", label)
            await asyncio.sleep(
                max(0.0, min(stop_at - loop.time(), config.interval * rng.uniform(0.5, 1.5)))
            )
            if loop.time() >= stop_at:
                break
            await nemesis.repair()
            log.info("nemesis: repaired")
            windows.append(FaultWindow(label, start, time.monotonic_ns()))
            start = time.monotonic_ns()
            label = "quiet"
    finally:
        windows.append(FaultWindow(label, start, time.monotonic_ns()))


async def _monitor_exits(cluster: Cluster) -> None:
    while True:
        await asyncio.sleep(0.25)
        cluster.check_exits()


async def _recovery_write(
    workload: _Workload, heal_started: float, client_id: int, rng: random.Random
) -> tuple[bool, float]:
    """Write until one write succeeds or RECOVERY_LIMIT seconds since ``heal_started`` (loop
    time) pass. Returns (succeeded, seconds from heal_started to the success)."""
    loop = asyncio.get_running_loop()
    attempt = 0
    while True:
        remaining = heal_started + RECOVERY_LIMIT - loop.time()
        if remaining <= 0.01:
            return False, loop.time() - heal_started
        session = _KvSession(workload.cluster.addresses, min(1.0, remaining), "linearizable", rng)
        try:
            attempt += 1
            outcome = await workload.operation(
                session, client_id + attempt, "recovery", rng, kind="write", value=attempt
            )
        finally:
            await session.close()
        if outcome == "ok":
            return True, loop.time() - heal_started
        await asyncio.sleep(0.05)


async def _final_reads(
    workload: _Workload, keys: Sequence[str], client_id: int, rng: random.Random, budget: float
) -> list[str]:
    """A linearizable read of every key (through the leader), retried until ``budget`` seconds
    pass; returns the keys that could not be read."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    session = _KvSession(workload.cluster.addresses, 2.0, "linearizable", rng)
    missing: list[str] = []
    try:
        for key in keys:
            while True:
                outcome = await workload.operation(session, client_id, key, rng, kind="read")
                if outcome == "ok":
                    break
                if loop.time() >= deadline:
                    missing.append(key)
                    break
                await session.close()
                session = _KvSession(workload.cluster.addresses, 2.0, "linearizable", rng)
                await asyncio.sleep(0.1)
    finally:
        await session.close()
    return missing


def _check_history(
    history: Sequence[Operation], timeout: float
) -> tuple[CheckResult, list[CheckResult], list[str]]:
    """Check the whole history, then (if it fails) every key on its own to list every violated
    key. Returns (overall result, failing per-key results, undecided keys)."""
    overall = check(history, timeout=timeout)
    if overall.verdict is Verdict.LINEARIZABLE:
        return overall, [], []
    by_key: dict[str, list[Operation]] = {}
    for op in history:
        by_key.setdefault(op.key, []).append(op)
    start = time.monotonic()
    failures: list[CheckResult] = []
    undecided: list[str] = []
    for key, ops in by_key.items():
        remaining = max(1.0, timeout - (time.monotonic() - start))
        result = check(ops, timeout=remaining)
        if result.verdict is Verdict.NOT_LINEARIZABLE:
            failures.append(result)
        elif result.verdict is Verdict.UNDECIDED:
            undecided.append(key)
    return overall, failures, undecided


def judge_history(
    history: Sequence[Operation],
    *,
    final_reader: int,
    unread_keys: Sequence[str] = (),
    timeout: float = 120.0,
) -> tuple[CheckResult, list[CheckResult], list[JepsenCheck]]:
    """Checks 1 and 2 of a run on its history: linearizability, and no acknowledged write lost.

    ``final_reader`` is the client id of the final reads (one per key, after healing);
    ``unread_keys`` the keys whose final read never succeeded. A key loses an acknowledged
    write when its history is not linearizable and its final read is among the operations
    that cannot be placed (the value read contradicts what was acknowledged before it).
    Returns the checker's result on the whole history, the failing per-key results (every
    violated key, not just the first) and the two checks.
    """
    overall, violations, undecided = _check_history(history, timeout)
    if overall.verdict is Verdict.LINEARIZABLE:
        detail = (
            f"{overall.operations} operations in {overall.partitions} keys, checked in "
            f"{overall.elapsed:.2f} s"
        )
    elif violations:
        keys_text = ", ".join(v.violation.key for v in violations if v.violation)
        detail = f"NOT linearizable: {len(violations)} key(s) violated: {keys_text}"
    else:
        detail = f"undecided within {timeout:g} s: keys {', '.join(undecided)}"
    checks = [JepsenCheck("linearizable", overall.verdict is Verdict.LINEARIZABLE, detail)]
    lost_keys = sorted(
        v.violation.key
        for v in violations
        if v.violation is not None
        and any(op.client == final_reader for op in v.violation.unplaceable)
    )
    final_reads = sum(1 for op in history if op.client == final_reader)
    if unread_keys:
        lost = f"could not read {len(unread_keys)} key(s) at the end: "
        lost += ", ".join(unread_keys[:10])
    elif lost_keys:
        lost = "the final reads of these keys contradict acknowledged operations: "
        lost += ", ".join(lost_keys)
    else:
        lost = f"final reads of {final_reads} keys agree with the history"
    passed = not unread_keys and not lost_keys
    checks.append(JepsenCheck("no acknowledged write lost", passed, lost))
    return overall, violations, checks


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    k = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


def _latency_line(samples: Iterable[_Sample]) -> str:
    lat = sorted((s.ret - s.call) / 1e6 for s in samples if s.outcome == "ok")
    if not lat:
        return "no successful operation"
    parts = [
        f"p{label} {_percentile(lat, q):.1f}"
        for label, q in (("50", 0.5), ("90", 0.9), ("99", 0.99), ("99.9", 0.999))
    ]
    return " ".join(parts) + f" max {lat[-1]:.1f}"


def _window_stats(samples: Sequence[_Sample], w: FaultWindow) -> tuple[int, int, int, int]:
    """(total, ok, failed, unknown) of the calls made during ``w`` (samples sorted by call)."""
    calls = [s.call for s in samples]
    lo = bisect.bisect_left(calls, w.start)
    hi = bisect.bisect_left(calls, w.end)
    ok = failed = unknown = 0
    for s in samples[lo:hi]:
        if s.outcome == "ok":
            ok += 1
        elif s.outcome == "failed":
            failed += 1
        else:
            unknown += 1
    return hi - lo, ok, failed, unknown


def _summary(result: JepsenResult) -> str:
    cfg = result.config
    c = result.counts
    total = sum(c.values())
    secs = max(1e-9, result.workload_seconds)
    workload = result.samples[: result.workload_ops]
    lines = [
        f"raftpy jepsen: {cfg.nodes} nodes, {cfg.clients} clients, {cfg.keys} keys, "
        f"{cfg.seconds:g} s, nemesis {cfg.nemesis}, seed {result.seed}",
        f"operations: {total} in {secs:.1f} s ({total / secs:.0f}/s): ok {c['ok']}, "
        f"failed {c['failed']}, unknown {c['unknown']}; recorded "
        f"{result.recorded_per_second:.0f}/s; history: {len(result.history)} operations "
        "with the recovery write and final reads",
    ]
    for kind in ("read", "write", "cas"):
        ks = [s for s in workload if s.kind == kind]
        ok = sum(1 for s in ks if s.outcome == "ok")
        failed = sum(1 for s in ks if s.outcome == "failed")
        lines.append(
            f"  {kind:<5} {len(ks):>7}: ok {ok}, failed {failed}, unknown {len(ks) - ok - failed}"
        )
    lines.append(f"latency of successful operations (ms): {_latency_line(workload)}")
    for kind in ("read", "write", "cas"):
        lines.append(f"  {kind:<5} {_latency_line(s for s in workload if s.kind == kind)}")
    lines.append("availability per window (operations called in it):")
    samples = sorted(result.samples, key=lambda s: s.call)
    totals = {True: [0, 0], False: [0, 0]}
    for w in result.windows:
        n, ok, failed, unknown = _window_stats(samples, w)
        if not w.healed:
            totals[w.fault][0] += ok
            totals[w.fault][1] += n
        t0 = (w.start - result.started) / 1e9
        t1 = (w.end - result.started) / 1e9
        avail = f"{100 * ok / n:5.1f}%" if n else "    -"
        rate = ok / max(1e-9, t1 - t0)
        lines.append(
            f"  {t0:6.1f}-{t1:6.1f} s  ok {avail} ({ok}/{n}, failed {failed}, unknown "
            f"{unknown}, {rate:.0f} ok/s)  {w.label}"
        )
    for fault, name in ((False, "quiet"), (True, "fault")):
        ok, n = totals[fault]
        if n:
            lines.append(f"  all {name} windows: ok {100 * ok / n:5.1f}% ({ok}/{n})")
    lines.append("checks:")
    for chk in result.checks:
        lines.append(f"  [{'ok' if chk.passed else 'FAIL'}] {chk.name}: {chk.detail}")
    for v in result.violations[:3]:
        if v.violation is not None:
            lines.append(v.violation.explain(max_prefix=5))
    lines.append(f"valid: {'yes' if result.valid else 'NO'}")
    lines.append(f"output: {result.out_dir}")
    return "\n".join(lines)


def _timeline_html(result: JepsenResult) -> str:
    """Throughput over time (ok / failed / unknown per bucket, by call time) with the fault
    windows shaded, and the summary."""
    started = result.started
    end = max([w.end for w in result.windows] + [s.ret for s in result.samples] + [started + 1])
    span = (end - started) / 1e9
    buckets = max(1, min(600, int(span / 0.1)))
    width_s = span / buckets
    ok = [0] * buckets
    failed = [0] * buckets
    unknown = [0] * buckets
    for s in result.samples:
        b = min(buckets - 1, max(0, int((s.call - started) / 1e9 / width_s)))
        (ok if s.outcome == "ok" else failed if s.outcome == "failed" else unknown)[b] += 1
    peak = max([a + b + c for a, b, c in zip(ok, failed, unknown, strict=True)] + [1])
    left, top, plot_w, plot_h = 50, 30, 1100, 260
    bar_w = plot_w / buckets

    def x(t_ns: int) -> float:
        return left + (t_ns - started) / 1e9 / span * plot_w

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + plot_w + 20}" '
        f'height="{top + plot_h + 40}">'
    ]
    for w in result.windows:
        if w.fault:
            parts.append(
                f'<g><title>{html.escape(w.label)}</title><rect x="{x(w.start):.1f}" y="{top}" '
                f'width="{max(1.0, x(w.end) - x(w.start)):.1f}" height="{plot_h}" '
                'fill="#f4d8d8"/></g>'
            )
            parts.append(
                f'<text x="{x(w.start) + 2:.1f}" y="{top - 4}" font-size="10">'
                f"{html.escape(w.label.split(':')[0])}</text>"
            )
    for b in range(buckets):
        y = float(top + plot_h)
        for count, color in ((ok[b], "#3a9a4a"), (unknown[b], "#e0a020"), (failed[b], "#888")):
            if count:
                h = count / peak * plot_h
                y -= h
                parts.append(
                    f'<rect x="{left + b * bar_w:.1f}" y="{y:.1f}" width="{max(bar_w, 0.5):.1f}" '
                    f'height="{h:.1f}" fill="{color}"/>'
                )
    parts.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#000"/>'
    )
    for k in range(int(span) + 1):
        if span > 60 and k % 10:
            continue
        xx = left + k / span * plot_w
        parts.append(
            f'<text x="{xx:.1f}" y="{top + plot_h + 14}" font-size="10" '
            f'text-anchor="middle">{k}s</text>'
        )
    rate = peak / width_s
    parts.append(f'<text x="2" y="{top + 10}" font-size="10">{rate:.0f}/s</text>')
    parts.append("</svg>")
    violation = ""
    if any(v.violation is not None for v in result.violations):
        violation = (
            "<p><b>Not linearizable</b>: see <a href='violation.html'>violation.html</a> "
            "for the checker's timeline of the first failing key.</p>"
        )
    title = f"raftpy jepsen: nemesis {html.escape(result.config.nemesis)}, seed {result.seed}"
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>body{{font-family:sans-serif;margin:1em}}"
        "pre{background:#f6f6f6;padding:.6em}</style></head><body>"
        f"<h1>{title}</h1>"
        "<p>Operations per 100 ms by call time: <span style='color:#3a9a4a'>ok</span>, "
        "<span style='color:#e0a020'>unknown</span>, <span style='color:#888'>failed</span>; "
        "fault windows shaded red (hover for the fault).</p>"
        f"{violation}<div>{''.join(parts)}</div>"
        f"<pre>{html.escape(result.summary)}</pre></body></html>\n"
    )


def _write_outputs(result: JepsenResult) -> None:
    out = result.out_dir
    write_history(out / "history.jsonl", result.history)
    for v in result.violations[:1]:
        if v.violation is not None:
            (out / "violation.html").write_text(render_html(v), encoding="utf-8")
    (out / "timeline.html").write_text(_timeline_html(result), encoding="utf-8")
    (out / "summary.txt").write_text(result.summary + "\n", encoding="utf-8")


async def run_jepsen(
    config: JepsenConfig, *, progress: Callable[[str], None] | None = None
) -> JepsenResult:
    """Run one Jepsen-style test (see the module docstring) and return what it found.

    Raises ``ValueError`` for a bad configuration and :class:`NodeProcessError` if the cluster
    cannot be started. Every process started is killed before this returns or raises.
    ``progress`` receives a line at each phase.
    """
    config.validate()
    say = progress if progress is not None else (lambda _line: None)
    seed = config.seed if config.seed is not None else random.SystemRandom().randrange(1 << 31)
    out_dir = config.out_dir
    if out_dir is None:
        out_dir = Path(tempfile.mkdtemp(prefix="raftpy-jepsen-"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="raftpy-jepsen-data-"))
    env = dict(config.server_env)
    if config.unsafe_stale_reads:
        env[UNSAFE_STALE_READS_ENV] = "1"
    rng = random.Random(seed)
    cluster = Cluster(
        config.nodes,
        workdir,
        log_dir=out_dir,
        module=config.server_module,
        tick_ms=config.tick_ms,
        election_ticks=config.election_ticks,
        env=env,
        seed=seed,
        server_args=config.server_args,
    )
    recorder = HistoryRecorder()
    windows: list[FaultWindow] = []
    checks: list[JepsenCheck] = []
    loop = asyncio.get_running_loop()
    monitor: asyncio.Task[None] | None = None
    try:
        say(f"starting {config.nodes} nodes (logs in {out_dir})")
        await cluster.start()
        monitor = loop.create_task(_monitor_exits(cluster))
        leader = await cluster.leader(timeout=10.0)
        if leader is None:
            raise NodeProcessError("no leader was elected within 10 s of starting the cluster")
        nemesis = Nemesis(cluster, NEMESES[config.nemesis], random.Random(rng.random()))
        workload = _Workload(config, cluster, recorder, seed)
        say(
            f"running {config.clients} clients for {config.seconds:g} s, "
            f"nemesis {config.nemesis}, seed {seed}"
        )
        started = time.monotonic_ns()
        stop_at = loop.time() + config.seconds
        schedule = loop.create_task(
            _schedule(nemesis, windows, config, random.Random(rng.random()), stop_at)
        )
        try:
            await workload.run(stop_at)
        finally:
            if not schedule.done():
                schedule.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await schedule
        workload_seconds = (time.monotonic_ns() - started) / 1e9
        workload_ops = len(workload.samples)

        say("healing")
        heal_started = loop.time()
        await nemesis.repair(wait=False)
        await cluster.heal(wait=False)
        heal_ns = time.monotonic_ns()
        final_rng = random.Random(rng.random())
        client_base = workload.next_client + 1000
        recovered, after = await _recovery_write(workload, heal_started, client_base, final_rng)
        checks.append(
            JepsenCheck(
                "recovery",
                recovered,
                f"a write succeeded {after:.2f} s after healing began"
                if recovered
                else f"no write succeeded within {RECOVERY_LIMIT:g} s of healing",
            )
        )
        await cluster.wait_ready()
        keys = workload.keys.used
        say(f"final reads of {len(keys)} keys")
        missing = await _final_reads(workload, keys, client_base + 100, final_rng, 30.0)
        cluster.check_exits()
        windows.append(
            FaultWindow(
                f"{HEALED_LABEL}: recovery write, final reads", heal_ns, time.monotonic_ns()
            )
        )
        history = recorder.operations()

        say(f"checking {len(history)} operations")
        overall, violations, judged = await asyncio.to_thread(
            judge_history,
            history,
            final_reader=client_base + 100,
            unread_keys=missing,
            timeout=config.check_timeout,
        )
        checks[:0] = judged
        problems = cluster.problems
        checks.append(
            JepsenCheck(
                "no node crashed",
                not problems,
                "every exit was the nemesis'" if not problems else "; ".join(problems),
            )
        )
        result = JepsenResult(
            config=config,
            seed=seed,
            history=history,
            checks=checks,
            linearizability=overall,
            violations=violations,
            windows=windows,
            samples=workload.samples,
            started=started,
            workload_seconds=workload_seconds,
            workload_ops=workload_ops,
            out_dir=out_dir,
        )
        result.summary = _summary(result)
        _write_outputs(result)
        return result
    finally:
        if monitor is not None:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
        await cluster.close()
        if not config.keep_data:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"data dirs kept in {workdir}")
