"""Changing members of a real cluster while it takes writes, as an operator would: a 3-process
hashmap cluster grows to 5 (one server started with ``--join``, which adds and promotes itself;
one added with ``raftpy members add`` while it joins with ``--no-promote``) and shrinks back to 3
with ``raftpy members remove`` (the leader first, then another original member), while a writer
puts a new key every few milliseconds. Afterwards every write that was acknowledged is read back.

Every wait is bounded; every process is killed when the test ends, pass or fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from raftpy.errors import RaftError
from raftpy.examples.hashmap import HashMapClient
from raftpy.node import RaftNode
from raftpy.transport.address import free_port
from tests.processhelpers import FAST_ARGS, ProcessCluster, wait_until

pytestmark = [
    pytest.mark.process,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not hasattr(RaftNode, "add_member"),
        reason="the servers do not serve membership changes yet",
    ),
]


def raftpy(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run the ``raftpy`` command (``python -m raftpy.cli``); bounded."""
    return subprocess.run(
        [sys.executable, "-m", "raftpy.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def until_done(*args: str, deadline: float = 90.0) -> subprocess.CompletedProcess[str]:
    """Run ``raftpy args...`` until it exits 0: a change refused for now (another change still
    pending, a leader election: exit 1) or whose outcome is unknown (exit 3) is asked again,
    which is safe because each change is idempotent. Bounded by ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while True:
        r = raftpy(*args, timeout=max(5.0, end - time.monotonic()))
        if r.returncode == 0:
            return r
        assert r.returncode in (1, 3), (args, r.returncode, r.stdout, r.stderr)
        if time.monotonic() >= end:
            raise AssertionError(f"raftpy {' '.join(args)} never succeeded: {r.stderr}")
        time.sleep(0.2)


def members(addresses: list[str]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        until_done("members", "list", *addresses, "--json", "--timeout", "10").stdout
    )
    return doc


def start_joining(c: ProcessCluster, i: int, join: list[str], *extra: str) -> None:
    """Start server ``i`` with an empty data dir, joining the cluster at ``join``."""
    log = c.root / f"node{i}.log"
    c.logs[i] = log
    with open(log, "ab") as out:
        c.procs[i] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "raftpy.examples.hashmap",
                "server",
                str(i),
                str(i),
                c.address(i),
                "--data-dir",
                str(c.root / f"data{i}"),
                *FAST_ARGS,
                "--join",
                *join,
                *extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RAFTPY_LOG": "info"},
        )
    wait_until(lambda: c._listening(i), 10, f"node {i} to listen")


def read(client: HashMapClient, key: str, attempts: int = 5) -> object:
    """``key``'s value, asked again after a failure (a leader election under load)."""
    for _ in range(attempts - 1):
        try:
            return client.get(key)
        except RaftError:
            time.sleep(0.2)
    return client.get(key)


class Writer(threading.Thread):
    """Puts key ``w<n> = n`` for n = 0, 1, ... until stopped; remembers which were
    acknowledged (a write whose outcome is unknown may or may not have happened: not
    checked) and when."""

    def __init__(self, addresses: list[str]) -> None:
        super().__init__(daemon=True)
        self.addresses = addresses
        self.acked: dict[str, int] = {}
        self.acked_at: list[float] = []
        self.unknown = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with HashMapClient(self.addresses, timeout=2.0) as client:
                n = 0
                while not self.stop.is_set():
                    key = f"w{n}"
                    try:
                        client.put(key, n)
                    except RaftError:
                        self.unknown += 1
                    else:
                        self.acked[key] = n
                        self.acked_at.append(time.monotonic())
                    n += 1
                    time.sleep(0.01)
        except BaseException as exc:  # pragma: no cover - reported by the test
            self.error = exc

    def acked_since(self, t: float) -> int:
        return sum(1 for at in self.acked_at if at >= t)


def test_grow_3_to_5_and_shrink_back_to_3_through_the_cli_while_writing(
    tmp_path: Path,
) -> None:
    with ProcessCluster("hashmap", 3, tmp_path) as c:
        c.start_all()  # the first three bootstrap the cluster: their member list names them
        c.ports.update({4: free_port(), 5: free_port()})  # the two that join later
        first = c.addresses
        every = [c.address(i) for i in range(1, 6)]
        assert members(first)["voters"] == [1, 2, 3]

        writer = Writer(every)
        writer.start()
        try:
            wait_until(lambda: len(writer.acked) >= 20, 60, "writes before the changes")

            # Grow: node 4 joins on its own (learner, then promotes itself once caught up).
            grow = time.monotonic()
            start_joining(c, 4, first)
            wait_until(lambda: 4 in members(first)["voters"], 90, "node 4 to become a voter")

            # Node 5: the operator adds it (the command waits until it has caught up, then
            # promotes it) while it starts joining without promoting itself.
            add = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "raftpy.cli",
                    "members",
                    "add",
                    "5",
                    c.address(5),
                    *first,
                    "--timeout",
                    "120",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                start_joining(c, 5, first, "--no-promote")
                out, err = add.communicate(timeout=150)
            finally:
                if add.poll() is None:
                    add.kill()
                    add.wait(10)
            assert add.returncode == 0, (out, err)
            doc = members(every)
            assert doc["voters"] == [1, 2, 3, 4, 5], doc
            assert not doc["learners"] and not doc["voters_outgoing"], doc
            recorded = {row["id"]: row["address"] for row in doc["members"]}
            assert recorded[4] == c.address(4) and recorded[5] == c.address(5), doc
            grown = writer.acked_since(grow)

            # Shrink: remove the leader (it hands over and steps down once the removal
            # commits), then another of the original members.
            shrink = time.monotonic()
            leader = doc["leader"]
            assert leader in (1, 2, 3, 4, 5)
            first_out = leader
            until_done("members", "remove", str(first_out), *every, "--timeout", "20")
            second_out = next(i for i in (1, 2, 3) if i != first_out)
            until_done("members", "remove", str(second_out), *every, "--timeout", "20")
            doc = members(every)
            expected = sorted(set(range(1, 6)) - {first_out, second_out})
            assert doc["voters"] == expected and not doc["learners"], doc
            assert doc["leader"] in expected, doc
            for gone in (first_out, second_out):
                c.kill(gone)
            before_stop = len(writer.acked)
            wait_until(lambda: len(writer.acked) >= before_stop + 20, 60, "writes after the shrink")
            shrunk = writer.acked_since(shrink)
        finally:
            writer.stop.set()
            writer.join(30)
        assert writer.error is None, writer.error
        assert not writer.is_alive()
        print(
            f"acknowledged {len(writer.acked)} writes ({writer.unknown} unknown): "
            f"{grown} while growing and after, {shrunk} while shrinking and after"
        )
        assert grown > 0 and shrunk > 0

        # Every acknowledged write is there, read through the members that remain.
        remaining = [c.address(i) for i in expected]
        with HashMapClient(remaining, timeout=10.0) as client:
            missing = {
                key: value for key, value in writer.acked.items() if read(client, key) != value
            }
        assert not missing, f"{len(missing)} acknowledged writes lost: {sorted(missing)[:10]}"
