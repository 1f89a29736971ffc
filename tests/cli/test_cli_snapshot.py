"""``raftpy snapshot ADDRESS`` and the example servers' snapshot options.

The command runs as a real process against real nodes: hashmap servers on 127.0.0.1, and an
in-process :class:`RaftNode` on its TCP transport whose state machine cannot write a snapshot.
Every wait is bounded; every process is killed when a test ends, pass or fail.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

import pytest

from raftpy.cli import main as cli_main
from raftpy.client import Client, SyncClient
from raftpy.errors import ClusterUnavailableError, RemoteProtocolError
from raftpy.examples import service
from raftpy.examples.hashmap import HashMapClient
from raftpy.node import RaftNode
from raftpy.node.config import NODE_RAFT_DEFAULTS, NodeConfig
from raftpy.node.status import NodeStatus, SnapshotStatus
from tests.examples.test_examples_process import put_until_acknowledged
from tests.nodehelpers import KV, set_cmd, wait_for
from tests.processhelpers import ProcessCluster, free_port, wait_until

pytestmark = pytest.mark.timeout(60)

ANSWER = re.compile(r"^snapshot at index (\d+) term (\d+)\n$")


def raftpy(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m raftpy.cli args...`` (the ``raftpy`` command); bounded."""
    return subprocess.run(
        [sys.executable, "-m", "raftpy.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def snapshot_files(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "snapshots").glob("*.snap"))


def committed_leader(sc: SyncClient, c: ProcessCluster) -> NodeStatus:
    """The status of a leader whose whole log is committed, once there is one. Its commit
    index then covers an entry of its own term: the no-op it appends when elected (Raft §8)."""
    found: list[NodeStatus] = []

    def settled() -> bool:
        for address in c.addresses:
            st = sc.status(address)
            if st.role == "leader" and st.commit == st.last_index:
                found.append(st)
                return True
        return False

    wait_until(settled, 10, "a leader with its whole log committed")
    return found[-1]


def assert_asking_again_takes_none(
    sc: SyncClient, address: str, data_dir: Path, answer: str
) -> None:
    """Ask ``address`` for a snapshot again: with nothing applied since the one in ``answer``,
    it answers the same and takes none (no new file). On a loaded machine an election may
    apply its leader's no-op in between, and the node then rightly takes a new snapshot: the
    check is made on the next request (bounded)."""
    for _ in range(10):
        m = ANSWER.match(answer)
        assert m is not None, answer
        files = snapshot_files(data_dir)
        before = sc.status(address).snapshot
        assert before is not None
        taken = before.taken
        again = raftpy("snapshot", address)
        assert again.returncode == 0, again.stderr
        st = sc.status(address)
        if st.applied == int(m[1]):  # nothing applied since that snapshot
            assert again.stdout == answer
            assert st.snapshot is not None and st.snapshot.taken == taken
            assert snapshot_files(data_dir) == files
            return
        answer = again.stdout
    raise AssertionError(f"{address} applied entries between each of 10 snapshot requests")


def test_snapshot_of_the_leader_and_of_a_follower(tmp_path: Path) -> None:
    # Automatic snapshots off: every snapshot here is one the command asked for.
    extra = ["--snapshot-entries", "0", "--snapshot-bytes", "0"]
    with ProcessCluster("hashmap", 3, tmp_path, extra=extra).start_all() as c:
        with HashMapClient(c.addresses) as client:
            for i in range(20):
                put_until_acknowledged(client, f"k{i}", i)

        with SyncClient(c.addresses) as sc:
            settled = committed_leader(sc, c)
            leader, term0, commit = settled.id, settled.term, settled.commit
            assert term0 is not None and commit is not None
            follower = next(i for i in range(1, 4) if i != leader)
            wait_until(
                lambda: all(
                    (sc.status(c.address(i)).applied or 0) >= commit for i in (leader, follower)
                ),
                10,
                "the leader and a follower to apply everything",
            )
            for node in (leader, follower):
                assert snapshot_files(tmp_path / f"data{node}") == []
                r = raftpy("snapshot", c.address(node), "--timeout", "10")
                assert r.returncode == 0, r.stderr
                m = ANSWER.match(r.stdout)
                assert m is not None, r.stdout
                index, term = int(m[1]), int(m[2])
                st = sc.status(c.address(node))
                assert index >= commit >= 21  # the leader's no-op and 20 puts
                assert st.snapshot == SnapshotStatus(
                    index=index,
                    term=term,
                    taken=1,
                    installed=0,
                    sent=0,
                    bytes_sent=0,
                    bytes_received=0,
                )
                # The snapshot ends at or after term0's no-op, so at an entry of term0 or
                # later: the node's own term, unless an election came since (a loaded machine).
                assert st.term is not None and term0 <= term <= st.term
                assert snapshot_files(tmp_path / f"data{node}") == [
                    f"{index:020d}-{term:020d}.snap"
                ]
                assert_asking_again_takes_none(
                    sc, c.address(node), tmp_path / f"data{node}", r.stdout
                )


def test_unreachable_node_exits_1(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"  # nobody listens there
    started = time.monotonic()
    # Several refused attempts fit in the budget; the one the deadline may cut short while it
    # connects (a loaded machine) does not hide why the earlier ones failed.
    r = raftpy("snapshot", address, "--timeout", "2")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout == ""
    assert r.stderr.startswith(f"raftpy snapshot: {address}: "), r.stderr
    assert "cannot connect" in r.stderr, r.stderr
    assert time.monotonic() - started < 10


def test_node_of_another_cluster_ends_at_once_with_one_line(tmp_path: Path) -> None:
    """A refusal asking again cannot change (another cluster id) ends the command at once with
    one line, instead of retrying for the whole --timeout with a line per attempt."""
    with ProcessCluster("hashmap", 1, tmp_path, extra=["--cluster-id", "alpha"]).start_all() as c:
        address = c.address(1)
        started = time.monotonic()
        r = raftpy("snapshot", address, "--cluster-id", "beta", "--timeout", "30", timeout=60)
        assert time.monotonic() - started < 10  # not the 30 s deadline
        assert (r.returncode, r.stdout) == (1, "")
        assert r.stderr == (
            f"raftpy snapshot: {address}: {address} handshake refused: cluster id does not "
            "match (asking again cannot change that: check the address, the cluster id and the "
            "TLS settings)\n"
        )
        r = raftpy("snapshot", address, "--cluster-id", "alpha")
        assert r.returncode == 0, r.stderr
        assert ANSWER.match(r.stdout), r.stdout


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([], id="no-address"),
        pytest.param(["nope"], id="not-host-port"),
        pytest.param(["127.0.0.1:0"], id="port-0"),
        pytest.param(["127.0.0.1:70000"], id="port-too-big"),
        pytest.param(["127.0.0.1:1", "--timeout", "0"], id="timeout-0"),
        pytest.param(["127.0.0.1:1", "--timeout", "x"], id="timeout-nan"),
        pytest.param(["127.0.0.1:1", "--timeout", "inf"], id="timeout-inf"),
        pytest.param(["127.0.0.1:1", "127.0.0.1:2"], id="two-addresses"),
        pytest.param(["127.0.0.1:1", "--bogus"], id="unknown-option"),
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["snapshot", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    # argparse: the subcommand's usage, or the top-level one for arguments left over.
    assert "usage: raftpy" in err
    assert "error:" in err


def test_help_names_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["snapshot", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: raftpy snapshot [-h] [--timeout S] [--cluster-id ID]")
    assert "--tls-cert F" in out and "ADDRESS" in out


class CannotSnapshot(KV):
    """A state machine whose snapshots always fail, as on a broken disk (for tests)."""

    def snapshot(self, out: BinaryIO) -> None:
        raise OSError(5, "Input/output error")


def test_failed_snapshot_exits_1(tmp_path: Path) -> None:
    async def scenario() -> None:
        address = f"127.0.0.1:{free_port()}"
        config = NodeConfig(
            tick_seconds=0.01, exit_on_fatal=False, snapshot_entries=None, snapshot_bytes=None
        )
        node = RaftNode(1, address, {1: address}, CannotSnapshot(), tmp_path, config)
        async with node:
            await wait_for(lambda: node.role.value == "leader")
            await node.propose(set_cmd("a", "1"), timeout=5)
            async with Client([address], timeout=5) as client:
                with pytest.raises(RemoteProtocolError, match="Input/output error"):
                    await client.snapshot(address)
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "raftpy.cli",
                "snapshot",
                address,
                "--timeout",
                "5",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            async with asyncio.timeout(30):
                out, err = await proc.communicate()
            assert proc.returncode == 1, (out, err)
            assert out == b""
            assert err.decode().startswith(f"raftpy snapshot: {address}: "), err
            assert b"Input/output error" in err
            # The node carries on serving.
            assert await node.propose(set_cmd("a", "2"), timeout=5) == b"1"
        assert snapshot_files(tmp_path) == []

    asyncio.run(asyncio.wait_for(scenario(), 45))


def test_client_snapshot_deadline_when_unreachable() -> None:
    async def scenario() -> None:
        address = f"127.0.0.1:{free_port()}"
        async with Client([address], timeout=5, connect_timeout=0.2) as client:
            started = asyncio.get_running_loop().time()
            with pytest.raises(ClusterUnavailableError, match="no snapshot from"):
                await client.snapshot(address, timeout=0.5)
            assert asyncio.get_running_loop().time() - started < 2
            with pytest.raises(ValueError):
                await client.snapshot("nope")

    asyncio.run(asyncio.wait_for(scenario(), 20))


# -- the example servers' options ----------------------------------------------------------

MEMBERS = ["1", "1", "127.0.0.1:8080"]


def test_server_snapshot_options_parse() -> None:
    _, _, opts = service.parse_server_args("hashmap", MEMBERS)
    default = NodeConfig()
    assert (opts.snapshot_entries, opts.snapshot_bytes, opts.segment_size) == (
        default.snapshot_entries,
        default.snapshot_bytes,
        default.segment_size,
    )
    argv = [*MEMBERS, "--snapshot-entries", "0", "--snapshot-bytes", "5", "--segment-size"]
    _, _, opts = service.parse_server_args("hashmap", [*argv, "4096"])
    assert (opts.snapshot_entries, opts.snapshot_bytes, opts.segment_size) == (0, 5, 4096)
    # The ratio: the default, a value, and 0 for off (None in the config).
    assert service.server_config(opts).snapshot_ratio == default.snapshot_ratio == 1.0
    for given, used in (("0.1", 0.1), ("2.5", 2.5), ("0", None)):
        _, _, opts = service.parse_server_args("hashmap", [*MEMBERS, "--snapshot-ratio", given])
        assert service.server_config(opts).snapshot_ratio == used


@pytest.mark.parametrize(
    "option",
    [
        pytest.param(["--snapshot-entries", "-1"], id="entries-negative"),
        pytest.param(["--snapshot-entries", "1e3"], id="entries-not-int"),
        pytest.param(["--snapshot-bytes", "-5"], id="bytes-negative"),
        pytest.param(["--snapshot-bytes", "64MiB"], id="bytes-with-unit"),
        pytest.param(["--snapshot-ratio", "-0.5"], id="ratio-negative"),
        pytest.param(["--snapshot-ratio", "nan"], id="ratio-nan"),
        pytest.param(["--snapshot-ratio", "inf"], id="ratio-inf"),
        pytest.param(["--snapshot-ratio", "10%"], id="ratio-percent"),
        pytest.param(["--segment-size", "4095"], id="segment-too-small"),
        pytest.param(["--segment-size", "0"], id="segment-0"),
        pytest.param(["--segment-size", "big"], id="segment-not-int"),
    ],
)
def test_server_bad_snapshot_options_exit_2(
    option: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        service.main("raftpy.examples.hashmap", "hashmap", ["server", *MEMBERS, *option], KV, [])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert option[0] in err.splitlines()[0]  # the error names the option
    assert "--segment-size BYTES" in err  # the usage lists the options


def test_server_options_build_the_node_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """The servers' defaults are the library's, and the consensus options land in
    ``NodeConfig.raft`` (the node's defaults for everything else)."""
    monkeypatch.delenv("RAFTPY_UNSAFE_STALE_READS", raising=False)
    _, _, opts = service.parse_server_args("hashmap", MEMBERS)
    assert service.server_config(opts) == NodeConfig()
    argv = [*MEMBERS, "--tick-ms", "10", "--election-ticks", "20", "--heartbeat-ticks", "2"]
    _, _, opts = service.parse_server_args("hashmap", argv)
    config = service.server_config(opts)
    assert config.raft == dataclasses.replace(
        NODE_RAFT_DEFAULTS, election_ticks=20, heartbeat_ticks=2
    )
    assert config == dataclasses.replace(NodeConfig(), tick_seconds=0.01, raft=config.raft)


@pytest.mark.parametrize(
    ("option", "named"),
    [
        pytest.param(["--election-ticks", "1"], "--election-ticks", id="election-not-above"),
        pytest.param(["--heartbeat-ticks", "0"], "--heartbeat-ticks", id="heartbeat-0"),
        pytest.param(["--tick-ms", "0"], "--tick-ms", id="tick-0"),
        pytest.param(["--cluster-id", ""], "--cluster-id", id="cluster-id-empty"),
    ],
)
def test_server_options_the_config_refuses_exit_2_naming_the_option(
    option: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        service.main("raftpy.examples.hashmap", "hashmap", ["server", *MEMBERS, *option], KV, [])
    assert exc.value.code == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith(f"error: bad {named}"), first
