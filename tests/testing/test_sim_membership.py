"""Membership changes on SimCluster (Thesis §4), one named scenario per rule: each test fails
when the core breaks the rule it names (the simulator's checkers raise InvariantViolation for
safety, the test asserts the liveness and the exact outcome).

Every test uses a fixed seed and replays exactly; with the simulator's defaults an election
timeout is 0.1-0.2 s of virtual time.
"""

from __future__ import annotations

import logging
from typing import Literal

import pytest

from raftpy.core.confchange import (
    ConfChange,
    ConfChangeKind,
    ConfChangeSingle,
    ConfChangeTransition,
)
from raftpy.core.ready import Role
from raftpy.errors import ConfChangeError, IndeterminateError, ProposalDropped
from raftpy.testing.fuzz import run_fuzz
from raftpy.testing.sim import SimCluster

ADD_VOTER = ConfChangeKind.ADD_VOTER
ADD_LEARNER = ConfChangeKind.ADD_LEARNER
REMOVE = ConfChangeKind.REMOVE_NODE


def tag(c: SimCluster, text: str) -> str:
    return f"[seed={c.seed} t={c.now:.3f}s] {text}"


class Writer:
    """A client that proposes one write per :meth:`SimCluster.run_for` slice at the node that
    leads (see ``SimCluster.add_background``) and remembers where each was appended."""

    def __init__(self, c: SimCluster, prefix: bytes = b"w") -> None:
        self.c = c
        self.prefix = prefix
        self.sent: list[tuple[int, bytes]] = []

    def __call__(self) -> None:
        lead = self.c.leader()
        if lead is None:
            return
        cmd = b"%s-%d" % (self.prefix, len(self.sent))
        index, _, _ = self.c.start(lead, cmd)
        if index >= 0:
            self.sent.append((index, cmd))

    def acknowledged(self) -> list[tuple[int, bytes]]:
        """The writes some node applied where they were appended: a client got an answer."""
        applied = {entry for i in range(self.c.n) for entry in self.c.applied(i)}
        return [w for w in self.sent if w in applied]


def check_no_write_lost(c: SimCluster, writer: Writer, members: list[int] | None = None) -> int:
    """Every acknowledged write is in every member's applied list; return how many."""
    acked = writer.acknowledged()
    voters, learners = c.members()
    for i in members if members is not None else [*voters, *learners]:
        applied = set(c.applied(i))
        lost = [w for w in acked if w not in applied]
        assert not lost, tag(c, f"node {i} lacks acknowledged writes {lost[:5]}")
    return len(acked)


def settle(c: SimCluster, writer: Writer | None = None) -> None:
    """Stop the writer, get a last write through and let every member apply it."""
    c.add_background(None)
    c.one(b"settle")
    if writer is not None:
        assert check_no_write_lost(c, writer) > 0, tag(c, "no write was acknowledged")


def grow(c: SimCluster) -> int:
    """Add a new node as a learner and promote it once caught up (Thesis §4.2.1)."""
    i = c.add_node()
    c.add_member(i)
    c.promote(i)
    return i


# ----------------------------------------------------------------------------------------------
# Adding, removing, replacing
# ----------------------------------------------------------------------------------------------


def test_single_change_under_load() -> None:
    """A new server joins (learner, then promoted) while a client writes without pause: the
    writes go on committing during the change and none is lost.

    Reference: Thesis §4.1 (a single-server change takes effect on append) and §4.2.1 (new
    servers catch up as learners before they count)."""
    c = SimCluster(3, seed=11)
    c.check_one_leader()
    writer = Writer(c)
    c.add_background(writer)
    c.run_for(0.5)
    before = len(writer.acknowledged())
    new = grow(c)
    during = len(writer.acknowledged()) - before
    assert c.members() == ((0, 1, 2, new), ()), tag(c, f"members {c.members()}")
    assert during > 0, tag(c, "no write committed while the membership changed")
    settle(c, writer)
    # Four voters now: with the new one and one old one down, two are not a majority...
    lead = c.check_one_leader()
    c.crash(new)
    c.crash(next(i for i in (0, 1, 2) if i != lead))
    index, _, _ = c.start(lead, b"needs-three-of-four")
    c.run_for(1.0)
    assert c.n_committed(index)[0] == 0, tag(c, "committed by two of four voters")
    # ... and the new voter makes the third.
    c.restart(new)
    assert c.wait_committed(index, 3) == b"needs-three-of-four"


