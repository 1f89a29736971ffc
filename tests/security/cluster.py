"""The cluster the security tests attack: three hashmap server processes with known committed
data, plain TCP or mutual TLS, and :meth:`AttackedCluster.intact`, the check every attack
ends with (every committed key still has its value, a new write succeeds, every process lives).

Keys ``anchor`` and ``target`` are written one after the other in one term, so the tests know
the index and term of two adjacent committed entries (``anchor_index``, ``target_index``,
``entry_term``) and can forge messages that contradict them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from raftpy.client import Client
from raftpy.errors import IndeterminateError, RaftError
from raftpy.node.status import NodeStatus
from tests.processhelpers import ProcessCluster, wait_until
from tests.security.probe import Probe, Refused, attacker_context

T = TypeVar("T")

TLS_UNAVAILABLE = "mutual TLS is not built yet: `raftpy tls --help` fails"
CLIENT_NAME = "app"


@cache
def tls_available() -> bool:
    """Whether this raftpy has ``raftpy tls`` (checked once, by running it)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "raftpy.cli", "tls", "--help"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _usual_umask() -> None:
    # In the child before the server starts: a node must make its files owner-only by itself,
    # whatever umask it inherits, so the tests give it the common permissive one.
    os.umask(0o022)


def encode_put(key: str, value: Any) -> bytes:
    return msgspec.msgpack.encode(("put", key, json.dumps(value, separators=(",", ":"))))


def rss_bytes(pid: int) -> int:
    """A process's resident set size, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def tree_bytes(root: Path) -> int:
    """Bytes of every file under ``root``, by size and by blocks (the larger)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                st = os.stat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            total += max(st.st_size, st.st_blocks * 512)
    return total


