"""One test per rule of the Raft paper's Figure 2 and per rule the core promises
(docs/architecture.md, "Where each rule lives").

Each test is named for the rule it checks and drives the sans-I/O core directly (or a few cores
wired by :class:`tests.corehelpers.Network`), asserting exact roles, terms, indexes and message
kinds. Section numbers: "§5.x" is the Raft paper (Ongaro & Ousterhout 2014), "Thesis §x" is
Ongaro's dissertation.
"""

from __future__ import annotations

import msgspec
import pytest

from raftpy.core.config import RaftConfig
from raftpy.core.forwarded_reads import read_key
from raftpy.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    ConfState,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
    TimeoutNow,
)
from raftpy.core.progress import ProgressState
from raftpy.core.raft import Raft
from raftpy.core.ready import ReadState, Role
from raftpy.core.storage import HardState
from raftpy.errors import LocalProtocolError, NotLeaderError, ProposalDropped
from tests.corehelpers import (
    Network,
    drain,
    drive,
    entries,
    log_terms,
    make_leader,
    msgs,
    new_raft,
    new_storage,
    of_kind,
    persist,
    role_of,
    storage_of,
)

PEERS = (1, 2, 3)
FIVE = (1, 2, 3, 4, 5)


def follower(
    terms: list[int] | tuple[int, ...] = (),
    *,
    term: int | None = None,
    commit: int = 0,
    peers: tuple[int, ...] = PEERS,
    **kwargs: bool,
) -> Raft:
    """Node 1, a follower holding a stable log with ``terms``, its Ready drained."""
    r = new_raft(1, peers, storage=new_storage(peers, terms, term=term, commit=commit), **kwargs)
    drain(r)
    return r


def leader_with_acks(peers: tuple[int, ...] = PEERS, terms: tuple[int, ...] = ()) -> Raft:
    """Node 1 elected leader, its no-op durable and acknowledged by every peer (committed)."""
    r = new_raft(1, peers, storage=new_storage(peers, terms))
    make_leader(r)
    drain(r)
    last = r.log.last_index()
    for peer in peers[1:]:
        r.step(AppendEntriesResponse(r.term, peer, 1, True, last))
    drain(r)
    assert r.log.committed == last
    return r


def responses_from(messages: list[Message], src: int) -> list[AppendEntriesResponse]:
    return [m for m in messages if isinstance(m, AppendEntriesResponse) and m.src == src]


# -------------------------------------------------------------------------------------------
# All servers
# -------------------------------------------------------------------------------------------


HIGHER_TERM_MESSAGES: list[tuple[str, Message, int | None, int | None]] = [
    # (id, message at term 2 to a term-1 follower, expected vote, expected leader)
    ("append", AppendEntries(2, 2, 1, 0, 0, (), 0), None, 2),
    ("heartbeat", Heartbeat(2, 2, 1, 0), None, 2),
    ("request-vote", RequestVote(2, 2, 1, 0, 0), 2, None),
    ("append-response", AppendEntriesResponse(2, 2, 1, False, 0), None, None),
    ("heartbeat-response", HeartbeatResponse(2, 2, 1), None, None),
    ("vote-response", RequestVoteResponse(2, 2, 1, False), None, None),
]


@pytest.mark.parametrize(
    ("message", "want_vote", "want_lead"),
    [row[1:] for row in HIGHER_TERM_MESSAGES],
    ids=[row[0] for row in HIGHER_TERM_MESSAGES],
)
def test_follower_updates_term_from_message(
    message: Message, want_vote: int | None, want_lead: int | None
) -> None:
    """Any message with a higher term makes the receiver adopt that term as a follower, with
    its vote cleared (then cast anew if the message is a vote request).

    Reference: §5.1 (Figure 2, "Rules for Servers, All Servers")."""
    r = follower(term=1)
    r.step(message)
    assert (r.role, r.term, r.vote, r.lead) == (Role.FOLLOWER, 2, want_vote, want_lead)
    rd = drive(r)
    assert rd.hard_state == HardState(2, want_vote, 0)


def test_follower_updates_term_from_installed_snapshot() -> None:
    """A snapshot its driver hands over (``install_snapshot``) from a leader of a higher term
    is a higher-term message too: the node adopts the term, vote cleared, under that leader.

    Reference: §5.1 (Figure 2, "Rules for Servers, All Servers"), §7."""
    r = follower(term=1)
    assert not r.install_snapshot(SnapshotMeta(0, 0, ConfState(PEERS)), 2, 2)
    assert (r.role, r.term, r.vote, r.lead) == (Role.FOLLOWER, 2, None, 2)
    rd = drive(r)
    assert rd.hard_state == HardState(2, None, 0)


def test_timeout_now_with_higher_term_adopts_term_then_campaigns() -> None:
    """A TimeoutNow from a leader of a newer term is a higher-term message first (adopt the
    term), then an order to campaign at once in the next term, skipping PreVote.

    Reference: §5.1, Thesis §3.10."""
    r = follower(term=1)
    r.step(TimeoutNow(2, 2, 1))
    assert (r.role, r.term, r.vote) == (Role.CANDIDATE, 3, 1)
    rd = drive(r)
    votes = of_kind(rd.persisted_messages, RequestVote)
    assert [(m.dst, m.term, m.pre_vote, m.transfer) for m in votes] == [
        (2, 3, False, True),
        (3, 3, False, True),
    ]


def _in_role(role: Role) -> Raft:
    """Node 1 of three, in ``role`` at term 2 (pre-candidate: term 1), Ready drained."""
    r = new_raft(1, PEERS, storage=new_storage(PEERS, term=1))
    if role is Role.LEADER:
        make_leader(r)
    else:
        r.campaign()
        if role is Role.CANDIDATE:
            r.step(RequestVoteResponse(2, 2, 1, True, pre_vote=True))
    drain(r)
    assert r.role is role
    return r


@pytest.mark.parametrize("role", [Role.LEADER, Role.CANDIDATE, Role.PRE_CANDIDATE])
@pytest.mark.parametrize("kind", ["append", "heartbeat", "append-response", "vote-response"])
def test_step_down_on_higher_term(role: Role, kind: str) -> None:
    """A leader, candidate or pre-candidate that sees a higher term becomes a follower of that
    term; an AppendEntries or Heartbeat also names the new leader.

    Reference: §5.1, §5.2 (Figure 2, "All Servers")."""
    r = _in_role(role)
    t = r.term + 3
    options: dict[str, Message] = {
        "append": AppendEntries(t, 3, 1, 0, 0, (), 0),
        "heartbeat": Heartbeat(t, 3, 1, 0),
        "append-response": AppendEntriesResponse(t, 3, 1, False, 0),
        "vote-response": RequestVoteResponse(t, 3, 1, False),
    }
    message = options[kind]
    r.step(message)
    want_lead = 3 if kind in ("append", "heartbeat") else None
    assert (r.role, r.term, r.vote, r.lead) == (Role.FOLLOWER, t, None, want_lead)
    rd = drive(r)
    assert rd.hard_state is not None and (rd.hard_state.term, rd.hard_state.vote) == (t, None)


def test_candidate_concedes_to_leader_of_same_term() -> None:
    """A candidate that receives an AppendEntries from a leader of its own term returns to
    follower (keeping its term and its vote for itself) and handles the message.

    Reference: §5.2 (Figure 2, "Candidates")."""
    r = _in_role(Role.CANDIDATE)
    r.step(AppendEntries(2, 3, 1, 0, 0, tuple(entries([2])), 1))
    assert (r.role, r.term, r.vote, r.lead) == (Role.FOLLOWER, 2, 1, 3)
    assert (log_terms(r), r.log.committed) == ([2], 1)
    rd = drive(r)
    assert [(type(m), m.dst) for m in msgs(rd)] == [(AppendEntriesResponse, 3)]


def test_stale_term_messages_are_ignored() -> None:
    """A message from an older term changes nothing: no entries, commit, leader, vote or
    timer change. A stale AppendEntries/Heartbeat is answered with our term (so a deposed
    leader learns it, Thesis §9.6); a stale vote request is dropped, a stale pre-vote refused.

    Reference: §5.1 (Figure 2: "Reply false if term < currentTerm")."""
    r = follower([1, 2, 3], term=3, commit=1)
    r.step(Heartbeat(3, 2, 1, 1))  # the current leader: 2
    drain(r)
    r.tick()
    before = (r.term, r.vote, r.lead, r.log.committed, log_terms(r), r.election_elapsed)
    stale: list[Message] = [
        AppendEntries(2, 3, 1, 3, 3, tuple(entries([2], start=4)), 4),
        AppendEntries(2, 3, 1, 1, 1, tuple(entries([2, 2], start=2)), 3),
        Heartbeat(2, 3, 1, 3),
        RequestVote(2, 3, 1, 10, 3),
        RequestVote(2, 3, 1, 10, 3, pre_vote=True),
    ]
    for m in stale:
        r.step(m)
    after = (r.term, r.vote, r.lead, r.log.committed, log_terms(r), r.election_elapsed)
    assert after == before == (3, None, 2, 1, [1, 2, 3], 1)
    rd = drive(r)
    assert rd.hard_state is None and rd.entries == () and rd.messages == ()
    assert list(rd.persisted_messages) == [
        AppendEntriesResponse(3, 1, 3, False, 0),
        AppendEntriesResponse(3, 1, 3, False, 0),
        AppendEntriesResponse(3, 1, 3, False, 0),
        RequestVoteResponse(3, 1, 3, False, pre_vote=True),
    ]


