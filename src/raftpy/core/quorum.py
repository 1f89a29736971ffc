"""Majority and joint-majority arithmetic: pure functions over frozen data.

A *majority config* is a set of voter ids; a *joint config* is two of them (incoming,
outgoing), used during joint consensus (Thesis §4.3), where every decision needs a majority of
each. An empty outgoing config places no constraint.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from typing import NamedTuple

# Committed index of an empty config: "no constraint", so min() over a joint config ignores it.
UNCONSTRAINED = 1 << 63


class VoteResult(enum.Enum):
    """The outcome of an election so far."""

    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def majority(n: int) -> int:
    """The smallest number of voters that is more than half of ``n``."""
    return n // 2 + 1


def committed_index(voters: Collection[int], match: Mapping[int, int]) -> int:
    """The largest index that a majority of ``voters`` hold (Raft §5.3: "a majority of
    matchIndex[i] >= N"). Voters missing from ``match`` count as 0."""
    if not voters:
        return UNCONSTRAINED
    acked = sorted((match.get(v, 0) for v in voters), reverse=True)
    return acked[majority(len(acked)) - 1]


def vote_result(voters: Collection[int], votes: Mapping[int, bool]) -> VoteResult:
    """Raft §5.2: won with a majority of granted votes, lost once a majority refused (or can
    no longer grant)."""
    if not voters:
        return VoteResult.WON
    granted = sum(1 for v in voters if votes.get(v) is True)
    missing = sum(1 for v in voters if v not in votes)
    need = majority(len(voters))
    if granted >= need:
        return VoteResult.WON
    if granted + missing >= need:
        return VoteResult.PENDING
    return VoteResult.LOST


class JointConfig(NamedTuple):
    """Two majority configs that must both agree (Thesis §4.3). ``outgoing`` is empty outside
    a joint change."""

    incoming: frozenset[int]
    outgoing: frozenset[int] = frozenset()

    def voters(self) -> frozenset[int]:
        return self.incoming | self.outgoing

    def committed_index(self, match: Mapping[int, int]) -> int:
        return min(committed_index(self.incoming, match), committed_index(self.outgoing, match))

    def vote_result(self, votes: Mapping[int, bool]) -> VoteResult:
        a = vote_result(self.incoming, votes)
        b = vote_result(self.outgoing, votes)
        if a is b:
            return a
        if VoteResult.LOST in (a, b):
            return VoteResult.LOST
        return VoteResult.PENDING

    def has_quorum(self, ids: Collection[int]) -> bool:
        """Whether ``ids`` contain a majority of each config (for CheckQuorum and ReadIndex)."""
        yes = dict.fromkeys(ids, True)
        return self.vote_result(yes) is VoteResult.WON
