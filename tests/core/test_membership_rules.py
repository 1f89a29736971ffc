"""One test per membership rule the core keeps (Thesis §4), driving cores wired by
:class:`tests.corehelpers.Network`. The pure arithmetic of changes is tested in
``test_confchange.py``; these test when and how the core applies them.
"""

from __future__ import annotations

import pytest

from raftpy.core.confchange import (
    ConfChange,
    ConfChangeKind,
    ConfChangeSingle,
    ConfChangeTransition,
)
from raftpy.core.messages import (
    AppendEntries,
    ConfState,
    EntryKind,
    RequestVote,
    TimeoutNow,
    decode_conf_state,
)
from raftpy.core.raft import Raft
from raftpy.core.ready import Role
from raftpy.core.storage import HardState
from raftpy.errors import ConfChangeError, ProposalDropped
from raftpy.storage.memory import MemoryStorage
from tests.corehelpers import Network, Node, drain, new_raft, of_kind, role_of


def add_learner(node: int, address: str | None = None) -> ConfChangeSingle:
    return ConfChangeSingle(ConfChangeKind.ADD_LEARNER, node, address)


def add_voter(node: int, address: str | None = None) -> ConfChangeSingle:
    return ConfChangeSingle(ConfChangeKind.ADD_VOTER, node, address)


def remove(node: int) -> ConfChangeSingle:
    return ConfChangeSingle(ConfChangeKind.REMOVE_NODE, node)


def change(
    *singles: ConfChangeSingle, transition: ConfChangeTransition = ConfChangeTransition.AUTO
) -> ConfChange:
    return ConfChange(tuple(singles), transition)


def join(net: Network, node_id: int, **settings: int) -> Raft:
    """A brand-new node with an empty log and no membership (it learns it from the leader)."""
    storage = MemoryStorage(voters=[])
    raft = new_raft(node_id, [], storage=storage, **settings)  # type: ignore[arg-type]
    net.nodes[node_id] = Node(raft, storage)
    return raft


def elected(ids: tuple[int, ...] = (1, 2, 3), **settings: int | bool) -> Network:
    net = Network.of(ids, **settings)  # type: ignore[arg-type]
    net.elect(ids[0])
    return net


def conf_of(raft: Raft) -> ConfState:
    return raft.conf_state()


# ---------------------------------------------------------------------------------------------
# When a change takes effect
# ---------------------------------------------------------------------------------------------


def test_change_takes_effect_on_append_not_on_commit() -> None:
    """Reference: Thesis §4.1 ("a server always uses the latest configuration in its log,
    regardless of whether the entry is committed"). Both the leader and a follower adopt the
    new membership while the entry is still uncommitted."""
    net = elected()
    leader = net[1]
    net.isolate(3)
    net.drop_kind(AppendEntries, dst=2)  # the entry reaches nobody for now
    index = leader.propose_conf_change(change(add_learner(4)))
    assert 4 in conf_of(leader).learners
    assert leader.log.committed < index
    net.heal()
    net.drop(lambda m: m.src != 1 or m.dst != 2)  # only leader -> 2 passes: 2 appends, no ack
    net.stabilize()
    follower = net[2]
    assert follower.log.last_index() >= index
    assert leader.log.committed < index
    assert 4 in conf_of(follower).learners


def test_truncated_change_is_undone() -> None:
    """Reference: Thesis §4.1 ("if the log is truncated, the server falls back to the previous
    configuration"); Raft §5.3 (a new leader overwrites uncommitted entries)."""
    net = elected(pre_vote=False, check_quorum=False)  # so 2 may campaign at once
    old = conf_of(net[1])
    net.isolate(1)
    net[1].propose_conf_change(change(remove(3)))
    assert conf_of(net[1]).voters == (1, 2)
    net.heal()
    net.isolate(1)
    net.elect(2)
    net.propose(2, b"x")
    net.heal()
    net.tick(2, 2)  # heartbeats bring 1 back as a follower, which takes 2's log
    assert role_of(net[1]) is Role.FOLLOWER
    assert conf_of(net[1]) == old
    assert conf_of(net[1]).voters == (1, 2, 3)