def test_stale_vote_responses_are_not_counted() -> None:
    """Grants from an earlier term do not count towards this term's election.

    Reference: §5.1, §5.2."""
    r = new_raft(1, FIVE, pre_vote=False, storage=new_storage(FIVE, term=2))
    r.campaign()
    assert (r.role, r.term) == (Role.CANDIDATE, 3)
    r.step(RequestVoteResponse(2, 2, 1, True))
    r.step(RequestVoteResponse(2, 3, 1, True))
    assert r.role is Role.CANDIDATE
    r.step(RequestVoteResponse(3, 2, 1, True))
    assert r.role is Role.CANDIDATE  # two of five
    r.step(RequestVoteResponse(3, 3, 1, True))
    assert (r.role, r.term) == (Role.LEADER, 3)


def test_stale_append_responses_do_not_update_progress() -> None:
    """A response from an older term never moves a leader's match or next.

    Reference: §5.1."""
    r = leader_with_acks(terms=(1, 1, 1))  # leader at term 2; the no-op is index 4
    r.propose(b"x")
    drain(r)
    before = (r.prs[2].match, r.prs[2].next, r.prs[2].state)
    r.step(AppendEntriesResponse(1, 2, 1, True, 5))
    r.step(AppendEntriesResponse(1, 2, 1, False, 4, 0, 0))
    assert (r.prs[2].match, r.prs[2].next, r.prs[2].state) == before
    assert before == (4, 6, ProgressState.REPLICATE)
    assert r.log.committed == 4


def test_leader_log_is_append_only() -> None:
    """A leader never overwrites or deletes entries in its own log: an AppendEntries from a
    deposed leader of an older term, carrying conflicting entries, leaves it untouched.

    Reference: §5.3 (Figure 3, Leader Append-Only)."""
    r = leader_with_acks(terms=(1, 1))  # leader of term 2: [1, 1, 2]
    r.propose(b"x")
    drain(r)
    r.step(AppendEntries(1, 3, 1, 1, 1, tuple(entries([1, 1, 1], start=2)), 2))
    r.step(AppendEntries(1, 3, 1, 0, 0, tuple(entries([1])), 0))
    assert (r.role, r.term, log_terms(r)) == (Role.LEADER, 2, [1, 1, 2, 2])
    assert drive(r).entries == ()


def test_config_enables_prevote_and_check_quorum_by_default() -> None:
    """PreVote and CheckQuorum are on unless turned off.

    Reference: Thesis §9.6, §6.2."""
    r = new_raft(1, PEERS)
    assert (RaftConfig(id=1).pre_vote, RaftConfig(id=1).check_quorum) == (True, True)
    r.campaign()
    assert (r.role, r.term) == (Role.PRE_CANDIDATE, 0)


def test_restart_keeps_term_and_vote() -> None:
    """Term and vote come back from storage, so a restarted node cannot vote twice in a term.

    Reference: §5.2 (Figure 2, "Persistent state on all servers")."""
    r = follower(term=5)
    r.step(RequestVote(5, 2, 1, 0, 0))
    drain(r)
    again = new_raft(1, PEERS, storage=storage_of(r), seed=1)
    assert (again.term, again.vote, again.role) == (5, 2, Role.FOLLOWER)
    again.step(RequestVote(5, 3, 1, 0, 0))
    again.step(RequestVote(5, 2, 1, 0, 0))
    rd = drive(again)
    assert list(rd.persisted_messages) == [
        RequestVoteResponse(5, 1, 3, False),
        RequestVoteResponse(5, 1, 2, True),
    ]


# -------------------------------------------------------------------------------------------
# Elections
# -------------------------------------------------------------------------------------------


def _ticks_between_campaigns(r: Raft, rounds: int) -> list[int]:
    """Tick ``r`` (nobody answers) and return the ticks between successive vote requests."""
    out: list[int] = []
    ticks = 0
    while len(out) < rounds:
        r.tick()
        ticks += 1
        if of_kind(drain(r), RequestVote):
            out.append(ticks)
            ticks = 0
        assert ticks < 1000
    return out


@pytest.mark.parametrize("election", [10, 5])
def test_election_timeout_is_randomized_in_range(election: int) -> None:
    """A follower or candidate times out after a random number of ticks in
    [election_ticks, 2 * election_ticks), drawn anew at every reset; different seeds and
    successive resets give different timeouts.

    Reference: §5.2."""
    first = [
        _ticks_between_campaigns(new_raft(1, PEERS, election=election, seed=s), 1)[0]
        for s in range(200)
    ]
    assert set(first) == set(range(election, 2 * election))
    # One node, many resets (each new campaign redraws its timeout).
    for pre_vote in (True, False):
        r = new_raft(1, PEERS, election=election, pre_vote=pre_vote, seed=7)
        again = _ticks_between_campaigns(r, 100)
        assert set(again) == set(range(election, 2 * election))


def test_follower_campaigns_after_election_timeout() -> None:
    """A follower that hears from no leader for its election timeout starts an election:
    without PreVote it becomes a candidate of the next term, voting for itself.

    Reference: §5.2 (Figure 2, "Followers")."""
    r = new_raft(1, PEERS, pre_vote=False, storage=new_storage(PEERS, [1, 1], term=4))
    timeout = r.randomized_election_timeout
    for _ in range(timeout - 1):
        r.tick()
    assert (r.role, r.term) == (Role.FOLLOWER, 4)
    r.tick()
    assert (r.role, r.term, r.vote) == (Role.CANDIDATE, 5, 1)
    rd = drive(r)
    assert list(rd.persisted_messages) == [RequestVote(5, 1, 2, 2, 1), RequestVote(5, 1, 3, 2, 1)]


@pytest.mark.parametrize("event", ["append", "heartbeat", "vote-granted"])
def test_election_timer_resets_on_leader_contact_or_granting_vote(event: str) -> None:
    """The election timer restarts whenever the follower hears from the current leader or
    grants a vote; it does not restart when a vote is refused.

    Reference: §5.2 (Figure 2, "Followers")."""
    r = follower(term=1)
    for _ in range(r.randomized_election_timeout - 1):
        r.tick()
    options: dict[str, Message] = {
        "append": AppendEntries(1, 2, 1, 0, 0, (), 0),
        "heartbeat": Heartbeat(1, 2, 1, 0),
        "vote-granted": RequestVote(1, 2, 1, 0, 0),
    }
    r.step(options[event])
    assert r.election_elapsed == 0
    for _ in range(r.randomized_election_timeout - 1):
        r.tick()
    assert role_of(r) is Role.FOLLOWER
    r.tick()
    assert role_of(r) is Role.PRE_CANDIDATE


def test_refused_vote_does_not_reset_election_timer() -> None:
    """Refusing a vote leaves the election timer running.

    Reference: §5.2 (Figure 2, "Followers")."""
    r = follower([1, 1], term=1)
    r.tick()
    r.tick()
    r.step(RequestVote(1, 2, 1, 1, 1))  # log behind: refused
    assert (r.election_elapsed, r.vote) == (2, None)


def test_vote_granted_at_most_once_per_term() -> None:
    """A server grants at most one vote per term, first come first served; a retransmitted
    request from the same candidate gets the same answer.

    Reference: §5.2 (Figure 2, RequestVote receiver rule 2)."""
    r = follower(term=1)
    r.step(RequestVote(2, 2, 1, 0, 0))
    r.step(RequestVote(2, 3, 1, 0, 0))
    r.step(RequestVote(2, 2, 1, 0, 0))
    assert (r.term, r.vote) == (2, 2)
    rd = drive(r)
    assert list(rd.persisted_messages) == [
        RequestVoteResponse(2, 1, 2, True),
        RequestVoteResponse(2, 1, 3, False),
        RequestVoteResponse(2, 1, 2, True),
    ]
    # A new term frees the vote again.
    r.step(RequestVote(3, 3, 1, 0, 0))
    assert (r.term, r.vote) == (3, 3)


def test_follower_with_known_leader_does_not_vote_in_its_term() -> None:
    """A follower that already follows a leader of this term refuses votes in that term
    (there is already a winner).

    Reference: §5.2."""
    r = follower(term=2)
    r.step(Heartbeat(2, 2, 1, 0))
    r.step(RequestVote(2, 3, 1, 0, 0))
    assert (r.vote, r.lead) == (None, 2)
    assert list(drive(r).persisted_messages) == [
        HeartbeatResponse(2, 1, 2),
        RequestVoteResponse(2, 1, 3, False),
    ]


# (candidate last term, candidate last index, granted) against a voter whose log ends at
# index 3 with term 2: the last term decides first, then the last index.
UP_TO_DATE = [
    (1, 1, False),
    (1, 3, False),
    (1, 9, False),  # a longer log with an older last term is behind
    (2, 0, False),
    (2, 2, False),
    (2, 3, True),
    (2, 4, True),
    (3, 1, True),  # a newer last term wins even with a shorter log
    (3, 3, True),
    (3, 9, True),
]