def test_grow_3_to_5_and_shrink_5_to_3_while_writing() -> None:
    """3 -> 5 voters one server at a time, then 5 -> 3 removing two of the original ones
    (the leader among them), while a client writes; no acknowledged write is lost.

    Reference: Thesis §4.1 (one server at a time), §4.2.2 (removing the leader)."""
    c = SimCluster(3, seed=12)
    lead = c.check_one_leader()
    writer = Writer(c)
    c.add_background(writer)
    a, b = grow(c), grow(c)
    assert c.members() == ((0, 1, 2, a, b), ()), tag(c, f"members {c.members()}")
    other = next(i for i in (0, 1, 2) if i != lead)
    c.remove_member(other)
    c.remove_member(lead)
    voters, learners = c.members()
    assert sorted(voters) == sorted({0, 1, 2, a, b} - {other, lead}) and not learners
    settle(c, writer)
    assert c.leader() in voters, tag(c, f"leader {c.leader()} is not a voter {voters}")


def test_replace_a_dead_node() -> None:
    """A voter dies for good: the remaining majority removes it and adds a new server in its
    place, which then counts in the majority.

    Reference: Thesis §4.1 and §4.2.1."""
    c = SimCluster(3, seed=13)
    lead = c.check_one_leader()
    dead, survivor = (i for i in (0, 1, 2) if i != lead)
    c.one(b"before")
    c.crash(dead)
    writer = Writer(c)
    c.add_background(writer)
    c.remove_member(dead)
    new = grow(c)
    assert c.members() == (tuple(sorted((lead, survivor, new))), ())
    settle(c, writer)
    c.crash(survivor)  # the replacement makes the majority now
    c.one(b"after", expected_servers=2)


@pytest.mark.parametrize("storage", ["memory", "file"])
def test_replace_a_node_whose_disk_was_wiped(storage: Literal["memory", "file"]) -> None:
    """A voter loses its disk and comes back empty with the same id: it is refused (it lost
    its votes and the entries it acknowledged, so it must not vote as that member), adding
    it while it is a member is refused, and the fix works: remove it, add it back as a new
    learner, promote it.

    Reference: Thesis §4.1 (membership changes); Raft §5.2 and §5.4 (a server that forgot its
    vote or its log could elect two leaders or lose a committed entry)."""
    c = SimCluster(3, seed=14, storage=storage)
    lead = c.check_one_leader()
    wiped, other = (i for i in (0, 1, 2) if i != lead)
    for k in range(5):
        c.one(b"before-%d" % k)
    c.wipe(wiped)
    c.restart(wiped)
    for k in range(5):  # writes would bring a wiped member that is taken back up to date
        c.one(b"while-wiped-%d" % k, expected_servers=2)
    c.run_for(1.0)
    assert c.raft(wiped).log.committed == 0, tag(c, "a wiped node was taken back as it was")
    with pytest.raises(ConfChangeError, match="remove it first"):
        c.add_member(wiped)
    c.remove_member(wiped)
    c.add_member(wiped)
    assert c.members() == (tuple(sorted((lead, other))), (wiped,))
    c.promote(wiped)
    index = c.one(b"replaced")
    assert [cmd for _, cmd in c.applied(wiped)][-11:] == [
        *[b"before-%d" % k for k in range(5)],
        *[b"while-wiped-%d" % k for k in range(5)],
        b"replaced",
    ], tag(c, f"the replaced node applied {c.applied(wiped)}")
    c.crash(other)  # the replaced node makes the majority again
    assert c.one(b"after", expected_servers=2) > index


