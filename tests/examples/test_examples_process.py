"""End-to-end tests of the example services as real processes on 127.0.0.1 (their command line
is in README.md).

Ports are chosen free by the test; every wait is bounded; every process is killed when a test
ends, pass or fail.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raftpy.client import SyncClient
from raftpy.errors import ClusterUnavailableError, IndeterminateError
from raftpy.examples.hashmap import HashMapClient
from raftpy.examples.register import RegisterClient
from tests.processhelpers import ProcessCluster, run_cli, wait_until


def leader_of(cluster: ProcessCluster, timeout: float = 10.0) -> int:
    """The id of the node that says it leads, once exactly one does."""
    found: list[int] = []

    def one_leader() -> bool:
        found.clear()
        for i, proc in cluster.procs.items():
            if proc.poll() is not None:
                continue
            try:
                with SyncClient([cluster.address(i)], timeout=1.0) as client:
                    st = client.status(cluster.address(i))
            except Exception:
                continue
            if st.role == "leader":
                found.append(i)
        return len(found) == 1

    wait_until(one_leader, timeout, "one leader")
    return found[0]


def put_until_acknowledged(
    client: HashMapClient, key: str, value: object, timeout: float = 60.0
) -> object:
    """Put ``key = value`` until a leader acknowledges it; return the previous value.

    The client's session already resends a write whose answer was lost, applied once; a call
    still ends unknown when its deadline passes first (a loaded machine with no leader for
    that long). Such a write is sent again here in a new call, so a copy of it may apply
    late: use this only where that is harmless. Bounded by ``timeout`` plus one call of
    ``client``.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return client.put(key, value)
        except (IndeterminateError, ClusterUnavailableError) as exc:
            last = exc
    raise AssertionError(f"put {key}={value!r} not acknowledged within {timeout} s: {last}")


def test_register_readme_commands(tmp_path: Path) -> None:
    with ProcessCluster("register", 3, tmp_path).start_all() as c:
        addrs = c.addresses
        r = run_cli("register", "get", *addrs)
        assert (r.returncode, r.stdout) == (0, "\n"), r.stderr
        r = run_cli("register", "put", "hello", *addrs)
        assert (r.returncode, r.stdout) == (0, "\n"), r.stderr  # previous value: empty
        r = run_cli("register", "get", addrs[2])
        assert (r.returncode, r.stdout) == (0, "hello\n"), r.stderr
        r = run_cli("register", "cas", "nope", "x", *addrs)
        assert (r.returncode, r.stdout) == (0, "hello\n"), r.stderr  # no swap
        r = run_cli("register", "cas", "hello", "world", *addrs)
        assert (r.returncode, r.stdout) == (0, "hello\n"), r.stderr
        r = run_cli("register", "put", "", *addrs)  # an empty value works
        assert (r.returncode, r.stdout) == (0, "world\n"), r.stderr
        with RegisterClient(addrs) as client:
            assert client.get() == ""
            assert client.put("py") == ""
            assert client.cas("py", "thon") == "py"
            assert client.get() == "thon"


def test_hashmap_readme_commands(tmp_path: Path) -> None:
    with ProcessCluster("hashmap", 3, tmp_path).start_all() as c:
        addrs = c.addresses
        expect = [
            (("get", "color"), "null"),
            (("put", "color", "blue"), "null"),
            (("get", "color"), '"blue"'),
            (("cas", "color", "blue", "red"), "true"),
            (("cas", "color", "blue", "green"), "false"),
            (("cas", "missing", "x", "y"), "false"),  # a missing key answers false
            (("put", "color", ""), '"red"'),
            (("get", "color"), '""'),
        ]
        for args, out in expect:
            r = run_cli("hashmap", *args, *addrs)
            assert (r.returncode, r.stdout.strip()) == (0, out), (args, r.stderr)
        with HashMapClient(addrs) as client:
            assert client.put("n", {"a": [1, 2]}) is None
            assert client.get("n") == {"a": [1, 2]}
            assert client.cas("n", {"a": [1, 2]}, 7) is True
            assert client.get("n") == 7


