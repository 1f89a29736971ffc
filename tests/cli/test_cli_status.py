"""``raftpy status ADDR...``: the table and the ``--json`` object.

Rendering is pinned exactly from fixed statuses (a leader, a lagging follower with an error, a
node that did not answer); usage errors exit 2 naming the address; then the command runs as a
real process against a real 3-node hashmap cluster plus one dead address. Every wait is
bounded; every process is killed when a test ends.
"""

# ruff: noqa: E501 - the expected table is as wide as the command prints it

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from raftpy.cli import main as cli_main
from raftpy.cli.status import COLUMNS, Answer, render_json, render_table
from raftpy.node.leadership import LeadershipEvent
from raftpy.node.status import NodeStatus, PeerReplication, TransferStatus
from tests.nodehelpers import leader_status
from tests.processhelpers import ProcessCluster, free_port, wait_until

NOW = 1_800_000_000.0


def _peer(
    address: str, match: int, lag: int, seconds: float | None, active: bool = True
) -> PeerReplication:
    return PeerReplication(
        address=address,
        match=match,
        next=match + 1,
        state="replicate",
        lag=lag,
        active=active,
        lag_seconds=seconds,
    )


LEADER = leader_status(
    address="10.0.0.1:7001",
    term=4,
    leader_address="10.0.0.1:7001",
    commit=120,
    applied=120,
    last_index=120,
    first_index=1,
    learners=(4,),
    peers={
        1: _peer("10.0.0.1:7001", 120, 0, 0.0),
        2: _peer("10.0.0.2:7001", 97, 23, 1.26),
        3: _peer("10.0.0.3:7001", 120, 0, 0.0),
        4: _peer("10.0.0.4:7001", 0, 120, None, active=False),
    },
    fsync_p99=0.0016,
    elections=(
        LeadershipEvent(time=NOW - 60, term=4, role="leader", leader=1, reason="leader transfer"),
    ),
)
FOLLOWER = msgspec.structs.replace(
    LEADER,
    id=2,
    address="10.0.0.2:7001",
    role="follower",
    commit=97,
    applied=95,
    last_index=97,
    peers={},
    fsync_p99=2.5,
    last_error="rejected a message from node 5: its term is\nfrom the future " + "x" * 80,
    last_error_time=NOW - 42,
    elections=(),
)
UNHEALTHY = msgspec.structs.replace(
    FOLLOWER,
    id=3,
    address="10.0.0.3:7001",
    commit=120,
    applied=120,
    last_index=120,
    fsync_p99=None,
    last_error=None,
    last_error_time=None,
    healthy=False,
    unhealthy_reason="fsync p99 2.5 s over 1 s",
)

ANSWERS = [
    Answer("10.0.0.1:7001", LEADER),
    Answer("10.0.0.2:7001", FOLLOWER),
    Answer("10.0.0.3:7001", UNHEALTHY),
    Answer("10.0.0.9:7001", None, "cannot connect: [Errno 111] Connection refused"),
]

TABLE = """\
+----+---------------+----------------------+------+--------+--------+---------+------------+----------+-----+----------+-----------+------------------------------------------------------------------------+
| ID |    ADDRESS    |         ROLE         | TERM | LEADER | COMMIT | APPLIED | LAST INDEX | MEMBERS  | LAG | LAG TIME | FSYNC P99 |                               LAST ERROR                               |
+----+---------------+----------------------+------+--------+--------+---------+------------+----------+-----+----------+-----------+------------------------------------------------------------------------+
|  1 | 10.0.0.1:7001 | leader               |    4 |      1 |    120 |     120 |        120 | 1,2,3 +4 |   0 |     0.0s |     1.6ms | -                                                                      |
|  2 | 10.0.0.2:7001 | follower             |    4 |      1 |     97 |      95 |         97 | 1,2,3 +4 |  23 |     1.3s |     2.50s | rejected a message from node 5: its term is from the futu... (42s ago) |
|  3 | 10.0.0.3:7001 | follower (unhealthy) |    4 |      1 |    120 |     120 |        120 | 1,2,3 +4 |   0 |     0.0s |         - | -                                                                      |
|  ? | 10.0.0.9:7001 | no answer            |    - |      - |      - |       - |          - | -        |   - |        - |         - | cannot connect: [Errno 111] Connection refused                         |
+----+---------------+----------------------+------+--------+--------+---------+------------+----------+-----+----------+-----------+------------------------------------------------------------------------+
"""