@pytest.mark.parametrize(
    ("last_term", "last_index", "granted"),
    UP_TO_DATE,
    ids=[f"term{t}-index{i}" for t, i, _ in UP_TO_DATE],
)
@pytest.mark.parametrize("pre_vote", [False, True], ids=["vote", "pre-vote"])
def test_vote_only_to_up_to_date_log(
    last_term: int, last_index: int, granted: bool, pre_vote: bool
) -> None:
    """A vote (or pre-vote) goes only to a candidate whose log is at least as up to date:
    the later last term wins; with equal last terms, the longer log.

    Reference: §5.4.1 (Figure 2, RequestVote receiver rule 2); Thesis §9.6."""
    r = follower([1, 1, 2], term=2)
    r.step(RequestVote(3, 2, 1, last_index, last_term, pre_vote=pre_vote))
    rd = drive(r)
    if pre_vote:
        want_term = 3 if granted else 2
        assert (r.term, r.vote) == (2, None)
    else:
        want_term = 3
        assert (r.term, r.vote) == (3, 2 if granted else None)
    assert list(rd.persisted_messages) == [
        RequestVoteResponse(want_term, 1, 2, granted, pre_vote=pre_vote)
    ]


def test_vote_and_term_are_persisted_before_reply() -> None:
    """The vote reply waits for the sync: it is in ``persisted_messages`` (never in
    ``messages``) of the same Ready whose hard state carries the new term and the vote, with
    ``must_sync`` set.

    Reference: §5.2 (Figure 2: "updated on stable storage before responding to RPCs")."""
    r = follower([1], term=1)
    r.step(RequestVote(5, 2, 1, 1, 1))
    rd = r.ready()
    assert rd.hard_state == HardState(5, 2, 0)
    assert rd.must_sync
    assert rd.messages == ()
    assert list(rd.persisted_messages) == [RequestVoteResponse(5, 1, 2, True)]


def test_acknowledgement_waits_for_entries_to_be_persisted() -> None:
    """A follower's AppendEntries success promises the entries are durable: it travels in
    ``persisted_messages`` of the Ready that carries those entries, with ``must_sync``.

    Reference: §5.3 (Figure 2: "updated on stable storage before responding to RPCs")."""
    r = follower(term=1)
    r.step(AppendEntries(1, 2, 1, 0, 0, tuple(entries([1, 1])), 0))
    rd = r.ready()
    assert rd.entries == tuple(entries([1, 1]))
    assert rd.must_sync
    assert rd.messages == ()
    assert list(rd.persisted_messages) == [AppendEntriesResponse(1, 1, 2, True, 2)]


@pytest.mark.parametrize("pre_vote", [False, True], ids=["vote", "pre-vote"])
def test_candidate_persists_term_before_requesting_votes(pre_vote: bool) -> None:
    """Becoming a candidate increments the term and votes for itself; the RequestVotes wait
    in ``persisted_messages`` of the Ready carrying that term and vote. A pre-candidate
    changes neither (its requests name the term it would use).

    Reference: §5.2 (Figure 2, "Candidates"); Thesis §9.6."""
    r = follower([1, 1], term=3, pre_vote=pre_vote)
    r.campaign()
    if pre_vote:
        rd = drive(r)
        assert (r.role, r.term, r.vote, rd.hard_state) == (Role.PRE_CANDIDATE, 3, None, None)
        assert list(rd.persisted_messages) == [
            RequestVote(4, 1, 2, 2, 1, pre_vote=True),
            RequestVote(4, 1, 3, 2, 1, pre_vote=True),
        ]
        r.step(RequestVoteResponse(4, 2, 1, True, pre_vote=True))
    assert (r.role, r.term, r.vote) == (Role.CANDIDATE, 4, 1)
    rd = r.ready()
    assert rd.hard_state == HardState(4, 1, 0)
    assert rd.must_sync
    assert rd.messages == ()
    assert list(rd.persisted_messages) == [RequestVote(4, 1, 2, 2, 1), RequestVote(4, 1, 3, 2, 1)]


# (voters, grants, refusals, role after): the candidate always votes for itself.
ELECTIONS = [
    (PEERS, [2], [], Role.LEADER),
    (PEERS, [], [2], Role.CANDIDATE),
    (PEERS, [], [2, 3], Role.FOLLOWER),
    (FIVE, [2], [], Role.CANDIDATE),
    (FIVE, [2, 3], [], Role.LEADER),
    (FIVE, [2], [3, 4], Role.CANDIDATE),
    (FIVE, [], [2, 3, 4], Role.FOLLOWER),
    ((1, 2, 3, 4), [2], [], Role.CANDIDATE),
    ((1, 2, 3, 4), [2, 3], [], Role.LEADER),
    ((1, 2, 3, 4), [2], [3, 4], Role.FOLLOWER),
    ((1,), [], [], Role.LEADER),
]


@pytest.mark.parametrize(
    ("voters", "grants", "refusals", "want"),
    ELECTIONS,
    ids=[f"n{len(v)}-yes{g}-no{n}" for v, g, n, _ in ELECTIONS],
)
def test_candidate_wins_with_majority_and_loses_to_majority(
    voters: tuple[int, ...], grants: list[int], refusals: list[int], want: Role
) -> None:
    """A candidate leads once a majority (itself included) granted its vote, returns to
    follower (same term) once a majority refused, and waits otherwise.

    Reference: §5.2 (Figure 2, "Candidates")."""
    r = new_raft(1, voters, pre_vote=False)
    r.campaign()
    for peer in grants:
        r.step(RequestVoteResponse(1, peer, 1, True))
    for peer in refusals:
        r.step(RequestVoteResponse(1, peer, 1, False))
    assert (r.role, r.term) == (want, 1)


def test_each_voter_counts_once() -> None:
    """The first answer of each voter is the one counted: a duplicate grant does not count
    twice, and a later contradicting answer does not change the tally.

    Reference: §5.2."""
    r = new_raft(1, FIVE, pre_vote=False)
    r.campaign()
    r.step(RequestVoteResponse(1, 2, 1, True))
    r.step(RequestVoteResponse(1, 2, 1, True))
    assert r.role is Role.CANDIDATE  # 2 of 5, not 3
    r.step(RequestVoteResponse(1, 2, 1, False))
    r.step(RequestVoteResponse(1, 3, 1, True))
    assert r.role is Role.LEADER  # 1, 2 and 3


def test_candidate_starts_new_election_after_timeout() -> None:
    """A candidate that neither wins nor loses within its election timeout (a split vote)
    starts a new election in the next term.

    Reference: §5.2 (Figure 2, "Candidates")."""
    r = new_raft(1, PEERS, pre_vote=False)
    r.campaign()
    drain(r)
    assert r.term == 1
    for _ in range(r.randomized_election_timeout - 1):
        r.tick()
    assert (r.role, r.term) == (Role.CANDIDATE, 1)
    r.tick()
    assert (r.role, r.term, r.vote) == (Role.CANDIDATE, 2, 1)
    assert [m.term for m in of_kind(drain(r), RequestVote)] == [2, 2]


def test_leader_appends_noop_on_election() -> None:
    """A new leader appends a no-op entry of its term at once and sends it to every peer
    (the initial AppendEntries), before persisting it locally.

    Reference: §5.2, §8; Thesis §6.4."""
    r = new_raft(1, PEERS, storage=new_storage(PEERS, [1, 1], term=1))
    make_leader(r)
    assert r.term == 2
    rd = r.ready()
    noop = Entry(2, 3, EntryKind.NOOP, b"")
    assert rd.entries == (noop,)
    assert list(rd.messages) == [
        AppendEntries(2, 1, 2, 2, 1, (noop,), 0),
        AppendEntries(2, 1, 3, 2, 1, (noop,), 0),
    ]


def _churn(seed: int, *, propose: bool) -> tuple[Network, dict[int, int]]:
    """Five nodes through eight phases of 50 ticks; each phase cuts the current leader and one
    other node off from the rest, forcing a new election. Returns the network and the leader
    seen in each term (asserting there was only one)."""
    net = Network.of(FIVE, seed=seed)
    leaders: dict[int, int] = {}
    for phase in range(8):
        net.heal()
        current = net.leaders()
        if current:
            other = (current[0] + seed + phase) % 5 + 1
            minority = {current[0], other if other != current[0] else other % 5 + 1}
            for a in minority:
                for b in set(FIVE) - minority:
                    net.cut(a, b)
        for tick in range(50):
            net.tick_all()
            for node_id, node in net.nodes.items():
                if node.raft.role is Role.LEADER:
                    assert leaders.setdefault(node.raft.term, node_id) == node_id
                    if propose and tick % 7 == 0:
                        node.raft.propose(f"{phase}.{tick}".encode())
            net.check_invariants()
    return net, leaders


@pytest.mark.parametrize("seed", range(6))
def test_one_leader_per_term(seed: int) -> None:
    """Election safety: at most one leader is ever elected in a term, across many elections
    forced by partitions.

    Reference: §5.2 (Figure 3, Election Safety)."""
    _, leaders = _churn(seed, propose=False)
    assert len(leaders) >= 6, leaders  # the schedule really forced new elections


