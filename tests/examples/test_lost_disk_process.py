"""A member that lost its disk, end to end: in a 3-process hashmap cluster one follower's data
dir is deleted and the follower is restarted with the same id. Its peers pinned the incarnation
of its old data dir, so they refuse it both ways (it must not vote as its old self, with term 0,
an empty log and no record of its vote), say so in one ERROR line with the fix, list it in
their status, and go on taking writes with the two of them. A damaged pin file stops start-up
naming the file.

Every wait is bounded; every process is killed when the test ends, pass or fail.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from raftpy.client import SyncClient
from raftpy.examples.hashmap import HashMapClient
from raftpy.node.status import NodeStatus
from tests.examples.test_examples_process import leader_of, put_until_acknowledged
from tests.processhelpers import FAST_ARGS, ProcessCluster, wait_until

pytestmark = [pytest.mark.process, pytest.mark.timeout(240)]


def status_of(c: ProcessCluster, i: int) -> NodeStatus | None:
    try:
        with SyncClient([c.address(i)], timeout=2.0) as client:
            return client.status(c.address(i))
    except Exception:
        return None


def pinned(c: ProcessCluster, i: int) -> list[str]:
    peers = c.root / f"data{i}" / "PEERS"
    return peers.read_text().splitlines() if peers.exists() else []


def test_a_follower_that_lost_its_disk_is_refused_and_writes_go_on(tmp_path: Path) -> None:
    with ProcessCluster("hashmap", 3, tmp_path) as c:
        c.start_all()
        leader = leader_of(c, timeout=30)
        # Every pair meets at start, followers too: each node pins the two others.
        wait_until(lambda: all(len(pinned(c, i)) == 2 for i in (1, 2, 3)), 30, "all pins")
        with HashMapClient(c.addresses, timeout=10) as client:
            for k in range(20):
                put_until_acknowledged(client, f"before{k}", k)

        lost = next(i for i in (1, 2, 3) if i != leader)
        others = [i for i in (1, 2, 3) if i != lost]
        c.kill(lost)
        shutil.rmtree(tmp_path / f"data{lost}")
        c.start(lost)  # same id, same address, an empty data dir

        line = f"node {lost} came back with a different data directory"

        def said_by_both() -> bool:
            return all(line in c.logs[i].read_text(errors="replace") for i in others)

        wait_until(said_by_both, 30, "the survivors to refuse the node that lost its disk")

        def listed_by_both() -> bool:
            for i in others:
                st = status_of(c, i)
                if st is None or lost not in st.refused_members:
                    return False
            return True

        wait_until(listed_by_both, 30, "the survivors' status to list it")
        st = status_of(c, others[0])
        assert st is not None
        assert "remove it and add it back" in st.refused_members[lost]

        # Writes keep succeeding with the two others, and everything reads back.
        with HashMapClient([c.address(i) for i in others], timeout=10) as client:
            for k in range(20):
                put_until_acknowledged(client, f"after{k}", k)
            for k in range(20):
                assert client.get(f"before{k}") == k
                assert client.get(f"after{k}") == k

        # Nothing reached the node that lost its disk: it holds nothing and was never pinned
        # again (its peers' PEERS still name the old data dir).
        gone = status_of(c, lost)
        assert gone is not None and gone.commit == 0 and gone.applied == 0
        assert c.procs[lost].poll() is None
        for i in others:
            text = c.logs[i].read_text(errors="replace")
            refusals = [ln for ln in text.splitlines() if line in ln]
            # One line, rate-limited (a minute per member); the test may outlast a minute.
            assert 1 <= len(refusals) <= 3, refusals
            assert "ERROR" in refusals[0], refusals[0]
            assert 'README.md, "Changing members"' in refusals[0]
        lost_log = c.logs[lost].read_text(errors="replace")
        assert "by another data directory" in lost_log


def test_a_damaged_pin_file_stops_start_up_naming_the_file(tmp_path: Path) -> None:
    data = tmp_path / "data1"
    data.mkdir()
    (data / "PEERS").write_text('{"node_id":2,"incarnation":"' + "a" * 32 + '"}\nnot json\n')
    argv = [
        sys.executable,
        "-m",
        "raftpy.examples.hashmap",
        "server",
        "1",
        "1",
        "127.0.0.1:1",
        "2",
        "127.0.0.1:2",
        "3",
        "127.0.0.1:3",
        "--data-dir",
        str(data),
        *FAST_ARGS,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1, (out.returncode, out.stderr[-2000:])
    assert f"peer incarnation file {data / 'PEERS'} is damaged at line 2 (byte offset 63)" in (
        out.stderr
    ), out.stderr[-2000:]