def test_the_table_is_exact() -> None:
    assert render_table(ANSWERS, NOW) == TABLE


def test_without_a_leader_the_lag_is_unknown() -> None:
    table = render_table([Answer("10.0.0.2:7001", FOLLOWER), ANSWERS[3]], NOW)
    row = table.splitlines()[3]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[COLUMNS.index("LAG")] == "?" and cells[COLUMNS.index("LAG TIME")] == "?"


def test_a_node_the_leader_does_not_list_has_unknown_lag() -> None:
    stranger = msgspec.structs.replace(FOLLOWER, id=7, address="10.0.0.7:7001")
    table = render_table([ANSWERS[0], Answer("10.0.0.7:7001", stranger)], NOW)
    cells = [c.strip() for c in table.splitlines()[4].strip("|").split("|")]
    assert cells[0] == "7" and cells[COLUMNS.index("LAG")] == "?"


def test_stopped_failed_and_disk_full_nodes_say_so() -> None:
    stopped = msgspec.structs.replace(FOLLOWER, running=False, last_error=None)
    failed = msgspec.structs.replace(FOLLOWER, failed="fatal storage error: EIO at wal/0001")
    full = msgspec.structs.replace(FOLLOWER, disk_full=True)
    rows = render_table(
        [Answer("a:1", stopped), Answer("a:2", failed), Answer("a:3", full)], NOW
    ).splitlines()[3:6]
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    role, error = COLUMNS.index("ROLE"), COLUMNS.index("LAST ERROR")
    assert [c[role] for c in cells] == ["stopped", "failed", "follower"]
    assert cells[1][error] == "fatal storage error: EIO at wal/0001"
    assert cells[2][error] == "disk full"