@pytest.mark.parametrize("seed", range(6))
def test_logs_match_and_applied_entries_agree_after_leader_changes(seed: int) -> None:
    """Log matching and state machine safety: after leader changes with proposals in flight
    (some in minority partitions, later overwritten), once healed every node holds the same
    log and applied the same entries in index order.

    Reference: §5.3, §5.4.3 (Figure 3, Log Matching, State Machine Safety)."""
    net, _ = _churn(seed, propose=True)
    net.heal()
    net.tick_all(30)
    logs = {i: log_terms(n.raft) for i, n in net.nodes.items()}
    assert len({tuple(t) for t in logs.values()}) == 1, logs
    applied = [[(e.index, e.term, e.data) for e in n.applied] for n in net.nodes.values()]
    assert all(a == applied[0] for a in applied)
    assert [i for i, _, _ in applied[0]] == list(range(1, len(applied[0]) + 1))
    commands = [data for _, _, data in applied[0] if data]
    assert len(commands) >= 10


# -------------------------------------------------------------------------------------------
# Log replication: the follower side
# -------------------------------------------------------------------------------------------

# (prev index, prev term, hint index, hint term) against a follower log [1, 1, 2]:
MISMATCHES = [
    (3, 3, 3, 2),  # the term at prev_index differs
    (3, 1, 2, 1),  # ... and the hint skips back past every term-2 entry
    (4, 2, 3, 2),  # prev_index is past the end of the log
    (9, 5, 3, 2),
    (5, 1, 2, 1),
]


@pytest.mark.parametrize(
    ("prev_index", "prev_term", "hint_index", "hint_term"),
    MISMATCHES,
    ids=[f"prev{i}@{t}" for i, t, _, _ in MISMATCHES],
)
def test_follower_rejects_mismatched_prev(
    prev_index: int, prev_term: int, hint_index: int, hint_term: int
) -> None:
    """A follower whose log has no entry at prev_index with prev_term rejects the append,
    changing nothing, and hints where the logs may match: the last index at or below
    min(prev_index, last index) whose term is at most prev_term.

    Reference: §5.3 (Figure 2, AppendEntries receiver rule 2)."""
    r = follower([1, 1, 2], term=3, commit=1)
    r.step(AppendEntries(3, 2, 1, prev_index, prev_term, tuple(entries([3], prev_index + 1)), 3))
    assert (log_terms(r), r.log.committed, r.lead) == ([1, 1, 2], 1, 2)
    rd = drive(r)
    assert rd.entries == ()
    assert list(rd.persisted_messages) == [
        AppendEntriesResponse(3, 1, 2, False, prev_index, hint_index, hint_term)
    ]


# (prev index, prev term, entry terms, log after, acknowledged index), follower log
# [1, 1, 2, 2, 2] with nothing committed:
APPENDS = [
    ("duplicate-prefix", 0, 0, [1, 1], [1, 1, 2, 2, 2], 2),
    ("stale-single", 1, 1, [1], [1, 1, 2, 2, 2], 2),
    ("duplicate-all", 0, 0, [1, 1, 2, 2, 2], [1, 1, 2, 2, 2], 5),
    ("empty", 3, 2, [], [1, 1, 2, 2, 2], 3),
    ("conflict-in-middle", 2, 1, [2, 3], [1, 1, 2, 3], 4),
    ("conflict-at-first", 2, 1, [3], [1, 1, 3], 3),
    ("conflict-after-match", 3, 2, [2, 2, 3], [1, 1, 2, 2, 2, 3], 6),
    ("extend", 5, 2, [3, 3], [1, 1, 2, 2, 2, 3, 3], 7),
    ("replace-all", 0, 0, [3], [3], 1),
]


@pytest.mark.parametrize(
    ("prev_index", "prev_term", "terms", "want_log", "want_index"),
    [row[1:] for row in APPENDS],
    ids=[row[0] for row in APPENDS],
)
def test_follower_truncates_only_conflicting_suffix(
    prev_index: int, prev_term: int, terms: list[int], want_log: list[int], want_index: int
) -> None:
    """On a matching prev, the follower deletes an existing entry only if it conflicts with
    a new one (same index, other term), and everything after it; it appends what it lacks.
    A stale or duplicated AppendEntries never shortens the log. It acknowledges the last
    index the message covered, and storage ends up holding exactly the new log.

    Reference: §5.3 (Figure 2, AppendEntries receiver rules 3 and 4)."""
    r = follower([1, 1, 2, 2, 2], term=3)
    r.step(AppendEntries(3, 2, 1, prev_index, prev_term, tuple(entries(terms, prev_index + 1)), 0))
    assert log_terms(r) == want_log
    rd = drive(r)
    assert list(rd.persisted_messages) == [AppendEntriesResponse(3, 1, 2, True, want_index)]
    storage = storage_of(r)
    assert [storage.term(i) for i in range(1, storage.last_index() + 1)] == want_log


def test_follower_answers_append_below_its_commit_with_its_commit() -> None:
    """An AppendEntries whose prev_index is below the follower's commit index is a delayed
    duplicate: the committed prefix is acknowledged, nothing changes.

    Reference: §5.3, §5.4 (committed entries are never overwritten)."""
    r = follower([1, 1, 2, 2], term=2, commit=3)
    r.step(AppendEntries(2, 2, 1, 1, 1, tuple(entries([1], 2)), 3))
    assert (log_terms(r), r.log.committed) == ([1, 1, 2, 2], 3)
    assert list(drive(r).persisted_messages) == [AppendEntriesResponse(2, 1, 2, True, 3)]


# (prev index, entry count, leader commit, follower commit after); follower log [1] * 5:
COMMITS = [
    (1, 1, 5, 2),  # leader commit past the last new entry: min is the last new entry
    (1, 0, 5, 1),  # a bare probe only vouches for prev_index
    (3, 1, 2, 2),  # leader commit is the min
    (5, 1, 10, 6),
    (0, 2, 2, 2),
    (2, 0, 0, 0),
]


@pytest.mark.parametrize(
    ("prev_index", "count", "leader_commit", "want"),
    COMMITS,
    ids=[f"prev{p}+{n}-commit{c}" for p, n, c, _ in COMMITS],
)
def test_follower_commit_is_min_of_leader_commit_and_last_new_entry(
    prev_index: int, count: int, leader_commit: int, want: int
) -> None:
    """After a successful AppendEntries, commitIndex = min(leaderCommit, index of the last
    new entry): entries past the message may still disagree with the leader's log.

    Reference: §5.3 (Figure 2, AppendEntries receiver rule 5)."""
    r = follower([1] * 5, term=1)
    prev_term = 1 if prev_index else 0
    new = tuple(entries([1] * count, prev_index + 1))
    r.step(AppendEntries(1, 2, 1, prev_index, prev_term, new, leader_commit))
    assert r.log.committed == want
    rd = drive(r)
    assert [e.index for e in rd.committed_entries] == list(range(1, want + 1))


def test_follower_learns_commit_from_heartbeat() -> None:
    """A heartbeat carries the leader's commit index (capped at what the follower holds):
    the follower commits up to it, never past its own log, never backwards.

    Reference: §5.3 ("the leader ... includes [its commit index] in future AppendEntries RPCs
    (including heartbeats)")."""
    r = follower([1] * 4, term=1)
    r.step(Heartbeat(1, 2, 1, 3))
    assert r.log.committed == 3
    assert [e.index for e in drive(r).committed_entries] == [1, 2, 3]
    r.step(Heartbeat(1, 2, 1, 9))
    assert r.log.committed == 4
    r.step(Heartbeat(1, 2, 1, 1))
    assert r.log.committed == 4


def test_follower_commit_never_decreases() -> None:
    """A leader's lower commit index (a delayed message) never lowers the follower's.

    Reference: §5.3 (commitIndex increases monotonically, Figure 2)."""
    r = follower([1] * 5, term=1, commit=4)
    r.step(AppendEntries(1, 2, 1, 4, 1, (), 1))
    r.step(Heartbeat(1, 2, 1, 2))
    assert r.log.committed == 4


# -------------------------------------------------------------------------------------------
# Log replication: the leader side
# -------------------------------------------------------------------------------------------


def test_leader_updates_match_and_next_on_success() -> None:
    """When an append succeeds the leader sets the follower's matchIndex to the acknowledged
    index and nextIndex just past it, and switches from probing to replicating.

    Reference: §5.3 (Figure 2, "Leaders": "If successful: update nextIndex and matchIndex")."""
    r = new_raft(1, PEERS, storage=new_storage(PEERS, [1, 1], term=1))
    make_leader(r)
    drain(r)
    assert (r.prs[2].match, r.prs[2].next, r.prs[2].state) == (0, 3, ProgressState.PROBE)
    r.step(AppendEntriesResponse(2, 2, 1, True, 3))
    assert (r.prs[2].match, r.prs[2].next, r.prs[2].state) == (3, 4, ProgressState.REPLICATE)
    assert r.log.committed == 3


