"""The rules of lease reads and follower reads, one test per rule (Thesis §6.4, §6.4.1).

Each test names the passage it checks in a ``Reference:`` line. Nodes are the real core,
driven by hand (tests.corehelpers)."""

from __future__ import annotations

import msgspec
import pytest

from raftpy.core.confchange import (
    ConfChange,
    ConfChangeKind,
    ConfChangeSingle,
    ConfChangeTransition,
)
from raftpy.core.config import RaftConfig
from raftpy.core.messages import (
    MAX_READ_CONTEXT,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
    decode_message,
)
from raftpy.core.raft import Raft
from raftpy.core.ready import ReadState, Role
from raftpy.errors import LocalProtocolError, MessageDecodeError, NotLeaderError
from tests.corehelpers import (
    Network,
    drain,
    drive,
    make_leader,
    msgs,
    new_raft,
    new_storage,
    of_kind,
)

PEERS = (1, 2, 3)
LEASE = 5


def lease_leader(lease: int = LEASE, *, check_quorum: bool = True, commit: bool = True) -> Raft:
    """Node 1 leading PEERS with ``lease_ticks=lease``; its no-op committed unless not
    ``commit``."""
    r = new_raft(1, PEERS, lease_ticks=lease, check_quorum=check_quorum)
    make_leader(r)
    drain(r)
    if commit:
        last = r.log.last_index()
        for peer in PEERS[1:]:
            r.step(AppendEntriesResponse(r.term, peer, 1, True, last))
        drain(r)
        assert r.log.committed == last
    return r


def beat(r: Raft) -> int:
    """Tick the leader once; the heartbeat round it sent."""
    r.tick()
    return max(m.round for m in of_kind(drain(r), Heartbeat))


def ack(r: Raft, peer: int, round_: int) -> None:
    r.step(HeartbeatResponse(r.term, peer, r.id, None, round_))
    drain(r)


def valid_ticks(r: Raft) -> int:
    """Tick the leader (no answers) until its lease ends; how many ticks it still held."""
    n = 0
    while r.lease_valid():
        n += 1
        r.tick()
        drain(r)
        assert n < 100
    return n


def test_lease_runs_from_when_the_acknowledged_round_was_sent() -> None:
    """An acknowledgement says the follower heard the leader after the round was sent, no
    earlier; so the lease counts from the send, however late the answer comes.

    Reference: Thesis §6.4.1 ("the leader's lease ... starts from when it sent the
    heartbeats")."""
    r = lease_leader()
    first = beat(r)
    for _ in range(3):
        beat(r)  # three ticks pass before the first round is answered
    assert not r.lease_valid()
    ack(r, 2, first)
    assert r.lease_valid()
    assert valid_ticks(r) == LEASE - 3  # sent 3 ticks ago: 2 of the 5 ticks are left


def test_one_acknowledgement_is_no_quorum_of_five() -> None:
    """The lease needs a quorum of voters (the leader counts itself) to have answered the
    same round or a later one.

    Reference: Thesis §6.4.1."""
    r = new_raft(1, (1, 2, 3, 4, 5), lease_ticks=LEASE)
    make_leader(r)
    drain(r)
    for peer in (2, 3, 4, 5):
        r.step(AppendEntriesResponse(r.term, peer, 1, True, r.log.last_index()))
    drain(r)
    old, new = beat(r), beat(r)
    ack(r, 2, new)
    assert not r.lease_valid()
    ack(r, 3, old)  # 1, 2 (for a later round) and 3 answered the older round
    assert r.lease_valid()
    assert valid_ticks(r) == LEASE - 1  # from the older round's send


