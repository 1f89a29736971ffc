"""A vote given in a term the voter already held must be durable before the reply (Raft §5.2,
Figure 2: votedFor is persistent), staged on the simulator: a split vote, a voter that learned
the term from a *response* (so it holds the term durably and no vote), a power loss right
after its vote, and the rival candidate's request still queued at its sender.

One forgetful voter is enough on three nodes: the two candidates of the split vote each voted
for themselves, so each needs only that voter. Planted bug: making the core fsync the hard
state only when the term changes (the catalogue's ``vote_not_synced``) makes these tests fail
with an election safety violation (two leaders of one term)."""

from __future__ import annotations

import pytest

from raftpy.core.messages import (
    AppendEntries,
    Heartbeat,
    RequestVote,
    RequestVoteResponse,
)
from raftpy.testing.sim import SimCluster


def tag(c: SimCluster, text: str) -> str:
    return f"[seed={c.seed} t={c.now:.3f}s] {text}"


def run_until(c: SimCluster, cond: object, what: str, timeout: float = 0.5) -> None:
    deadline = c.now + timeout
    while not cond():  # type: ignore[operator]
        assert c.now < deadline, tag(c, f"timed out waiting for {what}")
        c.run_for(0.0002)


def _split_vote_with_a_voter_behind(deposed_leader: bool, seed: int) -> None:
    """Nodes a and b time out in the same instant and both win their pre-votes (each grants
    the other's), so both campaign in term T and vote for themselves. Node v hears neither
    request yet (their vote requests to it stall) but learns T without voting: as the
    deposed leader, from the stale answer to its heartbeat (``deposed_leader``); or as a
    pre-candidate, from a's refusal of its pre-vote. Then a's requests reach v, which grants
    a, and loses power at once; it reboots, and b's request, kept by its sender, arrives."""
    c = SimCluster(n=3, seed=seed, storage="file", pre_vote=True, check_quorum=not deposed_leader)
    c.one(b"x", 3)
    leader = c.check_one_leader()
    term = c.check_terms()
    if deposed_leader:
        v = leader
        a, b = (leader + 1) % 3, (leader + 2) % 3
        for i in (a, b):
            c.hold(v, i, Heartbeat, AppendEntries)  # v's next heartbeats find a and b campaigning
    else:
        a = leader
        v, b = (leader + 1) % 3, (leader + 2) % 3
        # Everyone cut off: the leader steps down (CheckQuorum, Thesis §6.2), nobody can win
        # a pre-vote, so the term stays; then v's pre-votes stall until a and b campaign.
        c.partition([[0], [1], [2]])
        run_until(c, lambda: c.state(a)[1] is False, "the leader to step down", 1.0)
        for i in (a, b):
            c.hold(v, i, RequestVote)
        c.heal()
    c.hold(a, v, RequestVote)
    c.hold(b, v, RequestVote)
    # Both timers fire in one tick; each grants the other's pre-vote, and both grants arrive
    # together (held until both were given), so each campaigns before the other's request
    # for the term reaches it: a split vote, each voted for itself.
    c.hold(a, b, RequestVoteResponse)
    c.hold(b, a, RequestVoteResponse)
    c.campaign(a, b)
    c.run_for(0.003)
    c.release(a, b)
    c.release(b, a)
    run_until(
        c,
        lambda: all(c.raft(i).term == term + 1 and c.raft(i).vote == i for i in (a, b)),
        "a and b to campaign in the same term",
    )
    assert c.raft(v).term == term, tag(c, f"v already at term {c.raft(v).term}")
    if not deposed_leader:
        c.campaign(v)
    for i in (a, b):
        c.release(v, i)
    # v learns term T from an answer, with no vote and no leader: durable (a term change).
    run_until(c, lambda: c.raft(v).term == term + 1, "v to learn the new term from an answer")
    assert (c.raft(v).vote, c.raft(v).lead) == (None, None), tag(c, "v voted or follows")
    assert c.state(a)[1] is False and c.state(b)[1] is False, tag(c, "a leader already")
    c.release(a, v)  # a's pre-vote and request for T reach v: v votes for a
    c.hold(a, v)  # a's appends as the new leader will wait behind the reboot
    run_until(c, lambda: c.raft(v).vote == a, "v to vote for a")
    c.crash(v, "drop")  # power loss right after the vote: unsynced writes are gone
    c.restart(v)
    # b's request for T, queued by its sender, arrives: v must refuse it (it voted for a).
    # Had v forgotten its vote, b would win T too, and the simulator's election safety
    # checker would raise InvariantViolation here (two leaders of one term).
    c.release(b, v)
    c.run_for(0.05)
    assert (c.raft(v).term, c.raft(v).vote) == (term + 1, a), tag(
        c, f"v rebooted with term {c.raft(v).term} vote {c.raft(v).vote}: it forgot its vote"
    )
    assert c.state(b) == (term + 1, False), tag(c, f"b state {c.state(b)}")
    c.release(a, v)
    c.one(b"y", 3)


def test_forgotten_vote_of_a_deposed_leader() -> None:
    _split_vote_with_a_voter_behind(deposed_leader=True, seed=4101)


def test_forgotten_vote_of_a_pre_candidate() -> None:
    _split_vote_with_a_voter_behind(deposed_leader=False, seed=4102)


def test_hold_delays_a_links_messages_until_release() -> None:
    """The knobs the staging relies on: a held link delivers nothing until released, then
    everything it held; other kinds and other links pass; set_jitter refuses nonsense."""
    c = SimCluster(n=3, seed=4103)
    c.one(b"x", 3)
    leader = c.check_one_leader()
    f, g = (leader + 1) % 3, (leader + 2) % 3
    c.hold(leader, f, AppendEntries)
    index, _, ok = c.start(leader, b"y")
    assert ok, tag(c, "the leader refused a proposal")
    c.run_for(0.05)
    assert c.raft(f).log.last_index() < index <= c.raft(g).log.last_index(), tag(
        c, "the held link delivered, or the other one did not"
    )
    assert c.raft(f).lead == leader, tag(c, "heartbeats were held too")
    c.release(leader, f)
    c.run_for(0.05)
    assert c.raft(f).log.last_index() >= index, tag(c, "release did not deliver")
    with pytest.raises(ValueError):
        c.set_jitter(-0.1)
