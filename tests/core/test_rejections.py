"""Messages no correct peer sends: the core raises RejectedMessage before changing anything.

One test per rejection, in the style of ``test_paper_rules.py``: each names the rule a correct
peer keeps (the paper's safety properties), forges a message that breaks it, and checks that
``step`` raises :class:`RejectedMessage` naming the sender and leaves the core exactly as it
was (:func:`tests.corehelpers.core_state`). Contrasts show the honest message next to it is
still taken. The leader-lease rule for leadership transfer lives here too: a transfer vote
passes the lease only when the live leader named that candidate.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from raftpy.core.messages import (
    MAX_TERM,
    MAX_TERM_JUMP,
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from raftpy.core.raft import Raft
from raftpy.core.ready import Role
from raftpy.core.storage import HardState
from raftpy.errors import RejectedMessage
from tests.corehelpers import (
    Network,
    core_state,
    drain,
    entries,
    make_leader,
    new_raft,
    new_storage,
    of_kind,
    storage_of,
)

PEERS = (1, 2, 3)


def assert_rejected(r: Raft, m: Message, match: str) -> None:
    """``m`` is rejected with a reason matching ``match``, naming its sender, and the core
    is unchanged."""
    before = core_state(r)
    with pytest.raises(RejectedMessage, match=match) as info:
        r.step(m)
    assert info.value.peer_id == m.src
    assert core_state(r) == before


def leader() -> Raft:
    r = make_leader(new_raft(1, PEERS))
    drain(r)
    return r


def follower_of_2(terms: tuple[int, ...] = (), commit: int = 0, term: int = 2) -> Raft:
    """Node 1, following node 2 in ``term`` (it heard a heartbeat), log ``terms``."""
    r = new_raft(1, PEERS, storage=new_storage(PEERS, terms, term=term, commit=commit))
    r.step(Heartbeat(term, 2, 1, 0))
    drain(r)
    assert (r.role, r.lead) == (Role.FOLLOWER, 2)
    return r


# -------------------------------------------------------------------------------------------
# Election Safety: one leader per term
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda t: Heartbeat(t, 2, 1, 0),
        lambda t: AppendEntries(t, 2, 1, 0, 0, (), 0),
        lambda t: TimeoutNow(t, 2, 1),
    ],
    ids=["heartbeat", "append", "timeout-now"],
)
def test_leader_rejects_a_second_leader_of_its_term(make: Callable[[int], Message]) -> None:
    """A leader handed a leader's message of its own term from another node: two leaders in
    one term is impossible, so the sender lies; the leader rejects it and keeps leading.

    Reference: Raft §5.2 (Figure 3, "Election Safety")."""
    r = leader()
    assert_rejected(r, make(r.term), "of which node 1 is the leader")


@pytest.mark.parametrize(
    "make",
    [
        lambda t: Heartbeat(t, 3, 1, 0),
        lambda t: AppendEntries(t, 3, 1, 0, 0, (), 0),
        lambda t: TimeoutNow(t, 3, 1),
    ],
    ids=["heartbeat", "append", "timeout-now"],
)
def test_follower_rejects_a_second_leader_of_its_term(make: Callable[[int], Message]) -> None:
    """A follower of node 2 in term 2 handed a leader's message of term 2 from node 3
    rejects it: it neither switches leader nor campaigns.

    Reference: Raft §5.2 (Figure 3, "Election Safety")."""
    r = follower_of_2()
    assert_rejected(r, make(2), "of which node 2 is the leader")


def test_candidate_still_concedes_to_the_leader_of_its_term() -> None:
    """The contrast: a candidate knows no leader of its term, so the first one it hears of
    is taken (it concedes); only a second, different one is rejected.

    Reference: Raft §5.2."""
    r = new_raft(1, PEERS, pre_vote=False)
    r.campaign()
    drain(r)
    r.step(Heartbeat(r.term, 2, 1, 0))
    assert (r.role, r.lead) == (Role.FOLLOWER, 2)
    assert_rejected(r, Heartbeat(r.term, 3, 1, 0), "of which node 2 is the leader")


# -------------------------------------------------------------------------------------------
# Leader Completeness: nobody may contradict the committed log
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("term", [2, 3], ids=["same-term", "higher-term"])
def test_append_whose_prev_entry_contradicts_the_commit_is_rejected(term: int) -> None:
    """Entries 1-3 (terms 1, 1, 2) are committed here. A leader of our term or a later one
    holds them all (Leader Completeness), so an AppendEntries that says index 3 has term 1
    is false; it is rejected without adopting its term.

    Reference: Raft §5.4 (Figure 3, "Leader Completeness"), §5.3."""
    r = follower_of_2((1, 1, 2), commit=3)
    m = AppendEntries(term, 2, 1, 3, 1, tuple(entries([term], start=4)), 4)
    assert_rejected(r, m, "term 1 at index 3, where the committed entry has term 2")


def test_append_whose_entries_overwrite_the_commit_are_rejected() -> None:
    """An AppendEntries that would replace committed entry 3 (term 2) with a term-3 entry is
    rejected; the same entries past the commit are taken (they may be overwritten).

    Reference: Raft §5.4 (Figure 3, "Leader Completeness", "State Machine Safety")."""
    r = follower_of_2((1, 1, 2, 2), commit=3, term=3)
    m = AppendEntries(3, 2, 1, 2, 1, tuple(entries([3, 3], start=3)), 3)
    assert_rejected(r, m, "term 3 at index 3, where the committed entry has term 2")
    ok = AppendEntries(3, 2, 1, 3, 2, tuple(entries([3], start=4)), 3)
    r.step(ok)  # conflicts only with uncommitted entry 4: taken (Raft §5.3)
    assert [r.log.term(i) for i in range(1, 5)] == [1, 1, 2, 3]


def test_stale_append_that_contradicts_the_commit_is_only_answered() -> None:
    """A deposed leader of an older term may hold entries we never committed: its messages
    are stale (answered, Raft §5.1), not lies.

    Reference: Raft §5.1, §5.4."""
    r = follower_of_2((1, 1, 2), commit=3)
    r.step(AppendEntries(1, 3, 1, 2, 1, tuple(entries([1], start=3)), 3))
    assert (r.term, r.lead, r.log.committed) == (2, 2, 3)


def test_ack_past_the_leaders_log_is_rejected() -> None:
    """A follower acknowledges at most what this leader sent it in this term, and the
    leader's log only grows within its term: an acknowledgement past its last index is false
    (it would make the leader count entries nobody holds).

    Reference: Raft §5.3, §5.4.2."""
    r = leader()
    last = r.log.last_index()
    assert_rejected(
        r,
        AppendEntriesResponse(r.term, 2, 1, True, last + 1),
        f"acknowledges index {last + 1}, past the leader's last index {last}",
    )
    r.step(AppendEntriesResponse(r.term, 2, 1, True, last))
    assert r.prs[2].match == last


# -------------------------------------------------------------------------------------------
# Terms never pass MAX_TERM
# -------------------------------------------------------------------------------------------


def test_node_never_campaigns_past_max_term() -> None:
    """A node whose term reached MAX_TERM (only a forged term gets there) does not campaign:
    peers would refuse ``MAX_TERM + 1`` at decode, and the term must stay incrementable and
    storable.

    Reference: no paper section; the decode bounds (raftpy.core.messages.MAX_TERM)."""
    for pre_vote in (True, False):
        storage = new_storage(PEERS)
        storage.set_hard_state(HardState(MAX_TERM, None, 0))
        r = new_raft(1, PEERS, storage=storage, pre_vote=pre_vote)
        drain(r)
        for _ in range(30):
            r.tick()
        r.campaign()
        assert (r.role, r.term, r.has_ready()) == (Role.FOLLOWER, MAX_TERM, False)
        assert storage_of(r).initial_state()[0].term == MAX_TERM


@pytest.mark.parametrize(
    "make",
    [
        lambda t: Heartbeat(t, 2, 1, 0),
        lambda t: AppendEntries(t, 2, 1, 0, 0, (), 0),
        lambda t: RequestVote(t, 2, 1, 0, 0),
        lambda t: RequestVoteResponse(t, 2, 1, False),
    ],
    ids=["heartbeat", "append", "vote", "vote-response"],
)
def test_a_term_too_far_ahead_is_rejected(make: Callable[[int], Message]) -> None:
    """Terms grow by one per election, so no real peer is MAX_TERM_JUMP terms ahead: a message
    claiming it is forged, and adopting its term could wedge every later election at MAX_TERM
    (after every restart too, since the term is persisted). The honest jump just inside the
    bound is still taken (a vote within the leader lease is ignored instead, Thesis §4.2.3).

    Reference: Raft §5.2 (a term begins with an election; terms increase by one per election)."""
    for r in (leader(), follower_of_2()):
        assert_rejected(r, make(r.term + MAX_TERM_JUMP + 1), "more than")
        term = r.term + MAX_TERM_JUMP
        r.step(make(term))
        if not isinstance(make(0), RequestVote):
            assert r.term == term


# -------------------------------------------------------------------------------------------
# Leadership transfer and the leader lease
# -------------------------------------------------------------------------------------------


def test_transfer_vote_bypasses_the_lease_only_for_the_leaders_transferee() -> None:
    """Thesis §4.2.3: while a follower hears from a live leader it ignores RequestVotes, so a
    removed or partitioned server cannot disrupt the cluster. Thesis §3.10 lets the target of
    a leadership transfer through, but only the leader knows whom it hands over to: a
    ``transfer=True`` vote passes the lease only from the candidate the live leader named (in
    its heartbeats). Anyone else claiming a transfer is ignored like any other vote.

    Reference: Thesis §3.10, §4.2.3."""
    r = follower_of_2()  # leader 2, term 2, in lease
    before = core_state(r)
    r.step(RequestVote(3, 3, 1, 0, 0, transfer=True))  # node 3 claims a transfer
    assert core_state(r) == before  # ignored: no term, no vote, no answer
    r.step(Heartbeat(2, 2, 1, 0, transferee=3))  # the leader hands over to 3
    drain(r)
    r.step(RequestVote(3, 3, 1, 0, 0, transfer=True))
    rd = drain(r)
    assert (r.term, r.vote) == (3, 3)
    assert of_kind(rd, RequestVoteResponse) == [RequestVoteResponse(3, 1, 3, True)]


def test_transfer_vote_is_ignored_when_the_leader_names_another_transferee() -> None:
    """The leader hands over to node 2; node 3's transfer vote is ignored by the leader and
    by the other follower, and node 2 wins.

    Reference: Thesis §3.10, §4.2.3."""
    net = Network.of(PEERS)
    lead = net.elect(1)
    lead.transfer_leadership(2)
    # Node 3 forges a transfer election before node 2 campaigns.
    term = lead.term
    before = core_state(lead)
    lead.step(RequestVote(term + 1, 3, 1, 5, term, transfer=True))
    assert core_state(lead) == before
    net.stabilize()
    assert (net[2].role, net[1].role, net[1].lead, net[3].lead) == (
        Role.LEADER,
        Role.FOLLOWER,
        2,
        2,
    )


def test_transfer_needs_the_followers_so_the_leader_names_the_transferee_first() -> None:
    """In five voters the old leader's vote and the target's own are not a majority: the
    other followers must let the transfer election through their lease, so the leader names
    the target in a heartbeat before it sends TimeoutNow.

    Reference: Thesis §3.10, §4.2.3."""
    net = Network.of((1, 2, 3, 4, 5))
    lead = net.elect(1)
    lead.transfer_leadership(2)
    net.stabilize()
    assert [net[i].role for i in (1, 2, 3, 4, 5)] == [Role.FOLLOWER, Role.LEADER] + [
        Role.FOLLOWER
    ] * 3
    assert {net[i].vote for i in (3, 4, 5)} == {2}


def test_leader_ignores_a_transfer_vote_it_did_not_start() -> None:
    """Without a transfer in progress, a live leader ignores a transfer vote as any other
    vote of a higher term (with CheckQuorum, the lease holds for the leader too).

    Reference: Thesis §3.10, §4.2.3, §6.2."""
    net = Network.of(PEERS)
    lead = net.elect(1)
    before = core_state(lead)
    lead.step(RequestVote(lead.term + 1, 3, 1, 5, lead.term, transfer=True))
    assert core_state(lead) == before
    assert lead.role is Role.LEADER