def test_a_wiped_member_added_back_is_still_refused_by_a_stale_removed_server() -> None:
    """W's disk is wiped and W is replaced (removed, added back as a learner). S was removed
    earlier while cut off, so its membership is still {S, W, L}. Cut off together with the
    new W, S would win W's vote (W's log is empty) and lead without the entries the others
    committed. The identity check stops it: S's log never saw W added back, so S still
    expects W's old disk and refuses the new one.

    Reference: Thesis §4.2.3 (removed servers), Raft §5.4.1 (a voter must not have lost the
    log it acknowledged)."""
    c = SimCluster(3, seed=26)
    lead = c.check_one_leader()
    s, w = (i for i in (0, 1, 2) if i != lead)
    c.one(b"x")
    c.partition([[s], [w, lead]])
    y = c.add_node()
    c.partition([[s], [w, lead, y]])
    c.add_member(y)
    c.promote(y)
    c.remove_member(s)
    assert c.raft(s).conf_state().voters == (0, 1, 2)
    c.wipe(w)
    c.restart(w)
    c.remove_member(w)
    c.partition([[s, w], [lead, y]])
    c.add_member(w)
    c.run_for(3.0)  # S campaigns on and on; the checkers raise if it ever leads
    assert not c.state(s)[1] and c.raft(w).log.last_index() == 0
    c.heal()
    c.promote(w)
    c.one(b"replaced", expected_servers=3)


def test_a_new_member_catches_up_from_a_snapshot() -> None:
    """A server added to a cluster that compacted its log gets the leader's snapshot, with
    the membership in it, then the log after it; promoted, it holds what the others hold.

    Reference: Thesis §4.2.1 (catching up new servers), Raft §7 (the snapshot records the
    configuration)."""
    c = SimCluster(3, seed=23, snapshot_every=5)
    c.check_one_leader()
    for k in range(20):
        c.one(b"before-%d" % k)
    new = c.add_node()
    installed = c.snapshots_installed
    c.add_member(new)
    c.promote(new)
    c.one(b"after")
    assert c.snapshots_installed > installed, tag(c, "the new member did not get a snapshot")
    assert c.applied(new) == c.applied(0), tag(c, "the new member's state differs")
    lead = c.check_one_leader()
    assert c.raft(new).conf_state() == c.raft(lead).conf_state()


def test_remove_the_leader() -> None:
    """The leader removes itself: it goes on leading (without counting itself) until the
    change commits, then steps down; a new leader is elected among the others and no
    acknowledged write is lost.

    Reference: Thesis §4.2.2."""
    c = SimCluster(5, seed=15)
    lead = c.check_one_leader()
    writer = Writer(c)
    c.add_background(writer)
    c.run_for(0.3)
    conf = c.remove_member(lead)
    assert lead not in conf.voters
    assert not c.state(lead)[1], tag(c, f"removed leader {lead} still leads")
    new = c.check_one_leader()
    assert new != lead
    settle(c, writer)
    assert lead not in c.members()[0]
    # The removed leader stays out: it never leads again, and the others commit without it.
    c.run_for(2.0)
    assert not c.state(lead)[1]
    c.crash(lead)
    c.one(b"without-the-old-leader", expected_servers=4)


def test_second_change_refused_while_one_is_pending() -> None:
    """One change at a time: while a configuration entry is uncommitted, the leader refuses
    the next change (retryable); once it commits, the next one is taken.

    Reference: Thesis §4.1 ("a leader may not begin a new change until the previous one is
    committed")."""
    c = SimCluster(3, seed=16)
    lead = c.check_one_leader()
    c.one(b"x")
    a, b = c.add_node(), c.add_node()
    raft = c.raft(lead)
    first = raft.propose_conf_change(ConfChange((ConfChangeSingle(ADD_LEARNER, a),)))
    with pytest.raises(ProposalDropped, match="not committed yet"):
        raft.propose_conf_change(ConfChange((ConfChangeSingle(ADD_LEARNER, b),)))
    c.run_for(0.5)
    assert raft.log.committed >= first
    raft.propose_conf_change(ConfChange((ConfChangeSingle(ADD_LEARNER, b),)))
    c.run_for(0.5)
    assert c.members() == ((0, 1, 2), (a, b))


# ----------------------------------------------------------------------------------------------
# Joint consensus
# ----------------------------------------------------------------------------------------------


