"""Server processes for the harness: start, stop, SIGKILL, restart, SIGSTOP and SIGCONT real
``python -m raftpy.examples.hashmap server ...`` processes on 127.0.0.1, each with its own
data dir and log file, behind a :class:`~raftpy.testing.jepsen.proxy.FaultProxy`.

:class:`NodeProcess` is one server; :class:`Cluster` is ``n`` of them wired through the proxy,
with the leader found from the nodes' status. Every process is killed when the cluster is
closed (and, as a last resort, at interpreter exit).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from raftpy.client import Client
from raftpy.errors import RaftError, RemoteProtocolError
from raftpy.node.status import NodeStatus
from raftpy.testing.jepsen.proxy import HOST, FaultProxy
from raftpy.transport.address import format_address, free_port

__all__ = ["Cluster", "NodeProcess", "NodeProcessError", "serves_no_membership"]

log = logging.getLogger(__name__)

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


def serves_no_membership(exc: BaseException) -> bool:
    """Whether ``exc`` is a server's answer that it does not serve membership requests (a
    server whose node has no membership methods)."""
    return isinstance(exc, RemoteProtocolError) and "does not serve membership" in str(exc)


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
        return format_address(self.host, self.port)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, argv: Sequence[str] | None = None) -> None:
        """Start the process (it must not be running) with :attr:`argv`, or with ``argv`` this
        once (a server joining a running cluster); :meth:`wait_ready` waits for it."""
        if self.running:
            raise NodeProcessError(f"node {self.node_id} is already running")
        command = list(self.argv if argv is None else argv)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            how = "" if argv is None else f": {' '.join(command[3:])}"
            out.write(f"--- harness: starting node {self.node_id}{how}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                command,
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
    """``n`` server processes (ids 1..n) of an example service behind a :class:`FaultProxy`
    (the server command line is :mod:`raftpy.examples.service`'s).

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
        self.wiped: set[int] = set()
        """Nodes whose data dir was deleted and that have not been members since: they may only
        start joining (:meth:`start_node`), never bootstrap as the voters of a new cluster."""
        self.problems: list[str] = []
        """What went wrong with the servers themselves: exits nobody asked for, restarts that
        never listened. Each is a finding of the run, not a failure of the harness."""
        self._rng = random.Random(seed)
        self._status_client: Client | None = None
        self._admin_client: Client | None = None
        self._said_no_membership = False
        self.cluster_id = f"jepsen-{secrets.token_hex(6)}"
        """Fresh for every run (not drawn from ``seed``: a replay must not match the run it
        replays), so a server left over from another run on a reused port is refused at the
        handshake instead of joining this cluster or answering its clients."""

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
            self.nodes[i].argv = self._server_argv(i, members)
        for node in self.nodes.values():
            node.start()
        await asyncio.gather(*(node.wait_ready(timeout) for node in self.nodes.values()))

    def _server_argv(self, i: int, members: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
        return [
            self.python,
            "-m",
            self.module,
            "server",
            str(i),
            *members,
            "--data-dir",
            str(self.data_dir(i)),
            "--tick-ms",
            f"{self.tick_ms:g}",
            "--election-ticks",
            str(self.election_ticks),
            "--cluster-id",
            self.cluster_id,
            *self.server_args,
            *extra,
        ]

    def address(self, i: int) -> str:
        """Where node ``i`` really listens."""
        return self.nodes[i].address

    def member_address(self, i: int) -> str:
        """The address the membership records for node ``i``: its member port on the proxy,
        where every other node dials it (see :mod:`~raftpy.testing.jepsen.proxy`)."""
        return self.proxy.member_address(i)

    def data_dir(self, i: int) -> Path:
        return self.workdir / f"data{i}"

    @property
    def addresses(self) -> list[str]:
        return [self.address(i) for i in self.ids]

    def client_addresses(self, home: int | None) -> list[str]:
        """Addresses for a client living on node ``home``: its home through its home port
        (never faulted), every other node through the proxy link from ``home`` (so partitions
        cut the client off with its home; leader hints are rewritten to these addresses).
        ``None``: every node directly."""
        if home is None:
            return self.addresses
        return [self.proxy.home_address(home)] + [
            self.proxy.address(home, j) for j in self.ids if j != home
        ]

    # -- process control ---------------------------------------------------------------------

    async def kill(self, i: int) -> None:
        await self.nodes[i].kill()

    async def stop(self, i: int) -> None:
        await self.nodes[i].stop()

    async def restart(self, i: int, timeout: float = 15.0) -> None:
        await self.nodes[i].restart(timeout)

    def wipe(self, i: int) -> None:
        """Delete node ``i``'s data dir (a lost disk); the node must be down."""
        if self.nodes[i].running:
            raise NodeProcessError(f"node {i} is running: stop it before wiping its data dir")
        shutil.rmtree(self.data_dir(i), ignore_errors=True)
        self.wiped.add(i)

    def start_node(self, i: int) -> None:
        """Start node ``i`` (down): joining the cluster if its data dir was wiped (see
        :meth:`start_joining`), else with its usual command line."""
        if i in self.wiped:
            self.start_joining(i)
        else:
            self.nodes[i].start()

    def start_joining(self, i: int) -> None:
        """Start node ``i`` (down, its data dir empty) as a server joining the running cluster:
        its member list names only itself, and ``--join`` names every other node through the
        links from ``i`` (so the join crosses the faulty network like node ``i``'s clients).
        It asks to be added as a learner and promotes itself once caught up; later starts use
        the usual command line (a node with a log ignores ``--join``)."""
        join = [self.proxy.address(i, j) for j in self.ids if j != i]
        argv = self._server_argv(i, [str(i), self.address(i)], ["--join", *join])
        self.nodes[i].start(argv)

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
                self.start_node(i)
                restarted.append(i)
        if wait and restarted:
            await self.await_ready(restarted, timeout)

    async def wait_ready(self, timeout: float = 15.0) -> None:
        """Wait until every running node listens (see :meth:`await_ready`)."""
        await self.await_ready([i for i, n in self.nodes.items() if n.running], timeout)

    # -- status ------------------------------------------------------------------------------

    async def status(self, i: int, timeout: float = 0.5) -> NodeStatus | None:
        """Node ``i``'s status, or None if it is down, paused or does not answer."""
        node = self.nodes[i]
        if not node.running or node.paused:
            return None
        if self._status_client is None:
            self._status_client = Client(
                self.addresses,
                timeout=timeout,
                connect_timeout=timeout,
                attempt_timeout=timeout,
                cluster_id=self.cluster_id,
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
                (st.term or 0, i)
                for i, st in zip(self.ids, statuses, strict=True)
                if st is not None and st.role == "leader"
            ]
            if leaders:
                return max(leaders)[1]
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(0.05)

    # -- membership --------------------------------------------------------------------------

    @property
    def admin(self) -> Client:
        """The operator's client for membership changes: reaches every node directly (the
        faults are the workload's, not the operator's), follows redirects."""
        if self._admin_client is None:
            self._admin_client = Client(
                self.addresses,
                timeout=10.0,
                connect_timeout=1.0,
                attempt_timeout=3.0,
                cluster_id=self.cluster_id,
            )
        return self._admin_client

    async def record_member_addresses(self, timeout: float = 10.0) -> bool:
        """Make the membership record every member at its member port (where the others must
        dial it for the proxy's faults to apply), changing addresses only. A leader records
        the addresses its own command line gives, which names itself at its real port; a
        server that joined records its real port too. Returns whether every address is right
        within ``timeout``; False at once if the servers do not serve membership requests."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return False
            try:
                members = await self.admin.members(timeout=min(left, 3.0))
                wrong = [
                    i
                    for i in sorted(members.voters)
                    if i in self.nodes and members.addresses.get(i) != self.member_address(i)
                ]
                if not wrong:
                    return True
                for i in wrong:
                    await self.admin.add_member(
                        i, self.member_address(i), voter=True, timeout=max(0.1, left)
                    )
                    log.info("membership records node %d at %s", i, self.member_address(i))
            except RaftError as exc:
                if serves_no_membership(exc):
                    if not self._said_no_membership:
                        self._said_no_membership = True
                        log.warning("the servers do not serve membership requests: %s", exc)
                    return False
                log.debug("recording member addresses: %s", exc)
                await asyncio.sleep(0.1)

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
            for client in (self._status_client, self._admin_client):
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.close()
            self._status_client = self._admin_client = None
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
