"""The core's snapshot rules (Raft §7, Figure 13; etcd raft's snapshot flow), on the sans-I/O
core directly.

The core never touches snapshot data: a leader asks its driver to stream a snapshot with a
:class:`SnapshotRequest` in ``Ready.snapshot_requests`` and learns how the transfer ended from
``report_snapshot``; a follower's driver calls ``install_snapshot`` once a whole file arrived
and verified. These tests pin down both ends of that contract.
"""

from __future__ import annotations

import random

import pytest

from raftpy.core.config import RaftConfig
from raftpy.core.messages import (
    MAX_TERM_JUMP,
    AppendEntries,
    AppendEntriesResponse,
    ConfState,
    Heartbeat,
    HeartbeatResponse,
    SnapshotMeta,
)
from raftpy.core.progress import ProgressState
from raftpy.core.raft import Raft
from raftpy.core.ready import Role, SnapshotRequest
from raftpy.errors import RejectedMessage
from tests.corehelpers import (
    Network,
    core_state,
    drain,
    drive,
    make_leader,
    new_raft,
    new_storage,
    of_kind,
    storage_of,
)

PEERS = (1, 2, 3)
CONF = ConfState(PEERS)


def compacted_leader_network() -> tuple[Network, SnapshotMeta]:
    """Leader 1 commits entries while 3 is cut off, then compacts its log past 3's log."""
    net = Network.of(PEERS)
    net[1].campaign()
    net.stabilize()
    assert net[1].role is Role.LEADER
    net.isolate(3)
    for k in range(10):
        net[1].propose(b"x%d" % k)
        net.stabilize()
    leader = net[1]
    index = leader.log.committed
    assert index == 11 and net[3].log.last_index() == 1
    term = leader.log.term(index)
    assert term is not None
    meta = SnapshotMeta(index, term, CONF)
    storage_of(leader).create_snapshot(meta)
    net.heal()
    return net, meta


def snapshot_requests(net: Network, to: int) -> list[SnapshotRequest]:
    return [r for r in net.snapshot_requests if r.to == to]


def test_leader_sends_snapshot_request_when_entries_are_compacted() -> None:
    """Raft §7: a follower that needs entries the leader compacted gets the snapshot instead.
    The request carries metadata only: the driver streams the file."""
    net, meta = compacted_leader_network()
    leader = net[1]
    for _ in range(3):
        leader.tick()  # heartbeats: 3 answers, the leader probes, 3 rejects, ...
        net.stabilize()
    requests = snapshot_requests(net, 3)
    assert requests, "no snapshot request was sent"
    assert requests[0] == SnapshotRequest(3, leader.term, meta)
    pr = leader.prs[3]
    assert pr.state is ProgressState.SNAPSHOT and pr.pending_snapshot == meta.index
    assert pr.is_paused()
    # A request never changes the follower: only its driver's install_snapshot does.
    assert net[3].log.last_index() == 1
    # Raft §7: while the snapshot is on its way, no more appends go to that follower.
    before = len(of_kind(net.delivered, AppendEntries, dst=3))
    leader.propose(b"more")
    net.stabilize()
    assert len(of_kind(net.delivered, AppendEntries, dst=3)) == before


def test_snapshot_is_not_sent_to_a_follower_not_heard_from() -> None:
    """A snapshot is costly: only for a follower recently active (etcd raft's rule)."""
    net, _ = compacted_leader_network()
    leader = net[1]
    pr = leader.prs[3]
    pr.become_probe()
    pr.next = 2
    pr.recent_active = False
    drain(leader)
    assert not leader._maybe_send_append(3)
    assert pr.state is ProgressState.PROBE
    assert not leader.has_ready()


def test_install_then_replicate_to_the_end() -> None:
    """After the follower installs the snapshot, its acknowledgement moves the leader to
    replicate, and the follower's log ends consistent with the leader's."""
    net, meta = compacted_leader_network()
    leader = net[1]
    for _ in range(3):
        leader.tick()
        net.stabilize()
    assert leader.prs[3].state is ProgressState.SNAPSHOT
    follower = net[3]
    assert follower.install_snapshot(meta, 1, leader.term)
    rd = follower.ready()
    assert rd.snapshot == meta
    acks = of_kind(rd.persisted_messages, AppendEntriesResponse)
    assert acks and acks[0].success and acks[0].index == meta.index
    assert not of_kind(rd.messages, AppendEntriesResponse), "the ack must wait for the fsync"
    storage_of(follower).apply_snapshot(meta)
    follower.advance(rd)
    assert follower.log.applied == meta.index and follower.log.committed == meta.index
    net.nodes[3].applied.clear()
    net.send([*rd.messages, *rd.persisted_messages])
    net.stabilize()
    assert leader.prs[3].state is ProgressState.REPLICATE
    assert leader.prs[3].match == leader.log.last_index()
    for index in range(meta.index, leader.log.last_index() + 1):
        assert follower.log.term(index) == leader.log.term(index)


