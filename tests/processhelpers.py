"""Real server processes on 127.0.0.1 for end-to-end tests (every wait bounded).

``ProcessCluster`` starts ``n`` example servers (register or hashmap) with fast timeouts on
free ports, each with its own data dir, and kills every process it started when it exits,
also when a test fails.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from raftpy.transport.address import free_port

FAST_ARGS = ["--tick-ms", "20", "--election-ticks", "10"]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def run_cli(example: str, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m raftpy.examples.<example> args...``; bounded by ``timeout``."""
    return subprocess.run(
        [sys.executable, "-m", f"raftpy.examples.{example}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class ProcessCluster:
    """n example servers as real processes (for tests)."""

    def __init__(
        self,
        example: str,
        n: int,
        root: Path,
        extra: list[str] | None = None,
        *,
        node_args: Callable[[int], list[str]] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        """``extra``: options for every server; ``node_args(i)``: options for server ``i``
        only (its certificate, for example); ``preexec_fn`` runs in each child before the
        server starts (a lowered resource limit, for example)."""
        self.example = example
        self.n = n
        self.root = root
        self.extra = FAST_ARGS + (extra or [])
        self.node_args = node_args
        self.preexec_fn = preexec_fn
        self.ports = {i: free_port() for i in range(1, n + 1)}
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.logs: dict[int, Path] = {}

    @property
    def addresses(self) -> list[str]:
        return [self.address(i) for i in range(1, self.n + 1)]

    def address(self, i: int) -> str:
        return f"127.0.0.1:{self.ports[i]}"

    def start(self, i: int) -> None:
        members: list[str] = []
        for j in range(1, self.n + 1):
            members += [str(j), self.address(j)]
        log = self.root / f"node{i}.log"
        self.logs[i] = log
        with open(log, "ab") as out:
            self.procs[i] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    f"raftpy.examples.{self.example}",
                    "server",
                    str(i),
                    *members,
                    "--data-dir",
                    str(self.root / f"data{i}"),
                    *self.extra,
                    *(self.node_args(i) if self.node_args is not None else []),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "RAFTPY_LOG": "info"},
                preexec_fn=self.preexec_fn,
            )
        wait_until(lambda: self._listening(i), 10, f"node {i} to listen")

    def _listening(self, i: int) -> bool:
        proc = self.procs[i]
        if proc.poll() is not None:
            raise AssertionError(f"node {i} exited with {proc.returncode}: {self.log(i)}")
        try:
            with socket.create_connection(("127.0.0.1", self.ports[i]), timeout=0.2):
                return True
        except OSError:
            return False

    def log(self, i: int) -> str:
        return self.logs[i].read_text(errors="replace")[-3000:] if i in self.logs else ""

    def start_all(self) -> ProcessCluster:
        for i in range(1, self.n + 1):
            self.start(i)
        return self

    def signal(self, i: int, sig: int) -> None:
        self.procs[i].send_signal(sig)

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - last resort
                proc.kill()

    def __enter__(self) -> ProcessCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
