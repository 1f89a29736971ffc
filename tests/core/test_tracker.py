"""ProgressTracker: membership, per-member progress and votes.

Table tests for each query, and a hypothesis property test that drives the tracker and a
deliberately naive reference (plain dicts and brute-force quorums) through the same random
sequence of operations and compares every query after each step.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftpy.core.messages import ConfState
from raftpy.core.progress import Progress
from raftpy.core.quorum import UNCONSTRAINED, VoteResult
from raftpy.core.tracker import ProgressTracker
from raftpy.errors import InvariantViolation

SELF = 1


def tracker(
    voters: Collection[int],
    learners: Collection[int] = (),
    outgoing: Collection[int] = (),
    last_index: int = 0,
) -> ProgressTracker:
    conf = ConfState(tuple(voters), tuple(learners), tuple(outgoing))
    return ProgressTracker(SELF, conf, last_index, 4, None)


def with_match(t: ProgressTracker, match: Mapping[int, int]) -> ProgressTracker:
    for node, index in match.items():
        t.progress[node].maybe_update(index)
    return t


# -- tables -----------------------------------------------------------------------------------

# (voters, learners, outgoing, match, committed index)
COMMITTED = [
    ((1,), (), (), {1: 5}, 5),
    ((1, 2, 3), (), (), {1: 5, 2: 3}, 3),
    ((1, 2, 3), (), (), {1: 5}, 0),
    ((1, 2, 3), (4, 5), (), {1: 5, 4: 9, 5: 9}, 0),  # learners never count
    ((1, 2, 3), (), (3, 4, 5), {1: 9, 2: 9, 3: 2, 4: 1, 5: 1}, 1),  # outgoing holds 1
    ((1, 2, 3), (), (3, 4, 5), {1: 9, 2: 9, 3: 2, 4: 2, 5: 1}, 2),
    ((), (), (), {}, UNCONSTRAINED),
]


@pytest.mark.parametrize(
    ("voters", "learners", "outgoing", "match", "want"),
    COMMITTED,
    ids=["single", "majority", "no-majority", "learners", "joint-outgoing", "joint", "empty"],
)
def test_committed(
    voters: tuple[int, ...],
    learners: tuple[int, ...],
    outgoing: tuple[int, ...],
    match: dict[int, int],
    want: int,
) -> None:
    assert with_match(tracker(voters, learners, outgoing), match).committed() == want


# (voters, outgoing, answers in arrival order, result)
VOTES = [
    ((1, 2, 3), (), [(1, True)], VoteResult.PENDING),
    ((1, 2, 3), (), [(1, True), (2, True)], VoteResult.WON),
    ((1, 2, 3), (), [(1, True), (2, False), (3, False)], VoteResult.LOST),
    ((1, 2, 3), (), [(1, True), (2, False), (2, True)], VoteResult.PENDING),  # first answer
    ((1, 2, 3), (), [(1, True), (9, True)], VoteResult.PENDING),  # a non-voter's grant
    ((1, 2, 3), (3, 4, 5), [(1, True), (2, True)], VoteResult.PENDING),
    ((1, 2, 3), (3, 4, 5), [(1, True), (2, True), (4, False), (5, False)], VoteResult.LOST),
    ((1, 2, 3), (3, 4, 5), [(1, True), (3, True), (4, True)], VoteResult.WON),
]


@pytest.mark.parametrize(
    ("voters", "outgoing", "answers", "want"),
    VOTES,
    ids=[
        "own-vote",
        "majority",
        "refused",
        "first-answer-counts",
        "non-voter",
        "joint-pending",
        "joint-outgoing-refuses",
        "joint-won",
    ],
)
def test_vote_result(
    voters: tuple[int, ...],
    outgoing: tuple[int, ...],
    answers: list[tuple[int, bool]],
    want: VoteResult,
) -> None:
    t = tracker(voters, outgoing=outgoing)
    for node, granted in answers:
        t.record_vote(node, granted)
    assert t.vote_result() is want
    t.reset_votes()
    assert t.votes() == {}


@pytest.mark.parametrize(
    ("voters", "active", "want"),
    [
        ((1,), set(), True),
        ((1, 2, 3), set(), False),
        ((1, 2, 3), {2}, True),
        ((1, 2, 3, 4, 5), {2}, False),
        ((1, 2, 3, 4, 5), {2, 5}, True),
    ],
    ids=["alone", "nobody", "one-peer", "too-few", "enough"],
)
def test_quorum_active_counts_ourselves(
    voters: tuple[int, ...], active: set[int], want: bool
) -> None:
    t = tracker(voters)
    for node in active:
        t.progress[node].recent_active = True
    assert t.quorum_active() is want
    t.reset_recent_active()
    assert [node for node, pr in t.progress.items() if pr.recent_active] == []
    assert t.quorum_active() is (len(voters) == 1)


def test_membership_queries() -> None:
    t = tracker((3, 1, 2), learners=(6,), outgoing=(2, 4))
    assert t.voters() == frozenset({1, 2, 3, 4})
    assert [t.is_voter(n) for n in (1, 4, 6, 9)] == [True, True, False, False]
    assert t.members() == (1, 2, 3, 4, 6)
    assert list(t.peers()) == [2, 3, 4, 6]
    assert list(t.voter_peers()) == [2, 3, 4]
    assert [node for node, _ in t.visit_peers()] == [2, 3, 4, 6]
    assert [node for node, pr in t.progress.items() if pr.is_learner] == [6]
    assert t.has_quorum({1, 2, 4}) and not t.has_quorum({1, 3})


def test_set_config_keeps_staying_members_progress() -> None:
    """Thesis §4: a new configuration changes who is tracked, not what is known of those who
    stay."""
    t = with_match(tracker((1, 2, 3), last_index=5), {2: 4, 3: 5})
    kept = t.progress[2]
    conf = ConfState((1, 2, 4), (3,))
    t.set_config(conf, 7)
    assert t.conf_state() is conf
    assert t.progress[2] is kept and kept.match == 4
    assert (t.progress[3].match, t.progress[3].is_learner) == (5, True)
    assert (t.progress[4].match, t.progress[4].next) == (0, 8)
    assert t.members() == (1, 2, 3, 4)
    t.set_config(ConfState((1, 2)), 7)
    assert list(t.progress) == [1, 2]
    assert list(t.peers()) == [2]


def test_reset_progress_forgets_followers_but_not_our_durable_log() -> None:
    """Thesis §10.2.1: our own match is what we hold durably, nothing more."""
    t = with_match(tracker((1, 2, 3), learners=(4,)), {2: 3, 3: 3})
    t.progress[2].recent_active = True
    t.reset_progress(last_index=9, self_match=6)
    assert (t.progress[1].match, t.progress[1].next) == (6, 10)
    for node in (2, 3, 4):
        pr = t.progress[node]
        assert (pr.match, pr.next, pr.recent_active) == (0, 10, False)
    assert t.progress[4].is_learner
    t.reset_progress(last_index=3, self_match=6)
    assert t.progress[1].next == 7  # never at or below what we hold


# -- property test against a naive reference --------------------------------------------------


@dataclass
class Naive:
    """The same facts as ProgressTracker, as plain dicts and brute force."""

    voters: set[int]
    outgoing: set[int]
    learners: set[int]
    match: dict[int, int] = field(default_factory=dict)
    next: dict[int, int] = field(default_factory=dict)
    active: set[int] = field(default_factory=set)
    votes: dict[int, bool] = field(default_factory=dict)

    def members(self) -> list[int]:
        return sorted(self.voters | self.outgoing | self.learners)

    def halves(self) -> list[set[int]]:
        return [half for half in (self.voters, self.outgoing) if half]

    def set_config(self, conf: ConfState, last: int) -> None:
        self.voters, self.learners = set(conf.voters), set(conf.learners)
        self.outgoing = set(conf.voters_outgoing)
        members = self.members()
        for node in members:
            if node not in self.match:
                self.match[node], self.next[node] = 0, last + 1
        for table in (self.match, self.next):
            for node in list(table):
                if node not in members:
                    del table[node]
        self.active &= set(members)

    def reset_progress(self, last: int, self_match: int) -> None:
        for node in self.members():
            self.match[node], self.next[node] = 0, last + 1
        if SELF in self.match:  # a node outside the configuration tracks no progress of its own
            self.match[SELF], self.next[SELF] = self_match, max(last + 1, self_match + 1)
        self.active = set()

    def committed(self) -> int:
        if not self.halves():
            return UNCONSTRAINED
        held = [
            n
            for n in range(0, 64)
            if all(2 * sum(self.match[v] >= n for v in h) > len(h) for h in self.halves())
        ]
        return max(held)

    def vote_result(self) -> VoteResult:
        everyone = sorted(self.voters | self.outgoing)
        missing = [v for v in everyone if v not in self.votes]
        outcomes = set()
        for answers in itertools.product([True, False], repeat=len(missing)):
            full = {**self.votes, **dict(zip(missing, answers, strict=True))}
            outcomes.add(all(2 * sum(full[v] for v in h) > len(h) for h in self.halves()))
        if outcomes == {True}:
            return VoteResult.WON
        return VoteResult.LOST if outcomes == {False} else VoteResult.PENDING

    def quorum_active(self) -> bool:
        heard = self.active | {SELF}
        return all(2 * len(h & heard) > len(h) for h in self.halves())


nodes = st.integers(min_value=1, max_value=6)
node_sets = st.frozensets(nodes, max_size=5)
indexes = st.integers(min_value=0, max_value=40)
confs = st.builds(
    lambda v, lrn, o: ConfState(tuple(sorted(v)), tuple(sorted(lrn)), tuple(sorted(o))),
    node_sets,
    node_sets,
    st.one_of(st.just(frozenset()), node_sets),
)
ops = st.one_of(
    st.tuples(st.just("set_config"), confs, indexes),
    st.tuples(st.just("reset_progress"), indexes, indexes),
    st.tuples(st.just("ack"), nodes, indexes),
    st.tuples(st.just("heard"), nodes),
    st.tuples(st.just("check_quorum")),
    st.tuples(st.just("vote"), nodes, st.booleans()),
    st.tuples(st.just("reset_votes")),
)


def apply(t: ProgressTracker, ref: Naive, op: tuple[object, ...]) -> None:
    match op:
        case ("set_config", ConfState() as conf, int(last)):
            t.set_config(conf, last)
            ref.set_config(conf, last)
        case ("reset_progress", int(last), int(self_match)):
            t.reset_progress(last, self_match)
            ref.reset_progress(last, self_match)
        case ("ack", int(node), int(index)):
            pr: Progress | None = t.progress.get(node)
            if pr is not None:
                pr.maybe_update(index)
                ref.match[node] = max(ref.match[node], index)
                ref.next[node] = max(ref.next[node], index + 1)
        case ("heard", int(node)):
            if node in t.progress:
                t.progress[node].recent_active = True
                ref.active.add(node)
        case ("check_quorum",):
            assert t.quorum_active() is ref.quorum_active()
            t.reset_recent_active()
            ref.active &= {SELF}
        case ("vote", int(node), bool(granted)):
            t.record_vote(node, granted)
            ref.votes.setdefault(node, granted)
        case ("reset_votes",):
            t.reset_votes()
            ref.votes = {}
        case _:
            raise AssertionError(f"unknown op {op}")


def assert_same(t: ProgressTracker, ref: Naive) -> None:
    members = ref.members()
    assert list(t.members()) == members
    assert list(t.progress) == members
    assert list(t.peers()) == [n for n in members if n != SELF]
    assert list(t.voter_peers()) == sorted((ref.voters | ref.outgoing) - {SELF})
    assert t.voters() == ref.voters | ref.outgoing
    assert {n: pr.match for n, pr in t.progress.items()} == ref.match
    assert {n: pr.next for n, pr in t.progress.items()} == ref.next
    assert {n for n, pr in t.progress.items() if pr.is_learner} == ref.learners
    assert t.committed() == ref.committed()
    assert t.votes() == ref.votes
    assert t.vote_result() is ref.vote_result()
    assert t.quorum_active() is ref.quorum_active()
    for node in range(1, 7):
        assert t.is_voter(node) is (node in ref.voters | ref.outgoing)


@settings(max_examples=300)
@given(confs, indexes, st.lists(ops, max_size=25))
def test_tracker_matches_reference(
    conf: ConfState, last: int, script: list[tuple[object, ...]]
) -> None:
    t = ProgressTracker(SELF, conf, last, 4, None)
    ref = Naive(set(), set(), set())
    ref.set_config(conf, last)
    assert_same(t, ref)
    for op in script:
        apply(t, ref, op)
        assert_same(t, ref)


@pytest.mark.parametrize(
    ("match", "next_index", "last_index", "error"),
    [
        (3, 4, 3, None),
        (0, 1, 0, None),
        (3, 3, 5, "progress of 2"),
        (4, 5, 3, "matched 4 past our last index"),
    ],
    ids=["sane", "empty", "next-not-past-match", "match-past-log"],
)
def test_check_invariants(match: int, next_index: int, last_index: int, error: str | None) -> None:
    t = tracker((1, 2))
    pr = t.progress[2]
    pr.match, pr.next = match, next_index
    if error is None:
        t.check_invariants(last_index)
    else:
        with pytest.raises(InvariantViolation, match=error):
            t.check_invariants(last_index)