class AttackedCluster:
    """Three hashmap servers under attack (see the module docstring)."""

    def __init__(self, root: Path, tls: bool, extra: list[str] | None = None) -> None:
        self.root = root
        self.tls = tls
        self.extra = extra or []
        self.certs = root / "certs"
        self.cluster: ProcessCluster | None = None
        self.keys: dict[str, Any] = {}
        self.anchor_index = 0
        self.target_index = 0
        self.entry_term = 0
        self.writes = 0
        self.dirty = True  # start (again) before the next test
        if tls:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "raftpy.cli",
                    "tls",
                    "init",
                    str(self.certs),
                    "--nodes",
                    "1,2,3",
                    "--clients",
                    CLIENT_NAME,
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stderr

    # -- the processes ------------------------------------------------------------------------

    @property
    def procs(self) -> ProcessCluster:
        assert self.cluster is not None, "the cluster is not started"
        return self.cluster

    def node_args(self, i: int) -> list[str]:
        if not self.tls:
            return []
        return [
            "--tls-cert",
            str(self.certs / f"node-{i}.pem"),
            "--tls-key",
            str(self.certs / f"node-{i}-key.pem"),
            "--tls-ca",
            str(self.certs / "ca.pem"),
        ]

    def fresh(self) -> None:
        """Stop whatever runs, wipe the data and start three new nodes with the known data."""
        if self.cluster is not None:
            self.cluster.stop_all()
        for i in (1, 2, 3):
            shutil.rmtree(self.root / f"data{i}", ignore_errors=True)
        self.cluster = ProcessCluster(
            "hashmap", 3, self.root, self.extra, node_args=self.node_args, preexec_fn=_usual_umask
        )
        self.cluster.start_all()
        self.keys = {}
        self._write_known_data()
        self.dirty = False

    def restart_all(self) -> None:
        """Stop every node (SIGKILL) and start them again on the same data."""
        self.procs.stop_all()
        self.procs.start_all()

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop_all()

    def pid(self, i: int) -> int:
        return self.procs.procs[i].pid

    def address(self, i: int) -> str:
        return self.procs.address(i)

    def log_lines(self, i: int) -> list[str]:
        return self.procs.logs[i].read_text(errors="replace").splitlines()

    # -- talking to it as a legitimate client --------------------------------------------------

    def client(self, addresses: list[str] | None = None, **kwargs: Any) -> Client:
        if self.tls:
            kwargs["tls"] = self.client_tls()
        return Client(addresses or self.procs.addresses, **kwargs)

    def client_tls(self) -> Any:
        from raftpy.transport.tls import (  # type: ignore[import-not-found, unused-ignore]
            TlsConfig,  # only once mutual TLS is built
        )

        return TlsConfig(
            cert=self.certs / f"client-{CLIENT_NAME}.pem",
            key=self.certs / f"client-{CLIENT_NAME}-key.pem",
            ca=self.certs / "ca.pem",
        )

    def run(self, make: Callable[[Client], Awaitable[T]], **kwargs: Any) -> T:
        async def go() -> T:
            async with self.client(**kwargs) as client:
                return await make(client)

        return asyncio.run(go())

    def put(self, key: str, value: Any, timeout: float = 10.0) -> None:
        """One log entry: without a session (whose opening and closing would be entries too,
        and the checks need two adjacent writes). A put of one value is idempotent, so one
        whose outcome is unknown is simply sent again, until ``timeout``."""

        async def put(client: Client) -> None:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    left = max(0.1, deadline - time.monotonic())
                    await client.propose(encode_put(key, value), timeout=left)
                    return
                except IndeterminateError:
                    if time.monotonic() >= deadline:
                        raise

        self.run(put, sessions=False)

    def status(self, i: int, timeout: float = 5.0) -> NodeStatus:
        return self.run(lambda c: c.status(self.address(i), timeout=timeout))

    def statuses(self) -> dict[int, NodeStatus]:
        out: dict[int, NodeStatus] = {}
        for i in (1, 2, 3):
            try:
                out[i] = self.status(i, timeout=2.0)
            except RaftError:
                continue
        return out

    def leader(self, timeout: float = 15.0) -> NodeStatus:
        """The status of the one node that leads the highest term (waits for one)."""
        found: list[NodeStatus] = []

        def one() -> bool:
            all_ = self.statuses().values()
            leaders = [s for s in all_ if s.role == "leader"]
            if not leaders:
                return False
            top = max(leaders, key=lambda s: s.term or 0)
            found[:] = [top]
            return True

        wait_until(one, timeout, "a leader")
        return found[0]

    def max_term(self) -> int:
        return max((s.term or 0) for s in self.statuses().values())

    def _write_known_data(self) -> None:
        for attempt in range(20):
            leader = self.leader()
            self.put("anchor", f"anchor-{attempt}")
            first = self.leader()
            self.put("target", f"target-{attempt}")
            second = self.leader()
            if (
                leader.id == first.id == second.id
                and leader.term == first.term == second.term
                and second.last_index == (first.last_index or 0) + 1
            ):
                self.keys["anchor"] = f"anchor-{attempt}"
                self.keys["target"] = f"target-{attempt}"
                self.anchor_index = first.last_index or 0
                self.target_index = second.last_index or 0
                self.entry_term = second.term or 0
                break
        else:  # pragma: no cover - a cluster that never stays stable for two writes
            raise AssertionError("no two writes in one term in 20 attempts")
        for k in range(8):
            self.put(f"k{k}", {"n": k, "text": "é" * k})
            self.keys[f"k{k}"] = {"n": k, "text": "é" * k}

    # -- the check ----------------------------------------------------------------------------

    def alive(self) -> None:
        for i, proc in self.procs.procs.items():
            assert proc.poll() is None, (
                f"node {i} exited with {proc.returncode}: {self.procs.log(i)}"
            )

    def intact(self, timeout: float = 20.0) -> None:
        """Every process alive and not failed; every committed key has its value on a
        linearizable read at the leader and on a stale read at every node; a new write
        succeeds. Marks the cluster clean for the next test."""
        self.alive()
        for i in (1, 2, 3):
            st = self.status(i, timeout=timeout)
            assert st.failed is None, f"node {i} has failed: {st.failed}"
        self.writes += 1
        key = f"intact-{self.writes}"
        self.put(key, self.writes, timeout=timeout)
        self.keys[key] = self.writes
        leader = self.leader(timeout)

        async def linearizable(c: Client) -> dict[str, Any]:
            return {k: json.loads(await c.query(k.encode(), timeout=timeout)) for k in self.keys}

        got = self.run(linearizable, addresses=[leader.address])
        assert got == self.keys, f"linearizable reads at node {leader.id}: {got} != {self.keys}"

        async def stale(c: Client) -> dict[str, Any]:
            return {
                k: json.loads(await c.query(k.encode(), consistency="stale", timeout=timeout))
                for k in self.keys
            }

        for i in (1, 2, 3):
            seen: dict[str, Any] = {}
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                seen = self.run(stale, addresses=[self.address(i)])
                if seen == self.keys:
                    break
                time.sleep(0.1)
            assert seen == self.keys, f"stale reads at node {i}: {seen} != {self.keys}"
        self.alive()
        self.dirty = False

    # -- the attacker's credentials ------------------------------------------------------------

    def attacker_tls(self) -> list[tuple[str, ssl.SSLContext | None]]:
        """Every way the attacker can dial: plain TCP (what it has without TLS); with TLS, no
        certificate, a client certificate, and another node's certificate is tried by
        :meth:`forge` with the id it is not."""
        if not self.tls:
            return [("plain TCP", None)]
        return [
            ("no certificate", attacker_context()),
            (
                "a client certificate",
                attacker_context(
                    self.certs / f"client-{CLIENT_NAME}.pem",
                    self.certs / f"client-{CLIENT_NAME}-key.pem",
                ),
            ),
        ]

    def node_cert_context(self, i: int) -> ssl.SSLContext:
        return attacker_context(self.certs / f"node-{i}.pem", self.certs / f"node-{i}-key.pem")

    def client_cert_context(self) -> ssl.SSLContext | None:
        """How a legitimate but hostile client dials (plain TCP without TLS)."""
        if not self.tls:
            return None
        return attacker_context(
            self.certs / f"client-{CLIENT_NAME}.pem", self.certs / f"client-{CLIENT_NAME}-key.pem"
        )

    def peer_probes(self, target: int, claim: int) -> list[tuple[str, Probe]]:
        """Probes that passed the handshake as node ``claim`` at node ``target``, one per
        credential the attacker holds (plain: one; TLS: none may pass). Refused ones are left
        out; the caller closes the rest."""
        ways = self.attacker_tls()
        if self.tls:
            other = next(i for i in (1, 2, 3) if i not in (claim, target))
            ways.append((f"node {other}'s certificate", self.node_cert_context(other)))
        passed: list[tuple[str, Probe]] = []
        for how, ctx in ways:
            probe = Probe(self.address(target), tls=ctx)
            try:
                probe.as_peer(claim, target)
            except Refused:
                probe.close()
                continue
            passed.append((how, probe))
        return passed


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    """Whether ``predicate`` holds within ``timeout`` (polled; never raises on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