def test_membership_survives_a_restart() -> None:
    """Reference: Thesis §4 (the configuration lives in the log): a restarted node rebuilds
    the membership in force from its stored entries, committed or not."""
    net = elected()
    net[1].propose_conf_change(change(add_learner(4, "h:4")))
    net.stabilize()
    storage = net.nodes[2].storage
    restarted = new_raft(2, [1, 2, 3], storage=storage)
    assert conf_of(restarted) == conf_of(net[2])
    assert conf_of(restarted).address_map() == {4: "h:4"}


def test_snapshot_records_membership_at_its_index() -> None:
    """Reference: Raft §7 (a snapshot holds the latest configuration as of its last included
    index), Thesis §4.1: not a later, still uncommitted one."""
    net = elected()
    leader = net[1]
    before = leader.log.applied
    net.isolate(2)
    net.isolate(3)
    leader.propose_conf_change(change(add_learner(4)))
    drain(leader)
    assert 4 in conf_of(leader).learners
    assert 4 not in leader.conf_state_at(before).learners
    assert leader.conf_state_at(before) == ConfState(voters=(1, 2, 3))


# ---------------------------------------------------------------------------------------------
# When a change is refused
# ---------------------------------------------------------------------------------------------


def test_second_change_refused_while_one_is_pending() -> None:
    """Reference: Thesis §4.1 ("the leader does not start a new change until the previous one
    has committed")."""
    net = elected()
    leader = net[1]
    net.isolate(2)
    net.isolate(3)
    leader.propose_conf_change(change(add_learner(4)))
    with pytest.raises(ProposalDropped, match="not committed yet") as info:
        leader.propose_conf_change(change(add_learner(5)))
    assert info.value.retryable
    assert 5 not in conf_of(leader).learners
    net.heal()
    net.tick(1)
    leader.propose_conf_change(change(add_learner(5)))  # committed now: the next may start
    assert 5 in conf_of(leader).learners


def test_change_refused_before_the_leader_commits_in_its_term() -> None:
    """Reference: the raft-dev fix to single-server changes (Ongaro, 2015; Thesis §4.1
    erratum): a new leader changes the membership only after an entry of its own term
    committed."""
    net = Network.of((1, 2, 3))
    net.drop_kind(AppendEntries, src=1)  # the new leader's no-op reaches nobody yet
    leader = net.elect(1)
    assert leader.log.term(leader.log.committed) != leader.term
    with pytest.raises(ProposalDropped, match="committed an entry of its term") as info:
        leader.propose_conf_change(change(add_learner(4)))
    assert info.value.retryable
    assert 4 not in conf_of(leader).members()
    net.heal()
    net.tick(1, 2)
    assert leader.log.term(leader.log.committed) == leader.term
    leader.propose_conf_change(change(add_learner(4)))
    assert 4 in conf_of(leader).learners


def test_promotion_refused_while_the_learner_lags() -> None:
    """Reference: Thesis §4.2.1 (a new server catches up as a non-voting member before it
    counts; otherwise commits stall while it copies the log)."""
    net = elected(max_learner_lag=2)
    leader = net[1]
    join(net, 4, max_learner_lag=2)
    net.isolate(4)
    leader.propose_conf_change(change(add_learner(4)))
    net.stabilize()
    for k in range(5):
        net.propose(1, b"w%d" % k)
    with pytest.raises(ConfChangeError, match="entries behind"):
        leader.propose_conf_change(change(add_voter(4)))
    net.heal()
    net.tick(1, 3)
    assert leader.prs[4].match == leader.log.last_index()
    leader.propose_conf_change(change(add_voter(4)))
    net.stabilize()
    assert conf_of(leader).voters == (1, 2, 3, 4)