def _enter_joint(c: SimCluster, lead: int, cc: ConfChange) -> int:
    """Propose ``cc`` at ``lead``'s core and run in 50 us steps until every other up node
    appended it; return its index (the leader has not yet heard their acknowledgements)."""
    index = c.raft(lead).propose_conf_change(cc)
    up = [i for i in range(c.n) if c.is_up(i) and i != lead]
    while not all(c.raft(i).log.last_index() >= index for i in up):
        c.run_until_us(c.now_us + 50)
    return index


def test_leader_change_in_the_middle_of_a_joint_configuration() -> None:
    """The leader that entered a joint configuration dies before leaving it: the next leader
    (elected by majorities of both halves) leaves it on its own.

    Reference: Thesis §4.3 (joint consensus); etcd ConfChangeV2 auto-leave."""
    c = SimCluster(3, seed=17)
    lead = c.check_one_leader()
    a, b = c.add_node(), c.add_node()
    c.add_member(a)
    c.add_member(b)
    c.one(b"caught-up")
    stays = next(i for i in (0, 1, 2) if i != lead)
    goes = [i for i in (0, 1, 2) if i != stays]
    cc = ConfChange(
        (
            ConfChangeSingle(ADD_VOTER, a),
            ConfChangeSingle(ADD_VOTER, b),
            *(ConfChangeSingle(REMOVE, i) for i in goes),
        )
    )
    _enter_joint(c, lead, cc)
    joint = c.raft(stays).conf_state()
    assert joint.voters_outgoing == (0, 1, 2) and joint.auto_leave, joint
    c.crash(lead)
    new = c.check_one_leader(timeout=5.0)
    assert new != lead
    c.run_for(1.0)
    for i in range(c.n):
        if c.is_up(i) and i not in goes:
            conf = c.raft(i).conf_state()
            assert conf.voters == tuple(sorted((stays, a, b))) and not conf.voters_outgoing, tag(
                c, f"node {i} still has {conf}"
            )
    c.one(b"after", expected_servers=3)


def test_crash_and_restart_in_joint_state() -> None:
    """Every server crashes while the configuration is joint: after the restart each one is
    still in it, and it still takes a majority of *both* halves to elect and commit; then the
    joint configuration is left.

    Reference: Thesis §4.3; Raft §5.1 (the configuration is persistent state, in the log)."""
    c = SimCluster(3, seed=18)
    lead = c.check_one_leader()
    new = c.add_node()
    c.add_member(new)
    c.one(b"caught-up")
    gone = next(i for i in (0, 1, 2) if i != lead)
    old = (0, 1, 2)
    cc = ConfChange(
        (ConfChangeSingle(ADD_VOTER, new), ConfChangeSingle(REMOVE, gone)),
        ConfChangeTransition.JOINT_EXPLICIT,  # stays joint until told to leave
    )
    index = c.raft(lead).propose_conf_change(cc)
    c.run_for(0.5)
    joint = c.raft(lead).conf_state()
    assert joint.voters_outgoing == old and c.raft(lead).log.committed >= index, joint
    for i in range(c.n):
        c.crash(i)
    for i in range(c.n):
        c.restart(i)
    for i in range(c.n):
        assert c.raft(i).conf_state() == joint, tag(c, f"node {i}: {c.raft(i).conf_state()}")
    # C_old = {0, 1, 2}, C_new = {stay..., new}. With one voter of both halves and the one of
    # the old half only down, the servers up are a majority of C_new but not of C_old:
    # nobody may be elected.
    both = [i for i in old if i != gone]
    c.crash(both[0])
    c.crash(gone)
    c.run_for(3.0)
    assert c.leader() is None, tag(c, f"{c.leader()} elected without a majority of C_old")
    # Back with a majority of each half, a leader is elected, and leaves when told to.
    c.restart(gone)
    lead = c.check_one_leader()
    c.one(b"both-halves", expected_servers=3)
    c.restart(both[0])
    c.raft(lead).propose_conf_change(ConfChange())  # leave the joint configuration
    c.run_for(1.0)
    assert c.members() == (tuple(sorted((*both, new))), ())


# ----------------------------------------------------------------------------------------------
# Learners and removed servers
# ----------------------------------------------------------------------------------------------


