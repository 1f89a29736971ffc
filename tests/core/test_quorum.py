"""Quorum arithmetic against naive reference implementations (hypothesis).

The references are deliberately brute force: the committed index is the largest candidate
index that enough voters hold, and an election result is decided by trying every way the
missing voters could still answer.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftpy.core.quorum import (
    UNCONSTRAINED,
    JointConfig,
    VoteResult,
    committed_index,
    majority,
    vote_result,
)

ids = st.integers(min_value=1, max_value=9)
voter_sets = st.frozensets(ids, max_size=7)
matches = st.dictionaries(ids, st.integers(min_value=0, max_value=20), max_size=9)
votes_maps = st.dictionaries(ids, st.booleans(), max_size=9)


def naive_committed(voters: Collection[int], match: Mapping[int, int]) -> int:
    """The largest N such that more than half of ``voters`` have match >= N."""
    if not voters:
        return UNCONSTRAINED
    best = 0
    for n in range(0, 21):
        holders = sum(1 for v in voters if match.get(v, 0) >= n)
        if 2 * holders > len(voters):
            best = n
    return best


def naive_joint_committed(
    incoming: Collection[int], outgoing: Collection[int], match: Mapping[int, int]
) -> int:
    """The largest N held by a majority of each non-empty config."""
    configs = [c for c in (incoming, outgoing) if c]
    if not configs:
        return UNCONSTRAINED
    best = 0
    for n in range(0, 21):
        if all(2 * sum(1 for v in c if match.get(v, 0) >= n) > len(c) for c in configs):
            best = n
    return best


def completions(voters: Collection[int], votes: Mapping[int, bool]) -> list[dict[int, bool]]:
    """Every full set of answers consistent with the votes received so far."""
    missing = sorted(v for v in voters if v not in votes)
    out = []
    for answers in itertools.product([True, False], repeat=len(missing)):
        full = {v: votes[v] for v in voters if v in votes}
        full.update(zip(missing, answers, strict=True))
        out.append(full)
    return out


def wins(config: Collection[int], full: Mapping[int, bool]) -> bool:
    return not config or 2 * sum(1 for v in config if full[v]) > len(config)


def naive_vote_result(configs: list[Collection[int]], votes: Mapping[int, bool]) -> VoteResult:
    """WON if every way the missing voters could answer wins every config, LOST if none
    does, PENDING otherwise."""
    everyone = set().union(*configs)
    outcomes = {all(wins(c, full) for c in configs) for full in completions(everyone, votes)}
    if outcomes == {True}:
        return VoteResult.WON
    if outcomes == {False}:
        return VoteResult.LOST
    return VoteResult.PENDING


@pytest.mark.parametrize(("n", "want"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)])
def test_majority(n: int, want: int) -> None:
    assert majority(n) == want


@settings(max_examples=200)
@given(voter_sets, matches)
def test_committed_index_matches_reference(voters: frozenset[int], match: dict[int, int]) -> None:
    assert committed_index(voters, match) == naive_committed(voters, match)


@settings(max_examples=200)
@given(voter_sets, votes_maps)
def test_vote_result_matches_reference(voters: frozenset[int], votes: dict[int, bool]) -> None:
    assert vote_result(voters, votes) is naive_vote_result([voters], votes)


@settings(max_examples=200)
@given(voter_sets, voter_sets, matches)
def test_joint_committed_index_matches_reference(
    incoming: frozenset[int], outgoing: frozenset[int], match: dict[int, int]
) -> None:
    got = JointConfig(incoming, outgoing).committed_index(match)
    assert got == naive_joint_committed(incoming, outgoing, match)


@settings(max_examples=200)
@given(voter_sets, voter_sets, votes_maps)
def test_joint_vote_result_matches_reference(
    incoming: frozenset[int], outgoing: frozenset[int], votes: dict[int, bool]
) -> None:
    got = JointConfig(incoming, outgoing).vote_result(votes)
    assert got is naive_vote_result([incoming, outgoing], votes)


@settings(max_examples=200)
@given(voter_sets, voter_sets, st.frozensets(ids, max_size=9))
def test_has_quorum_matches_reference(
    incoming: frozenset[int], outgoing: frozenset[int], acked: frozenset[int]
) -> None:
    want = all(wins(c, {v: v in acked for v in c}) for c in (incoming, outgoing))
    assert JointConfig(incoming, outgoing).has_quorum(acked) is want


@settings(max_examples=100)
@given(voter_sets, matches, ids, st.integers(0, 20))
def test_committed_index_is_monotonic_in_match(
    voters: frozenset[int], match: dict[int, int], node: int, more: int
) -> None:
    """Raising one voter's match never lowers the committed index (so commit only grows
    while a leader's matches only grow)."""
    raised = {**match, node: max(match.get(node, 0), more)}
    assert committed_index(voters, raised) >= committed_index(voters, match)


# Hand-picked rows, readable on their own: (voters, match, committed index)
COMMITTED = [
    ((1,), {1: 5}, 5),
    ((1, 2), {1: 5, 2: 3}, 3),
    ((1, 2, 3), {1: 5, 2: 3}, 3),
    ((1, 2, 3), {1: 5}, 0),
    ((1, 2, 3, 4), {1: 5, 2: 4, 3: 3, 4: 2}, 3),
    ((1, 2, 3, 4, 5), {1: 9, 2: 9, 3: 1, 4: 1, 5: 1}, 1),
    ((1, 2, 3, 4, 5), {1: 9, 2: 9, 3: 2, 4: 1, 5: 1}, 2),
    ((1, 2, 3), {7: 9, 8: 9}, 0),  # non-voters do not count
]


@pytest.mark.parametrize(
    ("voters", "match", "want"), COMMITTED, ids=[str(row) for row in range(len(COMMITTED))]
)
def test_committed_index_table(voters: tuple[int, ...], match: dict[int, int], want: int) -> None:
    assert committed_index(voters, match) == want


def test_empty_config_places_no_constraint() -> None:
    assert committed_index((), {1: 5}) == UNCONSTRAINED
    assert vote_result((), {}) is VoteResult.WON
    joint = JointConfig(frozenset({1, 2, 3}))
    assert joint.committed_index({1: 4, 2: 6, 3: 1}) == 4
    assert joint.vote_result({1: True, 2: True}) is VoteResult.WON
    assert joint.voters() == frozenset({1, 2, 3})


def test_joint_config_needs_both_majorities() -> None:
    joint = JointConfig(frozenset({1, 2, 3}), frozenset({3, 4, 5}))
    assert joint.voters() == frozenset({1, 2, 3, 4, 5})
    assert joint.committed_index({1: 9, 2: 9, 3: 2, 4: 1, 5: 1}) == 1  # outgoing holds 1
    assert joint.committed_index({1: 9, 2: 9, 3: 2, 4: 2, 5: 1}) == 2
    assert joint.vote_result({1: True, 2: True}) is VoteResult.PENDING
    assert joint.vote_result({1: True, 2: True, 4: False, 5: False}) is VoteResult.LOST
    assert joint.vote_result({1: True, 3: True}) is VoteResult.PENDING  # 1 of 3 outgoing
    assert joint.vote_result({1: True, 3: True, 4: True}) is VoteResult.WON
    assert not joint.has_quorum({1, 2, 4})
    assert joint.has_quorum({1, 2, 4, 5})
