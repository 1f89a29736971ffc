"""The examples' ``server ... --join ADDR... [--no-promote]``: joining a running cluster from
the command line (README.md, "Changing members")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from raftpy.client import Client, SyncClient
from raftpy.examples.service import UsageError, parse_server_args
from raftpy.transport.address import free_port
from tests.processhelpers import FAST_ARGS, ProcessCluster, wait_until


def test_join_takes_a_member_list_of_only_this_server() -> None:
    _, peers, opts = parse_server_args(
        "hashmap", ["4", "4", "127.0.0.1:7004", "--join", "127.0.0.1:7001", "127.0.0.1:7002"]
    )
    assert peers == {4: "127.0.0.1:7004"}
    assert opts.join == ["127.0.0.1:7001", "127.0.0.1:7002"] and not opts.no_promote
    _, _, opts = parse_server_args(
        "hashmap", ["4", "4", "127.0.0.1:7004", "--join", "127.0.0.1:7001", "--no-promote"]
    )
    assert opts.no_promote
    _, _, opts = parse_server_args("hashmap", ["1", "1", "127.0.0.1:7001", "2", "127.0.0.1:7002"])
    assert opts.join == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["4", "4", "127.0.0.1:7004", "1", "127.0.0.1:7001", "--join", "127.0.0.1:7001"], "only"),
        (["4", "4", "127.0.0.1:7004", "--join", "nowhere"], "bad node address"),
        (["1", "1", "127.0.0.1:7001", "--no-promote"], "goes with --join"),
    ],
)
def test_join_usage_errors(args: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_server_args("hashmap", args)


@pytest.mark.process
@pytest.mark.skipif(not hasattr(Client, "add_member"), reason="needs Client.add_member")
def test_a_server_started_with_join_becomes_a_voter(tmp_path: Path) -> None:
    with ProcessCluster("hashmap", 3, tmp_path).start_all() as c:
        port = free_port()
        address = f"127.0.0.1:{port}"
        log = tmp_path / "node4.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "raftpy.examples.hashmap",
                    "server",
                    "4",
                    "4",
                    address,
                    "--data-dir",
                    str(tmp_path / "data4"),
                    *FAST_ARGS,
                    "--join",
                    *c.addresses,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "RAFTPY_LOG": "info"},
            )
        try:

            def voter() -> bool:
                try:
                    with SyncClient([address], timeout=1.0) as client:
                        st = client.status(address)
                except Exception:
                    return False
                return bool(st.member) and 4 in (st.members or ())

            wait_until(voter, 60, f"node 4 to be a voter: {log.read_text(errors='replace')}")
        finally:
            proc.kill()
            proc.wait(timeout=10)