def test_a_joint_configuration_needs_a_quorum_of_both_halves() -> None:
    """Leaving {1,2,3,4} for {1} (4 to become a learner): the new half is the leader alone,
    but the old half still elects, so its majority must have answered too.

    Reference: Thesis §4.3 (decisions need separate majorities of C_old and C_new), §6.4.1."""
    net = Network.of((1, 2, 3, 4), lease_ticks=LEASE)
    leader = net.elect(1)
    changes = (
        ConfChangeSingle(ConfChangeKind.REMOVE_NODE, 2),
        ConfChangeSingle(ConfChangeKind.REMOVE_NODE, 3),
        ConfChangeSingle(ConfChangeKind.ADD_LEARNER, 4),
    )
    leader.propose_conf_change(ConfChange(changes, ConfChangeTransition.JOINT_EXPLICIT), force=True)
    net.stabilize()
    conf = leader.conf_state()
    assert conf.voters == (1,) and conf.voters_outgoing == (1, 2, 3, 4)
    round_ = beat(leader)
    ack(leader, 4, round_)
    assert not leader.lease_valid(), "a majority of the new half alone gave a lease"
    ack(leader, 2, round_)  # 1, 2 and 4: a majority of the old half too
    assert leader.lease_valid()


def test_a_new_leader_has_no_lease_before_its_own_round_and_commit() -> None:
    """A new leader serves no lease read before a round of its own term is acknowledged,
    nor before it committed an entry of its term (its commit index may be stale before).

    Reference: Thesis §6.4.1; §6.4 step 1."""
    r = lease_leader(commit=False)
    assert not r.lease_valid()
    ack(r, 2, beat(r))
    assert not r.lease_valid(), "a lease before the no-op committed"
    assert not r.read_lease(b"r")  # falls back to ReadIndex, held for the commit
    r.step(AppendEntriesResponse(r.term, 2, 1, True, r.log.last_index()))
    drain(r)
    assert r.lease_valid()
    assert r.read_lease(b"now")
    assert drive(r).read_states == (ReadState(r.log.committed, b"now"),)


def test_a_lease_read_is_answered_at_once_at_the_commit_index() -> None:
    """Reference: Thesis §6.4.1 (the lease replaces the heartbeat round of ReadIndex)."""
    r = lease_leader()
    ack(r, 3, beat(r))
    assert r.read_lease(b"q")
    rd = drive(r)
    assert rd.read_states == (ReadState(r.log.committed, b"q"),)
    assert of_kind(msgs(rd), Heartbeat) == []  # no round needed


def test_no_lease_during_a_transfer_and_none_after_timeout_now() -> None:
    """A leader handing over stops serving lease reads: its transferee may be elected
    past the followers' lease. An aborted transfer that never sent TimeoutNow gives the
    lease back; once TimeoutNow went out, the lease is gone for the term.

    Reference: Thesis §3.10, §6.4.1."""
    r = lease_leader()
    ack(r, 2, beat(r))
    assert r.lease_valid()
    # Node 3 is behind: the transfer waits for it to catch up.
    r.step(AppendEntriesResponse(r.term, 3, 1, False, r.log.last_index(), 0, 0))
    drain(r)
    r.transfer_leadership(3)
    assert r.lead_transferee == 3
    assert not r.lease_valid()
    assert not r.read_lease(b"x")  # ReadIndex instead
    for _ in range(10):  # the transfer times out after an election timeout
        r.step(HeartbeatResponse(r.term, 2, 1, None, beat(r)))
    assert r.lead_transferee is None
    ack(r, 2, beat(r))
    assert r.lease_valid(), "an aborted transfer that sent no TimeoutNow keeps the lease"
    r.transfer_leadership(2)  # up to date: TimeoutNow at once
    assert of_kind(drain(r), TimeoutNow)
    for _ in range(12):  # node 2 never takes over here: the transfer is aborted
        ack(r, 2, beat(r))
        assert not r.lease_valid()
    assert r.lead_transferee is None and r.role is Role.LEADER


def test_the_removed_leader_hands_over_without_its_lease() -> None:
    """A leader removed from the voters hands over with TimeoutNow as it steps down; it no
    longer leads, so it serves no lease read.

    Reference: Thesis §4.2.2, §6.4.1."""
    net = Network.of(PEERS, lease_ticks=LEASE)
    leader = net.elect(1)
    net.tick(1)
    assert leader.lease_valid()
    leader.propose_conf_change(ConfChange((ConfChangeSingle(ConfChangeKind.REMOVE_NODE, 1),)))
    net.stabilize()
    assert leader.role is not Role.LEADER
    assert not leader.lease_valid()
    with pytest.raises(NotLeaderError):
        leader.read_lease(b"x")