def test_leader_sends_entries_from_next_index() -> None:
    """When its last index is at or past a follower's nextIndex, the leader sends the entries
    from nextIndex on, with prev_index/prev_term of the entry before them and its commit.

    Reference: §5.3 (Figure 2, "Leaders": "If last log index >= nextIndex")."""
    r = leader_with_acks(terms=(1, 1))  # the no-op of term 2 is index 3, committed
    first = r.propose(b"a")
    r.propose(b"b")
    sent = of_kind(drain(r), AppendEntries, dst=2)
    assert first == 4
    assert [(m.prev_index, m.prev_term, [e.index for e in m.entries], m.commit) for m in sent] == [
        (3, 2, [4], 3),
        (4, 2, [5], 3),
    ]


def test_leader_decrements_next_and_retries_without_hint() -> None:
    """Without a hint, a rejection makes the leader decrement nextIndex by one and retry.

    Reference: §5.3 (Figure 2, "Leaders": "decrement nextIndex and retry")."""
    r = new_raft(1, PEERS, storage=new_storage(PEERS, [1, 1, 1, 1], term=1))
    make_leader(r)
    drain(r)
    assert r.prs[2].next == 5
    r.step(AppendEntriesResponse(2, 2, 1, False, 4))
    assert r.prs[2].next == 4
    retry = of_kind(drain(r), AppendEntries, dst=2)
    assert [(m.prev_index, [e.index for e in m.entries]) for m in retry] == [(3, [4, 5])]


def test_leader_uses_conflict_hint_to_set_next() -> None:
    """With a hint (index, term), the leader jumps nextIndex to just past the last entry of
    its own log at or below the hint index whose term is at most the hint term.

    Reference: §5.3 (the optimisation after Figure 7)."""
    leader_log = (1, 1, 1, 4, 4, 5, 5, 6, 6, 6)  # Figure 7's leader
    r = new_raft(1, PEERS, storage=new_storage(PEERS, leader_log, term=7))
    make_leader(r)
    drain(r)
    assert (r.term, r.prs[2].next) == (8, 11)
    # Figure 7 (f): the follower's entry 10 has term 3; its hint is (10, 3).
    r.step(AppendEntriesResponse(8, 2, 1, False, 10, 10, 3))
    assert r.prs[2].next == 4
    # Figure 7 (e): hint (7, 4): the leader's last entry with term <= 4 is index 5.
    r.step(AppendEntriesResponse(8, 3, 1, False, 10, 7, 4))
    assert r.prs[3].next == 6


# Figure 7: the leader of term 8 and followers (a)-(f), as terms of indexes 1, 2, ...
FIGURE_7_LEADER = (1, 1, 1, 4, 4, 5, 5, 6, 6, 6)
FIGURE_7 = [
    ("a", (1, 1, 1, 4, 4, 5, 5, 6, 6), 1),
    ("b", (1, 1, 1, 4), 1),
    ("c", (1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6), 0),
    ("d", (1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7), 0),
    ("e", (1, 1, 1, 4, 4, 4, 4), 1),
    ("f", (1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3), 1),
]


@pytest.mark.parametrize(
    ("follower_log", "rejections"), [r[1:] for r in FIGURE_7], ids=[r[0] for r in FIGURE_7]
)
def test_conflict_hint_skips_a_whole_term(follower_log: tuple[int, ...], rejections: int) -> None:
    """With the conflict hint, the new leader of Figure 7 brings every follower in line with
    at most one rejection, however many entries of however many terms conflict (one entry
    per round trip would take up to seven for (f)).

    Reference: §5.3 (the optimisation after Figure 7)."""
    net = Network.of(
        PEERS,
        logs={1: FIGURE_7_LEADER, 2: follower_log, 3: FIGURE_7_LEADER},
        terms={1: 7, 2: 7, 3: 7},
    )
    leader = net.elect(1)
    assert leader.term == 8
    got = [m for m in responses_from(net.delivered, 2) if not m.success]
    assert len(got) == rejections
    assert log_terms(net[2]) == [*FIGURE_7_LEADER, 8]
    assert leader.prs[2].match == 11
    net.tick(1)  # followers learn the commit index from the next heartbeat (or append)
    assert net[2].log.committed == 11


def test_only_current_term_entries_commit_by_counting() -> None:
    """Figure 8 at unit level: an entry of an earlier term stored on a majority is not
    committed by counting replicas; it commits only with (below) an entry of the current term.

    Reference: §5.4.2 (Figure 8)."""
    r = new_raft(1, PEERS, storage=new_storage(PEERS, [1, 2], term=2, commit=1))
    make_leader(r)  # term 3, no-op at index 3
    drain(r)
    assert (r.term, r.log.committed, r.prs[1].match) == (3, 1, 3)
    r.step(AppendEntriesResponse(3, 2, 1, True, 2))  # index 2 (term 2) now on 2 of 3
    assert r.log.committed == 1
    r.step(AppendEntriesResponse(3, 3, 1, True, 2))  # ... and on all three
    assert r.log.committed == 1
    assert drive(r).committed_entries == ()
    r.step(AppendEntriesResponse(3, 2, 1, True, 3))  # the current-term no-op on a majority
    assert r.log.committed == 3
    assert [(e.index, e.term) for e in drive(r).committed_entries] == [(2, 2), (3, 3)]


def test_leader_commits_entry_on_majority_and_tells_followers() -> None:
    """The leader commits an entry of its term once a majority stores it, and its next
    AppendEntries or heartbeat carries the new commit index so followers apply it too.

    Reference: §5.3 (Figure 2, "Leaders": "If there exists an N ..."), §5.4.2."""
    net = Network.of(FIVE)
    leader = net.elect(1)
    net.cut(1, 4)
    net.cut(1, 5)
    index = net.propose(1, b"x")
    assert leader.log.committed == index
    net.tick(1)  # the heartbeat carries the new commit index
    assert (leader.log.committed, net[2].log.committed, net[3].log.committed) == (index,) * 3
    assert net[4].log.committed == index - 1
    # Index 1 is the first leader's record of the membership, then the command.
    assert [(e.kind, e.data) for e in net.nodes[2].applied][1:] == [(EntryKind.COMMAND, b"x")]
    assert net.nodes[2].applied[0].kind is EntryKind.CONFIG
    net.cut(1, 3)
    index = net.propose(1, b"y")
    assert leader.log.committed == index - 1  # two of five hold it


@pytest.mark.parametrize("sent_as_probe", [False, True], ids=["replicate", "probe"])
def test_stale_responses_never_move_match_or_next_backwards(sent_as_probe: bool) -> None:
    """A delayed success for an index below match, or a rejection of an index the leader no
    longer probes (or already knows is matched), leaves match, next and the state alone.

    Reference: §5.3."""
    net = Network.of(PEERS)
    leader = net.elect(1)
    for k in range(4):
        net.propose(1, b"%d" % k)
    pr = leader.prs[2]
    if sent_as_probe:
        # Entries 6 and 7 are lost on the way to 2, which rejects a later append: the leader
        # falls back to probing from 6, with one probe outstanding.
        net.cut(1, 2)
        net.propose(1, b"lost-1")
        net.propose(1, b"lost-2")
        leader.step(AppendEntriesResponse(1, 2, 1, False, 7, 5, 1))
        assert of_kind(drain(leader), AppendEntries, dst=2) != []
        assert pr.probe_sent
    before = (pr.match, pr.next, pr.state, leader.log.committed)
    state = ProgressState.PROBE if sent_as_probe else ProgressState.REPLICATE
    assert before == (5, 6, state, 7 if sent_as_probe else 5)
    stale: list[Message] = [
        AppendEntriesResponse(1, 2, 1, True, 3),
        AppendEntriesResponse(1, 2, 1, True, 5),
        AppendEntriesResponse(1, 2, 1, False, 2, 1, 1),
        AppendEntriesResponse(1, 2, 1, False, 4, 0, 0),
    ]
    for m in stale:
        leader.step(m)
        assert (pr.match, pr.next, pr.state, leader.log.committed) == before
    assert of_kind(drain(leader), AppendEntries, dst=2) == []


def test_heartbeat_carries_commit_but_never_past_match() -> None:
    """Heartbeats repeat the leader's commit index, capped per follower at what that
    follower is known to hold, so no follower is told to commit an entry it may lack or
    hold in a different term.

    Reference: §5.2, §5.3."""
    net = Network.of(PEERS)
    leader = net.elect(1)
    net.cut(1, 3)
    for k in range(3):
        net.propose(1, b"%d" % k)
    assert (leader.log.committed, leader.prs[2].match, leader.prs[3].match) == (4, 4, 1)
    leader.tick()
    beats = of_kind(drain(leader), Heartbeat)
    assert [(m.dst, m.commit) for m in beats] == [(2, 4), (3, 1)]


def test_leader_sends_heartbeats_every_heartbeat_interval() -> None:
    """An idle leader sends a Heartbeat to every follower each heartbeat_ticks ticks.

    Reference: §5.2 (Figure 2, "Leaders": "repeat during idle periods")."""
    net = Network.of(PEERS, heartbeat=3)
    leader = net.elect(1)
    sent: list[tuple[int, int]] = []
    for tick in range(1, 10):
        leader.tick()
        sent += [(tick, m.dst) for m in of_kind(drain(leader), Heartbeat)]
    assert sent == [(3, 2), (3, 3), (6, 2), (6, 3), (9, 2), (9, 3)]


