"""A node whose loop fails ends its process (real processes): a CRITICAL line saying why and
exit status 70 (``FATAL_EXIT_STATUS``), so a supervisor restarts it, which then serves again
from its data dir. The fault is planted by tests/node/fatal_server.py. Every wait is bounded.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from raftpy import FATAL_EXIT_STATUS
from raftpy.client import SyncClient
from raftpy.errors import RaftError
from raftpy.examples.hashmap import HashMapClient
from raftpy.transport.address import free_port
from tests.node.fatal_server import CRASH
from tests.processhelpers import FAST_ARGS, wait_until

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parents[2]


def start(address: str, data: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "tests.node.fatal_server", "server", "1", "1", address),
                *("--data-dir", str(data), *FAST_ARGS),
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RAFTPY_LOG": "info"},
        )


def put_until_served(address: str, key: str, value: str) -> None:
    def served() -> bool:
        try:
            with HashMapClient([address], timeout=2) as client:
                client.put(key, value)
            return True
        except RaftError:
            return False

    wait_until(served, 30, f"{address} to take a write")


def test_an_internal_error_in_the_loop_exits_70_with_a_critical_line(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    log = tmp_path / "node.log"
    proc = start(address, tmp_path / "data", log)
    try:
        put_until_served(address, "before", "1")
        with SyncClient([address], timeout=5) as client, pytest.raises(RaftError):
            client.propose(CRASH)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the node lives on after its loop failed: {log.read_text()}"
            ) from None
        text = log.read_text(errors="replace")
        assert code == FATAL_EXIT_STATUS == 70, text
        assert "CRITICAL" in text and "internal error" in text, text
        assert "planted invariant failure" in text and "exiting with status 70" in text, text
        # What a supervisor does: start it again; it serves what it had acknowledged.
        proc = start(address, tmp_path / "data", log)
        put_until_served(address, "after", "2")
        with HashMapClient([address], timeout=5) as client:
            assert client.get("before") == "1"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