def test_forced_promotion_of_a_lagging_learner() -> None:
    """Reference: Thesis §4.2.1; the operator may override the catch-up rule."""
    net = elected(max_learner_lag=0)
    join(net, 4, max_learner_lag=0)
    net.isolate(4)
    net[1].propose_conf_change(change(add_learner(4)))
    net.stabilize()
    net.propose(1, b"w")
    net[1].propose_conf_change(change(add_voter(4)), force=True)
    assert 4 in conf_of(net[1]).voters


def test_change_refused_when_no_reachable_quorum_would_remain() -> None:
    """Reference: Thesis §4.2 (availability during changes): with one of three voters silent,
    adding a fourth voter needs three of four, of which only two answer; the cluster would
    stop. Refused unless forced."""
    net = elected(max_learner_lag=1000)
    leader = net[1]
    net.isolate(3)
    net.tick(1, leader.config.election_ticks * 2)  # two CheckQuorum periods: 3 is not heard
    assert role_of(leader) is Role.LEADER
    with pytest.raises(ConfChangeError, match="not a majority"):
        leader.propose_conf_change(change(add_voter(4)))
    assert conf_of(leader).voters == (1, 2, 3)
    # Removing the silent voter keeps a reachable majority: allowed.
    leader.propose_conf_change(change(remove(3)))
    assert conf_of(leader).voters == (1, 2)


# ---------------------------------------------------------------------------------------------
# Joint consensus
# ---------------------------------------------------------------------------------------------


def test_joint_change_is_left_automatically() -> None:
    """Reference: Thesis §4.3 (C_old,new, then C_new once C_old,new commits)."""
    net = elected((1, 2, 3), max_learner_lag=1000)
    for node in (4, 5):
        join(net, node)
    net[1].propose_conf_change(change(add_voter(4), add_voter(5)))
    assert conf_of(net[1]).voters_outgoing == (1, 2, 3)
    net.stabilize()
    for node in (1, 2, 3, 4, 5):
        conf = conf_of(net[node])
        assert conf.voters == (1, 2, 3, 4, 5), (node, conf)
        assert conf.voters_outgoing == ()
    kinds = [e.kind for e in net.nodes[1].applied]
    assert kinds.count(EntryKind.CONFIG) == 3  # the bootstrap record, enter joint, leave


def test_explicit_joint_change_waits_for_the_leave() -> None:
    """Reference: Thesis §4.3; etcd's JOINT_EXPLICIT: the joint configuration holds until an
    empty change leaves it."""
    net = elected()
    net[1].propose_conf_change(
        change(remove(2), remove(3), transition=ConfChangeTransition.JOINT_EXPLICIT)
    )
    net.stabilize()
    assert conf_of(net[1]).voters_outgoing == (1, 2, 3)
    net[1].propose_conf_change(ConfChange())
    net.stabilize()
    assert conf_of(net[1]) == ConfState(voters=(1,))


def test_joint_commit_needs_both_majorities() -> None:
    """Reference: Thesis §4.3 (agreement needs separate majorities of C_old and C_new)."""
    net = elected((1, 2, 3), max_learner_lag=1000)
    for node in (4, 5, 6):
        join(net, node)
    net.isolate(2)
    net.isolate(3)
    net[1].propose_conf_change(
        change(add_voter(4), add_voter(5), add_voter(6), remove(2)), force=True
    )
    net.stabilize()
    leader = net[1]
    # C_new = {1,3,4,5,6} has a majority answering (1,4,5,6) but C_old = {1,2,3} does not.
    assert leader.conf_state().voters_outgoing == (1, 2, 3)
    assert leader.log.term(leader.log.committed) == leader.term
    assert leader.log.committed < leader.log.last_index()
    net.heal()
    net.tick(1, 3)  # heartbeats resume replication to 2 and 3
    assert leader.conf_state().voters == (1, 3, 4, 5, 6)
    assert leader.conf_state().voters_outgoing == ()