@pytest.mark.parametrize("voters", [(1,), PEERS], ids=["single", "three"])
def test_leader_counts_own_entry_only_once_durable(voters: tuple[int, ...]) -> None:
    """The leader may send AppendEntries before persisting its own copy (they are in
    Ready.messages of the Ready that carries the entry), but it does not count itself towards
    commitment until advance() reports the entry durable.

    Reference: Thesis §10.2.1."""
    r = leader_with_acks(voters) if len(voters) > 1 else make_leader(new_raft(1, voters))
    if len(voters) == 1:
        rd = r.ready()
        assert rd.entries and r.log.committed == 0  # the no-op is not durable yet
        persist(rd, storage_of(r))
        r.advance(rd)
        assert r.log.committed == 1
        drain(r)
    index = r.propose(b"x")
    rd = r.ready()
    assert [e.index for e in rd.entries] == [index]
    appends = of_kind(rd.messages, AppendEntries)
    assert [(m.dst, [e.index for e in m.entries]) for m in appends] == [
        (peer, [index]) for peer in voters[1:]
    ]
    assert of_kind(rd.persisted_messages, AppendEntries) == []
    for peer in voters[1:2]:
        r.step(AppendEntriesResponse(r.term, peer, 1, True, index))
    assert r.log.committed == index - 1  # one follower of three, the leader's copy not durable
    assert r.prs[1].match == index - 1
    later = r.propose(b"y")  # appended while the driver persists ``rd``
    persist(rd, storage_of(r))
    r.advance(rd)
    assert (r.prs[1].match, r.log.committed) == (index, index)
    rd = r.ready()
    assert [e.index for e in rd.entries] == [later]
    for peer in voters[1:2]:
        r.step(AppendEntriesResponse(r.term, peer, 1, True, later))
    assert (r.prs[1].match, r.log.committed) == (index, index)
    persist(rd, storage_of(r))
    r.advance(rd)
    assert (r.prs[1].match, r.log.committed) == (later, later)


def test_new_leader_counts_only_its_durable_entries() -> None:
    """Entries a node received but has not yet persisted when it wins an election do not
    count as its own copy until a Ready carrying them is advanced.

    Reference: Thesis §10.2.1."""
    r = follower(term=1)
    r.step(AppendEntries(1, 2, 1, 0, 0, tuple(entries([1, 1])), 0))
    make_leader(r)  # term 2; entries 1-2 and the no-op (3) are all in memory only
    assert (r.term, r.log.last_index(), r.prs[1].match) == (2, 3, 0)
    r.step(AppendEntriesResponse(2, 3, 1, True, 3))
    assert r.log.committed == 0
    drive(r)
    assert (r.prs[1].match, r.log.committed) == (3, 3)


def test_probe_state_sends_one_message_per_heartbeat() -> None:
    """While probing a follower (where its log matches is unknown), the leader keeps at most
    one AppendEntries outstanding; a heartbeat answer allows the next one.

    Reference: §5.3 (finding nextIndex), as etcd raft's probe state."""
    r = new_raft(1, PEERS)
    make_leader(r)
    first = of_kind(drain(r), AppendEntries, dst=2)
    assert [(m.prev_index, len(m.entries)) for m in first] == [(0, 1)]
    for k in range(3):
        r.propose(b"%d" % k)
    assert of_kind(drain(r), AppendEntries, dst=2) == []
    r.tick()
    assert [type(m) for m in drain(r) if m.dst == 2] == [Heartbeat]
    r.step(HeartbeatResponse(1, 2, 1))
    again = of_kind(drain(r), AppendEntries, dst=2)
    assert [(m.prev_index, [e.index for e in m.entries]) for m in again] == [(0, [1, 2, 3, 4])]
    r.propose(b"more")
    r.tick()
    assert [type(m) for m in drain(r) if m.dst == 2] == [Heartbeat]
    assert r.prs[2].state is ProgressState.PROBE


def test_replicate_state_respects_inflight_window() -> None:
    """A follower in replicate state gets AppendEntries optimistically, but never more than
    max_inflight_msgs unacknowledged ones; each acknowledgement frees room for more.

    Reference: Thesis §10.2.2 (pipelining); flow control as in etcd raft's inflights."""
    net = Network.of(PEERS, max_inflight_msgs=2)
    leader = net.elect(1)
    assert leader.prs[2].state is ProgressState.REPLICATE
    for k in range(5):
        leader.propose(b"%d" % k)
    sent = of_kind(drain(leader), AppendEntries, dst=2)
    assert [[e.index for e in m.entries] for m in sent] == [[2], [3]]
    assert leader.prs[2].inflights.count() == 2
    leader.step(AppendEntriesResponse(1, 2, 1, True, 2))
    sent = of_kind(drain(leader), AppendEntries, dst=2)
    assert [[e.index for e in m.entries] for m in sent] == [[4, 5, 6]]
    leader.step(AppendEntriesResponse(1, 2, 1, True, 6))
    assert (leader.prs[2].match, leader.prs[2].inflights.count()) == (6, 0)


def test_replicate_state_recovers_after_whole_inflight_window_is_lost() -> None:
    """If every AppendEntries of a full inflight window is lost (a partition), the leader
    must still get the follower back in sync once it answers heartbeats again.

    Reference: §5.3 ("the leader retries AppendEntries indefinitely"); etcd raft frees one
    inflight slot on a heartbeat response when the window is full."""
    net = Network.of(PEERS, max_inflight_msgs=2)
    leader = net.elect(1)
    net.cut(1, 2)
    for k in range(4):
        net.propose(1, b"%d" % k)
    assert leader.prs[2].inflights.full()
    net.heal()
    net.tick(1, 30)
    assert leader.role is Role.LEADER
    assert log_terms(net[2]) == log_terms(leader)
    assert leader.prs[2].match == leader.log.last_index() == 5


# -------------------------------------------------------------------------------------------
# PreVote and CheckQuorum
# -------------------------------------------------------------------------------------------