def test_a_learner_never_counts_toward_commit_or_election() -> None:
    """Two learners and one voter are a majority of the servers but not of the voters:
    nothing commits, no one is elected, and the learners never campaign.

    Reference: Thesis §4.2.1 (non-voting members)."""
    c = SimCluster(3, seed=19)
    lead = c.check_one_leader()
    a, b = c.add_node(), c.add_node()
    c.add_member(a)
    c.add_member(b)
    c.one(b"all")
    down = [i for i in (0, 1, 2) if i != lead]
    for i in down:
        c.crash(i)
    index, _, _ = c.start(lead, b"with-learners-only")
    assert index > 0
    for _ in range(60):  # 3 s
        c.run_for(0.05)
        assert c.n_committed(index)[0] == 0, tag(c, "a write committed with learners' votes")
        for i in (a, b):
            assert c.raft(i).role is Role.FOLLOWER, tag(c, f"learner {i} campaigned")
    assert c.leader() is None, tag(c, f"{c.leader()} leads with learners' votes")
    c.restart(down[0])
    c.check_one_leader()
    c.one(b"voters-back", expected_servers=4)


@pytest.mark.parametrize(("pre_vote", "check_quorum"), [(True, True), (False, True), (True, False)])
def test_a_partitioned_removed_server_cannot_raise_terms(
    pre_vote: bool, check_quorum: bool
) -> None:
    """A voter is removed while cut off, so it never learns it: it times out and campaigns
    again and again. When it is back, the others' term and leader do not change.

    Reference: Thesis §4.2.3 (disruptive servers), §9.6 (PreVote), §6.2 (CheckQuorum)."""
    c = SimCluster(3, seed=20, pre_vote=pre_vote, check_quorum=check_quorum)
    lead = c.check_one_leader()
    c.one(b"x")
    removed = next(i for i in (0, 1, 2) if i != lead)
    rest = [i for i in (0, 1, 2) if i != removed]
    c.partition([rest, [removed]])
    c.remove_member(removed)
    term = c.state(lead)[0]
    c.run_for(3.0)
    c.heal()
    for _ in range(40):  # 2 s
        c.run_for(0.05)
        for i in rest:
            assert c.state(i)[0] == term, tag(c, f"node {i} moved to term {c.state(i)[0]}")
    assert c.leader() == lead and c.check_one_leader() == lead
    c.one(b"undisturbed", expected_servers=2)


# ----------------------------------------------------------------------------------------------
# The two classic bugs
# ----------------------------------------------------------------------------------------------


def test_raft_dev_bug_commit_an_entry_of_your_term_first() -> None:
    """The single-server-change bug Ongaro posted to raft-dev (2015), on 4 servers {L,a,b,c}:
    leader L (term 1) adds server e (D = {L,a,b,c,e}), and only e gets the entry before L
    dies. a is elected in term 2 by a, b, c under C = {L,a,b,c}; it reaches only b before c is
    cut off, and removes L (E = {a,b,c}), which E's majority {a,b} could commit. Then L
    returns and is elected under D by L, e and c (whose log lacks every term 2 entry), and
    overwrites what a committed. The fix: a leader changes the membership only once it has
    committed an entry of its own term; a's no-op needs three of C, so E is never proposed.

    Reference: Thesis §4.1 and its errata (raft-dev, "bug in single-server membership
    changes", July 2015)."""
    c = SimCluster(4, seed=21)
    lead = c.check_one_leader()
    c.one(b"x")
    e = c.add_node()
    a, b, cut = (i for i in range(4) if i != lead)
    c.partition([[lead, e], [a, b, cut]])
    index = c.raft(lead).propose_conf_change(ConfChange((ConfChangeSingle(ADD_VOTER, e),)))
    while c.raft(e).log.last_index() < index:
        c.run_until_us(c.now_us + 200)
    c.crash(lead)
    # Run in 50 us steps until one of a, b, c leads; cut c off before the leader's no-op
    # (sent after at least 100 us) reaches it. Call that leader "a".
    while not any(c.state(i)[1] for i in (a, b, cut)):
        c.run_until_us(c.now_us + 50)
    new = next(i for i in (a, b, cut) if c.state(i)[1])
    a, b, cut = new, *(i for i in (a, b, cut) if i != new)
    c.partition([[a, b], [cut], [lead, e]])
    refused = False
    try:
        c.remove_member(lead, force=True, timeout=1.0)
        c.one(b"committed-in-E", expected_servers=2, retry=False)
    except IndeterminateError:
        refused = True  # the rule: no change before an entry of a's term is committed
    # L comes back on c's and e's side: with D it may be elected; nothing it overwrites may
    # have been committed (the checkers raise InvariantViolation at once otherwise).
    c.partition([[a, b], [lead, e, cut]])
    c.restart(lead)
    c.run_for(2.0)
    c.heal()
    c.check_one_leader()
    c.one(b"healed", expected_servers=3)
    assert refused, tag(c, "the leader changed the membership before committing in its term")