def test_lease_is_off_without_check_quorum() -> None:
    """Without CheckQuorum followers grant votes while they hear from a leader, so the
    lease's promise does not exist: every read goes through ReadIndex.

    Reference: Thesis §6.4.1 (the lease relies on §4.2.3's vote refusal, which raftpy ties
    to CheckQuorum)."""
    r = lease_leader(check_quorum=False)
    round_ = beat(r)
    assert round_ == 0  # rounds are not even counted
    ack(r, 2, 1)
    assert not r.lease_valid()
    assert not r.read_lease(b"x")


def test_a_skipped_tick_ends_the_lease() -> None:
    """The lease is counted in ticks; a driver whose ticks were skipped calls lose_lease and
    reads wait for a round sent afterwards.

    Reference: Thesis §6.4.1 (clock assumptions)."""
    r = lease_leader()
    old = beat(r)
    ack(r, 2, old)
    assert r.lease_valid()
    r.lose_lease()
    assert not r.lease_valid()
    ack(r, 3, old)  # an answer to a round sent before the loss gives nothing
    assert not r.lease_valid()
    ack(r, 3, beat(r))
    assert r.lease_valid()


def test_a_restarted_node_refuses_votes_for_an_election_timeout_with_leases_on() -> None:
    """A restart forgets that we heard from a leader lately; with leases on, a node of an
    existing cluster refuses votes for its first election timeout, as the lease assumes.

    Reference: Thesis §6.4.1, §4.2.3."""
    for lease, refused in ((LEASE, True), (0, False)):
        r = new_raft(1, PEERS, lease_ticks=lease, storage=new_storage(PEERS, [1], term=1))
        drain(r)
        r.step(RequestVote(2, 2, 1, 1, 1))
        granted = [m.granted for m in of_kind(drain(r), RequestVoteResponse)]
        assert granted == ([] if refused else [True])
        if refused:
            for _ in range(10):
                r.tick()
                drain(r)
                if r.role is not Role.FOLLOWER:
                    break
            r2 = new_raft(1, PEERS, lease_ticks=lease, storage=new_storage(PEERS, [1], term=1))
            for _ in range(10):
                r2.tick()
            drain(r2)
            r2.step(RequestVote(2, 3, 1, 1, 1))
            assert [m.granted for m in of_kind(drain(r2), RequestVoteResponse)] == [True]


def test_lease_ticks_must_stay_below_the_election_timeout() -> None:
    """Reference: Thesis §6.4.1 (the lease never outlasts what followers promise)."""
    with pytest.raises(ValueError, match="lease_ticks"):
        RaftConfig(id=1, election_ticks=10, lease_ticks=10).validate()
    with pytest.raises(ValueError, match="lease_ticks"):
        RaftConfig(id=1, lease_ticks=-1).validate()


# -------------------------------------------------------------------------------------------
# Follower ReadIndex
# -------------------------------------------------------------------------------------------


def run(net: Network) -> dict[int, list[ReadState]]:
    """Stabilize ``net``, collecting every node's read states."""
    states: dict[int, list[ReadState]] = {i: [] for i in net.nodes}
    for _ in range(1000):
        out: list[Message] = []
        for i, node in sorted(net.nodes.items()):
            while node.raft.has_ready():
                rd = drive(node.raft, node.storage)
                states[i].extend(rd.read_states)
                out.extend(msgs(rd))
        if not out:
            return states
        net.send(out)
    raise AssertionError("did not stabilize")


def test_a_follower_forwards_its_read_to_the_leader_and_gets_its_read_index() -> None:
    """A follower asks the leader for its read index; the leader confirms its leadership
    with a heartbeat quorum, as for its own reads, and answers with its commit index.

    Reference: Thesis §6.4 ("followers can also serve read-only queries")."""
    net = Network.of(PEERS)
    net.elect(1)
    index = net.propose(1, b"x")
    net[2].read_index(b"c")
    rd = net[2].ready()
    assert [(type(m), m.dst) for m in rd.messages] == [(ReadIndexRequest, 1)]
    net[2].advance(rd)
    net.send(rd.messages)
    states = run(net)
    assert states[2] == [ReadState(index, b"c")]
    assert states[1] == [] and states[3] == []
    heartbeats = [m for m in net.delivered if isinstance(m, Heartbeat) and m.context]
    assert heartbeats, "the leader answered without confirming its leadership"