def test_follower_restore_discards_a_conflicting_log() -> None:
    """Raft §7: a snapshot whose last entry the follower lacks replaces its whole log, and its
    membership becomes the follower's (Thesis §4: configurations live in snapshots too)."""
    storage = new_storage(PEERS, [1, 1, 2, 2], term=3, commit=2)
    f = new_raft(2, PEERS, storage=storage)
    drain(f)
    meta = SnapshotMeta(6, 3, ConfState((1, 2, 3), learners=(4,)))
    assert f.install_snapshot(meta, 1, 3)
    assert f.log.last_index() == 6 and f.log.committed == 6 and f.log.term(6) == 3
    assert f.conf_state() == meta.conf
    rd = drive(f)
    assert rd.snapshot == meta
    assert not rd.committed_entries, "snapshot entries are never applied as entries"
    assert f.log.applied == 6
    assert storage.first_index() == 7 and storage.last_index() == 6
    f.check_invariants()


def test_follower_with_the_snapshots_last_entry_keeps_its_log() -> None:
    """Raft §7: if an existing entry has the snapshot's index and term, the entries after it
    are kept; the snapshot is not needed (only the commit index moves)."""
    storage = new_storage(PEERS, [1, 1, 1, 1, 1], term=1, commit=2)
    f = new_raft(2, PEERS, storage=storage)
    drain(f)
    assert not f.install_snapshot(SnapshotMeta(3, 1, CONF), 1, 1)
    rd = f.ready()
    assert rd.snapshot is None
    assert f.log.last_index() == 5 and f.log.committed == 3
    acks = of_kind(rd.persisted_messages, AppendEntriesResponse)
    assert acks[0].success and acks[0].index == 3
    assert [e.index for e in rd.committed_entries] == [3]  # 1 and 2 were applied before


def test_stale_or_duplicate_snapshot_is_ignored() -> None:
    """A snapshot at or below the commit index changes nothing; the answer says how far the
    follower is, so the leader moves on from there."""
    storage = new_storage(PEERS, [1, 1, 1, 1, 1], term=1, commit=5)
    f = new_raft(2, PEERS, storage=storage)
    drain(f)
    assert not f.install_snapshot(SnapshotMeta(4, 1, CONF), 1, 1)
    msgs = drain(f)
    assert f.log.last_index() == 5 and f.log.committed == 5
    acks = of_kind(msgs, AppendEntriesResponse)
    assert acks[0].success and acks[0].index == 5
    assert storage.first_index() == 1


def test_stale_term_snapshot_is_refused() -> None:
    """A snapshot from a deposed leader (its term is older than ours) is refused: the log,
    term and leader stay, nothing is acknowledged, and the driver is told to drop the file.

    Reference: Raft §5.1 (Figure 2: "Reply immediately if term < currentTerm"), Raft §7"""
    storage = new_storage(PEERS, [1, 2], term=3, commit=1)
    f = new_raft(2, PEERS, storage=storage)
    drain(f)
    assert not f.install_snapshot(SnapshotMeta(9, 3, CONF), 1, 2)
    assert f.log.last_index() == 2 and f.log.unstable_snapshot() is None
    assert (f.term, f.lead) == (3, None)
    assert not of_kind(drain(f), AppendEntriesResponse)


def test_higher_term_snapshot_adopts_the_term() -> None:
    """A snapshot sent in a newer term is a message of that term: a candidate (here, having
    voted for itself) or any node becomes a follower of that term under the sender, its vote
    cleared, then takes the snapshot.

    Reference: Raft §5.1 (Figure 2, "All Servers"), Raft §7"""
    f = new_raft(2, PEERS, storage=new_storage(PEERS, [1], term=1, commit=1), pre_vote=False)
    f.campaign()
    assert (f.role, f.term, f.vote) == (Role.CANDIDATE, 2, 2)
    drain(f)
    meta = SnapshotMeta(5, 4, CONF)
    assert f.install_snapshot(meta, 3, 4)
    assert (f.role, f.term, f.vote, f.lead) == (Role.FOLLOWER, 4, None, 3)
    rd = drive(f)
    assert rd.snapshot == meta and rd.hard_state is not None and rd.hard_state.term == 4
    acks = of_kind(rd.persisted_messages, AppendEntriesResponse, dst=3)
    assert [(a.term, a.success, a.index) for a in acks] == [(4, True, 5)]