def test_configuration_takes_effect_on_append_not_on_apply() -> None:
    """The scenario raised against etcd raft (its issue "raft - questions regard to
    membership change", 2016): memberships S1 = {A,B,C}, S2 = S1 + D, S3 = S2 + E all
    committed, but A's state machine is slow and has applied only S1. If A used the
    membership it has applied, A and B (a majority of S1) could elect A while C, D, E (a
    majority of S3) elect another leader: two leaders, possibly in the same term. The core
    uses the latest membership in its log, applied or not, so A needs three of S3 and is not
    elected.

    Reference: Thesis §4.1 ("a server always uses the latest configuration in its log,
    regardless of whether the entry is committed")."""
    c = SimCluster(3, seed=22)
    lead = c.check_one_leader()
    c.one(b"x")
    slow = next(i for i in (0, 1, 2) if i != lead)
    friend, third = (i for i in (0, 1, 2) if i != slow)
    c.hold_applies(slow, True)
    d, e = c.add_node(), c.add_node()
    c.add_member(d, voter=True)
    c.add_member(e, voter=True)
    c.run_for(0.5)
    raft = c.raft(slow)
    assert raft.log.committed == raft.log.last_index() and raft.log.applied < raft.log.committed
    assert c.raft(slow).conf_state().voters == tuple(sorted((0, 1, 2, d, e)))
    # Hand leadership to E, then split A, B from C, D, E and restart E so both sides elect.
    if lead != e:
        c.raft(lead).transfer_leadership(e)
        c.run_for(0.5)
    assert c.state(e)[1], tag(c, "leadership did not move to E")
    c.partition([[slow, friend], [third, d, e]])
    c.crash(e)
    c.restart(e)
    c.run_for(3.0)
    assert not c.state(slow)[1] and not c.state(friend)[1], tag(c, "A and B elected a leader")
    right = [i for i in (third, d, e) if c.state(i)[1]]
    assert len(right) == 1, tag(c, f"leaders on C, D, E's side: {right}")
    c.heal()
    c.hold_applies(slow, False)
    c.one(b"healed")


# ----------------------------------------------------------------------------------------------
# Core bugs the membership tests found (fixed; kept as regression tests)
# ----------------------------------------------------------------------------------------------


def test_joint_change_removing_the_voter_whose_ack_commits_it() -> None:
    """A joint change removing voters, whose commit is decided by an acknowledgement of one of
    the removed voters: the leader leaves the joint configuration inside that acknowledgement's
    handling (``_maybe_commit`` -> ``_finish_conf_change``), which forgets the sender; it must
    not then look up the sender's progress (it raised KeyError).

    Reference: Thesis §4.3 (leaving C_old,new once it commits)."""
    c = SimCluster(3, seed=0)
    lead = c.check_one_leader()
    c.one(b"x")
    others = [i for i in range(3) if i != lead]
    cc = ConfChange(tuple(ConfChangeSingle(REMOVE, i) for i in others))
    c.change(cc, force=True)
    assert c.members() == ((lead,), ())