def test_prevote_does_not_change_terms() -> None:
    """A pre-vote changes no one's term or vote: not the pre-candidate's, not a voter's that
    grants it. A partitioned node therefore rejoins without disrupting the leader.

    Reference: Thesis §9.6."""
    r = follower(term=1)
    r.step(RequestVote(2, 2, 1, 0, 0, pre_vote=True))
    rd = drive(r)
    assert (r.term, r.vote, rd.hard_state) == (1, None, None)
    assert list(rd.persisted_messages) == [RequestVoteResponse(2, 1, 2, True, pre_vote=True)]

    net = Network.of(PEERS)
    leader = net.elect(1)
    net.isolate(3)
    net.tick(3, 200)  # many election timeouts: pre-votes that reach no one
    assert (net[3].term, net[3].role) == (1, Role.PRE_CANDIDATE)
    assert net[3].vote == 1
    net.heal()
    net.tick_all(30)
    assert (leader.role, leader.term, net[3].role, net[3].term) == (
        Role.LEADER,
        1,
        Role.FOLLOWER,
        1,
    )
    from_3 = [
        m for m in [*net.delivered, *net.dropped] if isinstance(m, RequestVote) and m.src == 3
    ]
    assert len(from_3) >= 2 * (200 // 20)
    assert {(m.term, m.pre_vote) for m in from_3} == {(2, True)}


def test_prevote_rejected_when_log_behind() -> None:
    """A pre-candidate whose log is behind a majority's gets its pre-votes refused and goes
    back to follower; nobody's term moves, and a node with a current log then wins.

    Reference: Thesis §9.6; §5.4.1."""
    net = Network.of(PEERS, logs={1: [1, 1], 2: [1, 1], 3: [1]}, terms={1: 1, 2: 1, 3: 1})
    net.campaign(3)
    assert [(i, n.raft.role, n.raft.term, n.raft.vote) for i, n in net.nodes.items()] == [
        (1, Role.FOLLOWER, 1, None),
        (2, Role.FOLLOWER, 1, None),
        (3, Role.FOLLOWER, 1, None),
    ]
    answers = of_kind(net.delivered, RequestVoteResponse, dst=3)
    assert [(m.src, m.term, m.granted, m.pre_vote) for m in answers] == [
        (1, 1, False, True),
        (2, 1, False, True),
    ]
    assert of_kind(net.delivered, RequestVote) == [
        RequestVote(2, 3, 1, 1, 1, pre_vote=True),
        RequestVote(2, 3, 2, 1, 1, pre_vote=True),
    ]
    net.elect(1)
    assert net[1].term == 2


def test_prevote_grant_from_earlier_round_is_not_counted() -> None:
    """A granted pre-vote answers one round: it carries the term that round asked about
    (the pre-candidate's term + 1). A delayed grant from an earlier round, whose term is now
    our current term, must not count towards the current round.

    Reference: Thesis §9.6; §5.1 (an answer for another term is stale)."""
    r = new_raft(1, PEERS)
    r.campaign()  # round 1: pre-candidate at term 0, asks about term 1
    drain(r)
    r.step(RequestVote(1, 3, 1, 0, 0))  # another candidate of term 1: adopt it, vote for 3
    assert (r.role, r.term, r.vote) == (Role.FOLLOWER, 1, 3)
    r.campaign()  # round 2: pre-candidate at term 1, asks about term 2
    assert [m.term for m in of_kind(drain(r), RequestVote)] == [2, 2]
    r.step(RequestVoteResponse(1, 2, 1, True, pre_vote=True))  # 2's grant from round 1
    assert (r.role, r.term) == (Role.PRE_CANDIDATE, 1)


@pytest.mark.parametrize("check_quorum", [True, False], ids=["check-quorum", "pre-vote-only"])
def test_prevote_refused_while_leader_alive(check_quorum: bool) -> None:
    """A voter that heard from a live leader within the election timeout refuses pre-votes,
    so a node that cannot hear the leader (but reaches other voters) never disrupts it. The
    Thesis makes this part of PreVote itself, not of CheckQuorum.

    Reference: Thesis §9.6 ("... and the voters have not received heartbeats from a valid
    leader for at least a baseline election timeout"); Thesis §4.2.3."""
    net = Network.of(PEERS, check_quorum=check_quorum)
    leader = net.elect(1)
    net.cut(1, 3)  # 3 cannot hear the leader, but reaches 2
    net.tick_all(60)
    assert (leader.role, leader.term, net[2].lead) == (Role.LEADER, 1, 1)
    grants = [m for m in of_kind(net.delivered, RequestVoteResponse, dst=3) if m.granted]
    assert grants == []


def test_check_quorum_leader_steps_down_without_quorum() -> None:
    """A leader that has not heard from a majority within an election timeout steps down
    (same term, no leader known); one that hears from a majority stays.

    Reference: Thesis §6.2."""
    net = Network.of(PEERS)
    leader = net.elect(1)
    net.cut(1, 3)  # a majority (1 and 2) is still connected
    net.tick(1, 100)
    assert (leader.role, leader.term) == (Role.LEADER, 1)
    net.cut(1, 2)
    # The check runs every election timeout (10 ticks) over who answered since the last one:
    # 2 answered during the first period, so the leader steps down at the second check.
    elapsed = leader.election_elapsed
    for tick in range(1, 20 - elapsed):
        leader.tick()
        assert leader.role is Role.LEADER, tick
    leader.tick()
    assert (leader.role, leader.term, leader.lead) == (Role.FOLLOWER, 1, None)
    with pytest.raises(NotLeaderError):
        leader.propose(b"x")


def test_leader_without_check_quorum_keeps_leading_alone() -> None:
    """With CheckQuorum off, an isolated leader keeps its role (the contrast to the rule).

    Reference: Thesis §6.2."""
    net = Network.of(PEERS, check_quorum=False)
    leader = net.elect(1)
    net.isolate(1)
    net.tick(1, 100)
    assert leader.role is Role.LEADER


def test_check_quorum_ignores_votes_while_leader_alive() -> None:
    """A follower that heard from its leader within the election timeout (the leader lease)
    ignores vote and pre-vote requests of higher terms: no term change, no vote, no answer.
    After the lease expires it handles them; a leadership transfer the leader started bypasses
    the lease (see the transfer rules below). A live leader ignores them too.

    Reference: Thesis §4.2.3, §6.2."""
    r = follower(term=1)
    r.step(Heartbeat(1, 2, 1, 0))
    drain(r)
    r.step(RequestVote(2, 3, 1, 5, 1))
    r.step(RequestVote(2, 3, 1, 5, 1, pre_vote=True))
    assert (r.term, r.vote, r.lead) == (1, None, 2)
    assert not r.has_ready()
    r.step(Heartbeat(1, 2, 1, 0, transferee=3))
    drain(r)
    r.step(RequestVote(2, 3, 1, 5, 1, transfer=True))
    assert (r.term, r.vote) == (2, 3)

    r = follower(term=1)
    r.step(Heartbeat(1, 2, 1, 0))
    drain(r)
    for _ in range(10):
        r.tick()
    r.step(RequestVote(2, 3, 1, 5, 1))
    assert (r.term, r.vote) == (2, 3)

    net = Network.of(PEERS)
    leader = net.elect(1)
    leader.step(RequestVote(5, 3, 1, 9, 9))
    assert (leader.role, leader.term, leader.has_ready()) == (Role.LEADER, 1, False)


# -------------------------------------------------------------------------------------------
# Clients: proposals and reads
# -------------------------------------------------------------------------------------------


def test_propose_on_follower_raises_not_leader_with_hint() -> None:
    """A follower refuses a proposal with NotLeaderError naming the leader it knows (None
    when it knows none, as for a candidate); nothing is appended.

    Reference: §8 (clients are redirected to the most recent leader)."""
    net = Network.of(PEERS)
    net.elect(2)
    with pytest.raises(NotLeaderError) as info:
        net[1].propose(b"x")
    assert (info.value.leader_id, info.value.leader_address) == (2, None)
    assert net[1].log.last_index() == 1
    for r in (new_raft(1, PEERS), _in_role(Role.CANDIDATE), _in_role(Role.PRE_CANDIDATE)):
        last = r.log.last_index()
        with pytest.raises(NotLeaderError) as info:
            r.propose(b"x")
        assert info.value.leader_id is None
        assert r.log.last_index() == last
        with pytest.raises(NotLeaderError):
            r.read_index(b"ctx")


def test_propose_batch_appends_consecutive_entries_and_names_their_term() -> None:
    """A batch of commands is appended as consecutive entries of the leader's current term;
    ``propose_batch`` returns the first index and that term, which together name each
    command's entry (the driver must not read the term back later: it may have moved on).

    Reference: §5.3 ("the leader appends the command to its log as a new entry"; an entry is
    identified by its index and term)."""
    r = leader_with_acks(terms=(1, 1))  # the no-op of term 2 is index 3
    appended = r.propose_batch([b"a", b"b", b"c"])
    assert appended == (4, 2) and (appended.first_index, appended.term) == (4, 2)
    assert [(e.index, e.term, e.data) for e in r.log.entries(4, 7)] == [
        (4, 2, b"a"),
        (5, 2, b"b"),
        (6, 2, b"c"),
    ]
    assert r.propose(b"d") == 7  # a single proposal still returns just its index


def test_proposals_beyond_uncommitted_bytes_are_refused() -> None:
    """The leader refuses (ProposalDropped, nothing appended) a proposal that would take the
    bytes appended but not yet committed past max_uncommitted_bytes; once they commit,
    proposals are accepted again. A single proposal is admitted when nothing is pending.

    Reference: no paper section; definite failures (raftpy.outcomes), as etcd raft's
    MaxUncommittedEntriesSize."""
    net = Network.of(PEERS, max_uncommitted_bytes=10)
    leader = net.elect(1)
    net.isolate(1)
    assert net.propose(1, b"12345678") == 2
    assert net.propose(1, b"12") == 3  # 10 bytes pending: at the limit, not past it
    with pytest.raises(ProposalDropped):
        leader.propose(b"1")
    assert leader.log.last_index() == 3
    net.heal()
    net.tick(1, 2)
    assert leader.log.committed == 3
    assert net.propose(1, b"123456789") == 4
    assert net.propose(1, b"1") == 5
    net.isolate(1)
    assert net.propose(1, b"x" * 50) == 6  # nothing pending: admitted, however large
    with pytest.raises(ProposalDropped):
        leader.propose(b"1")


def test_proposal_larger_than_max_entry_bytes_is_refused() -> None:
    """A command larger than max_entry_bytes is refused outright.

    Reference: no paper section; definite failures (raftpy.outcomes)."""
    net = Network.of(PEERS, max_entry_bytes=4)
    leader = net.elect(1)
    with pytest.raises(ProposalDropped):
        leader.propose(b"12345")
    assert (leader.log.last_index(), net.propose(1, b"1234")) == (1, 2)


def test_read_index_waits_for_heartbeat_quorum() -> None:
    """A read is confirmed only once a majority acknowledged a heartbeat sent after the read
    arrived; its read point is the commit index when it arrived.

    Reference: Thesis §6.4."""
    net = Network.of(FIVE)
    leader = net.elect(1)
    commit = leader.log.committed
    leader.propose(b"not yet acknowledged")  # appended, not committed: not the read point
    drain(leader)
    assert leader.log.last_index() == commit + 1
    leader.read_index(b"r1")
    rd = drive(leader)
    assert rd.read_states == ()
    beats = of_kind(rd.messages, Heartbeat)
    key = read_key(1, b"r1")  # the leader's own reads are keyed by its id
    assert [(m.dst, m.context) for m in beats] == [(p, key) for p in FIVE[1:]]
    leader.propose(b"later")  # does not move the read point
    drain(leader)
    leader.step(HeartbeatResponse(1, 2, 1, key))
    leader.step(HeartbeatResponse(1, 3, 1, None))  # an answer to an older heartbeat
    assert drive(leader).read_states == ()
    leader.step(HeartbeatResponse(1, 4, 1, key))
    assert drive(leader).read_states == (ReadState(commit, b"r1"),)


def test_read_index_waits_for_current_term_commit() -> None:
    """A new leader holds reads until an entry of its own term (its no-op) has committed:
    before that its commit index may be stale. Then the read point is at least the no-op.

    Reference: Thesis §6.4 (step 1); §8."""
    r = new_raft(1, PEERS, storage=new_storage(PEERS, [1, 1], term=1, commit=1))
    make_leader(r)
    drain(r)
    r.read_index(b"r1")
    out = drain(r)
    assert of_kind(out, Heartbeat) == []
    r.tick()
    assert [m.context for m in of_kind(drain(r), Heartbeat)] == [None, None]
    r.step(HeartbeatResponse(2, 2, 1, None))
    assert drive(r).read_states == ()
    r.step(AppendEntriesResponse(2, 2, 1, True, 3))  # the no-op commits
    rd = drive(r)
    assert r.log.committed == 3
    assert rd.read_states == ()
    key = read_key(1, b"r1")
    assert [(m.dst, m.context) for m in of_kind(rd.messages, Heartbeat)] == [(2, key), (3, key)]
    r.step(HeartbeatResponse(2, 3, 1, key))
    assert drive(r).read_states == (ReadState(3, b"r1"),)


def test_single_voter_serves_reads_at_once() -> None:
    """A one-voter cluster is its own quorum: a read is ready as soon as its term has a
    committed entry.

    Reference: Thesis §6.4."""
    net = Network.of((1,))
    leader = net.elect(1)
    leader.read_index(b"r")
    assert drive(leader).read_states == (ReadState(1, b"r"),)


def test_reads_are_dropped_when_leadership_is_lost() -> None:
    """Reads not yet confirmed when the leader steps down are reported dropped, not served.

    Reference: Thesis §6.4."""
    net = Network.of(PEERS)
    leader = net.elect(1)
    net.isolate(1)
    leader.read_index(b"r")
    net.stabilize()
    leader.step(Heartbeat(2, 2, 1, 0))
    assert leader.role is Role.FOLLOWER
    assert leader.take_dropped_reads() == [b"r"]
    assert drive(leader).read_states == ()


# -------------------------------------------------------------------------------------------
# Leadership transfer
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lagging", [False, True], ids=["up-to-date", "lagging"])
def test_transfer_leadership(lagging: bool) -> None:
    """To hand over, the leader stops taking proposals, brings the target up to date, then
    sends it TimeoutNow (once, only when the target holds the whole log); the target
    campaigns at once (no PreVote, past the other voters' lease) and wins the next term.

    Reference: Thesis §3.10."""
    net = Network.of(PEERS, max_msg_bytes=1)  # one entry per AppendEntries: catch-up takes steps
    leader = net.elect(1)
    if lagging:
        net.cut(1, 2)
    for k in range(3):
        net.propose(1, b"%d" % k)
    net.heal()
    last = leader.log.last_index()
    leader.transfer_leadership(2)
    with pytest.raises(ProposalDropped):
        leader.propose(b"meanwhile")
    assert leader.log.last_index() == last
    rd = drive(leader)
    timeout_now = of_kind(rd.messages, TimeoutNow)
    assert timeout_now == ([] if lagging else [TimeoutNow(1, 1, 2)])
    net.send(msgs(rd))
    net.stabilize()
    assert (net[2].role, net[2].term, net[1].role, net[1].lead) == (
        Role.LEADER,
        2,
        Role.FOLLOWER,
        2,
    )
    sent = [m for m in net.delivered if isinstance(m, TimeoutNow)]
    assert sent == [TimeoutNow(1, 1, 2)]
    at = net.delivered.index(sent[0])
    caught_up = [m for m in responses_from(net.delivered[:at], 2) if m.success]
    assert caught_up[-1].index == last
    assert log_terms(net[2])[:last] == log_terms(net[1])[:last]
    net.propose(2, b"after")
    net.tick(2)  # the new leader's heartbeat carries its commit index
    assert net[1].log.committed == net[2].log.committed == last + 2


def test_transfer_is_aborted_after_an_election_timeout() -> None:
    """A transfer that does not finish within an election timeout is abandoned and the
    leader takes proposals again.

    Reference: Thesis §3.10."""
    net = Network.of(PEERS)
    leader = net.elect(1)
    net.drop_kind(TimeoutNow)
    leader.transfer_leadership(2)
    net.stabilize()
    with pytest.raises(ProposalDropped):
        leader.propose(b"x")
    net.tick(1, 10)
    assert (leader.role, leader.lead_transferee) == (Role.LEADER, None)
    assert net.propose(1, b"x") == 2


# -------------------------------------------------------------------------------------------
# The Ready / advance contract
# -------------------------------------------------------------------------------------------


def test_ready_advance_contract() -> None:
    """``ready()`` twice without ``advance()`` raises LocalProtocolError, and so does
    ``advance()`` with anything but the outstanding Ready (including advancing it twice).

    Reference: no paper section; the driver contract (docs/architecture.md, "The Ready loop")."""
    r = new_raft(1, PEERS)
    r.campaign()
    rd = r.ready()
    with pytest.raises(LocalProtocolError):
        r.ready()
    other = msgspec.structs.replace(rd)
    assert other == rd and other is not rd
    with pytest.raises(LocalProtocolError):
        r.advance(other)
    persist(rd, storage_of(r))
    r.advance(rd)
    with pytest.raises(LocalProtocolError):
        r.advance(rd)
    assert not r.has_ready()
    assert r.ready().is_empty()


def test_committed_entries_are_applied_in_order_once() -> None:
    """Every committed entry is handed out for applying exactly once, in index order, across
    Readies; the applied index follows what the driver reports (``applied_to``).

    Reference: §5.3 (Figure 2, "All Servers": "If commitIndex > lastApplied ... apply")."""
    net = Network.of(PEERS)
    net.elect(1)
    for k in range(5):
        net.propose(1, b"%d" % k)
    net.tick(1)  # followers learn the last commit index from the heartbeat
    for node in net.nodes.values():
        assert node.applied[0].kind is EntryKind.CONFIG  # the first leader's membership record
        assert [(e.index, e.data) for e in node.applied][1:] == [
            (2, b"0"),
            (3, b"1"),
            (4, b"2"),
            (5, b"3"),
            (6, b"4"),
        ]
        assert node.raft.log.applied == 6


def _commit_two_more(r: Raft) -> None:
    """Append two commands at the leader ``r`` (indexes 2 and 3), persist them, and let
    follower 2 acknowledge them, so they commit; nothing is handed out for applying yet."""
    r.propose_batch([b"a", b"b"])
    drain(r)
    r.step(AppendEntriesResponse(r.term, 2, 1, True, 3))
    assert (r.log.committed, r.log.applying, r.log.applied) == (3, 1, 1)


def test_entries_handed_out_are_not_applied_until_the_driver_says_so() -> None:
    """``advance()`` does not mark the Ready's committed entries applied: the driver may hold
    applies back (while a snapshot reads its state), so lastApplied moves only when the
    driver reports it with ``applied_to``, in as many steps as it likes. Entries handed out
    are not handed out again meanwhile.

    Reference: §5.3 (Figure 2, "All Servers": "If commitIndex > lastApplied: increment
    lastApplied, apply log[lastApplied] to state machine"): lastApplied follows the apply."""
    r = leader_with_acks()  # the no-op (index 1) committed and applied
    _commit_two_more(r)
    rd = r.ready()
    assert [e.index for e in rd.committed_entries] == [2, 3]
    persist(rd, storage_of(r))
    r.advance(rd)
    assert (r.log.applied, r.log.applying, r.status().applied) == (1, 3, 1)
    r.check_invariants()
    while r.has_ready():
        rd = r.ready()
        assert not rd.committed_entries
        persist(rd, storage_of(r))
        r.advance(rd)
    r.applied_to(2)
    assert (r.log.applied, r.status().applied) == (2, 2)
    r.applied_to(3)
    assert (r.log.applied, r.log.applying) == (3, 3)
    r.check_invariants()


def test_applied_to_past_what_was_handed_out_or_backwards_is_refused() -> None:
    """The driver may report applied only entries the core handed out, and lastApplied never
    moves backwards: ``applied_to`` past them (even to a committed index not handed out
    yet) or below the applied index raises LocalProtocolError and changes nothing.

    Reference: §5.3 (Figure 2, State: lastApplied "increases monotonically"); the driver
    contract in docs/architecture.md ("The Ready loop")."""
    r = leader_with_acks()
    _commit_two_more(r)
    with pytest.raises(LocalProtocolError, match="past the entries handed out"):
        r.applied_to(2)  # committed, but not handed out yet
    rd = r.ready()
    persist(rd, storage_of(r))
    r.advance(rd)
    with pytest.raises(LocalProtocolError, match="past the entries handed out"):
        r.applied_to(4)
    assert r.log.applied == 1
    r.applied_to(3)
    with pytest.raises(LocalProtocolError, match="moves back"):
        r.applied_to(2)
    r.applied_to(3)  # saying it again is harmless
    assert (r.log.applied, r.log.applying) == (3, 3)
    r.check_invariants()