def test_candidate_concedes_to_a_snapshot_of_its_term() -> None:
    """A candidate that is handed a snapshot from a leader of its own term returns to
    follower (keeping its term and vote) and takes it, as for an AppendEntries.

    Reference: Raft §5.2 (Figure 2, "Candidates"), Raft §7"""
    f = new_raft(2, PEERS, storage=new_storage(PEERS, [1], term=1, commit=1), pre_vote=False)
    f.campaign()
    assert (f.role, f.term) == (Role.CANDIDATE, 2)
    drain(f)
    assert f.install_snapshot(SnapshotMeta(5, 2, CONF), 3, 2)
    assert (f.role, f.term, f.vote, f.lead) == (Role.FOLLOWER, 2, 2, 3)


def test_snapshot_from_another_leader_of_our_term_is_rejected_unchanged() -> None:
    """Two leaders in one term break election safety: a leader handed a snapshot of its own
    term from another node rejects it, naming the sender, and changes nothing.

    Reference: Raft §5.2 (Figure 3, "Election Safety"), Raft §7"""
    leader = make_leader(new_raft(1, PEERS))
    drain(leader)
    before = core_state(leader)
    with pytest.raises(RejectedMessage, match="of which node 1 is the leader") as info:
        leader.install_snapshot(SnapshotMeta(5, leader.term, CONF), 2, leader.term)
    assert info.value.peer_id == 2
    assert core_state(leader) == before


def test_snapshot_from_a_second_leader_our_follower_knows_is_rejected_unchanged() -> None:
    """A follower of node 2 in term 2 handed a term-2 snapshot "from node 3" rejects it.

    Reference: Raft §5.2 (Figure 3, "Election Safety"), Raft §7"""
    f = new_raft(1, PEERS)
    f.step(Heartbeat(2, 2, 1, 0))
    drain(f)
    before = core_state(f)
    with pytest.raises(RejectedMessage, match="of which node 2 is the leader"):
        f.install_snapshot(SnapshotMeta(5, 2, CONF), 3, 2)
    assert core_state(f) == before


def test_snapshot_that_contradicts_the_committed_log_is_rejected_unchanged() -> None:
    """A snapshot whose last entry has another term than our committed entry at that index
    cannot come from a correct leader of a later term (it holds every committed entry).

    Reference: Raft §5.4 (Leader Completeness), Raft §7"""
    f = new_raft(1, PEERS, storage=new_storage(PEERS, [1, 1, 2], commit=3))
    before = core_state(f)
    with pytest.raises(RejectedMessage, match="committed entry has term 2"):
        f.install_snapshot(SnapshotMeta(3, 3, CONF), 2, 5)
    assert core_state(f) == before
    # The honest snapshot at that index is no conflict (it is merely stale).
    assert not f.install_snapshot(SnapshotMeta(3, 2, CONF), 2, 5)


def test_snapshot_of_a_term_too_far_ahead_is_rejected_unchanged() -> None:
    """A snapshot handed over in a term more than MAX_TERM_JUMP past ours is forged (terms
    grow by one per election) and would wedge every later election once persisted.

    Reference: Raft §5.2, Raft §7"""
    f = new_raft(1, PEERS)
    before = core_state(f)
    with pytest.raises(RejectedMessage, match="more than"):
        f.install_snapshot(SnapshotMeta(5, 2, CONF), 2, f.term + MAX_TERM_JUMP + 1)
    assert core_state(f) == before


def test_install_snapshot_returns_false_for_a_snapshot_already_held() -> None:
    """A snapshot the follower already holds (it took it before, or its log committed past
    it) is not taken again: ``install_snapshot`` says so, so the driver drops the file, and
    the acknowledgement tells the leader how far the follower is.

    Reference: Raft §7 (Figure 13, receiver rules 6 and 7)"""
    f = new_raft(2, PEERS, storage=new_storage(PEERS, [1], term=1, commit=1))
    drain(f)
    meta = SnapshotMeta(6, 1, CONF)
    assert f.install_snapshot(meta, 1, 1)
    drive(f)
    assert not f.install_snapshot(meta, 1, 1)  # the same file again (a duplicate transfer)
    rd = drive(f)
    assert rd.snapshot is None
    acks = of_kind(rd.persisted_messages, AppendEntriesResponse)
    assert [(a.success, a.index) for a in acks] == [(True, 6)]


