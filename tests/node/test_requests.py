"""PendingRequests on its own: each guarantee of its docstring, driven with a real core (no
transport, no storage) so every outcome is exact."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from raftpy.core.messages import (
    AppendEntriesResponse,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
)
from raftpy.core.raft import Raft
from raftpy.errors import (
    ClusterUnavailableError,
    IndeterminateError,
    NotLeaderError,
    ProposalDropped,
)
from raftpy.node.latency import Histogram
from raftpy.node.requests import PendingRequests
from tests.corehelpers import Network, drain, drive, make_leader, new_raft, of_kind
from tests.nodehelpers import KV, set_cmd


def pending(kv: KV | None = None) -> PendingRequests:
    return PendingRequests(kv or KV(), 5.0, lambda: NotLeaderError(2, "10.0.0.2:7000"))


def single_leader() -> Raft:
    net = Network.of((1,))
    return net.elect(1)


def error_of(fut: asyncio.Future[bytes]) -> BaseException | None:
    assert fut.done()
    return fut.exception()


def test_appended_proposal_resolves_with_its_result_when_its_entry_is_applied() -> None:
    async def main() -> None:
        kv = KV()
        reqs = pending(kv)
        raft = single_leader()
        fut = reqs.propose(set_cmd("a", "1"), None)
        assert reqs.append_proposals(raft, 64) == (1, 1)
        committed: list[Entry] = []
        while raft.has_ready():
            committed.extend(drive(raft).committed_entries)
        # Client writes are appended as SESSION entries (the node hands in the records).
        (entry,) = [e for e in committed if e.kind is EntryKind.SESSION]
        assert not fut.done()
        reqs.on_applied(entry, kv.apply(entry.data), None)
        assert fut.result() == b""

    asyncio.run(main())


def test_leadership_loss_is_indeterminate_once_appended_and_definite_before() -> None:
    async def main() -> None:
        reqs = pending()
        raft = single_leader()
        appended = reqs.propose(b"x", None)
        reqs.append_proposals(raft, 64)
        queued = reqs.propose(b"y", None)
        read = reqs.read(b"q", None)
        reqs.on_leadership_lost()
        assert isinstance(error_of(appended), IndeterminateError)
        not_leader = error_of(queued)
        assert isinstance(not_leader, NotLeaderError)
        assert (not_leader.leader_id, not_leader.leader_address) == (2, "10.0.0.2:7000")
        assert isinstance(error_of(read), NotLeaderError)

    asyncio.run(main())


def test_refused_appends_are_definite() -> None:
    async def main() -> None:
        reqs = pending()
        follower = new_raft(1, (1, 2, 3))
        fut = reqs.propose(b"x", None)
        assert reqs.append_proposals(follower, 64) == (0, 0)
        err = error_of(fut)
        assert isinstance(err, NotLeaderError) and err.leader_address == "10.0.0.2:7000"
        leader = new_raft(1, (1,), max_entry_bytes=4)
        leader.campaign()
        big = reqs.propose(b"12345", None)
        reqs.append_proposals(leader, 64)
        assert isinstance(error_of(big), ProposalDropped)

    asyncio.run(main())


def test_another_terms_entry_at_the_index_drops_the_proposal() -> None:
    async def main() -> None:
        reqs = pending()
        raft = single_leader()
        fut = reqs.propose(b"x", None)
        reqs.append_proposals(raft, 64)
        index = raft.log.last_index()
        reqs.on_applied(Entry(raft.term + 1, index, EntryKind.COMMAND, b"other"), b"r", None)
        assert isinstance(error_of(fut), ProposalDropped)

    asyncio.run(main())


def test_apply_failure_reaches_the_proposer() -> None:
    async def main() -> None:
        reqs = pending()
        raft = single_leader()
        fut = reqs.propose(b"x", None)
        reqs.append_proposals(raft, 64)
        entry = Entry(raft.term, raft.log.last_index(), EntryKind.COMMAND, b"x")
        boom = ValueError("bad command")
        reqs.on_applied(entry, b"", boom)
        assert error_of(fut) is boom

    asyncio.run(main())


def test_deadlines_fail_appended_proposals_as_indeterminate_and_reads_as_unavailable() -> None:
    async def main() -> None:
        reqs = pending()
        raft = single_leader()
        now = asyncio.get_running_loop().time()
        fut = reqs.propose(b"x", 1.0)
        later = reqs.propose(b"y", 100.0)
        reqs.append_proposals(raft, 64)
        read = reqs.read(b"q", 1.0)
        reqs.start_reads(raft)
        reqs.expire(now + 0.5)
        assert not fut.done() and not read.done()
        reqs.expire(now + 2.0)
        assert isinstance(error_of(fut), IndeterminateError)
        assert isinstance(error_of(read), ClusterUnavailableError)
        assert not later.done()

    asyncio.run(main())


def test_reads_are_served_only_once_their_index_is_applied() -> None:
    async def main() -> None:
        kv = KV()
        kv.apply(set_cmd("k", "v"))
        reqs = pending(kv)
        raft = single_leader()
        read = reqs.read(b"k", None)
        reqs.start_reads(raft)
        (rs,) = drive(raft).read_states
        reqs.on_read_states([rs])
        assert reqs.serve_reads(rs.index - 1) == 0 and not read.done()
        assert reqs.serve_reads(rs.index) == 1
        assert read.result() == b"v"

    asyncio.run(main())


def test_dropped_reads_fail_as_not_leader() -> None:
    async def main() -> None:
        reqs = pending()
        raft = single_leader()
        read = reqs.read(b"k", None)
        reqs.start_reads(raft)
        reqs.on_dropped_reads([(1).to_bytes(8, "big")])
        assert isinstance(error_of(read), NotLeaderError)

    asyncio.run(main())


@pytest.mark.parametrize("stage", ["queued", "appended", "read queued", "read started"])
def test_fail_all_says_whether_anything_was_appended(stage: str) -> None:
    async def main() -> None:
        reqs = pending()
        raft = single_leader()
        if stage.startswith("read"):
            fut = reqs.read(b"q", None)
            if stage == "read started":
                reqs.start_reads(raft)
        else:
            fut = reqs.propose(b"x", None)
            if stage == "appended":
                reqs.append_proposals(raft, 64)
        reqs.fail_all("node stopped")
        expected = {
            "queued": ProposalDropped,
            "appended": IndeterminateError,
            "read queued": ClusterUnavailableError,
            "read started": ClusterUnavailableError,
        }[stage]
        assert type(error_of(fut)) is expected

    asyncio.run(main())


def test_lease_reads_use_the_lease_only_while_the_tick_counter_is_on_time() -> None:
    """Thesis §6.4.1: the lease is counted in ticks; when the driver's next tick is overdue
    the counter lags real time, so a lease read goes the ReadIndex way instead."""

    async def main() -> None:
        r = new_raft(1, (1, 2, 3), lease_ticks=5)
        make_leader(r)
        drain(r)
        r.step(AppendEntriesResponse(r.term, 2, 1, True, r.log.last_index()))
        drain(r)
        r.tick()
        round_ = max(m.round for m in of_kind(drain(r), Heartbeat))
        r.step(HeartbeatResponse(r.term, 2, 1, None, round_))
        drain(r)
        assert r.lease_valid()
        reqs = pending()
        late = reqs.read(b"k", None, lease=True)
        reqs.start_reads(r, lease_ok=False)
        rd = drive(r)
        assert rd.read_states == () and of_kind(rd.messages, Heartbeat)  # a ReadIndex round
        on_time = reqs.read(b"k", None, lease=True)
        reqs.start_reads(r, lease_ok=True)
        rd = drive(r)
        assert len(rd.read_states) == 1 and not of_kind(rd.messages, Heartbeat)
        reqs.on_read_states(rd.read_states)
        reqs.serve_reads(r.log.applied)
        assert on_time.done() and not late.done()

    asyncio.run(main())


def test_lease_reads_on_a_follower_are_refused() -> None:
    async def main() -> None:
        net = Network.of((1, 2, 3))
        net.elect(1)
        reqs = pending()
        fut = reqs.read(b"k", None, lease=True)
        reqs.start_reads(net[2], lease_ok=True)
        assert isinstance(error_of(fut), NotLeaderError)

    asyncio.run(main())


def test_latencies_are_counted_once_per_proposal_at_the_end_of_the_batch() -> None:
    """Each applied proposal's latency is counted once, at one clock reading for its whole
    applied batch (the applier calls ``end_of_batch``), not one reading per proposal."""

    async def main() -> None:
        kv = KV()
        latency = Histogram()
        reqs = PendingRequests(kv, 5.0, lambda: NotLeaderError(2, "10.0.0.2:7000"), latency)
        raft = single_leader()
        futs = [reqs.propose(set_cmd(f"k{i}", "v"), None) for i in range(3)]
        assert reqs.append_proposals(raft, 64) == (3, 1)
        committed: list[Entry] = []
        while raft.has_ready():
            committed.extend(drive(raft).committed_entries)
        for entry in committed:
            reqs.on_applied(entry, b"", None)
        assert all(f.done() for f in futs)
        assert latency.count == 0  # not yet: at the end of the batch
        reqs.end_of_batch()
        assert latency.count == 3 and latency.sum >= 0
        reqs.end_of_batch()  # a batch without proposals counts nothing
        assert latency.count == 3

    asyncio.run(main())


def test_on_done_is_told_at_once_for_every_way_a_proposal_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``on_done`` runs the moment the future resolves, before the loop runs again (a server
    answers its client from it): on apply, on each failure path, and a raising one is logged
    without reaching the node's loop."""

    async def main() -> None:
        kv = KV()
        reqs = pending(kv)
        raft = single_leader()
        told: list[tuple[str, asyncio.Future[bytes]]] = []

        def tell(name: str) -> Callable[[asyncio.Future[bytes]], None]:
            return lambda f: told.append((name, f))

        applied = reqs.propose(set_cmd("a", "1"), None, tell("applied"))
        reqs.append_proposals(raft, 64)
        committed: list[Entry] = []
        while raft.has_ready():
            committed.extend(drive(raft).committed_entries)
        (entry,) = [e for e in committed if e.kind is EntryKind.SESSION]
        reqs.on_applied(entry, kv.apply(entry.data), None)
        # No await in between: told synchronously, with the future already resolved.
        assert told == [("applied", applied)] and applied.result() == b""

        expiring = reqs.propose(b"e", 0.5, tell("expired"))
        reqs.append_proposals(raft, 64)
        reqs.expire(asyncio.get_running_loop().time() + 1.0)
        dropped = reqs.propose(b"d", None, tell("dropped"))
        reqs.drop_queued("the disk is full")
        appended = reqs.propose(b"l", None, tell("lost"))
        reqs.append_proposals(raft, 64)
        queued = reqs.propose(b"q", None, tell("queued"))
        reqs.on_leadership_lost()
        stopped = reqs.propose(b"s", None, tell("stopped"))
        reqs.fail_all("the node stopped")
        assert [name for name, _ in told[1:]] == ["expired", "dropped", "lost", "queued", "stopped"]
        assert [f for _, f in told[1:]] == [expiring, dropped, appended, queued, stopped]
        assert isinstance(error_of(expiring), IndeterminateError)
        assert isinstance(error_of(dropped), ProposalDropped)
        assert isinstance(error_of(appended), IndeterminateError)
        assert isinstance(error_of(queued), NotLeaderError)
        assert isinstance(error_of(stopped), ProposalDropped)

        def broken(f: asyncio.Future[bytes]) -> None:
            raise RuntimeError("a bug in the caller")

        failing = reqs.propose(b"b", None, broken)
        reqs.drop_queued("refused")  # must not raise: the node's loop goes on
        assert isinstance(error_of(failing), ProposalDropped)
        assert "on_done callback failed" in caplog.text

    asyncio.run(main())


def test_a_cancelled_proposal_does_not_call_on_done() -> None:
    async def main() -> None:
        reqs = pending()
        told: list[asyncio.Future[bytes]] = []
        fut = reqs.propose(b"x", None, told.append)
        fut.cancel()
        reqs.drop_queued("refused")
        assert told == [] and fut.cancelled()

    asyncio.run(main())