def test_the_json_object_has_the_documented_keys_and_round_trips() -> None:
    obj = json.loads(json.dumps(render_json(ANSWERS)))
    assert set(obj) == {"format", "nodes"} and obj["format"] == 1
    assert [n["address"] for n in obj["nodes"]] == [a.address for a in ANSWERS]
    for node in obj["nodes"]:
        assert set(node) == {"address", "ok", "error", "status"}
    dead = obj["nodes"][3]
    assert dead == {
        "address": "10.0.0.9:7001",
        "ok": False,
        "error": "cannot connect: [Errno 111] Connection refused",
        "status": None,
    }
    leader = obj["nodes"][0]
    assert leader["ok"] is True and leader["error"] is None
    assert leader["status"]["peers"]["2"]["lag_seconds"] == 1.26
    assert msgspec.convert(leader["status"], NodeStatus, strict=False) == LEADER


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["status", "127.0.0.1:7001", "nohostport"], "'nohostport'"),
        (["status", "127.0.0.1:0"], "'127.0.0.1:0'"),
        (["status", "no-such-host.invalid:7001"], "'no-such-host.invalid:7001'"),
        (["status", "127.0.0.1:7001", "--timeout", "0"], "--timeout"),
        (["status", "127.0.0.1:7001", "--watch", "nan"], "--watch"),
        (["status"], "ADDR"),
    ],
)
def test_usage_errors_exit_2_naming_the_culprit(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(argv) == 2
    captured = capsys.readouterr()
    assert named in captured.err and captured.out == ""


def test_help_documents_the_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["status", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Exit status: 0 every node answered; 1 some did not" in text
    assert "2 usage error" in text and "docs/status.md" in text


# -- a real cluster ----------------------------------------------------------------------------


def raftpy(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m raftpy.cli args...`` (the ``raftpy`` command); bounded."""
    return subprocess.run(
        [sys.executable, "-m", "raftpy.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


@pytest.mark.process
@pytest.mark.timeout(90)
def test_status_of_a_real_cluster_and_a_dead_address(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with ProcessCluster("hashmap", 3, tmp_path).start_all() as c:
        addresses = c.addresses
        rows: list[list[str]] = []

        def settled() -> bool:
            """One leader all three follow, every log committed and caught up (lag 0)."""
            r = raftpy("status", *addresses, "--timeout", "5")
            if r.returncode != 0:
                return False
            lines = r.stdout.splitlines()
            rows[:] = [_cells(line) for line in lines[3:-1]]
            leaders = {row[COLUMNS.index("LEADER")] for row in rows}
            lags = {row[COLUMNS.index("LAG")] for row in rows}
            return len(leaders) == 1 and "-" not in leaders and lags == {"0"}

        wait_until(settled, 30, "a settled cluster")

        r = raftpy("status", *addresses, dead, "--timeout", "2")
        assert r.returncode == 1, r.stderr
        assert r.stderr == ""
        lines = r.stdout.splitlines()
        assert len(lines) == 8
        rule = lines[0]
        assert re.fullmatch(r"(\+-+)+\+", rule) and lines[2] == rule and lines[-1] == rule
        assert _cells(lines[1]) == list(COLUMNS)
        table = [_cells(line) for line in lines[3:7]]
        assert [row[1] for row in table] == [*addresses, dead]
        col = {name: i for i, name in enumerate(COLUMNS)}
        leader_rows = [row for row in table[:3] if row[col["ROLE"]] == "leader"]
        assert len(leader_rows) == 1
        leader = leader_rows[0]
        assert leader[col["ID"]] == leader[col["LEADER"]]
        assert leader[col["LAG"]] == "0" and leader[col["LAG TIME"]] == "0.0s"
        for i, row in enumerate(table[:3], start=1):
            assert row[col["ID"]] == str(i)
            assert row[col["ROLE"]] in ("leader", "follower")
            assert row[col["LEADER"]] == leader[col["ID"]]
            assert row[col["MEMBERS"]] == "1,2,3"
            assert row[col["TERM"]] == leader[col["TERM"]]
            assert re.fullmatch(r"\d+\.\ds", row[col["LAG TIME"]])
            assert re.fullmatch(r"\d+\.\d+m?s", row[col["FSYNC P99"]])
            assert row[col["LAST ERROR"]] == "-"
        gone = table[3]
        assert gone[: col["LAST ERROR"]] == ["?", dead, "no answer", *["-"] * 9]
        assert "Connection refused" in gone[col["LAST ERROR"]]

        j = raftpy("status", *addresses, dead, "--timeout", "2", "--json")
        assert j.returncode == 1
        obj = json.loads(j.stdout)
        assert obj["format"] == 1
        nodes = obj["nodes"]
        assert [n["address"] for n in nodes] == [*addresses, dead]
        assert all(set(n) == {"address", "ok", "error", "status"} for n in nodes)
        assert [n["ok"] for n in nodes] == [True, True, True, False]
        assert nodes[3]["status"] is None and "Connection refused" in nodes[3]["error"]
        statuses = [msgspec.convert(n["status"], NodeStatus, strict=False) for n in nodes[:3]]
        (lead,) = [s for s in statuses if s.role == "leader"]
        own = (lead.peers or {})[lead.id]
        assert own.active and own.lag == 0 and own.lag_seconds == 0.0
        assert lead.elections[-1].role == "leader" and lead.fsync_p99 is not None

        ok = raftpy("status", *addresses, "--timeout", "5")
        assert ok.returncode == 0, ok.stdout + ok.stderr


@pytest.mark.process
@pytest.mark.timeout(60)
def test_watch_redraws_until_ctrl_c_then_exits_0() -> None:
    dead = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "raftpy.cli", "status", dead, "--watch", "0.1", "--timeout", "0.3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        headers = 0
        while headers < 2:  # two rounds drawn (each bounded by --timeout)
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            headers += line.startswith("| ID ")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_snapshot_transfers_in_progress_are_listed_under_the_table() -> None:
    sending = TransferStatus(
        peer=3, direction="send", index=10_000, bytes_done=3 << 20, size=12 << 20, started=NOW - 4
    )
    receiving = TransferStatus(
        peer=1, direction="receive", index=10_000, bytes_done=4 << 20, size=12 << 20, started=NOW
    )
    leader = msgspec.structs.replace(LEADER, transfers=(sending,))
    follower = msgspec.structs.replace(FOLLOWER, id=3, transfers=(receiving,))
    table = render_table([Answer("10.0.0.1:7001", leader), Answer("10.0.0.3:7001", follower)], NOW)
    assert table.split("+\n")[-1] == (
        "snapshot transfers in progress:\n"
        "  1 -> 3: snapshot at index 10000, 25% (3.0 of 12.0 MiB), for 4.0s (as node 1 sees it)\n"
        "  1 -> 3: snapshot at index 10000, 33% (4.0 of 12.0 MiB), for 0.0s (as node 3 sees it)\n"
    )
    assert render_table(ANSWERS, NOW).endswith("+\n")  # none in progress: nothing under it