def test_transfer_report_ends_snapshot_state_and_pauses_the_probe() -> None:
    """The driver's report (etcd raft's ReportSnapshot) moves the follower to probe from after
    the snapshot, paused until it answers or the next heartbeat response (no tight loop)."""
    for done in (True, False):
        net, meta = compacted_leader_network()
        leader = net[1]
        for _ in range(3):
            leader.tick()
            net.stabilize()
        pr = leader.prs[3]
        assert pr.state is ProgressState.SNAPSHOT
        request = snapshot_requests(net, 3)[-1]
        # A report about another snapshot, or from an earlier term, is ignored.
        other = SnapshotMeta(meta.index + 1, meta.term, CONF)
        leader.report_snapshot(SnapshotRequest(3, leader.term, other), done)
        leader.report_snapshot(SnapshotRequest(3, leader.term - 1, meta), done)
        assert pr.state is ProgressState.SNAPSHOT
        leader.report_snapshot(request, done)
        assert pr.state is ProgressState.PROBE
        assert pr.next == meta.index + 1 and pr.is_paused()
        assert not of_kind(drain(leader), AppendEntries, dst=3)
        # The next heartbeat response resumes probing.
        leader.tick()
        drain(leader)
        leader.step(HeartbeatResponse(leader.term, 3, 1))
        sent = of_kind(drain(leader), AppendEntries, dst=3)
        assert sent and sent[0].prev_index == meta.index


def test_failed_transfer_moves_the_follower_back_to_probe_and_is_retried() -> None:
    """A transfer that failed (``report_snapshot(request, ok=False)``) ends the follower's
    snapshot state: it is probed again, and since it still lacks what the log compacted, the
    leader asks for a new transfer once the follower answers.

    Reference: Raft §7"""
    net, meta = compacted_leader_network()
    leader = net[1]
    for _ in range(3):
        leader.tick()
        net.stabilize()
    pr = leader.prs[3]
    assert pr.state is ProgressState.SNAPSHOT
    (request,) = snapshot_requests(net, 3)
    leader.report_snapshot(request, False)
    assert pr.state is ProgressState.PROBE and pr.next == meta.index + 1
    assert net[3].log.last_index() == 1, "nothing reached the follower"
    leader.tick()  # the heartbeat's answer resumes probing; 3 rejects; a new request
    net.stabilize()
    assert snapshot_requests(net, 3) == [request, SnapshotRequest(3, leader.term, meta)]
    assert pr.state is ProgressState.SNAPSHOT


def test_restart_with_applied_index_past_the_stored_snapshot() -> None:
    """A node restarting from a snapshot newer than the log's compaction point (the node keeps
    one interval of entries behind its newest snapshot) applies only what follows it."""
    storage = new_storage(PEERS, [1] * 8, term=1, commit=8)
    storage.create_snapshot(SnapshotMeta(3, 1, CONF))
    r = Raft(RaftConfig(id=2), storage, random.Random(0), applied=6)
    rd = drive(r)
    assert [e.index for e in rd.committed_entries] == [7, 8]


def test_leader_recognises_the_follower_as_leader_after_restore() -> None:
    """Installing a snapshot is hearing from the leader: it names the leader and resets the
    election timer, like an AppendEntries."""
    f = new_raft(2, PEERS, storage=new_storage(PEERS, [1], term=1))
    for _ in range(5):
        f.tick()
    assert f.install_snapshot(SnapshotMeta(4, 2, CONF), 1, 2)
    assert f.lead == 1 and f.term == 2 and f.election_elapsed == 0


def test_make_leader_helper_still_works_with_compaction() -> None:
    """A compacted leader's own progress and commit rules are unaffected by compaction."""
    storage = new_storage(PEERS, [1, 1, 1], term=1, commit=3)
    storage.create_snapshot(SnapshotMeta(3, 1, CONF))
    leader = make_leader(new_raft(1, PEERS, storage=storage))
    drive(leader)
    assert leader.log.first_index() == 4 and leader.log.last_index() == 4
    leader.step(AppendEntriesResponse(leader.term, 2, 1, True, 4))
    assert leader.log.committed == 4
