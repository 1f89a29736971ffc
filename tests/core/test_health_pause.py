"""The core's campaign pause (``Raft.pause_campaigns``) and the hand-off a leader parked on a
full disk makes (``transfer_leadership(at_once=True)``, ``take_messages``).

These are not rules of the Raft paper: they are raftpy's own extension for a node whose disk is
slow or full (docs/health.md), built on leadership transfer (Thesis §3.10, as etcd raft and
hashicorp/raft implement it). Each test asserts exact roles, terms and messages, in the style of
tests/core/test_paper_rules.py.
"""

from __future__ import annotations

from raftpy.core.messages import (
    AppendEntries,
    Heartbeat,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from raftpy.core.ready import Role
from tests.corehelpers import (
    Network,
    drain,
    drive,
    new_raft,
    new_storage,
    of_kind,
    persist,
    role_of,
    storage_of,
)

PEERS = (1, 2, 3)


def test_paused_follower_starts_no_election_until_resumed() -> None:
    """A paused follower lets any number of election timeouts pass without a pre-election or
    an election (no term change, no vote requests); resumed, it campaigns at the next tick.

    Reference: raftpy's own extension (docs/health.md); Thesis §3.10 (leadership transfer, as
    in etcd raft and hashicorp/raft)."""
    r = new_raft(1, PEERS, storage=new_storage(PEERS, term=1))
    r.pause_campaigns(True)
    assert r.campaigns_paused
    for _ in range(50):  # 50 ticks: 2.5 times the longest randomized timeout (2 * 10)
        r.tick()
    assert (role_of(r), r.term, r.vote) == (Role.FOLLOWER, 1, None)
    assert of_kind(drain(r), RequestVote) == []
    r.pause_campaigns(False)
    r.tick()
    assert (role_of(r), r.term) == (Role.PRE_CANDIDATE, 1)
    votes = of_kind(drain(r), RequestVote)
    assert [(m.dst, m.term, m.pre_vote) for m in votes] == [(2, 2, True), (3, 2, True)]


def test_paused_follower_still_votes_and_replicates() -> None:
    """Pausing touches campaigns only: a paused follower appends its leader's entries and
    grants its vote to an up-to-date candidate once the leader's lease has passed.

    Reference: raftpy's own extension (docs/health.md); Raft §5.2, §5.3 unchanged."""
    net = Network.of(PEERS)
    leader = net.elect(1)
    net[2].pause_campaigns(True)
    index = net.propose(1, b"x")
    assert net[2].log.last_index() == index
    assert leader.log.committed == index  # node 2's acknowledgement counted
    net.isolate(1)
    net.tick(2, 10)  # the leader's lease on node 2's vote has passed (Thesis §4.2.3)
    # The pause keeps election_elapsed growing, so node 2 grants node 3's (pre-)votes.
    net.tick(3, 20)
    assert (net[3].role, net[2].role, net[2].lead) == (Role.LEADER, Role.FOLLOWER, 3)
    assert net[2].vote == 3


def test_paused_follower_ignores_timeout_now_and_the_transfer_times_out() -> None:
    """A paused voter does not act on TimeoutNow and answers nothing; the leader's transfer is
    aborted after an election timeout and a transfer to another voter then succeeds.

    Reference: raftpy's own extension (docs/health.md); Thesis §3.10."""
    net = Network.of(PEERS)
    leader = net.elect(1)
    net[2].pause_campaigns(True)
    leader.transfer_leadership(2)
    net.stabilize()
    sent = [m for m in net.delivered if isinstance(m, TimeoutNow)]
    assert sent == [TimeoutNow(1, 1, 2)]
    assert (net[2].role, net[2].term, leader.role, leader.lead_transferee) == (
        Role.FOLLOWER,
        1,
        Role.LEADER,
        2,
    )
    net.tick(1, 10)  # one election timeout: the transfer is aborted
    assert (leader.role, leader.lead_transferee) == (Role.LEADER, None)
    leader.transfer_leadership(3)
    net.stabilize()
    assert (net[3].role, net[3].term, leader.role) == (Role.LEADER, 2, Role.FOLLOWER)


def test_paused_leader_does_not_win_back_leadership() -> None:
    """A leader that paused its campaigns and handed over stays a follower: when its new
    leader goes quiet, the other voter is elected, never the paused one.

    Reference: raftpy's own extension (docs/health.md); Thesis §3.10."""
    net = Network.of(PEERS)
    net.elect(1)
    net[1].pause_campaigns(True)
    net[1].transfer_leadership(2)
    net.stabilize()
    assert (net[2].role, net[1].role) == (Role.LEADER, Role.FOLLOWER)
    net.isolate(2)
    for _ in range(60):
        net.tick_all()
    assert 3 in net.leaders()  # (2, cut off, stepped down by CheckQuorum)
    assert net[1].role is Role.FOLLOWER and net[1].lead == 3


def test_transfer_at_once_sends_timeout_now_to_a_lagging_voter() -> None:
    """``at_once`` sends TimeoutNow immediately, even to a voter not known to hold the whole
    log (a leader that cannot persist cannot bring it up to date); the voter wins only with a
    log as up to date as a majority's.

    Reference: raftpy's own extension (docs/health.md); Thesis §3.10, Raft §5.4.1."""
    net = Network.of(PEERS)
    leader = net.elect(1)
    net.cut(1, 2)
    net.propose(1, b"x")
    net.heal()
    assert leader.prs[2].match < leader.log.last_index()
    leader.transfer_leadership(2, at_once=True)
    rd = drive(leader)
    assert of_kind(rd.messages, TimeoutNow) == [TimeoutNow(1, 1, 2)]
    assert of_kind(rd.messages, AppendEntries) == []
    # Node 2 lacks the entry nodes 1 and 3 hold: both refuse their votes (Raft §5.4.1).
    net.send(rd.messages)
    net.stabilize()
    assert (net[2].term, net.leaders()) == (2, [])
    # The next election timeout elects a voter whose log holds the entry.
    for _ in range(40):
        net.tick_all()
    assert net.leaders() in ([1], [3])


def test_take_messages_while_a_ready_is_outstanding() -> None:
    """A driver parked mid-Ready (its sync fails for a full disk) takes the send-now messages
    of a hand-off at once: the heartbeats naming the transferee, then TimeoutNow; the next
    Ready does not list them again, and nothing that waits for persistence is taken.

    Reference: raftpy's own extension (docs/health.md); Thesis §3.10, §10.2.1."""
    net = Network.of(PEERS)
    leader = net.elect(1)
    leader.propose(b"x")
    rd = leader.ready()  # outstanding: the driver cannot persist it
    leader.step(RequestVoteResponse(1, 2, 1, False))  # a stray answer: nothing to send
    leader.transfer_leadership(2, at_once=True)
    taken = leader.take_messages()
    assert [(type(m), m.dst) for m in taken] == [(Heartbeat, 2), (Heartbeat, 3), (TimeoutNow, 2)]
    heartbeats = of_kind(taken, Heartbeat)
    assert [m.transferee for m in heartbeats] == [2, 2]
    assert leader.take_messages() == ()
    persist(rd, storage_of(leader))  # space is free again
    leader.advance(rd)
    assert of_kind(drive(leader).messages, TimeoutNow) == []