def test_a_removed_server_with_the_newest_log_still_campaigns() -> None:
    """Voters {L, o}; L removes itself (forced: o is cut off), so L's log ends with the
    uncommitted membership {o}, then L loses leadership (CheckQuorum). o cannot be elected
    (L's log is newer, L refuses its vote), so unless L campaigns although it is not a voter
    of its own latest membership, there is no leader for ever. Thesis §4.2.2: "a server that
    is not part of its own latest configuration should still start new elections, as it might
    still be needed until the C_new entry is committed"; it does not count its own vote then.

    Reference: Thesis §4.2.2."""
    c = SimCluster(2, seed=1)
    lead = c.check_one_leader()
    c.one(b"x")
    other = 1 - lead
    c.partition([[lead], [other]])
    c.raft(lead).propose_conf_change(ConfChange((ConfChangeSingle(REMOVE, lead),)), force=True)
    c.run_for(1.0)
    assert not c.state(lead)[1]
    c.heal()
    c.check_one_leader(timeout=10.0)


# ----------------------------------------------------------------------------------------------
# The simulator's membership API itself
# ----------------------------------------------------------------------------------------------


def test_membership_api_refusals_and_timeouts() -> None:
    """Definite refusals raise ConfChangeError at once (nothing changed), a change that cannot
    commit raises IndeterminateError at its deadline, and the shapes are as documented."""
    c = SimCluster(3, seed=24)
    c.check_one_leader()
    assert c.members() == ((0, 1, 2), ())
    with pytest.raises(ConfChangeError, match="already a member"):
        c.add_member(1)
    with pytest.raises(ConfChangeError, match="not a member"):
        c.promote(c.add_node())
    with pytest.raises(ValueError, match="joint"):
        c.change(ConfChange((), ConfChangeTransition.AUTO))
    with pytest.raises(ValueError, match="joint"):
        c.change(ConfChange((ConfChangeSingle(REMOVE, 1),), ConfChangeTransition.JOINT_EXPLICIT))
    # No reachable quorum after the change: refused unless forced (Thesis §4.2).
    c.crash(2)
    c.run_for(0.5)
    with pytest.raises(ConfChangeError, match="not a majority"):
        c.change(ConfChange((ConfChangeSingle(ADD_VOTER, 3),)))
    # Forced, it appends but cannot commit: {0, 1, 2, 3} with 2 and 3 silent.
    c.crash(3)
    t0 = c.now
    with pytest.raises(IndeterminateError):
        c.change(ConfChange((ConfChangeSingle(ADD_VOTER, 3),)), force=True, timeout=1.0)
    assert 0.99 < c.now - t0 < 1.2
    assert c.members() == ((0, 1, 2, 3), ())  # in force on append (Thesis §4.1)
    c.restart(2)
    c.restart(3)
    c.one(b"committed-at-last")


def test_membership_runs_replay_exactly() -> None:
    """Same seed, same script: the same run, to the microsecond."""

    def run() -> tuple[int, list[tuple[int, bytes]], tuple[tuple[int, ...], tuple[int, ...]]]:
        c = SimCluster(3, seed=25)
        c.add_background(Writer(c))
        lead = c.check_one_leader()
        grow(c)
        c.remove_member(lead)
        c.wipe(0)
        c.restart(0)
        c.add_background(None)
        c.one(b"end", expected_servers=3)
        return c.now_us, c.applied(1), c.members()

    assert run() == run()


def test_no_lost_disk_report_without_a_lost_disk(caplog: pytest.LogCaptureFixture) -> None:
    """The leader reports a follower that refuses entries it acknowledged as one that lost
    its disk (``Progress.lost_entries``, logged loudly, shown to operators). In the plain fuzz
    of ``test_sim_fuzz.py`` no disk is ever lost, yet delayed and duplicated rejections (of
    appends the follower refused *before* it acknowledged more) are counted so: a false
    alarm. A rejection whose hint shows the follower's log reaching ``match`` is stale, not a
    lost disk.

    Reference: Raft §5.3 (rejections and retries); README.md, "Changing members"."""
    caplog.set_level(logging.WARNING, logger="raftpy")
    for seed in range(24):
        run_fuzz(3, seed)
    false_alarms = [r.getMessage() for r in caplog.records if "had acknowledged" in r.getMessage()]
    assert not false_alarms, f"{len(false_alarms)} false lost-disk reports: {false_alarms[:2]}"