def test_a_forwarded_read_is_dropped_when_the_leader_changes() -> None:
    """A read forwarded to a leader we no longer follow is dropped (the driver fails it);
    a late answer from the old leader is ignored.

    Reference: Thesis §6.4 (a read index is only good from the current leader)."""
    net = Network.of(PEERS, pre_vote=False, check_quorum=False)  # elect 3 at once below
    old = net.elect(1)
    net.drop_kind(ReadIndexRequest)
    net[2].read_index(b"c")
    run(net)
    assert net[2].take_dropped_reads() == []
    net.heal()
    net.elect(3)
    assert net[2].lead == 3
    assert net[2].take_dropped_reads() == [b"c"]
    late = ReadIndexResponse(net[2].term, 3, 2, b"c", 1)  # even from the new leader
    net[2].step(late)
    assert drive(net[2]).read_states == ()
    assert old.role is Role.FOLLOWER


def test_contexts_of_different_nodes_do_not_collide() -> None:
    """The leader keys reads by the node they came from: the same context from three nodes
    is three reads, each answered to its own node; a duplicate request while one is open
    is one read.

    Reference: Thesis §6.4."""
    net = Network.of(PEERS)
    net.elect(1)
    index = net.propose(1, b"x")
    for i in PEERS:
        net[i].read_index(b"same")
    dup = ReadIndexRequest(net[1].term, 2, 1, b"same")
    net.send([dup])  # arrives before the original: the original is then the duplicate
    states = run(net)
    assert states == {i: [ReadState(index, b"same")] for i in PEERS}


def test_a_node_that_knows_no_leader_refuses_reads() -> None:
    """Reference: Thesis §6.4 (there is no leader to confirm the read)."""
    r = new_raft(2, PEERS)
    drain(r)
    with pytest.raises(NotLeaderError):
        r.read_index(b"c")
    with pytest.raises(NotLeaderError):
        r.read_lease(b"c")


def test_a_follower_refuses_lease_reads_and_oversized_contexts() -> None:
    """Reference: Thesis §6.4.1 (only the leader holds a lease)."""
    net = Network.of(PEERS)
    net.elect(1)
    with pytest.raises(NotLeaderError) as info:
        net[2].read_lease(b"c")
    assert info.value.leader_id == 1
    with pytest.raises(LocalProtocolError, match="at most"):
        net[2].read_index(b"x" * (MAX_READ_CONTEXT + 1))


def test_read_index_messages_are_range_checked_at_decode() -> None:
    """A peer's bytes are input: an oversized context or a negative index is refused."""
    enc = msgspec.msgpack.encode
    with pytest.raises(MessageDecodeError):
        decode_message(enc([10, 1, 2, 1, b"x" * (MAX_READ_CONTEXT + 1)]))
    with pytest.raises(MessageDecodeError):
        decode_message(enc([11, 1, 2, 1, b"c", -1]))
    assert decode_message(enc([11, 1, 2, 1, b"c", 7])) == ReadIndexResponse(1, 2, 1, b"c", 7)


def test_a_membership_change_ends_the_lease() -> None:
    """The lease was acknowledged by the voters of the old membership; new voters promised
    nothing, so the leader starts again from a round sent under the new one.

    Reference: Thesis §4.1 (a change takes effect on append), §6.4.1."""
    net = Network.of(PEERS, lease_ticks=LEASE)
    leader = net.elect(1)
    net.tick(1)
    assert leader.lease_valid()
    add = ConfChangeSingle(ConfChangeKind.ADD_LEARNER, 4)
    leader.propose_conf_change(ConfChange((add,)))
    assert not leader.lease_valid()
    net.tick(1)
    assert leader.lease_valid()
