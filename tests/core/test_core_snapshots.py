"""The core's snapshot rules (Raft §7, Figure 13; etcd raft's snapshot flow), on the sans-I/O
core directly.

The core never touches snapshot data: a leader asks its driver to stream a snapshot with a
metadata-only :class:`InstallSnapshot`, and a follower's driver steps one ``done`` message once
a whole file arrived and verified. These tests pin down both ends of that contract.
"""

from __future__ import annotations

import random

from raftpy.core.config import RaftConfig
from raftpy.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    ConfState,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    SnapshotMeta,
)
from raftpy.core.progress import ProgressState
from raftpy.core.raft import Raft
from raftpy.core.ready import Role
from tests.corehelpers import (
    Network,
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


def done_msg(term: int, meta: SnapshotMeta, src: int = 1, dst: int = 2) -> InstallSnapshot:
    """What a follower's driver steps once a whole snapshot file arrived and verified."""
    return InstallSnapshot(term, src, dst, meta, 1234, b"", True)


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


def test_leader_sends_snapshot_request_when_entries_are_compacted() -> None:
    """Raft §7: a follower that needs entries the leader compacted gets the snapshot instead.
    The request carries metadata only (offset 0, no data): the driver streams the file."""
    net, meta = compacted_leader_network()
    leader = net[1]
    for _ in range(3):
        leader.tick()  # heartbeats: 3 answers, the leader probes, 3 rejects, ...
        net.stabilize()
    requests = of_kind(net.delivered, InstallSnapshot, dst=3)
    assert requests, "no snapshot request was sent"
    req = requests[0]
    assert (req.meta, req.offset, req.data, req.done) == (meta, 0, b"", False)
    pr = leader.prs[3]
    assert pr.state is ProgressState.SNAPSHOT and pr.pending_snapshot == meta.index
    assert pr.is_paused()
    # A bare request never changes the follower: only the driver's "done" does.
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
    assert not of_kind(drain(leader), InstallSnapshot)


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
    follower.step(done_msg(leader.term, meta, src=1, dst=3))
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
    f.step(done_msg(3, meta))
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
    f.step(done_msg(1, SnapshotMeta(3, 1, CONF)))
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
    f.step(done_msg(1, SnapshotMeta(4, 1, CONF)))
    msgs = drain(f)
    assert f.log.last_index() == 5 and f.log.committed == 5
    acks = of_kind(msgs, AppendEntriesResponse)
    assert acks[0].success and acks[0].index == 5
    assert storage.first_index() == 1


def test_bare_chunks_and_stale_terms_never_reach_the_log() -> None:
    storage = new_storage(PEERS, [1, 2], term=3, commit=1)
    f = new_raft(2, PEERS, storage=storage)
    drain(f)
    meta = SnapshotMeta(9, 3, CONF)
    f.step(InstallSnapshot(3, 1, 2, meta, 0, b"chunk", False))  # a chunk, not a completion
    f.step(done_msg(2, meta))  # from a deposed leader (term 2 < 3)
    assert f.log.last_index() == 2 and f.log.unstable_snapshot() is None
    assert not of_kind(drain(f), AppendEntriesResponse)


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
        # A report about another snapshot is ignored.
        leader.step(InstallSnapshotResponse(leader.term, 3, 1, meta.index + 1, 0, done, not done))
        assert pr.state is ProgressState.SNAPSHOT
        leader.step(InstallSnapshotResponse(leader.term, 3, 1, meta.index, 99, done, not done))
        assert pr.state is ProgressState.PROBE
        assert pr.next == meta.index + 1 and pr.is_paused()
        assert not of_kind(drain(leader), AppendEntries, dst=3)
        # The next heartbeat response resumes probing.
        leader.tick()
        drain(leader)
        leader.step(HeartbeatResponse(leader.term, 3, 1))
        sent = of_kind(drain(leader), AppendEntries, dst=3)
        assert sent and sent[0].prev_index == meta.index


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
    f.step(done_msg(2, SnapshotMeta(4, 2, CONF)))
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
