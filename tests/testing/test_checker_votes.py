"""The simulator's one-vote-per-term checker (Raft §5.2, Figure 2: votedFor is persistent):
fed every vote reply that leaves a node, it fails at a second real vote of one voter for a
different candidate in a term, and nowhere else (same candidate again, pre-votes, refusals,
a voter whose disk was wiped). Planted bug: never raising in ``OneVotePerTerm.on_reply``
fails ``test_second_candidate_in_a_term_fails`` and ``test_the_simulator_feeds_it``."""

from __future__ import annotations

import pytest

from raftpy.core.messages import RequestVoteResponse
from raftpy.errors import InvariantViolation
from raftpy.testing.checkers import OneVotePerTerm
from raftpy.testing.sim import SimCluster


def tag(text: str) -> str:
    return f"[seed=7 t=1.250s] {text}"


def grant(voter: int, term: int, candidate: int, pre_vote: bool = False) -> RequestVoteResponse:
    return RequestVoteResponse(term, voter, candidate, granted=True, pre_vote=pre_vote)


def test_second_candidate_in_a_term_fails() -> None:
    votes = OneVotePerTerm(tag)
    votes.on_reply(grant(2, 5, 0))
    with pytest.raises(InvariantViolation) as err:
        votes.on_reply(grant(2, 5, 1))
    assert str(err.value) == (
        "[seed=7 t=1.250s] node 2 granted its vote in term 5 to both 0 and 1 (one vote per term)"
    )


def test_same_candidate_again_other_terms_and_other_voters_pass() -> None:
    votes = OneVotePerTerm(tag)
    votes.on_reply(grant(2, 5, 0))
    votes.on_reply(grant(2, 5, 0))  # a duplicated request, or answered again after a restart
    votes.on_reply(grant(2, 6, 1))  # a new term, a new vote
    votes.on_reply(grant(1, 5, 1))  # another voter
    votes.on_reply(grant(0, 5, 0))


def test_pre_votes_and_refusals_are_not_votes() -> None:
    votes = OneVotePerTerm(tag)
    votes.on_reply(grant(2, 5, 0))
    votes.on_reply(grant(2, 5, 1, pre_vote=True))  # hypothetical: binds nobody (Thesis §9.6)
    votes.on_reply(grant(2, 6, 0, pre_vote=True))
    votes.on_reply(grant(2, 6, 1, pre_vote=True))
    votes.on_reply(RequestVoteResponse(5, 2, 1, granted=False))
    with pytest.raises(InvariantViolation):  # the pre-votes did not take the real one's place
        votes.on_reply(grant(2, 5, 1))


def test_a_wiped_voter_starts_afresh_and_only_it() -> None:
    votes = OneVotePerTerm(tag)
    votes.on_reply(grant(2, 5, 0))
    votes.on_reply(grant(1, 5, 0))
    votes.on_wipe(2)  # a new server with an empty disk: no votes yet
    votes.on_reply(grant(2, 5, 1))
    with pytest.raises(InvariantViolation, match="node 2 granted its vote in term 5 to both 1"):
        votes.on_reply(grant(2, 5, 0))  # its new vote binds it as the old one did
    with pytest.raises(InvariantViolation, match="node 1 granted"):
        votes.on_reply(grant(1, 5, 1))  # the others' records are kept


def test_the_simulator_feeds_it() -> None:
    """Every granted vote leaving a simulated node reaches the checker: a vote the checker
    believes the voter already gave to someone else fails the election that asks for it."""
    c = SimCluster(n=3, seed=3)
    leader = c.check_one_leader()
    term = c.check_terms()
    for voter in range(3):
        c._checks.votes.on_reply(grant(voter, term + 1, 99))
    c.crash(leader)
    with pytest.raises(InvariantViolation, match=f"in term {term + 1} to both 99 and"):
        c.run_for(3.0)


def test_wipe_in_the_simulator_forgets_the_votes() -> None:
    """``SimCluster.wipe`` tells the checker: the new disk's server may vote afresh."""
    c = SimCluster(n=3, seed=3)
    c.check_one_leader()
    term = c.check_terms()
    votes = c._checks.votes
    votes.on_reply(grant(1, term + 1, 99))
    c.wipe(1)
    votes.on_reply(grant(1, term + 1, 0))
