"""``raftpy members list|add|promote|remove`` and ``raftpy transfer-leader``.

Against a scripted leader (the fake nodes of tests/client, served from another thread while
the command runs in this one): output, exit statuses, and the add-then-promote flow. Against
a real in-process cluster on TCP once ``RaftNode`` has the membership methods. Usage errors
exit 2 without sending anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest

from raftpy.cli import main as cli_main
from raftpy.cli.members import CatchUpProgress, members_table
from raftpy.node import RaftNode
from raftpy.node.stats import NodeStats
from raftpy.node.status import NodeStatus, PeerReplication
from raftpy.transport.protocol import (
    ClientOp,
    ClientRequest,
    MemberRequest,
    Members,
    ResponseStatus,
)
from tests.client.test_client import FakeConn, FakeNode, answer, follower, nodes_in_thread
from tests.nodehelpers import KV

pytestmark = pytest.mark.timeout(60)

NEW = "127.0.0.1:9"  # the address of the member being added (nothing needs to listen there)


@dataclass
class FakeCluster:
    """A scripted leader's membership: voters 1..n (the fake nodes), changed as asked. A
    learner's lag falls by ``catch_up`` entries per status request; ``answers`` overrides the
    answer to the next requests of an op (a status, message and retryable flag)."""

    leader: FakeNode
    fakes: list[FakeNode]
    voters: list[int] = field(default_factory=list)
    learners: list[int] = field(default_factory=list)
    addresses: dict[int, str] = field(default_factory=dict)
    lag: int = 250
    catch_up: int = 100
    answers: dict[ClientOp, list[tuple[ResponseStatus, str, bool]]] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)  # the leader's refused_members
    lost: dict[int, int] = field(default_factory=dict)  # lost_entries of learners

    def __post_init__(self) -> None:
        self.voters = [f.node_id for f in self.fakes]
        self.addresses = {f.node_id: f.address for f in self.fakes}

    def members(self) -> bytes:
        return msgspec.msgpack.encode(
            Members(
                voters=tuple(sorted(self.voters)),
                learners=tuple(sorted(self.learners)),
                addresses=dict(sorted(self.addresses.items())),
                leader_id=self.leader.node_id,
                node_id=self.leader.node_id,
            )
        )

    def status(self) -> bytes:
        peers = {}
        for i in self.learners:
            peers[i] = PeerReplication(
                address=self.addresses[i],
                match=1000 - self.lag,
                next=1001 - self.lag,
                state="replicate",
                lag=self.lag,
                active=True,
                lost_entries=self.lost.get(i, 0),
            )
        self.lag = max(0, self.lag - self.catch_up)
        st = NodeStatus(
            id=self.leader.node_id,
            address=self.leader.address,
            running=True,
            role="leader",
            term=2,
            leader=self.leader.node_id,
            leader_address=self.leader.address,
            commit=1000,
            applied=1000,
            last_index=1000,
            first_index=1,
            snapshot=None,
            members=tuple(self.voters),
            peers=peers,
            disk_full=False,
            failed=None,
            stats=NodeStats(),
            refused_members=self.refused,
        )
        return msgspec.msgpack.encode(st)

    async def handle(self, conn: FakeConn, req: ClientRequest) -> None:
        queued = self.answers.get(req.op)
        if queued:
            status, message, retryable = queued.pop(0)
            conn.respond(answer(req, status, message=message, retryable=retryable))
            return
        if req.op is ClientOp.STATUS:
            conn.respond(answer(req, result=self.status()))
            return
        if req.op is not ClientOp.MEMBERS:
            change = msgspec.msgpack.decode(req.data, type=MemberRequest)
            node = change.node_id
            if req.op is ClientOp.ADD_MEMBER:
                assert change.address is not None
                self.addresses[node] = change.address
                target = self.voters if change.voter else self.learners
                if node not in target:
                    target.append(node)
            elif req.op is ClientOp.PROMOTE and node in self.learners:
                self.learners.remove(node)
                self.voters.append(node)
            elif req.op is ClientOp.REMOVE_MEMBER:
                for ids in (self.voters, self.learners):
                    if node in ids:
                        ids.remove(node)
                self.addresses.pop(node, None)
        conn.respond(answer(req, result=self.members()))


@contextlib.contextmanager
def fake_cluster(n: int = 3) -> Iterator[FakeCluster]:
    """Fake nodes 1..n where node n leads and the others redirect to it."""
    with nodes_in_thread(n) as fakes:
        cluster = FakeCluster(fakes[-1], fakes)
        for f in fakes[:-1]:
            f.handler = follower(f, hint=cluster.leader)
        cluster.leader.handler = cluster.handle
        yield cluster


def ops(cluster: FakeCluster) -> list[ClientOp]:
    """The changes the leader was asked for, in order (not the reads)."""
    reads = (ClientOp.STATUS, ClientOp.MEMBERS)
    return [r.op for r in cluster.leader.requests if r.op not in reads]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- usage errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["members"], id="no-action"),
        pytest.param(["members", "bogus", "127.0.0.1:1"], id="unknown-action"),
        pytest.param(["members", "list"], id="list-no-address"),
        pytest.param(["members", "list", "nope"], id="list-bad-address"),
        pytest.param(["members", "add", "4", "127.0.0.1:9"], id="add-no-cluster-address"),
        pytest.param(["members", "add", "x", "127.0.0.1:9", "127.0.0.1:1"], id="add-bad-id"),
        pytest.param(["members", "add", "-1", "127.0.0.1:9", "127.0.0.1:1"], id="add-negative"),
        pytest.param(["members", "add", "4", "nope", "127.0.0.1:1"], id="add-bad-address"),
        pytest.param(
            ["members", "add", "4", NEW, "127.0.0.1:1", "--voter", "--no-promote"],
            id="voter-and-no-promote",
        ),
        pytest.param(
            ["members", "add", "4", NEW, "127.0.0.1:1", "--max-lag", "-1"], id="negative-lag"
        ),
        pytest.param(["members", "promote", "127.0.0.1:1"], id="promote-no-id"),
        pytest.param(["members", "remove", str(1 << 63), "127.0.0.1:1"], id="remove-huge-id"),
        pytest.param(["members", "remove", "2", "127.0.0.1:1", "--timeout", "0"], id="timeout-0"),
        pytest.param(["transfer-leader", "127.0.0.1:1"], id="transfer-no-id"),
        pytest.param(["transfer-leader", "2", "127.0.0.1:1", "--force"], id="transfer-force"),
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    assert "usage: raftpy" in err


def test_half_a_tls_setup_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "members", "list", "127.0.0.1:1", "--tls-cert", "c.pem")
    assert (code, out) == (2, "")
    assert "raftpy members: " in err


def test_help_cites_the_thesis_and_readme_only(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["members", "--help"],
        ["members", "add", "--help"],
        ["members", "remove", "--help"],
        ["transfer-leader", "--help"],
    ):
        code, out, _ = run_cli(capsys, *argv)
        assert code == 0
        assert "DESIGN" not in out
        assert "Exit status" in " ".join(out.split())


# -- against a scripted leader --------------------------------------------------------------


def test_list_prints_a_table_or_stable_json(capsys: pytest.CaptureFixture[str]) -> None:
    with fake_cluster() as c:
        c.learners.append(4)
        c.addresses[4] = NEW
        first = c.fakes[0].address
        code, out, err = run_cli(capsys, "members", "list", first)
        assert (code, err) == (0, "")
        lines = out.splitlines()
        assert lines[0].split() == ["ID", "ADDRESS", "ROLE", "LEADER"]
        assert [line.split() for line in lines[1:]] == [
            ["1", c.fakes[0].address, "voter"],
            ["2", c.fakes[1].address, "voter"],
            ["3", c.fakes[2].address, "voter", "*"],
            ["4", NEW, "learner"],
            ["problem:", "node", "4", "does", "not", "answer"],  # nothing listens at NEW
        ]
        code, out, _ = run_cli(capsys, "members", "list", first, "--json")
        assert code == 0
        doc = json.loads(out)
        assert list(doc) == sorted(doc)
        assert (doc["voters"], doc["learners"], doc["leader"]) == ([1, 2, 3], [4], 3)
        assert doc["members"][3] == {"id": 4, "address": NEW, "role": "learner", "leader": False}
        assert doc["problems"] == ["node 4 does not answer"]


def test_list_reports_members_that_lost_their_disk(capsys: pytest.CaptureFixture[str]) -> None:
    """Reference: Thesis §4 (replacing a server); README "Changing members": a member that came
    back with another data directory, or refused entries it had acknowledged, is reported with
    the fix."""
    with fake_cluster() as c:
        c.learners.append(4)
        c.addresses[4] = NEW
        c.refused = {2: "node 2 came back with a different data directory"}
        c.lost = {4: 2}
        code, out, _ = run_cli(capsys, "members", "list", c.fakes[0].address)
        assert code == 0
        problems = [line for line in out.splitlines() if line.startswith("problem:")]
        assert (
            problems[0]
            == "problem: node 3 refuses node 2: 'node 2 came back with a different data directory'"
        )
        assert problems[1].startswith(
            "problem: node 4 refused entries it had acknowledged 2 time(s) (seen by leader 3)"
        )
        assert "remove it and add it back" in problems[1]


def test_add_waits_for_the_learner_to_catch_up_then_promotes_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with fake_cluster() as c:
        code, out, err = run_cli(capsys, "members", "add", "4", NEW, c.fakes[0].address)
        assert (code, err) == (0, "")  # quiet: stderr is not a terminal
        assert out == f"node 4 added at {NEW} and promoted; voters 1,2,3,4; learners none\n"
        assert ops(c) == [ClientOp.ADD_MEMBER, ClientOp.PROMOTE]
        # It was promoted only once the leader reported it within --max-lag (100).
        assert c.lag == 0
        adds = [r for r in c.leader.requests if r.op is ClientOp.ADD_MEMBER]
        assert msgspec.msgpack.decode(adds[0].data, type=MemberRequest) == MemberRequest(
            node_id=4, address=NEW
        )


def test_add_no_promote_and_voter_send_one_change(capsys: pytest.CaptureFixture[str]) -> None:
    with fake_cluster() as c:
        code, out, _ = run_cli(capsys, "members", "add", "4", NEW, c.leader.address, "--no-promote")
        assert code == 0 and "added as a learner" in out
        code, out, _ = run_cli(capsys, "members", "add", "5", NEW, c.leader.address, "--voter")
        assert code == 0 and "added as a voter" in out
        assert ops(c).count(ClientOp.PROMOTE) == 0
        assert (c.learners, c.voters) == ([4], [1, 2, 3, 5])


def test_add_never_demotes_a_voter(capsys: pytest.CaptureFixture[str]) -> None:
    with fake_cluster() as c:
        address = c.fakes[1].address
        code, out, _ = run_cli(capsys, "members", "add", "2", address, c.leader.address)
        assert (code, out) == (0, f"node 2 already is a voter at {address}\n")
        code, out, err = run_cli(capsys, "members", "add", "2", NEW, c.leader.address)
        assert (code, out) == (1, "")
        assert "would demote it" in err
        assert ClientOp.ADD_MEMBER not in ops(c)


def test_add_that_never_catches_up_stops_at_the_deadline(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with fake_cluster() as c:
        c.catch_up = 0
        code, _, err = run_cli(
            capsys, "members", "add", "4", NEW, c.leader.address, "--timeout", "1"
        )
        assert code == 1
        assert "added as a learner but did not catch up in time (250 entries behind)" in err
        assert c.learners == [4] and ClientOp.PROMOTE not in ops(c)


@pytest.mark.parametrize(
    ("answer_", "code", "says"),
    [
        ((ResponseStatus.DROPPED, "node 4 lags", False), 1, "not promoted: node 4 lags"),
        ((ResponseStatus.INDETERMINATE, "leadership lost", True), 3, "not promoted"),
    ],
    ids=["refused", "unknown"],
)
def test_add_whose_promotion_fails_says_the_member_is_a_learner(
    answer_: tuple[ResponseStatus, str, bool],
    code: int,
    says: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with fake_cluster() as c:
        # An unknown outcome is resent until the deadline: keep it unknown every time.
        c.answers[ClientOp.PROMOTE] = [answer_] * 1000
        argv = ["members", "add", "4", NEW, c.leader.address, "--timeout", "2"]
        got, _, err = run_cli(capsys, *argv)
        assert got == code, err
        assert says in err and "raftpy members promote 4" in err


@pytest.mark.parametrize(
    ("argv", "op", "out"),
    [
        (["members", "promote", "4"], ClientOp.PROMOTE, "node 4 is a voter; voters 1,2,3,4"),
        (["members", "remove", "2"], ClientOp.REMOVE_MEMBER, "node 2 removed; voters 1,3;"),
        (["transfer-leader", "2"], ClientOp.TRANSFER_LEADER, "node 2 leads"),
    ],
    ids=["promote", "remove", "transfer"],
)
def test_changes_follow_the_redirect_and_exit_0(
    argv: list[str], op: ClientOp, out: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with fake_cluster() as c:
        c.learners.append(4)
        c.addresses[4] = NEW
        code, got, err = run_cli(capsys, *argv, c.fakes[0].address)
        assert (code, err) == (0, "")
        assert got.startswith(out)
        assert ops(c) == [op]


@pytest.mark.parametrize(
    ("answer_", "code", "says"),
    [
        ((ResponseStatus.DROPPED, "would leave no quorum", False), 1, "would leave no quorum"),
        ((ResponseStatus.DROPPED, "a change is pending", True), 1, "no leader answered"),
        ((ResponseStatus.INDETERMINATE, "leadership lost", True), 3, "may or may not"),
        ((ResponseStatus.ERROR, "node failed", False), 3, "node failed"),
    ],
    ids=["refused", "pending-until-deadline", "unknown", "error"],
)
def test_failed_changes_exit_with_their_outcome(
    answer_: tuple[ResponseStatus, str, bool],
    code: int,
    says: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with fake_cluster() as c:
        c.answers[ClientOp.REMOVE_MEMBER] = [answer_] * 1000
        got, out, err = run_cli(
            capsys, "members", "remove", "2", c.leader.address, "--timeout", "0.5"
        )
        assert (got, out) == (code, "")
        assert err.startswith("raftpy members remove: ") and says in err


def test_no_member_reachable_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.client.test_client import dead_address

    code, out, err = run_cli(capsys, "members", "list", dead_address(), "--timeout", "0.5")
    assert (code, out) == (1, "")
    assert "raftpy members list: " in err


# -- against real nodes ---------------------------------------------------------------------

MISSING = [
    m
    for m in ("add_member", "promote", "remove_member", "transfer_leadership", "members")
    if not hasattr(RaftNode, m)
]
if "join" not in inspect.signature(RaftNode).parameters:
    MISSING.append("join=")
needs_members = pytest.mark.skipif(
    bool(MISSING), reason=f"RaftNode has no {', '.join(MISSING)} yet (the node side of membership)"
)


@contextlib.contextmanager
def real_cluster(tmp_path: Path, n: int) -> Iterator[tuple[list[str], Callable[[int], RaftNode]]]:
    """``n`` RaftNodes on TCP in a background thread's event loop; yields their addresses and
    a way to start one more, empty, node (a joiner)."""
    from tests.processhelpers import free_port

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    ports = {i: free_port() for i in range(1, n + 1)}
    peers = {i: f"127.0.0.1:{p}" for i, p in ports.items()}
    started: list[RaftNode] = []

    def start(node: RaftNode) -> RaftNode:
        asyncio.run_coroutine_threadsafe(node.start(), loop).result(10)
        started.append(node)
        return node

    def joiner(i: int) -> RaftNode:
        address = f"127.0.0.1:{free_port()}"
        node = RaftNode(
            i,
            address,
            {i: address},
            KV(),
            tmp_path / f"data{i}",
            join=list(peers.values()),
            promote=False,
        )  # type: ignore[call-arg]
        return start(node)

    try:
        for i in peers:
            start(RaftNode(i, peers[i], peers, KV(), tmp_path / f"data{i}"))
        yield list(peers.values()), joiner
    finally:
        for node in started:
            asyncio.run_coroutine_threadsafe(node.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


@needs_members
def test_real_cluster_list_add_promote_transfer_remove(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with real_cluster(tmp_path, 3) as (addresses, joiner):
        code, out, err = run_cli(capsys, "members", "list", *addresses, "--json")
        assert code == 0, err
        doc = json.loads(out)
        assert doc["voters"] == [1, 2, 3] and doc["leader"] in (1, 2, 3)
        node4 = joiner(4)
        # The joiner asked to be a learner itself; adding it again only waits and promotes.
        code, out, err = run_cli(
            capsys, "members", "add", "4", node4.address, *addresses, "--timeout", "30"
        )
        assert code == 0, err
        assert "voters 1,2,3,4;" in out
        code, out, err = run_cli(capsys, "transfer-leader", "4", *addresses, "--timeout", "20")
        assert (code, out) == (0, "node 4 leads\n"), err
        code, out, err = run_cli(capsys, "members", "remove", "1", *addresses, "--timeout", "20")
        assert code == 0, err
        assert "voters 2,3,4;" in out
        code, out, err = run_cli(capsys, "members", "list", *addresses[1:], "--json")
        assert code == 0, err
        doc = json.loads(out)
        assert (doc["voters"], doc["leader"]) == ([2, 3, 4], 4)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_shown_on_a_terminal_only() -> None:
    term, pipe = Terminal(), io.StringIO()
    for stream in (term, pipe):
        progress = CatchUpProgress(stream, 4, use_rich=False)
        progress.update(400, 1000)
        progress.update(500, 1000)  # within a second of the last line: not shown
        progress.close()
    assert term.getvalue() == "node 4: at 400 of 1000 (600 behind)\n"
    assert pipe.getvalue() == ""


def test_table_marks_a_joint_change() -> None:
    joint = Members(voters=(1, 2), voters_outgoing=(1, 2, 3), addresses={3: "h:3"}, leader_id=1)
    rows = members_table(joint).splitlines()
    assert [r.split() for r in rows[1:4]] == [
        ["1", "-", "voter", "*"],
        ["2", "-", "voter"],
        ["3", "h:3", "outgoing"],
    ]
    assert "joint change" in rows[4]