# ---------------------------------------------------------------------------------------------
# Learners and removed servers
# ---------------------------------------------------------------------------------------------


def test_learner_never_counts_toward_commit() -> None:
    """Reference: Thesis §4.2.1 (non-voting members)."""
    net = elected()
    join(net, 4)
    net[1].propose_conf_change(change(add_learner(4)))
    net.stabilize()
    net.isolate(2)
    net.isolate(3)
    index = net.propose(1, b"w")
    assert net[4].log.last_index() >= index
    assert net[1].prs[4].match >= index
    assert net[1].log.committed < index


def test_learner_never_campaigns() -> None:
    """Reference: Thesis §4.2.1: a learner never starts an election."""
    net = elected()
    join(net, 4)
    net[1].propose_conf_change(change(add_learner(4)))
    net.stabilize()
    net.isolate(4)
    for _ in range(50):
        net[4].tick()
    assert not of_kind(drain(net[4]), RequestVote)
    assert role_of(net[4]) is Role.FOLLOWER


def test_removed_server_never_campaigns() -> None:
    """Reference: Thesis §4.2.3 (removed servers must not disrupt the cluster): a server whose
    log says it is no longer a voter never starts an election (not even a pre-vote)."""
    net = elected()
    net[1].propose_conf_change(change(remove(3)))
    net.stabilize()
    # The leader stops replicating to 3 as soon as it appends the change, so 3 learns it only
    # from its log: give 3 the leader's log, as a restart from a copy of it would.
    storage = MemoryStorage(voters=[1, 2, 3])
    storage.append(net[1].log.entries(1, net[1].log.last_index() + 1))
    storage.set_hard_state(HardState(net[1].term, None, net[1].log.committed))
    removed = new_raft(3, [1, 2, 3], storage=storage)
    assert 3 not in removed.conf_state().members()
    for _ in range(50):
        removed.tick()
    assert not of_kind(drain(removed), RequestVote)
    assert role_of(removed) is Role.FOLLOWER


def test_removed_leader_steps_down_once_the_change_commits() -> None:
    """Reference: Thesis §4.2.2 (the leader manages the cluster without counting itself until
    C_new commits, then steps down); §3.10 (it hands over to an up-to-date voter)."""
    net = elected()
    leader = net[1]
    net.drop_kind(AppendEntries, src=1)
    index = leader.propose_conf_change(change(remove(1)))
    assert role_of(leader) is Role.LEADER  # still leads while the change is uncommitted
    assert leader.log.committed < index
    net.heal()
    net.stabilize()
    assert role_of(leader) is Role.FOLLOWER
    assert any(isinstance(m, TimeoutNow) and m.src == 1 for m in net.delivered)
    assert net.leaders() in ([2], [3])
    new = net[net.leaders()[0]]
    assert new.log.committed >= index
    assert conf_of(new).voters == (2, 3)


def test_transfer_to_a_server_that_stops_voting_is_abandoned() -> None:
    """Reference: Thesis §3.10 (only a voter can take over). A transfer to an outgoing voter
    ends when the leader leaves the joint configuration without it, rather than blocking
    proposals until the transfer times out."""
    net = elected()
    leader = net[1]
    net.isolate(3)
    leader.propose_conf_change(
        change(remove(3), transition=ConfChangeTransition.JOINT_IMPLICIT), force=True
    )
    leader.transfer_leadership(3)  # 3 still votes in C_old
    assert leader.lead_transferee == 3
    net.stabilize()  # C_old,new commits with 1 and 2; the leader moves on to C_new = {1, 2}
    assert conf_of(leader) == ConfState(voters=(1, 2))
    assert leader.lead_transferee is None
    assert role_of(leader) is Role.LEADER
    net.propose(1, b"accepted")