def run_cli_stdin(example: str, data: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m raftpy.examples.<example> args...`` with ``data`` on stdin; bounded."""
    return subprocess.run(
        [sys.executable, "-m", f"raftpy.examples.{example}", *args],
        input=data,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_values_larger_than_an_argument_come_from_stdin(tmp_path: Path) -> None:
    """A value past Linux's 128 KiB limit on one argument, given as ``-``, arrives bytes exact
    (newlines, a trailing one included, and non-ASCII) in both examples."""
    value = ("first line\r\n\u00e9\u4e2d " + "v" * 200_000 + "\n").encode()
    (tmp_path / "h").mkdir()
    (tmp_path / "r").mkdir()
    with ProcessCluster("hashmap", 3, tmp_path / "h").start_all() as c:
        r = run_cli_stdin("hashmap", value, "put", "big", "-", *c.addresses)
        assert (r.returncode, r.stdout) == (0, b"null\n"), r.stderr
        r = run_cli_stdin("hashmap", b"", "get", "big", *c.addresses)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout).encode() == value
        r = run_cli_stdin("hashmap", value, "cas", "big", "-", "small", *c.addresses)
        assert (r.returncode, r.stdout) == (0, b"true\n"), r.stderr
    with ProcessCluster("register", 3, tmp_path / "r").start_all() as c:
        r = run_cli_stdin("register", value, "put", "-", *c.addresses)
        assert (r.returncode, r.stdout) == (0, b"\n"), r.stderr
        r = run_cli_stdin("register", b"", "get", *c.addresses)
        assert (r.returncode, r.stdout) == (0, value + b"\n"), r.stderr[-500:]


def test_all_addresses_fail_over_past_a_dead_node(tmp_path: Path) -> None:
    """README's advice: with every member's address a client command goes past a dead member
    at once; with only the dead one's address it waits out --timeout and fails (exit 1)."""
    with ProcessCluster("hashmap", 3, tmp_path).start_all() as c:
        leader_of(c)
        c.kill(1)
        r = run_cli("hashmap", "put", "k", "v", c.address(1), "--timeout", "2")
        assert r.returncode == 1, r.stderr
        assert r.stderr.startswith("error: not done: "), r.stderr
        t0 = time.monotonic()
        r = run_cli("hashmap", "put", "k", "v", *c.addresses, "--timeout", "20")
        assert (r.returncode, r.stdout) == (0, "null\n"), r.stderr
        assert time.monotonic() - t0 < 15  # an election at most, never the whole deadline


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["get"],
        ["put", "k", "v"],  # hashmap put needs key, value and an address
        ["get", "k", "not-an-address"],
        ["server"],
        ["server", "1"],
        ["server", "1", "2", "127.0.0.1:1"],
        ["server", "1", "1", "127.0.0.1:1", "--bogus"],
        ["get", "k", "127.0.0.1:1", "--timeout", "soon"],
    ],
    ids=lambda a: " ".join(a) or "none",
)
def test_wrong_arguments_print_usage_and_exit_2(args: list[str]) -> None:
    r = run_cli("hashmap", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "usage:" in r.stderr


def test_no_leader_reachable_is_definite_failure(tmp_path: Path) -> None:
    from tests.processhelpers import free_port

    dead = f"127.0.0.1:{free_port()}"
    r = run_cli("hashmap", "put", "k", "v", dead, "--timeout", "1")
    assert r.returncode == 1, r.stderr
    assert "not done" in r.stderr


def test_sigkill_leader_while_writing_loses_no_acknowledged_write(tmp_path: Path) -> None:
    with ProcessCluster("hashmap", 3, tmp_path).start_all() as c:
        acked: dict[str, str] = {}
        with HashMapClient(c.addresses, timeout=10) as client:
            # Each key is written once: a resent copy that applies late is harmless.
            for k in range(30):
                assert put_until_acknowledged(client, f"k{k}", str(k)) in (None, str(k))
                acked[f"k{k}"] = str(k)
            leader = leader_of(c)
            c.kill(leader)
            t0 = time.monotonic()
            assert put_until_acknowledged(client, "after-kill", "1") in (None, "1")
            failover = time.monotonic() - t0
            acked["after-kill"] = "1"
            for k in range(30, 60):
                assert put_until_acknowledged(client, f"k{k}", str(k)) in (None, str(k))
                acked[f"k{k}"] = str(k)
            c.start(leader)
            for key, value in acked.items():
                assert client.get(key) == value
        assert failover < 10


def test_sigkill_all_and_restart_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    with ProcessCluster("hashmap", 3, tmp_path).start_all() as c:
        with HashMapClient(c.addresses, timeout=10) as client:
            for k in range(50):  # each key written once: a late resent copy is harmless
                assert put_until_acknowledged(client, f"k{k}", str(k)) in (None, str(k))
        for i in range(1, 4):
            c.kill(i)
        for i in range(1, 4):
            c.start(i)
        with HashMapClient(c.addresses, timeout=15) as client:
            for k in range(50):
                assert client.get(f"k{k}") == str(k)


def test_paused_leader_serves_no_stale_read_after_resuming(tmp_path: Path) -> None:
    with ProcessCluster("hashmap", 3, tmp_path).start_all() as c:
        # "old" must be written exactly once: a write whose outcome is unknown may still apply
        # at any later time, after "new" too, and a read would then rightly see "old". So each
        # attempt takes a fresh key, and the key of the acknowledged one is used from then on.
        key = ""
        for attempt in range(10):
            key = f"x{attempt}"
            try:
                with HashMapClient(c.addresses, timeout=10) as client:
                    assert client.put(key, "old") is None
                break
            except (IndeterminateError, ClusterUnavailableError):
                continue
        else:
            raise AssertionError("no write of 'old' was acknowledged in 10 attempts")
        old = leader_of(c)
        c.signal(old, signal.SIGSTOP)
        try:
            others = [c.address(i) for i in range(1, 4) if i != old]
            # Sending "new" again is harmless: a copy that applies late still writes "new".
            with HashMapClient(others, timeout=10) as client:
                assert put_until_acknowledged(client, key, "new") in ("old", "new")
        finally:
            c.signal(old, signal.SIGCONT)
        # Reads sent straight to the old leader right after it resumes must not see "old":
        # it has to confirm leadership with a quorum (ReadIndex) and finds it was deposed.
        # On a loaded machine a read may wait out an election; what is checked is its answer.
        for _ in range(20):
            with HashMapClient([c.address(old)], timeout=30) as client:
                assert client.get(key) == "new"


def _garbage_payloads() -> list[bytes]:
    return [
        b"\x00\x00\x00\x05hello",  # a frame that is not a handshake
        struct.pack(">I", 0xFFFFFFF0) + b"x",  # an oversized length
        b"\x00\x00\x10\x00abc",  # a truncated frame, then EOF
        b"GET / HTTP/1.1\r\n\r\n",
    ]


def test_garbage_on_every_port_closes_only_that_connection(tmp_path: Path) -> None:
    with ProcessCluster("hashmap", 3, tmp_path).start_all() as c:
        for i in range(1, 4):
            for payload in _garbage_payloads():
                with socket.create_connection(("127.0.0.1", c.ports[i]), timeout=5) as s:
                    s.sendall(payload)
                    s.shutdown(socket.SHUT_WR)
                    s.settimeout(5)
                    try:
                        while s.recv(4096):
                            pass
                    except OSError:
                        pass
        for i in range(1, 4):
            assert c.procs[i].poll() is None, c.log(i)
        with HashMapClient(c.addresses, timeout=10) as client:
            assert client.put("still", "serving") is None
            assert client.get("still") == "serving"
        r = run_cli("hashmap", "get", "still", *c.addresses)
        assert json.loads(r.stdout) == "serving"