def test_first_leader_records_the_bootstrap_membership() -> None:
    """Reference: Thesis §4 (the configuration lives in the log): the first entry of a new
    cluster is its membership, so a server copying the log from the start learns it."""
    net = elected()
    first = net[2].log.entries(1, 2)[0]
    assert first.kind is EntryKind.CONFIG
    assert conf_of(net[2]) == ConfState(voters=(1, 2, 3))
    join(net, 4)
    net[1].propose_conf_change(change(add_learner(4)))
    net.stabilize()
    first_applied = net.nodes[4].applied[0]
    assert first_applied.index == 1
    assert decode_conf_state(first_applied.data) == ConfState(voters=(1, 2, 3))


# ---------------------------------------------------------------------------------------------
# Lost disks
# ---------------------------------------------------------------------------------------------


def test_follower_that_lost_its_log_is_replicated_again() -> None:
    """Reference: Raft §5.3 (the leader backs nextIndex off until the logs match): a follower
    restarted with an empty disk refuses entries it had acknowledged; the leader must find the
    new match rather than probe at the old one for ever."""
    net = elected()
    for k in range(5):
        net.propose(1, b"w%d" % k)
    leader = net[1]
    assert leader.prs[3].match == leader.log.last_index()
    storage = MemoryStorage(voters=[1, 2, 3])
    net.nodes[3] = Node(new_raft(3, [1, 2, 3], storage=storage), storage)
    net.propose(1, b"after")  # 3 refuses its predecessor, which it had acknowledged
    net.tick(1, 3)
    assert leader.prs[3].lost_entries >= 1
    assert net[3].log.last_index() == leader.log.last_index()
    assert leader.prs[3].match == leader.log.last_index()


def test_server_leaving_campaigns_until_its_removal_commits() -> None:
    """Reference: Thesis §4.2.2 ("a server that is not part of its own latest configuration
    should still start new elections, as it might still be needed until the C_new entry is
    committed"; it does not count its own vote). Voters {1, 2}: 1 removes itself while cut
    off from 2, then loses leadership. Its log (with the removal) is the newest, so only it can
    win: if it never campaigned, the cluster would have no leader for ever."""
    net = elected((1, 2))
    net.isolate(1)
    net[1].propose_conf_change(change(remove(1)), force=True)
    net.tick(1, 2 * net[1].config.election_ticks)  # CheckQuorum: 1 steps down
    assert role_of(net[1]) is Role.FOLLOWER
    assert 1 not in conf_of(net[1]).voters
    net.heal()
    for _ in range(6 * net[1].config.election_ticks):
        net.tick_all()
        if net.leaders() == [2] and net[2].log.committed == net[2].log.last_index():
            break
    assert conf_of(net[2]) == ConfState(voters=(2,))
    assert net.leaders() == [2]
    assert role_of(net[1]) is Role.FOLLOWER


def test_membership_index_follows_the_log() -> None:
    """Reference: Thesis §4 (the configuration lives in the log): the membership in force is
    named by the index of its entry, through appends, truncation, restarts and snapshots."""
    net = elected(pre_vote=False, check_quorum=False)
    leader = net[1]
    assert leader.conf_index() == 1  # the first leader's bootstrap record
    index = leader.propose_conf_change(change(add_learner(4)))
    assert leader.conf_index() == index
    net.stabilize()
    assert net[2].conf_index() == index
    restarted = new_raft(2, [1, 2, 3], storage=net.nodes[2].storage)
    assert restarted.conf_index() == index
    # An uncommitted change that a new leader overwrites: back to the previous entry.
    net.isolate(1)
    leader.propose_conf_change(change(add_learner(5)))
    assert leader.conf_index() > index
    net.heal()
    net.isolate(1)
    net.elect(2)
    net.propose(2, b"x")
    net.heal()
    net.tick(2, 2)
    assert leader.conf_index() == index
